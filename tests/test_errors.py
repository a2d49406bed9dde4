"""Bad inputs raise ``ValueError`` naming what was expected and what was received."""

import functools
import types
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cell_cases import CASES, HIDDEN_SIZE, INPUT_SIZE, family_of

import recurrax

D, H, T = INPUT_SIZE, HIDDEN_SIZE, 5


@pytest.fixture
def gru():
    return recurrax.gru.init(jax.random.key(0), D, H)


@pytest.fixture
def layer():
    return recurrax.init_rnn(jax.random.key(0), "lstm", D, H)


def _unroll(params, xs, **options):
    family = family_of(params)
    batch = tuple(xs.shape[:-2]) if xs.ndim >= 2 else ()
    return recurrax.unroll(functools.partial(family.step, params), family.initial_carry(params, batch), xs, **options)


# --------------------------------------------------------------------------- shapes of x


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_wrong_feature_size(case):
    params = case.init(jax.random.key(0))
    carry = case.module.initial_carry(params, (2,))
    message = re.escape("Expected x with last dimension 3 (the cell's input_size), got shape (2, 4).")
    with pytest.raises(ValueError, match=message):
        case.module.step(params, carry, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=re.escape("got shape (2, 4).")):
        recurrax.unroll(functools.partial(case.module.step, params), carry, jnp.ones((2, 6, 4)))
    with pytest.raises(ValueError, match=re.escape("Expected x with last dimension 3 (the cell's input_size), "
                                                   "got shape (2, 4).")):
        recurrax.rnn(recurrax.RNNParams(cell=params, initial=None, family=case.cell), jnp.ones((2, 6, 4)))


def test_wrong_feature_size_in_stack_and_head(key):
    params = recurrax.init_stack(key, D, [H, H])
    with pytest.raises(ValueError, match=re.escape("Expected x with last dimension 3 (the cell's input_size), "
                                                   "got shape (2, 7).")):
        recurrax.stack(params, jnp.ones((2, 6, 7)))
    head = recurrax.init_dense(key, H, 2)
    with pytest.raises(ValueError, match=re.escape("Expected x with last dimension 4 (the head's in_features), "
                                                   "got shape (3, 5).")):
        recurrax.dense(head, jnp.ones((3, 5)))


def test_wrong_rank(gru, layer):
    with pytest.raises(ValueError, match=re.escape("Expected xs of rank >= 2 with shape (*batch, time, features)")
                       + r".*got shape \(3,\)"):
        _unroll(gru, jnp.ones((D,)))
    with pytest.raises(ValueError, match=re.escape("Expected xs of rank >= 2 with shape (*batch, time, features), "
                                                   "got shape (3,).")):
        recurrax.rnn(layer, jnp.ones((D,)))
    with pytest.raises(ValueError, match=re.escape("Expected xs of rank >= 2")):
        recurrax.stack(recurrax.init_stack(jax.random.key(0), D, [H]), jnp.ones((D,)))


def test_zero_length_time_axis(gru, layer):
    message = re.escape("Expected a non-empty time axis, got xs of shape (2, 0, 3) with 0 steps.")
    with pytest.raises(ValueError, match=message):
        _unroll(gru, jnp.ones((2, 0, D)))
    with pytest.raises(ValueError, match=message):
        recurrax.rnn(layer, jnp.ones((2, 0, D)))


# --------------------------------------------------------------------------- lengths and masks


def test_lengths_of_wrong_shape(gru, layer):
    with pytest.raises(ValueError, match=re.escape("Expected lengths with shape (2,) (the batch shape of xs), "
                                                   "got shape (3,).")):
        _unroll(gru, jnp.ones((2, T, D)), lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=re.escape("Expected lengths with shape (2, 3) (the batch shape of xs), "
                                                   "got shape (2,).")):
        recurrax.rnn(layer, jnp.ones((2, 3, T, D)), lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match=re.escape("Expected lengths with shape () (the batch shape of xs), "
                                                   "got shape (1,).")):
        recurrax.rnn(layer, jnp.ones((T, D)), lengths=jnp.array([3]))


def test_lengths_not_an_integer_array(gru):
    with pytest.raises(ValueError, match="Expected lengths with an integer dtype, got dtype float32."):
        _unroll(gru, jnp.ones((2, T, D)), lengths=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="Expected lengths with an integer dtype, got dtype bool."):
        _unroll(gru, jnp.ones((2, T, D)), lengths=jnp.array([True, False]))
    with pytest.raises(ValueError, match="Expected lengths with an integer dtype, got dtype float64."):
        _unroll(gru, jnp.ones((2, T, D)), lengths=[1.0, 2.0])
    with pytest.raises(ValueError, match="Expected lengths to be an array-like of integers, got list."):
        _unroll(gru, jnp.ones((2, T, D)), lengths=["1", "2"])


@pytest.mark.parametrize("lengths,low,high", [([1, 7], 1, 7), ([-1, 2], -1, 2)])
def test_lengths_out_of_range_concrete(gru, layer, lengths, low, high):
    message = re.escape(f"Expected lengths in [0, 5] (the time axis has 5 steps), got lengths with min {low} "
                        f"and max {high}.")
    with pytest.raises(ValueError, match=message):
        _unroll(gru, jnp.ones((2, T, D)), lengths=jnp.array(lengths))
    with pytest.raises(ValueError, match=message):
        recurrax.rnn(layer, jnp.ones((2, T, D)), lengths=jnp.array(lengths))
    with pytest.raises(ValueError, match=message):
        recurrax.sequence_mask(jnp.array(lengths), T)


def test_lengths_out_of_range_under_jit(layer):
    """Under jit the value is only known at run time: a debug callback fails the computation."""
    run = jax.jit(lambda lengths: recurrax.rnn(layer, jnp.ones((2, T, D)), lengths=lengths)[1])
    run(jnp.array([5, 0])).block_until_ready()  # in range: fine
    with pytest.raises(jax.errors.JaxRuntimeError, match=re.escape(
            "Expected lengths in [0, 5] (the time axis has 5 steps), got lengths with min 2 and max 6.")):
        run(jnp.array([6, 2])).block_until_ready()


def test_mask_shape_mismatch(gru):
    with pytest.raises(ValueError, match=re.escape("Expected mask with shape (2, 5) (*batch, time), i.e. "
                                                   "xs.shape[:-1], got shape (5, 2).")):
        _unroll(gru, jnp.ones((2, T, D)), mask=jnp.ones((T, 2), bool))
    carry = recurrax.gru.initial_carry(gru, (2,))
    with pytest.raises(ValueError, match=re.escape("Expected mask with shape (5, 2) (time, *batch), i.e. "
                                                   "xs.shape[:-1], got shape (2, 5).")):
        recurrax.unroll(functools.partial(recurrax.gru.step, gru), carry, jnp.ones((T, 2, D)), time_major=True,
                        mask=jnp.ones((2, T), bool))


def test_mask_not_boolean(gru):
    with pytest.raises(ValueError, match="Expected a boolean mask, got dtype int32."):
        _unroll(gru, jnp.ones((2, T, D)), mask=jnp.ones((2, T), jnp.int32))
    with pytest.raises(ValueError, match="Expected a boolean mask, got dtype float32."):
        _unroll(gru, jnp.ones((2, T, D)), mask=jnp.ones((2, T), jnp.float32))


def test_lengths_and_mask_both_given(gru, key):
    both = dict(lengths=jnp.array([1, 2]), mask=jnp.ones((2, T), bool))
    with pytest.raises(ValueError, match="Pass lengths or mask, not both."):
        _unroll(gru, jnp.ones((2, T, D)), **both)
    params = recurrax.init_stack(key, D, [H])
    with pytest.raises(ValueError, match="Pass lengths or mask, not both."):
        recurrax.many_to_many(params, None, jnp.ones((2, T, D)), **both)
    with pytest.raises(ValueError, match="Pass lengths or mask, not both."):
        recurrax.encode(params, jnp.ones((2, T, D)), **both)


def test_bad_unroll_options(gru):
    step = functools.partial(recurrax.gru.step, gru)
    carry = recurrax.gru.initial_carry(gru, (2,))
    with pytest.raises(ValueError, match="Expected a positive length when xs is None, got length=None."):
        recurrax.unroll(step, carry, None, time_major=True)
    with pytest.raises(ValueError, match="Expected a positive length when xs is None, got length=0."):
        recurrax.unroll(step, carry, None, length=0, time_major=True)
    with pytest.raises(ValueError, match="lengths and mask need xs; got xs=None."):
        recurrax.unroll(step, carry, None, length=3, time_major=True, lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="pass time_major=True"):
        recurrax.unroll(step, carry, None, length=3)
    with pytest.raises(ValueError, match="length is only for xs=None"):
        recurrax.unroll(step, carry, jnp.ones((2, T, D)), length=3)
    with pytest.raises(ValueError, match="Expected remat to be a bool, 'sqrt' or a jax.checkpoint policy, got 'yes'."):
        recurrax.unroll(step, carry, jnp.ones((2, T, D)), remat="yes")


# --------------------------------------------------------------------------- params and carries


def test_params_from_a_different_family(gru):
    lstm_carry = recurrax.lstm.initial_carry(recurrax.lstm.init(jax.random.key(0), D, H), (2,))
    with pytest.raises(ValueError, match=re.escape("lstm.step expects LSTMParams, got GRUParams: params from a "
                                                   "different cell family")):
        recurrax.lstm.step(gru, lstm_carry, jnp.ones((2, D)))
    with pytest.raises(ValueError, match=re.escape("elman.initial_carry expects ElmanParams, got GRUParams")):
        recurrax.elman.initial_carry(gru)
    with pytest.raises(ValueError, match=re.escape("rnn expects RNNParams (a layer, from init_rnn), got GRUParams.")):
        recurrax.rnn(gru, jnp.ones((2, T, D)))
    with pytest.raises(ValueError, match="stack expects StackParams, got GRUParams."):
        recurrax.stack(gru, jnp.ones((2, T, D)))
    with pytest.raises(ValueError, match="bidirectional expects BidirectionalParams, got RNNParams."):
        recurrax.bidirectional(recurrax.RNNParams(gru, None, recurrax.cells.resolve_family("gru")), jnp.ones((2, T, D)))


def test_carry_from_a_different_family(gru):
    elman = recurrax.elman.init(jax.random.key(1), D, H)
    lstm = recurrax.lstm.init(jax.random.key(1), D, H)
    with pytest.raises(ValueError, match="gru.step expects a GRUCarry carry, got LSTMCarry."):
        recurrax.gru.step(gru, recurrax.lstm.initial_carry(lstm, (2,)), jnp.ones((2, D)))
    # same fields, different family: still refused
    with pytest.raises(ValueError, match="gru.step expects a GRUCarry carry, got ElmanCarry."):
        recurrax.gru.step(gru, recurrax.elman.initial_carry(elman, (2,)), jnp.ones((2, D)))
    with pytest.raises(ValueError, match="lstm.step expects a LSTMCarry carry, got tuple."):
        recurrax.lstm.step(lstm, (jnp.zeros((2, H)), jnp.zeros((2, H))), jnp.ones((2, D)))


def test_carry_with_wrong_batch_shape_is_not_broadcast(gru, layer):
    unbatched = recurrax.gru.initial_carry(gru)
    with pytest.raises(ValueError, match=re.escape("Expected carry.h with shape (2, 4) (x's batch shape + "
                                                   "hidden_size), got shape (4,).")):
        recurrax.gru.step(gru, unbatched, jnp.ones((2, D)))
    with pytest.raises(ValueError, match=re.escape("Expected carry.h with shape (2, 4)")):
        recurrax.unroll(functools.partial(recurrax.gru.step, gru), unbatched, jnp.ones((2, T, D)),
                        lengths=jnp.array([1, 2]))
    wrong = recurrax.lstm.initial_carry(layer.cell, (3,))
    with pytest.raises(ValueError, match=re.escape("Expected carry.h with shape (2, 4) (x's batch shape + "
                                                   "hidden_size), got shape (3, 4).")):
        recurrax.rnn(layer, jnp.ones((2, T, D)), carry=wrong)
    half = recurrax.LSTMCarry(h=jnp.zeros((2, H)), c=jnp.zeros((1, H)))
    with pytest.raises(ValueError, match=re.escape("Expected carry.c with shape (2, 4)")):
        recurrax.lstm.step(layer.cell, half, jnp.ones((2, D)))
    with pytest.raises(ValueError, match=re.escape("Expected carry.h with shape (2, 4) (x's batch shape + "
                                                   "hidden_size), got shape (2, 5).")):
        recurrax.gru.step(gru, recurrax.GRUCarry(h=jnp.zeros((2, 5))), jnp.ones((2, D)))


def test_a_step_that_changes_the_carry_dtype_is_named_as_the_cause():
    k_x, k_h = jax.random.split(jax.random.key(1))
    w_x, w_h = jax.random.normal(k_x, (D, H)), jax.random.normal(k_h, (H, H))

    def step(carry, x):  # a user's cell whose step returns its carry in float16
        h = jnp.tanh(x @ w_x + carry.h @ w_h)
        return recurrax.ElmanCarry(h=h.astype(jnp.float16)), h

    carry, xs = recurrax.ElmanCarry(h=jnp.zeros((2, H))), jnp.ones((2, T, D))  # both float32
    message = re.escape("The step changed the carry's dtype: float32 in, float16 out; a step must "
                        "return its carry in the dtypes it received")
    for options in ({}, {"lengths": jnp.array([T, 2])}):
        with pytest.raises(ValueError, match=message) as info:
            recurrax.unroll(step, carry, xs, **options)
        assert "cast xs" not in str(info.value)  # xs already have the carry's dtype


def test_batch_shape_given_as_int(gru):
    with pytest.raises(ValueError, match=re.escape("Expected batch_shape as a tuple of ints, got the int 2; "
                                                   "write (2,).")):
        recurrax.gru.initial_carry(gru, 2)


def test_bidirectional_carry_must_be_a_pair(key):
    params = recurrax.init_bidirectional(key, "gru", D, H)
    with pytest.raises(ValueError, match="Expected carry as a \\(forward, backward\\) pair, got GRUCarry."):
        recurrax.bidirectional(params, jnp.ones((2, T, D)), carry=recurrax.gru.initial_carry(params.forward.cell, (2,)))


def test_stack_carries_per_layer(key):
    params = recurrax.init_stack(key, D, [H, H], cell="gru")
    with pytest.raises(ValueError, match=re.escape("Expected one initial carry per layer (2), got 1.")):
        recurrax.stack(params, jnp.ones((2, T, D)), carries=[None])
    with pytest.raises(ValueError, match=re.escape("Expected one carry per layer (2), got 1.")):
        recurrax.stack_step(params, recurrax.stack_initial_carries(params, (2,))[:1], jnp.ones((2, D)))
    bidi = recurrax.init_stack(key, D, [H, H], cell="gru", bidirectional=[False, True])
    with pytest.raises(ValueError, match="layer 1 is bidirectional"):
        recurrax.stack_initial_carries(bidi, (2,))


# --------------------------------------------------------------------------- configuration


def test_unknown_activation(key):
    with pytest.raises(ValueError, match=re.escape("Expected activation in ['identity', 'relu', 'sigmoid', "
                                                   "'tanh'], got 'gelu'.")):
        recurrax.elman.init(key, D, H, activation="gelu")


def test_unknown_family_name(key):
    names = sorted(recurrax.registered_cells())  # the built-ins, ["elman", "gru", "indrnn", ...]
    message = re.escape(f"Expected a cell family in {names} or a family object, got 'transformer'.")
    with pytest.raises(ValueError, match=message):
        recurrax.init_rnn(key, "transformer", D, H)
    with pytest.raises(ValueError, match=message):
        recurrax.init_stack(key, D, [H, H], cell=["lstm", "transformer"])
    with pytest.raises(ValueError, match=re.escape("Expected cell for each of the 2 layers, got 3.")):
        recurrax.init_stack(key, D, [H, H], cell=["lstm", "gru", "elman"])


def test_unknown_initializer(key):
    with pytest.raises(ValueError, match=re.escape("Expected an initialiser callable or one of ['glorot_uniform', "
                                                   "'identity', 'lecun_normal', 'orthogonal', 'zeros'], "
                                                   "got 'he'.")):
        recurrax.elman.init(key, D, H, recurrent_init="he")
    with pytest.raises(ValueError, match=re.escape("Expected a square shape (n, n) for the identity initialiser, "
                                                   "got (3, 4).")):
        recurrax.initializers.identity(key, (3, 4))
    with pytest.raises(ValueError, match=re.escape("Expected a spectral radius >= 0, got -1.0.")):
        recurrax.initializers.scale_to_spectral_radius(jnp.eye(3), -1.0)
    with pytest.raises(ValueError, match="Cannot rescale a matrix whose spectral radius is 0"):
        recurrax.initializers.scale_to_spectral_radius(jnp.zeros((3, 3)), 0.9)
    with pytest.raises(ValueError, match=re.escape("Expected a square matrix (n, n), got shape (2, 3).")):
        recurrax.initializers.spectral_radius(jnp.ones((2, 3)))


@pytest.mark.parametrize("family", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("sizes,name,value", [
    ((0, H), "input_size", "0"), ((D, -2), "hidden_size", "-2"), ((2.5, H), "input_size", "2.5"),
    ((D, True), "hidden_size", "True"),
])
def test_non_positive_sizes(key, family, sizes, name, value):
    with pytest.raises(ValueError, match=re.escape(f"Expected {name} to be a positive integer, got {value}.")):
        getattr(recurrax, family).init(key, *sizes)


def test_non_positive_layer_sizes(key):
    with pytest.raises(ValueError, match=re.escape("Expected hidden size to be a positive integer, got 0.")):
        recurrax.init_stack(key, D, [H, 0])
    with pytest.raises(ValueError, match=re.escape("Expected a non-empty sequence of hidden sizes, got [].")):
        recurrax.init_stack(key, D, [])
    with pytest.raises(ValueError, match=re.escape("Expected a non-empty sequence of hidden sizes, got 4.")):
        recurrax.init_stack(key, D, 4)
    with pytest.raises(ValueError, match=re.escape("Expected vocab_size to be a positive integer, got 0.")):
        recurrax.init_embedding(key, 0, 3)
    with pytest.raises(ValueError, match=re.escape("Expected out_features to be a positive integer, got -1.")):
        recurrax.init_dense(key, H, -1)
    with pytest.raises(ValueError, match=re.escape("Expected num_classes to be a positive integer, got 0.")):
        recurrax.one_hot(jnp.array([0]), 0)


def test_bad_merge_name(key):
    with pytest.raises(ValueError, match=re.escape("Expected merge in ['concat', 'mean', 'sum'], got 'max'.")):
        recurrax.init_bidirectional(key, "gru", D, H, merge="max")
    with pytest.raises(ValueError, match=re.escape("got 'product'")):
        recurrax.init_stack(key, D, [H], bidirectional=True, merge="product")


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_rate_outside_unit_interval(key, rate):
    params = recurrax.init_stack(key, D, [H, H])
    with pytest.raises(ValueError, match=re.escape(f"Expected dropout_rate in [0, 1), got {rate!r}.")):
        recurrax.stack(params, jnp.ones((2, T, D)), dropout_rate=rate, key=key)


def test_bad_pool(key):
    params = recurrax.init_stack(key, D, [H])
    with pytest.raises(ValueError, match=re.escape("Expected pool in ['last', 'max', 'mean'], got 'median'.")):
        recurrax.many_to_one(params, None, jnp.ones((2, T, D)), pool="median")


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(key, temperature):
    params = recurrax.init_stack(key, 3, [H])
    head = recurrax.init_dense(key, H, 3)
    feedback = functools.partial(recurrax.one_hot, num_classes=3)
    with pytest.raises(ValueError, match=re.escape(f"Expected temperature > 0, got {temperature!r}.")):
        recurrax.generate(params, head, feedback, jnp.array([0]), 4, key=key, temperature=temperature)


def test_bad_generate_arguments(key):
    params = recurrax.init_stack(key, 3, [H])
    head = recurrax.init_dense(key, H, 3)
    feedback = functools.partial(recurrax.one_hot, num_classes=3)
    with pytest.raises(ValueError, match="Expected integer first_token, got dtype float32."):
        recurrax.generate(params, head, feedback, jnp.array([0.0]), 4)
    with pytest.raises(ValueError, match=re.escape("Expected num_steps to be a positive integer, got 0.")):
        recurrax.generate(params, head, feedback, jnp.array([0]), 0)


def test_teaching_mask_arguments():
    valid = jnp.ones((2, 4), bool)
    with pytest.raises(ValueError, match=re.escape("Expected a boolean valid-step mask (*batch, T), got int32 (2, 4).")):
        recurrax.teaching_mask(valid.astype(jnp.int32))
    with pytest.raises(ValueError, match="teaching_mask\\(units=...\\) needs num_units"):
        recurrax.teaching_mask(valid, units=[0])
    with pytest.raises(ValueError, match=re.escape("Expected a non-empty list of unit indices in [0, 3), got [0, 3].")):
        recurrax.teaching_mask(valid, units=[0, 3], num_units=3)
    with pytest.raises(ValueError, match=re.escape("Expected last_k to be a positive integer, got 0.")):
        recurrax.teaching_mask(valid, last_k=0)


# --------------------------------------------------------------------------- token ids


def test_out_of_range_token_ids(key):
    table = recurrax.init_embedding(key, 5, 3)
    with pytest.raises(ValueError, match=re.escape("Expected token ids in [0, 5) (the vocabulary size), got ids "
                                                   "in [0, 5].")):
        recurrax.embed(table, jnp.array([0, 5]))
    with pytest.raises(ValueError, match=re.escape("Expected token ids in [0, 5) (the vocabulary size), got ids "
                                                   "in [-1, 2].")):
        recurrax.embed(table, jnp.array([[-1, 2]]))
    with pytest.raises(ValueError, match=re.escape("Expected token ids in [0, 4) (num_classes), got ids in [1, 4].")):
        recurrax.one_hot(jnp.array([1, 4]), 4)
    with pytest.raises(ValueError, match="Expected integer token ids, got dtype float32."):
        recurrax.embed(table, jnp.array([1.0]))
    with pytest.raises(ValueError, match="embed expects EmbeddingParams, got DenseParams."):
        recurrax.embed(recurrax.init_dense(key, 2, 2), jnp.array([0]))


def test_out_of_range_token_ids_under_jit_give_nan_rows(key):
    """Documented behaviour: traced ids are not checked, and an out-of-range id is a NaN row."""
    table = recurrax.init_embedding(key, 5, 3)
    rows = jax.jit(functools.partial(recurrax.embed, table))(jnp.array([4, 5, -1]))
    assert bool(jnp.isfinite(rows[0]).all()) and bool(jnp.isnan(rows[1:]).all())


# --------------------------------------------------------------------------- lengths as array-likes


def test_lengths_may_be_a_list_or_an_int(gru, layer):
    """Any array-like of integers is accepted and means the same as the jnp.array of it (issue 13.7)."""
    xs = jax.random.normal(jax.random.key(1), (2, T, D))
    for run in (functools.partial(_unroll, gru), functools.partial(recurrax.rnn, layer)):
        chex.assert_trees_all_equal(run(xs, lengths=[5, 2]), run(xs, lengths=jnp.array([5, 2])))
        chex.assert_trees_all_equal(run(xs[0], lengths=3), run(xs[0], lengths=jnp.array(3)))


def test_range_check_under_jit_launches_no_computation():
    """The run-time range check decides on its host scalars without running a JAX computation.

    Under ``jit`` it runs in a host callback on one of XLA:CPU's execution threads, which receives
    ``jax.Array`` scalars; a ``<`` on them launched a computation there that deadlocked the
    8-device training step of test_sharding in CI (see ``_checks._check_range_on_host``).
    """
    from jax._src import config

    from recurrax._checks import _check_range_on_host

    received = []
    jax.jit(lambda x: jax.debug.callback(lambda a: received.append(type(a)), jnp.min(x)))(jnp.arange(3))
    jax.effects_barrier()
    assert received and issubclass(received[0], jax.Array)  # what the check is given, as below
    smallest, largest = jax.device_put(jnp.int32(0)), jax.device_put(jnp.int32(4))
    message = re.escape("Expected targets in [0, 3] (the number of classes), got targets with min 0 and max 4.")
    with config.no_execution(True):  # any JAX computation raises RuntimeError
        _check_range_on_host(smallest, largest, low=0, high=5, name="targets", why="the number of classes")
        with pytest.raises(ValueError, match=message):
            _check_range_on_host(smallest, largest, low=0, high=4, name="targets", why="the number of classes")
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):  # and the same under jit
        jax.jit(lambda t: recurrax.sequence_cross_entropy(jnp.zeros((1, 2, 4)), t))(jnp.array([[0, 4]])).block_until_ready()


def test_check_lengths_raises_eagerly_what_jit_reports_at_run_time(layer):
    """The public ``check_lengths`` gives the ValueError that a jitted call can only give at run time."""
    from recurrax._checks import check_lengths  # exported as recurrax.check_lengths

    run = jax.jit(lambda lengths: recurrax.rnn(layer, jnp.ones((2, T, D)), lengths=lengths)[1])
    message = re.escape("Expected lengths in [0, 5] (the time axis has 5 steps), got lengths with min 2 and max 6.")
    with pytest.raises(ValueError, match=message):
        check_lengths([6, 2], (2,), T)
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
        run(jnp.array([6, 2])).block_until_ready()
    checked = check_lengths([5, 0], (2,), T)
    assert isinstance(checked, jax.Array) and checked.tolist() == [5, 0]
    np.testing.assert_array_equal(run(checked), run(jnp.array([5, 0])))
    with pytest.raises(ValueError, match=re.escape("Expected lengths with shape (2,) (the batch shape of xs), "
                                                   "got shape (3,).")):
        check_lengths(jnp.array([1, 2, 3]), (2,), T)
    with pytest.raises(ValueError, match="Expected time to be a non-negative integer, got 5.0."):
        check_lengths([1, 2], (2,), 5.0)
    with pytest.raises(ValueError, match=re.escape("Expected batch_shape to be a tuple of integers, got 2.")):
        check_lengths([1, 2], 2, T)
    with pytest.raises(ValueError, match=re.escape("Expected lengths in [0, 5] (the time axis has 5 steps), got "
                                                   "lengths with min 1 and max 4294967297.")):
        check_lengths(np.array([2**32 + 1, 1]), (2,), T)  # exact: not wrapped to int32 first


def _hand_built_layer(step):
    """An ``RNNParams`` built by hand (no ``init_rnn``) around a broken ``step``."""
    from typing import NamedTuple

    class Params(NamedTuple):
        w_x: jax.Array
        w_h: jax.Array

    class Carry(NamedTuple):
        h: jax.Array

    family = recurrax.as_family(types.SimpleNamespace(
        name="handmade", init=lambda key, input_size, hidden_size: None, step=step,
        initial_carry=lambda p, batch_shape=(): Carry(h=jnp.zeros(tuple(batch_shape) + (3,))),
        output_size=lambda p: 3))
    return recurrax.RNNParams(cell=Params(w_x=jnp.ones((2, 3)), w_h=jnp.ones((3, 3))), initial=None, family=family)


@pytest.mark.parametrize("step, match", [
    (lambda p, c, x: (type(c)(h=jnp.tanh(x @ p.w_x + c.h @ p.w_h)), jnp.sum(c.h, -1)),
     r"Cell 'handmade': expected step to return an output of shape \(2, O\)"),
    (lambda p, c, x: jnp.tanh(x @ p.w_x + c.h @ p.w_h), r"Cell 'handmade': expected step to return a \(carry, y\) pair"),
])
def test_the_cell_protocol_is_checked_where_a_hand_built_layer_runs(step, match):
    """Issue 27 item 3: ``rnn`` on an ``RNNParams`` built by hand checks the protocol as ``init_rnn`` does."""
    with pytest.raises(ValueError, match=match):
        recurrax.rnn(_hand_built_layer(step), jnp.ones((4, 5, 2)))
