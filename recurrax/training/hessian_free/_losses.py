"""Losses with their matching Gauss–Newton curvature, and the hidden units' matching losses for
structural damping (see ``recurrax.hessian_free``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp


def _cross_entropy(z, y):
    logp = jax.nn.log_softmax(z, axis=-1)
    if jnp.issubdtype(y.dtype, jnp.integer):
        return -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    return -jnp.sum(y * logp, axis=-1)


def _cross_entropy_hvp(z, y, u):
    p = jax.nn.softmax(z, axis=-1)  # H = diag(p) − ppᵀ (targets summing to 1)
    return p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)


def _logistic(z, y):
    return jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)


def _logistic_hvp(z, y, u):
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s) * u


LOSSES = {  # name -> (per-position value (..., C) -> (...), Hessian-vector product)
    "softmax_cross_entropy": (_cross_entropy, _cross_entropy_hvp),
    "squared_error": (lambda z, y: 0.5 * jnp.sum((z - y) ** 2, axis=-1), lambda z, y, u: u),
    "logistic": (_logistic, _logistic_hvp),
}


def _safe_divide(u, d):
    # d = 0 only where the unit is saturated in floating point, and there J_h v = 0 too.
    return jnp.where(d > 0, u / jnp.where(d > 0, d, 1.0), 0.0)


HIDDEN_LOSSES = {  # name -> H_D u for hidden states h (in h's coordinates)
    "tanh": lambda h, u: _safe_divide(u, (1.0 + h) * (1.0 - h)),  # = J_aᵀ(1 − h²)J_a in a
    "logistic": lambda h, u: _safe_divide(u, h * (1.0 - h)),
    "squared_error": lambda h, u: u,
}


def _choice(value: Any, options: Collection[str], name: str, why: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"Expected {name} to be one of {tuple(options)} ({why}), got {value!r}.")
    return value
