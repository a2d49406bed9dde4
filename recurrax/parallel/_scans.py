"""Associative scans over the time axis (axis 0): the parallel building blocks.

Each function evaluates a first-order recurrence over T steps with ``jax.lax.associative_scan``
(Blelloch 1990): O(T) work, O(log T) depth, so on an accelerator the T dependent steps of a
sequential scan become log T rounds of independent ones.

- ``linear_scan``: ``h_t = a_t ⊙ h_{t−1} + b_t`` (elementwise ``a``; pytrees allowed),
- ``matrix_scan``: ``h_t = A_t h_{t−1} + b_t`` (dense ``A_t``, N×N: DEER's Newton step),
- ``log_linear_scan``: the same as ``linear_scan`` for positive ``a``, ``b`` given by their
  logarithms, accumulated with log-sum-exp (Feng et al. 2024's log-space form),
- ``tridiagonal_solve``: a symmetric tridiagonal system along time (ELK's damped Newton step),
  as three scans: the Cholesky pivots by a projective (Möbius) scan, then forward elimination and
  back substitution as linear scans.

``reverse=True`` runs the recurrence from the last step down: ``h_t = a_t ⊙ h_{t+1} + b_t``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _combine_affine(earlier, later):
    """Compose two elementwise affine maps: ``later ∘ earlier`` as ``(a₂a₁, a₂b₁ + b₂)``."""
    (a1, b1), (a2, b2) = earlier, later
    return (jax.tree.map(jnp.multiply, a2, a1),
            jax.tree.map(lambda a, b, c: a * b + c, a2, b1, b2))


def linear_scan(a: Any, b: Any, h0: Any, *, reverse: bool = False) -> Any:
    """All ``h_t = a_t ⊙ h_{t−1} + b_t`` (``t = 1..T`` on axis 0) from ``h0``.

    ``a`` and ``b`` are pytrees of ``(T, ...)`` arrays (``a`` broadcasting against ``b``), ``h0``
    a pytree of ``b``'s structure with leaves ``(...)``. Returns the pytree of ``(T, ...)`` states.
    """
    a_cum, b_cum = jax.lax.associative_scan(_combine_affine, (a, b), reverse=reverse, axis=0)
    return jax.tree.map(lambda ac, bc, h: ac * h[None] + bc, a_cum, b_cum, h0)


def matrix_scan(a: jax.Array, b: jax.Array, h0: jax.Array, *, reverse: bool = False) -> jax.Array:
    """All ``h_t = A_t h_{t−1} + b_t`` for ``A`` ``(T, ..., N, N)``, ``b`` ``(T, ..., N)``, ``h0`` ``(..., N)``.

    Each combine is an N×N matrix product, so the scan costs O(T·N³) work (DEER's dense step).
    """
    def combine(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2

    a_cum, b_cum = jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=0)
    return jnp.einsum("t...ij,...j->t...i", a_cum, h0) + b_cum


def log_linear_scan(log_a: jax.Array, log_b: jax.Array, h0: jax.Array) -> jax.Array:
    """``h_t = a_t h_{t−1} + b_t`` for ``a, b > 0`` given as ``log a``, ``log b`` ``(T, ...)``; ``h0 ≥ 0``.

    In log space the composed map is ``(log A, log B)`` with ``log A = Σ log a`` and ``log B``
    accumulated by ``logaddexp``: no product of many gates is formed, so nothing underflows in
    the sum, and ``h_t = exp(log A_t) ⊙ h0 + exp(log B_t)``. ``h0`` stays in linear space, so a
    zero initial state (log 0 = −∞) costs no infinities in the gradient.
    """
    def combine(earlier, later):
        (la1, lb1), (la2, lb2) = earlier, later
        return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)

    log_a_cum, log_b_cum = jax.lax.associative_scan(combine, (log_a, log_b), axis=0)
    return jnp.exp(log_a_cum) * h0[None] + jnp.exp(log_b_cum)


def _shift_down(v: jax.Array, fill: float) -> jax.Array:
    """``v_{t−1}`` at index t (``fill`` at t = 0) along axis 0."""
    return jnp.concatenate([jnp.full_like(v[:1], fill), v[:-1]], axis=0)


def _shift_up(v: jax.Array, fill: float) -> jax.Array:
    """``v_{t+1}`` at index t (``fill`` at t = T−1) along axis 0."""
    return jnp.concatenate([v[1:], jnp.full_like(v[:1], fill)], axis=0)


def tridiagonal_solve(diagonal: jax.Array, lower: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve a symmetric positive definite tridiagonal system along axis 0, in parallel over time.

    The system, for each index of the trailing axes: ``lower_t x_{t−1} + diagonal_t x_t +
    lower_{t+1} x_{t+1} = rhs_t`` (``lower`` couples t−1 and t; ``lower_0`` is ignored), all
    arrays ``(T, ...)``. Gaussian elimination without pivoting (stable for SPD systems) in three
    associative scans:

    1. pivots ``p_t = d_t − l_t² / p_{t−1}``: a Möbius recurrence, linear on ``(num, den)``
       pairs, ``v_t = [[d_t, −l_t²], [1, 0]] v_{t−1}``, ``p_t = v_t[0] / v_t[1]``; the 2×2
       products are rescaled at each combine (the ratio is scale-free), so they never overflow;
    2. forward elimination ``z_t = rhs_t − (l_t / p_{t−1}) z_{t−1}``;
    3. back substitution ``x_t = z_t / p_t − (l_{t+1} / p_t) x_{t+1}``.
    """
    diagonal, lower, rhs = jnp.asarray(diagonal), jnp.asarray(lower), jnp.asarray(rhs)
    lower = lower.at[0].set(0)

    def combine(earlier, later):
        (a1, b1, c1, d1), (a2, b2, c2, d2) = earlier, later   # [[a, b], [c, d]], later @ earlier
        a, b = a2 * a1 + b2 * c1, a2 * b1 + b2 * d1
        c, d = c2 * a1 + d2 * c1, c2 * b1 + d2 * d1
        scale = jnp.maximum(jnp.maximum(jnp.abs(a), jnp.abs(b)), jnp.maximum(jnp.abs(c), jnp.abs(d)))
        scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
        return a / scale, b / scale, c / scale, d / scale

    ones, zeros = jnp.ones_like(diagonal), jnp.zeros_like(diagonal)
    a, b, c, d = jax.lax.associative_scan(combine, (diagonal, -(lower**2), ones, zeros), axis=0)
    pivots = (a + b) / (c + d)                                  # v_0 = (1, 1): p_0 = 1, l_1 = 0
    z = linear_scan(-lower / _shift_down(pivots, 1.0), rhs, jnp.zeros_like(rhs[0]))
    return linear_scan(-_shift_up(lower, 0.0) / pivots, z / pivots, jnp.zeros_like(rhs[0]), reverse=True)
