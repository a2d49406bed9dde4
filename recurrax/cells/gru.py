"""Gated recurrent unit (Cho et al. 2014), in two documented forms. Gate order **r, z, n**.

**Reset-after** (default; the form of PyTorch, cuDNN and flax.linen, *with* ``b_hn``)::

    [ar, az, an] = x @ w_x + b          [hr, hz, hn] = h @ w_h
    r = σ(ar + hr)    z = σ(az + hz)
    n = tanh(an + r ⊙ (hn + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

``b`` holds the input-side biases, the recurrent r/z biases folded in (PyTorch's ``b_ir + b_hr``
and ``b_iz + b_hz``); ``b_hn`` cannot be folded because it sits inside ``r ⊙ (·)``.

**Reset-before** (the seeds' form, Cho et al. 2014), ``init(..., reset_after=False)``::

    r = σ(x @ W_r + h @ U_r + b_r)     z = σ(x @ W_z + h @ U_z + b_z)
    h̃ = tanh(x @ W_h + (r ⊙ h) @ U_h + b_h)
    h' = (1 − z) ⊙ h + z ⊙ h̃

Note the seeds' ``z`` weighs the *new* candidate, the reverse of the reset-after convention.
The form is read from the params: reset-after has a ``b_hn`` array, reset-before has
``b_hn=None`` (its candidate bias is entirely in ``b``).

>>> import jax, jax.numpy as jnp
>>> from recurrax import gru
>>> params = gru.init(jax.random.key(0), input_size=3, hidden_size=5)
>>> carry, y = gru.step(params, gru.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> y.shape
(2, 5)
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax.cells._common import check_sizes, check_step, lift, pointwise_jacobian_diagonal, split_gates, zeros_carry

__all__ = [
    "GRUParams", "GRUCarry", "init", "initial_carry", "step", "pointwise", "output_size",
    "has_pointwise_split", "recurrent_blocks", "jacobian_diagonal",
]


class GRUParams(NamedTuple):
    """Parameters of a GRU cell, gates fused in the order r, z, n."""

    w_x: jax.Array  # (input_size, 3 * hidden_size)
    w_h: jax.Array  # (hidden_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)
    b_hn: Optional[jax.Array]  # (hidden_size,) in the reset-after form; None in reset-before


class GRUCarry(NamedTuple):
    """State of a GRU cell: the hidden state ``h``."""

    h: jax.Array  # (*batch, hidden_size)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = True,
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    dtype=jnp.float32,
) -> GRUParams:
    """Initialise a GRU cell (``w_h`` orthogonal per gate block, biases zero).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      reset_after: ``True`` for the PyTorch/cuDNN/flax.linen form with ``b_hn`` (default),
        ``False`` for the seeds' reset-before form.
      input_init: initialiser of each gate block of ``w_x`` (default Lecun normal).
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    k_x, k_h = jax.random.split(key)
    return GRUParams(
        w_x=initializers.per_block(input_init, k_x, input_size, hidden_size, 3, dtype),
        w_h=initializers.block_orthogonal(k_h, hidden_size, 3, dtype),
        b=jnp.zeros((3 * hidden_size,), dtype),
        b_hn=jnp.zeros((hidden_size,), dtype) if reset_after else None,
    )


def initial_carry(params: GRUParams, batch_shape: tuple[int, ...] = ()) -> GRUCarry:
    """Zero state with ``h`` of shape ``(*batch_shape, hidden_size)``."""
    return zeros_carry(GRUCarry, params, GRUParams, batch_shape, "gru.initial_carry")


def pointwise(params: GRUParams, carry: GRUCarry, zx: jax.Array, zh: jax.Array) -> tuple[GRUCarry, jax.Array]:
    """The reset-after step after its products ``zx = x @ w_x`` and ``zh = h @ w_h``.

    Only the reset-after form splits this way (in reset-before, the candidate's product
    ``(r ⊙ h) @ U_h`` depends on the gates); ``w_x`` and ``w_h`` are not read.
    """
    if params.b_hn is None:
        raise ValueError("gru.pointwise needs the reset-after form (params.b_hn), got reset-before params.")
    ar, az, an = split_gates(zx + lift(params.b, zx), 3)
    hr, hz, hn = split_gates(zh, 3)
    r = jax.nn.sigmoid(ar + hr)
    z = jax.nn.sigmoid(az + hz)
    n = jnp.tanh(an + r * (hn + lift(params.b_hn, hn)))
    h_new = (1 - z) * n + z * carry.h
    return GRUCarry(h=h_new), h_new


def step(params: GRUParams, carry: GRUCarry, x: jax.Array) -> tuple[GRUCarry, jax.Array]:
    """One GRU step for ``x`` of shape ``(*batch, input_size)``; returns ``(GRUCarry(h'), h')``."""
    check_step(params, GRUParams, carry, GRUCarry, x, "gru.step")
    if params.b_hn is not None:  # reset-after
        return pointwise(params, carry, x @ params.w_x, carry.h @ params.w_h)
    # reset-before (seeds)
    h = carry.h
    hidden_size = h.shape[-1]
    xw = x @ params.w_x
    ar, az, an = split_gates(xw + lift(params.b, xw), 3)
    hr, hz = split_gates(h @ params.w_h[:, : 2 * hidden_size], 2)
    r = jax.nn.sigmoid(ar + hr)
    z = jax.nn.sigmoid(az + hz)
    candidate = jnp.tanh(an + (r * h) @ params.w_h[:, 2 * hidden_size :])
    h_new = (1 - z) * h + z * candidate
    return GRUCarry(h=h_new), h_new


def jacobian_diagonal(params: GRUParams, carry: GRUCarry, x: jax.Array) -> tuple[GRUCarry, GRUCarry]:
    """``(new_carry, diag)``: the step's carry and ``∂h'_i/∂h_i`` (quasi-DEER, ELK), no H×H Jacobian.

    Reset-after: from ``pointwise`` (``cells._common.pointwise_jacobian_diagonal``). Reset-before,
    ``n = tanh(a_n + (r ⊙ h) U_n)`` couples units through ``r``:
    ``∂h'_i/∂h_i = (1 − z_i) + (n_i − h_i) z_i (1 − z_i) U_z[i,i]
    + z_i (1 − n_i²) (r_i U_n[i,i] + Σ_k U_r[i,k] U_n[k,i] r_k (1 − r_k) h_k)``.
    """
    if params.b_hn is not None:
        return pointwise_jacobian_diagonal(pointwise, params, carry, x)
    h = carry.h
    hidden_size = h.shape[-1]
    u_r, u_z, u_n = (params.w_h[:, g * hidden_size:(g + 1) * hidden_size] for g in range(3))
    xw = x @ params.w_x
    ar, az, an = split_gates(xw + lift(params.b, xw), 3)
    r = jax.nn.sigmoid(ar + h @ u_r)
    z = jax.nn.sigmoid(az + h @ u_z)
    n = jnp.tanh(an + (r * h) @ u_n)
    h_new = (1 - z) * h + z * n
    through_r = (r * (1 - r) * h) @ (u_r * u_n.T).T
    u_n_ii, u_z_ii = jnp.diagonal(u_n), jnp.diagonal(u_z)
    dn = (1 - n**2) * (r * lift(u_n_ii, r) + through_r)
    diag = (1 - z) + (n - h) * z * (1 - z) * lift(u_z_ii, z) + z * dn
    return GRUCarry(h=h_new), GRUCarry(h=diag)


def output_size(params: GRUParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.w_h.shape[0]


def has_pointwise_split(params: GRUParams) -> bool:
    """Only the reset-after form is ``pointwise(params, carry, x @ w_x, h @ w_h)``."""
    return params.b_hn is not None


def recurrent_blocks(params: GRUParams) -> dict[str, jax.Array]:
    """The square block of ``w_h`` per gate, ``{"r", "z", "n"}`` (for ``gradient_flow``)."""
    return dict(zip("rzn", split_gates(params.w_h, 3)))
