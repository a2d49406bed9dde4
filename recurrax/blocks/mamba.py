"""The Mamba block (Gu & Dao 2023) as a cell family: in-projection, causal conv, selective SSM, gate.

Equations, row-vector form, one step, with ED = ``expand · hidden_size`` inner channels:

    [u, z] = x @ w_in                          u, z (ED,); w_in (input_size, 2·ED)
    c = conv(window, u)                        causal depthwise conv over the last conv_width inputs
    v = SiLU(c)
    (h', s) = selective_ssm.step(ssm, h, v)    s (ED,), h (ED, N): recurrax.cells.selective_ssm
    y = (s ⊙ SiLU(z)) @ w_out                  (hidden_size,); w_out (ED, hidden_size)

``conv`` is ``recurrax.blocks._conv`` (taps ``(conv_width, ED)``, last tap on the current input,
and a bias), the carry ``MambaCarry(window, state)``: the convolution's ``conv_width − 1`` previous
inputs ``u``, oldest first, ``(*batch, conv_width − 1, ED)``, and the SSM's state
``(*batch, ED, N)``. ``x`` is ``(*batch, input_size)``, ``y`` ``(*batch, hidden_size)``.

With ``input_size == hidden_size == d_model`` this is mambapy's ``MambaBlock`` exactly (its
defaults ``bias=False`` for ``in_proj``/``out_proj``, ``conv_bias=True``), and
``recurrax.interop.mambapy.from_mambapy`` converts its weights. The residual connection and the
RMSNorm in front belong to mambapy's ``ResidualBlock`` (and the paper's stack), not to the
block, and are not here. ``input_size ≠ hidden_size`` changes only ``w_in``'s rows and
``w_out``'s columns; the inner width follows ``hidden_size`` (mambapy's ``d_inner = expand ·
d_model`` with d_model the layer's width), as does the default ``dt_rank = ceil(hidden_size / 16)``.

Initialisation: ``w_in``, ``w_out`` ``U(±1/√fan_in)`` (torch's ``nn.Linear``, as mambapy), the
taps ``U(±1/√conv_width)`` with a zero bias (``init_conv``; torch draws the bias like the taps),
the SSM as ``selective_ssm.init``.

The block is not linear in its carry (the window shifts and SiLU follows the convolution), so
``recurrax.rnn`` runs it step by step; ``sequence`` evaluates a whole sequence in parallel
instead: the projections and the convolution for all steps at once, then the SSM by one
associative scan (``method="associative"``) or by ``lax.scan`` over its step
(``method="sequential"``), equal to stepping.

>>> import jax, jax.numpy as jnp
>>> from recurrax.blocks import mamba
>>> params = mamba.init(jax.random.key(0), 3, 4, state_size=4, conv_width=3)
>>> carry, y = mamba.step(params, mamba.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> (carry.window.shape, carry.state.shape, y.shape)
((2, 2, 8), (2, 8, 4), (2, 4))
>>> final, ys = mamba.sequence(params, jnp.ones((2, 5, 3)))
>>> ys.shape
(2, 5, 4)

Reference: A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state
spaces", arXiv:2312.00752 (2023), Figure 3; implementation checked against mambapy 1.2.0.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_batch_shape, check_feature_size, check_params_type, check_positive_int
from recurrax.blocks._conv import ConvParams, conv_sequence, conv_step, conv_window, init_conv
from recurrax.cells import selective_ssm
from recurrax.cells._common import check_sizes
from recurrax.cells.selective_ssm import SelectiveSSMCarry, SelectiveSSMParams
from recurrax.parallel._scans import linear_scan

__all__ = [
    "MambaParams",
    "MambaCarry",
    "init",
    "initial_carry",
    "step",
    "sequence",
    "input_size",
    "output_size",
    "inner_size",
]

SEQUENCE_METHODS = ("associative", "sequential")


class MambaParams(NamedTuple):
    """Parameters of a Mamba block (mambapy's names in the comments)."""

    w_in: jax.Array  # (input_size, 2·ED): in_proj.weight transposed, blocks u (conv branch), z (gate)
    conv: ConvParams  # taps (conv_width, ED), bias (ED,): conv1d
    ssm: SelectiveSSMParams  # E = ED channels, no in-projection (w_in None)
    w_out: jax.Array  # (ED, hidden_size): out_proj.weight transposed


class MambaCarry(NamedTuple):
    """State of a Mamba block: the convolution's window and the SSM's state."""

    window: jax.Array  # (*batch, conv_width − 1, ED): previous inputs u, oldest first
    state: jax.Array  # (*batch, ED, N): the selective SSM's state h


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    expand: int = 2,
    state_size: int = 16,
    conv_width: int = 4,
    dt_rank: Optional[int] = None,
    dtype=jnp.float32,
    **ssm_options,
) -> MambaParams:
    """Initialise a Mamba block as mambapy's ``MambaBlock`` (see the module docstring).

    Args:
      key: PRNG key.
      input_size, hidden_size: D and the output size (mambapy's d_model for both).
      expand: ED = ``expand · hidden_size`` inner channels (a positive integer, default 2).
      state_size: N, the SSM's states per channel (default 16).
      conv_width: the convolution's taps (default 4).
      dt_rank: R, the rank of Δ's projection (default ``ceil(hidden_size / 16)``).
      dtype: parameter dtype.
      ssm_options: ``dt_min``, ``dt_max``, ``dt_floor``, ``dt_scale`` for ``selective_ssm.init``.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    expand = check_positive_int(expand, "expand")
    conv_width = check_positive_int(conv_width, "conv_width")
    unknown = sorted(set(ssm_options) - {"dt_min", "dt_max", "dt_floor", "dt_scale"})
    if unknown:
        raise ValueError(
            f"Expected options among expand, state_size, conv_width, dt_rank, dtype, dt_min, dt_max, "
            f"dt_floor, dt_scale; got {', '.join(unknown)}."
        )
    state_size = check_positive_int(state_size, "state_size")
    # mambapy's dt_rank="auto", with d_model = hidden_size
    dt_rank = math.ceil(hidden_size / 16) if dt_rank is None else check_positive_int(dt_rank, "dt_rank")
    inner = expand * hidden_size
    k_in, k_conv, k_ssm, k_out = jax.random.split(key, 4)
    ssm = selective_ssm.init(k_ssm, inner, inner, state_size=state_size, dt_rank=dt_rank, dtype=dtype, **ssm_options)
    return MambaParams(
        w_in=jax.random.uniform(k_in, (input_size, 2 * inner), dtype, -(input_size**-0.5), input_size**-0.5),
        conv=init_conv(k_conv, inner, conv_width, dtype),
        ssm=ssm,
        w_out=jax.random.uniform(k_out, (inner, hidden_size), dtype, -(inner**-0.5), inner**-0.5),
    )


def input_size(params: MambaParams) -> int:
    """D, the feature size ``step`` expects."""
    return params.w_in.shape[0]


def output_size(params: MambaParams) -> int:
    """The block's width, the size of ``y``."""
    return params.w_out.shape[1]


def inner_size(params: MambaParams) -> int:
    """ED, the channels of the convolution and the SSM."""
    return params.w_out.shape[0]


def _check_params(params: MambaParams, fn: str) -> None:
    check_params_type(params, MambaParams, fn)
    if not isinstance(params.conv, ConvParams) or not isinstance(params.ssm, SelectiveSSMParams):
        raise ValueError(
            f"{fn}: expected MambaParams(conv=ConvParams, ssm=SelectiveSSMParams), got conv="
            f"{type(params.conv).__name__}, ssm={type(params.ssm).__name__}."
        )
    inner = inner_size(params)
    if params.ssm.w_in is not None:
        raise ValueError(f"{fn}: expected params.ssm without an in-projection (w_in None): the block's w_in is it.")
    shapes = {
        "w_in": (params.w_in, (input_size(params), 2 * inner)),
        "conv.w": (params.conv.w, (params.conv.w.shape[0], inner)),
        "conv.b": (params.conv.b, (inner,)),
        "ssm.D": (params.ssm.D, (inner,)),
    }
    for field, (value, shape) in shapes.items():
        check_array(value, f"params.{field}")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{fn}: expected params.{field} with shape {shape} (ED={inner} inner channels), "
                f"got shape {tuple(value.shape)}."
            )


def initial_carry(params: MambaParams, batch_shape: tuple[int, ...] = ()) -> MambaCarry:
    """Zero window ``(*batch_shape, conv_width − 1, ED)`` and zero state ``(*batch_shape, ED, N)``."""
    _check_params(params, "mamba.initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    return MambaCarry(conv_window(params.conv, batch_shape),
                      selective_ssm.initial_carry(params.ssm, batch_shape).state)


def _check_carry(params: MambaParams, carry: MambaCarry, batch_shape: tuple, fn: str) -> None:
    if not isinstance(carry, MambaCarry):
        raise ValueError(f"{fn} expects a MambaCarry carry, got {type(carry).__name__}.")
    inner = inner_size(params)
    expected = {
        "window": tuple(batch_shape) + (params.conv.w.shape[0] - 1, inner),
        "state": tuple(batch_shape) + tuple(params.ssm.A_log.shape),
    }
    for field, shape in expected.items():
        value = check_array(getattr(carry, field), f"carry.{field}")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{fn}: expected carry.{field} with shape {shape} (the batch shape + "
                f"{'(conv_width − 1, ED)' if field == 'window' else '(ED, N)'}), got shape {tuple(value.shape)}."
            )


def _check_x(params: MambaParams, x: jax.Array, min_rank: int, what: str, fn: str) -> None:
    check_feature_size(x, input_size(params), what, "the cell's input_size")  # every family's message
    if x.ndim < min_rank:
        raise ValueError(f"{fn}: expected {what} of rank >= {min_rank}, got shape {tuple(x.shape)}.")


def _gated_output(params: MambaParams, s: jax.Array, z: jax.Array) -> jax.Array:
    """``(s ⊙ SiLU(z)) @ w_out``."""
    return (s * jax.nn.silu(z)) @ params.w_out


def step(params: MambaParams, carry: MambaCarry, x: jax.Array) -> tuple[MambaCarry, jax.Array]:
    """One step of the block for ``x`` ``(*batch, input_size)``: returns ``(MambaCarry, y (*batch, hidden_size))``."""
    _check_params(params, "mamba.step")
    _check_x(params, x, 1, "x", "mamba.step")
    _check_carry(params, carry, x.shape[:-1], "mamba.step")
    u, z = jnp.split(x @ params.w_in, 2, axis=-1)
    window, c = conv_step(params.conv, carry.window, u)
    ssm_carry, s = selective_ssm.step(params.ssm, SelectiveSSMCarry(carry.state), jax.nn.silu(c))
    return MambaCarry(window, ssm_carry.state), _gated_output(params, s, z)


def sequence(
    params: MambaParams,
    xs: jax.Array,
    carry: Optional[MambaCarry] = None,
    *,
    method: str = "associative",
) -> tuple[MambaCarry, jax.Array]:
    """The block over a whole sequence ``xs`` ``(*batch, T, input_size)`` (time axis −2), from ``carry``.

    The projections and the convolution for all T steps at once; the SSM by one associative
    scan over time (``method="associative"``, O(log T) depth) or by ``lax.scan`` over
    ``selective_ssm.step`` (``"sequential"``). Equal to ``step`` iterated over time. ``carry``
    defaults to ``initial_carry`` (zeros). All sequences run their T steps (no lengths: for
    right-padded batches use ``recurrax.rnn`` with ``lengths``, which steps the block).

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``(*batch, T, hidden_size)``.
    """
    fn = "mamba.sequence"
    _check_params(params, fn)
    _check_x(params, xs, 2, "xs", fn)
    if method not in SEQUENCE_METHODS:
        raise ValueError(f"{fn}: expected method in {SEQUENCE_METHODS}, got {method!r}.")
    if xs.shape[-2] == 0:
        raise ValueError(f"{fn}: expected a non-empty time axis, got xs of shape {tuple(xs.shape)}.")
    batch_shape = tuple(xs.shape[:-2])
    if carry is None:
        carry = initial_carry(params, batch_shape)
    _check_carry(params, carry, batch_shape, fn)
    us, zs = jnp.split(xs @ params.w_in, 2, axis=-1)  # (*batch, T, ED) each
    window, cs = conv_sequence(params.conv, us, carry.window)
    vs = jax.nn.silu(cs)
    vs_t = jnp.moveaxis(vs, -2, 0)  # (T, *batch, ED): time first, as the scans take it
    if method == "associative":
        a, b = selective_ssm.linear_recurrence(params.ssm, vs_t)  # (T, *batch, ED, N)
        hs = linear_scan(a.state, b.state, carry.state)
        ss = selective_ssm.output(params.ssm, SelectiveSSMCarry(hs), vs_t)
        h = hs[-1]
    else:
        def ssm_step(state, v):
            new, s = selective_ssm.step(params.ssm, SelectiveSSMCarry(state), v)
            return new.state, s

        h, ss = jax.lax.scan(ssm_step, carry.state, vs_t)
    ys = _gated_output(params, jnp.moveaxis(ss, 0, -2), zs)
    return MambaCarry(window, h), ys
