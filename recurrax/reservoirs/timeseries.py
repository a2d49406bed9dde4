"""Benchmark time series for reservoirs, generated in code: Mackey–Glass, Lorenz, NARMA.

Every generator integrates in float64 (inside ``jax.enable_x64``, through ``recurrax.unroll``,
the library's one time loop) and returns float64 NumPy arrays of shape ``(length, features)``:
the series are chaotic, so float32 round-off would grow into visibly different data within a
few thousand steps, and an experiment compared with another library needs the same data.
Randomness comes from a NumPy ``seed`` so that the defaults reproduce reservoirpy's series.

- ``mackey_glass``: the delay equation (Mackey & Glass 1977), τ = 17, sampled every ``dt``;
- ``lorenz``: the Lorenz (1963) system, classical RK4;
- ``narma``: the NARMA-10 input–output task (Atiya & Parlos 2000);
- ``to_forecasting``: reservoirpy's one-step-ahead split into train and test parts.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_positive_int
from recurrax._unroll import unroll

__all__ = ["mackey_glass", "lorenz", "narma", "to_forecasting"]

MACKEY_GLASS_METHODS = ("rk4", "reservoirpy")


def _check_real(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Expected {name} to be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(
            f"Expected {name} to be a {'positive ' if positive else ''}finite number, got "
            f"{value!r}."
        )
    return value


def _mg_rate(x, delayed, a, b, n):
    """dx/dt = a x(t−τ) / (1 + x(t−τ)^n) − b x(t)."""
    return a * delayed / (1 + delayed**n) - b * x


@functools.partial(jax.jit, static_argnames=("length", "method", "n", "substeps"))
def _mackey_glass_scan(buffer, *, length, method, a, b, n, h, substeps):
    """Integrate from ``buffer`` = ``(x_{-M-1}, …, x_{-1}, x_0)`` on the step-``h`` grid
    (M = τ/h); returns every ``substeps``-th value ``x_0, x_s, …`` (``length`` of them)."""

    def rk_step(buf):
        x = buf[-1]
        if method == "reservoirpy":
            # reservoirpy 0.4's ``_mg_rk4``, transcribed: the delayed term is held at x(t − τ)
            # over the step and the stages are its own (not the classical RK4 ones).
            delayed = buf[1]
            bh = -b * h
            k1 = bh * x + a * delayed / (1 + delayed**n)
            k2 = 2 * k1 + bh * k1
            k3 = 2 * k1 + bh * k2
            k4 = k1 + bh * k3
            new = x + (k1 + k2 + k3 + k4) / 6
        else:
            # Classical RK4; x(t − τ + h/2) by the cubic through the four nearest grid values,
            # fourth-order like the rest of the step.
            d0, d1 = buf[1], buf[2]
            dmid = (-buf[0] + 9 * buf[1] + 9 * buf[2] - buf[3]) / 16
            k1 = _mg_rate(x, d0, a, b, n)
            k2 = _mg_rate(x + 0.5 * h * k1, dmid, a, b, n)
            k3 = _mg_rate(x + 0.5 * h * k2, dmid, a, b, n)
            k4 = _mg_rate(x + h * k3, d1, a, b, n)
            new = x + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        return jnp.concatenate([buf[1:], new[None]])

    def step(buf, _):
        sample = buf[-1]
        if substeps > 1:  # the integration steps of one sample, an inner scan
            buf, _ = unroll(
                lambda b, _: (rk_step(b), None), buf, None, length=substeps, time_major=True
            )
        else:
            buf = rk_step(buf)
        return buf, sample

    _, xs = unroll(step, buffer, None, length=length, time_major=True)
    return xs


def mackey_glass(
    length: int,
    *,
    tau: float = 17.0,
    a: float = 0.2,
    b: float = 0.1,
    n: int = 10,
    x0: float = 1.2,
    dt: float = 1.0,
    substeps: Optional[int] = None,
    seed: int = 5555,
    history: Optional[np.ndarray] = None,
    method: str = "rk4",
) -> np.ndarray:
    """The Mackey–Glass series ``dx/dt = a x(t−τ)/(1 + x(t−τ)^n) − b x(t)``, sampled every ``dt``.

    The standard chaotic setting (Mackey & Glass 1977; the ESN benchmark of Jaeger & Haas 2004)
    is τ = 17, a = 0.2, b = 0.1, n = 10. With m = τ/dt (an integer), the series starts at
    ``x[0] = x0`` after a history ``x[-m..-1]`` drawn as reservoirpy does:
    ``x0 + 0.2 (U − 0.5)``, ``U = numpy.random.default_rng(seed).random(m)``. No normalisation
    is applied (reservoirpy's README uses the raw series, values in about [0.4, 1.35]).

    Discretisations (``method``):

    - ``"rk4"`` (default): classical fourth-order Runge–Kutta with step ``h = dt / substeps``
      (default 10 steps per sample, h = 0.1: the samples then agree with a 20-times finer
      integration to about 1e-5, where a step of 1 was 4e-3 off within 100 samples). The
      delayed value at a half step is the cubic ``(−x_{j−1} + 9x_j + 9x_{j+1} − x_{j+2})/16``;
      between the history's samples the history is linear (and constant before its first).
    - ``"reservoirpy"``: reservoirpy 0.4's update (one step per sample), which holds ``x(t−τ)``
      fixed over the step and combines its own stages (``k2 = (2 − b·dt) k1``, …); with the
      defaults it reproduces ``reservoirpy.datasets.mackey_glass(length)`` (to round-off, about
      1e-10 after 2000 steps, as the chaos amplifies the different order of floating-point
      operations). Use it to compare with reservoirpy results on the same data.

    Args:
      length: number of samples.
      tau, a, b, n: the equation's parameters (``n`` a positive integer).
      x0: the value at t = 0.
      dt: the sampling interval; ``tau / dt`` must be an integer (the delay in samples).
      substeps: integration steps per sample (``"rk4"`` only; default 10).
      seed: NumPy seed of the random history (5555 is reservoirpy's default).
      history: the ``m`` past samples ``x[-m..-1]`` instead of a random history (the last ``m``
        entries are used).
      method: ``"rk4"`` or ``"reservoirpy"``.

    Returns:
      float64 array ``(length, 1)``.

    >>> series = mackey_glass(500)
    >>> series.shape, round(float(series[0, 0]), 2), bool(0.2 < series.min() < series.max() < 1.5)
    ((500, 1), 1.2, True)

    References: M. C. Mackey and L. Glass, "Oscillation and chaos in physiological control
    systems", Science 197 (1977); H. Jaeger and H. Haas, "Harnessing nonlinearity", Science 304
    (2004).
    """
    length = check_positive_int(length, "length")
    if method not in MACKEY_GLASS_METHODS:
        raise ValueError(f"Expected method in {list(MACKEY_GLASS_METHODS)}, got {method!r}.")
    if substeps is None:
        substeps = 10 if method == "rk4" else 1
    substeps = check_positive_int(substeps, "substeps")
    if method == "reservoirpy" and substeps != 1:
        raise ValueError(
            f"The reservoirpy discretisation takes one step per sample, got substeps={substeps}."
        )
    tau = _check_real(tau, "tau", positive=True)
    dt = _check_real(dt, "dt", positive=True)
    a, b, x0 = _check_real(a, "a"), _check_real(b, "b"), _check_real(x0, "x0")
    n = check_positive_int(n, "n")
    ratio = tau / dt
    m = round(ratio)
    if abs(ratio - m) > 1e-9 * max(1.0, ratio) or m < 2:
        raise ValueError(
            f"Expected tau / dt to be an integer >= 2 (the delay in samples), got tau={tau}, "
            f"dt={dt} (tau / dt = {ratio:g})."
        )
    if history is None:
        past = x0 + 0.2 * (np.random.default_rng(seed).random(m) - 0.5)
    else:
        past = np.asarray(history, np.float64).reshape(-1)
        if past.size < m:
            raise ValueError(
                f"Expected a history of at least tau / dt = {m} values, got {past.size}."
            )
        past = past[-m:]
    # x on the integration grid j = -M-1 .. 0 (M = m · substeps): the history's samples sit at
    # j = -M, -M + substeps, ..., and x0 at j = 0; linear in between, constant before.
    grid = np.arange(-m * substeps - 1, 1)
    buffer = np.interp(grid, np.arange(-m, 1) * substeps, np.append(past, x0))
    with jax.enable_x64(True):
        xs = _mackey_glass_scan(
            jnp.asarray(buffer),
            length=length,
            method=method,
            a=a,
            b=b,
            n=n,
            h=dt / substeps,
            substeps=substeps,
        )
        return np.asarray(xs, np.float64).reshape(length, 1)


@functools.partial(jax.jit, static_argnames=("length", "substeps"))
def _lorenz_scan(state, *, length, substeps, sigma, rho, beta, h):
    def rate(s):
        x, y, z = s[0], s[1], s[2]
        return jnp.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    def rk4(s):
        k1 = rate(s)
        k2 = rate(s + 0.5 * h * k1)
        k3 = rate(s + 0.5 * h * k2)
        k4 = rate(s + h * k3)
        return s + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6

    def step(s, _):
        new, _ = unroll(lambda c, _: (rk4(c), None), s, None, length=substeps, time_major=True)
        return new, s

    _, states = unroll(step, state, None, length=length, time_major=True)
    return states


def lorenz(
    length: int,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    x0: tuple[float, float, float] = (1.0, 1.0, 1.0),
    dt: float = 0.03,
    substeps: int = 10,
) -> np.ndarray:
    """The Lorenz (1963) system sampled every ``dt``, integrated with classical RK4.

        dx/dt = σ (y − x),   dy/dt = x (ρ − z) − y,   dz/dt = x y − β z

    Defaults: the chaotic σ = 10, ρ = 28, β = 8/3, started at (1, 1, 1) and sampled every 0.03
    time units (reservoirpy's defaults; it integrates with SciPy's adaptive RK45). Here the step
    is fixed, ``dt / substeps`` = 0.003: over the first 3 time units the samples agree with
    SciPy's DOP853 at tolerance 1e-12 to 6e-6, and the error falls as step⁴ (``substeps=100``:
    6e-10). The generator is deterministic; vary ``x0`` for other trajectories.

    Returns:
      float64 array ``(length, 3)`` of (x, y, z), the first row ``x0``.

    >>> lorenz(4).shape
    (4, 3)

    Reference: E. N. Lorenz, "Deterministic nonperiodic flow", J. Atmos. Sci. 20 (1963).
    """
    length = check_positive_int(length, "length")
    substeps = check_positive_int(substeps, "substeps")
    dt = _check_real(dt, "dt", positive=True)
    sigma, rho, beta = (
        _check_real(sigma, "sigma"),
        _check_real(rho, "rho"),
        _check_real(beta, "beta"),
    )
    state = np.asarray(x0, np.float64)
    if state.shape != (3,):
        raise ValueError(f"Expected x0 with 3 values (x, y, z), got shape {state.shape}.")
    with jax.enable_x64(True):
        states = _lorenz_scan(
            jnp.asarray(state),
            length=length,
            substeps=substeps,
            sigma=sigma,
            rho=rho,
            beta=beta,
            h=dt / substeps,
        )
        return np.asarray(states, np.float64)


@functools.partial(jax.jit, static_argnames=("order",))
def _narma_scan(u, *, order, a1, a2, b, c):
    def step(carry, u_t):
        ys, us = carry  # the last `order` outputs and inputs, newest last
        us = jnp.concatenate([us[1:], u_t])
        y_next = a1 * ys[-1] + a2 * ys[-1] * jnp.sum(ys) + b * us[0] * us[-1] + c
        return (jnp.concatenate([ys[1:], y_next[None]]), us), y_next

    zeros = jnp.zeros((order,), u.dtype)
    _, ys = unroll(step, (zeros, zeros), u, time_major=True)
    return ys


def narma(
    length: int,
    *,
    order: int = 10,
    a1: float = 0.3,
    a2: float = 0.05,
    b: float = 1.5,
    c: float = 0.1,
    seed: int = 0,
    inputs: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The NARMA task (Atiya & Parlos 2000): inputs ``u`` and targets ``y``; NARMA-10 by default.

        y(t+1) = a1 y(t) + a2 y(t) Σ_{i=0}^{order−1} y(t−i) + b u(t−order+1) u(t) + c

    with u(t) i.i.d. uniform in [0, 0.5], y(t) = 0 for t ≤ 0 and u(t) = 0 for t < 0. The returned
    ``y[t]`` is the recursion's y(t+1): it depends on ``u[0..t]``, so it is the target at step
    ``t`` of a reservoir driven by ``u``. (reservoirpy's ``narma`` defaults to order 30 and sums
    ``y(t−order..t−1)``, one step off this, the standard form of Jaeger 2003.)

    Args:
      length: number of steps.
      order: the memory of the system (10 for NARMA-10).
      a1, a2, b, c: coefficients (the standard 0.3, 0.05, 1.5, 0.1).
      seed: NumPy seed of the inputs.
      inputs: ``(length,)`` or ``(length, 1)`` inputs instead of random ones.

    Returns:
      ``(u, y)``, float64 arrays of shape ``(length, 1)``.

    >>> u, y = narma(200)
    >>> u.shape, y.shape, bool(0.0 <= u.min() and u.max() <= 0.5)
    ((200, 1), (200, 1), True)

    References: A. F. Atiya and A. G. Parlos, IEEE Trans. Neural Networks 11 (2000); H. Jaeger,
    "Adaptive nonlinear system identification with echo state networks", NIPS 15 (2003).
    """
    length = check_positive_int(length, "length")
    order = check_positive_int(order, "order")
    a1, a2, b, c = (
        _check_real(v, name) for v, name in ((a1, "a1"), (a2, "a2"), (b, "b"), (c, "c"))
    )
    if inputs is None:
        u = np.random.default_rng(seed).uniform(0.0, 0.5, size=length)
    else:
        u = np.asarray(inputs, np.float64).reshape(-1)
        if u.size != length:
            raise ValueError(f"Expected {length} inputs (length), got {u.size}.")
    with jax.enable_x64(True):
        ys = _narma_scan(jnp.asarray(u)[:, None], order=order, a1=a1, a2=a2, b=b, c=c)
        y = np.asarray(ys, np.float64).reshape(length, 1)
    return u.reshape(length, 1), y


def to_forecasting(
    series: np.ndarray, *, forecast: int = 1, test_size: Union[int, float, None] = None
) -> tuple[np.ndarray, ...]:
    """Inputs ``series[t]`` and targets ``series[t + forecast]``, split as reservoirpy does.

    ``test_size`` is a number of steps, or a fraction of the ``T − forecast`` pairs rounded to the
    nearest integer (``round``, as ``reservoirpy.datasets.to_forecasting``); the test part is the
    last one. Returns ``(x, y)``, or ``(x_train, x_test, y_train, y_test)`` with a test size.

    >>> x_train, x_test, y_train, y_test = to_forecasting(np.arange(10.0)[:, None], test_size=0.2)
    >>> x_train.shape, x_test[:, 0].tolist(), y_test[:, 0].tolist()
    ((7, 1), [7.0, 8.0], [8.0, 9.0])
    """
    series = np.asarray(series)
    if series.ndim != 2:
        raise ValueError(f"Expected a series of shape (time, features), got shape {series.shape}.")
    forecast = check_positive_int(forecast, "forecast")
    pairs = series.shape[0] - forecast
    if pairs < 1:
        raise ValueError(
            f"Expected more than forecast={forecast} steps, got a series of {series.shape[0]}."
        )
    x, y = series[:-forecast], series[forecast:]
    if test_size is None:
        return x, y
    if isinstance(test_size, float) and 0.0 <= test_size < 1.0:
        test = round(pairs * test_size)
    elif (
        isinstance(test_size, (int, np.integer))
        and not isinstance(test_size, bool)
        and 0 <= test_size < pairs
    ):
        test = int(test_size)
    else:
        raise ValueError(
            f"Expected test_size as a fraction in [0, 1) or a number of steps in [0, {pairs}), "
            f"got {test_size!r}."
        )
    if test == 0:
        return x, x[:0], y, y[:0]
    return x[:-test], x[-test:], y[:-test], y[-test:]
