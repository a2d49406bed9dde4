"""Liquid time-constant cell, LTC (Hasani et al. 2021), as ncps's ``LTCCell`` with a fully connected wiring.

The state ``v`` (*batch, N) of N neurons follows the ODE ``C_m dv/dt = g_l (v_l − v) + Σ_i
w_i σ_i(·) (E_i − v)``, each synapse a conductance ``w σ(σ_s (v_pre − μ))`` pulling towards its
reversal potential ``E``. One step advances it by ``Δt`` with ``K = ode_unfolds`` steps of the
fused semi-implicit Euler solver of the paper (ncps's ``_ode_solver``). Row-vector form, ``i``
the presynaptic neuron (rows: sensory inputs or neurons), ``j`` the postsynaptic one:

    u = x_feat ⊙ input_w + input_b                                      (*batch, D)
    S_ij = p(sensory_w_ij) σ(sensory_sigma_ij (u_i − sensory_mu_ij))     (*batch, D, N)
    n_s = Σ_i S_ij sensory_erev_ij,   d_s = Σ_i S_ij                      (*batch, N)
    c = p(cm) / (Δt / K)
    K times:  A_ij = p(w_ij) σ(sigma_ij (v_i − mu_ij))                   (*batch, N, N)
              v ← (c v + p(gleak) vleak + Σ_i A_ij erev_ij + n_s) / (c + p(gleak) + Σ_i A_ij + d_s + ε)
    y = v ⊙ output_w + output_b                                          (*batch, N)

with ``p = softplus`` when ``implicit_param_constraints`` (ncps's ``LTC`` module default: the
positive parameters are stored unconstrained) and ``p = identity`` otherwise (ncps's
``LTCCell`` default, where ``apply_weight_constraints`` clips ``w``, ``sensory_w``, ``cm`` and
``gleak`` at 0 after each optimiser step; here ``clip_weights(params)`` does the same). The
carry is ``v``; the output ``y`` is its affine map, so the carry ``h = v`` is not the output.

**Interface** as ``recurrax.cells.cfc``: ``x`` (*batch, D + 1) whose last feature is ``Δt``
(``cfc.with_elapsed_time`` builds it), or ``x`` (*batch, D) with ``Δt = 1`` when
``elapsed_time=False`` (ncps without ``timespans``). ``Δt`` must be positive: ``Δt = 0`` divides
by zero in ``c``, as in ncps.

Scope: the fully connected wiring with self-connections (``ncps.wirings.FullyConnected(N)``,
``output_dim = N``), whose sparsity masks are all ones and are therefore not stored; ncps's
``input_mapping`` / ``output_mapping`` ``"affine"`` (its default). Other wirings (NCP, Random),
motor-neuron slicing and the mixed-memory LSTM are out of scope.

Initialisation as ncps: uniform ``gleak ∈ [0.001, 1]``, ``vleak ∈ [−0.2, 0.2]``, ``cm ∈ [0.4,
0.6]``, ``w``, ``sensory_w ∈ [0.001, 1]``, ``sigma``, ``sensory_sigma ∈ [3, 8]``, ``mu``,
``sensory_mu ∈ [0.3, 0.8]``, reversal potentials ``±1`` (−1 with probability 1/3, as ncps's
``choice([-1, 1, 1])``; trainable, as in ncps), ``input_w = output_w = 1``, ``input_b =
output_b = 0``. ncps draws these from its wiring's NumPy generator and torch's; the
distributions, not the draws, are reproduced.

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import ltc
>>> params = ltc.init(jax.random.key(0), 3, 5)
>>> carry, y = ltc.step(params, ltc.initial_carry(params, (2,)), jnp.ones((2, 4)))
>>> (ltc.input_size(params), carry.v.shape, y.shape)
(4, (2, 5), (2, 5))

Reference: R. Hasani, M. Lechner, A. Amini, D. Rus and R. Grosu, "Liquid time-constant
networks", AAAI 2021 (arXiv:2006.04439); code: ``ncps`` (github.com/mlech26l/ncps), ``LTCCell``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrax._checks import check_params_type, check_positive_int
from recurrax.cells._common import check_number, check_sizes, check_step, zeros_carry

__all__ = [
    "LTCConfig",
    "LTCParams",
    "LTCCarry",
    "init",
    "initial_carry",
    "step",
    "clip_weights",
    "input_size",
    "output_size",
]


@dataclasses.dataclass(frozen=True)
class LTCConfig:
    """The LTC's static options (pytree metadata, not leaves): see ``init``."""

    ode_unfolds: int = 6
    epsilon: float = 1e-8
    implicit_param_constraints: bool = True
    elapsed_time: bool = True

    def __post_init__(self):
        check_positive_int(self.ode_unfolds, "ode_unfolds")
        check_number(self.epsilon, "epsilon", low=0.0)
        for name in ("implicit_param_constraints", "elapsed_time"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Expected {name} to be True or False, got {getattr(self, name)!r}.")


jax.tree_util.register_static(LTCConfig)


class LTCParams(NamedTuple):
    """Parameters of an LTC cell, ncps's names; rows presynaptic, columns postsynaptic."""

    gleak: jax.Array  # (N,): leak conductance (through p)
    vleak: jax.Array  # (N,): leak potential
    cm: jax.Array  # (N,): membrane capacitance (through p)
    sigma: jax.Array  # (N, N)
    mu: jax.Array  # (N, N)
    w: jax.Array  # (N, N): synaptic conductance (through p)
    erev: jax.Array  # (N, N): reversal potentials
    sensory_sigma: jax.Array  # (D, N)
    sensory_mu: jax.Array  # (D, N)
    sensory_w: jax.Array  # (D, N) (through p)
    sensory_erev: jax.Array  # (D, N)
    input_w: jax.Array  # (D,)
    input_b: jax.Array  # (D,)
    output_w: jax.Array  # (N,)
    output_b: jax.Array  # (N,)
    config: LTCConfig  # static


class LTCCarry(NamedTuple):
    """State of an LTC cell: the neurons' potentials ``v`` (ncps's ``hx``).

    Named ``v``, not ``h``: in recurrax a carry field ``h`` is the step's output, and the LTC's
    output is ``v ⊙ output_w + output_b``.
    """

    v: jax.Array  # (*batch, N)


_RANGES = {  # ncps LTCCell._init_ranges
    "gleak": (0.001, 1.0),
    "vleak": (-0.2, 0.2),
    "cm": (0.4, 0.6),
    "w": (0.001, 1.0),
    "sigma": (3.0, 8.0),
    "mu": (0.3, 0.8),
    "sensory_w": (0.001, 1.0),
    "sensory_sigma": (3.0, 8.0),
    "sensory_mu": (0.3, 0.8),
}


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    ode_unfolds: int = 6,
    epsilon: float = 1e-8,
    implicit_param_constraints: bool = True,
    elapsed_time: bool = True,
    dtype=jnp.float32,
) -> LTCParams:
    """Initialise an LTC cell as ncps does (see the module docstring); defaults are ncps's ``LTC``'s.

    Args:
      key: PRNG key.
      input_size: D, the input features **without** Δt.
      hidden_size: N, the neurons (state and output size).
      ode_unfolds: K, solver steps per step.
      epsilon: added to the solver's denominator.
      implicit_param_constraints: ``p = softplus`` on gleak, cm, w, sensory_w (else identity).
      elapsed_time: ``True``: the last input feature is Δt; ``False``: Δt = 1.
      dtype: parameter dtype.
    """
    d, n = check_sizes(input_size, hidden_size)
    config = LTCConfig(ode_unfolds=ode_unfolds, epsilon=epsilon,
                       implicit_param_constraints=implicit_param_constraints, elapsed_time=elapsed_time)
    shapes = {"gleak": (n,), "vleak": (n,), "cm": (n,), "w": (n, n), "sigma": (n, n), "mu": (n, n),
              "sensory_w": (d, n), "sensory_sigma": (d, n), "sensory_mu": (d, n)}
    keys = jax.random.split(key, len(shapes) + 2)
    drawn = {name: jax.random.uniform(k, shapes[name], dtype, *_RANGES[name]) for name, k in zip(shapes, keys)}
    # ncps: polarity choice([-1, 1, 1]): inhibitory with probability 1/3.
    erev, sensory_erev = (jnp.where(jax.random.uniform(k, s) < 1 / 3, -1.0, 1.0).astype(dtype)
                          for k, s in zip(keys[-2:], [(n, n), (d, n)]))
    return LTCParams(
        **drawn, erev=erev, sensory_erev=sensory_erev,
        input_w=jnp.ones((d,), dtype), input_b=jnp.zeros((d,), dtype),
        output_w=jnp.ones((n,), dtype), output_b=jnp.zeros((n,), dtype), config=config,
    )


def output_size(params: LTCParams) -> int:
    """N, the neurons (the output is one value per neuron)."""
    check_params_type(params, LTCParams, "ltc.output_size")
    return params.gleak.shape[-1]


def input_size(params: LTCParams) -> int:
    """D + 1 (the features and Δt), or D with ``elapsed_time=False``: what ``step`` expects."""
    check_params_type(params, LTCParams, "ltc.input_size")
    return params.input_w.shape[-1] + int(params.config.elapsed_time)


def initial_carry(params: LTCParams, batch_shape: tuple[int, ...] = ()) -> LTCCarry:
    """Zero potentials, ``h`` of shape ``(*batch_shape, N)`` (ncps's default ``hx``)."""
    return zeros_carry(LTCCarry, params, LTCParams, batch_shape, "ltc.initial_carry",
                       hidden_size=output_size(params), dtype=params.gleak.dtype)


def clip_weights(params: LTCParams) -> LTCParams:
    """ncps's ``apply_weight_constraints``: ``w, sensory_w, cm, gleak ← max(·, 0)`` (identity ``p`` only).

    Call it after each optimiser step when ``implicit_param_constraints=False``; with the softplus
    constraints it returns ``params`` unchanged, as ncps does.
    """
    check_params_type(params, LTCParams, "ltc.clip_weights")
    if params.config.implicit_param_constraints:
        return params
    relu = jax.nn.relu
    return params._replace(w=relu(params.w), sensory_w=relu(params.sensory_w), cm=relu(params.cm),
                           gleak=relu(params.gleak))


def _synapses(v: jax.Array, w: jax.Array, sigma: jax.Array, mu: jax.Array, erev: jax.Array):
    """``(Σ_i A_ij erev_ij, Σ_i A_ij)`` with ``A_ij = w_ij σ(sigma_ij (v_i − mu_ij))``, ``v`` (*batch, I)."""
    pre = v[..., :, None]  # (*batch, I, 1): presynaptic along rows
    like = jnp.broadcast_shapes(pre.shape, mu.shape)
    lift = lambda m: jax.lax.broadcast_to_rank(m, len(like))  # noqa: E731  (explicit, no rank promotion)
    activation = lift(w) * jax.nn.sigmoid(lift(sigma) * (pre - lift(mu)))
    return jnp.sum(activation * lift(erev), axis=-2), jnp.sum(activation, axis=-2)


def step(params: LTCParams, carry: LTCCarry, x: jax.Array) -> tuple[LTCCarry, jax.Array]:
    """One LTC step (K solver unfolds over Δt) for ``x`` (*batch, D + 1), its last feature Δt.

    Returns ``(LTCCarry(v'), y)``, both ``(*batch, N)``, ``y = v' ⊙ output_w + output_b``.
    """
    check_params_type(params, LTCParams, "ltc.step")
    check_step(params, LTCParams, carry, LTCCarry, x, "ltc.step", input_size=input_size(params),
               hidden_size=output_size(params))
    config = params.config
    if config.elapsed_time:
        u, dt = x[..., :-1], x[..., -1:]
    else:
        u, dt = x, jnp.ones(x.shape[:-1] + (1,), x.dtype)
    positive = jax.nn.softplus if config.implicit_param_constraints else (lambda v: v)
    lift = lambda v, like: jax.lax.broadcast_to_rank(v, like.ndim)  # noqa: E731
    u = u * lift(params.input_w, u) + lift(params.input_b, u)
    numerator_s, denominator_s = _synapses(u, positive(params.sensory_w), params.sensory_sigma,
                                           params.sensory_mu, params.sensory_erev)
    v = carry.v
    cm_t = lift(positive(params.cm), v) / (dt / config.ode_unfolds)  # loop invariant, as in ncps
    w = positive(params.w)
    gleak = lift(positive(params.gleak), v)
    vleak = lift(params.vleak, v)
    for _ in range(config.ode_unfolds):  # K is static: unrolled, as ncps's Python loop
        numerator, denominator = _synapses(v, w, params.sigma, params.mu, params.erev)
        numerator = cm_t * v + gleak * vleak + (numerator + numerator_s)
        denominator = cm_t + gleak + (denominator + denominator_s)
        v = numerator / (denominator + config.epsilon)
    y = v * lift(params.output_w, v) + lift(params.output_b, v)
    return LTCCarry(v), y
