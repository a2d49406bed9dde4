"""minGRU (Feng et al. 2024): a GRU whose gate and candidate read the input only.

Equations, row-vector form, blocks **z, h̃** fused in ``w_x``:

    [k_z, k_h] = x @ w_x + b                  each (*batch, H)
    z = σ(k_z)
    h̃ = k_h          (default)      h̃ = g(k_h)   (log_space=True)
    h' = (1 − z) ⊙ h + z ⊙ h̃

with ``g(v) = v + 0.5`` for ``v ≥ 0`` and ``σ(v)`` below (see ``recurrax.cells._minimal``). The
output is ``h'``. Dropping ``h`` from the gate and the candidate (and the GRU's reset gate and
tanh with them) makes the step linear in the carry,

    h' = a ⊙ h + b,    a = 1 − z,    b = z ⊙ h̃,    a and b functions of x alone,

which ``linear_recurrence`` returns: the form an associative scan over time needs. ``step`` is
evaluated as ``a ⊙ h + b`` from ``linear_recurrence``, so the two agree bit for bit.

``log_space=True`` is the paper's log-space form: ``g > 0`` keeps every ``h_t`` positive from a
non-negative start (zeros, ``initial_carry``'s default, included), so a scan may run on
``log h`` (``log(1 − z) = −softplus(k_z)``, ``log z = −softplus(−k_z)``, ``log h̃ = log g(k_h)``).

>>> import jax, jax.numpy as jnp
>>> from recurrax import mingru
>>> params = mingru.init(jax.random.key(0), input_size=3, hidden_size=5)
>>> carry, y = mingru.step(params, mingru.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> y.shape
(2, 5)

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
    "MinGRUParams",
    "MinGRUCarry",
    "init",
    "initial_carry",
    "step",
    "linear_recurrence",
    "log_linear_recurrence",
    "output",
    "output_size",
]


class MinGRUParams(NamedTuple):
    """Parameters of a minGRU cell, blocks fused in the order z, h̃."""

    w_x: jax.Array  # (input_size, 2 * hidden_size)
    b: jax.Array  # (2 * hidden_size,)
    candidate: Candidate  # static pytree metadata: h̃ = k_h, or g(k_h) in the log-space form


class MinGRUCarry(NamedTuple):
    """State of a minGRU cell: the hidden state ``h``."""

    h: jax.Array  # (*batch, hidden_size)


_LAYOUT = MinimalLayout("mingru", MinGRUParams, MinGRUCarry, blocks=2)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    log_space: bool = False,
    input_init: Union[str, initializers.Initializer] = "lecun_normal",
    dtype=jnp.float32,
) -> MinGRUParams:
    """Initialise a minGRU cell (``w_x`` drawn per block, zero biases).

    Args:
      key: PRNG key, split once per block.
      input_size, hidden_size: D and H.
      log_space: the paper's log-space form, ``h̃ = g(k_h) > 0`` (see the module docstring).
      input_init: initialiser of each block of ``w_x`` (default Lecun normal).
      dtype: parameter dtype.
    """
    return _LAYOUT.init(key, input_size, hidden_size, log_space=log_space, input_init=input_init, dtype=dtype)


def initial_carry(params: MinGRUParams, batch_shape: tuple[int, ...] = ()) -> MinGRUCarry:
    """Zero state, ``h`` of shape ``(*batch_shape, hidden_size)``."""
    return _LAYOUT.initial_carry(params, batch_shape)


def linear_recurrence(params: MinGRUParams, x: jax.Array) -> tuple[MinGRUCarry, MinGRUCarry]:
    """``(a, b)`` with ``h' = a.h ⊙ h + b.h``: ``a = 1 − z``, ``b = z ⊙ h̃``, ``(*batch, H)``."""
    k_z, k_h = _LAYOUT.preactivations(params, x)
    gate = jax.nn.sigmoid(k_z)
    return MinGRUCarry(1 - gate), MinGRUCarry(gate * params.candidate(k_h))


def log_linear_recurrence(params: MinGRUParams, x: jax.Array) -> tuple[MinGRUCarry, MinGRUCarry]:
    """``(log a, log b)`` of ``linear_recurrence`` in the log-space form, without forming ``a`` or ``b``.

    ``log a = log(1 − z) = −softplus(k_z)``, ``log b = log z + log g(k_h) = −softplus(−k_z) + log g(k_h)``.
    """
    check_log_space(params.candidate, "mingru")
    k_z, k_h = _LAYOUT.preactivations(params, x)
    return MinGRUCarry(-jax.nn.softplus(k_z)), MinGRUCarry(-jax.nn.softplus(-k_z) + log_g(k_h))


def step(params: MinGRUParams, carry: MinGRUCarry, x: jax.Array) -> tuple[MinGRUCarry, jax.Array]:
    """One step ``h' = (1 − z) ⊙ h + z ⊙ h̃`` for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(MinGRUCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    return _LAYOUT.step(linear_recurrence, params, carry, x)


def output(params: MinGRUParams, carry: MinGRUCarry, x: jax.Array) -> jax.Array:
    """The step's output from its new carry: ``h'`` itself."""
    del params, x
    return carry.h


def output_size(params: MinGRUParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return _LAYOUT.hidden_size(params)
