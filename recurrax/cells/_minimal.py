"""What minGRU and minLSTM share: the candidate state h̃, plain or in the log-space form.

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

import jax
import jax.numpy as jnp


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
