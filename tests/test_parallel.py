"""recurrax.parallel: associative scans, DEER, quasi-DEER and ELK against the sequential scan.

References: Python loops and ``numpy.linalg.solve`` for the scans; ``rnn(method="scan")``
(``lax.scan``) and ``jax.grad`` through it for every method, in float64.
"""

import functools
import re
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax import parallel

LINEAR_CELLS = [name for name in ("mingru", "minlstm", "lru")]
NEWTON = ("deer", "quasi_deer", "elk")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------- the scans


def test_linear_scans_match_python_loops():
    rng = np.random.default_rng(0)
    a, b, h0 = rng.uniform(-1.2, 1.2, (30, 4)), rng.normal(size=(30, 4)), rng.normal(size=4)
    forward, backward, h = [], [], h0
    for t in range(30):
        h = a[t] * h + b[t]
        forward.append(h)
    h = h0
    for t in reversed(range(30)):
        h = a[t] * h + b[t]
        backward.append(h)
    np.testing.assert_allclose(parallel.linear_scan(a, b, h0), forward, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parallel.linear_scan(a, b, h0, reverse=True), backward[::-1], rtol=1e-12, atol=1e-12)
    mats, h, dense = rng.normal(size=(30, 4, 4)) * 0.5, h0, []
    for t in range(30):
        h = mats[t] @ h + b[t]
        dense.append(h)
    np.testing.assert_allclose(parallel.matrix_scan(mats, b, h0), dense, rtol=1e-10, atol=1e-12)
    pos_a, pos_b, h, logs = rng.uniform(0.01, 1, (30, 4)), rng.uniform(0.01, 1, (30, 4)), np.abs(h0), []
    for t in range(30):
        h = pos_a[t] * h + pos_b[t]
        logs.append(h)
    np.testing.assert_allclose(parallel.log_linear_scan(np.log(pos_a), np.log(pos_b), np.abs(h0)), logs, rtol=1e-12)


@pytest.mark.parametrize("time", [1, 2, 9, 200])
def test_tridiagonal_solve_matches_numpy(time):
    rng = np.random.default_rng(time)
    lower = rng.normal(size=(time, 3))
    diagonal = 0.1 + np.abs(lower) + np.abs(np.roll(lower, -1, 0)) + rng.uniform(0, 1, (time, 3))
    rhs = rng.normal(size=(time, 3))
    got = parallel.tridiagonal_solve(diagonal, lower, rhs)
    for n in range(3):
        matrix = np.diag(diagonal[:, n]) + np.diag(lower[1:, n], -1) + np.diag(lower[1:, n], 1)
        np.testing.assert_allclose(got[:, n], np.linalg.solve(matrix, rhs[:, n]), rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------- exactness


def _inputs(key, batch=(2, 3), time=12, features=3):
    xs = jax.random.normal(key, batch + (time, features), jnp.float64)
    lengths = jnp.array([[12, 5, 0], [1, 12, 8]])[: batch[0], : batch[1]] if len(batch) == 2 else None
    return xs, lengths


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", LINEAR_CELLS)
def test_associative_equals_sequential(cell, reverse, key):
    params = recurrax.init_rnn(key, cell, 3, 5, dtype=jnp.float64)
    xs, lengths = _inputs(jax.random.key(1))
    expected = recurrax.rnn(params, xs, lengths=lengths, reverse=reverse, return_carries=True)
    got = recurrax.rnn(params, xs, lengths=lengths, reverse=reverse, return_carries=True, method="associative")
    assert _max_diff(expected, got) < 1e-6
    time_major = recurrax.rnn(params, jnp.moveaxis(xs, -2, 0), lengths=lengths, reverse=reverse,
                              time_major=True, method="associative")
    assert _max_diff(expected[1], jnp.moveaxis(time_major[1], 0, -2)) < 1e-6


CHUNKED_CELLS = [("lru", {}), ("selective_ssm", {"state_size": 3}), ("mlstm", {"num_heads": 2, "eps": 0.0}),
                 ("mingru", {"log_space": True})]


@pytest.mark.parametrize("cell, options, chunk_size", [(cell, options, 5) for cell, options in CHUNKED_CELLS]
                         + [("lru", {}, 1), ("lru", {}, 12), ("selective_ssm", {"state_size": 3}, 40)])
def test_chunked_associative_equals_sequential_with_gradients(cell, options, chunk_size, key):
    # Chunks that divide T = 12 and chunks that do not (padded), one step, and one larger than T,
    # in both directions, with lengths; the gradient of every parameter and input too. Carries
    # are compared in the linear coordinates (to_linear): the mLSTM's associative form returns
    # its carry in the gauge m = 0, another representation of the same state.
    params = recurrax.init_rnn(key, cell, 3, 4, dtype=jnp.float64, learned_initial=True, **options)
    linear = functools.partial(params.family.to_linear or (lambda p, c: c), params.cell)
    xs, lengths = _inputs(jax.random.key(1))
    method = parallel.associative(chunk_size=chunk_size, log_space=options.get("log_space", False))
    for reverse in (False, True):
        final, ys, carries = recurrax.rnn(params, xs, lengths=lengths, reverse=reverse, return_carries=True)
        got = recurrax.rnn(params, xs, lengths=lengths, reverse=reverse, return_carries=True, method=method)
        assert _max_diff((linear(final), ys, linear(carries)), (linear(got[0]), got[1], linear(got[2]))) < 1e-10

    def loss(p, x, method):
        final, ys = recurrax.rnn(p, x, lengths=lengths, method=method)
        squares = [jnp.real(leaf * jnp.conj(leaf)) for leaf in jax.tree.leaves(linear(final))]
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(square) for square in squares)

    assert _max_diff(jax.grad(loss, (0, 1))(params, xs, "scan"), jax.grad(loss, (0, 1))(params, xs, method)) < 1e-10


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_log_space_scan_equals_sequential(cell, key):
    params = recurrax.init_rnn(key, cell, 3, 5, dtype=jnp.float64, log_space=True)
    xs, lengths = _inputs(jax.random.key(1), time=200)
    lengths = lengths * 16
    method = parallel.associative(log_space=True)
    assert _max_diff(recurrax.rnn(params, xs, lengths=lengths),
                     recurrax.rnn(params, xs, lengths=lengths, method=method)) < 1e-6

    def loss(p, method):
        return jnp.sum(jnp.sin(recurrax.rnn(p, xs, lengths=lengths, method=method)[1]))

    assert _max_diff(jax.grad(loss)(params, "scan"), jax.grad(loss)(params, method)) < 1e-5


class TwoLeafCarry(NamedTuple):
    h: jax.Array
    m: jax.Array


class TwoLeafParams(NamedTuple):
    w_x: jax.Array
    w_h: jax.Array
    decay: jax.Array


class TwoLeafCell:
    """A user cell (not registered): ``h' = tanh(x W + h U + m)``, ``m' = decay ⊙ m + 0.1 h'``."""

    name = "two_leaf"

    @staticmethod
    def init(key, input_size, hidden_size, dtype=jnp.float32):
        k1, k2 = jax.random.split(key)
        return TwoLeafParams(jax.random.normal(k1, (input_size, hidden_size), dtype) / np.sqrt(input_size),
                             jax.random.normal(k2, (hidden_size, hidden_size), dtype) / np.sqrt(hidden_size),
                             jnp.full((hidden_size,), 0.9, dtype))

    @staticmethod
    def initial_carry(params, batch_shape=()):
        zeros = jnp.zeros(tuple(batch_shape) + params.decay.shape, params.decay.dtype)
        return TwoLeafCarry(zeros, zeros)

    @staticmethod
    def step(params, carry, x):
        h = jnp.tanh(x @ params.w_x + carry.h @ params.w_h + carry.m)
        m = jax.lax.broadcast_to_rank(params.decay, h.ndim) * carry.m + 0.1 * h
        return TwoLeafCarry(h, m), h


@pytest.mark.parametrize("method", NEWTON)
@pytest.mark.parametrize("cell", ["elman", "gru", "lstm", "user"])
def test_newton_methods_converge_to_sequential(cell, method, key):
    family = TwoLeafCell if cell == "user" else cell
    params = recurrax.init_rnn(key, family, 3, 4, dtype=jnp.float64)
    xs, lengths = _inputs(jax.random.key(1))
    for reverse in (False, True):
        expected = recurrax.rnn(params, xs, lengths=lengths, reverse=reverse, return_carries=True)
        solution = parallel.solve(params, xs, lengths=lengths, reverse=reverse, method=method)
        assert bool(solution.converged)
        assert float(solution.residual) <= 1e-10
        assert _max_diff(expected, (solution.final_carry, solution.outputs, solution.carries)) < 1e-6


def test_mask_of_any_pattern(key):
    params = recurrax.init_rnn(key, "gru", 3, 4, dtype=jnp.float64)
    xs, _ = _inputs(jax.random.key(1))
    mask = jax.random.bernoulli(jax.random.key(2), 0.6, xs.shape[:-1])
    expected = recurrax.rnn(params, xs, mask=mask)
    for method in NEWTON:
        assert _max_diff(expected, recurrax.rnn(params, xs, mask=mask, method=method)) < 1e-6


def test_deer_is_exact_within_t_iterations(key):
    # A hard cell (recurrent weights 3× the default), where Newton is far from its quadratic
    # regime: DEER still reaches the trajectory in at most T iterations (Lim et al. 2024, Prop. 1).
    params = recurrax.init_rnn(key, "elman", 3, 4, dtype=jnp.float64)
    params = params._replace(cell=params.cell._replace(w_h=3 * params.cell.w_h))
    xs = 2 * jax.random.normal(jax.random.key(1), (6, 3), jnp.float64)
    solution = parallel.solve(params, xs, method=parallel.deer(tol=1e-14, max_iterations=6))
    assert bool(solution.converged) and int(solution.iterations) <= 6
    assert _max_diff(recurrax.rnn(params, xs)[1], solution.outputs) < 1e-12


def test_jacobian_diagonal_hooks_match_jacfwd(key):
    from jax.flatten_util import ravel_pytree

    for cell, options in [("elman", {}), ("lstm", {}), ("gru", {}), ("gru", {"reset_after": False})]:
        params = recurrax.init_rnn(key, cell, 3, 5, dtype=jnp.float64, **options)
        family = params.family
        carry = jax.tree.map(lambda v: jax.random.normal(jax.random.key(3), v.shape, v.dtype),
                             family.initial_carry(params.cell, ()))
        x = jax.random.normal(jax.random.key(4), (3,), jnp.float64)
        new, diagonal = family.jacobian_diagonal(params.cell, carry, x)
        flat, unravel = ravel_pytree(carry)
        jac = jax.jacfwd(lambda s: ravel_pytree(family.step(params.cell, unravel(s), x)[0])[0])(flat)
        np.testing.assert_allclose(ravel_pytree(diagonal)[0], np.diagonal(jac), rtol=1e-12, atol=1e-14)
        assert _max_diff(new, family.step(params.cell, carry, x)[0]) == 0


# ----------------------------------------------------------------------------- gradients


# Every method once (both directions over GRU's three), the hooked diagonal (GRU) and the
# jacfwd one (the user cell): one compilation per case keeps the file fast.
@pytest.mark.parametrize("cell, methods", [("gru", NEWTON), ("user", ("quasi_deer",)), ("lru", ("associative",))],
                         ids=["gru", "user", "lru"])
def test_gradients_equal_sequential(cell, methods, key):
    family = TwoLeafCell if cell == "user" else cell
    params = recurrax.init_rnn(key, family, 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (3, 9, 3), jnp.float64)
    lengths = jnp.array([9, 3, 6])
    carry = jax.tree.map(lambda v: 0.5 * jax.random.normal(jax.random.key(2), v.shape, v.dtype),
                         recurrax.rnn_initial_carry(params, (3,)))

    @functools.partial(jax.jit, static_argnums=(3, 4))
    def grads(p, xs, c, method, reverse):
        def loss(p, xs, c):
            final, hs = recurrax.rnn(p, xs, carry=c, lengths=lengths, method=method, reverse=reverse)
            return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(v**2) for v in jax.tree.leaves(final))
        return jax.grad(loss, argnums=(0, 1, 2))(p, xs, c)

    for index, method in enumerate(methods):
        reverse = index % 2 == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)   # no fallback hides a wrong adjoint
            got = grads(params, xs, carry, method, reverse)
            jax.block_until_ready(got)
        assert _max_diff(grads(params, xs, carry, "scan", reverse), got) < 1e-5, (method, reverse)


def test_gradients_of_a_tiny_loss_are_exact_too(key):
    # A mean-reduced loss gives cotangents ~1e-6: the adjoint iteration's stopping rule must be
    # relative, or it stops after one sweep (a bug found by the parallel_in_time study).
    params = recurrax.init_rnn(key, "gru", 3, 6, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (4, 30, 3), jnp.float64)

    def grads(method):
        return jax.grad(lambda p: 1e-6 * jnp.sum(recurrax.rnn(p, xs, method=method)[1] ** 2))(params)

    expected = grads("scan")
    scale = max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(expected))
    for method in ("quasi_deer", "elk"):
        assert _max_diff(expected, grads(method)) / scale < 1e-5, method


def test_nan_padding_reaches_neither_outputs_nor_gradients(key):
    xs, _ = _inputs(jax.random.key(1), batch=(3,), time=8)
    lengths = jnp.array([8, 3, 5])
    padded = jnp.where(recurrax.sequence_mask(lengths, 8)[..., None], xs, jnp.nan)
    for cell, method in (("gru", "quasi_deer"), ("lstm", "deer"), ("elman", "elk"), ("minlstm", "associative")):
        params = recurrax.init_rnn(key, cell, 3, 4, dtype=jnp.float64)

        def loss(p, x):
            return jnp.sum(jnp.tanh(recurrax.rnn(p, x, lengths=lengths, method=method)[1]))

        clean = jax.grad(loss, argnums=(0, 1))(params, xs)
        dirty = jax.grad(loss, argnums=(0, 1))(params, padded)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(dirty)), (cell, method)
        assert _max_diff(clean, dirty) == 0, (cell, method)


# ----------------------------------------------------------------------------- layers


def test_bidirectional_and_stack_take_every_method(key):
    xs, lengths = _inputs(jax.random.key(1), batch=(3,), time=10)
    lengths = jnp.array([10, 4, 7])
    bi = recurrax.init_bidirectional(key, "gru", 3, 4, dtype=jnp.float64)
    deep = recurrax.init_stack(key, 3, [4, 5], cell=["lstm", "mingru"], bidirectional=[True, False],
                               cell_kwargs={"dtype": jnp.float64})
    for method in ("deer", "quasi_deer"):
        assert _max_diff(recurrax.bidirectional(bi, xs, lengths=lengths),
                         recurrax.bidirectional(bi, xs, lengths=lengths, method=method)) < 1e-6
    assert _max_diff(recurrax.stack(deep, xs, lengths=lengths),
                     recurrax.stack(deep, xs, lengths=lengths, method="elk")) < 1e-6
    head = recurrax.init_dense(key, 5, 2, dtype=jnp.float64)   # through the topologies too
    assert _max_diff(recurrax.many_to_one(deep, head, xs, lengths=lengths),
                     recurrax.many_to_one(deep, head, xs, lengths=lengths, method="quasi_deer")) < 1e-6
    linear = recurrax.init_bidirectional(key, "minlstm", 3, 4, dtype=jnp.float64)
    assert _max_diff(recurrax.bidirectional(linear, xs, lengths=lengths),
                     recurrax.bidirectional(linear, xs, lengths=lengths, method="associative")) < 1e-6


def test_warm_start_from_the_previous_solution(key):
    params = recurrax.init_rnn(key, "gru", 3, 4, dtype=jnp.float64)
    xs, lengths = _inputs(jax.random.key(1))
    first = parallel.solve(params, xs, lengths=lengths, method="quasi_deer")
    again = parallel.solve(params, xs, lengths=lengths, method="quasi_deer", initial_guess=first.carries)
    assert int(first.iterations) > 1 and int(again.iterations) == 0
    assert _max_diff(first.outputs, again.outputs) < 1e-12
    _, _, carries = recurrax.rnn(params, xs, lengths=lengths, return_carries=True)
    with pytest.raises(ValueError, match="initial_guess leaves of shape"):
        parallel.solve(params, xs, method="deer", initial_guess=jax.tree.map(lambda v: v[:, :, :-1], carries))


# ----------------------------------------------------------------------------- failures


def test_the_fallback_warning_launches_no_computation():
    # It runs in a host callback on an XLA:CPU execution thread, given jax.Array scalars: a JAX
    # computation launched there can deadlock a multi-device program (see _checks._check_range_on_host).
    from jax._src import config

    from recurrax.parallel._newton import _warn

    args = [jax.device_put(v) for v in (jnp.bool_(False), jnp.int32(7), jnp.float32(0.5), jnp.float32(1e-6),
                                        jnp.int32(3))]
    with config.no_execution(True), pytest.warns(RuntimeWarning, match=re.escape(
            "elk (backward) did not converge: residual 0.5 > tol 1e-06 after 7 iterations; first non-finite "
            "value at step 3.")):
        _warn("elk", "backward", *args)


def test_a_solve_that_does_not_converge_falls_back_with_a_warning(key):
    params = recurrax.init_rnn(key, "gru", 3, 4, dtype=jnp.float64)
    xs, lengths = _inputs(jax.random.key(1))
    with pytest.warns(RuntimeWarning, match=r"quasi_deer \(forward\) did not converge: residual .* after 2 iterations"):
        solution = parallel.solve(params, xs, lengths=lengths, method=parallel.quasi_deer(max_iterations=2))
        jax.block_until_ready(solution)
    assert not bool(solution.converged)
    assert _max_diff(recurrax.rnn(params, xs, lengths=lengths, return_carries=True),
                     (solution.final_carry, solution.outputs, solution.carries)) < 1e-12


def test_vmapped_solves_warn_only_where_one_failed_and_skip_the_fallback_when_none_did(key, monkeypatch):
    # Under vmap a lax.cond on a batched predicate runs both branches: every vmapped solve used to
    # warn "did not converge: residual 1.96e-16" and pay for the sequential fallback.
    from recurrax.parallel import _newton

    fallbacks = []
    sequential = _newton._sequential

    def counted(*args):
        jax.debug.callback(lambda: fallbacks.append(1))
        return sequential(*args)

    monkeypatch.setattr(_newton, "_sequential", counted)
    params = recurrax.init_rnn(key, "gru", 3, 4, dtype=jnp.float64)
    assert all(float(jnp.max(jnp.abs(b))) == 0 for b in (params.cell.b, params.cell.b_hn))
    xs = jax.random.normal(jax.random.key(1), (3, 2, 9, 3), jnp.float64)   # vmap axis, batch, time
    reference = jax.vmap(lambda x: recurrax.rnn(params, x)[1])(xs)

    def outputs(method):
        return jax.jit(jax.vmap(lambda x: parallel.solve(params, x, method=method).outputs))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solved = jax.block_until_ready(outputs("quasi_deer")(xs))
        grads = jax.grad(lambda x: jnp.sum(outputs("quasi_deer")(x) ** 2))(xs)
        jax.block_until_ready(grads)
    assert _max_diff(solved, reference) < 1e-10 and not fallbacks
    assert _max_diff(grads, jax.grad(lambda x: jnp.sum(jax.vmap(lambda v: recurrax.rnn(params, v)[1])(x) ** 2))(xs)) < 1e-8

    # Zero inputs from a zero carry with zero biases: solved by the initial guess. The others are not
    # solved in 2 iterations; only they warn, and the fallback gives everyone the exact result.
    xs = xs.at[0].set(0.0)
    with pytest.warns(RuntimeWarning, match=r"quasi_deer \(forward\) did not converge") as caught:
        solved = jax.block_until_ready(outputs(parallel.quasi_deer(max_iterations=2))(xs))
    assert len(caught) == 2 and fallbacks
    assert _max_diff(solved, jax.vmap(lambda x: recurrax.rnn(params, x)[1])(xs)) < 1e-12


def test_the_backward_warning_reports_a_measured_residual(key):
    # With one iteration the backward used to report its placeholder "residual 1.8e+308".
    params = recurrax.init_rnn(key, "gru", 3, 4, dtype=jnp.float64)
    xs, lengths = _inputs(jax.random.key(1))
    method = parallel.quasi_deer(max_iterations=1)
    with pytest.warns(RuntimeWarning) as caught:
        grads = jax.grad(lambda x: jnp.sum(parallel.solve(params, x, lengths=lengths, method=method).outputs ** 2))(xs)
        jax.block_until_ready(grads)
    backward = [str(w.message) for w in caught if "(backward)" in str(w.message)]
    assert len(backward) == 1 and re.search(r"residual 1 > tol .* after 1 iterations", backward[0]), backward
    expected = jax.grad(lambda x: jnp.sum(recurrax.rnn(params, x, lengths=lengths)[1] ** 2))(xs)
    assert _max_diff(grads, expected) < 1e-10


def test_a_diverging_iteration_names_its_first_non_finite_step_and_elk_stays_finite(key):
    # Recurrent gains of 4 on the diagonal: quasi-DEER's diagonal scan multiplies them over 400
    # steps and overflows in float32, while the tanh trajectory itself is bounded. ELK's damped
    # steps stay finite (this chaotic cell is still not solved in 30 iterations: the fallback).
    with jax.enable_x64(False):
        params = recurrax.init_rnn(key, "elman", 2, 8)
        w_h = params.cell.w_h + 4 * jnp.eye(8, dtype=jnp.float32)
        params = params._replace(cell=params.cell._replace(w_h=w_h))
        xs = jax.random.normal(jax.random.key(1), (400, 2), jnp.float32)
        expected = recurrax.rnn(params, xs)
        with pytest.warns(RuntimeWarning, match="first non-finite value at step"):
            diverged = parallel.solve(params, xs, method="quasi_deer")
            jax.block_until_ready(diverged)
        assert not bool(diverged.converged) and not np.isfinite(float(diverged.residual))
        assert _max_diff(expected, (diverged.final_carry, diverged.outputs)) < 1e-5   # the sequential scan
        with pytest.warns(RuntimeWarning, match=r"elk \(forward\) did not converge") as caught:
            damped = parallel.solve(params, xs, method=parallel.elk(max_iterations=30))
            jax.block_until_ready(damped)
        assert all("non-finite" not in str(w.message) for w in caught)
        assert np.isfinite(float(damped.residual))
        assert _max_diff(expected, (damped.final_carry, damped.outputs)) < 1e-5


def test_bad_method_requests_are_value_errors(key):
    gru = recurrax.init_rnn(key, "gru", 3, 4)
    xs = jnp.ones((2, 5, 3), jnp.float32)
    with pytest.raises(ValueError, match="cannot use method='associative'.*scan, deer, quasi_deer, elk"):
        recurrax.rnn(gru, xs, method="associative")
    with pytest.raises(ValueError, match="Expected a method in"):
        recurrax.rnn(gru, xs, method="newton")
    with pytest.raises(ValueError, match="remat=True configure the sequential scan"):
        recurrax.rnn(gru, xs, method="deer", remat=True)
    with pytest.raises(ValueError, match="initial_guess warm-starts a Newton method"):
        recurrax.rnn(gru, xs, initial_guess=recurrax.rnn_initial_carry(gru, (2,)))
    plain = recurrax.init_rnn(key, "mingru", 3, 4)
    with pytest.raises(ValueError, match="log_space=True"):
        recurrax.rnn(plain, xs, method=parallel.associative(log_space=True))
    with pytest.raises(ValueError, match="positive integer max_iterations"):
        parallel.deer(max_iterations=0)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"Expected chunk_size None or a positive integer.*got chunk_size={bad}"):
            parallel.associative(chunk_size=bad)
    with pytest.raises(ValueError, match="with method='associative'.*method='deer'"):
        parallel.Method("deer", chunk_size=4)
    with pytest.raises(ValueError, match="damping >= 0"):
        parallel.elk(damping=-1.0)
