"""Elman (vanilla) RNN cell.

Equations (Elman 1990; the seeds' ``s_t = f(W_in x_t + W_rec s_{t-1} + b_s)``), row-vector form:

    h' = f(x @ w_x + h @ w_h + b),   f in {tanh (default), relu, sigmoid, identity}

The readout ``y = W_y h + b_y`` belongs to an output head, not to the cell: ``step`` returns
``h'`` as its output.

>>> import jax, jax.numpy as jnp
>>> from recurrax import elman
>>> params = elman.init(jax.random.key(0), input_size=3, hidden_size=5)
>>> carry = elman.initial_carry(params, batch_shape=(2,))
>>> carry, y = elman.step(params, carry, jnp.ones((2, 3)))
>>> y.shape
(2, 5)
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax._activations import Activation
from recurrax.cells._common import check_sizes, check_step, lift, pointwise_jacobian_diagonal, zeros_carry

__all__ = ["ElmanParams", "ElmanCarry", "init", "initial_carry", "step", "pointwise", "output_size", "recurrent_blocks",
           "jacobian_diagonal"]


# ``pointwise`` reads its products only through ``zx + zh`` (used by ``unroll_cell``).
SUMS_PRODUCTS = True


class ElmanParams(NamedTuple):
    """Parameters of an Elman cell."""

    w_x: jax.Array  # (input_size, hidden_size)
    w_h: jax.Array  # (hidden_size, hidden_size): W_rec, applied as h @ w_h
    b: jax.Array  # (hidden_size,)
    activation: Activation  # static pytree metadata, not a leaf


class ElmanCarry(NamedTuple):
    """State of an Elman cell: the hidden state ``h``."""

    h: jax.Array  # (*batch, hidden_size)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "tanh",
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    recurrent_init: Union[str, initializers.Initializer] = "orthogonal",
    spectral_radius: Optional[float] = None,
    dtype=jnp.float32,
) -> ElmanParams:
    """Initialise an Elman cell.

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      activation: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"`` or ``"identity"``.
      input_init: initialiser of ``w_x`` (default Lecun normal).
      recurrent_init: initialiser of ``w_h``: ``"orthogonal"`` (default) or ``"identity"`` for an
        IRNN (Le et al. 2015, use with ``activation="relu"``), or a callable.
      spectral_radius: if given, ``w_h`` is rescaled so that ``max |eig(w_h)|`` equals it exactly.
      dtype: parameter dtype.

    Returns:
      ``ElmanParams`` with zero bias.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    act = Activation(activation)
    k_x, k_h = jax.random.split(key)
    w_x = initializers.get(input_init)(k_x, (input_size, hidden_size), dtype)
    w_h = initializers.get(recurrent_init)(k_h, (hidden_size, hidden_size), dtype)
    if spectral_radius is not None:
        w_h = initializers.scale_to_spectral_radius(w_h, spectral_radius)
    return ElmanParams(w_x=w_x, w_h=w_h, b=jnp.zeros((hidden_size,), dtype), activation=act)


def initial_carry(params: ElmanParams, batch_shape: tuple[int, ...] = ()) -> ElmanCarry:
    """Zero state with ``h`` of shape ``(*batch_shape, hidden_size)``."""
    return zeros_carry(ElmanCarry, params, ElmanParams, batch_shape, "elman.initial_carry")


def pointwise(
    params: ElmanParams, carry: ElmanCarry, zx: jax.Array, zh: jax.Array
) -> tuple[ElmanCarry, jax.Array]:
    """The step after its products ``zx = x @ w_x`` and ``zh = h @ w_h``: ``h' = f(zx + zh + b)``."""
    z = zx + zh
    h = params.activation(z + lift(params.b, z))
    return ElmanCarry(h), h


def step(params: ElmanParams, carry: ElmanCarry, x: jax.Array) -> tuple[ElmanCarry, jax.Array]:
    """One step ``h' = f(x @ w_x + h @ w_h + b)`` for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(ElmanCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    check_step(params, ElmanParams, carry, ElmanCarry, x, "elman.step")
    return pointwise(params, carry, x @ params.w_x, carry.h @ params.w_h)


def jacobian_diagonal(params: ElmanParams, carry: ElmanCarry, x: jax.Array) -> tuple[ElmanCarry, ElmanCarry]:
    """``(new_carry, diag)``: the step's carry and ``∂ leaf'_i / ∂ leaf_i`` per carry leaf (quasi-DEER, ELK)."""
    return pointwise_jacobian_diagonal(pointwise, params, carry, x)


def output_size(params: ElmanParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.w_h.shape[0]


def recurrent_blocks(params: ElmanParams) -> dict[str, jax.Array]:
    """``{"h": W_h}``, the recurrent matrix (for ``gradient_flow.recurrent_spectrum``)."""
    return {"h": params.w_h}
