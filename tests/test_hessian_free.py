"""Hessian-free optimisation: curvature products against dense matrices, CG and its stopping rule,
the Levenberg–Marquardt damping, one jitted step, the released RNN code's options (weight decay,
ρ on the damped model, backtracking to the best iterate, any-decrease line search, their own
batches) in closed form, training through ``fit``, and bad input.

Curvature products are checked in float64 (``jax.enable_x64``) against ``Jᵀ H J`` built from
``jax.jacfwd`` Jacobians, so agreement is to rounding error.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.flatten_util import ravel_pytree

import recurrax
from recurrax.hessian_free import HessianFree, conjugate_gradient, save_schedule

B, T, D, H, C = 3, 4, 2, 3, 3  # tiny: dense Jacobians stay small


# --------------------------------------------------------------------------- helpers


def _rnn_params(key, dtype):
    k1, k2 = jax.random.split(key)
    return {"rnn": recurrax.init_rnn(k1, "elman", D, H, dtype=dtype),
            "out": recurrax.init_dense(k2, H, C, dtype=dtype)}


def _rnn_model(p, xs):
    _, hs = recurrax.rnn(p["rnn"], xs, fused_backward=False)
    return recurrax.dense(p["out"], hs), hs  # (B, T, C), (B, T, H)


def _targets(loss, key, dtype):
    if loss == "softmax_cross_entropy":
        return jax.random.randint(key, (B, T), 0, C)
    if loss == "logistic":
        return jax.random.uniform(key, (B, T, C), dtype)
    return jax.random.normal(key, (B, T, C), dtype)


def _loss_hessians(loss, z):
    """(B, T, C, C): the matching loss's Hessian at every position, written out densely."""
    if loss == "softmax_cross_entropy":
        p = jax.nn.softmax(z, axis=-1)
        return jax.vmap(jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q)))(p)
    if loss == "logistic":
        s = jax.nn.sigmoid(z)
        return jax.vmap(jax.vmap(jnp.diag))(s * (1.0 - s))
    return jnp.broadcast_to(jnp.eye(C, dtype=z.dtype), z.shape + (C,))


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


# --------------------------------------------------------------------------- curvature products


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared_error", "logistic"])
def test_gauss_newton_product_equals_dense_jt_h_j(loss, key):
    with jax.enable_x64(True):
        kp, kx, ky, kw, kv = jax.random.split(key, 5)
        params = _rnn_params(kp, jnp.float64)
        xs = jax.random.normal(kx, (B, T, D), jnp.float64)
        weights = (jax.random.uniform(kw, (B, T)) > 0.3).astype(jnp.float64)  # some steps unscored
        batch = (xs, _targets(loss, ky, jnp.float64), weights)
        flat, unravel = ravel_pytree(params)
        v = jax.random.normal(kv, flat.shape, jnp.float64)

        gv = HessianFree(_rnn_model, loss).gauss_newton_product(params, batch, unravel(v))

        outputs = lambda f: _rnn_model(unravel(f), xs)[0]
        jac = jax.jacfwd(outputs)(flat)  # (B, T, C, P)
        hess = _loss_hessians(loss, outputs(flat))
        dense = jnp.einsum("btcp,btcd,btdq,bt->pq", jac, hess, jac, weights) / B
        np.testing.assert_allclose(_flat(gv), np.asarray(dense @ v), rtol=1e-10, atol=1e-12)


def _scan_model(activation):
    """An Elman RNN written out, returning its pre-activations too: ``(outputs, hs, pre)``."""

    def run(p, xs):
        def step(h, x):
            a = x @ p["w_x"] + h @ p["w_h"] + p["b"][None]
            h = activation(a)
            return h, (a, h)

        _, (pre, hs) = lax.scan(step, jnp.zeros((xs.shape[0], H), xs.dtype), jnp.swapaxes(xs, 0, 1))
        pre, hs = jnp.swapaxes(pre, 0, 1), jnp.swapaxes(hs, 0, 1)
        return hs @ p["w_y"], hs, pre

    return run


@pytest.mark.parametrize("hidden_loss", ["tanh", "logistic", "squared_error"])
def test_structural_damping_product_equals_dense(hidden_loss, key):
    """``G_S`` for tanh (logistic) units is the matching loss's ``J_aᵀ diag(f'(a)) J_a`` in the
    pre-activations ``a``, although the model only hands over ``h = f(a)``."""
    activation = jax.nn.sigmoid if hidden_loss == "logistic" else jnp.tanh
    run = _scan_model(activation)
    with jax.enable_x64(True):
        keys = jax.random.split(key, 6)
        params = {"w_x": jax.random.normal(keys[0], (D, H), jnp.float64),
                  "w_h": jax.random.normal(keys[1], (H, H), jnp.float64),
                  "b": jax.random.normal(keys[2], (H,), jnp.float64),
                  "w_y": jax.random.normal(keys[3], (H, C), jnp.float64)}
        xs = jax.random.normal(keys[4], (B, T, D), jnp.float64)
        batch = (xs, jnp.zeros((B, T), jnp.int32))
        flat, unravel = ravel_pytree(params)
        v = jax.random.normal(keys[5], flat.shape, jnp.float64)
        hf = HessianFree(lambda p, x: run(p, x)[:2], "softmax_cross_entropy", hidden_loss=hidden_loss)

        weight = 0.7
        product = hf.gauss_newton_product(params, batch, unravel(v), hidden_weight=weight)

        z, hs, _ = run(params, xs)
        jac_z = jax.jacfwd(lambda f: run(unravel(f), xs)[0])(flat)
        gauss_newton = jnp.einsum("btcp,btcd,btdq->pq", jac_z, _loss_hessians("softmax_cross_entropy", z), jac_z)
        if hidden_loss == "squared_error":
            jac_h = jax.jacfwd(lambda f: run(unravel(f), xs)[1])(flat)  # (B, T, H, P)
            structural = jnp.einsum("bthp,bthq->pq", jac_h, jac_h)
        else:
            slope = 1.0 - hs**2 if hidden_loss == "tanh" else hs * (1.0 - hs)  # f'(a)
            jac_a = jax.jacfwd(lambda f: run(unravel(f), xs)[2])(flat)
            structural = jnp.einsum("bthp,bth,bthq->pq", jac_a, slope, jac_a)
        dense = (gauss_newton + weight * structural) / B
        np.testing.assert_allclose(_flat(product), np.asarray(dense @ v), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- conjugate gradient


def _spd(seed, n=150, condition=1e4):
    """A random SPD matrix with eigenvalues spread log-uniformly over ``[1, condition]``, and a b."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.logspace(0.0, math.log10(condition), n)[None]) @ q.T, rng.normal(size=n)


@functools.partial(jax.jit, static_argnames=("min_iters", "max_iters", "tolerance"))
def _cg(a, b, m=None, *, min_iters=1, max_iters=300, tolerance=5e-4):
    return conjugate_gradient(lambda v: a @ v, b, jnp.zeros_like(b), preconditioner=m,
                              min_iters=min_iters, max_iters=max_iters, tolerance=tolerance)


def _first_stop(phi, min_iters, tolerance, start=1):
    """Martens (2010), transcribed: the first i > k = max(10, ⌈i/10⌉) with φ_i < 0 and
    (φ_i − φ_{i−k}) / φ_i < k ε (and i ≥ min_iters)."""
    for i in range(start, len(phi)):
        k = max(10, math.ceil(i / 10))
        if i >= min_iters and i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * tolerance:
            return i
    return None


@pytest.mark.parametrize("preconditioned", [False, True])
def test_cg_solves_a_random_spd_system(preconditioned):
    a, b = _spd(0, n=30, condition=1e3)
    m = np.random.default_rng(1).uniform(0.5, 2.0, size=b.shape) if preconditioned else None
    with jax.enable_x64(True):
        result = _cg(a, b, m, tolerance=1e-12)
    np.testing.assert_allclose(a @ np.asarray(result.x), -b, atol=1e-8)


def test_cg_stops_where_the_relative_progress_rule_says():
    a, b = _spd(2)
    with jax.enable_x64(True):
        result = _cg(a, b)
        n = int(result.iterations)
        later = _cg(a, b, min_iters=n + 7)
    phi = np.asarray(result.phi[: n + 1])
    assert 10 < n < 300, n
    assert _first_stop(phi, 1, 5e-4) == n
    x = np.asarray(result.x)
    np.testing.assert_allclose(phi[n], 0.5 * x @ a @ x + b @ x, rtol=1e-10)  # φ(x) = ½xᵀAx + bᵀx
    # with a floor on the iterations it stops at the first i past the floor where the rule holds
    phi_later = np.asarray(later.phi[: int(later.iterations) + 1])
    assert int(later.iterations) == _first_stop(phi_later, n + 7, 5e-4) >= n + 7


def _numpy_cg_iterates(a, b, iterations):
    """Plain CG on ``Ax = −b`` from 0, in NumPy: the iterates x_1, ..., x_n."""
    x, r = np.zeros_like(b), b.copy()
    d, iterates = -r, []
    for _ in range(iterations):
        alpha = (r @ r) / (d @ a @ d)
        x, r_new = x + alpha * d, r + alpha * (a @ d)
        d, r = -r_new + (r_new @ r_new) / (r @ r) * d, r_new
        iterates.append(x)
    return iterates


def test_cg_keeps_the_scheduled_iterates():
    a, b = _spd(3)
    with jax.enable_x64(True):
        result = _cg(a, b, max_iters=20, tolerance=1e-12)
    assert int(result.iterations) == 20
    assert save_schedule(20) == (1, 2, 3, 4, 5, 7, 9, 11, 14, 18)  # ⌈1.3^j⌉
    expected = [1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 20]  # and the last iterate
    assert int(result.num_saved) == len(expected)
    assert np.asarray(result.saved_iterations[: len(expected)]).tolist() == expected
    iterates = _numpy_cg_iterates(a, b, 20)
    for slot, i in enumerate(expected):
        np.testing.assert_allclose(result.saved[slot], iterates[i - 1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("start", ["good", "uphill", "nan"])
def test_cg_keeps_a_good_warm_start_and_drops_one_worse_than_zero(start):
    a, b = _spd(4, n=12)
    solution = np.linalg.solve(a, -b)
    x0 = {"good": 0.5 * solution, "uphill": -3.0 * solution, "nan": np.full_like(b, np.nan)}[start]
    phi0 = 0.5 * x0 @ a @ x0 + b @ x0  # the good start: φ < 0; the uphill one: φ = 7.5 bᵀA⁻¹b > 0
    with jax.enable_x64(True):
        result = conjugate_gradient(lambda v: a @ v, b, jnp.asarray(x0), max_iters=3, tolerance=1e-12)
        first = conjugate_gradient(lambda v: a @ v, b, jnp.asarray(x0), max_iters=1, tolerance=1e-12)
    kept = start == "good"
    assert float(result.phi[0]) == (pytest.approx(phi0, rel=1e-12) if kept else 0.0)
    # dropped: the first iterate is plain CG's from 0, the steepest-descent step along −b
    expected = x0 + _cg_step(a, b, x0) if kept else _numpy_cg_iterates(a, b, 1)[0]
    np.testing.assert_allclose(first.x, expected, rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(result.x))) and np.all(np.diff(np.asarray(result.phi[:4])) < 0)


def _cg_step(a, b, x):
    """One CG step from ``x``: along −r, r = Ax + b, by the exact line minimum."""
    r = a @ x + b
    return -(r @ r) / (r @ a @ r) * r


# --------------------------------------------------------------------------- the step


def _linear_model(p, x):
    return x @ p["w"] + p["b"][None], None  # no hidden states: no structural damping


@pytest.mark.parametrize("preconditioner", [False, True])
def test_one_step_with_vanishing_damping_lands_on_the_quadratic_minimum(preconditioner, key):
    with jax.enable_x64(True):
        kx, ky, kw = jax.random.split(key, 3)
        x = jax.random.normal(kx, (20, 4), jnp.float64)
        y = jax.random.normal(ky, (20, 2), jnp.float64)
        params = {"w": jax.random.normal(kw, (4, 2), jnp.float64), "b": jnp.zeros(2, jnp.float64)}
        hf = HessianFree(_linear_model, "squared_error", structural_damping=0.0, initial_damping=1e-12,
                         max_cg_iters=50, preconditioner=preconditioner)
        # the curvature batch given apart (here the same rows) or taken from the batch
        state, metrics = hf.step(hf.init(params), (x, y), *([(x, y)] if preconditioner else []))

        design = jnp.concatenate([x, jnp.ones((20, 1), jnp.float64)], axis=1)
        solution = jnp.linalg.lstsq(design, y)[0]
        np.testing.assert_allclose(state.params["w"], solution[:4], atol=1e-8)
        np.testing.assert_allclose(state.params["b"], solution[4], atol=1e-8)
        assert float(metrics["step_size"]) == 1.0
        assert abs(float(metrics["rho"]) - 1.0) < 1e-6  # f is its own quadratic model
        assert state.opt_state.damping.dtype == jnp.float64
        np.testing.assert_allclose(state.opt_state.damping, 1e-12 * 2 / 3)  # ρ > 3/4: λ × 2/3


def _kinked_model(p, inputs):
    """z = θ + c·relu(θ − ½)²: linear (and its own Gauss–Newton model) below ½, curved above."""
    theta, c = p["theta"], inputs[:, :1]
    return theta[None] + c * jax.nn.relu(theta[None] - 0.5) ** 2, None


@pytest.mark.parametrize("curve, rho_range, factor", [
    (0.0, (0.75, 1.01), 2 / 3),  # ρ = 1: λ down
    (2.5, (0.25, 0.75), 1.0),  # ρ = 1 − (c/4)² = 0.61: unchanged
    (8.0, (-math.inf, 0.25), 1.5),  # ρ = −3: λ up, and the line search must shrink the step
])
def test_damping_follows_the_reduction_ratio(curve, rho_range, factor):
    # From θ = 0 with target 1 the Gauss–Newton step is δ = 1, predicted q(δ) = −½;
    # f(θ + δ) = ½ (c/4)², so ρ = 1 − (c/4)².
    hf = HessianFree(_kinked_model, "squared_error", structural_damping=0.0, initial_damping=1e-6,
                     max_cg_iters=5)
    state = hf.init({"theta": jnp.zeros(1)})
    inputs = jnp.full((1, 1), curve)
    state, metrics = hf.step(state, (inputs, jnp.ones((1, 1))))
    assert rho_range[0] <= float(metrics["rho"]) < rho_range[1], float(metrics["rho"])
    np.testing.assert_allclose(state.opt_state.damping, 1e-6 * factor, rtol=1e-6)
    assert float(metrics["new_loss"]) < float(metrics["loss"])
    if curve == 8.0:
        assert int(metrics["line_search_steps"]) > 0 and float(metrics["step_size"]) < 1.0


def test_damping_comes_down_when_the_step_is_below_float_resolution():
    # λ = 10¹²: the step is ~10⁻¹², its loss change is rounding noise in float32 (ρ would read 0
    # and raise λ for ever); such a tiny step is where the quadratic model is exact: λ × 2/3.
    hf = HessianFree(_kinked_model, "squared_error", structural_damping=0.0, initial_damping=1e12,
                     max_cg_iters=5)
    state = hf.init({"theta": jnp.zeros(1)})
    state, metrics = hf.step(state, (jnp.full((1, 1), 8.0), jnp.ones((1, 1))))
    assert float(metrics["rho"]) == 1.0
    np.testing.assert_allclose(state.opt_state.damping, 1e12 * 2 / 3, rtol=1e-6)


# --------------------------------------------------------------------------- the released RNN code's options


def _regression(key, n, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, 4), dtype), jax.random.normal(ky, (n, 2), dtype)


def test_l2_adds_its_term_to_the_loss_gradient_and_curvature_and_lands_on_ridge(key):
    with jax.enable_x64(True):
        x, y = _regression(key, 20)
        params = {"w": jax.random.normal(jax.random.key(5), (4, 2), jnp.float64), "b": jnp.ones(2, jnp.float64)}
        plain = HessianFree(_linear_model, "squared_error", structural_damping=0.0)
        decayed = HessianFree(_linear_model, "squared_error", structural_damping=0.0, l2=0.3,
                              initial_damping=1e-12, max_cg_iters=50)
        norm = sum(float(jnp.sum(a**2)) for a in jax.tree.leaves(params))
        assert float(decayed.loss(params, (x, y))) == pytest.approx(float(plain.loss(params, (x, y))) + 0.15 * norm)
        v = jax.tree.map(lambda a: jnp.cos(a), params)
        np.testing.assert_allclose(_flat(decayed.gauss_newton_product(params, (x, y), v)),
                                   _flat(plain.gauss_newton_product(params, (x, y), v)) + 0.3 * _flat(v), rtol=1e-12)
        # one step from λ ≈ 0 is the ridge solution of ½ mean ‖xw + b − y‖² + ½ · 0.3 ‖(w, b)‖²
        state, _ = decayed.step(decayed.init(params), (x, y))
        design = np.concatenate([np.asarray(x), np.ones((20, 1))], axis=1)
        ridge = np.linalg.solve(design.T @ design / 20 + 0.3 * np.eye(5), design.T @ np.asarray(y) / 20)
        np.testing.assert_allclose(state.params["w"], ridge[:4], atol=1e-8)
        np.testing.assert_allclose(state.params["b"], ridge[4], atol=1e-8)


@pytest.mark.parametrize("rho", ["undamped", "damped"])
def test_rho_divides_the_loss_change_by_the_chosen_model(rho, key):
    # A linear model with squared error: every term of ρ in closed form. Undamped: the gradient
    # batch's change over gᵀδ + ½ δᵀG_cδ; damped: the curvature batch's change over gᵀδ +
    # ½ δᵀ(G_c + λI)δ (g from the gradient batch, G_c from the curvature batch).
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(key)
        batch, curvature = _regression(k1, 30), _regression(k2, 10)
        params = {"w": jnp.zeros((4, 2), jnp.float64), "b": jnp.zeros(2, jnp.float64)}
        lam = 0.5
        hf = HessianFree(_linear_model, "squared_error", structural_damping=0.0, initial_damping=lam,
                         max_cg_iters=50, rho=rho, cg_tolerance=1e-12)
        state, metrics = hf.step(hf.init(params), batch, curvature)
        assert float(metrics["step_size"]) == 1.0
        delta = jax.tree.map(lambda new, old: np.asarray(new - old), state.params, params)

        def mse(p, data):
            x, y = (np.asarray(a) for a in data)
            return 0.5 * np.sum((x @ p["w"] + p["b"][None] - y) ** 2) / len(x)

        g = jax.grad(lambda p: mse(jax.tree.map(jnp.asarray, p), batch))(params)
        slope = sum(float(np.sum(np.asarray(g[k]) * delta[k])) for k in delta)
        zero = {k: np.zeros_like(v) for k, v in delta.items()}
        xc = np.asarray(curvature[0])
        curv = np.sum((xc @ delta["w"] + delta["b"][None]) ** 2) / len(xc)  # δᵀ G_c δ
        if rho == "undamped":
            expected = (mse(delta, batch) - mse(zero, batch)) / (slope + 0.5 * curv)
        else:
            model = slope + 0.5 * (curv + lam * sum(np.sum(d**2) for d in delta.values()))
            expected = (mse(delta, curvature) - mse(zero, curvature)) / model
        assert float(metrics["rho"]) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("judged_on", ["its own batch", "the gradient batch"])
def test_backtracking_chooses_among_the_kept_iterates_by_its_rule(judged_on, key):
    params = _rnn_params(key, jnp.float32)
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    batch = (jax.random.normal(k1, (B, T, D)), jax.random.normal(k2, (B, T, H)))
    judge = (jax.random.normal(k3, (B, T, D)), jnp.zeros((B, T, H))) if judged_on == "its own batch" else batch
    model = lambda p, xs: (_rnn_model(p, xs)[1], None)  # the tanh states are the outputs
    lam = 0.1
    # CG from 0 on (G + λI) δ = −g, keeping iterates 1, 4, 7 and the last (9), scored on ``judge``
    hf = HessianFree(model, "squared_error", structural_damping=0.0, initial_damping=lam)
    grad = jax.grad(hf.loss)(params, batch)
    product = lambda v: jax.tree.map(lambda a, b: a + lam * b, hf.gauss_newton_product(params, batch, v), v)
    cg = conjugate_gradient(product, grad, jax.tree.map(jnp.zeros_like, params), max_iters=9, tolerance=1e-12,
                            save_every=3)
    its = np.asarray(cg.saved_iterations[: int(cg.num_saved)]).tolist()
    assert its == [1, 4, 7, 9]
    losses = [float(hf.loss(jax.tree.map(lambda p, s: p + s[j], params, cg.saved), judge)) for j in range(4)]
    back = 3  # walk back from the last while the loss does not rise
    while back > 0 and losses[back - 1] <= losses[back]:
        back -= 1
    expected = {"minimum": its[int(np.argmin(losses))], "walk_back": its[back]}
    if judged_on == "the gradient batch":  # measured: 3.46, 3.69, 5.50, 5.17, so the rules part
        assert expected == {"minimum": 1, "walk_back": 9}
    for rule in ("minimum", "walk_back"):
        hf = HessianFree(model, "squared_error", structural_damping=0.0, initial_damping=lam, max_cg_iters=9,
                         cg_tolerance=1e-12, backtracking=rule, save_every=3)
        _, metrics = hf.step(hf.init(params), batch, None, None if judge is batch else judge)
        assert int(metrics["cg_chosen"]) == expected[rule], (rule, losses)


@pytest.mark.parametrize("line_search", ["armijo", "decrease"])
def test_line_search_takes_the_largest_step_its_test_accepts_on_its_batch(line_search):
    # The kinked model at c = 8: the full Gauss–Newton step δ = 1 overshoots (ρ = −3).
    hf = HessianFree(_kinked_model, "squared_error", structural_damping=0.0, initial_damping=1e-6,
                     max_cg_iters=5, line_search=line_search)
    state = hf.init({"theta": jnp.zeros(1)})
    batch = (jnp.full((1, 1), 8.0), jnp.ones((1, 1)))
    searched = (jnp.full((1, 1), 8.0), jnp.full((1, 1), 0.9))  # its own batch: a target of 0.9
    _, metrics = hf.step(state, batch, None, None, searched)
    loss = lambda theta, data: float(hf.loss({"theta": jnp.array([theta])}, data))
    slope = -1.0  # gᵀδ with g = −1 (target 1 at θ = 0) and δ = 1
    accepts = {"armijo": lambda r: loss(r, searched) <= loss(0.0, searched) + 1e-2 * r * slope,
               "decrease": lambda r: loss(r, searched) < loss(0.0, searched)}[line_search]
    expected = next(0.8**i for i in range(61) if accepts(0.8**i))
    assert float(metrics["step_size"]) == pytest.approx(expected, rel=1e-5)


def test_a_rejected_decrease_search_restarts_cg_from_zero():
    # The line-search batch wants θ = −1, every step along δ = +1 raises its loss: step 0, and
    # the next warm start is 0 (the released code), where the Armijo variant keeps CG's iterate.
    batch = (jnp.zeros((1, 1)), jnp.ones((1, 1)))
    searched = (jnp.zeros((1, 1)), -jnp.ones((1, 1)))
    for line_search, warm in [("decrease", 0.0), ("armijo", 1.0)]:
        hf = HessianFree(_kinked_model, "squared_error", structural_damping=0.0, initial_damping=1e-6,
                         max_cg_iters=5, line_search=line_search)
        state, metrics = hf.step(hf.init({"theta": jnp.zeros(1)}), batch, None, None, searched)
        assert float(metrics["step_size"]) == 0.0 and float(state.params["theta"][0]) == 0.0
        assert float(state.opt_state.previous_solution["theta"][0]) == pytest.approx(warm, rel=1e-5)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def rnn_setup():
    """A tanh RNN on temporal order (T = 20, the class scored at the last step), HF with
    structural damping; one HessianFree object, so its step compiles once for the module."""
    calls = []

    def model_fn(p, xs):
        calls.append(1)  # runs only while jax traces
        _, hs = recurrax.rnn(p["rnn"], xs, fused_backward=False)
        return recurrax.dense(p["out"], hs), hs  # (B, T, 4) logits, (B, T, H) tanh states

    k1, k2 = jax.random.split(jax.random.key(1))
    params = {"rnn": recurrax.init_rnn(k1, "elman", 8, 8), "out": recurrax.init_dense(k2, 8, 4)}
    hf = HessianFree(model_fn, "softmax_cross_entropy", structural_damping=0.3, max_cg_iters=40,
                     curvature_batch_size=32)
    batch = lambda step: recurrax.tasks.temporal_order(jax.random.key(100 + step), 64, 20)
    return hf, params, batch, calls


def test_short_training_of_a_tanh_rnn_decreases_the_loss(rnn_setup):
    hf, params, batch, _ = rnn_setup
    state = hf.init(params, jax.random.key(0))
    losses = []
    for step in range(20):
        state, metrics = hf.step(state, batch(step))
        losses.append(float(metrics["loss"]))
        assert float(metrics["new_loss"]) <= losses[-1]
        assert 1 <= int(metrics["cg_iterations"]) <= 40
    # chance is log 4 = 1.39; measured: 1.55 -> 0.45, 0.22, 0.20 over the last three steps
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert int(state.step) == 20 and int(state.opt_state.cg_iterations) > 20
    chex.assert_trees_all_equal_dtypes(state.params, params)


def test_the_step_is_jitted_once_and_never_recompiles(rnn_setup):
    hf, params, batch, calls = rnn_setup
    state = hf.init(params)
    state, _ = hf.step(state, batch(0))
    traced = len(calls)
    state, _ = hf.step(state, batch(1))
    state, _ = hf.step(state, batch(2))
    assert len(calls) == traced and hf.step._cache_size() == 1


def test_fit_drives_hessian_free_and_checkpoints_its_state(rnn_setup, tmp_path):
    hf, params, batch, _ = rnn_setup
    result = recurrax.fit(hf.init(params), hf.step, batch, num_steps=3, progress=False,
                          checkpoint_dir=tmp_path)
    assert result.stopped is None and [r["step"] for r in result.history] == [1, 2, 3]
    assert recurrax.checkpoint_steps(tmp_path) == [3]
    restored = recurrax.restore_checkpoint(tmp_path, hf.init(params))
    chex.assert_trees_all_equal(restored, result.state)
    # resuming continues exactly: λ and the warm start come back with the params
    again, _ = hf.step(restored, batch(3))
    reference, _ = hf.step(result.state, batch(3))
    chex.assert_trees_all_close(again.params, reference.params)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "hinge"}, r"loss to be one of .*softmax_cross_entropy.* got 'hinge'"),
    ({"initial_damping": 0.0}, r"initial_damping .*> 0, got 0.0"),
    ({"initial_damping": -1.0}, r"initial_damping .*> 0, got -1.0"),
    ({"max_cg_iters": 0}, r"max_cg_iters > 0 \(an integer\), got 0"),
    ({"min_cg_iters": 0}, r"min_cg_iters > 0 \(an integer\), got 0"),
    ({"min_cg_iters": 20, "max_cg_iters": 10}, r"min_cg_iters <= max_cg_iters, got 20 > 10"),
    ({"structural_damping": -0.1}, r"structural_damping >= 0 \(μ\), got -0.1"),
    ({"hidden_loss": "relu"}, r"hidden_loss to be one of .*tanh.* got 'relu'"),
    ({"cg_decay": 1.5}, r"cg_decay in \[0, 1\], got 1.5"),
    ({"curvature_batch_size": 0}, r"curvature_batch_size > 0"),
    ({"l2": -1e-5}, r"l2 >= 0 \(weight decay\), got -1e-05"),
    ({"rho": "exact"}, r"rho to be one of \('undamped', 'damped'\).* got 'exact'"),
    ({"backtracking": "best"}, r"backtracking to be one of \('walk_back', 'minimum'\).* got 'best'"),
    ({"save_every": -1}, r"save_every >= 0 \(an integer; 0: the 1.3\^j schedule\), got -1"),
    ({"line_search": "wolfe"}, r"line_search to be one of \('armijo', 'decrease'\).* got 'wolfe'"),
])
def test_bad_configuration_raises(kwargs, match):
    kwargs = {"loss": "squared_error", **kwargs}
    with pytest.raises(ValueError, match=match):
        HessianFree(_linear_model, **kwargs)


def test_bad_batches_and_models_raise(key):
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    x = jnp.ones((5, 4))
    hf = HessianFree(_linear_model, "squared_error", structural_damping=0.0)
    with pytest.raises(ValueError, match=r"targets shaped like the outputs of shape \(5, 2\) .* got .*\(5, 3\)"):
        hf.step(hf.init(params), (x, jnp.ones((5, 3))))
    with pytest.raises(ValueError, match=r"weights of shape \(5,\) .* got \(4,\)"):
        hf.step(hf.init(params), (x, jnp.ones((5, 2)), jnp.ones(4)))
    with pytest.raises(ValueError, match=r"batch \(inputs, targets\) .* got an array of shape \(5, 4\)"):
        hf.step(hf.init(params), x)
    with pytest.raises(ValueError, match=r"needs the hidden states.*structural_damping=0 for"):
        damped = HessianFree(_linear_model, "squared_error")  # μ = 0.3 by default
        damped.step(damped.init(params), (x, jnp.ones((5, 2))))
    with pytest.raises(ValueError, match=r"integer classes of shape \(5,\)"):
        HessianFree(_linear_model, "softmax_cross_entropy").loss(params, (x, jnp.zeros((5, 3), jnp.int32)))
    with pytest.raises(ValueError, match=r"return \(outputs, hiddens\)"):
        bare = HessianFree(lambda p, x: x @ p["w"], "squared_error")
        bare.loss(params, (x, jnp.ones((5, 2))))
    with pytest.raises(ValueError, match=r"float leaves only, got int32"):
        hf.init({"w": jnp.zeros((4, 2)), "count": jnp.zeros((), jnp.int32)})
    with pytest.raises(TypeError, match=r"model_fn to be callable"):
        HessianFree("not a function", "squared_error")


def test_a_model_without_forward_mode_gets_a_clear_error(key):
    params = _rnn_params(key, jnp.float32)
    fused = lambda p, xs: (recurrax.rnn(p["rnn"], xs, fused_backward=True)[1], None)
    with pytest.raises(ValueError, match=r"cannot pass fused_backward=True.*kernel='scan', fused_backward=False"):
        HessianFree(fused, "squared_error").gauss_newton_product(
            params, (jnp.ones((B, T, D)), jnp.ones((B, T, H))), params)
