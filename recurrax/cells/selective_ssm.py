"""Mamba's selective state space model, S6 (Gu & Dao 2023): a diagonal SSM whose Δ, B, C read the input.

Equations, row-vector form, per example, for E = ``hidden_size`` channels with N =
``state_size`` states each and R = ``dt_rank``:

    x̂ = x                      (input_size == hidden_size: the paper's SSM exactly)
    x̂ = x @ w_in               (otherwise; w_in (input_size, E))
    [δ, B_t, C_t] = x̂ @ w_xproj                 δ (R,), B_t (N,), C_t (N,); w_xproj (E, R + 2N)
    Δ_t = softplus(δ @ w_dt + b_dt)             (E,); w_dt (R, E)
    A = −exp(A_log)                             (E, N)
    h_t = exp(Δ_t ⊗ A) ⊙ h_{t−1} + (Δ_t ⊙ x̂_t) ⊗ B_t          (E, N)
    y_t = h_t @ C_t + D ⊙ x̂_t                   (E,)

(``Δ ⊗ A`` is ``Δ[e] · A[e, n]`` and ``(Δ ⊙ x̂) ⊗ B`` is ``Δ[e] x̂[e] B[n]``: the zero-order-hold
``Ā = exp(ΔA)`` and the simplified ``B̄ = ΔB`` of the paper's Algorithm 2, as in mambapy and the
reference ``selective_scan_ref``.) Shapes with batch axes: ``x`` ``(*batch, input_size)``, the
carry ``h`` ``(*batch, E, N)``, ``y`` ``(*batch, E)``.

The step is linear in its carry with coefficients that depend on ``x`` only, ``h' = a ⊙ h + b``,
``a = exp(Δ ⊗ A)`` and ``b = (Δ ⊙ x̂) ⊗ B``, which ``linear_recurrence`` returns (so
``recurrax.rnn(..., method="associative")`` evaluates a sequence by one associative scan), and
``output(params, h, x)`` reads ``y`` off the new carry (``C_t`` and ``x̂`` are recomputed from
``x``). ``step`` evaluates exactly these functions, so the two paths agree bit for bit per step.

Initialisation as mambapy's ``MambaBlock`` (and the reference ``mamba_simple.py``):
``A_log[e, n] = log(n + 1)`` (S4D-real: ``A = −(1, 2, …, N)`` in every channel); ``D = 1``;
``w_dt ~ U(−s, s)`` with ``s = dt_scale · R^{−1/2}``; ``b_dt = softplus⁻¹(dt)`` with ``dt``
log-uniform in ``[dt_min, dt_max]`` and at least ``dt_floor``, so that ``Δ`` starts in that range;
``w_xproj`` (and ``w_in``) ``U(±1/√fan_in)``, torch's ``nn.Linear`` default.

Choices, and why:

- **Width.** recurrax layers map ``input_size`` to ``hidden_size`` features. With
  ``input_size == hidden_size`` there is no extra parameter (``w_in`` is ``None``) and the cell
  is the paper's SSM. Otherwise ``w_in`` is the linear in-projection every Mamba block puts in
  front of its SSM (its ``in_proj``), here without the block's convolution and gate; use
  ``recurrax.blocks.mamba`` for the whole block.
- **Carry.** ``h`` keeps the paper's ``(E, N)`` layout, so the carry is not ``(*batch, H)``
  like most cells': its output is ``h @ C_t + D ⊙ x̂``, not ``h`` (a seq2seq bridge, which sets
  ``h`` to a ``(B, H)`` context, does not apply).
- **softplus** is ``log(1 + e^v)`` everywhere; torch's ``F.softplus`` returns ``v`` itself above
  ``v = 20`` (a relative difference below e^−20).
- **dt_rank** defaults to ``ceil(hidden_size / 16)`` (mambapy's ``"auto"``, with d_model =
  ``hidden_size``); mambapy's ``dt_init="constant"`` option is not offered (``"random"`` only).
- No ``log_linear_recurrence``: ``b`` changes sign with ``x̂`` and ``B``. No
  ``recurrent_blocks``: the recurrence is diagonal but input-dependent; ``jacobian_diagonal``
  returns ``a``, exactly the carry Jacobian's diagonal (it is diagonal).

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import selective_ssm
>>> params = selective_ssm.init(jax.random.key(0), 3, 8, state_size=4)
>>> carry, y = selective_ssm.step(params, selective_ssm.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> (carry.state.shape, y.shape)
((2, 8, 4), (2, 8))

Reference: A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state
spaces", arXiv:2312.00752 (2023); implementation checked against mambapy 1.2.0 (mamba.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_batch_shape, check_feature_size, check_params_type, check_positive_int
from recurrax.cells._common import check_number, check_sizes, lift

__all__ = [
    "SelectiveSSMParams",
    "SelectiveSSMCarry",
    "init",
    "initial_carry",
    "step",
    "linear_recurrence",
    "output",
    "jacobian_diagonal",
    "input_size",
    "output_size",
    "state_size",
    "dt_rank",
    "inverse_softplus",
]


class SelectiveSSMParams(NamedTuple):
    """Parameters of a selective SSM cell (mambapy's names in the comments)."""

    w_in: Optional[jax.Array]  # (input_size, E) in-projection, None when input_size == E
    w_xproj: jax.Array  # (E, dt_rank + 2N): x_proj.weight transposed, blocks δ, B, C
    w_dt: jax.Array  # (dt_rank, E): dt_proj.weight transposed
    b_dt: jax.Array  # (E,): dt_proj.bias
    A_log: jax.Array  # (E, N): A = −exp(A_log)
    D: jax.Array  # (E,): skip D ⊙ x̂


class SelectiveSSMCarry(NamedTuple):
    """State of a selective SSM cell: the paper's ``h``, ``(*batch, E, N)``.

    Named ``state``, not ``h``: in recurrax a carry field ``h`` is the step's output (what seq2seq
    decoders set from a context), and this state is not the output ``y``.
    """

    state: jax.Array


def inverse_softplus(y: jax.Array) -> jax.Array:
    """``v`` with ``softplus(v) = y`` for ``y > 0``: ``y + log(−expm1(−y))`` (stable for small ``y``)."""
    return y + jnp.log(-jnp.expm1(-y))


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    state_size: int = 16,
    dt_rank: Optional[int] = None,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_floor: float = 1e-4,
    dt_scale: float = 1.0,
    dtype=jnp.float32,
) -> SelectiveSSMParams:
    """Initialise a selective SSM cell as mambapy does (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and E (E channels, also the output size).
      state_size: N, the states per channel (default 16).
      dt_rank: R, the rank of Δ's projection (default ``ceil(hidden_size / 16)``).
      dt_min, dt_max: the initial Δ is log-uniform in ``[dt_min, dt_max]``, ``0 < dt_min ≤ dt_max``.
      dt_floor: the initial Δ is at least this (mambapy's ``dt_init_floor``), ``> 0``.
      dt_scale: ``w_dt ~ U(±dt_scale / √R)``, ``> 0``.
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    state_size = check_positive_int(state_size, "state_size")
    rank = math.ceil(hidden_size / 16) if dt_rank is None else check_positive_int(dt_rank, "dt_rank")
    dt_min = check_number(dt_min, "dt_min", low=0.0, low_open=True)
    dt_max = check_number(dt_max, "dt_max", low=0.0, low_open=True)
    if dt_min > dt_max:
        raise ValueError(f"Expected dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}.")
    dt_floor = check_number(dt_floor, "dt_floor", low=0.0, low_open=True)
    dt_scale = check_number(dt_scale, "dt_scale", low=0.0, low_open=True)
    k_in, k_xproj, k_dt, k_bias = jax.random.split(key, 4)

    def uniform(k, shape, bound):
        return jax.random.uniform(k, shape, dtype, -bound, bound)

    # Δ's initial values: log-uniform in [dt_min, dt_max], floored; b_dt = softplus⁻¹(Δ).
    u = jax.random.uniform(k_bias, (hidden_size,), dtype)
    dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), dt_floor)
    n = jnp.arange(1, state_size + 1, dtype=dtype)
    return SelectiveSSMParams(
        w_in=None if input_size == hidden_size else uniform(k_in, (input_size, hidden_size), input_size**-0.5),
        w_xproj=uniform(k_xproj, (hidden_size, rank + 2 * state_size), hidden_size**-0.5),
        w_dt=uniform(k_dt, (rank, hidden_size), dt_scale * rank**-0.5),
        b_dt=inverse_softplus(dt).astype(dtype),
        A_log=jnp.broadcast_to(jnp.log(n), (hidden_size, state_size)),
        D=jnp.ones((hidden_size,), dtype),
    )


def input_size(params: SelectiveSSMParams) -> int:
    """D: ``w_in``'s rows, or E when there is no in-projection."""
    return params.D.shape[0] if params.w_in is None else params.w_in.shape[0]


def output_size(params: SelectiveSSMParams) -> int:
    """E, the channels (the size of ``y``)."""
    return params.D.shape[0]


def state_size(params: SelectiveSSMParams) -> int:
    """N, the states per channel."""
    return params.A_log.shape[-1]


def dt_rank(params: SelectiveSSMParams) -> int:
    """R, the rank of Δ's projection."""
    return params.w_dt.shape[0]


def _check_params(params: SelectiveSSMParams, fn: str) -> None:
    """The shapes of the fields agree with each other (a hand-built or converted params)."""
    check_params_type(params, SelectiveSSMParams, fn)
    channels, states, rank = output_size(params), state_size(params), dt_rank(params)
    expected = {
        "w_xproj": (channels, rank + 2 * states),
        "w_dt": (rank, channels),
        "b_dt": (channels,),
        "A_log": (channels, states),
        "D": (channels,),
    }
    if params.w_in is not None:
        expected["w_in"] = (params.w_in.shape[0], channels)
    for field, shape in expected.items():
        value = check_array(getattr(params, field), f"params.{field}")
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{fn}: expected params.{field} with shape {shape} (E={channels} channels, N={states} "
                f"states, dt_rank={rank}), got shape {tuple(value.shape)}."
            )


def initial_carry(params: SelectiveSSMParams, batch_shape: tuple[int, ...] = ()) -> SelectiveSSMCarry:
    """Zero state, ``state`` of shape ``(*batch_shape, E, N)``."""
    _check_params(params, "selective_ssm.initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    shape = batch_shape + params.A_log.shape
    return SelectiveSSMCarry(jnp.zeros(shape, params.A_log.dtype))


def _check_x(params: SelectiveSSMParams, x: jax.Array, fn: str) -> None:
    del fn  # the message is every family's: it names x and the cell's input_size
    check_feature_size(x, input_size(params), "x", "the cell's input_size")


def _check_carry(params: SelectiveSSMParams, carry: SelectiveSSMCarry, x: jax.Array, fn: str) -> None:
    if not isinstance(carry, SelectiveSSMCarry):
        raise ValueError(f"{fn} expects a SelectiveSSMCarry carry, got {type(carry).__name__}.")
    check_array(carry.state, "carry.state")
    expected = tuple(x.shape[:-1]) + params.A_log.shape
    if tuple(carry.state.shape) != expected:
        raise ValueError(
            f"{fn}: expected carry.state with shape {expected} (x's batch shape + (E, N)), "
            f"got shape {tuple(carry.state.shape)}."
        )


class _Selection(NamedTuple):
    """What one input selects: ``x̂``, ``Δ`` ``(*batch, E)``, ``B``, ``C`` ``(*batch, N)``."""

    x_hat: jax.Array
    delta: jax.Array
    B: jax.Array
    C: jax.Array


def _select(params: SelectiveSSMParams, x: jax.Array) -> _Selection:
    """``x̂``, ``Δ = softplus(δ @ w_dt + b_dt)``, ``B`` and ``C`` from ``x`` ``(*batch, input_size)``."""
    x_hat = x if params.w_in is None else x @ params.w_in
    rank, states = dt_rank(params), state_size(params)
    dbc = x_hat @ params.w_xproj
    low_rank, B, C = dbc[..., :rank], dbc[..., rank:rank + states], dbc[..., rank + states:]
    pre = low_rank @ params.w_dt
    delta = jax.nn.softplus(pre + lift(params.b_dt, pre))
    return _Selection(x_hat, delta, B, C)


def _coefficients(params: SelectiveSSMParams, s: _Selection) -> tuple[jax.Array, jax.Array]:
    """``a = exp(Δ ⊗ A)`` and ``b = (Δ ⊙ x̂) ⊗ B``, both ``(*batch, E, N)``."""
    delta = s.delta[..., :, None]  # (*batch, E, 1)
    A = -jnp.exp(params.A_log)
    a = jnp.exp(delta * lift(A, delta))
    b = (delta * s.x_hat[..., :, None]) * s.B[..., None, :]  # (*batch, E, 1) · (*batch, 1, N)
    return a, b


def _readout(params: SelectiveSSMParams, h: jax.Array, s: _Selection) -> jax.Array:
    """``y = h @ C + D ⊙ x̂`` ``(*batch, E)`` for ``h`` ``(*batch, E, N)``."""
    return jnp.einsum("...en,...n->...e", h, s.C) + lift(params.D, s.x_hat) * s.x_hat


def step(params: SelectiveSSMParams, carry: SelectiveSSMCarry, x: jax.Array) -> tuple[SelectiveSSMCarry, jax.Array]:
    """One step ``h' = exp(Δ ⊗ A) ⊙ h + (Δ ⊙ x̂) ⊗ B``, ``y = h' @ C + D ⊙ x̂``.

    ``x`` ``(*batch, input_size)``, ``carry.state`` ``(*batch, E, N)``; returns
    ``(SelectiveSSMCarry(h'), y)``, ``y`` of shape ``(*batch, E)``.
    """
    _check_params(params, "selective_ssm.step")
    _check_x(params, x, "selective_ssm.step")
    _check_carry(params, carry, x, "selective_ssm.step")
    s = _select(params, x)
    a, b = _coefficients(params, s)
    h = a * carry.state + b
    return SelectiveSSMCarry(h), _readout(params, h, s)


def linear_recurrence(
    params: SelectiveSSMParams, x: jax.Array
) -> tuple[SelectiveSSMCarry, SelectiveSSMCarry]:
    """``(a, b)`` with ``h' = a.state ⊙ h + b.state``: ``a = exp(Δ ⊗ A)``, ``b = (Δ ⊙ x̂) ⊗ B``, ``(*batch, E, N)``."""
    _check_params(params, "selective_ssm.linear_recurrence")
    _check_x(params, x, "selective_ssm.linear_recurrence")
    a, b = _coefficients(params, _select(params, x))
    return SelectiveSSMCarry(a), SelectiveSSMCarry(b)


def output(params: SelectiveSSMParams, carry: SelectiveSSMCarry, x: jax.Array) -> jax.Array:
    """The step's output from its new carry and its input: ``y = h @ C + D ⊙ x̂`` ``(*batch, E)``.

    ``C`` and ``x̂`` are recomputed from ``x``; any leading axes (e.g. ``(T, *batch)``) are allowed.
    """
    _check_params(params, "selective_ssm.output")
    _check_x(params, x, "selective_ssm.output")
    _check_carry(params, carry, x, "selective_ssm.output")
    return _readout(params, carry.state, _select(params, x))


def jacobian_diagonal(
    params: SelectiveSSMParams, carry: SelectiveSSMCarry, x: jax.Array
) -> tuple[SelectiveSSMCarry, SelectiveSSMCarry]:
    """``(h', a)``: the new carry and ``∂h'/∂h = a = exp(Δ ⊗ A)``, the whole (diagonal) Jacobian."""
    _check_params(params, "selective_ssm.jacobian_diagonal")
    _check_x(params, x, "selective_ssm.jacobian_diagonal")
    _check_carry(params, carry, x, "selective_ssm.jacobian_diagonal")
    a, b = _coefficients(params, _select(params, x))
    return SelectiveSSMCarry(a * carry.state + b), SelectiveSSMCarry(a)
