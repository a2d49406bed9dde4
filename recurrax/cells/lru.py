"""Linear recurrent unit, LRU (Orvieto et al. 2023): a diagonal complex linear recurrence.

Equations, row-vector form, with a complex state ``h = re + i·im`` of N = ``hidden_size`` units:

    λ = exp(−exp(ν_log) + i·exp(θ_log))                 (N,), |λ| = exp(−exp(ν_log)) < 1
    γ = exp(γ_log)                                      (N,)
    h' = λ ⊙ h + γ ⊙ (x @ B),      B = B_re + i·B_im    (input_size, N)
    y  = Re(h' @ C) + x @ D,       C = C_re + i·C_im    (N, N),   D real (input_size, N)

This is the paper's exponential parametrisation (its reference code): the modulus through
``ν = exp(ν_log) > 0``, so ``|λ| < 1`` for any real ``ν_log`` (stable by construction), and the
phase through ``θ = exp(θ_log) > 0``. ``γ`` starts at ``sqrt(1 − |λ|²)``, which keeps the state's
variance at the input's for white-noise inputs, and is then a free parameter of its own. Every
parameter is stored real: ``jax.grad``, optax and checkpoints never see a complex leaf.

Initialisation (the paper's Lemma 3.2): λ uniform on the ring ``r_min ≤ |λ| ≤ r_max`` (uniform
in area: ``|λ|² ~ U(r_min², r_max²)``) with phase uniform in ``(0, max_phase]``. The reference
code's defaults are ``r_min = 0, r_max = 1, max_phase = 2π`` (here too); for long sequences the
paper moves the ring towards the unit circle and shrinks the phases (its longest task, PathX
at 16k steps: ``r_min = 0.999, r_max = 0.9999, max_phase = π/10``). ``B_re``, ``B_im`` are
``N(0, 1/(2D))`` and ``C_re``, ``C_im`` ``N(0, 1/N)`` (Glorot-like for complex matrices, as in
the paper); ``D`` is ``N(0, 1/D)``, the variance of the paper's ``N(0, 1)`` diagonal spread over
a full matrix.

Choices, and why:

- **Carry.** The complex state is kept as a real pair ``LRUCarry(re, im)``, not one complex leaf,
  so every tool that handles carries as real arrays works unchanged: masking (``jnp.where``),
  ``gradient_flow`` (ravelled carries and their Jacobians, ``jax.jacrev`` needs real outputs),
  ``check_grads``, learned initial states, and bfloat16 (there is no complex bfloat16). ``step``
  does the complex product in real arithmetic. The recurrence is diagonal only over the complex
  state, so ``linear_recurrence`` is stated on ``to_linear(params, carry) = re + i·im`` (the
  protocol's linear view, see ``recurrax.cells``): ``to_linear(carry') = a ⊙ to_linear(carry) + b``
  with complex ``a = λ`` and ``b = γ ⊙ (x @ B)``; ``from_linear`` turns a complex state back
  into a carry.
- **Output.** The paper's LRU maps a model width H to itself through N states (its D is a
  diagonal skip, ``D ⊙ u``, and C is (H, N)). In recurrax a layer's width is its
  ``hidden_size``, and layers, stacks and heads read ``output_size`` as that width; so here the
  output has N = ``hidden_size`` features, C is (N, N), and the skip D is a full real
  ``(input_size, N)`` matrix, which a diagonal cannot be when ``input_size ≠ hidden_size``.
  The paper's LRU layer of width H with N states is this cell followed by a linear map N → H.
  Nothing follows ``y`` in the cell: the paper's nonlinearity (an MLP/GLU after each LRU layer)
  belongs to the layers around it.

>>> import jax, jax.numpy as jnp
>>> from recurrax import lru
>>> params = lru.init(jax.random.key(0), 3, 8, r_min=0.9, r_max=0.999)
>>> carry, y = lru.step(params, lru.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> (carry.re.shape, carry.im.shape, y.shape)
((2, 8), (2, 8), (2, 8))
>>> modulus = jnp.abs(lru.eigenvalues(params))
>>> bool(jnp.all((modulus >= 0.9 - 1e-6) & (modulus <= 0.999 + 1e-6)))
True

Reference: A. Orvieto, S. L. Smith, A. Gu, A. Fernando, C. Gulcehre, R. Pascanu and S. De,
"Resurrecting recurrent neural networks for long sequences", ICML 2023 (arXiv:2303.06349).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrax._checks import check_params_type
from recurrax.cells._common import check_number, check_sizes, check_step, lift, zeros_carry

__all__ = [
    "LRUParams",
    "LRUCarry",
    "init",
    "initial_carry",
    "step",
    "eigenvalues",
    "linear_recurrence",
    "to_linear",
    "from_linear",
    "output",
    "input_size",
    "output_size",
    "recurrent_blocks",
]

# exp(−20) ≈ 2e-9: the modulus a draw of |λ| = 0 (possible with r_min = 0) is given instead.
_NU_MAX = 20.0


class LRUParams(NamedTuple):
    """Parameters of an LRU cell, all real (the paper's names)."""

    nu_log: jax.Array  # (hidden_size,): |λ| = exp(−exp(nu_log))
    theta_log: jax.Array  # (hidden_size,): arg λ = exp(theta_log)
    gamma_log: jax.Array  # (hidden_size,): input normalisation γ = exp(gamma_log)
    B_re: jax.Array  # (input_size, hidden_size)
    B_im: jax.Array  # (input_size, hidden_size)
    C_re: jax.Array  # (hidden_size, hidden_size)
    C_im: jax.Array  # (hidden_size, hidden_size)
    D: jax.Array  # (input_size, hidden_size): real skip x @ D


class LRUCarry(NamedTuple):
    """State of an LRU cell: the complex state ``h = re + i·im`` as a real pair."""

    re: jax.Array  # (*batch, hidden_size)
    im: jax.Array  # (*batch, hidden_size)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    dtype=jnp.float32,
) -> LRUParams:
    """Initialise an LRU cell, ``λ`` uniform on a ring (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and N (N is also the output size).
      r_min, r_max: the ring ``r_min ≤ |λ| ≤ r_max``, ``0 ≤ r_min < r_max ≤ 1``.
      max_phase: phases are drawn uniformly from ``(0, max_phase]``, ``0 < max_phase ≤ 2π``.
      dtype: parameter dtype.

    Returns:
      ``LRUParams`` with ``γ = sqrt(1 − |λ|²)``.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    r_min = check_number(r_min, "r_min", low=0.0, high=1.0)
    r_max = check_number(r_max, "r_max", low=0.0, high=1.0)
    if not r_min < r_max:
        raise ValueError(
            "Expected r_min < r_max (a ring of positive width), "
            f"got r_min={r_min!r}, r_max={r_max!r}."
        )
    max_phase = check_number(max_phase, "max_phase", low=0.0, high=2 * math.pi, low_open=True)
    compute = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32  # at least float32
    k_ring, k_phase, k_b_re, k_b_im, k_c_re, k_c_im, k_d = jax.random.split(key, 7)
    # 1 − |λ|² with |λ|² = r_min² + (r_max² − r_min²)·u, written as a sum of two non-negative
    # terms with 1 − u ∈ (0, 1]: positive in floating point too, even for r_max = 1.
    one_minus_u = 1 - jax.random.uniform(k_ring, (hidden_size,), compute)
    one_minus_sq = (1 - r_max**2) + (r_max**2 - r_min**2) * one_minus_u
    nu = jnp.minimum(-0.5 * jnp.log1p(-one_minus_sq), _NU_MAX)  # −log|λ|
    theta = max_phase * (1 - jax.random.uniform(k_phase, (hidden_size,), compute))  # (0, max_phase]
    gamma_log = 0.5 * jnp.log(one_minus_sq)  # log sqrt(1 − |λ|²)

    def normal(k, shape, std):
        return (std * jax.random.normal(k, shape, compute)).astype(dtype)

    return LRUParams(
        nu_log=jnp.log(nu).astype(dtype),
        theta_log=jnp.log(theta).astype(dtype),
        gamma_log=gamma_log.astype(dtype),
        B_re=normal(k_b_re, (input_size, hidden_size), 1 / math.sqrt(2 * input_size)),
        B_im=normal(k_b_im, (input_size, hidden_size), 1 / math.sqrt(2 * input_size)),
        C_re=normal(k_c_re, (hidden_size, hidden_size), 1 / math.sqrt(hidden_size)),
        C_im=normal(k_c_im, (hidden_size, hidden_size), 1 / math.sqrt(hidden_size)),
        D=normal(k_d, (input_size, hidden_size), 1 / math.sqrt(input_size)),
    )


def input_size(params: LRUParams) -> int:
    """D, the feature size ``step`` expects."""
    return params.B_re.shape[0]


def output_size(params: LRUParams) -> int:
    """N, the size of ``y`` (the columns of C)."""
    return params.C_re.shape[1]


def _hidden_size(params: LRUParams) -> int:
    return params.nu_log.shape[-1]


def initial_carry(params: LRUParams, batch_shape: tuple[int, ...] = ()) -> LRUCarry:
    """Zero state, ``re`` and ``im`` of shape ``(*batch_shape, hidden_size)``."""
    check_params_type(params, LRUParams, "lru.initial_carry")
    return zeros_carry(LRUCarry, params, LRUParams, batch_shape, "lru.initial_carry",
                       hidden_size=_hidden_size(params), dtype=params.B_re.dtype)


def _lambda_parts(params: LRUParams) -> tuple[jax.Array, jax.Array]:
    modulus = jnp.exp(-jnp.exp(params.nu_log))
    theta = jnp.exp(params.theta_log)
    return modulus * jnp.cos(theta), modulus * jnp.sin(theta)


def _complex(re: jax.Array, im: jax.Array) -> jax.Array:
    """``re + i·im``: complex64 (complex128 from float64), cast explicitly (strict promotion)."""
    real = jnp.float64 if re.dtype == jnp.float64 else jnp.float32
    return jax.lax.complex(re.astype(real), im.astype(real))


def eigenvalues(params: LRUParams) -> jax.Array:
    """λ, the diagonal of the recurrence, complex ``(hidden_size,)``."""
    return _complex(*_lambda_parts(params))


def step(params: LRUParams, carry: LRUCarry, x: jax.Array) -> tuple[LRUCarry, jax.Array]:
    """One step ``h' = λ ⊙ h + γ ⊙ (x @ B)``, ``y = Re(h' @ C) + x @ D``, in real arithmetic.

    Returns ``(LRUCarry(re', im'), y)``, ``y`` of shape ``(*batch, hidden_size)``.
    """
    check_params_type(params, LRUParams, "lru.step")  # before reading sizes off params
    check_step(params, LRUParams, carry, LRUCarry, x, "lru.step",
               input_size=input_size(params), hidden_size=_hidden_size(params))
    lam_re, lam_im = (lift(v, carry.re) for v in _lambda_parts(params))
    gamma = lift(jnp.exp(params.gamma_log), carry.re)
    re = lam_re * carry.re - lam_im * carry.im + gamma * (x @ params.B_re)
    im = lam_re * carry.im + lam_im * carry.re + gamma * (x @ params.B_im)
    new = LRUCarry(re, im)
    return new, output(params, new, x)


def output(params: LRUParams, carry: LRUCarry, x: jax.Array) -> jax.Array:
    """``y = Re(h @ C) + x @ D = re @ C_re − im @ C_im + x @ D``, from the new carry and ``x``."""
    return carry.re @ params.C_re - carry.im @ params.C_im + x @ params.D


def to_linear(params: LRUParams, carry: LRUCarry) -> jax.Array:
    """The complex state ``re + i·im`` ``(*batch, hidden_size)``, where λ acts elementwise."""
    del params
    return _complex(carry.re, carry.im)


def from_linear(params: LRUParams, state: jax.Array) -> LRUCarry:
    """The carry of a complex state: its real and imaginary parts in the params' dtype."""
    dtype = params.B_re.dtype
    return LRUCarry(jnp.real(state).astype(dtype), jnp.imag(state).astype(dtype))


def linear_recurrence(params: LRUParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(a, b)``, complex ``(*batch, hidden_size)``: ``to_linear(h') = a ⊙ to_linear(h) + b``.

    ``a = λ`` (broadcast over the batch) and ``b = γ ⊙ (x @ B)``.
    """
    gamma = jnp.exp(params.gamma_log)
    bx_re, bx_im = x @ params.B_re, x @ params.B_im
    b = _complex(lift(gamma, bx_re) * bx_re, lift(gamma, bx_im) * bx_im)
    return jnp.broadcast_to(eigenvalues(params), b.shape), b


def recurrent_blocks(params: LRUParams) -> dict[str, jax.Array]:
    """``{"h": M}``, the real ``(2N, 2N)`` map ``[re', im'] = [re, im] @ M`` of the recurrence.

    ``M = [[diag(Re λ), diag(Im λ)], [−diag(Im λ), diag(Re λ)]]``, in the order ``ravel`` lays
    out an ``LRUCarry``; its eigenvalues are λ and their conjugates (for ``gradient_flow``).
    """
    lam_re, lam_im = (jnp.diag(v) for v in _lambda_parts(params))
    return {"h": jnp.block([[lam_re, lam_im], [-lam_im, lam_re]])}
