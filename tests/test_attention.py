"""Attention against NumPy transcriptions of the Bahdanau and Luong scores, with padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recurrax import attention

B, S, Q, K = 3, 5, 4, 6


def _numpy_scores(params, query, states):
    q, h = np.asarray(query, np.float64), np.asarray(states, np.float64)
    if isinstance(params, attention.AdditiveParams):
        w_q, w_k, v = (np.asarray(a, np.float64) for a in params)
        return np.stack([[v @ np.tanh(q[b] @ w_q + h[b, j] @ w_k) for j in range(S)] for b in range(B)])
    if isinstance(params, attention.GeneralParams):
        w = np.asarray(params.w, np.float64)
        return np.stack([[q[b] @ w @ h[b, j] for j in range(S)] for b in range(B)])
    return np.stack([[q[b] @ h[b, j] for j in range(S)] for b in range(B)])


@pytest.mark.parametrize("kind", attention.KINDS)
def test_attention_equals_numpy_and_ignores_padding(kind):
    key_size = Q if kind == "dot" else K
    params = attention.init_attention(jax.random.key(0), kind, Q, key_size, attention_size=7)
    query = jax.random.normal(jax.random.key(1), (B, Q))
    states = jax.random.normal(jax.random.key(2), (B, S, key_size))
    lengths = np.array([5, 3, 1])
    mask = jnp.asarray(np.arange(S)[None] < lengths[:, None])
    context, weights = attention.attend(params, query, attention.memory(params, states, mask))
    e = _numpy_scores(params, query, states)
    for b, n in enumerate(lengths):
        expected = np.exp(e[b, :n] - e[b, :n].max())
        expected /= expected.sum()
        np.testing.assert_allclose(weights[b, :n], expected, rtol=1e-5)
        assert np.all(np.asarray(weights[b, n:]) == 0.0)  # exactly zero on padding
        np.testing.assert_allclose(context[b], expected @ np.asarray(states[b, :n], np.float64), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    # Garbage (even inf) in the padding changes nothing.
    garbage = jnp.where(mask[..., None], states, jnp.inf)
    context2, weights2 = attention.attend(params, query, attention.memory(params, garbage, mask))
    np.testing.assert_array_equal(weights2, weights)
    np.testing.assert_allclose(context2, context, rtol=1e-6)


def test_empty_source_and_shape_errors():
    params = attention.init_attention(jax.random.key(0), "additive", Q, K)
    states = jnp.ones((B, S, K))
    empty = jnp.ones((B, S), bool).at[1].set(False)
    with pytest.raises(ValueError, match="at least one valid position; got an empty source"):
        attention.memory(params, states, empty)
    # Under jit the empty row gets zero weights and a zero context, never NaN.
    context, weights = jax.jit(lambda m: attention.attend(params, jnp.ones((B, Q)), attention.memory(params, states, m)))(empty)
    assert np.all(np.asarray(weights[1]) == 0) and np.all(np.asarray(context[1]) == 0)
    assert np.isfinite(np.asarray(context)).all()
    with pytest.raises(ValueError, match=r"Expected a boolean mask of shape \(3, 5\)"):
        attention.memory(params, states, jnp.ones((B, 4), bool))
    with pytest.raises(ValueError, match=r"Expected states with last dimension 6 \(the key size of w_key\), got 2"):
        attention.memory(params, jnp.ones((B, S, 2)))
    with pytest.raises(ValueError, match=r"Expected states with last dimension 4 \(the query size of w_query\), got 3"):
        attention.attend(params, jnp.ones((B, 3)), attention.memory(params, states))
    with pytest.raises(ValueError, match="Dot attention needs query_size == key_size, got 4 and 6"):
        attention.init_attention(jax.random.key(0), "dot", Q, K)
    with pytest.raises(ValueError, match="Expected attention kind in"):
        attention.init_attention(jax.random.key(0), "cosine", Q, K)
