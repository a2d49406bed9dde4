"""``recurrax.gradient_flow`` against dense ``jax.jacrev``, matrix powers, the σ₁γ bound and NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cell_cases import CASES, INPUT_SIZE

import recurrax
from recurrax import gradient_flow as gf

T = 7


def _trajectory(case, key):
    k_p, k_c, k_x = jax.random.split(key, 3)
    params = case.init(k_p)
    carry = case.random_carry(k_c, params, ())
    xs = jax.random.normal(k_x, (T, INPUT_SIZE))
    return params, functools.partial(case.module.step, params), carry, xs


def _dense_lag_jacobian(step, carry, xs, lag):
    """∂c_T/∂c_{T-lag} by jacrev of a Python loop over the last ``lag`` steps."""
    for t in range(T - lag):
        carry, _ = step(carry, xs[t])
    flat, unravel = jax.flatten_util.ravel_pytree(carry)

    def last_steps(flat):
        c = unravel(flat)
        for t in range(T - lag, T):
            c, _ = step(c, xs[t])
        return jax.flatten_util.ravel_pytree(c)[0]

    return jax.jacrev(last_steps)(flat)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lag_norms_equal_dense_jacrev(case, key):
    params, step, carry, xs = _trajectory(case, key)
    jacobians = gf.carry_jacobians(step, carry, xs)
    norms = gf.lag_norms(jacobians)
    for lag in range(1, T + 1):
        dense = _dense_lag_jacobian(step, carry, xs, lag)
        np.testing.assert_allclose(norms[lag - 1], np.linalg.norm(np.asarray(dense, np.float64), 2), rtol=2e-5)
    if "h" in type(carry)._fields and len(type(carry)._fields) > 1:  # LSTM: the h -> h block
        h = gf.field_slice(carry, "h")
        block = gf.lag_norms(jacobians, block=(h, h))
        dense = _dense_lag_jacobian(step, carry, xs, 3)[h, h]
        np.testing.assert_allclose(block[2], np.linalg.norm(np.asarray(dense, np.float64), 2), rtol=2e-5)


@pytest.mark.parametrize("shape, scale", [((9, 9), 1.0), ((7, 4), 1.0), ((3, 8), 1.0), ((1, 5), 1.0), ((5, 1), 1.0),
                                          ((6, 6), 1e-25), ((6, 6), 1e25), ((4, 4), 0.0)])
def test_spectral_norm_equals_numpys_svd_at_every_scale(shape, scale):
    # The Gram matrix of an unscaled 1e-25 product would underflow in float32 (1e-50).
    matrix = scale * np.random.default_rng(sum(shape)).standard_normal(shape)
    with jax.enable_x64(False):
        norm = float(jax.jit(gf.spectral_norm)(jnp.asarray(matrix, jnp.float32)))
    expected = np.linalg.norm(matrix, 2)
    assert norm == pytest.approx(expected, rel=2e-6, abs=0)


def test_lag_norms_of_a_batch_by_vmap_equal_one_sequence_at_a_time(key):
    params = recurrax.lstm.init(key, 3, 6)
    step, carry = functools.partial(recurrax.lstm.step, params), recurrax.lstm.initial_carry(params)
    xs = jax.random.normal(jax.random.key(1), (4, T, 3))
    batched = jax.jit(jax.vmap(lambda x: gf.lag_norms(gf.carry_jacobians(step, carry, x), block="c", carry=carry)))(xs)
    for x, norms in zip(xs, batched):
        np.testing.assert_allclose(norms, gf.lag_norms(gf.carry_jacobians(step, carry, x), block="c", carry=carry),
                                   rtol=1e-6)


def test_linear_rnn_products_are_matrix_powers(key):
    params = recurrax.elman.init(key, 3, 5, activation="identity", recurrent_init="lecun_normal")
    xs = jax.random.normal(jax.random.key(1), (9, 3))
    jacobians = gf.carry_jacobians(functools.partial(recurrax.elman.step, params), recurrax.elman.initial_carry(params), xs)
    w_t = np.asarray(params.w_h, np.float64).T
    np.testing.assert_allclose(jacobians, np.broadcast_to(w_t, (9, 5, 5)), rtol=1e-6, atol=1e-7)
    expected = [np.linalg.norm(np.linalg.matrix_power(w_t, lag), 2) for lag in range(1, 10)]
    np.testing.assert_allclose(gf.lag_norms(jacobians), expected, rtol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("seed", range(3))
def test_norms_respect_the_sigma1_gamma_bound(activation, seed):
    # Random (non-normal) kernels of several scales, inputs large enough to leave the linear regime.
    key = jax.random.key(seed)
    for scale in (0.5, 1.0, 3.0):
        params = recurrax.elman.init(key, 4, 6, activation=activation, recurrent_init="lecun_normal")
        params = params._replace(w_h=scale * params.w_h, b=jax.random.normal(jax.random.fold_in(key, 1), (6,)))
        xs = 2.0 * jax.random.normal(jax.random.fold_in(key, 2), (25, 4))
        carry = recurrax.elman.ElmanCarry(jax.random.uniform(jax.random.fold_in(key, 3), (6,)))
        norms = gf.lag_norms(gf.carry_jacobians(functools.partial(recurrax.elman.step, params), carry, xs))
        sigma1 = gf.spectrum(params.w_h).sigma1
        bound = gf.bound(np.arange(1, 26), sigma1 * gf.activation_gamma(params))
        assert np.all(np.asarray(norms, np.float64) <= bound * (1 + 1e-5))


def test_state_gradient_norms_equal_per_step_autodiff(key):
    case = next(c for c in CASES if c.id == "lstm-peephole")
    params, step, carry, xs = _trajectory(case, key)
    readout = jax.random.normal(jax.random.key(5), (4,))

    def loss_fn(ys, final):
        return jnp.sum(ys[-1] * readout) + jnp.sum(final.c**2)

    norms = gf.state_gradient_norms(step, carry, xs, loss_fn)
    c = carry
    for k in range(T):
        def from_k(c_k, k=k):
            ys, c = [], c_k
            for t in range(k, T):
                c, y = step(c, xs[t])
                ys.append(y)
            return loss_fn(jnp.stack(ys), c)

        grad = jax.flatten_util.ravel_pytree(jax.grad(from_k)(c))[0]
        np.testing.assert_allclose(norms[k], np.linalg.norm(grad), rtol=1e-5)
        c, _ = step(c, xs[k])


def test_lstm_cell_state_block_is_the_forget_gate(key):
    params = recurrax.lstm.init(key, 3, 4)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    carry = recurrax.lstm.initial_carry(params)
    block = gf.carry_block(gf.carry_jacobians(functools.partial(recurrax.lstm.step, params), carry, xs), carry, "c")
    _, _, carries = recurrax.unroll(functools.partial(recurrax.lstm.step, params), carry, xs, return_carries=True)
    h_before = np.concatenate([np.zeros((1, 4)), np.asarray(carries.h[:-1])])
    z = np.asarray(xs) @ np.asarray(params.w_x) + h_before @ np.asarray(params.w_h) + np.asarray(params.b)
    forget = 1 / (1 + np.exp(-z[:, 4:8]))
    np.testing.assert_allclose(block, np.stack([np.diag(f) for f in forget]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"Expected a carry field among \('h', 'c'\), got 'x'"):
        gf.carry_block(block, carry, "x")


def test_lag_norms_of_named_carry_blocks_equal_explicit_slices(key):
    hidden = 4
    params = recurrax.lstm.init(key, 3, hidden)
    xs = jax.random.normal(jax.random.key(1), (6, 3))
    carry = recurrax.lstm.initial_carry(params)
    jacobians = gf.carry_jacobians(functools.partial(recurrax.lstm.step, params), carry, xs)
    h, c = slice(0, hidden), slice(hidden, 2 * hidden)  # LSTMCarry(h, c), flattened in field order
    assert gf.field_slice(carry, "h") == h and gf.field_slice(carry, "c") == c
    products, product = [], np.eye(2 * hidden)  # reference: J_{T-1} ··· J_{T-lag} in float64 NumPy
    for jacobian in np.asarray(jacobians, np.float64)[::-1]:
        product = product @ jacobian
        products.append(product)
    for block, (rows, cols) in [("c", (c, c)), ("h", (h, h)), (("c", "h"), (c, h)), (("h", "c"), (h, c))]:
        named = gf.lag_norms(jacobians, block=block, carry=carry)
        np.testing.assert_array_equal(named, gf.lag_norms(jacobians, block=(rows, cols)))
        np.testing.assert_allclose(named, [np.linalg.norm(p[rows, cols], 2) for p in products], rtol=1e-5)
    with pytest.raises(ValueError, match=r"Expected a carry field among \('h', 'c'\), got 'x'"):
        gf.lag_norms(jacobians, block=("c", "x"), carry=carry)
    with pytest.raises(ValueError, match=r"Naming carry fields \(block='c'\) needs the carry: pass carry="):
        gf.lag_norms(jacobians, block="c")
    with pytest.raises(ValueError, match=r"Expected block to be a carry field name, .* got \(0, 4\)"):
        gf.lag_norms(jacobians, block=(0, 4), carry=carry)


def test_lyapunov_exponents_of_a_constant_map_are_log_eigenvalue_moduli():
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0] + 0.3 * np.eye(3)
    a = q @ np.diag([2.0, -0.5, 0.1]) @ np.linalg.inv(q)
    exponents = gf.lyapunov_exponents(jnp.asarray(np.broadcast_to(a, (400, 3, 3)), jnp.float32))
    np.testing.assert_allclose(exponents, np.log([2.0, 0.5, 0.1]), atol=2e-2)
    assert gf.lyapunov_exponents(jnp.asarray(np.broadcast_to(a, (400, 3, 3)), jnp.float32), num=1).shape == (1,)
    with pytest.raises(ValueError, match="Expected num <= N = 3, got 4"):
        gf.lyapunov_exponents(jnp.ones((2, 3, 3)), num=4)


def test_spectra_bound_and_decay_rate():
    w = jnp.array([[0.0, 2.0], [0.5, 0.0]])  # non-normal: λ₁ = 1 < σ₁ = 2
    s = gf.spectrum(w)
    assert s.spectral_radius == pytest.approx(1.0) and s.sigma1 == pytest.approx(2.0)
    assert np.abs(s.eigenvalues).tolist() == pytest.approx([1.0, 1.0])
    lstm = recurrax.lstm.init(jax.random.key(0), 2, 3)
    spectra = gf.recurrent_spectrum(lstm, "lstm")
    assert list(spectra) == ["i", "f", "g", "o"]
    assert spectra["f"].sigma1 == pytest.approx(np.linalg.norm(np.asarray(lstm.w_h[:, 3:6], np.float64), 2))
    with pytest.raises(ValueError, match="γ is defined for Elman cells"):
        gf.activation_gamma(lstm)
    for topology in ("random", "circulant"):  # a reservoir's W, in either storage
        reservoir = recurrax.reservoir.init(jax.random.key(1), 1, 30, spectral_radius=0.9, topology=topology)
        assert gf.recurrent_spectrum(reservoir, "reservoir")["h"].spectral_radius == pytest.approx(0.9, rel=1e-6)
    np.testing.assert_allclose(gf.bound([1, 2, 3], 0.5), [0.5, 0.25, 0.125])
    assert gf.decay_rate(0.7 ** np.arange(1, 20)) == pytest.approx(np.log(0.7))
    assert gf.decay_rate(np.r_[5.0, 0.9 ** np.arange(2, 20), 0.0], skip=1) == pytest.approx(np.log(0.9))
    with pytest.raises(ValueError, match="at least two positive finite norms"):
        gf.decay_rate([1.0, 0.0, np.nan])
    with pytest.raises(ValueError, match=r"Expected one sequence xs of shape \(T, D\)"):
        gf.carry_jacobians(functools.partial(recurrax.lstm.step, lstm), recurrax.lstm.initial_carry(lstm), jnp.ones((2, 4, 2)))


def test_tracker_records_spectrum_and_slope_during_fit():
    params = {"cell": recurrax.elman.init(jax.random.key(0), 2, 5, spectral_radius=1.5)}
    xs = jax.random.normal(jax.random.key(1), (12, 2))
    carry = recurrax.elman.initial_carry(params["cell"])

    def step_of(p):
        return functools.partial(recurrax.elman.step, p["cell"])

    track = gf.tracker(lambda p: p["cell"], step_of, carry, xs, cell="elman")
    first = track(params)
    assert first["spectral_radius"] == pytest.approx(1.5, rel=1e-5)
    assert first["lag_slope"] == pytest.approx(gf.decay_rate(gf.lag_norms(gf.carry_jacobians(step_of(params), carry, xs))))

    def loss(p, batch, key):  # shrink the kernel: the spectral radius must fall
        return jnp.sum(p["cell"].w_h ** 2)

    with jax.numpy_dtype_promotion("standard"):
        optimizer = optax.sgd(0.05)
        state = recurrax.init_train_state(params, optimizer, jax.random.key(2))
        result = recurrax.fit(state, recurrax.make_train_step(loss, optimizer), [None] * 4, eval_fn=track,
                              eval_every=2, progress=False)
    evals = [r for r in result.history if "eval_spectral_radius" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert evals[-1]["eval_spectral_radius"] == pytest.approx(1.5 * 0.9**4, rel=1e-4)
