"""The short causal depthwise convolution of the Hawk and Mamba blocks, step by step.

Per channel ``c`` with taps ``w`` ``(width, C)`` (tap ``width − 1`` on the current input,
tap 0 on the oldest), the output at time t is

    y_t = b + Σ_{k=0}^{width−1} w[k] ⊙ x_{t − (width − 1) + k}          x_s = 0 for s < 0

— what ``torch.nn.Conv1d(C, C, width, groups=C, padding=width − 1)`` truncated to the first T
outputs computes (mambapy), and recurrentgemma's ``Conv1D``. Step by step the layer carries the
``width − 1`` previous inputs, oldest first, as a ``(*batch, width − 1, C)`` window: a recurrent
cell like any other, so masking, decoding and initial states need nothing special.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrax._checks import check_positive_int

__all__ = ["ConvParams", "init_conv", "conv_window", "conv_step", "conv_sequence"]


class ConvParams(NamedTuple):
    """Depthwise causal convolution: taps ``w`` ``(width, C)`` (last tap on the current input), bias ``(C,)``."""

    w: jax.Array
    b: jax.Array


def init_conv(key: jax.Array, channels: int, width: int, dtype=jnp.float32) -> ConvParams:
    """Taps ``U(−1/√width, 1/√width)`` (PyTorch's Conv1d default for a depthwise filter), zero bias."""
    channels = check_positive_int(channels, "channels")
    width = check_positive_int(width, "conv_width")
    bound = 1.0 / width**0.5
    w = jax.random.uniform(key, (width, channels), dtype, -bound, bound)
    return ConvParams(w, jnp.zeros((channels,), dtype))


def conv_window(params: ConvParams, batch_shape: tuple = ()) -> jax.Array:
    """The zero window ``(*batch_shape, width − 1, C)``: no input before the first step."""
    width, channels = params.w.shape
    return jnp.zeros(tuple(batch_shape) + (width - 1, channels), params.w.dtype)


def conv_step(params: ConvParams, window: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One output ``y_t`` ``(*batch, C)`` from the window of previous inputs and ``x_t`` ``(*batch, C)``.

    Returns ``(window', y_t)``: the window shifted by one, ``x_t`` its newest entry.
    """
    stacked = jnp.concatenate([window, x[..., None, :]], axis=-2)  # (*batch, width, C)
    y = jnp.einsum("...kc,kc->...c", stacked, params.w) + jax.lax.broadcast_to_rank(params.b, x.ndim)
    return stacked[..., 1:, :], y


def conv_sequence(params: ConvParams, xs: jax.Array, window: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """All outputs of a sequence ``xs`` ``(*batch, T, C)`` at once (time axis −2), from ``window``.

    Returns ``(window', ys)`` as ``conv_step`` iterated over time does: ``window'`` the last
    ``width − 1`` inputs (the given window's entries where T < width − 1), ``ys`` ``(*batch, T,
    C)``; a sum of ``width`` shifted products, no scan.
    """
    width = params.w.shape[0]
    if window is None:
        window = conv_window(params, xs.shape[:-2])
    padded = jnp.concatenate([window, xs], axis=-2)  # (*batch, width − 1 + T, C)
    time = xs.shape[-2]
    ys = jax.lax.broadcast_to_rank(params.b, xs.ndim)
    for k in range(width):
        ys = ys + padded[..., k:k + time, :] * jax.lax.broadcast_to_rank(params.w[k], xs.ndim)
    return padded[..., time:, :], ys
