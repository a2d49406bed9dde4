"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, forget gate Gers et al. 2000).

Equations (the seeds' form), gate order **i, f, g, o** in fused matrices, row-vector form:

    [zi, zf, zg, zo] = x @ w_x + h @ w_h + b              each (*batch, H)
    i = σ(zi + p_i ⊙ c)    f = σ(zf + p_f ⊙ c)    g = tanh(zg)
    c' = f ⊙ c + i ⊙ g
    o = σ(zo + p_o ⊙ c')
    h' = o ⊙ tanh(c')

The peephole terms ``p_i, p_f, p_o`` (Gers & Schmidhuber 2000) exist only when the cell was
initialised with ``peephole=True`` (``w_peep`` is then ``(3, H)``, else ``None``). The forget
bias is an *initial value* of ``b`` (default 1.0), never an offset hidden in the forward pass.

>>> import jax, jax.numpy as jnp
>>> from recurrax import lstm
>>> params = lstm.init(jax.random.key(0), input_size=3, hidden_size=5)
>>> carry = lstm.initial_carry(params, batch_shape=(2,))
>>> carry, y = lstm.step(params, carry, jnp.ones((2, 3)))
>>> (carry.h.shape, carry.c.shape)
((2, 5), (2, 5))
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax.cells._common import check_sizes, check_step, lift, pointwise_jacobian_diagonal, split_gates, zeros_carry

__all__ = ["LSTMParams", "LSTMCarry", "init", "initial_carry", "step", "pointwise", "output_size", "recurrent_blocks",
           "jacobian_diagonal"]


# ``pointwise`` reads its products only through ``zx + zh`` (used by ``unroll_cell``).
SUMS_PRODUCTS = True


class LSTMParams(NamedTuple):
    """Parameters of an LSTM cell, gates fused in the order i, f, g, o."""

    w_x: jax.Array  # (input_size, 4 * hidden_size)
    w_h: jax.Array  # (hidden_size, 4 * hidden_size)
    b: jax.Array  # (4 * hidden_size,); the f block starts at forget_bias
    w_peep: Optional[jax.Array]  # (3, hidden_size): p_i, p_f, p_o; None without peepholes


class LSTMCarry(NamedTuple):
    """State of an LSTM cell: ``h`` (output) first, then ``c`` (cell), by name."""

    h: jax.Array  # (*batch, hidden_size)
    c: jax.Array  # (*batch, hidden_size)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peephole: bool = False,
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    dtype=jnp.float32,
) -> LSTMParams:
    """Initialise an LSTM cell.

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      forget_bias: initial value of the forget-gate bias block (Jozefowicz et al. 2015: 1.0).
      peephole: add peephole weights ``w_peep`` (initialised to zero).
      input_init: initialiser of each gate block of ``w_x`` (default Lecun normal).
      dtype: parameter dtype.

    Returns:
      ``LSTMParams``: ``w_h`` orthogonal per gate block, biases zero except the forget block.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    k_x, k_h = jax.random.split(key)
    w_x = initializers.per_block(input_init, k_x, input_size, hidden_size, 4, dtype)
    w_h = initializers.block_orthogonal(k_h, hidden_size, 4, dtype)
    b = jnp.zeros((4, hidden_size), dtype).at[1].set(forget_bias).reshape(-1)
    w_peep = jnp.zeros((3, hidden_size), dtype) if peephole else None
    return LSTMParams(w_x=w_x, w_h=w_h, b=b, w_peep=w_peep)


def initial_carry(params: LSTMParams, batch_shape: tuple[int, ...] = ()) -> LSTMCarry:
    """Zero state, ``h`` and ``c`` of shape ``(*batch_shape, hidden_size)``."""
    return zeros_carry(LSTMCarry, params, LSTMParams, batch_shape, "lstm.initial_carry")


def pointwise(
    params: LSTMParams, carry: LSTMCarry, zx: jax.Array, zh: jax.Array
) -> tuple[LSTMCarry, jax.Array]:
    """The step after its two matrix products ``zx = x @ w_x`` and ``zh = h @ w_h``.

    Everything of the step but the products (biases, peepholes, gates); ``w_x`` and ``w_h`` are
    not read, so the fused backward pass of ``unroll_cell`` can differentiate this part alone.
    """
    z = zx + zh
    zi, zf, zg, zo = split_gates(z + lift(params.b, z), 4)
    if params.w_peep is not None:
        zi = zi + lift(params.w_peep[0], carry.c) * carry.c
        zf = zf + lift(params.w_peep[1], carry.c) * carry.c
    c = jax.nn.sigmoid(zf) * carry.c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
    if params.w_peep is not None:
        zo = zo + lift(params.w_peep[2], c) * c
    h = jax.nn.sigmoid(zo) * jnp.tanh(c)
    return LSTMCarry(h=h, c=c), h


def step(params: LSTMParams, carry: LSTMCarry, x: jax.Array) -> tuple[LSTMCarry, jax.Array]:
    """One LSTM step for ``x`` of shape ``(*batch, input_size)``; returns ``(LSTMCarry(h', c'), h')``."""
    check_step(params, LSTMParams, carry, LSTMCarry, x, "lstm.step")
    return pointwise(params, carry, x @ params.w_x, carry.h @ params.w_h)


def jacobian_diagonal(params: LSTMParams, carry: LSTMCarry, x: jax.Array) -> tuple[LSTMCarry, LSTMCarry]:
    """``(new_carry, diag)``: the step's carry and ``∂ leaf'_i / ∂ leaf_i`` per carry leaf (quasi-DEER, ELK)."""
    return pointwise_jacobian_diagonal(pointwise, params, carry, x)


def output_size(params: LSTMParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.w_h.shape[0]


def recurrent_blocks(params: LSTMParams) -> dict[str, jax.Array]:
    """The square block of ``w_h`` per gate, ``{"i", "f", "g", "o"}`` (for ``gradient_flow``)."""
    return dict(zip("ifgo", split_gates(params.w_h, 4)))
