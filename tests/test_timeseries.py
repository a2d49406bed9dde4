"""``recurrax.timeseries`` against values written out here, independent integrators and loops."""

import numpy as np
import pytest

from recurrax import timeseries

# reservoirpy 0.4.2, ``reservoirpy.datasets.mackey_glass(2000)[i, 0]`` (its default seed 5555),
# printed with repr() and copied here.
RESERVOIRPY_MACKEY_GLASS = {
    0: 1.2,
    1: 1.13753884113329,
    2: 1.0616870347091791,
    17: 0.47702183520111513,
    100: 1.2965979311384965,
    500: 1.0057232176218298,
    1000: 0.8128575682575481,
    1999: 0.9487498037920479,
}


def test_mackey_glass_reservoirpy_method_matches_reservoirpys_values():
    series = timeseries.mackey_glass(2000, method="reservoirpy")
    assert series.shape == (2000, 1) and series.dtype == np.float64
    for index, value in RESERVOIRPY_MACKEY_GLASS.items():
        # The chaos amplifies a different order of floating-point operations to ~1e-10.
        assert series[index, 0] == pytest.approx(value, abs=1e-9 if index > 100 else 1e-14)


def test_mackey_glass_matches_reservoirpy_when_installed():
    datasets = pytest.importorskip("reservoirpy.datasets")
    ours = timeseries.mackey_glass(3000, method="reservoirpy", seed=42)
    np.testing.assert_allclose(ours, datasets.mackey_glass(3000, seed=42), atol=1e-8)


def _fine_rk4_reference(length, h, tau=17.0, a=0.2, b=0.1, n=10, x0=1.2):
    """Independent integrator: a Python loop of classical RK4 with a small step ``h`` and the
    delayed value at half steps interpolated linearly, constant history x0; samples at integers."""
    lag, steps = int(round(tau / h)), int(round((length - 1) / h))
    xs = np.empty(steps + 1)
    xs[0] = x0

    def past(j):
        return x0 if j < 0 else xs[j]

    def rate(x, d):
        return a * d / (1 + d**n) - b * x

    for i in range(steps):
        d0, d1 = past(i - lag), past(i - lag + 1)
        dm, x = 0.5 * (d0 + d1), xs[i]
        k1 = rate(x, d0)
        k2 = rate(x + h / 2 * k1, dm)
        k3 = rate(x + h / 2 * k2, dm)
        k4 = rate(x + h * k3, d1)
        xs[i + 1] = x + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    return xs[:: int(round(1 / h))]


def test_mackey_glass_rk4_matches_a_finer_independent_integration():
    reference = _fine_rk4_reference(300, h=1 / 40)
    ours = timeseries.mackey_glass(300, history=np.full(17, 1.2))[:, 0]
    # One RK4 step per sample (substeps=1) is 4e-3 off here: the tolerance separates them.
    np.testing.assert_allclose(ours, reference, atol=2e-4)
    coarse = timeseries.mackey_glass(300, history=np.full(17, 1.2), substeps=1)[:, 0]
    assert np.max(np.abs(coarse - reference)) > 1e-3


def test_mackey_glass_is_seedable_and_validates():
    np.testing.assert_array_equal(
        timeseries.mackey_glass(50, seed=1), timeseries.mackey_glass(50, seed=1)
    )
    assert not np.allclose(timeseries.mackey_glass(50, seed=1), timeseries.mackey_glass(50, seed=2))
    with pytest.raises(ValueError, match=r"Expected tau / dt to be an integer >= 2.*tau / dt = 34"):
        timeseries.mackey_glass(10, dt=0.5, tau=17.0 + 1e-3)
    with pytest.raises(ValueError, match="Expected method in"):
        timeseries.mackey_glass(10, method="euler")
    with pytest.raises(ValueError, match="one step per sample, got substeps=2"):
        timeseries.mackey_glass(10, method="reservoirpy", substeps=2)
    with pytest.raises(ValueError, match="history of at least tau / dt = 17 values, got 3"):
        timeseries.mackey_glass(10, history=np.ones(3))
    with pytest.raises(ValueError, match="length to be a positive integer"):
        timeseries.mackey_glass(0)


def test_lorenz_matches_scipy_dop853():
    integrate = pytest.importorskip("scipy.integrate")

    def rate(t, s):
        x, y, z = s
        return [10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z]

    times = 0.03 * np.arange(100)
    solution = integrate.solve_ivp(
        rate,
        (0.0, times[-1]),
        [1.0, 1.0, 1.0],
        method="DOP853",
        t_eval=times,
        rtol=1e-12,
        atol=1e-12,
    )
    # Fourth order: 10 steps per sample are 6e-6 off, 100 steps 6e-10 off.
    np.testing.assert_allclose(timeseries.lorenz(100), solution.y.T, rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        timeseries.lorenz(100, substeps=100), solution.y.T, rtol=0, atol=5e-9
    )


def test_narma_matches_the_recursion_written_as_a_loop():
    u, y = timeseries.narma(300, seed=3)
    assert u.shape == y.shape == (300, 1)
    assert 0.0 <= u.min() and u.max() <= 0.5
    u, expected = u[:, 0], np.zeros(301)  # expected[t] = y(t), y(0) = 0
    for t in range(300):
        window = expected[max(0, t - 9) : t + 1]
        u_lag = u[t - 9] if t >= 9 else 0.0
        expected[t + 1] = (
            0.3 * expected[t] + 0.05 * expected[t] * window.sum() + 1.5 * u_lag * u[t] + 0.1
        )
    np.testing.assert_allclose(y[:, 0], expected[1:], rtol=1e-12)
    np.testing.assert_array_equal(timeseries.narma(50, seed=3)[0], timeseries.narma(50, seed=3)[0])
    with pytest.raises(ValueError, match="Expected 5 inputs"):
        timeseries.narma(5, inputs=np.ones(4))


def test_to_forecasting_is_reservoirpys_split():
    series = np.arange(2000.0)[:, None]
    x_train, x_test, y_train, y_test = timeseries.to_forecasting(series, test_size=0.2)
    # 1999 pairs, round(0.2 · 1999) = 400 to test (reservoirpy's README split).
    assert (x_train.shape, x_test.shape) == ((1599, 1), (400, 1))
    np.testing.assert_array_equal(y_train[:, 0], x_train[:, 0] + 1)
    assert (x_test[0, 0], y_test[-1, 0]) == (1599.0, 1999.0)
    x, y = timeseries.to_forecasting(series, forecast=5)
    np.testing.assert_array_equal(y - x, 5.0)
    with pytest.raises(ValueError, match=r"test_size as a fraction in \[0, 1\)"):
        timeseries.to_forecasting(series, test_size=1.5)
    with pytest.raises(ValueError, match=r"shape \(time, features\)"):
        timeseries.to_forecasting(np.arange(5.0))
