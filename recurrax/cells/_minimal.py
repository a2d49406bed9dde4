"""What minGRU and minLSTM share: the candidate state h̃ (plain or log-space) and the cell's plumbing.

Feng et al. (2024) give each minimal cell two forms. The plain form takes the candidate as the
linear map of the input, ``h̃ = x @ W_h + b_h``. The log-space form passes it through

    g(v) = v + 0.5   (v ≥ 0)        g(v) = σ(v)   (v < 0)

which is continuous, increasing and strictly positive, so that with a non-negative initial
state every ``h_t`` is positive (``h_t`` is a convex combination of ``h_{t−1}`` and ``h̃_t``)
and a scan over time can run on ``log h`` with log-sum-exp, the form the paper uses for long
sequences. ``step`` runs in linear space either way: it is the same function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from recurrax import initializers
from recurrax._checks import check_params_type
from recurrax.cells._common import check_sizes, check_step, lift, split_gates, zeros_carry


def g(v: jax.Array) -> jax.Array:
    """The paper's positive candidate map: ``v + 0.5`` for ``v ≥ 0``, ``σ(v)`` below."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def log_g(v: jax.Array) -> jax.Array:
    """``log g(v)`` without forming ``g``: ``log(v + 0.5)`` (``v ≥ 0``), ``−softplus(−v)`` below."""
    return jnp.where(v >= 0, jnp.log(jnp.maximum(v, 0) + 0.5), -jax.nn.softplus(-v))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """How a minimal cell forms h̃ from its pre-activation (static pytree metadata, not a leaf).

    ``log_space=False``: ``h̃ = v`` (the paper's minGRU/minLSTM); ``True``: ``h̃ = g(v) > 0``.
    """

    log_space: bool = False

    def __post_init__(self):
        if not isinstance(self.log_space, bool):
            raise ValueError(f"Expected log_space to be True or False, got {self.log_space!r}.")

    def __call__(self, v: jax.Array) -> jax.Array:
        return g(v) if self.log_space else v


jax.tree_util.register_static(Candidate)


def check_log_space(candidate: Candidate, cell: str) -> None:
    """The log-space recurrence needs ``h̃ = g(v) > 0``: the cell's log-space form."""
    if not candidate.log_space:
        raise ValueError(
            f"{cell}.log_linear_recurrence needs the log-space form (h̃ = g(v) > 0), got params from "
            f"{cell}.init(..., log_space=False): initialise with log_space=True, or use the linear-space scan."
        )


@dataclasses.dataclass(frozen=True)
class MinimalLayout:
    """A minimal cell's shape: ``w_x`` ``(D, blocks·H)`` and ``b`` ``(blocks·H,)``, the last block
    the candidate's, and a carry of ``h`` alone. Everything here is the same for minGRU (blocks
    z, h̃) and minLSTM (f, i, h̃); each module keeps its gates, ``linear_recurrence`` and docs.
    """

    name: str  # "mingru": in error messages
    params_type: type  # (w_x, b, candidate)
    carry_type: type  # (h,)
    blocks: int

    def init(self, key, input_size, hidden_size, *, log_space, input_init, dtype) -> Any:
        input_size, hidden_size = check_sizes(input_size, hidden_size)
        candidate = Candidate(log_space)
        w_x = initializers.per_block(input_init, key, input_size, hidden_size, self.blocks, dtype)
        return self.params_type(w_x=w_x, b=jnp.zeros((self.blocks * hidden_size,), dtype), candidate=candidate)

    def hidden_size(self, params) -> int:
        return params.b.shape[-1] // self.blocks

    def initial_carry(self, params, batch_shape) -> Any:
        what = f"{self.name}.initial_carry"
        check_params_type(params, self.params_type, what)
        return zeros_carry(self.carry_type, params, self.params_type, batch_shape, what,
                           hidden_size=self.hidden_size(params), dtype=params.w_x.dtype)

    def preactivations(self, params, x: jax.Array) -> list[jax.Array]:
        """``x @ w_x + b`` split into the blocks, each ``(*batch, H)``."""
        z = x @ params.w_x
        return split_gates(z + lift(params.b, z), self.blocks)

    def step(self, linear_recurrence: Callable, params, carry, x: jax.Array) -> tuple[Any, jax.Array]:
        """``h' = a ⊙ h + b`` from ``linear_recurrence``: the step and the scan agree bit for bit."""
        what = f"{self.name}.step"
        check_params_type(params, self.params_type, what)  # before reading sizes off params
        check_step(params, self.params_type, carry, self.carry_type, x, what, hidden_size=self.hidden_size(params))
        a, b = linear_recurrence(params, x)
        h = a.h * carry.h + b.h
        return self.carry_type(h), h
