"""Hawk's recurrent block (De et al. 2024, "Griffin"): a gated branch around conv → RG-LRU.

Equations, row-vector form, for x ``(*batch, D)`` with D = ``input_size``, L = ``lru_width``
(default ``hidden_size``), H = ``hidden_size``:

    g   = gelu(x @ W_y + b_y)                      (*batch, L)   gate branch (tanh approximation)
    u   = x @ W_x + b_x                            (*batch, L)   recurrence branch
    v_t = b_c + Σ_k w_c[k] ⊙ u_{t−(K−1)+k}          causal depthwise conv of width K (u_s = 0, s < 0)
    h_t = RG-LRU(h_{t−1}, v_t)                     (*batch, L)   ``recurrax.cells.rglru``
    y   = (h_t ⊙ g) @ W_out + b_out                (*batch, H)

With ``input_size == hidden_size`` (and ``lru_width`` recurrentgemma's) this is recurrentgemma's
``RecurrentBlock`` exactly: ``linear_y`` = (W_y, b_y), ``linear_x`` = (W_x, b_x), ``conv_1d`` =
``conv`` (its taps in the same order: ``w_c[K−1]`` on the current input), ``rg_lru`` = ``lru``,
``linear_out`` = (W_out, b_out). recurrentgemma's block maps its width to itself; here ``W_y``,
``W_x`` are (D, L) and ``W_out`` (L, H), so the block maps D to H like every recurrax layer. The
residual connection, the RMSNorm in front and the MLP block after are the residual block's, not
this one's (as in recurrentgemma).

As a cell family the block's carry is ``HawkCarry(window, state)``: the conv's window of the K − 1
previous ``u`` (``(*batch, K − 1, L)``, oldest first; recurrentgemma's ``conv1d_state``) and the
RG-LRU state (``(*batch, L)``; its ``rg_lru_state``). ``h`` is the recurrence's state, not the
block's output ``y``. The block is not linear in its carry (the conv output feeds ``b``), so it
has no ``linear_recurrence``; ``sequence`` evaluates a whole sequence in parallel instead:
projections and conv for all t at once, the RG-LRU by one associative scan, then gate and
out-projection.

Document starts: ``step`` and ``sequence`` take ``reset`` (recurrentgemma's ``segment_pos == 0``):
the RG-LRU restarts as there (``rglru``'s docstring) and the conv forgets the inputs before the
start (the window is zeroed), which is what recurrentgemma's forward pass (no cache) does with
its document mask. (recurrentgemma's one-token decoding path applies no document mask to a
given conv cache; a new document there starts from a fresh, zero cache anyway.)

Initialisation, recurrentgemma's: W_y, W_x ``N(0, 1/D)``, W_out ``N(0, 1/L)``, conv taps
``N(0, 0.01/K)``, biases zero, the RG-LRU's own (``rglru.init``).

>>> import jax, jax.numpy as jnp
>>> from recurrax.blocks import hawk
>>> params = hawk.init(jax.random.key(0), 8, 8, num_heads=2)
>>> carry, y = hawk.step(params, hawk.initial_carry(params, (2,)), jnp.ones((2, 8)))
>>> carry.window.shape, carry.state.shape, y.shape
((2, 3, 8), (2, 8), (2, 8))
>>> _, ys = hawk.sequence(params, jnp.ones((2, 5, 8)))
>>> ys.shape
(2, 5, 8)

Reference: S. De et al., "Griffin: mixing gated linear recurrences with local attention for
efficient language models", arXiv:2402.19427 (2024), Figure 2; code:
google-deepmind/recurrentgemma (``recurrentgemma.jax.modules.RecurrentBlock``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_batch_shape, check_feature_size, check_params_type, check_positive_int
from recurrax.blocks._conv import ConvParams, conv_sequence, conv_step, conv_window
from recurrax.cells import rglru
from recurrax.cells._common import check_heads, check_sizes, lift
from recurrax.parallel import linear_scan

__all__ = [
    "HawkParams",
    "HawkCarry",
    "init",
    "initial_carry",
    "step",
    "sequence",
    "input_size",
    "output_size",
    "lru_width",
    "conv_width",
]

_CONV_VARIANCE = 0.01  # recurrentgemma's Conv1D w_init_variance_scale


class HawkParams(NamedTuple):
    """Parameters of Hawk's recurrent block (recurrentgemma's names in the comments)."""

    w_y: jax.Array  # (input_size, lru_width): linear_y kernel, gate branch
    b_y: jax.Array  # (lru_width,)
    w_x: jax.Array  # (input_size, lru_width): linear_x kernel, recurrence branch
    b_x: jax.Array  # (lru_width,)
    conv: ConvParams  # conv_1d: taps (conv_width, lru_width), bias (lru_width,)
    lru: rglru.RGLRUParams  # rg_lru, input_size == hidden_size == lru_width (no w_in)
    w_out: jax.Array  # (lru_width, hidden_size): linear_out kernel
    b_out: jax.Array  # (hidden_size,)


class HawkCarry(NamedTuple):
    """State of the block: the conv's window of previous inputs and the RG-LRU state."""

    window: jax.Array  # (*batch, conv_width − 1, lru_width), previous inputs, oldest first
    state: jax.Array  # (*batch, lru_width): the RG-LRU's h (not the block's output)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    lru_width: Optional[int] = None,
    num_heads: int = 1,
    conv_width: int = 4,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    dtype=jnp.float32,
) -> HawkParams:
    """Initialise Hawk's recurrent block as recurrentgemma does (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H (the block's output size).
      lru_width: L, the RG-LRU's width (default ``hidden_size``); ``num_heads`` must divide it.
      num_heads: blocks of the RG-LRU's gate kernels.
      conv_width: K ≥ 1, the temporal width of the causal conv (recurrentgemma's default 4).
      min_rad, max_rad: the RG-LRU's ring (``rglru.init``).
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    width = hidden_size if lru_width is None else check_positive_int(lru_width, "lru_width")
    heads = width // check_heads(num_heads, width, "lru_width", " (the RG-LRU's gates are block-diagonal over heads)")
    conv_width = check_positive_int(conv_width, "conv_width")
    compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    k_y, k_x, k_out, k_conv, k_lru = jax.random.split(key, 5)

    def normal(k, shape, variance):
        return (jax.random.normal(k, shape, compute) * math.sqrt(variance)).astype(dtype)

    return HawkParams(
        w_y=normal(k_y, (input_size, width), 1 / input_size),
        b_y=jnp.zeros((width,), dtype),
        w_x=normal(k_x, (input_size, width), 1 / input_size),
        b_x=jnp.zeros((width,), dtype),
        conv=ConvParams(normal(k_conv, (conv_width, width), _CONV_VARIANCE / conv_width), jnp.zeros((width,), dtype)),
        lru=rglru.init(k_lru, width, width, num_heads=heads, min_rad=min_rad, max_rad=max_rad, dtype=dtype),
        w_out=normal(k_out, (width, hidden_size), 1 / width),
        b_out=jnp.zeros((hidden_size,), dtype),
    )


def input_size(params: HawkParams) -> int:
    """D, the rows of the input projections."""
    return params.w_x.shape[0]


def output_size(params: HawkParams) -> int:
    """H, the block's output size (the columns of ``w_out``)."""
    return params.w_out.shape[1]


def lru_width(params: HawkParams) -> int:
    """L, the width of the conv and the RG-LRU."""
    return params.w_x.shape[1]


def conv_width(params: HawkParams) -> int:
    """K, the conv's temporal width."""
    return params.conv.w.shape[0]


def initial_carry(params: HawkParams, batch_shape: tuple[int, ...] = ()) -> HawkCarry:
    """Zeros: the window ``(*batch_shape, K − 1, L)`` and ``h`` ``(*batch_shape, L)``."""
    check_params_type(params, HawkParams, "hawk.initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    return HawkCarry(conv_window(params.conv, batch_shape),
                     jnp.zeros(batch_shape + (lru_width(params),), params.w_x.dtype))


def _check_carry(params: HawkParams, carry: HawkCarry, batch_shape: tuple[int, ...], fn: str) -> None:
    if not isinstance(carry, HawkCarry):
        raise ValueError(f"{fn} expects a HawkCarry carry, got {type(carry).__name__}.")
    width = lru_width(params)
    expected = {"window": batch_shape + (conv_width(params) - 1, width), "state": batch_shape + (width,)}
    trailing = {"window": "(conv_width − 1, lru_width)", "state": "(lru_width,)"}
    for name, value in zip(HawkCarry._fields, carry):
        check_array(value, f"carry.{name}")
        if tuple(value.shape) != expected[name]:
            raise ValueError(
                f"Expected carry.{name} with shape {expected[name]} (x's batch shape + {trailing[name]}), "
                f"got shape {tuple(value.shape)}."
            )


def _check_input(params: HawkParams, x, fn: str, *, sequence: bool) -> None:
    """``x`` ``(*batch, D)`` for ``step``, ``xs`` ``(*batch, T, D)`` for ``sequence``."""
    check_params_type(params, HawkParams, fn)
    name, layout = ("xs", "(*batch, T, input_size)") if sequence else ("x", "(*batch, input_size)")
    check_feature_size(x, input_size(params), name, "the cell's input_size")  # every family's message
    if x.ndim < (2 if sequence else 1):
        raise ValueError(f"Expected {name} of shape {layout}, got shape {tuple(x.shape)}.")


def _branches(params: HawkParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(g, u)``: the gelu gate branch and the recurrence branch, ``(..., L)`` each."""
    gate = jax.nn.gelu(x @ params.w_y + lift(params.b_y, x), approximate=True)
    return gate, x @ params.w_x + lift(params.b_x, x)


def _out(params: HawkParams, h: jax.Array, gate: jax.Array) -> jax.Array:
    return (h * gate) @ params.w_out + lift(params.b_out, h)


def step(
    params: HawkParams, carry: HawkCarry, x: jax.Array, *, reset: Optional[jax.Array] = None
) -> tuple[HawkCarry, jax.Array]:
    """One step of the block for ``x`` ``(*batch, input_size)``; returns ``(carry', y)``, y ``(*batch, H)``.

    ``reset`` (optional booleans ``(*batch,)``): sequences that start a document at this step
    (recurrentgemma's ``segment_pos == 0``): the conv window is zeroed and the RG-LRU restarts.
    """
    _check_input(params, x, "hawk.step", sequence=False)
    _check_carry(params, carry, tuple(x.shape[:-1]), "hawk.step")
    gate, u = _branches(params, x)
    window = carry.window
    if reset is not None:
        rglru._check_reset(reset, x.shape[:-1], "hawk.step")
        window = jnp.where(reset[..., None, None], jnp.zeros((), window.dtype), window)
    window, v = conv_step(params.conv, window, u)
    state, h = rglru.step(params.lru, rglru.RGLRUCarry(carry.state), v, reset=reset)
    return HawkCarry(window, state.h), _out(params, h, gate)


def _masked_conv(
    params: ConvParams, us: jax.Array, window: jax.Array, reset: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The conv over ``us`` ``(*batch, T, L)`` where an input counts only within its document.

    Input ``s`` reaches output ``t ≥ s`` iff no reset lies in ``(s, t]``, i.e. both lie in the same
    segment (``cumsum(reset)``); the window's entries belong to segment 0. Returns the outputs and
    the final window (entries from before the last reset zeroed, as ``step`` leaves it).
    """
    width, time = params.w.shape[0], us.shape[-2]
    segment = jnp.cumsum(reset.astype(jnp.int32), axis=-1)   # (*batch, T)
    padded = jnp.concatenate([window, us], axis=-2)           # (*batch, K − 1 + T, L)
    padded_segment = jnp.concatenate([jnp.zeros(segment.shape[:-1] + (width - 1,), segment.dtype), segment], axis=-1)
    ys = lift(params.b, us)
    for k in range(width):
        same = (padded_segment[..., k:k + time] == segment)[..., None]
        ys = ys + jnp.where(same, padded[..., k:k + time, :], jnp.zeros((), us.dtype)) * lift(params.w[k], us)
    start = padded.shape[-2] - (width - 1)
    keep = (padded_segment[..., start:] == segment[..., -1:])[..., None]
    return ys, jnp.where(keep, padded[..., start:, :], jnp.zeros((), us.dtype))


def sequence(
    params: HawkParams,
    xs: jax.Array,
    carry: Optional[HawkCarry] = None,
    *,
    reset: Optional[jax.Array] = None,
    method: str = "associative",
) -> tuple[HawkCarry, jax.Array]:
    """The block over a whole sequence ``xs`` ``(*batch, T, input_size)`` (time axis −2) at once.

    Projections and the conv for all t in a few array operations, the RG-LRU by one associative
    scan (``method="associative"``, ``recurrax.parallel.linear_scan``) or by ``lax.scan``
    (``"sequential"``), then gate and out-projection. Equal to iterating ``step`` from ``carry``
    (default zeros). ``reset`` (optional booleans ``(*batch, T)``): document starts, as in
    ``step`` (recurrentgemma's ``segment_pos == 0``). Every step is valid: for right-padded
    batches use ``recurrax.rnn`` (``lengths``), or read the outputs at the valid steps (they do
    not depend on later steps) but not the final carry.

    Returns ``(final_carry, ys)``, ``ys`` ``(*batch, T, hidden_size)``.
    """
    _check_input(params, xs, "hawk.sequence", sequence=True)
    if method not in ("associative", "sequential"):
        raise ValueError(f"Expected method 'associative' or 'sequential', got {method!r}.")
    batch_shape, time = tuple(xs.shape[:-2]), xs.shape[-2]
    if time == 0:
        raise ValueError(f"Expected a non-empty time axis, got xs of shape {tuple(xs.shape)}.")
    carry = initial_carry(params, batch_shape) if carry is None else carry
    _check_carry(params, carry, batch_shape, "hawk.sequence")
    if reset is not None:
        rglru._check_reset(reset, xs.shape[:-1], "hawk.sequence")

    gates, us = _branches(params, xs)
    if reset is None:
        window, vs = conv_sequence(params.conv, us, carry.window)
    else:
        vs, window = _masked_conv(params.conv, us, carry.window, reset)

    a, b = rglru.linear_recurrence(params.lru, vs, reset=reset)
    a_t, b_t = jnp.moveaxis(a.h, -2, 0), jnp.moveaxis(b.h, -2, 0)   # (T, *batch, L)
    if method == "associative":
        hs_t = linear_scan(a_t, b_t, carry.state)
    else:
        def body(h, ab):
            h = ab[0] * h + ab[1]
            return h, h

        _, hs_t = jax.lax.scan(body, carry.state, (a_t, b_t))
    hs = jnp.moveaxis(hs_t, 0, -2)
    return HawkCarry(window, hs[..., -1, :]), _out(params, hs, gates)
