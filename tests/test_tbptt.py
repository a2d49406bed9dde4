"""TBPTT(k1, k2) against a Python-loop reference, and against full BPTT when k1 = k2 = T."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax

D, H, V, T = 3, 5, 4, 12


@pytest.fixture(autouse=True)
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):  # optax's arithmetic under the strict suite
        yield


def _model(key):
    k1, k2 = jax.random.split(key)
    return {"cell": recurrax.lstm.init(k1, D, H), "head": recurrax.init_dense(k2, H, V)}


def model_step(params, carry, x):
    carry, h = recurrax.lstm.step(params["cell"], carry, x)
    return carry, recurrax.dense(params["head"], h)


def step_loss(logits, target):
    return optax.softmax_cross_entropy_with_integer_labels(logits, target)


def _data(key, batch=2):
    xs = jax.random.normal(key, (batch, T, D))
    targets = jax.random.randint(jax.random.fold_in(key, 1), (batch, T), 0, V)
    return xs, targets


def _reference_truncated(params, carry, xs, targets, lengths, k1, k2, resets=None, teaching=None):
    """Python loop: for each update, forward (no gradient) to the window start, then the window.

    A reset before a valid step restarts that sequence from the zero carry; only valid steps
    where ``teaching`` holds are scored."""
    valid = np.arange(T) < np.asarray(lengths)[:, None]
    resets = np.zeros_like(valid) if resets is None else np.asarray(resets)
    scored = valid if teaching is None else valid & np.asarray(teaching)
    total = scored.sum()

    def run(params, carry, start, stop):
        ys = []
        for t in range(start, stop):
            r = jnp.asarray(resets[:, t])[:, None]
            carry = jax.tree.map(lambda c: jnp.where(r, jnp.zeros_like(c), c), carry)
            new, y = model_step(params, carry, xs[:, t])
            m = jnp.asarray(valid[:, t])[:, None]
            carry = jax.tree.map(lambda n, o: jnp.where(m, n, o), new, carry)
            ys.append(y)
        return carry, ys

    grad_sum, loss_sum = jax.tree.map(jnp.zeros_like, params), 0.0
    num = -(-T // k1)
    for end in [T - (num - 1 - u) * k1 for u in range(num)]:  # the last update ends at T
        start = max(end - k2, 0)
        scored_from = max(end - k1, 0)
        start_carry = jax.lax.stop_gradient(run(params, carry, 0, start)[0])

        def window_sum(p):
            _, ys = run(p, start_carry, start, end)
            losses = [step_loss(y, targets[:, t]) * scored[:, t] for t, y in zip(range(start, end), ys)]
            return sum(l.sum() for t, l in zip(range(start, end), losses) if t >= scored_from)

        value, grads = jax.value_and_grad(window_sum)(params)
        loss_sum += value
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return loss_sum / total, jax.tree.map(lambda g: g / total, grad_sum)


@pytest.mark.parametrize("with_resets, with_teaching", [(False, False), (True, False), (True, True)],
                         ids=["stream", "resets", "resets-teaching"])
@pytest.mark.parametrize("k1, k2", [(4, 4), (3, 5), (5, 8), (1, 3), (12, 12)])
def test_truncated_gradient_equals_python_loop(k1, k2, with_resets, with_teaching):
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(1))
    lengths = jnp.array([12, 7])
    # Resets inside windows, on a window boundary (step 4) and on padding (row 1, step 9).
    resets = np.zeros((2, T), bool)
    if with_resets:
        resets[0, [4, 6]] = resets[1, [2, 9]] = True
    # Teaching: only every third step is scored (all still update the carry).
    teaching = (np.arange(T) % 3 == 2)[None].repeat(2, 0) if with_teaching else None
    carry = jax.tree.map(lambda c: c + 0.5, recurrax.lstm.initial_carry(params["cell"], (2,)))
    loss, grads = recurrax.truncated_gradient(
        model_step, step_loss, params, carry, xs, targets, k1=k1, k2=k2, lengths=lengths,
        resets=jnp.asarray(resets), teaching=None if teaching is None else jnp.asarray(teaching))
    ref_loss, ref_grads = _reference_truncated(params, carry, xs, targets, lengths, k1, k2, resets, teaching)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    chex.assert_trees_all_close(grads, ref_grads, atol=1e-6, rtol=1e-4)


def test_k1_equals_k2_equals_t_is_full_bptt():
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(2))
    lengths = jnp.array([12, 5])
    carry = recurrax.lstm.initial_carry(params["cell"], (2,))

    def full_loss(p):
        _, logits = recurrax.unroll(functools.partial(model_step, p), carry, xs, lengths=lengths)
        per_step = step_loss(logits, targets)
        return recurrax.sequence_cross_entropy(logits, targets, lengths=lengths), per_step

    (loss, _), grads = jax.value_and_grad(full_loss, has_aux=True)(params)
    t_loss, t_grads = recurrax.truncated_gradient(model_step, step_loss, params, carry, xs, targets,
                                                  k1=T, k2=T, lengths=lengths)
    np.testing.assert_allclose(t_loss, loss, rtol=1e-6)
    chex.assert_trees_all_close(t_grads, grads, atol=1e-7, rtol=1e-5)
    # Truncation changes the gradient (the task has dependencies longer than 2 steps).
    _, short = recurrax.truncated_gradient(model_step, step_loss, params, carry, xs, targets, k1=2, k2=2,
                                           lengths=lengths)
    assert not np.allclose(short["cell"].w_h, grads["cell"].w_h, atol=1e-5)


def test_full_window_with_resets_is_full_bptt_of_the_separate_sequences():
    # k1 = k2 = T over a row holding two sequences (5 + 7 steps) equals full BPTT over the
    # two sequences run apart, each from the zero carry.
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(5), batch=1)
    zero = recurrax.lstm.initial_carry(params["cell"], (1,))
    resets = jnp.zeros((1, T), bool).at[0, 5].set(True)
    t_loss, t_grads = recurrax.truncated_gradient(model_step, step_loss, params, zero, xs, targets,
                                                  k1=T, k2=T, resets=resets)

    def separate(p):
        losses = [step_loss(recurrax.unroll(functools.partial(model_step, p), zero, xs[:, part])[1],
                            targets[:, part]) for part in (slice(0, 5), slice(5, T))]
        return jnp.concatenate(losses, axis=1).mean()

    loss, grads = jax.value_and_grad(separate)(params)
    np.testing.assert_allclose(t_loss, loss, rtol=1e-6)
    chex.assert_trees_all_close(t_grads, grads, atol=1e-7, rtol=1e-5)


def test_tbptt_train_step_equals_sequential_updates():
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(3))
    optimizer = recurrax.default_optimizer(1e-2)
    carry0 = recurrax.lstm.initial_carry(params["cell"], (2,))
    state = recurrax.init_train_state(params, optimizer, jax.random.key(4))
    train_step = recurrax.make_tbptt_train_step(model_step, step_loss, optimizer, k1=4, k2=6)
    new_state, final_carry, metrics = train_step(state, carry0, (xs, targets))
    assert metrics["loss"].shape == (3,) and int(new_state.step) == 3

    # Reference: three optax updates; window u starts from the carry the previous window computed
    # (with the previous params) k2 steps before its end.
    p, opt_state, start = params, optimizer.init(params), carry0
    carries = {0: carry0}
    for u, end in enumerate((4, 8, 12)):
        begin = max(end - 6, 0)
        start = carries[begin]

        def window_loss(p, start=start, begin=begin, end=end):
            c, losses, seen = start, [], {}
            for t in range(begin, end):
                c, y = model_step(p, c, xs[:, t])
                seen[t + 1] = c
                if t >= end - 4:
                    losses.append(step_loss(y, targets[:, t]))
            return jnp.mean(jnp.stack(losses)), seen

        (loss, seen), grads = jax.value_and_grad(window_loss, has_aux=True)(p)
        np.testing.assert_allclose(metrics["loss"][u], loss, rtol=1e-5)
        carries.update({t: jax.lax.stop_gradient(c) for t, c in seen.items()})
        updates, opt_state = optimizer.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
    chex.assert_trees_all_close(new_state.params, p, atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(final_carry, carries[12], atol=1e-6)


@pytest.mark.parametrize(
    "k1, k2, message",
    [(5, 3, "Expected k1 <= k2"), (0, 3, "k1 .* positive integer"), (2, -1, "k2 .* positive integer")],
)
def test_bad_truncation(k1, k2, message):
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(1))
    carry = recurrax.lstm.initial_carry(params["cell"], (2,))
    with pytest.raises(ValueError, match=message):
        recurrax.truncated_gradient(model_step, step_loss, params, carry, xs, targets, k1=k1, k2=k2)
    with pytest.raises(ValueError, match=message):
        recurrax.make_tbptt_train_step(model_step, step_loss, optax.adam(1e-3), k1=k1, k2=k2)


def test_targets_that_do_not_match_xs():
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(1))
    carry = recurrax.lstm.initial_carry(params["cell"], (2,))
    with pytest.raises(ValueError, match=r"Expected targets starting with \(\*batch, T\) = \(2, 12\)"):
        recurrax.truncated_gradient(model_step, step_loss, params, carry, xs, targets[:, :5], k1=4, k2=4)


def test_train_step_resets_restart_from_reset_carry():
    # Resetting at step 0 from reset_carry equals starting the chunk from that carry.
    params = _model(jax.random.key(0))
    xs, targets = _data(jax.random.key(6))
    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(4))
    fresh = jax.tree.map(lambda c: c + 0.25, recurrax.lstm.initial_carry(params["cell"], (2,)))
    stale = jax.tree.map(lambda c: c - 3.0, fresh)
    train_step = recurrax.make_tbptt_train_step(model_step, step_loss, optimizer, k1=4, k2=6, reset_carry=fresh)
    resets = jnp.zeros((2, T), bool).at[:, 0].set(True)
    reset_state, reset_carry, _ = train_step(state, stale, (xs, targets, None, resets))
    plain_state, plain_carry, _ = train_step(state, fresh, (xs, targets))
    chex.assert_trees_all_close(reset_state.params, plain_state.params, atol=1e-6)
    chex.assert_trees_all_close(reset_carry, plain_carry, atol=1e-6)
    with pytest.raises(ValueError, match=r"Expected batch = \(xs, targets\[, lengths\[, resets\]\]\)"):
        train_step(state, fresh, (xs,))
