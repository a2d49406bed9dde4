"""``recurrax.truncation``: the recall task, truncated/full gradients against Python loops, cosine."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax
from recurrax import tasks, truncation

L, T, V, H, B = 3, 8, 4, 6, 5


@pytest.fixture(autouse=True)
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):  # optax's arithmetic under the strict suite
        yield


def model_step(params, carry, x):
    carry, h = recurrax.gru.step(params["cell"], carry, x)
    return carry, recurrax.dense(params["head"], h)


def _setup():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"cell": recurrax.gru.init(k1, V + 1, H), "head": recurrax.init_dense(k2, H, V)}
    task = tasks.recall_task(k3, B, lag=L, length=T, vocab_size=V)
    return params, recurrax.gru.initial_carry(params["cell"], (B,)), task


def test_recall_task_answer_is_the_flagged_symbol():
    _, _, task = _setup()
    xs, targets = np.asarray(task.xs), np.asarray(task.targets)
    assert xs.shape == (B, T, V + 1)
    np.testing.assert_array_equal(xs[:, :, :V].sum(-1), 1.0)  # one symbol per step
    np.testing.assert_array_equal(np.nonzero(xs[:, :, V])[1], [T - L] * B)  # the flag, at T - L only
    np.testing.assert_array_equal(targets[:, -1], xs[:, T - L, :V].argmax(-1))
    np.testing.assert_array_equal(np.asarray(task.teaching), np.arange(T)[None].repeat(B, 0) == T - 1)
    with pytest.raises(ValueError, match="Expected lag <= length .* got 9 > 8"):
        tasks.recall_task(jax.random.key(0), B, lag=9, length=T)
    with pytest.raises(ValueError, match="lag .* positive integer"):
        tasks.recall_task(jax.random.key(0), B, lag=0, length=T)


def _loop_gradient(params, carry, task, k2):
    """Python loop: the last step's loss, backpropagated through the last k2 steps only."""
    start = max(T - k2, 0)
    for t in range(start):
        carry, _ = model_step(params, carry, task.xs[:, t])
    carry = jax.lax.stop_gradient(carry)

    def loss(p):
        c = carry
        for t in range(start, T):
            c, y = model_step(p, c, task.xs[:, t])
        return optax.softmax_cross_entropy_with_integer_labels(y, task.targets[:, -1]).mean()

    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("k2", [1, 2, 3, 5, 16, None])
def test_bptt_gradient_equals_python_loop(k2):
    params, carry, task = _setup()
    gradient = truncation.bptt_gradient(model_step, optax.softmax_cross_entropy_with_integer_labels, k2)
    loss, grads = gradient(params, carry, task)
    ref_loss, ref_grads = _loop_gradient(params, carry, task, T if k2 is None else k2)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    chex.assert_trees_all_close(grads, ref_grads, atol=1e-7, rtol=1e-5)


def test_gradient_cosine_and_accuracy():
    a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
    b = {"w": jnp.array([2.0, -1.0]), "b": jnp.array([[1.0]])}
    expected = (2.0 - 2.0 + 3.0) / (np.sqrt(14.0) * np.sqrt(6.0))
    assert truncation.gradient_cosine(a, b) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="Expected gradients of the same size, got 3 and 2 entries"):
        truncation.gradient_cosine(a, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="cosine of a zero gradient"):
        truncation.gradient_cosine(a, jax.tree.map(jnp.zeros_like, a))
    params, carry, task = _setup()
    logits = recurrax.unroll(lambda c, x: model_step(params, c, x), carry, task.xs)[1][:, -1]
    expected = np.mean(np.asarray(logits).argmax(-1) == np.asarray(task.targets[:, -1]))
    assert float(truncation.accuracy(model_step, params, carry, task)) == pytest.approx(expected)
