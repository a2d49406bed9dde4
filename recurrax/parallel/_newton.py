"""DEER, quasi-DEER and ELK: a nonlinear cell's whole trajectory by Newton's method over time.

The trajectory ``s_1..s_T`` of ``s_t = f(s_{t−1}, x_t)`` (``f`` the cell's step on its flattened
carry, ``s_0`` given) is the root of ``s_t − f(s_{t−1}, x_t) = 0`` for all t at once. One Newton
iteration linearises every step at the current iterate ``s^(i)``,

    s_t = J_t s_{t−1} + r_t,    J_t = ∂f/∂s (s^(i)_{t−1}, x_t),    r_t = f(s^(i)_{t−1}, x_t) − J_t s^(i)_{t−1},

evaluates f and J at all T steps in one batched pass, and solves the linear recurrence with one
associative scan (Lim et al. 2024, DEER). Whatever ``J`` is, after k iterations the first k
steps are exact (``s_1 = f(s_0, x_1)`` after one, and so on), so at most T iterations reach the
sequential trajectory; with the true Jacobian the convergence is quadratic near it.

- ``jacobian="full"`` (DEER): dense N×N ``J_t`` (``jax.jacfwd``), an O(T·N³) scan.
- ``jacobian="diagonal"`` (quasi-DEER, Gonzalez et al. 2024): only ``diag J_t``, an elementwise
  O(T·N) scan, from the family's ``jacobian_diagonal`` hook when it has one (never forming the
  N×N matrix), else read off ``jax.jacfwd`` (documented cost: N×N per step in memory).
- ``damping=λ > 0`` with the diagonal (ELK, "evaluating Levenberg–Marquardt with Kalman",
  Gonzalez et al. 2024): each step minimises ``Σ_t ‖s_t − J_t s_{t−1} − r_t‖² + λ‖s_t − s^(i)_t‖²``,
  a trust region around the iterate; with diagonal J this is a symmetric tridiagonal system
  along time per coordinate, solved by ``tridiagonal_solve``'s three scans (the parallel Kalman
  smoother of the paper, in its scalar form). λ → 0 is quasi-DEER. λ is fixed,
  as in the paper: every step is a bounded move from the iterate, so the iterates stay finite
  where quasi-DEER's diagonal scan multiplies gains above 1 into overflow. An adaptive λ that
  rejects steps raising ``Σ (s − f(s))²`` was tried and stalled (Newton's error front is not
  monotone in that merit: a GRU-like cell quasi-DEER solves in 85 iterations was not solved in
  400).

Stopping: ``‖s − f(s_{shifted})‖∞ ≤ tol · max(‖s‖∞, ‖f(s_{shifted})‖∞)``, checked after every iteration inside
one ``lax.while_loop``, which also stops at ``max_iterations`` or at the first non-finite
residual. **A solve that does not converge is never returned**: the whole batch is evaluated
again by the sequential scan (``lax.cond``; exact), and a ``RuntimeWarning`` names the method,
the iterations, the residual and, for a non-finite iterate, the first step where it appeared.
Under ``jax.vmap`` the fallback is computed only when some solve of the mapped batch failed, and
only the solves that failed warn (``_unless_converged``).

Gradients come from implicit differentiation at the solution (``jax.custom_vjp``), never through
the iterations: with ``λ_t = s̄_t + J_{t+1}ᵀ λ_{t+1}`` (one reverse linear recurrence with the
transposed Jacobians), ``θ̄ = Σ_t ∂f_tᵀ/∂θ λ_t``, ``x̄_t = ∂f_tᵀ/∂x λ_t``, ``s̄_0 = J_1ᵀ λ_1``.
DEER solves it with one reverse matrix scan; the diagonal methods by the same quasi-Newton
iteration as their forward pass (a reverse diagonal scan plus one batched ``vjp`` of the step per
iteration, exact after at most T iterations), falling back to the sequential reverse scan under
the same rule.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.parallel._scans import _shift_up, linear_scan, matrix_scan, tridiagonal_solve


@dataclasses.dataclass(frozen=True)
class Problem:
    """The static half of a solve: the flattened masked step and the method's options.

    ``step(params, s, x, m) -> s'`` acts on one example's flat state ``s`` ``(N,)``;
    ``diagonal(params, s, x, m) -> (s', diag J)`` likewise, or ``None`` (read off ``jacfwd``).
    """

    step: Callable[..., jax.Array]
    diagonal: Optional[Callable[..., tuple]]
    name: str
    jacobian: str
    damping: float
    tol: float
    max_iterations: int


def _over_time_and_batch(fn):
    """``fn(params, s, x, m)`` on one example, mapped over ``(T, B)`` leading axes."""
    return jax.vmap(jax.vmap(fn, in_axes=(None, 0, 0, 0)), in_axes=(None, 0, 0, 0))


def _shifted(s0: jax.Array, states: jax.Array) -> jax.Array:
    """``s_{t−1}`` for t = 1..T: the initial state, then all states but the last."""
    return jnp.concatenate([s0[None], states[:-1]], axis=0)


def _linearise(problem: Problem, params, previous, xs, mask):
    """``f`` and its Jacobian (full ``(T,B,N,N)`` or diagonal ``(T,B,N)``) at every step."""
    if problem.jacobian == "full":
        def both(p, s, x, m):
            jac, value = jax.jacfwd(lambda v: (problem.step(p, v, x, m),) * 2, has_aux=True)(s)
            return value, jac
    elif problem.diagonal is not None:
        both = problem.diagonal
    else:
        def both(p, s, x, m):
            jac, value = jax.jacfwd(lambda v: (problem.step(p, v, x, m),) * 2, has_aux=True)(s)
            return value, jnp.diagonal(jac)
    return _over_time_and_batch(both)(params, previous, xs, mask)


def _residual(states, values):
    """``‖states − values‖∞`` relative to the larger of their max-norms (0 when both are zero).

    Relative, not absolute: an adjoint of a mean-reduced loss has entries ~1e-6, where an
    absolute 1e-5 would stop the iteration after one sweep with wrong gradients.
    """
    scale = jnp.maximum(jnp.max(jnp.abs(states)), jnp.max(jnp.abs(values)))
    change = jnp.max(jnp.abs(states - values))
    # A NaN scale fails ``scale > 0`` and returns the NaN change: never 'converged' on NaN.
    return jnp.where(scale > 0, change / jnp.where(scale > 0, scale, 1), change).astype(states.dtype)


def _newton_update(problem: Problem, s0, states, values, jac):
    """One Newton (DEER / quasi-DEER) or damped (ELK) step from the linearisation at ``states``."""
    previous = _shifted(s0, states)
    if problem.jacobian == "full":
        offset = values - jnp.einsum("...ij,...j->...i", jac, previous)
        return matrix_scan(jac, offset, s0)
    offset = values - jac * previous
    if problem.damping == 0:
        return linear_scan(jac, offset, s0)
    # ELK: minimise Σ_t (s_t − a_t s_{t−1} − r_t)² + λ (s_t − o_t)², o the current iterate.
    lam = problem.damping
    a_next = _shift_up(jac, 0.0)
    r_next = _shift_up(offset, 0.0)
    diagonal = 1 + lam + a_next**2
    rhs = offset - a_next * r_next + lam * states
    rhs = rhs.at[0].add(jac[0] * s0)
    return tridiagonal_solve(diagonal, -jac, rhs)


def _sequential(problem: Problem, params, s0, xs, mask):
    """The exact trajectory by ``lax.scan``: the reference, and the fallback."""
    step = jax.vmap(problem.step, in_axes=(None, 0, 0, 0))

    def body(s, inputs):
        s = step(params, s, *inputs)
        return s, s

    return jax.lax.scan(body, s0, (xs, mask))[1]


def _first_bad_step(values, jac) -> jax.Array:
    bad = ~jnp.isfinite(values).reshape(values.shape[0], -1).all(axis=1)
    bad |= ~jnp.isfinite(jac).reshape(jac.shape[0], -1).all(axis=1)
    return jnp.where(bad.any(), jnp.argmax(bad), -1)


def _warn(name, what, converged, iterations, residual, tol, bad_step):
    """The fallback's warning, from a host callback: reads its scalars, launches no JAX computation.

    Silent for a solve that converged: under ``jax.vmap`` the fallback runs for every solve of the
    batch once any of them failed (``_unless_converged``), and only the failed ones warn.
    (A computation launched on XLA:CPU's execution thread can deadlock a multi-device program;
    see ``_checks._check_range_on_host``.)
    """
    if bool(converged):
        return
    where = f"; first non-finite value at step {int(bad_step)}" if int(bad_step) >= 0 else ""
    warnings.warn(
        f"recurrax.parallel: {name} ({what}) did not converge: residual {float(residual):.3g} > "
        f"tol {tol:.3g} after {int(iterations)} iterations{where}. Fell back to the sequential "
        "scan (exact): raise max_iterations, add damping (method='elk'), or use method='scan'.",
        RuntimeWarning,
        stacklevel=2,
    )


def _unless_converged(converged, value, fall_back, operands):
    """``value`` if ``converged`` else ``fall_back(*operands)``, computing the fallback only when needed.

    A plain ``lax.cond`` is turned into a ``select`` by ``jax.vmap`` when its predicate is batched,
    so every vmapped solve would pay for the sequential fallback (and run its warning). The batching
    rule here keeps one ``cond`` on "all of the batch converged": the fallback runs (for the whole
    batch, its results kept only where a solve failed) only when at least one solve did not
    converge. Under nested ``vmap`` the outer levels batch that predicate again and pay for both
    branches; the results and warnings stay right.
    """
    @jax.custom_batching.custom_vmap
    def pick(converged, value, operands):
        return jax.lax.cond(converged, lambda: value, lambda: fall_back(*operands))

    @pick.def_vmap
    def pick_batched(axis_size, in_batched, converged, value, operands):
        def batched(leaf, is_batched):
            return leaf if is_batched else jnp.broadcast_to(leaf, (axis_size,) + jnp.shape(leaf))

        converged, value, operands = jax.tree.map(batched, (converged, value, operands), tuple(in_batched))

        def some_failed():
            redone = jax.vmap(lambda ops: fall_back(*ops))(operands)
            keep = converged.reshape((axis_size,) + (1,) * (value.ndim - 1))
            return jnp.where(keep, value, redone)

        return jax.lax.cond(jnp.all(converged), lambda: value, some_failed), True

    return pick(converged, value, operands)


def _forward(problem: Problem, params, s0, xs, mask, guess):
    """Newton in one ``while_loop``; the sequential scan if it fails. Returns (states, stats)."""
    values, jac = _linearise(problem, params, _shifted(s0, guess), xs, mask)

    def not_done(carry):
        k, _, _, _, res = carry
        return (res > problem.tol) & (k < problem.max_iterations) & jnp.isfinite(res)

    def iterate(carry):
        k, states, values, jac, _ = carry
        states = _newton_update(problem, s0, states, values, jac)
        values, jac = _linearise(problem, params, _shifted(s0, states), xs, mask)
        return k + 1, states, values, jac, _residual(states, values)

    start = (jnp.zeros((), jnp.int32), guess, values, jac, _residual(guess, values))
    iterations, states, values, jac, residual = jax.lax.while_loop(not_done, iterate, start)
    converged = residual <= problem.tol
    bad_step = _first_bad_step(values, jac)

    def fall_back(params, s0, xs, mask, converged, iterations, residual, bad_step):
        jax.debug.callback(lambda *a: _warn(problem.name, "forward", *a),
                           converged, iterations, residual, problem.tol, bad_step)
        return _sequential(problem, params, s0, xs, mask)

    states = _unless_converged(converged, states, fall_back,
                               (params, s0, xs, mask, converged, iterations, residual, bad_step))
    return states, (iterations, residual, converged)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _trajectory(problem, params, s0, xs, mask, guess):
    return _forward(problem, params, s0, xs, mask, guess)


def _trajectory_fwd(problem, params, s0, xs, mask, guess):
    states, stats = _forward(problem, params, s0, xs, mask, guess)
    return (states, stats), (params, s0, xs, mask, states)


def _adjoint_sequential(problem, step_vjp_at, s_bar):
    """``λ_t = s̄_t + J_{t+1}ᵀ λ_{t+1}`` by a reverse ``lax.scan`` of per-step vjps (exact)."""
    def body(incoming, inputs):
        t, s_bar_t = inputs
        lam = s_bar_t + incoming
        return step_vjp_at(t, lam), lam

    times = jnp.arange(s_bar.shape[0])
    return jax.lax.scan(body, jnp.zeros_like(s_bar[0]), (times, s_bar), reverse=True)[1]


def _trajectory_bwd(problem, residuals, cotangents):
    params, s0, xs, mask, states = residuals
    s_bar = cotangents[0]
    previous = _shifted(s0, states)
    stepper = _over_time_and_batch(problem.step)
    _, vjp = jax.vjp(lambda p, s, x: stepper(p, s, x, mask), params, previous, xs)

    def transposed(lam):   # J_{t+1}ᵀ λ_{t+1} at index t (zero at T)
        return _shift_up(vjp(lam)[1], 0.0)

    if problem.jacobian == "full":
        _, jac = _linearise(problem, params, previous, xs, mask)
        jac_t = jnp.swapaxes(_shift_up(jac, 0.0), -1, -2)
        lam = matrix_scan(jac_t, s_bar, jnp.zeros_like(s_bar[0]), reverse=True)
    else:
        _, diag = _linearise(problem, params, previous, xs, mask)
        diag_next = _shift_up(diag, 0.0)

        def sweep(lam):   # exact diagonal part, off-diagonal part from the previous iterate
            lam_next = _shift_up(lam, 0.0)
            return linear_scan(diag_next, s_bar + transposed(lam) - diag_next * lam_next,
                               jnp.zeros_like(s_bar[0]), reverse=True)

        def not_done(carry):
            k, _, change = carry
            going = (change > problem.tol) & (k < problem.max_iterations) & jnp.isfinite(change)
            return (k == 0) | going

        def iterate(carry):
            k, lam, _ = carry
            new = sweep(lam)
            return k + 1, new, _residual(new, lam)

        # From λ = 0, so that even one iteration reports a measured change (1 for a nonzero λ).
        start = (jnp.zeros((), jnp.int32), jnp.zeros_like(s_bar), jnp.asarray(jnp.inf, s_bar.dtype))
        iterations, lam, change = jax.lax.while_loop(not_done, iterate, start)
        converged = change <= problem.tol

        def fall_back(params, previous, xs, mask, s_bar, converged, iterations, change):
            jax.debug.callback(lambda *a: _warn(problem.name, "backward", *a),
                               converged, iterations, change, problem.tol, -1)
            step_b = jax.vmap(problem.step, in_axes=(None, 0, 0, 0))

            def step_vjp_at(t, lam_t):
                return jax.vjp(lambda s: step_b(params, s, xs[t], mask[t]), previous[t])[1](lam_t)[0]

            return _adjoint_sequential(problem, step_vjp_at, s_bar)

        lam = _unless_converged(converged, lam, fall_back,
                                (params, previous, xs, mask, s_bar, converged, iterations, change))
    params_bar, previous_bar, xs_bar = vjp(lam)
    return params_bar, previous_bar[0], xs_bar, None, None


_trajectory.defvjp(_trajectory_fwd, _trajectory_bwd)


def solve_trajectory(problem: Problem, params: Any, s0: jax.Array, xs: jax.Array, mask: jax.Array,
                     guess: Optional[jax.Array] = None):
    """Trajectory ``(T, B, N)`` of the masked flat step from ``s0`` ``(B, N)`` over ``xs`` ``(T, B, D)``.

    Returns ``(states, (iterations, residual, converged))``; ``mask`` ``(T, B)`` booleans.
    """
    if guess is None:
        guess = jnp.broadcast_to(s0, (xs.shape[0],) + s0.shape)
    guess = jax.lax.stop_gradient(guess)
    return _trajectory(problem, params, s0, xs, mask, guess)


def default_tolerance(dtype: Any) -> float:
    """1e-5 in float32 (about 100 ulp of an O(1) state), 1e-10 in float64."""
    return 1e-10 if np.dtype(dtype).itemsize >= 8 else 1e-5
