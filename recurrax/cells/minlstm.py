"""minLSTM (Feng et al. 2024): an LSTM whose gates and candidate read the input only.

Equations, row-vector form, blocks **f, i, h̃** fused in ``w_x``:

    [k_f, k_i, k_h] = x @ w_x + b              each (*batch, H)
    f = σ(k_f)    i = σ(k_i)
    f' = f / (f + i)    i' = i / (f + i)
    h̃ = k_h          (default)      h̃ = g(k_h)   (log_space=True)
    h' = f' ⊙ h + i' ⊙ h̃

with ``g(v) = v + 0.5`` for ``v ≥ 0`` and ``σ(v)`` below (see ``recurrax.cells._minimal``). The
output is ``h'``. Normalising the gates to ``f' + i' = 1`` is the paper's length-independent
scaling: ``h'`` is a convex combination of ``h`` and ``h̃``, so the state's scale does not grow
with the sequence length (the LSTM's output gate and cell state are gone with it). The
normalised gates are computed as ``f' = σ(log f − log i)``, ``i' = σ(log i − log f)`` (equal to
the quotients, with ``log f = log σ(k_f)`` from ``jax.nn.log_sigmoid``), which stays finite where
both ``f`` and ``i`` underflow. The step is linear in the carry,

    h' = a ⊙ h + b,    a = f',    b = i' ⊙ h̃,    a and b functions of x alone,

which ``linear_recurrence`` returns; ``step`` is evaluated from it, so the two agree bit for bit.
``log_space=True`` keeps ``h > 0`` from a non-negative start, for a scan on ``log h``.

>>> import jax, jax.numpy as jnp
>>> from recurrax import minlstm
>>> params = minlstm.init(jax.random.key(0), input_size=3, hidden_size=5)
>>> f, i = minlstm.gates(params, jnp.ones((2, 3)))
>>> bool(jnp.allclose(f + i, 1.0))
True

Reference: L. Feng, F. Tung, M. O. Ahmed, Y. Bengio and H. Hajimirsadeghi, "Were RNNs all we
needed?", arXiv:2410.01201 (2024).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax.cells._minimal import Candidate, MinimalLayout, check_log_space, log_g

__all__ = [
    "MinLSTMParams",
    "MinLSTMCarry",
    "init",
    "initial_carry",
    "step",
    "gates",
    "linear_recurrence",
    "log_linear_recurrence",
    "output",
    "output_size",
]


class MinLSTMParams(NamedTuple):
    """Parameters of a minLSTM cell, blocks fused in the order f, i, h̃."""

    w_x: jax.Array  # (input_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)
    candidate: Candidate  # static pytree metadata: h̃ = k_h, or g(k_h) in the log-space form


class MinLSTMCarry(NamedTuple):
    """State of a minLSTM cell: the hidden state ``h`` (there is no separate cell state)."""

    h: jax.Array  # (*batch, hidden_size)


_LAYOUT = MinimalLayout("minlstm", MinLSTMParams, MinLSTMCarry, blocks=3)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    log_space: bool = False,
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    dtype=jnp.float32,
) -> MinLSTMParams:
    """Initialise a minLSTM cell (``w_x`` drawn per block, zero biases).

    Args:
      key: PRNG key, split once per block.
      input_size, hidden_size: D and H.
      log_space: the paper's log-space form, ``h̃ = g(k_h) > 0`` (see the module docstring).
      input_init: initialiser of each block of ``w_x`` (default Lecun normal).
      dtype: parameter dtype.
    """
    return _LAYOUT.init(key, input_size, hidden_size, log_space=log_space, input_init=input_init, dtype=dtype)


def initial_carry(params: MinLSTMParams, batch_shape: tuple[int, ...] = ()) -> MinLSTMCarry:
    """Zero state, ``h`` of shape ``(*batch_shape, hidden_size)``."""
    return _LAYOUT.initial_carry(params, batch_shape)


def _normalised(k_f: jax.Array, k_i: jax.Array) -> tuple[jax.Array, jax.Array]:
    log_ratio = jax.nn.log_sigmoid(k_f) - jax.nn.log_sigmoid(k_i)  # log f − log i
    return jax.nn.sigmoid(log_ratio), jax.nn.sigmoid(-log_ratio)


def gates(params: MinLSTMParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The normalised gates ``(f', i')`` for ``x`` ``(*batch, input_size)``; ``f' + i' = 1``."""
    k_f, k_i, _ = _LAYOUT.preactivations(params, x)
    return _normalised(k_f, k_i)


def linear_recurrence(params: MinLSTMParams, x: jax.Array) -> tuple[MinLSTMCarry, MinLSTMCarry]:
    """``(a, b)`` with ``h' = a.h ⊙ h + b.h``: ``a = f'``, ``b = i' ⊙ h̃``, each ``(*batch, H)``."""
    k_f, k_i, k_h = _LAYOUT.preactivations(params, x)
    forget, inp = _normalised(k_f, k_i)
    return MinLSTMCarry(forget), MinLSTMCarry(inp * params.candidate(k_h))


def log_linear_recurrence(params: MinLSTMParams, x: jax.Array) -> tuple[MinLSTMCarry, MinLSTMCarry]:
    """``(log a, log b)`` of ``linear_recurrence`` in the log-space form, without forming ``a`` or ``b``.

    With ``ρ = log f − log i``: ``log f' = log σ(ρ)``, ``log b = log σ(−ρ) + log g(k_h)``.
    """
    check_log_space(params.candidate, "minlstm")
    k_f, k_i, k_h = _LAYOUT.preactivations(params, x)
    log_ratio = jax.nn.log_sigmoid(k_f) - jax.nn.log_sigmoid(k_i)
    return MinLSTMCarry(jax.nn.log_sigmoid(log_ratio)), MinLSTMCarry(jax.nn.log_sigmoid(-log_ratio) + log_g(k_h))


def step(
    params: MinLSTMParams, carry: MinLSTMCarry, x: jax.Array
) -> tuple[MinLSTMCarry, jax.Array]:
    """One step ``h' = f' ⊙ h + i' ⊙ h̃`` for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(MinLSTMCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    return _LAYOUT.step(linear_recurrence, params, carry, x)


def output(params: MinLSTMParams, carry: MinLSTMCarry, x: jax.Array) -> jax.Array:
    """The step's output from its new carry: ``h'`` itself."""
    del params, x
    return carry.h


def output_size(params: MinLSTMParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return _LAYOUT.hidden_size(params)
