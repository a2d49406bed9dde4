"""Conjugate gradient on pytrees for Hessian-free optimisation: Martens' stopping rule and the
iterates kept for backtracking (Martens 2010)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# --------------------------------------------------------------------------- pytree algebra


def _dot(a: Any, b: Any) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _add(a: Any, b: Any, scale: Any = 1.0) -> Any:
    """``a + scale·b`` leafwise."""
    return jax.tree.map(lambda x, y: x + scale * y, a, b)


def _scale(a: Any, scale: Any) -> Any:
    return jax.tree.map(lambda x: scale * x, a)



# --------------------------------------------------------------------------- conjugate gradient


class CGResult(NamedTuple):
    """What ``conjugate_gradient`` returns."""

    x: Any  # the last iterate x_N, a pytree like b
    iterations: jax.Array  # () int32: N, the iterations done
    phi: jax.Array  # (max_iters + 1,): φ(x_0), ..., φ(x_N), then NaN
    saved: Any  # pytree like b with a leading (S,) axis: the kept iterates in order, x_N last
    saved_iterations: jax.Array  # (S,) int32: each kept iterate's iteration, -1 past num_saved
    num_saved: jax.Array  # () int32


def save_schedule(max_iters: int, ratio: float = 1.3, every: int = 0) -> tuple[int, ...]:
    """The CG iterations whose iterates are kept for backtracking: ``ceil(ratio^j) ≤ max_iters``
    (Martens 2010), or with ``every = k > 0`` iterations 1, 1 + k, 1 + 2k, … (Martens & Sutskever
    2011's released code checks the iterate after every 10th CG step, counting from the first).

    >>> save_schedule(30)
    (1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24)
    >>> save_schedule(30, every=10)
    (1, 11, 21)
    """
    if every:
        return tuple(range(1, max_iters + 1, every))
    its, j = set(), 0
    while math.ceil(ratio**j) <= max_iters:
        its.add(math.ceil(ratio**j))
        j += 1
    return tuple(sorted(its))


def _progress_stop(phi: jax.Array, i: jax.Array, tolerance: float, min_iters: int) -> jax.Array:
    """Martens (2010): stop at i > k = max(10, ⌈i/10⌉) if φ_i < 0 and (φ_i − φ_{i−k})/φ_i < kε."""
    k = jnp.maximum(10, (i + 9) // 10)
    phi_i, phi_k = phi[i], phi[jnp.maximum(i - k, 0)]
    progress = (phi_i - phi_k) / jnp.where(phi_i < 0, phi_i, -1.0)
    return (i >= min_iters) & (i > k) & (phi_i < 0) & (progress < k.astype(phi.dtype) * tolerance)


def conjugate_gradient(
    matvec: Callable[[Any], Any],
    b: Any,
    x0: Any,
    *,
    preconditioner: Any | None = None,
    min_iters: int = 1,
    max_iters: int = 250,
    tolerance: float = 5e-4,
    save_ratio: float = 1.3,
    save_every: int = 0,
) -> CGResult:
    """Minimise ``φ(x) = ½ xᵀAx + bᵀx`` (i.e. solve ``Ax = −b``) by preconditioned CG from ``x0``
    (or from 0 where ``φ(x0) > 0`` or is not finite: a warm start worse than none).

    ``A`` (given as ``matvec``) must be symmetric positive definite; ``preconditioner`` is a
    pytree ``m`` like ``b``, the diagonal of ``M`` (``M⁻¹r = r/m``). Stops at ``max_iters``, at
    Martens' relative-progress rule (``_progress_stop``, never before ``min_iters``), or when
    ``dᵀAd`` is no longer positive and finite (the residual vanished: the solve is exact). The
    iterates at ``save_schedule(max_iters, save_ratio, save_every)`` and the last one are kept.

    >>> a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    >>> result = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, -1.0]), jnp.zeros(2))
    >>> bool(jnp.allclose(a @ result.x, jnp.array([-1.0, 1.0]), atol=1e-5))
    True
    """
    schedule = save_schedule(max_iters, save_ratio, save_every)
    num_slots = len(schedule) + 1
    marks = jnp.array(schedule + (max_iters + 1,), jnp.int32)  # a sentinel past the last mark
    inverse = (lambda r: r) if preconditioner is None else (
        lambda r: jax.tree.map(lambda x, m: x / m, r, preconditioner))

    r = _add(matvec(x0), b)  # r = Ax + b = ∇φ(x)
    phi0 = 0.5 * _dot(x0, _add(r, b))
    # A warm start worse than x = 0 (φ(x0) > φ(0) = 0, or not finite) is dropped: CG only
    # descends from its start, so all its iterates may keep φ > 0. In HF that happens after λ
    # grows (the old solution is too long for the new model), and the step then predicts no
    # decrease, so ρ = −∞ and λ grows again. Measured (tanh RNN, temporal order at T = 100):
    # λ went from 0.005 to 5.7·10⁴ in 40 updates with the loss rising; with the restart the
    # same run solved the problem in 30 updates.
    restart = ~(phi0 <= 0)
    x0 = jax.tree.map(lambda x: jnp.where(restart, jnp.zeros_like(x), x), x0)
    r = jax.tree.map(lambda ri, bi: jnp.where(restart, bi, ri), r, b)
    y = inverse(r)
    dtype = jnp.result_type(*jax.tree.leaves(b))
    phi = jnp.full((max_iters + 1,), jnp.nan, dtype).at[0].set(jnp.where(restart, 0.0, phi0))
    saved = jax.tree.map(lambda x: jnp.zeros((num_slots,) + x.shape, x.dtype), x0)
    carry = {"i": jnp.zeros((), jnp.int32), "x": x0, "r": r, "y": y, "d": _scale(y, -1.0),
             "ry": _dot(r, y), "phi": phi, "saved": saved, "its": jnp.full((num_slots,), -1, jnp.int32),
             "ptr": jnp.zeros((), jnp.int32), "done": jnp.zeros((), bool)}

    def body(c):
        ad = matvec(c["d"])
        dad = _dot(c["d"], ad)
        ok = (dad > 0) & jnp.isfinite(dad)
        alpha = c["ry"] / jnp.where(ok, dad, 1.0)
        x, r = _add(c["x"], c["d"], alpha), _add(c["r"], ad, alpha)
        y = inverse(r)
        ry = _dot(r, y)
        d = _add(_scale(y, -1.0), c["d"], ry / jnp.where(c["ry"] > 0, c["ry"], 1.0))
        new = {"x": x, "r": r, "y": y, "d": d, "ry": ry}
        new = {k: jax.tree.map(lambda n, o: jnp.where(ok, n, o), v, c[k]) for k, v in new.items()}
        i = c["i"] + ok.astype(jnp.int32)
        phi = c["phi"].at[i].set(jnp.where(ok, 0.5 * _dot(new["x"], _add(new["r"], b)), c["phi"][i]))
        save = ok & (i == marks[c["ptr"]])
        slot = c["ptr"]
        saved = jax.tree.map(
            lambda s, v: lax.dynamic_update_index_in_dim(s, jnp.where(save, v, s[slot]), slot, 0),
            c["saved"], new["x"])
        its = c["its"].at[slot].set(jnp.where(save, i, c["its"][slot]))
        done = ~ok | _progress_stop(phi, i, tolerance, min_iters)
        return dict(new, i=i, phi=phi, saved=saved, its=its, ptr=slot + save.astype(jnp.int32), done=done)

    c = lax.while_loop(lambda c: (c["i"] < max_iters) & ~c["done"], body, carry)
    # The last iterate is always a candidate; add it unless the schedule already kept it.
    add = (c["ptr"] == 0) | (c["its"][jnp.maximum(c["ptr"] - 1, 0)] != c["i"])
    saved = jax.tree.map(
        lambda s, v: lax.dynamic_update_index_in_dim(s, jnp.where(add, v, s[c["ptr"]]), c["ptr"], 0),
        c["saved"], c["x"])
    its = c["its"].at[c["ptr"]].set(jnp.where(add, c["i"], c["its"][c["ptr"]]))
    return CGResult(c["x"], c["i"], c["phi"], saved, its, c["ptr"] + add.astype(jnp.int32))
