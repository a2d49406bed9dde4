"""The common cell suite: every test runs over every cell case in ``cell_cases.CASES``.

References: the float64 NumPy transcription (``numpy_reference``), a Python loop of ``step``, and
``jax.test_util.check_grads`` (finite differences) for the derivatives.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from cell_cases import CASES, EXCLUDED, HIDDEN_SIZE, INPUT_SIZE, VARIANTS
from jax.test_util import check_grads

import recurrax

T = 6
RTOL, ATOL = 1e-5, 1e-6  # float32 against float64


def _inputs(case, key, batch_shape, time=T, dtype=jnp.float32):
    k_p, k_c, k_x = jax.random.split(key, 3)
    params = case.init(k_p, dtype=dtype)
    carry = case.random_carry(k_c, params, batch_shape)
    xs = jax.random.normal(k_x, batch_shape + (time, INPUT_SIZE), dtype)
    return params, carry, xs


def _assert_close_to_ref(got_carry, got_y, want_carry, want_y, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(ref.f64(got_y), want_y, rtol=rtol, atol=atol)
    assert set(got_carry._fields) == set(want_carry)
    for name in got_carry._fields:
        np.testing.assert_allclose(ref.f64(getattr(got_carry, name)), want_carry[name], rtol=rtol, atol=atol)


def _python_loop(step, carry, xs):
    """Iterate ``step`` over axis -2 of ``xs`` by hand."""
    ys = []
    for t in range(xs.shape[-2]):
        carry, y = step(carry, xs[..., t, :])
        ys.append(y)
    return carry, jnp.stack(ys, axis=-2)


# --------------------------------------------------------------------------- the cases


def test_every_registered_cell_has_a_case():
    """The common suite covers the registry: a registered family without a case fails here."""
    covered = {case.family for case in CASES}
    missing = set(recurrax.registered_cells()) - covered - set(EXCLUDED)
    assert not missing, f"registered cells without a case in cell_cases.CASES: {sorted(missing)}"
    assert set(VARIANTS) <= set(recurrax.registered_cells()), "variants listed for an unregistered name"
    assert not set(EXCLUDED) & covered
    assert {"elman", "lstm", "gru", "reservoir", "mingru", "minlstm", "indrnn", "lru"} <= covered


# --------------------------------------------------------------------------- the equations


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)], ids=["unbatched", "batch", "two-batch-dims"])
def test_step_matches_numpy(case, key, batch_shape):
    params, carry, xs = _inputs(case, key, batch_shape, time=1)
    x = xs[..., 0, :]
    new_carry, y = case.module.step(params, carry, x)
    want_carry, want_y = ref.step_batched(ref.cell_params(params), ref.carry_dict(carry), ref.f64(x))
    _assert_close_to_ref(new_carry, y, want_carry, want_y)
    if "h" in new_carry._fields:  # a carry's h is the step's output (what seq2seq decoders rely on)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(new_carry.h))
    if case.cell.output is not None:  # and output() forms it from the new carry
        np.testing.assert_array_equal(np.asarray(y), np.asarray(case.cell.output(params, new_carry, x)))
    # A family may have neither (the protocol asks for neither): the blocks' outputs need the
    # convolution's oldest input, which the new carry no longer holds; the LTC's is an affine map of v.


def test_step_from_zero_carry_matches_numpy(case, key):
    params, _, xs = _inputs(case, key, (2,), time=1)
    carry = case.module.initial_carry(params, (2,))
    new_carry, y = case.module.step(params, carry, xs[:, 0])
    want_carry, want_y = ref.step_batched(ref.cell_params(params), ref.zero_carry(ref.cell_params(params), (2,)),
                                          ref.f64(xs[:, 0]))
    _assert_close_to_ref(new_carry, y, want_carry, want_y)


@pytest.mark.parametrize("batch_shape", [(), (2,), (2, 3)], ids=["unbatched", "batch", "two-batch-dims"])
def test_unroll_matches_numpy(case, key, batch_shape):
    params, carry, xs = _inputs(case, key, batch_shape)
    final, ys = recurrax.unroll(functools.partial(case.module.step, params), carry, xs)
    assert ys.shape == batch_shape + (T, HIDDEN_SIZE)
    want_final, want_ys = ref.run_batched(ref.cell_params(params), ref.f64(xs), ref.carry_dict(carry))
    _assert_close_to_ref(final, ys, want_final, want_ys)


def test_unroll_with_lengths_matches_numpy(case, key):
    params, carry, xs = _inputs(case, key, (4,))
    lengths = jnp.array([6, 0, 3, 1])
    final, ys = recurrax.unroll(functools.partial(case.module.step, params), carry, xs, lengths=lengths)
    want_final, want_ys = ref.run_batched(ref.cell_params(params), ref.f64(xs), ref.carry_dict(carry),
                                          mask=ref.lengths_to_mask(lengths, T))
    _assert_close_to_ref(final, ys, want_final, want_ys)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_unroll_equals_python_loop_of_step(case, key, reverse):
    params, carry, xs = _inputs(case, key, (2,))
    step = functools.partial(case.module.step, params)
    final, ys = recurrax.unroll(step, carry, xs, reverse=reverse)
    loop_xs = jnp.flip(xs, axis=-2) if reverse else xs
    want_final, want_ys = _python_loop(step, carry, loop_xs)
    if reverse:
        want_ys = jnp.flip(want_ys, axis=-2)
    chex.assert_trees_all_close((final, ys), (want_final, want_ys), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- gradients (float64)


def test_check_grads_step(case, key):
    with jax.enable_x64(True):
        params, carry, xs = _inputs(case, key, (2,), time=1, dtype=jnp.float64)
        check_grads(case.module.step, (params, carry, xs[:, 0]), order=1, modes=["rev"])


def test_check_grads_unroll(case, key):
    with jax.enable_x64(True):
        params, carry, xs = _inputs(case, key, (2,), time=4, dtype=jnp.float64)
        lengths = jnp.array([4, 2])

        def run(params, carry, xs):
            return recurrax.unroll(functools.partial(case.module.step, params), carry, xs, lengths=lengths)

        check_grads(run, (params, carry, xs), order=1, modes=["rev"])


# --------------------------------------------------------------------------- dtypes, shapes, tracing


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_dtype_is_preserved(case, key, dtype):
    params, _, xs = _inputs(case, key, (2,), dtype=dtype)
    carry = case.module.initial_carry(params, (2,))
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(carry))
    new_carry, y = case.module.step(params, carry, xs[:, 0])
    assert y.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(new_carry))
    final, ys = recurrax.unroll(functools.partial(case.module.step, params), carry, xs,
                                lengths=jnp.array([T, 2]))
    assert ys.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(final))
    if dtype == jnp.bfloat16:  # and the values are still the equations', to bfloat16 precision
        want_final, want_ys = ref.run_batched(ref.cell_params(params), ref.f64(xs), mask=ref.lengths_to_mask([T, 2], T))
        _assert_close_to_ref(final, ys, want_final, want_ys, rtol=5e-2, atol=5e-2)


def test_carry_structure_is_stable_across_steps(case, key):
    params, carry, xs = _inputs(case, key, (2, 3))
    carry = case.module.initial_carry(params, (2, 3))
    spec = jax.tree.map(lambda v: (v.shape, v.dtype), carry)
    for t in range(3):
        carry, _ = case.module.step(params, carry, xs[..., t, :])
        assert type(carry) is type(case.module.initial_carry(params))
        assert jax.tree.map(lambda v: (v.shape, v.dtype), carry) == spec


def test_no_recompilation_on_second_call(case, key):
    k1, k2 = jax.random.split(key)
    params1, carry1, xs1 = _inputs(case, k1, (2,))
    params2, carry2, xs2 = _inputs(case, k2, (2,))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(params, carry, xs, lengths):
        return recurrax.unroll(functools.partial(case.module.step, params), carry, xs, lengths=lengths)

    out1 = run(params1, carry1, xs1, jnp.array([6, 2]))
    out2 = run(params2, carry2, xs2, jnp.array([1, 5]))  # new values, same shapes: no retrace
    chex.assert_trees_all_equal_shapes_and_dtypes(out1, out2)
    chex.clear_trace_counter()


# --------------------------------------------------------------------------- initialisers


@pytest.mark.parametrize("family,kwargs,num_gates", [
    ("elman", {}, 1), ("lstm", {}, 4), ("lstm", {"peephole": True}, 4),
    ("gru", {}, 3), ("gru", {"reset_after": False}, 3),
], ids=["elman", "lstm", "lstm-peephole", "gru-reset-after", "gru-reset-before"])
def test_recurrent_kernel_is_orthogonal_per_gate_block(key, family, kwargs, num_gates):
    hidden = 6
    params = getattr(recurrax, family).init(key, 3, hidden, **kwargs)
    w_h = ref.f64(params.w_h)
    assert w_h.shape == (hidden, num_gates * hidden)
    for gate in range(num_gates):
        block = w_h[:, gate * hidden:(gate + 1) * hidden]
        np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-5)
        np.testing.assert_allclose(block @ block.T, np.eye(hidden), atol=1e-5)
    if num_gates > 1:  # independent blocks, not one matrix repeated
        assert not np.allclose(w_h[:, :hidden], w_h[:, hidden:2 * hidden])


def test_initial_biases(key):
    hidden = 5
    default = recurrax.lstm.init(key, 3, hidden)
    np.testing.assert_array_equal(np.asarray(default.b), np.r_[np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)])
    assert default.w_peep is None
    custom = recurrax.lstm.init(key, 3, hidden, forget_bias=2.5, peephole=True)
    np.testing.assert_array_equal(np.asarray(custom.b), np.r_[np.zeros(hidden), np.full(hidden, 2.5), np.zeros(2 * hidden)])
    np.testing.assert_array_equal(np.asarray(custom.w_peep), np.zeros((3, hidden)))
    gru = recurrax.gru.init(key, 3, hidden)
    np.testing.assert_array_equal(np.asarray(gru.b), np.zeros(3 * hidden))
    np.testing.assert_array_equal(np.asarray(gru.b_hn), np.zeros(hidden))
    assert recurrax.gru.init(key, 3, hidden, reset_after=False).b_hn is None
    np.testing.assert_array_equal(np.asarray(recurrax.elman.init(key, 3, hidden).b), np.zeros(hidden))


def test_forget_bias_is_not_a_hidden_offset(key):
    """With zero weights and the default forget bias 1.0, f = σ(1) exactly as the equations say."""
    params = recurrax.lstm.init(key, 2, 3)
    params = params._replace(w_x=jnp.zeros_like(params.w_x), w_h=jnp.zeros_like(params.w_h))
    carry = recurrax.LSTMCarry(h=jnp.zeros((3,)), c=jnp.ones((3,)))
    new, _ = recurrax.lstm.step(params, carry, jnp.ones((2,)))
    # i = σ(0), g = tanh(0) = 0, f = σ(1): c' = σ(1) · 1
    np.testing.assert_allclose(np.asarray(new.c), np.full(3, ref.sigmoid(1.0)), rtol=1e-6)


def test_identity_init(key):
    params = recurrax.elman.init(key, 3, 5, activation="relu", recurrent_init="identity")
    np.testing.assert_array_equal(np.asarray(params.w_h), np.eye(5))
    np.testing.assert_array_equal(np.asarray(recurrax.initializers.identity(key, (4, 4))), np.eye(4))


@pytest.mark.parametrize("radius", [0.5, 0.9, 1.1, 3.0])
def test_scale_to_spectral_radius(key, radius):
    w = jax.random.normal(key, (6, 6))
    scaled = recurrax.initializers.scale_to_spectral_radius(w, radius)
    assert scaled.dtype == w.dtype
    got = np.max(np.abs(np.linalg.eigvals(ref.f64(scaled))))
    assert abs(got - radius) <= 1e-6 * max(1.0, radius)
    # a rescaling, not another matrix
    np.testing.assert_allclose(ref.f64(scaled) / ref.f64(w), radius / np.max(np.abs(np.linalg.eigvals(ref.f64(w)))),
                               rtol=1e-6)
    np.testing.assert_allclose(float(recurrax.initializers.spectral_radius(scaled)), got, rtol=1e-5)


def test_elman_init_spectral_radius(key):
    params = recurrax.elman.init(key, 3, 6, spectral_radius=0.8)
    got = np.max(np.abs(np.linalg.eigvals(ref.f64(params.w_h))))
    assert abs(got - 0.8) <= 1e-6
