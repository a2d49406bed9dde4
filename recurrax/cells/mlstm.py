"""mLSTM (Beck et al. 2024, xLSTM): a matrix-memory LSTM with exponential gates and a stabiliser.

Equations, row-vector form, NH heads of size d = H / NH; per head (``q, k, v`` split into heads,
``C`` (d, d), ``n`` (d,), ``m`` and the gates scalars):

    q = x @ W_q     k = (x @ W_k) / sqrt(d)     v = x @ W_v          each (*batch, H)
    ĩ = x @ W_i + b_i      f̃ = x @ W_f + b_f                          each (*batch, NH)
    o = σ(x @ W_o + b_o)                                              (*batch, H), optional
    log f = log σ(f̃)
    m' = max(log f + m, ĩ)
    C' = exp(log f + m − m') C + exp(ĩ − m') kᵀ v                    C[a, b]: key a, value b
    n' = exp(log f + m − m') n + exp(ĩ − m') k
    h̃ = q C' / (max(|q · n'|, exp(−m')) + eps)
    y = o ⊙ h̃                      (y = h̃ with output_gate=False)

The carry is ``MLSTMCarry(C, n, m)``: ``C`` (*batch, NH, d, d), ``n`` (*batch, NH, d),
``m`` (*batch, NH). ``C`` is stored as xlstm stores it, ``k vᵀ`` (key index first), so that
``h̃ = q C``. ``C`` and ``n`` are the unstabilised sums ``C̄ = Σ_s exp(ĩ_s + Σ_{r>s} log f_r)
kᵀ_s v_s`` (and ``n̄``) scaled by ``exp(−m)``; ``m`` keeps every ``exp`` argument ≤ 0.

Choices, and why:

- **Exactly xlstm 2.0.6's** ``recurrent_step_stabilized_simple`` (the tests match it, and its
  ``parallel_stabilized_simple`` and ``chunkwise_simple``, to 1e-10 in float64 with gradients):
  ``k`` scaled by ``1/sqrt(d)``, ``eps = 1e-6`` added to the normaliser *after* the max
  (``eps`` is an option, static metadata), gradients through ``m`` (no ``stop_gradient``), and
  the zero initial state with ``m = 0`` (``initial_carry``, as xlstm's recurrent mode; its
  parallel form starts from "``m = −∞``": pass a carry with ``m = −inf`` to reproduce it, the
  two differ by ``eps`` only).
- **Gates from x.** The paper computes ĩ, f̃, o from the cell's input; xlstm's ``mLSTMCell``
  computes ĩ and f̃ from ``[q, k, v]``. Here they read ``x`` (the spec and the paper), and the
  output gate is the paper's ``o``; ``output_gate=False`` drops it (``w_o = b_o = None``), as in
  xlstm's block, which gates with its own ``z`` branch outside the cell.
- **Parallel forms.** (a) ``linear_recurrence`` for ``rnn(method="associative")``: the
  recurrence is linear in the unstabilised state ``to_linear(carry) = (C e^m, n e^m)``, with
  ``a = f = σ(f̃)`` and ``b = (e^ĩ kᵀ v, e^ĩ k)``. ``from_linear`` returns that state with
  ``m = 0`` (``C = C̄``): the same state in another gauge, since ``(C, n, m)`` and ``(C e^δ,
  n e^δ, m − δ)`` give the same outputs and next states; with ``eps = 0`` the outputs equal the
  stabilised step's in exact arithmetic (the tests: to 1e-10 in float64, gradients included).
  With ``eps > 0`` the ``eps`` term does not scale with the gauge (and no linear state can
  carry the running max ``m``), so the normaliser differs by ``eps·|e^{m_t} − 1| /
  max(|q·n̄|, 1)`` relative, ``m_t`` the step's stabiliser (≤ 6e-6 for xlstm's eps and
  ``m ≤ 2``). Overflow: ``e^ĩ`` and ``C̄ ~ e^{m_t}`` must stay finite, i.e. ``m_t +
  log(Σ|k||v|)`` below ``log(finfo.max)`` (88.7 in float32, 709.8 in float64) at every step,
  the initial carry's ``m`` included; past it the outputs are inf/NaN (tested: float32 with
  ``ĩ ≈ 60`` is exact, ``ĩ ≈ 100`` is not). Use ``chunkwise`` or the sequential scan when the
  input gate can be that large. (Underflow, ``m_t`` below −87 in float32, is harmless: the
  outputs are then of the order of ``e^{m_t}``, about 0 either way.)
  (b) ``chunkwise(params, xs, carry, chunk_size=64)``: xlstm's ``chunkwise_simple`` form,
  stabilised exactly as the step (the same ``m`` at every step), so it equals the sequential
  scan up to rounding, ``eps`` included; ``T`` not divisible by the chunk size is padded with
  identity steps (``log f = 0``, ``ĩ = −∞``), which leave the state exactly unchanged.

Initialisation as xlstm's mLSTM layer and cell: ``W_q, W_k, W_v, W_o`` normal with std
``sqrt(2 / (5 D))`` ("small init"), ``W_i = W_f = 0``, ``b_f = linspace(3, 6, NH)``,
``b_i ~ N(0, 0.1²)``, ``b_o = 0``.

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import mlstm
>>> params = mlstm.init(jax.random.key(0), 3, 8, num_heads=2)
>>> carry, y = mlstm.step(params, mlstm.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> (y.shape, carry.C.shape, carry.n.shape, carry.m.shape)
((2, 8), (2, 2, 4, 4), (2, 2, 4), (2, 2))
>>> final, ys = mlstm.chunkwise(params, jnp.ones((2, 5, 3)), chunk_size=2)
>>> ys.shape
(2, 5, 8)

Reference: M. Beck, K. Pöppel, M. Spanring, A. Auer, O. Prudnikova, M. Kopp, G. Klambauer,
J. Brandstetter and S. Hochreiter, "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024
(arXiv:2405.04517); code: the ``xlstm`` package (NX-AI/xlstm), ``blocks/mlstm/backends.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_array, check_batch_shape, check_params_type
from recurrax.cells._common import check_heads, check_number, check_sizes, lift

__all__ = [
    "MLSTMOptions",
    "MLSTMParams",
    "MLSTMCarry",
    "init",
    "initial_carry",
    "step",
    "output",
    "linear_recurrence",
    "to_linear",
    "from_linear",
    "chunkwise",
    "num_heads",
    "input_size",
    "output_size",
]


@dataclasses.dataclass(frozen=True)
class MLSTMOptions:
    """Static options of an mLSTM cell (pytree metadata, not a leaf).

    ``eps``: added to the normaliser ``max(|q·n|, exp(−m))`` (xlstm: 1e-6).
    """

    eps: float = 1e-6

    def __post_init__(self):
        check_number(self.eps, "eps", low=0.0)


jax.tree_util.register_static(MLSTMOptions)


class MLSTMParams(NamedTuple):
    """Parameters of an mLSTM cell (the paper's names)."""

    w_q: jax.Array  # (input_size, hidden_size)
    w_k: jax.Array  # (input_size, hidden_size)
    w_v: jax.Array  # (input_size, hidden_size)
    w_i: jax.Array  # (input_size, num_heads): input gate, one per head
    b_i: jax.Array  # (num_heads,)
    w_f: jax.Array  # (input_size, num_heads): forget gate, one per head
    b_f: jax.Array  # (num_heads,)
    w_o: Optional[jax.Array]  # (input_size, hidden_size), None with output_gate=False
    b_o: Optional[jax.Array]  # (hidden_size,), None with output_gate=False
    options: MLSTMOptions


class MLSTMCarry(NamedTuple):
    """State of an mLSTM cell: matrix memory ``C``, normaliser ``n``, stabiliser ``m``, per head."""

    C: jax.Array  # (*batch, num_heads, head_dim, head_dim), C[..., key, value]
    n: jax.Array  # (*batch, num_heads, head_dim)
    m: jax.Array  # (*batch, num_heads)


class _Inputs(NamedTuple):
    """Everything a step reads from ``x``, heads split: q, k (scaled), v ``(*b, NH, d)``; gates ``(*b, NH)``."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    i: jax.Array  # ĩ
    log_f: jax.Array  # log σ(f̃)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    output_gate: bool = True,
    eps: float = 1e-6,
    dtype=jnp.float32,
) -> MLSTMParams:
    """Initialise an mLSTM cell as xlstm does (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      num_heads: NH, dividing H.
      output_gate: the paper's output gate ``o``; False drops ``w_o`` and ``b_o`` (``y = h̃``).
      eps: the normaliser's additive constant (xlstm: 1e-6; 0 makes the associative form exact).
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    check_heads(num_heads, hidden_size)
    if not isinstance(output_gate, bool):
        raise ValueError(f"Expected output_gate to be True or False, got {output_gate!r}.")
    options = MLSTMOptions(eps=float(check_number(eps, "eps", low=0.0)))
    k_q, k_k, k_v, k_o, k_bi = jax.random.split(key, 5)
    std = math.sqrt(2 / (5 * input_size))

    def small(k, width):
        return std * jax.random.normal(k, (input_size, width), dtype)

    zeros_gate = jnp.zeros((input_size, num_heads), dtype)
    return MLSTMParams(
        w_q=small(k_q, hidden_size),
        w_k=small(k_k, hidden_size),
        w_v=small(k_v, hidden_size),
        w_i=zeros_gate,
        b_i=0.1 * jax.random.normal(k_bi, (num_heads,), dtype),
        w_f=zeros_gate,
        b_f=jnp.asarray(np.linspace(3.0, 6.0, num_heads), dtype),
        w_o=small(k_o, hidden_size) if output_gate else None,
        b_o=jnp.zeros((hidden_size,), dtype) if output_gate else None,
        options=options,
    )


def num_heads(params: MLSTMParams) -> int:
    """NH, the number of heads (columns of ``w_i``)."""
    return params.w_i.shape[-1]


def input_size(params: MLSTMParams) -> int:
    """D, the feature size ``step`` expects."""
    return params.w_q.shape[0]


def output_size(params: MLSTMParams) -> int:
    """H, the size of ``y``."""
    return params.w_q.shape[1]


def _head_dim(params: MLSTMParams) -> int:
    return output_size(params) // num_heads(params)


def _check_params(params: MLSTMParams, fn: str) -> None:
    check_params_type(params, MLSTMParams, fn)
    if not isinstance(params.options, MLSTMOptions):
        raise ValueError(f"{fn} expects params.options to be MLSTMOptions, got {type(params.options).__name__}.")
    d_in, hidden = params.w_q.shape[0], params.w_q.shape[-1]
    heads = params.w_i.shape[-1]
    check_heads(heads, hidden)
    expected = {"w_q": (d_in, hidden), "w_k": (d_in, hidden), "w_v": (d_in, hidden), "w_i": (d_in, heads),
                "b_i": (heads,), "w_f": (d_in, heads), "b_f": (heads,)}
    if (params.w_o is None) != (params.b_o is None):
        raise ValueError("Expected w_o and b_o both arrays (output gate) or both None (no output gate).")
    if params.w_o is not None:
        expected.update(w_o=(d_in, hidden), b_o=(hidden,))
    for name, shape in expected.items():
        value = getattr(params, name)
        check_array(value, f"params.{name}")
        if tuple(value.shape) != shape:
            raise ValueError(f"Expected params.{name} of shape {shape}, got {tuple(value.shape)}.")


def _carry_shapes(params: MLSTMParams, batch_shape: tuple[int, ...]) -> MLSTMCarry:
    heads, d = num_heads(params), _head_dim(params)
    return MLSTMCarry(batch_shape + (heads, d, d), batch_shape + (heads, d), batch_shape + (heads,))


def _check_x(params: MLSTMParams, x, name: str = "x") -> None:
    check_array(x, name)
    if x.ndim < 1 or x.shape[-1] != input_size(params):
        raise ValueError(
            f"Expected {name} with last dimension {input_size(params)} (the cell's input_size), "
            f"got shape {tuple(x.shape)}."
        )


def _check_carry(params: MLSTMParams, carry, batch_shape: tuple[int, ...], fn: str) -> None:
    if not isinstance(carry, MLSTMCarry):
        raise ValueError(f"{fn} expects an MLSTMCarry carry, got {type(carry).__name__}.")
    for name, shape, value in zip(MLSTMCarry._fields, _carry_shapes(params, batch_shape), carry):
        check_array(value, f"carry.{name}")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"Expected carry.{name} with shape {shape} (x's batch shape + (num_heads, ...)), "
                f"got shape {tuple(value.shape)}."
            )


def initial_carry(params: MLSTMParams, batch_shape: tuple[int, ...] = ()) -> MLSTMCarry:
    """Zero state with ``m = 0`` (xlstm's recurrent mode): ``C`` (*batch, NH, d, d), ``n`` (*batch, NH, d), ``m`` (*batch, NH)."""
    _check_params(params, "mlstm.initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    shapes = _carry_shapes(params, batch_shape)
    return MLSTMCarry(*(jnp.zeros(shape, params.w_q.dtype) for shape in shapes))


def _inputs(params: MLSTMParams, x: jax.Array) -> _Inputs:
    heads, d = num_heads(params), _head_dim(params)

    def split(v):
        return v.reshape(v.shape[:-1] + (heads, d))

    z_i, z_f = x @ params.w_i, x @ params.w_f
    return _Inputs(
        q=split(x @ params.w_q),
        k=split(x @ params.w_k) / math.sqrt(d),
        v=split(x @ params.w_v),
        i=z_i + lift(params.b_i, z_i),
        log_f=jax.nn.log_sigmoid(z_f + lift(params.b_f, z_f)),
    )


def _gate_output(params: MLSTMParams, x: jax.Array, h_tilde: jax.Array) -> jax.Array:
    """``o ⊙ h̃`` (``h̃`` with its heads merged, ``(*b, H)``), or ``h̃`` without an output gate."""
    if params.w_o is None:
        return h_tilde
    z_o = x @ params.w_o
    return jax.nn.sigmoid(z_o + lift(params.b_o, z_o)) * h_tilde


def _readout(params: MLSTMParams, carry: MLSTMCarry, q: jax.Array) -> jax.Array:
    """``h̃ = q C / (max(|q·n|, exp(−m)) + eps)`` per head, merged to ``(*b, H)``."""
    numerator = jnp.einsum("...a,...ab->...b", q, carry.C)
    qn = jnp.sum(q * carry.n, axis=-1)
    denominator = jnp.maximum(jnp.abs(qn), jnp.exp(-carry.m)) + params.options.eps
    h_tilde = numerator / denominator[..., None]
    return h_tilde.reshape(h_tilde.shape[:-2] + (-1,))


def step(params: MLSTMParams, carry: MLSTMCarry, x: jax.Array) -> tuple[MLSTMCarry, jax.Array]:
    """One stabilised mLSTM step for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(MLSTMCarry(C', n', m'), y)``, ``y`` of shape ``(*batch, hidden_size)``.
    """
    _check_params(params, "mlstm.step")
    _check_x(params, x)
    _check_carry(params, carry, tuple(x.shape[:-1]), "mlstm.step")
    inp = _inputs(params, x)
    m = jnp.maximum(inp.log_f + carry.m, inp.i)
    decay = jnp.exp(inp.log_f + carry.m - m)
    gain = jnp.exp(inp.i - m)
    C = decay[..., None, None] * carry.C + gain[..., None, None] * (inp.k[..., :, None] * inp.v[..., None, :])
    n = decay[..., None] * carry.n + gain[..., None] * inp.k
    new = MLSTMCarry(C, n, m)
    return new, _gate_output(params, x, _readout(params, new, inp.q))


def output(params: MLSTMParams, carry: MLSTMCarry, x: jax.Array) -> jax.Array:
    """The step's output from its new carry and ``x``: ``o ⊙ q C / (max(|q·n|, e^{−m}) + eps)``."""
    return _gate_output(params, x, _readout(params, carry, _inputs(params, x).q))


class _Unstabilised(NamedTuple):
    """The linear view of a carry: ``C̄ = C e^m`` ``(*b, NH, d, d)`` and ``n̄ = n e^m`` ``(*b, NH, d)``."""

    C: jax.Array
    n: jax.Array


def to_linear(params: MLSTMParams, carry: MLSTMCarry) -> _Unstabilised:
    """``(C e^m, n e^m)``, where the recurrence is ``C̄' = f C̄ + e^ĩ kᵀ v`` (overflows for ``m`` ≳ 88 in float32)."""
    del params
    scale = jnp.exp(carry.m)
    return _Unstabilised(scale[..., None, None] * carry.C, scale[..., None] * carry.n)


def from_linear(params: MLSTMParams, state: _Unstabilised) -> MLSTMCarry:
    """The carry ``(C̄, n̄, m = 0)``: the unstabilised state itself, in the gauge ``m = 0``."""
    del params
    return MLSTMCarry(state.C, state.n, jnp.zeros(state.n.shape[:-1], state.n.dtype))


def linear_recurrence(params: MLSTMParams, x: jax.Array) -> tuple[_Unstabilised, _Unstabilised]:
    """``(a, b)`` with ``to_linear(carry') = a ⊙ to_linear(carry) + b``, functions of ``x`` only.

    ``a = (f, f)`` with ``f = σ(f̃)`` ``(*b, NH, 1, 1)`` and ``(*b, NH, 1)`` (broadcasting), and
    ``b = (e^ĩ kᵀ v, e^ĩ k)``. Finite while ``ĩ`` (and the state) stay below ``log(finfo.max)``.
    """
    inp = _inputs(params, x)
    forget, gain = jnp.exp(inp.log_f), jnp.exp(inp.i)
    return (_Unstabilised(forget[..., None, None], forget[..., None]),
            _Unstabilised(gain[..., None, None] * (inp.k[..., :, None] * inp.v[..., None, :]),
                          gain[..., None] * inp.k))


def chunkwise(
    params: MLSTMParams,
    xs: jax.Array,
    carry: Optional[MLSTMCarry] = None,
    *,
    chunk_size: int = 64,
) -> tuple[MLSTMCarry, jax.Array]:
    """The mLSTM over a whole sequence in chunks: matrix products within, a scan across chunks.

    ``xs`` ``(*batch, T, D)`` (time on axis −2), ``carry`` the initial carry (default
    ``initial_carry``). Returns ``(final carry, ys (*batch, T, H))``, equal to stepping ``step``
    (the same stabiliser ``m`` at every step). Within a chunk of L steps, with ``L_t`` the
    cumulative ``log f`` from the chunk's start and ``(C, n, m)`` the carry before it:

        log D_ts = L_t − L_s + ĩ_s  (s ≤ t, else −∞)     m_t = max(L_t + m, max_s log D_ts)
        S = (q kᵀ) ⊙ exp(log D − m_t)                     g_t = exp(L_t + m − m_t)
        h̃_t = (g_t q_t C + S_t v) / (max(|g_t q_t·n + Σ_s S_ts|, e^{−m_t}) + eps)

    and the carry after the chunk is row L of the same weights: ``C' = g_L C + kᵀ diag(exp(log
    D_L − m_L)) v``. ``T`` not divisible by ``chunk_size`` is padded at the end with identity
    steps (``log f = 0``, ``ĩ = −∞``: the state passes unchanged) whose outputs are dropped; a
    chunk size above T is cut to T. Costs O(T·L·d + T·d²) per head instead of the step's O(T·d²)
    sequential ones: T / L dependent steps.
    """
    _check_params(params, "mlstm.chunkwise")
    _check_x(params, xs, "xs")
    if xs.ndim < 2:
        raise ValueError(f"Expected xs of shape (*batch, time, features), got shape {tuple(xs.shape)}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"Expected chunk_size to be a positive integer, got {chunk_size!r}.")
    batch_shape, time = tuple(xs.shape[:-2]), xs.shape[-2]
    if time == 0:
        raise ValueError(f"Expected a non-empty time axis, got xs of shape {tuple(xs.shape)}.")
    if carry is None:
        carry = initial_carry(params, batch_shape)
    _check_carry(params, carry, batch_shape, "mlstm.chunkwise")
    length = min(int(chunk_size), time)
    chunks = -(-time // length)
    pad = chunks * length - time

    inp = _inputs(params, xs)  # leaves (*b, T, NH, ...)
    if pad:
        valid = jnp.arange(chunks * length) < time  # (T',)

        def extend(v, fill):
            widths = [(0, 0)] * v.ndim
            widths[len(batch_shape)] = (0, pad)
            return jnp.pad(v, widths, constant_values=fill)

        inp = _Inputs(extend(inp.q, 0), extend(inp.k, 0), extend(inp.v, 0),
                      jnp.where(lift(valid[:, None], inp.i), extend(inp.i, 0), -jnp.inf),  # identity: i' = 0
                      extend(inp.log_f, 0))  # f = 1

    axis = len(batch_shape)  # the time axis of every leaf of inp

    def to_chunks(v):  # (*b, T', NH, ...) -> (chunks, *b, NH, L, ...)
        v = v.reshape(v.shape[:axis] + (chunks, length) + v.shape[axis + 1:])
        return jnp.moveaxis(jnp.moveaxis(v, axis, 0), axis + 1, axis + 2)

    eps = params.options.eps
    causal = jnp.tril(jnp.ones((length, length), bool))

    def one_chunk(state: MLSTMCarry, chunk: _Inputs):
        q, k, v, i, log_f = chunk  # q, k, v (*b, NH, L, d); i, log_f (*b, NH, L)
        cum = jnp.cumsum(log_f, axis=-1)  # L_t
        log_d = jnp.where(lift(causal, i[..., None]), cum[..., :, None] - cum[..., None, :] + i[..., None, :], -jnp.inf)
        carried = cum + state.m[..., None]  # L_t + m: the log weight of the carry at t
        m = jnp.maximum(carried, jnp.max(log_d, axis=-1))  # (*b, NH, L): the step's m_t exactly
        weights = jnp.exp(log_d - m[..., None])  # (*b, NH, L, L)
        g = jnp.exp(carried - m)  # (*b, NH, L)
        scores = jnp.einsum("...ta,...sa->...ts", q, k) * weights
        numerator = g[..., None] * jnp.einsum("...ta,...ab->...tb", q, state.C) + scores @ v
        qn = g * jnp.einsum("...ta,...a->...t", q, state.n) + jnp.sum(scores, axis=-1)
        h_tilde = numerator / (jnp.maximum(jnp.abs(qn), jnp.exp(-m)) + eps)[..., None]
        last = weights[..., -1, :]  # (*b, NH, L): exp(log D_Ls − m_L)
        C = g[..., -1, None, None] * state.C + jnp.einsum("...sa,...s,...sb->...ab", k, last, v)
        n = g[..., -1, None] * state.n + jnp.einsum("...sa,...s->...a", k, last)
        h_tilde = jnp.swapaxes(h_tilde, -2, -3)  # (*b, L, NH, d)
        return MLSTMCarry(C, n, m[..., -1]), h_tilde.reshape(h_tilde.shape[:-2] + (-1,))

    final, hs = jax.lax.scan(one_chunk, carry, jax.tree.map(to_chunks, inp))
    hs = jnp.moveaxis(hs, 0, axis)  # (*b, chunks, L, H)
    hs = hs.reshape(batch_shape + (chunks * length, hs.shape[-1]))[..., :time, :]
    return final, _gate_output(params, xs, hs)
