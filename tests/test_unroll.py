"""``unroll``: variable lengths and masks, reverse, layouts, unroll factor, remat, carries.

References: the NumPy transcription with its masking loop, Python loops of ``step``, unpadded
single-sequence runs, and the option-free ``unroll`` itself (for options that must not change
results).
"""

import functools

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from cell_cases import CASES_BY_ID, HIDDEN_SIZE, INPUT_SIZE, bidirectional_params, layer_params
from hypothesis import given, settings

import recurrax

T = 6
SUBSET = [CASES_BY_ID[name] for name in ("elman-tanh", "lstm-peephole", "gru-reset-after")]
subset = pytest.mark.parametrize("case", SUBSET, ids=[c.id for c in SUBSET])


def _setup(case, key, batch_shape=(4,), time=T):
    k_p, k_c, k_x = jax.random.split(key, 3)
    params = case.init(k_p)
    carry = case.random_carry(k_c, params, batch_shape)
    xs = jax.random.normal(k_x, batch_shape + (time, INPUT_SIZE))
    return functools.partial(case.module.step, params), params, carry, xs


def _tree_at(tree, idx):
    return jax.tree.map(lambda v: v[idx], tree)


def _assert_equal(a, b):
    chex.assert_trees_all_equal(a, b)


# --------------------------------------------------------------------------- lengths and masks


@subset
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lengths_and_equivalent_mask_give_identical_results(case, key, reverse):
    step, _, carry, xs = _setup(case, key)
    lengths = jnp.array([6, 0, 3, 1])
    mask = recurrax.sequence_mask(lengths, T)
    np.testing.assert_array_equal(np.asarray(mask), ref.lengths_to_mask(lengths, T))
    with_lengths = recurrax.unroll(step, carry, xs, lengths=lengths, reverse=reverse, return_carries=True)
    with_mask = recurrax.unroll(step, carry, xs, mask=mask, reverse=reverse, return_carries=True)
    _assert_equal(with_lengths, with_mask)


def test_sequence_mask_layouts():
    lengths = jnp.array([[0, 3], [5, 1]])
    want = ref.lengths_to_mask(lengths, 5)
    np.testing.assert_array_equal(np.asarray(recurrax.sequence_mask(lengths, 5)), want)
    np.testing.assert_array_equal(np.asarray(recurrax.sequence_mask(lengths, 5, time_major=True)),
                                  np.moveaxis(want, -1, 0))
    np.testing.assert_array_equal(np.asarray(recurrax.sequence_mask(jnp.array(2), 4)), [True, True, False, False])


@subset
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_masked_steps_freeze_carry_and_zero_output(case, key, reverse):
    step, params, carry, xs = _setup(case, key)
    mask = jax.random.bernoulli(jax.random.key(7), 0.5, (4, T))  # any pattern, holes included
    mask = mask.at[0].set(True).at[1].set(False)
    final, ys, carries = recurrax.unroll(step, carry, xs, mask=mask, reverse=reverse, return_carries=True)
    m = np.asarray(mask)
    ys, carries = np.asarray(ys), jax.tree.map(np.asarray, carries)
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    for b in range(4):
        previous = _tree_at(jax.tree.map(np.asarray, carry), b)
        for t in order:
            here = _tree_at(carries, (b, t))
            if not m[b, t]:
                assert (ys[b, t] == 0).all()
                _assert_equal(here, previous)  # frozen: bit for bit the previous carry
            previous = here
        _assert_equal(_tree_at(jax.tree.map(np.asarray, final), b), previous)
    want_final, want_ys, want_carries = ref.run_batched(
        ref.cell_params(params), ref.f64(xs), ref.carry_dict(carry), mask=m, reverse=reverse, return_carries=True)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
    for name in carries._fields:
        np.testing.assert_allclose(getattr(carries, name), want_carries[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(getattr(final, name), want_final[name], rtol=1e-5, atol=1e-6)


@subset
def test_final_carry_is_each_sequence_carry_at_its_last_valid_step(case, key):
    step, _, carry, xs = _setup(case, key)
    lengths = [6, 0, 3, 1]
    final, ys, carries = recurrax.unroll(step, carry, xs, lengths=jnp.array(lengths), return_carries=True)
    for b, length in enumerate(lengths):
        if length == 0:
            _assert_equal(_tree_at(final, b), _tree_at(carry, b))
            assert (np.asarray(ys[b]) == 0).all()
            continue
        _assert_equal(_tree_at(final, b), _tree_at(carries, (b, length - 1)))
        single_final, single_ys = recurrax.unroll(step, _tree_at(carry, b), xs[b, :length])
        chex.assert_trees_all_close(_tree_at(final, b), single_final, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(ys[b, :length], single_ys, rtol=1e-6, atol=1e-6)
        assert (np.asarray(ys[b, length:]) == 0).all()


@subset
def test_reverse_is_length_aware(case, key):
    """Reverse over a padded batch == running each reversed unpadded sequence forward."""
    step, params, carry, xs = _setup(case, key)
    lengths = [6, 0, 3, 1]
    final, ys = recurrax.unroll(step, carry, xs, lengths=jnp.array(lengths), reverse=True)
    for b, length in enumerate(lengths):
        assert (np.asarray(ys[b, length:]) == 0).all()
        if length == 0:
            _assert_equal(_tree_at(final, b), _tree_at(carry, b))
            continue
        fwd_final, fwd_ys = recurrax.unroll(step, _tree_at(carry, b), jnp.flip(xs[b, :length], 0))
        chex.assert_trees_all_close(_tree_at(final, b), fwd_final, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(ys[b, :length], jnp.flip(fwd_ys, 0), rtol=1e-6, atol=1e-6)
        # and the NumPy loop agrees on which steps come first
        want_final, want_ys = ref.run(ref.cell_params(params), ref.f64(xs[b, :length]),
                                      ref.carry_dict(_tree_at(carry, b)), reverse=True)
        np.testing.assert_allclose(np.asarray(ys[b, :length]), want_ys, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- layouts and scan options


@subset
@pytest.mark.parametrize("batch_shape", [(3,), (2, 3)], ids=["batch", "two-batch-dims"])
@pytest.mark.parametrize("masking", ["none", "lengths", "mask"])
def test_time_major_equals_batch_major(case, key, batch_shape, masking):
    step, _, carry, xs = _setup(case, key, batch_shape)
    lengths = jax.random.randint(jax.random.key(3), batch_shape, 0, T + 1)
    mask = jax.random.bernoulli(jax.random.key(4), 0.6, batch_shape + (T,))
    options = {"none": {}, "lengths": {"lengths": lengths}, "mask": {"mask": mask}}[masking]
    batch_major = recurrax.unroll(step, carry, xs, return_carries=True, **options)
    if masking == "mask":
        options = {"mask": jnp.moveaxis(mask, -1, 0)}
    time_major = recurrax.unroll(step, carry, jnp.moveaxis(xs, -2, 0), time_major=True, return_carries=True,
                                 **options)
    axis = len(batch_shape)
    final, ys, carries = time_major
    _assert_equal(batch_major, (final, jnp.moveaxis(ys, 0, axis), jax.tree.map(lambda v: jnp.moveaxis(v, 0, axis),
                                                                              carries)))


@subset
@pytest.mark.parametrize("factor", [2, 4, True], ids=["2", "4", "full"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_unroll_factor_gives_same_results(case, key, factor, reverse):
    step, _, carry, xs = _setup(case, key)
    lengths = jnp.array([6, 0, 3, 5])
    want = recurrax.unroll(step, carry, xs, lengths=lengths, reverse=reverse)
    got = recurrax.unroll(step, carry, xs, lengths=lengths, reverse=reverse, unroll=factor)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)


@subset
@pytest.mark.parametrize("remat", [
    True, jax.checkpoint_policies.dots_with_no_batch_dims_saveable, jax.checkpoint_policies.nothing_saveable,
], ids=["remat", "dots-saveable-policy", "nothing-saveable-policy"])
def test_remat_gives_same_values_and_gradients(case, key, remat):
    _, params, carry, xs = _setup(case, key)
    lengths = jnp.array([6, 2, 3, 5])

    def loss(params, carry, xs, remat):
        final, ys = recurrax.unroll(functools.partial(case.module.step, params), carry, xs, lengths=lengths,
                                    remat=remat)
        return jnp.sum(ys ** 2) + sum(jnp.sum(v ** 2) for v in final), (final, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    want_grads, want_out = grad(params, carry, xs, False)
    got_grads, got_out = grad(params, carry, xs, remat)
    chex.assert_trees_all_close(got_out, want_out, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-6, atol=1e-7)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(want_grads))


@subset
def test_return_carries_equals_python_loop(case, key):
    step, params, carry, xs = _setup(case, key, (2,))
    final, ys, carries = recurrax.unroll(step, carry, xs, return_carries=True)
    loop_carries, c = [], carry
    for t in range(T):
        c, _ = step(c, xs[:, t])
        loop_carries.append(c)
    want = jax.tree.map(lambda *vs: jnp.stack(vs, axis=1), *loop_carries)
    chex.assert_trees_all_close(carries, want, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(final, c, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(carries.h))  # y_t is h_t for every cell


@subset
def test_xs_none_runs_length_steps(case, key):
    """Autonomous runs (no inputs): ``x_t`` is None, outputs are time-major."""
    _, params, carry, _ = _setup(case, key, (2,))
    zero_input = jnp.zeros((2, INPUT_SIZE))

    def step(c, x):
        assert x is None
        return case.module.step(params, c, zero_input)

    final, ys, carries = recurrax.unroll(step, carry, None, length=5, time_major=True, return_carries=True)
    assert ys.shape == (5, 2, HIDDEN_SIZE)
    c, loop_ys = carry, []
    for _ in range(5):
        c, y = case.module.step(params, c, zero_input)
        loop_ys.append(y)
    chex.assert_trees_all_close((final, ys), (c, jnp.stack(loop_ys)), rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(carries.h, ys, rtol=0, atol=0)


# --------------------------------------------------------------------------- padding invariance (property)

PT, PD, PH = 5, 3, 4  # max time, features, hidden: fixed, so nothing recompiles per example


def _initial_finals(params):
    """What a length-0 sequence must return as final carries: each layer's starting carry."""
    if isinstance(params, recurrax.RNNParams):
        return recurrax.rnn_initial_carry(params)
    if isinstance(params, recurrax.BidirectionalParams):
        return (recurrax.rnn_initial_carry(params.forward), recurrax.rnn_initial_carry(params.backward))
    return tuple(_initial_finals(layer) for layer in params.layers)


@functools.lru_cache(maxsize=None)
def _property_setup(config):
    """(params, run(params, xs, lengths) jitted once, batch shape) for one configuration."""
    keys = jax.random.split(jax.random.key(11), 3)
    batch_shape = (2, 2) if config == "stack-two-batch-dims" else (3,)
    if config == "forward":
        params = layer_params("lstm-peephole", keys[0], PD, PH, learned_initial=True)
        run = functools.partial(recurrax.rnn)
    elif config == "reverse":
        params = layer_params("gru-reset-after", keys[0], PD, PH)
        run = functools.partial(recurrax.rnn, reverse=True)
    elif config == "bidirectional":
        params = bidirectional_params("gru-reset-before", keys[0], PD, PH, "concat")
        run = recurrax.bidirectional
    else:  # a deep stack: bidirectional LSTM (sum) under a GRU with a learned initial state
        params = recurrax.StackParams(layers=(
            bidirectional_params("lstm-peephole", keys[0], PD, PH, "sum"),
            layer_params("elman-tanh", keys[1], PH, PH),
            layer_params("gru-reset-after", keys[2], PH, PH, learned_initial=True),
        ))
        run = recurrax.stack

    @jax.jit
    def padded(params, xs, lengths):
        return run(params, xs, lengths=lengths)

    @jax.jit
    def single(params, xs):  # compiled once per length (at most PT lengths)
        return run(params, xs)

    return params, padded, single, batch_shape


def _garbage(kind, seed, shape):
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "huge":
        return (1e6 * rng.standard_normal(shape)).astype(np.float32)
    values = rng.standard_normal(shape).astype(np.float32)
    if kind == "nan":
        values[rng.random(shape) < 0.5] = np.nan
    return values


@pytest.mark.parametrize("config", ["forward", "reverse", "bidirectional", "stack", "stack-two-batch-dims"])
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_padding_invariance(config, data):
    params, padded, single, batch_shape = _property_setup(config)
    size = int(np.prod(batch_shape))
    lengths = np.array(data.draw(st.lists(st.integers(0, PT), min_size=size, max_size=size), label="lengths"),
                       np.int32).reshape(batch_shape)
    kind = data.draw(st.sampled_from(["zeros", "normal", "huge", "nan"]), label="padding")
    seed = data.draw(st.integers(0, 2 ** 31 - 1), label="seed")
    shape = batch_shape + (PT, PD)
    valid = ref.lengths_to_mask(lengths, PT)[..., None]
    values = np.asarray(jax.random.normal(jax.random.key(seed % 1000), shape))
    xs_zero_padded = np.where(valid, values, np.float32(0))
    xs_garbage = np.where(valid, values, _garbage(kind, seed, shape))

    finals, ys = padded(params, jnp.asarray(xs_garbage), jnp.asarray(lengths))
    # padding content never reaches the valid outputs or the final carries, not even a NaN
    _assert_equal((finals, ys), padded(params, jnp.asarray(xs_zero_padded), jnp.asarray(lengths)))
    ys = np.asarray(ys)
    for idx in np.ndindex(*batch_shape):
        length = int(lengths[idx])
        assert (ys[idx][length:] == 0).all()
        if length == 0:
            want_finals = _initial_finals(params)
        else:
            want_finals, want_ys = single(params, jnp.asarray(values[idx][:length]))
            np.testing.assert_allclose(ys[idx][:length], np.asarray(want_ys), rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(_tree_at(finals, idx), want_finals, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- fused backward pass

# Cells with a products/pointwise split (the reset-before GRU declares one it cannot use).
FUSED = [c for c in CASES_BY_ID.values() if c.cell.pointwise is not None and c.id != "gru-reset-before"]


@pytest.mark.parametrize("case", FUSED, ids=[c.id for c in FUSED])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("masking", ["none", "lengths", "mask"])
def test_unroll_cell_equals_autodiff_unroll(case, key, reverse, masking):
    # unroll_cell's hand-fused backward pass against jax.grad through the plain scan, for
    # params, initial carry and inputs, with two batch dimensions and a loss on the final carry.
    _, params, carry, xs = _setup(case, key, batch_shape=(2, 3))
    lengths = jnp.array([[6, 3, 0], [1, 5, 4]])
    options = {
        "none": {},
        "lengths": {"lengths": lengths},
        "mask": {"mask": jax.random.bernoulli(jax.random.key(5), 0.6, xs.shape[:-1])},
    }[masking]

    def loss(run, params, carry, xs):
        final, ys = run(params, carry, xs)
        return (ys**2).sum() + sum((1.7 * leaf).sum() for leaf in jax.tree.leaves(final))

    plain = lambda p, c, x: recurrax.unroll(functools.partial(case.module.step, p), c, x, reverse=reverse, **options)
    fused = lambda p, c, x: recurrax.unroll_cell(p, c, x, cell=case.cell, reverse=reverse, **options)
    chex.assert_trees_all_close(fused(params, carry, xs), plain(params, carry, xs), atol=1e-6)
    g_plain = jax.grad(functools.partial(loss, plain), argnums=(0, 1, 2))(params, carry, xs)
    g_fused = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2))(params, carry, xs)
    chex.assert_trees_all_close(g_fused, g_plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [CASES_BY_ID["lstm-peephole"], CASES_BY_ID["gru-reset-after"]],
                         ids=["lstm-peephole", "gru-reset-after"])
def test_unroll_cell_check_grads(case, key):
    with jax.enable_x64(True):
        _, params, carry, xs = _setup(case, key, batch_shape=(2,))
        params, carry, xs = jax.tree.map(lambda a: a.astype(jnp.float64), (params, carry, xs))
        run = lambda p, c, x: recurrax.unroll_cell(p, c, x, cell=case.cell, lengths=jnp.array([6, 4]))
        jax.test_util.check_grads(run, (params, carry, xs), order=1, modes=["rev"])


def test_rnn_fused_and_autodiff_backward_agree(key):
    params = recurrax.init_rnn(key, "lstm", 3, 128)
    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    grads = {
        fused: jax.grad(lambda p: recurrax.rnn(p, xs, lengths=jnp.array([5, 2]), fused_backward=fused)[1].sum())(params)
        for fused in (True, False, None)
    }
    chex.assert_trees_all_close(grads[True], grads[False], atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_equal(grads[None], grads[True])  # H < 1024: fused by default
    # Forward mode needs the autodiff path; the fused path is reverse-mode only.
    jax.jvp(lambda p: recurrax.rnn(p, xs, fused_backward=False)[1], (params,), (params,))


def test_unroll_cell_rejects_reset_before_gru(key):
    params = recurrax.gru.init(key, 3, 4, reset_after=False)
    with pytest.raises(ValueError, match="reset-before GRU"):
        recurrax.unroll_cell(params, recurrax.gru.initial_carry(params, (2,)), jnp.ones((2, 5, 3)), cell="gru")


@pytest.mark.parametrize("case", FUSED, ids=[c.id for c in FUSED])
def test_bfloat16_products_stay_close_to_float32(case, key):
    # Mixed precision: every product on bfloat16 operands, accumulated in float32, state and gates
    # in float32. Against the float32 path: within bfloat16's resolution (2^-8 = 0.4%) carried
    # through 6 steps, and measurably different from it (the option is not ignored).
    _, params, carry, xs = _setup(case, key, batch_shape=(3,))
    lengths = jnp.array([6, 3, 0])
    layer = recurrax.RNNParams(params, None, case.cell)

    def loss(p, c, x, **options):
        final, ys = recurrax.rnn(p, x, carry=c, lengths=lengths, **options)
        return (ys**2).sum() + sum((1.7 * leaf).sum() for leaf in jax.tree.leaves(final)), ys

    def run(**options):
        (_, ys), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(layer, carry, xs, **options)
        return ys, grads

    ys32, g32 = run(fused_backward=True)
    ys16, g16 = run(fused_backward=True, compute_dtype=jnp.bfloat16)
    ys16_autodiff, g16_autodiff = run(fused_backward=False, compute_dtype=jnp.bfloat16)
    assert ys16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    assert 1e-5 < _relative_error(ys16, ys32) < 2e-2
    assert 1e-5 < _relative_error(g16, g32) < 3e-2
    # The plain-autodiff path with the same products: the same forward, a backward within rounding.
    chex.assert_trees_all_close(ys16_autodiff, ys16, atol=1e-6)
    assert _relative_error(g16_autodiff, g16) < 1e-2


def test_compute_dtype_errors(key):
    params = recurrax.init_rnn(key, "gru", 3, 4, reset_after=False)
    with pytest.raises(ValueError, match="Mixed precision needs a cell whose step splits"):
        recurrax.rnn(params, jnp.ones((2, 5, 3)), compute_dtype=jnp.bfloat16)
    lstm = recurrax.init_rnn(key, "lstm", 3, 4)
    with pytest.raises(ValueError, match="Expected compute_dtype to be a floating dtype or None, got int32"):
        recurrax.rnn(lstm, jnp.ones((2, 5, 3)), compute_dtype=jnp.int32)


# --------------------------------------------------------------------------- sqrt(T) segment checkpointing


def _relative_error(a, b):
    num = sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    den = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(b))
    return (num / den) ** 0.5


@subset
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("segment_length", [None, 2, 4, 11], ids=["sqrtT", "2", "4", "longer-than-T"])
def test_sqrt_remat_equals_plain_bptt(case, key, reverse, segment_length):
    # T = 7 does not divide by 2 or 4 (padded last segment) nor equal ceil(sqrt(7)) = 3 segments.
    step, params, carry, xs = _setup(case, key, batch_shape=(3,), time=7)
    lengths = jnp.array([7, 3, 0])

    def loss(params, remat):
        options = {"segment_length": segment_length} if remat == "sqrt" else {}
        final, ys = recurrax.unroll(functools.partial(case.module.step, params), carry, xs,
                                    lengths=lengths, reverse=reverse, remat=remat, **options)
        return (ys**2).sum() + sum(leaf.sum() for leaf in jax.tree.leaves(final))

    np.testing.assert_allclose(loss(params, "sqrt"), loss(params, False), rtol=1e-6)
    assert _relative_error(jax.grad(loss)(params, "sqrt"), jax.grad(loss)(params, False)) < 1e-6


def test_sqrt_remat_through_layers_and_errors(key):
    params = recurrax.init_stack(key, 3, [5, 5], cell=["gru", "lstm"], bidirectional=[True, False])
    xs = jax.random.normal(jax.random.key(3), (2, 9, 3))
    loss = lambda p, remat: recurrax.stack(p, xs, lengths=jnp.array([9, 4]), remat=remat)[1].sum()
    assert _relative_error(jax.grad(loss)(params, "sqrt"), jax.grad(loss)(params, False)) < 1e-6
    step = functools.partial(recurrax.lstm.step, params.layers[1].cell)
    carry = recurrax.lstm.initial_carry(params.layers[1].cell, (2,))
    with pytest.raises(ValueError, match="Expected segment_length to be a positive integer, got 0"):
        recurrax.unroll(step, carry, jnp.ones((2, 9, 10)), remat="sqrt", segment_length=0)
    with pytest.raises(ValueError, match="segment_length is only for remat='sqrt'"):
        recurrax.unroll(step, carry, jnp.ones((2, 9, 10)), segment_length=3)
    with pytest.raises(ValueError, match="Expected remat to be a bool, 'sqrt' or a jax.checkpoint policy"):
        recurrax.unroll(step, carry, jnp.ones((2, 9, 10)), remat="every")


@subset
@pytest.mark.parametrize("remat", [False, "sqrt"], ids=["plain", "sqrt"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_resets_equal_separate_sequences(case, key, remat, reverse):
    # Row 0 packs a 3-step and a 4-step sequence, row 1 one 7-step sequence. Resets are in scan
    # order: forward they mark first steps, reverse last steps (the step each scan starts from).
    step, params, carry, xs = _setup(case, key, batch_shape=(2,), time=7)
    cut = 3
    resets = np.zeros((2, 7), bool)
    resets[0, (cut - 1 if reverse else cut)] = True
    start = case.random_carry(jax.random.key(9), params, (2,))

    def run(params, xs):
        return recurrax.unroll(functools.partial(case.module.step, params), start, xs, reverse=reverse,
                               remat=remat, resets=jnp.asarray(resets), reset_carry=carry)

    final, ys = run(params, xs)
    step = functools.partial(case.module.step, params)
    first = _tree_at(carry, 0) if reverse else _tree_at(start, 0)
    second = _tree_at(start, 0) if reverse else _tree_at(carry, 0)
    final_a, ys_a = recurrax.unroll(step, first, xs[0, :cut], reverse=reverse)
    final_b, ys_b = recurrax.unroll(step, second, xs[0, cut:], reverse=reverse)
    chex.assert_trees_all_close(ys[0], jnp.concatenate([ys_a, ys_b]), atol=1e-6)
    chex.assert_trees_all_close(_tree_at(final, 0), final_a if reverse else final_b, atol=1e-6)
    chex.assert_trees_all_close(_tree_at(final, 1), recurrax.unroll(step, _tree_at(start, 1), xs[1],
                                                                    reverse=reverse)[0], atol=1e-6)
    # No gradient crosses the boundary: the later sequence's outputs ignore the earlier inputs.
    later = slice(0, cut) if reverse else slice(cut, 7)
    earlier = slice(cut, 7) if reverse else slice(0, cut)
    d_xs = jax.grad(lambda xs: (run(params, xs)[1][0, later] ** 2).sum())(xs)
    assert float(jnp.abs(d_xs[0, earlier]).max()) == 0.0 and float(jnp.abs(d_xs[0, later]).max()) > 0


def test_resets_at_masked_steps_and_errors(key):
    step, params, carry, xs = _setup(CASES_BY_ID["gru-reset-after"], key, batch_shape=(2,), time=5)
    start = jax.tree.map(jnp.ones_like, carry)
    resets = jnp.array([[False, False, False, True, False], [False, True, False, False, False]])
    lengths = jnp.array([3, 5])
    final, _ = recurrax.unroll(step, start, xs, lengths=lengths, resets=resets)  # restarts from `start`
    plain, _ = recurrax.unroll(step, start, xs, lengths=lengths)
    # Row 0's reset falls on padding: no effect. Row 1 restarts at step 1 from the initial carry.
    chex.assert_trees_all_close(_tree_at(final, 0), _tree_at(plain, 0))
    chex.assert_trees_all_close(_tree_at(final, 1), recurrax.unroll(step, _tree_at(start, 1), xs[1, 1:])[0],
                                atol=1e-6)
    with pytest.raises(ValueError, match=r"Expected resets with shape \(2, 5\)"):
        recurrax.unroll(step, start, xs, resets=resets[:, :4])
    with pytest.raises(ValueError, match="Expected a boolean resets, got dtype int32"):
        recurrax.unroll(step, start, xs, resets=resets.astype(jnp.int32))
    with pytest.raises(ValueError, match="reset_carry is only used with resets"):
        recurrax.unroll(step, start, xs, reset_carry=carry)
    with pytest.raises(ValueError, match="Expected reset_carry with the carry's structure"):
        recurrax.unroll(step, start, xs, resets=resets, reset_carry=jnp.zeros((3,)))
    with pytest.raises(ValueError, match=r"Expected reset_carry leaves that broadcast to the carry's \(2, 4\)"):
        recurrax.unroll(step, start, xs, resets=resets, reset_carry=carry._replace(h=jnp.zeros((3,))))
