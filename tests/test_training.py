"""Losses (against NumPy), the optax train step, and the fit loop."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax


@pytest.fixture(autouse=True)
def standard_promotion():
    # optax raises floats to integer step counts, which the suite's strict promotion forbids.
    with jax.numpy_dtype_promotion("standard"):
        yield


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --------------------------------------------------------------------------- losses


def test_cross_entropy_equals_numpy_over_valid_steps():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 5, 7))
    targets = jax.random.randint(jax.random.key(1), (2, 3, 5), 0, 7)
    lengths = jnp.array([[5, 2, 0], [1, 4, 3]])
    lp = _np_log_softmax(logits)
    per_step = -np.take_along_axis(lp, np.asarray(targets)[..., None], -1)[..., 0]
    valid = np.arange(5) < np.asarray(lengths)[..., None]
    expected = per_step[valid].mean()
    got = recurrax.sequence_cross_entropy(logits, targets, lengths=lengths)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The same through a mask, and with one-hot targets.
    np.testing.assert_allclose(recurrax.sequence_cross_entropy(logits, targets, mask=jnp.asarray(valid)), expected, rtol=1e-5)
    one_hot = jax.nn.one_hot(targets, 7)
    np.testing.assert_allclose(recurrax.sequence_cross_entropy(logits, one_hot, lengths=lengths), expected, rtol=1e-5)


def test_cross_entropy_equal_lengths_is_the_seeds_time_average():
    # J = (1/T) Σ_t J_t, averaged over the batch.
    logits = jax.random.normal(jax.random.key(2), (4, 6, 3))
    targets = jax.random.randint(jax.random.key(3), (4, 6), 0, 3)
    lp = _np_log_softmax(logits)
    j_t = -np.take_along_axis(lp, np.asarray(targets)[..., None], -1)[..., 0]
    expected = np.mean([(1 / 6) * j_t[b].sum() for b in range(4)])
    np.testing.assert_allclose(recurrax.sequence_cross_entropy(logits, targets), expected, rtol=1e-5)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[[1e4, -1e4, 0.0]]])
    loss = recurrax.sequence_cross_entropy(logits, jnp.array([[1]]))
    assert math.isfinite(float(loss))
    np.testing.assert_allclose(loss, 2e4, rtol=1e-6)


def test_nll_takes_log_probabilities():
    log_probs = jnp.log(jnp.array([[[0.25, 0.75], [0.5, 0.5]]]))
    np.testing.assert_allclose(recurrax.sequence_nll(log_probs, jnp.array([[1, 0]])), -(np.log(0.75) + np.log(0.5)) / 2, rtol=1e-6)


def test_mse_with_step_and_unit_masks():
    pred = jax.random.normal(jax.random.key(4), (2, 5, 3))
    target = jax.random.normal(jax.random.key(5), (2, 5, 3))
    sq = (np.asarray(pred) - np.asarray(target)) ** 2
    lengths = jnp.array([5, 2])
    valid = np.arange(5) < np.asarray(lengths)[:, None]
    np.testing.assert_allclose(recurrax.sequence_mse(pred, target, lengths=lengths), sq[valid].mean(), rtol=1e-5)
    units = np.asarray(recurrax.teaching_mask(jnp.asarray(valid), last_k=1, units=[0, 2], num_units=3))
    np.testing.assert_allclose(recurrax.sequence_mse(pred, target, mask=jnp.asarray(units)), sq[units].mean(), rtol=1e-5)


def test_loss_of_no_valid_step_is_zero_not_nan():
    loss = recurrax.sequence_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), lengths=jnp.array([0, 0]))
    assert float(loss) == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: recurrax.sequence_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32)),
         r"Expected integer targets with shape \(2, 3\)"),
        (lambda: recurrax.sequence_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5))),
         r"Expected one-hot targets with shape \(2, 3, 4\)"),
        (lambda: recurrax.sequence_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), mask=jnp.ones((3, 2), bool)),
         r"Expected mask with shape \(2, 3\)"),
        (lambda: recurrax.sequence_mse(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5))),
         r"Expected targets with the predictions' shape \(2, 3, 4\)"),
        (lambda: recurrax.sequence_cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32), lengths=jnp.array([1.0, 2.0])),
         "integer dtype"),
    ],
)
def test_loss_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- optimiser and train step


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: recurrax.default_optimizer(0.0), "learning_rate > 0"),
        (lambda: recurrax.default_optimizer(-1e-3), "learning_rate > 0"),
        (lambda: recurrax.default_optimizer(1e-3, clip_norm=0.0), "clip_norm"),
        (lambda: recurrax.sgd_momentum(1e-2, clip_norm=-1.0), "clip_norm"),
        (lambda: recurrax.sgd_momentum(1e-2, momentum=1.0), r"momentum in \[0, 1\)"),
    ],
)
def test_optimizer_bad_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _model(key, hidden=8):
    k1, k2 = jax.random.split(key)
    return {"rnn": recurrax.init_stack(k1, 2, [hidden], cell="lstm"), "head": recurrax.init_dense(k2, hidden, 1)}


def _regression_loss(params, batch, key):
    xs, ys, lengths = batch
    preds = recurrax.many_to_many(params["rnn"], params["head"], xs, lengths=lengths)
    return recurrax.sequence_mse(preds, ys, lengths=lengths)


def _batch(key, batch=8, time=10):
    xs = jax.random.normal(key, (batch, time, 2))
    ys = jnp.cumsum(xs[..., :1], axis=1) * 0.3  # a running sum: needs memory
    lengths = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 1, time + 1)
    return xs, ys, lengths


def test_train_step_reports_pre_clip_grad_norm_and_applies_clipped_adam():
    params = _model(jax.random.key(0))
    batch = _batch(jax.random.key(1))
    scaled_loss = lambda p, b, k: 1e3 * _regression_loss(p, b, k)  # a gradient far above the threshold
    optimizer = recurrax.default_optimizer(1e-2, clip_norm=1.0)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(2))
    new_state, metrics = recurrax.make_train_step(scaled_loss, optimizer)(state, batch)
    grads = jax.grad(scaled_loss)(params, batch, None)
    norm = optax.tree.norm(grads)
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
    assert float(metrics["grad_norm"]) > 1.0
    # Reference: clip by hand to norm 1, then one Adam step (its first update is -lr * sign-like g/|g|).
    clipped = jax.tree.map(lambda g: g / norm, grads)
    adam = optax.adam(1e-2)
    updates, _ = adam.update(clipped, adam.init(params), params)
    chex.assert_trees_all_close(new_state.params, optax.apply_updates(params, updates), atol=1e-6)
    assert int(new_state.step) == 1
    assert not jnp.array_equal(jax.random.key_data(new_state.key), jax.random.key_data(state.key))


def test_train_step_does_not_recompile():
    optimizer = recurrax.default_optimizer(1e-2)
    traces = []

    def loss(p, b, k):
        traces.append(1)
        return _regression_loss(p, b, k)

    step = recurrax.make_train_step(loss, optimizer)
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))
    for i in range(3):
        state, _ = step(state, _batch(jax.random.key(10 + i)))
    assert len(traces) == 1


def test_fit_reduces_loss_with_eval_and_is_silent(capsys):
    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))
    step = recurrax.make_train_step(_regression_loss, optimizer)
    val = _batch(jax.random.key(99), batch=32)
    eval_fn = lambda p: {"mse": _regression_loss(p, val, None)}
    before = float(eval_fn(state.params)["mse"])
    batches = (_batch(jax.random.key(i)) for i in range(10_000))
    result = recurrax.fit(state, step, batches, num_steps=150, eval_fn=eval_fn, eval_every=50,
                          log_every=25, progress=False)
    assert capsys.readouterr().out == ""
    assert result.stopped is None and int(result.state.step) == 150
    evals = [r for r in result.history if "eval_mse" in r]
    assert [r["step"] for r in evals] == [50, 100, 150]
    assert evals[-1]["eval_mse"] < 0.5 * before
    assert [r["step"] for r in result.history if "loss" in r] == [25, 50, 75, 100, 125, 150]


def test_fit_stops_at_nan_naming_the_step(capsys):
    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))
    step = recurrax.make_train_step(_regression_loss, optimizer)
    good = [_batch(jax.random.key(i)) for i in range(2)]
    xs, ys, lengths = _batch(jax.random.key(5))
    poisoned = (xs, ys.at[0, 0, 0].set(jnp.nan), lengths.at[0].set(10))
    result = recurrax.fit(state, step, good + [poisoned] + good, progress=True)
    assert result.stopped is not None and "at step 3" in result.stopped and "nan" in result.stopped
    assert int(result.state.step) == 2
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.state.params))
    assert "at step 3" in capsys.readouterr().out


@jax.custom_vjp
def _nan_gradient_if(x, poison):
    return x  # the identity, whose gradient is NaN where ``poison`` is set


_nan_gradient_if.defvjp(lambda x, poison: (x, poison), lambda poison, g: (jnp.where(poison, jnp.nan, g), None))


def test_fit_discards_an_update_whose_gradient_is_nan_and_never_checkpoints_it(tmp_path):
    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))

    def loss(params, batch, key):
        *data, poison = batch
        return _regression_loss(jax.tree.map(lambda p: _nan_gradient_if(p, poison), params), tuple(data), key)

    step = recurrax.make_train_step(loss, optimizer)
    batches = lambda i: (*_batch(jax.random.key(i)), jnp.array(i == 2))  # the update to step 3 is poisoned
    assert math.isfinite(float(loss(state.params, batches(2), None)))  # only its gradient is NaN
    result = recurrax.fit(state, step, batches, num_steps=5, progress=False, checkpoint_dir=tmp_path)
    assert "gradient norm became nan at step 3" in result.stopped
    reference = state  # the two clean updates, taken by hand
    for i in range(2):
        reference, _ = step(reference, batches(i))
    chex.assert_trees_all_equal(result.state.params, reference.params)
    assert int(result.state.step) == 2 and [r["step"] for r in result.history] == [1, 2]
    assert recurrax.checkpoint_steps(tmp_path) == [2]
    chex.assert_trees_all_equal(recurrax.restore_checkpoint(tmp_path, state).params, reference.params)


def test_fit_discards_an_update_that_makes_params_non_finite(tmp_path):
    # A finite loss and gradient, but the third update overflows the params to infinity.
    overflow = optax.scale_by_schedule(lambda count: jnp.where(count == 2, jnp.inf, 1.0))
    optimizer = optax.chain(overflow, optax.sgd(1e-2))
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))
    step = recurrax.make_train_step(_regression_loss, optimizer)
    batches = lambda i: _batch(jax.random.key(i))
    result = recurrax.fit(state, step, batches, num_steps=5, progress=False, checkpoint_dir=tmp_path)
    assert "params became non-finite at step 3" in result.stopped
    assert int(result.state.step) == 2 and recurrax.checkpoint_steps(tmp_path) == [2]
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.state.params))
    nan_state = state._replace(params={**state.params, "head": jax.tree.map(lambda p: p * jnp.nan, state.params["head"])})
    with pytest.raises(ValueError, match=r"Expected a state with finite params, got NaN or infinite values in "
                                         r"params\['head'\]"):
        recurrax.fit(nan_state, step, batches, num_steps=1, progress=False, checkpoint_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_batch_that_does_not_match_the_model_is_a_clear_error():
    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(_model(jax.random.key(0)), optimizer, jax.random.key(1))
    step = recurrax.make_train_step(_regression_loss, optimizer)
    xs, ys, lengths = _batch(jax.random.key(1))
    with pytest.raises(ValueError, match=r"Expected x with last dimension 2"):
        step(state, (jnp.concatenate([xs, xs], -1), ys, lengths))
    with pytest.raises(ValueError, match=r"Expected lengths with shape \(8,\)"):
        step(state, (xs, ys, lengths[:3]))


def test_padded_targets_may_hold_any_id_but_valid_ones_must_be_classes():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 4))
    targets = jnp.array([[1, 2, -100], [3, -100, -100]])  # -100 on padding, as an "ignore" id
    lengths = jnp.array([2, 1])
    loss = recurrax.sequence_cross_entropy(logits, targets, lengths=lengths)
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    expected = -(log_probs[0, 0, 1] + log_probs[0, 1, 2] + log_probs[1, 0, 3]) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Expected targets in \[0, 3\]"):
        recurrax.sequence_cross_entropy(logits, targets)  # no lengths: -100 is a valid step's target
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"Expected targets in \[0, 3\]"):  # checked at run time
        jax.jit(lambda t: recurrax.sequence_cross_entropy(logits, t, lengths=lengths))(targets.at[0, 0].set(4))
