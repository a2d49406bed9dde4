"""Real-gated linear recurrent unit, RG-LRU (De et al. 2024, "Griffin"): Hawk's recurrence.

Equations, row-vector form, H = ``hidden_size`` units, c = 8:

    x̂   = x                    (input_size == hidden_size: the paper's cell)
    x̂   = x @ w_in             (input_size ≠ hidden_size, w_in (input_size, H))
    r   = σ(x̂ W_a + b_a)                         recurrence gate    (*batch, H)
    i   = σ(x̂ W_x + b_x)                         input gate         (*batch, H)
    log a = −c · r ⊙ softplus(Λ)                 a = exp(log a) ∈ (0, 1)
    h'  = a ⊙ h + sqrt(1 − a²) ⊙ (i ⊙ x̂)
    y   = h'

``W_a`` and ``W_x`` are block-diagonal over ``num_heads`` heads, stored as recurrentgemma's
``BlockDiagonalLinear`` stores them: ``(heads, H/heads, H/heads)``, head k mapping x̂'s k-th
slice of H/heads features to the gate's k-th slice (here ``w_a``, ``w_i``; the biases are kept
flat, ``(H,)``). The step is linear in its carry, ``h' = a ⊙ h + b`` with ``a`` and
``b = sqrt(1 − a²) ⊙ i ⊙ x̂`` functions of x alone (``linear_recurrence``), so
``rnn(..., method="associative")`` evaluates a whole sequence with one associative scan.

Initialisation, as recurrentgemma's: ``a⁰ = exp(−softplus(Λ)) = σ(−Λ)`` has ``(a⁰)²`` uniform
on ``[min_rad², max_rad²]`` (default ``[0.9², 0.999²]``, uniform in area on the ring), so
``Λ = softplus⁻¹(−log a⁰) = log(expm1(−log a⁰))`` (recurrentgemma writes ``log(exp(·) − 1)``, the
same value, less accurate for small arguments; it also adds its ``1e-8`` to ``(a⁰)²``, so do we).
Since ``a = (a⁰)^(c·r)``, the ring holds the decay at ``r = 1/c``; at ``r = 1`` it is
``(a⁰)^8 ∈ [0.43, 0.992]``. (The paper's text, as we read it, puts ``a^c``, the decay at r = 1,
in ``[0.9, 0.999]``; we follow the reference code, whose weights this cell must reproduce.)
The gate kernels are ``N(0, 1/H)`` (flax's ``variance_scaling(1, "fan_in", "normal")`` on the
``(heads, H/heads, H/heads)`` kernel counts the heads in the fan-in: 1/H, not heads/H), the biases
zero, and ``w_in`` (when present) ``N(0, 1/input_size)``, the kernels of Hawk's projections.
``num_heads`` defaults to 1 (dense gates; recurrentgemma has no default, its presets use 10 to 32
heads of 176 to 256 features), so ``init_rnn(key, rglru, D, H)`` works for any H.

Choices, and why:

- **Input size.** Exactly the paper's cell when ``input_size == hidden_size`` (``w_in`` is
  ``None``: no extra parameter). Otherwise a linear in-projection ``x̂ = x @ w_in`` without bias,
  the projection every block (Hawk's ``linear_x``, Mamba's ``in_proj``) puts in front of its
  recurrence, so the cell maps D to H like every recurrax layer and stacks.
- **sqrt(1 − a²).** Computed as ``sqrt(−expm1(2 log a))``, accurate for a near 1 (recurrentgemma
  forms ``1 − exp(2 log a)``, which in float32 loses ``1 − a²`` below ~1e-7 entirely: a deviation
  in rounding only, measured against the reference in ``tests/test_rglru.py``). Its derivative
  is bounded at 1000, as recurrentgemma's ``sqrt_bound_derivative(·, 1000)``: the backward pass
  uses ``max(1 − a², 1/(4·1000²))``, so a unit with a ≈ 1 (whose ``1 − a²`` may round to 0) does
  not send an infinite or huge gradient to Λ and the gate (recurrentgemma: "to prevent NaNs
  during training in bfloat16"). The forward value is the exact square root; reproducing the
  bound makes gradients match the reference's. recurrentgemma bounds it with a ``custom_vjp``;
  here it is the equivalent ``custom_jvp`` (the same products in reverse mode), so forward-mode
  differentiation (``jax.jvp``, ``jacfwd``: DEER, Hessian-free) works through the cell too.
- **Document starts.** recurrentgemma resets the state where ``segment_pos == 0`` (the first
  token of a document): there it uses ``a = 0`` *and the multiplier 1 instead of sqrt(1 − a²)*,
  ``h_0 = i ⊙ x̂``. The paper's equation (and this cell by default) applies ``sqrt(1 − a²)`` at
  every step, which is recurrentgemma on a stream whose ``segment_pos`` is never 0 (a continued
  sequence). ``step`` and ``linear_recurrence`` take ``reset`` (booleans ``(*batch,)``, the
  reference's ``segment_pos == 0``) to reproduce a document start exactly. Through ``rnn`` (which
  calls ``step(params, carry, x)``) there is no reset: a fresh sequence from the zero carry then
  differs from recurrentgemma's ``segment_pos = arange(T)`` at step 0 by the factor
  ``sqrt(1 − a_0²)`` on the first input (and everything after it through the state).
- **Protocol.** ``linear_recurrence`` and ``output``; no ``log_linear_recurrence`` (``b`` has
  either sign); ``jacobian_diagonal`` is ``a``. No ``recurrent_blocks``: the recurrence is
  diagonal with an input-dependent ``a`` in ``[exp(−c·softplus(Λ)), 1)``, so there is no
  fixed recurrent matrix whose spectrum would mean anything.

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import rglru
>>> params = rglru.init(jax.random.key(0), 8, 8, num_heads=2)
>>> carry, y = rglru.step(params, rglru.initial_carry(params, (2,)), jnp.ones((2, 8)))
>>> y.shape, params.w_a.shape, params.w_in is None
((2, 8), (2, 4, 4), True)

Reference: S. De, S. L. Smith, A. Fernando, A. Botev, G. Cristian-Muraru, A. Gu, R. Haroun,
L. Berrada, Y. Chen, S. Srinivasan, G. Desjardins, A. Doucet, D. Budden, Y. W. Teh, R. Pascanu,
N. De Freitas and C. Gulcehre, "Griffin: mixing gated linear recurrences with local attention
for efficient language models", arXiv:2402.19427 (2024); code: google-deepmind/recurrentgemma
(``recurrentgemma.jax.layers.RGLRU``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_feature_size, check_params_type
from recurrax.cells._common import check_heads, check_number, check_sizes, check_step, lift, zeros_carry

__all__ = [
    "RGLRUParams",
    "RGLRUCarry",
    "C",
    "MAX_SQRT_GRADIENT",
    "init",
    "initial_carry",
    "step",
    "linear_recurrence",
    "output",
    "jacobian_diagonal",
    "log_decay",
    "input_size",
    "output_size",
    "num_heads",
]

C = 8.0
"""The paper's constant c in ``log a = −c · r ⊙ softplus(Λ)``."""
MAX_SQRT_GRADIENT = 1000.0
"""recurrentgemma's bound on ``d sqrt(u) / du`` (its ``sqrt_bound_derivative``)."""
_RING_EPS = 1e-8  # recurrentgemma's eps added to (a⁰)² in its Λ initialiser


class RGLRUParams(NamedTuple):
    """Parameters of an RG-LRU cell (recurrentgemma's ``a_gate``, ``input_gate``, ``a_param``)."""

    w_in: Optional[jax.Array]  # (input_size, hidden_size) in-projection; None when input_size == hidden_size
    w_a: jax.Array  # (heads, H/heads, H/heads): recurrence gate r, block-diagonal
    b_a: jax.Array  # (hidden_size,)
    w_i: jax.Array  # (heads, H/heads, H/heads): input gate i (the paper's W_x), block-diagonal
    b_i: jax.Array  # (hidden_size,)
    a_param: jax.Array  # (hidden_size,): Λ, log a = −c · r ⊙ softplus(Λ)


class RGLRUCarry(NamedTuple):
    """State of an RG-LRU cell: ``h``, also its output."""

    h: jax.Array  # (*batch, hidden_size)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 1,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    dtype=jnp.float32,
) -> RGLRUParams:
    """Initialise an RG-LRU cell as recurrentgemma does (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H (H is also the output size); ``w_in`` only when D ≠ H.
      num_heads: blocks of the gate kernels; must divide ``hidden_size``.
      min_rad, max_rad: the ring of ``a⁰ = exp(−softplus(Λ))``, ``0 ≤ min_rad < max_rad < 1``.
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    heads = hidden_size // check_heads(num_heads, hidden_size, why=" (the gates are block-diagonal over heads)")
    min_rad = check_number(min_rad, "min_rad", low=0.0, high=1.0, high_open=True)
    max_rad = check_number(max_rad, "max_rad", low=0.0, high=1.0, high_open=True)
    if not min_rad < max_rad:
        raise ValueError(f"Expected min_rad < max_rad, got min_rad={min_rad!r}, max_rad={max_rad!r}.")
    compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    k_ring, k_a, k_i, k_in = jax.random.split(key, 4)
    block = hidden_size // heads

    # Λ: (a⁰)² uniform on [min_rad², max_rad²] (+ recurrentgemma's eps), Λ = softplus⁻¹(−log a⁰).
    u = jax.random.uniform(k_ring, (hidden_size,), compute)
    log_a0 = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2 + _RING_EPS)
    a_param = jnp.log(jnp.expm1(-log_a0))

    def normal(k, shape, fan_in):
        return (jax.random.normal(k, shape, compute) / math.sqrt(fan_in)).astype(dtype)

    zeros = jnp.zeros((hidden_size,), dtype)
    return RGLRUParams(
        w_in=None if input_size == hidden_size else normal(k_in, (input_size, hidden_size), input_size),
        w_a=normal(k_a, (heads, block, block), hidden_size),
        b_a=zeros,
        w_i=normal(k_i, (heads, block, block), hidden_size),
        b_i=zeros,
        a_param=a_param.astype(dtype),
    )


def input_size(params: RGLRUParams) -> int:
    """D: the rows of ``w_in``, or H without one."""
    return output_size(params) if params.w_in is None else params.w_in.shape[0]


def output_size(params: RGLRUParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.a_param.shape[-1]


def num_heads(params: RGLRUParams) -> int:
    """The number of diagonal blocks of the gate kernels."""
    return params.w_a.shape[0]


def initial_carry(params: RGLRUParams, batch_shape: tuple[int, ...] = ()) -> RGLRUCarry:
    """Zero state, ``h`` of shape ``(*batch_shape, hidden_size)``."""
    check_params_type(params, RGLRUParams, "rglru.initial_carry")
    return zeros_carry(RGLRUCarry, params, RGLRUParams, batch_shape, "rglru.initial_carry",
                       hidden_size=output_size(params), dtype=params.a_param.dtype)


def _block_diagonal(w: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
    """``x @ blockdiag(w[0], …, w[heads−1]) + b`` for ``x`` ``(..., H)``: recurrentgemma's BlockDiagonalLinear."""
    heads, block, _ = w.shape
    blocks = x.reshape(x.shape[:-1] + (heads, block))
    y = jnp.einsum("...hi,hij->...hj", blocks, w)
    return y.reshape(x.shape) + lift(b, x)


@jax.custom_jvp
def _sqrt_bound_derivative(u: jax.Array) -> jax.Array:
    """``sqrt(u)`` whose derivative is taken at ``max(u, 1/(4·1000²))``: at most 1000."""
    return jnp.sqrt(u)


@_sqrt_bound_derivative.defjvp
def _sqrt_bound_derivative_jvp(primals, tangents):
    # recurrentgemma's stable_sqrt_bwd is the VJP of sqrt at the clipped argument, i.e.
    # g · (0.5 / sqrt(max(u, 1/(4·1000²)))), the very expression of JAX's own sqrt rule. As a JVP
    # (not recurrentgemma's custom_vjp) the same derivative also serves forward mode (jax.jvp,
    # jacfwd: DEER, Hessian-free), and reverse mode transposes it to the same product.
    (u,), (du,) = primals, tangents
    clipped = jnp.maximum(u, 1 / (4 * MAX_SQRT_GRADIENT**2))
    return jnp.sqrt(u), du * (0.5 / jnp.sqrt(clipped))


def _check_reset(reset, batch_shape: tuple[int, ...], fn: str) -> None:
    if not (hasattr(reset, "shape") and hasattr(reset, "dtype")):
        raise ValueError(
            f"{fn}: expected reset as a boolean array of shape {tuple(batch_shape)}, got {type(reset).__name__}."
        )
    if tuple(reset.shape) != tuple(batch_shape) or reset.dtype != jnp.bool_:
        raise ValueError(
            f"{fn}: expected reset as a boolean array of shape {tuple(batch_shape)} (x's batch shape), "
            f"got {reset.dtype} of shape {tuple(reset.shape)}."
        )


def _projected(params: RGLRUParams, x: jax.Array, fn: str) -> jax.Array:
    """x̂: ``x`` itself, or ``x @ w_in``; checks x's feature size."""
    check_params_type(params, RGLRUParams, fn)
    check_feature_size(x, input_size(params), "x", "the cell's input_size")
    return x if params.w_in is None else x @ params.w_in


def log_decay(params: RGLRUParams, x: jax.Array) -> jax.Array:
    """``log a = −c · r ⊙ softplus(Λ)`` ``(*batch, H)`` for inputs ``x`` ``(*batch, D)``."""
    x_hat = _projected(params, x, "rglru.log_decay")
    return _log_decay(params, x_hat)


def _log_decay(params: RGLRUParams, x_hat: jax.Array) -> jax.Array:
    r = jax.nn.sigmoid(_block_diagonal(params.w_a, params.b_a, x_hat))
    return -C * r * lift(jax.nn.softplus(params.a_param), x_hat)   # recurrentgemma's order of products


def linear_recurrence(
    params: RGLRUParams, x: jax.Array, *, reset: Optional[jax.Array] = None
) -> tuple[RGLRUCarry, RGLRUCarry]:
    """``(a, b)`` with ``h' = a.h ⊙ h + b.h``, each ``(*batch, H)``, for ``x`` ``(*batch, D)``.

    ``a = exp(log a)``, ``b = sqrt(1 − a²) ⊙ i ⊙ x̂``; where ``reset`` (booleans ``(*batch,)``)
    is true, ``a = 0`` and ``b = i ⊙ x̂`` (recurrentgemma at ``segment_pos == 0``).
    """
    x_hat = _projected(params, x, "rglru.linear_recurrence")
    log_a = _log_decay(params, x_hat)
    gated = x_hat * jax.nn.sigmoid(_block_diagonal(params.w_i, params.b_i, x_hat))
    a = jnp.exp(log_a)
    multiplier = _sqrt_bound_derivative(-jnp.expm1(2 * log_a))   # sqrt(1 − a²)
    if reset is not None:
        _check_reset(reset, x.shape[:-1], "rglru.linear_recurrence")
        at_start = reset[..., None]
        a = jnp.where(at_start, jnp.zeros((), a.dtype), a)
        multiplier = jnp.where(at_start, jnp.ones((), a.dtype), multiplier)
    return RGLRUCarry(a), RGLRUCarry(gated * multiplier)


def step(
    params: RGLRUParams, carry: RGLRUCarry, x: jax.Array, *, reset: Optional[jax.Array] = None
) -> tuple[RGLRUCarry, jax.Array]:
    """One step ``h' = a ⊙ h + sqrt(1 − a²) ⊙ i ⊙ x̂`` for ``x`` ``(*batch, input_size)``.

    ``reset`` (optional booleans ``(*batch,)``): sequences that start a document here, as
    recurrentgemma's ``segment_pos == 0`` (``h' = i ⊙ x̂``; see the module docstring).
    Returns ``(RGLRUCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    check_params_type(params, RGLRUParams, "rglru.step")  # before reading sizes off params
    check_step(params, RGLRUParams, carry, RGLRUCarry, x, "rglru.step",
               input_size=input_size(params), hidden_size=output_size(params))
    a, b = linear_recurrence(params, x, reset=reset)
    h = a.h * carry.h + b.h
    return RGLRUCarry(h), h


def output(params: RGLRUParams, carry: RGLRUCarry, x: jax.Array) -> jax.Array:
    """The step's output from its new carry: ``h'`` itself."""
    del params, x
    return carry.h


def jacobian_diagonal(params: RGLRUParams, carry: RGLRUCarry, x: jax.Array) -> tuple[RGLRUCarry, RGLRUCarry]:
    """``(new_carry, a)``: the recurrence is diagonal, ``∂h'_k / ∂h_k = a_k``."""
    check_params_type(params, RGLRUParams, "rglru.jacobian_diagonal")  # before reading sizes off params
    check_step(params, RGLRUParams, carry, RGLRUCarry, x, "rglru.jacobian_diagonal",
               input_size=input_size(params), hidden_size=output_size(params))
    a, b = linear_recurrence(params, x)
    return RGLRUCarry(a.h * carry.h + b.h), a
