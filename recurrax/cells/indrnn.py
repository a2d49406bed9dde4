"""Independently recurrent neural network, IndRNN (Li et al. 2018).

Equations, row-vector form: each unit sees only its own past through one recurrent weight,

    h' = σ(x @ w_x + u ⊙ h + b),     σ in {relu (default), tanh, sigmoid, identity}

so ``∂h'/∂h = diag(σ'(·) ⊙ u)`` and the gradient over ``T`` steps is, unit by unit, the product
``∏_t σ'_t u``. With relu (``σ' ∈ {0, 1}``) its size is at most ``|u|^T``: Li et al. keep it
below ``γ`` (no explosion) by constraining ``|u| ≤ γ^{1/T}`` for sequences of length ``T`` (the
authors' code uses ``γ = 2``; ``recurrent_bound(T)`` gives ``2^{1/T}``), and keep units that
must remember from vanishing with ``|u|`` near 1 (here through ``recurrent_range`` at init).

The constraint, ``init(..., recurrent_max=m)``: ``m`` is static metadata in the params and the
step uses ``clip(u, −m, m)``, so ``|u| ≤ m`` holds for *every* params the step ever sees,
whatever trains them (``recurrax.fit``, a user's optax loop, a checkpoint edited by hand), with
no projection step to remember after each update. This is the forward-pass clip of the
widely used TensorFlow IndRNN cell (batzner/indrnn, ``recurrent_max_abs``); the authors' own
training code clips the stored weights after each update instead. The two agree on every forward pass; they
differ only for a ``u`` pushed past ``m``: here its gradient is then zero (it stays at the
bound, and may drift further out unseen), there it is reset onto the bound and can come back.
``u`` is drawn uniformly from ``[0, m]`` as in the authors' code (``[0, 1]`` without a
constraint); ``recurrent_range`` overrides the interval (e.g. a lower end close to 1, such as
``0.5^{1/T}``, for a last layer that must remember, as in the authors' adding-problem setup).

>>> import jax, jax.numpy as jnp
>>> from recurrax import indrnn
>>> params = indrnn.init(jax.random.key(0), 3, 5, recurrent_max=indrnn.recurrent_bound(1000))
>>> carry, y = indrnn.step(params, indrnn.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> y.shape
(2, 5)

Reference: S. Li, W. Li, C. Cook, C. Zhu and Y. Gao, "Independently recurrent neural network
(IndRNN): building a longer and deeper RNN", CVPR 2018 (arXiv:1803.04831).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax._activations import Activation
from recurrax._checks import check_params_type
from recurrax.cells._common import check_number, check_sizes, check_step, lift, zeros_carry

__all__ = [
    "IndRNNParams",
    "IndRNNCarry",
    "RecurrentMax",
    "init",
    "initial_carry",
    "step",
    "recurrent_weights",
    "recurrent_bound",
    "output_size",
    "recurrent_blocks",
]


@dataclasses.dataclass(frozen=True)
class RecurrentMax:
    """The bound ``|u| ≤ value`` the step enforces (static pytree metadata); ``None``: no bound."""

    value: Optional[float] = None


jax.tree_util.register_static(RecurrentMax)


class IndRNNParams(NamedTuple):
    """Parameters of an IndRNN cell."""

    w_x: jax.Array  # (input_size, hidden_size)
    u: jax.Array  # (hidden_size,): one recurrent weight per unit (clipped in the step if bounded)
    b: jax.Array  # (hidden_size,)
    activation: Activation  # static pytree metadata
    recurrent_max: RecurrentMax  # static pytree metadata: the |u| bound, or RecurrentMax(None)


class IndRNNCarry(NamedTuple):
    """State of an IndRNN cell: the hidden state ``h``."""

    h: jax.Array  # (*batch, hidden_size)


def recurrent_bound(length: int, gamma: float = 2.0) -> float:
    """``γ^{1/T}``: the ``|u|`` bound that keeps ``|u|^T ≤ γ`` over ``T = length`` steps.

    >>> round(recurrent_bound(1000) ** 1000, 6)
    2.0
    """
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"Expected length to be a positive integer, got {length!r}.")
    gamma = check_number(gamma, "gamma", low=0.0, low_open=True)
    return gamma ** (1.0 / length)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "relu",
    recurrent_max: Optional[float] = None,
    recurrent_range: Optional[tuple[float, float]] = None,
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    dtype=jnp.float32,
) -> IndRNNParams:
    """Initialise an IndRNN cell.

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      activation: ``"relu"`` (default, the paper's), ``"tanh"``, ``"sigmoid"`` or ``"identity"``.
      recurrent_max: ``m > 0``: the step uses ``clip(u, −m, m)`` (see the module docstring; for
        sequences of length ``T``, ``recurrent_bound(T)``). ``None``: no constraint.
      recurrent_range: ``(low, high)``, ``u`` drawn uniformly from it; default ``(0, m)``, or
        ``(0, 1)`` without a constraint. Must lie within ``[−m, m]``.
      input_init: initialiser of ``w_x`` (default Lecun normal).
      dtype: parameter dtype.

    Returns:
      ``IndRNNParams`` with zero bias.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    act = Activation(activation)
    if recurrent_max is not None:
        recurrent_max = check_number(recurrent_max, "recurrent_max", low=0.0, low_open=True)
    if recurrent_range is None:
        recurrent_range = (0.0, 1.0 if recurrent_max is None else recurrent_max)
    if not (isinstance(recurrent_range, (tuple, list)) and len(recurrent_range) == 2):
        raise ValueError(
            f"Expected recurrent_range as a (low, high) pair, got {recurrent_range!r}."
        )
    low = check_number(recurrent_range[0], "recurrent_range[0]")
    high = check_number(recurrent_range[1], "recurrent_range[1]", low=low)
    if recurrent_max is not None and max(abs(low), abs(high)) > recurrent_max:
        raise ValueError(
            f"Expected recurrent_range within [-recurrent_max, recurrent_max] = "
            f"[{-recurrent_max:g}, {recurrent_max:g}], got ({low:g}, {high:g})."
        )
    k_x, k_u = jax.random.split(key)
    w_x = initializers.get(input_init)(k_x, (input_size, hidden_size), dtype)
    u = jax.random.uniform(k_u, (hidden_size,), dtype, low, high)
    return IndRNNParams(w_x=w_x, u=u, b=jnp.zeros((hidden_size,), dtype), activation=act,
                        recurrent_max=RecurrentMax(recurrent_max))


def initial_carry(params: IndRNNParams, batch_shape: tuple[int, ...] = ()) -> IndRNNCarry:
    """Zero state with ``h`` of shape ``(*batch_shape, hidden_size)``."""
    check_params_type(params, IndRNNParams, "indrnn.initial_carry")
    return zeros_carry(IndRNNCarry, params, IndRNNParams, batch_shape, "indrnn.initial_carry",
                       hidden_size=params.u.shape[-1], dtype=params.w_x.dtype)


def recurrent_weights(params: IndRNNParams) -> jax.Array:
    """The recurrent weights the step uses: ``u``, clipped to ``[−m, m]`` when bounded. ``(H,)``."""
    bound = params.recurrent_max.value
    return params.u if bound is None else jnp.clip(params.u, -bound, bound)


def step(params: IndRNNParams, carry: IndRNNCarry, x: jax.Array) -> tuple[IndRNNCarry, jax.Array]:
    """One step ``h' = σ(x @ w_x + u ⊙ h + b)`` for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(IndRNNCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    check_params_type(params, IndRNNParams, "indrnn.step")  # before reading sizes off params
    check_step(params, IndRNNParams, carry, IndRNNCarry, x, "indrnn.step",
               hidden_size=params.u.shape[-1])
    z = x @ params.w_x
    u = recurrent_weights(params)
    h = params.activation(z + lift(u, carry.h) * carry.h + lift(params.b, z))
    return IndRNNCarry(h), h


def output_size(params: IndRNNParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.u.shape[-1]


def recurrent_blocks(params: IndRNNParams) -> dict[str, jax.Array]:
    """``{"h": diag(u)}`` with the clipped ``u`` the step uses (for ``gradient_flow``)."""
    return {"h": jnp.diag(recurrent_weights(params))}
