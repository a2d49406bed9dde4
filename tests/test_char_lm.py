"""Character LM: loss against a Python loop of ``stack_step``, greedy sampling against argmax stepping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax import char_lm

V = 7


def _model():
    return char_lm.init_char_lm(jax.random.key(0), V, [6, 5], embed_size=3, cell="gru")


def _loop_step(params, carries, token):
    carries, h = recurrax.stack_step(params.stack, carries, recurrax.embed(params.embedding, token))
    return carries, recurrax.dense(params.head, h)


def test_loss_equals_python_loop_with_padding():
    params = _model()
    ids = jax.random.randint(jax.random.key(1), (2, 6), 0, V)
    lengths = jnp.array([6, 3])
    total, count = 0.0, 0
    for b in range(2):
        carries = recurrax.stack_initial_carries(params.stack, ())
        for t in range(int(lengths[b]) - 1):
            carries, logits = _loop_step(params, carries, ids[b, t])
            total -= float(jax.nn.log_softmax(logits)[ids[b, t + 1]])
            count += 1
    np.testing.assert_allclose(char_lm.loss(params, ids, lengths=lengths), total / count, rtol=1e-5)
    np.testing.assert_allclose(char_lm.bits_per_char(params, ids, lengths=lengths), total / count / np.log(2), rtol=1e-5)


def test_greedy_sample_equals_argmax_stepping_after_the_prompt():
    params = _model()
    prompt = jnp.array([3, 1, 4], jnp.int32)
    carries = recurrax.stack_initial_carries(params.stack, ())
    for token in prompt[:-1]:
        carries, _ = _loop_step(params, carries, token)
    token, expected = prompt[-1], []
    for _ in range(5):
        carries, logits = _loop_step(params, carries, token)
        token = jnp.argmax(logits).astype(jnp.int32)
        expected.append(int(token))
    np.testing.assert_array_equal(char_lm.sample(params, prompt, 5), expected)
    sampled = char_lm.sample(params, prompt[:1], 4, key=jax.random.key(3), temperature=0.5)
    assert sampled.shape == (4,) and int(sampled.max()) < V


def test_bad_input():
    params = _model()
    with pytest.raises(ValueError, match="Expected a non-empty prompt"):
        char_lm.sample(params, jnp.zeros((0,), jnp.int32), 3)
    with pytest.raises(ValueError, match="T >= 2"):
        char_lm.loss(params, jnp.zeros((2, 1), jnp.int32))
    with pytest.raises(ValueError, match="token ids"):
        char_lm.loss(params, jnp.array([[9, 1]]))
    with pytest.raises(ValueError, match=r"Expected targets in \[0, 6\] \(the number of classes\)"):
        char_lm.loss(params, jnp.array([[1, 9]]))
