"""Reservoir cells and ``recurrax.esn`` against NumPy transcriptions, ``lstsq`` and Python loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax import esn, reservoir, timeseries


TOPOLOGIES = ["random", "circulant"]


def _numpy_run(params, xs, h0):
    """The leaky update x' = (1 − a) x + a tanh(W x + W_in u + b), a Python loop in float64."""
    w = reservoir.recurrent_matrix(params)
    w_x, b, a = (np.asarray(v, np.float64) for v in (params.w_x, params.b, params.leak_rate))
    h, out = np.asarray(h0, np.float64), []
    for t in range(xs.shape[-2]):
        h = (1 - a) * h + a * np.tanh(h @ w.T + np.asarray(xs[..., t, :], np.float64) @ w_x + b)
        out.append(h)
    return np.stack(out, axis=-2)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("radius", [0.5, 1.25, 3.0])
def test_spectral_radius_is_the_target(topology, radius, key):
    params = reservoir.init(key, 2, 60, spectral_radius=radius, topology=topology)
    eigenvalues = np.linalg.eigvals(reservoir.recurrent_matrix(params))
    assert np.max(np.abs(eigenvalues)) == pytest.approx(radius, rel=1e-6)
    rescaled = reservoir.with_spectral_radius(params, 0.7)
    assert np.max(np.abs(np.linalg.eigvals(reservoir.recurrent_matrix(rescaled)))) == pytest.approx(
        0.7, rel=1e-6
    )


def test_init_draws_reservoirpys_structure(key):
    h, d, f = 50, 3, 2
    params = reservoir.init(
        key,
        d,
        h,
        connectivity=0.2,
        input_connectivity=0.3,
        input_scaling=0.5,
        bias_scaling=0.25,
        feedback_size=f,
        feedback_scaling=2.0,
        feedback_connectivity=1.0,
    )
    w = reservoir.recurrent_matrix(params)
    assert np.count_nonzero(w) == round(0.2 * h * h)
    w_in, w_fb = np.asarray(params.w_x[:d]), np.asarray(params.w_x[d:])
    assert np.count_nonzero(w_in) == round(0.3 * d * h)
    assert set(np.unique(w_in)) <= {-0.5, 0.0, 0.5}
    assert set(np.unique(w_fb)) == {-2.0, 2.0}  # connectivity 1
    assert set(np.unique(np.asarray(params.b))) == {-0.25, 0.25}
    assert reservoir.external_input_size(params) == d and recurrax.cells.resolve_family("reservoir").input_size(params) == d + f
    circulant = reservoir.init(key, 1, h, connectivity=0.2, topology="circulant")
    k = len(circulant.layout.offsets)
    dense = reservoir.recurrent_matrix(circulant)
    assert circulant.w_h.shape == (h, k) == (h, 10)
    for i in (0, 17, h - 1):  # every unit reads from the same offsets
        assert sorted(np.nonzero(dense[i])[0].tolist()) == sorted(
            (i + o) % h for o in circulant.layout.offsets
        )


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_step_equals_numpy_transcription(topology, key):
    k_p, k_x, k_h = jax.random.split(key, 3)
    params = reservoir.init(
        k_p,
        2,
        12,
        spectral_radius=1.1,
        leak_rate=0.4,
        bias_scaling=0.3,
        input_connectivity=1.0,
        topology=topology,
    )
    xs = jax.random.normal(k_x, (2, 3, 9, 2))  # two batch axes
    h0 = 0.5 * jax.random.normal(k_h, (2, 3, 12))
    final, states = recurrax.unroll(
        functools.partial(reservoir.step, params), reservoir.ReservoirCarry(h0), xs
    )
    expected = _numpy_run(params, np.asarray(xs), np.asarray(h0))
    np.testing.assert_allclose(states, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.h, expected[..., -1, :], rtol=1e-5, atol=1e-6)


def test_feedback_enters_through_w_fb(key):
    params = reservoir.init(
        key, 1, 10, feedback_size=1, input_connectivity=1.0, feedback_connectivity=1.0
    )
    u = jax.random.normal(jax.random.key(1), (6, 1))
    y = jax.random.normal(jax.random.key(2), (6, 1))
    _, states = esn.collect_states(params, u, feedback=y)
    expected = _numpy_run(params, np.concatenate([np.asarray(u), np.asarray(y)], -1), np.zeros(10))
    np.testing.assert_allclose(states, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="feeds back 1 outputs; pass feedback"):
        esn.collect_states(params, u)


def test_reservoir_layers_run_in_rnn_and_stack(key):
    xs = jax.random.normal(jax.random.key(1), (3, 7, 2))
    layer = recurrax.init_rnn(
        key, "reservoir", 2, 8, spectral_radius=0.9, leak_rate=0.5, input_connectivity=1.0
    )
    assert layer.family.source is reservoir and layer.family == recurrax.cells.resolve_family("reservoir")
    assert (recurrax.layer_input_size(layer), recurrax.layer_output_size(layer)) == (2, 8)
    assert not layer.family.has_pointwise_split(layer.cell)
    _, hs = recurrax.rnn(layer, xs)
    np.testing.assert_allclose(
        hs, _numpy_run(layer.cell, np.asarray(xs), np.zeros((3, 8))), rtol=1e-5, atol=1e-6
    )
    params = recurrax.init_stack(
        key,
        2,
        [8, 6],
        cell=["reservoir", "gru"],
        cell_kwargs=[{"topology": "circulant", "connectivity": 0.25}, {}],
    )
    carries, ys = recurrax.stack(params, xs)
    assert ys.shape == (3, 7, 6)
    carry = recurrax.stack_initial_carries(params, (3,))
    stepped = []
    for t in range(7):
        carry, y = recurrax.stack_step(params, carry, xs[:, t])
        stepped.append(y)
    np.testing.assert_allclose(jnp.stack(stepped, 1), ys, rtol=1e-5, atol=1e-6)


def _lstsq_ridge(x, y, lam, fit_bias=True):
    """The regularised problem as augmented least squares, solved by ``np.linalg.lstsq``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_mean = x.mean(0) if fit_bias else np.zeros(x.shape[1])
    y_mean = y.mean(0) if fit_bias else np.zeros(y.shape[1])
    a = np.vstack([x - x_mean, np.sqrt(lam) * np.eye(x.shape[1])])
    b = np.vstack([y - y_mean, np.zeros((x.shape[1], y.shape[1]))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return w, y_mean - x_mean @ w


@pytest.mark.parametrize("fit_bias", [True, False])
def test_ridge_readout_equals_lstsq(fit_bias):
    rng = np.random.default_rng(0)
    states = rng.normal(size=(3, 40, 6)).astype(np.float32)
    inputs = rng.normal(size=(3, 40, 2)).astype(np.float32)
    targets = (states @ rng.normal(size=(6, 2)) + 0.1 * rng.normal(size=(3, 40, 2)) + 1.5).astype(
        np.float32
    )

    def rows(a):
        return a[:, 5:].reshape(-1, a.shape[-1])

    for lam in (1e-3, 0.5):
        readout = esn.ridge_readout(
            jnp.asarray(states), jnp.asarray(targets), ridge=lam, warmup=5, fit_bias=fit_bias
        )
        w, b = _lstsq_ridge(rows(states), rows(targets), lam, fit_bias)
        np.testing.assert_allclose(readout.w, w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(readout.b, b, rtol=1e-5, atol=1e-6)
    several = esn.ridge_readout(
        jnp.asarray(states),
        jnp.asarray(targets),
        ridge=[1e-3, 0.5, 10.0],
        warmup=5,
        inputs=jnp.asarray(inputs),
        fit_bias=fit_bias,
    )
    features = np.concatenate([inputs, states], -1)
    for index, lam in enumerate((1e-3, 0.5, 10.0)):
        w, b = _lstsq_ridge(rows(features), rows(targets), lam, fit_bias)
        np.testing.assert_allclose(several.w[index], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(several.b[index], b, rtol=1e-5, atol=1e-6)


def test_ridge_is_stable_where_float32_normal_equations_fail():
    # Polynomial features: cond(X) ≈ 6e4, so cond(XᵀX) ≈ 4e9 is beyond float32 (reservoirpy #238).
    t = np.linspace(0, 1, 200)
    x = np.stack([t**j for j in range(1, 8)], 1).astype(np.float32)
    y = (np.sin(3 * t) + 0.01 * np.cos(40 * t))[:, None].astype(np.float32)
    w_ref, _ = _lstsq_ridge(x, y, 1e-9)
    readout = esn.ridge_readout(jnp.asarray(x), jnp.asarray(y), ridge=1e-9)
    assert np.max(np.abs(np.asarray(readout.w, np.float64) - w_ref)) < 1e-5 * np.max(np.abs(w_ref))
    xc, yc = x - x.mean(0), y - y.mean(0)
    naive = np.linalg.solve(xc.T @ xc + np.float32(1e-9) * np.eye(7, dtype=np.float32), xc.T @ yc)
    assert np.max(np.abs(naive - w_ref)) > 1e-2 * np.max(np.abs(w_ref))


def _mackey_glass_split(length=700, test=200):
    series = timeseries.mackey_glass(length, method="reservoirpy")
    return timeseries.to_forecasting(series, test_size=test)


@pytest.mark.parametrize("input_to_readout", [True, False])
def test_fit_and_predict_follow_reservoirpys_protocol(input_to_readout, key):
    x_train, x_test, y_train, y_test = _mackey_glass_split()
    params = reservoir.init(key, 1, 40, spectral_radius=1.25, leak_rate=0.3)
    readout, carry = esn.fit(params, x_train, y_train, ridge=1e-5, warmup=100, input_to_readout=input_to_readout)
    _, predictions = esn.predict(params, readout, x_test, carry=carry)
    # The same by hand: one run over train + test from zeros (NumPy), ridge on the training
    # features ([u, x] or x) after the warm-up (lstsq), the readout applied to the test features.
    inputs = np.concatenate([x_train, x_test])
    states = _numpy_run(params, inputs, np.zeros(40))
    features = np.concatenate([inputs, states], axis=1) if input_to_readout else states
    w, b = _lstsq_ridge(features[100 : len(x_train)], y_train[100:], 1e-5)
    expected = features[len(x_train) :] @ w + b
    np.testing.assert_allclose(predictions, expected, atol=2e-4)
    assert esn.rmse(y_test, predictions) < 0.01
    assert esn.rsquare(y_test, predictions) > 0.99


def test_generate_feeds_outputs_back_as_inputs(key):
    x_train, _, y_train, _ = _mackey_glass_split()
    params = reservoir.init(key, 1, 30, spectral_radius=1.1, leak_rate=0.3)
    readout, carry = esn.fit(params, x_train, y_train, ridge=1e-3, warmup=50)  # readout on [u, x]
    final, generated = esn.generate(
        params, readout, 25, carry=carry, last_output=jnp.asarray(y_train[-1], jnp.float32)
    )
    c, y, loop = carry, jnp.asarray(y_train[-1], jnp.float32), []
    for _ in range(25):  # the free run as a Python loop over the cell's step and the readout
        c, h = reservoir.step(params, c, y)
        y = jnp.concatenate([y, h]) @ readout.w + readout.b  # the input u_t is y_{t-1}
        loop.append(y)
    loop = jnp.stack(loop)
    # Fed-back outputs amplify float32 round-off (fused in the scan, op by op in the loop).
    np.testing.assert_allclose(generated[:5], loop[:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(generated, loop, atol=2e-4)
    np.testing.assert_allclose(final.h, c.h, atol=2e-4)


def test_generate_with_inputs_returns_outputs_through_feedback(key):
    params = reservoir.init(key, 2, 12, feedback_size=1, feedback_connectivity=1.0)
    u = jax.random.normal(jax.random.key(1), (40, 2))
    y = jnp.sin(jnp.arange(40.0))[:, None]
    readout, carry = esn.fit(params, u[:30], y[:30], ridge=1e-3, input_to_readout=True)
    assert readout.w.shape == (14, 1)
    _, generated = esn.generate(params, readout, 10, carry=carry, last_output=y[29], inputs=u[30:])
    c, y_prev, loop = carry, y[29], []
    for t in range(30, 40):
        c, h = reservoir.step(params, c, jnp.concatenate([u[t], y_prev]))
        y_prev = jnp.concatenate([u[t], h]) @ readout.w + readout.b
        loop.append(y_prev)
    np.testing.assert_allclose(generated, jnp.stack(loop), rtol=1e-5, atol=1e-6)


def test_echo_state_check_separates_contracting_from_chaotic(key):
    u = jax.random.uniform(jax.random.key(1), (400, 1), minval=-1.0, maxval=1.0)
    contracting = reservoir.init(key, 1, 100, spectral_radius=0.9, leak_rate=1.0)
    chaotic = reservoir.init(key, 1, 100, spectral_radius=3.0, leak_rate=1.0)
    good = esn.echo_state_check(contracting, u, key=jax.random.key(2))
    bad = esn.echo_state_check(chaotic, u, key=jax.random.key(2))
    assert good.converged and good.ratio < 1e-5
    assert not bad.converged and bad.ratio > 0.1
    assert good.distances.shape == (401,)


def test_effective_spectral_radius_is_the_decay_rate_of_a_linear_leaky_reservoir(key):
    params = reservoir.init(key, 1, 40, spectral_radius=0.9, leak_rate=0.3, activation="identity")
    rho = esn.effective_spectral_radius(params)
    w = reservoir.recurrent_matrix(params)
    a = float(params.leak_rate)  # 0.3 in float32
    assert rho == pytest.approx(
        np.max(np.abs(np.linalg.eigvals((1 - a) * np.eye(40) + a * w))), rel=1e-12
    )
    # Independent: the growth rate of ‖x_t‖ with no input is ρ((1 − a) I + a W).
    _, states = esn.collect_states(
        params, jnp.zeros((600, 1)), carry=reservoir.ReservoirCarry(jnp.ones(40))
    )
    norms = np.linalg.norm(np.asarray(states, np.float64), axis=-1)
    assert (norms[-1] / norms[-201]) ** (1 / 200) == pytest.approx(rho, rel=5e-3)
    full = params._replace(leak_rate=jnp.asarray(1.0))
    assert esn.effective_spectral_radius(full) == pytest.approx(0.9, rel=1e-6)


def test_memory_capacity_of_a_delay_line():
    # x_t[j] = u_{t−j}: unit 0 takes the input, unit j copies unit j − 1. Delays 1..H−1 are
    # exactly recoverable (MC_k = 1), longer ones not at all (MC_k ≈ 0).
    h = 10
    params = recurrax.ReservoirParams(
        w_x=jnp.zeros((1, h)).at[0, 0].set(1.0),
        w_h=jnp.eye(h, k=-1),
        b=jnp.zeros(h),
        leak_rate=jnp.asarray(1.0),
        activation=recurrax.Activation("identity"),
        layout=reservoir.ReservoirLayout(),
    )
    mc = esn.memory_capacity(params, key=jax.random.key(0), max_delay=20, length=3000)
    np.testing.assert_allclose(mc.per_delay[: h - 1], 1.0, atol=1e-6)
    assert np.all(mc.per_delay[h - 1 :] < 0.02)
    assert mc.total == pytest.approx(h - 1, abs=0.15)


def test_sweep_grid_equals_settings_run_one_by_one():
    x_train, x_val, y_train, y_val = _mackey_glass_split(500, 100)
    keys = jax.random.split(jax.random.key(7), 2)
    radii, leaks, ridges = (0.8, 1.25), (0.3, 1.0), (1e-6, 1e-3)
    result = esn.sweep(
        keys,
        x_train,
        y_train,
        x_val,
        y_val,
        hidden_size=20,
        spectral_radii=radii,
        leak_rates=leaks,
        ridges=ridges,
        warmup=50,
    )
    assert result.errors.shape == (2, 2, 2, 2)
    for s, key in enumerate(keys):
        for r, radius in enumerate(radii):
            for j, leak in enumerate(leaks):
                params = reservoir.init(key, 1, 20, spectral_radius=radius, leak_rate=leak)
                for k, lam in enumerate(ridges):
                    readout, carry = esn.fit(params, x_train, y_train, ridge=lam, warmup=50)
                    _, predictions = esn.predict(params, readout, x_val, carry=carry)
                    # Equal up to float32 round-off of the states (a vmapped scan sums in another
                    # order), which the readout amplifies more at the smaller ridge.
                    tolerance = 5e-4 if lam < 1e-4 else 2e-5
                    assert result.errors[s, r, j, k] == pytest.approx(
                        esn.rmse(y_val, predictions), rel=tolerance
                    )
    best = result.best()
    assert best["rmse"] == pytest.approx(result.errors.mean(0).min())


def test_collect_states_does_not_recompile_for_new_params(key):
    xs = jnp.ones((20, 1))
    esn.collect_states(reservoir.init(key, 1, 16), xs)
    before = esn._run._cache_size()
    esn.collect_states(
        reservoir.init(jax.random.key(5), 1, 16, spectral_radius=0.3, leak_rate=0.2), xs
    )
    assert esn._run._cache_size() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spectral_radius": -0.5}, r"Expected spectral_radius in \[0, inf\), got -0.5"),
        ({"leak_rate": 0.0}, r"Expected leak_rate in \(0, 1\], got 0.0"),
        ({"leak_rate": 1.5}, r"Expected leak_rate in \(0, 1\], got 1.5"),
        ({"connectivity": 0.0}, r"Expected connectivity in \(0, 1\], got 0.0"),
        ({"connectivity": 1.2}, r"Expected connectivity in \(0, 1\], got 1.2"),
        ({"input_connectivity": -0.1}, r"Expected input_connectivity in \(0, 1\], got -0.1"),
        ({"input_scaling": float("nan")}, r"Expected input_scaling in \[0, inf\), got nan"),
        ({"topology": "ring"}, r"Expected topology in \['random', 'circulant'\], got 'ring'"),
        ({"feedback_size": -1}, "Expected feedback_size to be an integer >= 0, got -1"),
        ({"activation": "softplus"}, "Expected activation in"),
    ],
)
def test_bad_settings_raise(kwargs, message, key):
    with pytest.raises(ValueError, match=message):
        reservoir.init(key, 1, 10, **kwargs)


def test_bad_readout_settings_raise(key):
    params = reservoir.init(key, 1, 10)
    xs, ys = jnp.ones((30, 1)), jnp.ones((30, 1))
    with pytest.raises(ValueError, match=r"Expected ridge >= 0 \(the L2 penalty λ\), got -1e-05"):
        esn.fit(params, xs, ys, ridge=-1e-5)
    with pytest.raises(ValueError, match=r"Expected ridge >= 0"):
        esn.ridge_readout(jnp.ones((30, 10)), ys, ridge=[1e-3, -1.0])
    with pytest.raises(ValueError, match="Expected more time steps than warmup=30 .* got 30 steps"):
        esn.fit(params, xs, ys, ridge=1e-5, warmup=30)
    with pytest.raises(ValueError, match="Expected more time steps than warmup=100"):
        esn.ridge_readout(jnp.ones((50, 10)), jnp.ones((50, 1)), ridge=1e-5, warmup=100)
    with pytest.raises(ValueError, match=r"Expected inputs of shape \(\*batch, time, 1\)"):
        esn.fit(params, jnp.ones((30, 2)), ys, ridge=1e-5)
    with pytest.raises(ValueError, match=r"Expected leak_rate in \(0, 1\], got 2.0"):
        esn.sweep(
            [key],
            xs,
            ys,
            xs,
            ys,
            hidden_size=10,
            spectral_radii=[1.0],
            leak_rates=[2.0],
            ridges=[1e-5],
        )
    with pytest.raises(ValueError, match=r"Expected spectral_radius in \[0, inf\), got -1.0"):
        reservoir.with_spectral_radius(params, -1.0)
    with pytest.raises(ValueError, match="input size \\(1\\) must equal the output size \\(2\\)"):
        readout = esn.Readout(jnp.ones((10, 2)), jnp.zeros(2))
        esn.generate(
            params, readout, 5, carry=reservoir.initial_carry(params), last_output=jnp.zeros(2)
        )
