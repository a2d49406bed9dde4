"""Decoding against Python loops, and beam search against brute force on a hand-built model."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax import decoding

PAD, SOS, EOS, A, B_ = 0, 1, 2, 3, 4
V, H = 5, 6
CHOICES = [EOS, A, B_]  # every id but <pad> and <sos>: what a decoder may emit


def _masked(logits):
    """The reference's own masking: <pad> and <sos> can never be chosen."""
    return jnp.asarray(logits).at[..., jnp.array([PAD, SOS])].set(-jnp.inf)


def _gru_model():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = (recurrax.gru.init(k1, V, H), recurrax.init_dense(k2, H, V))

    def step_fn(carry, tokens):
        carry, h = recurrax.gru.step(params[0], carry, jax.nn.one_hot(tokens, V))
        return carry, 3.0 * recurrax.dense(params[1], h)

    carry = recurrax.gru.GRUCarry(jax.random.normal(jax.random.key(1), (4, H)))
    return step_fn, carry


def _loop_decode(step_fn, carry, max_length, key=None, temperature=1.0):
    """Python loop: step, pick the token among CHOICES, stop each row at its <eos>."""
    batch = carry.h.shape[0]
    token = jnp.full((batch,), SOS, jnp.int32)
    tokens = np.full((batch, max_length), PAD)
    lengths, scores, done = np.zeros(batch, int), np.zeros(batch), np.zeros(batch, bool)
    for t in range(max_length):
        if done.all():
            break
        carry, logits = step_fn(carry, token)
        if key is None:
            token = jnp.argmax(_masked(logits), -1).astype(jnp.int32)
        else:
            key, sub = jax.random.split(key)
            token = jax.random.categorical(sub, _masked(logits) / temperature, axis=-1).astype(jnp.int32)
        log_probs = np.asarray(jax.nn.log_softmax(logits, -1))
        for b in range(batch):
            if not done[b]:
                tokens[b, t], lengths[b] = int(token[b]), t + 1
                scores[b] += log_probs[b, int(token[b])]
                done[b] = int(token[b]) == EOS
        token = jnp.asarray(tokens[:, t], jnp.int32)
    return tokens, lengths, scores


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_greedy_and_sampling_equal_python_loop(strategy):
    step_fn, carry = _gru_model()
    key = jax.random.key(7) if strategy == "sample" else None
    out = jax.jit(lambda c: decoding.decode(step_fn, c, jnp.full((4,), SOS, jnp.int32), max_length=12, eos_id=EOS,
                                            strategy=strategy, key=key, temperature=0.7))(carry)
    tokens, lengths, scores = _loop_decode(step_fn, carry, 12, key, 0.7)
    np.testing.assert_array_equal(out.tokens, tokens)
    np.testing.assert_array_equal(out.lengths, lengths)
    np.testing.assert_allclose(out.scores, scores, rtol=1e-5)
    assert (lengths < 12).any()  # some rows stop at <eos> before max_length


def test_beam_width_one_is_greedy():
    step_fn, carry = _gru_model()
    start = jnp.full((4,), SOS, jnp.int32)
    greedy = decoding.decode(step_fn, carry, start, max_length=12, eos_id=EOS)
    beam = decoding.decode(step_fn, carry, start, max_length=12, eos_id=EOS, strategy="beam", beam_width=1)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_array_equal(beam.lengths, greedy.lengths)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)


# A Markov model: the state is the last token; greedy takes "a" (0.6) first, but the most
# probable sequence is "b <eos>" (0.4 · 0.9 = 0.36).
P = np.full((V, V), 1e-9)
P[SOS, [A, B_]] = [0.6, 0.4]
P[A, [EOS, A, B_]] = [0.3, 0.36, 0.34]
P[B_, [EOS, A, B_]] = [0.9, 0.05, 0.05]
P[EOS, EOS] = P[PAD, PAD] = 1.0
P /= P.sum(1, keepdims=True)


def _markov_step(state, tokens):
    return tokens, jnp.log(jnp.asarray(P, jnp.float32))[tokens]


def _brute_force(max_length, length_penalty, P=P):
    best, best_value = None, -np.inf
    for n in range(1, max_length + 1):
        for seq in itertools.product(CHOICES, repeat=n):  # the decoder's choices: no <pad>, no <sos>
            if EOS in seq[:-1] or (seq[-1] != EOS and n < max_length):
                continue  # an <eos> ends a sequence; without one it runs to max_length
            logp = sum(np.log(P[prev, tok]) for prev, tok in zip((SOS,) + seq, seq))
            value = logp / n**length_penalty
            if value > best_value:
                best, best_value = seq, value
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_finds_the_most_probable_sequence(length_penalty):
    start = jnp.array([SOS], jnp.int32)
    out = decoding.decode(_markov_step, start, start, max_length=5, eos_id=EOS, strategy="beam", beam_width=3,
                          length_penalty=length_penalty)
    best = _brute_force(5, length_penalty)
    assert tuple(np.asarray(out.tokens[0, : int(out.lengths[0])])) == best
    assert best == (B_, EOS)
    greedy = decoding.decode(_markov_step, start, start, max_length=5, eos_id=EOS)
    assert int(greedy.tokens[0, 0]) == A  # greedy misses it
    np.testing.assert_allclose(out.scores[0], np.log(0.4 * 0.9), rtol=1e-5)


# A model that ranks <pad> and <sos> first after every token; among the allowed choices it
# prefers <unk> (id 3, "A" above), which stays a legitimate output.
UNK = recurrax.vocab.UNK_ID
Q = np.full((V, V), 1e-9)
Q[:, PAD], Q[:, SOS] = 0.4, 0.3
Q[SOS, [UNK, B_]] = [0.2, 0.1]
Q[UNK, [EOS, UNK, B_]] = [0.05, 0.15, 0.1]
Q[B_, [EOS, UNK, B_]] = [0.27, 0.015, 0.015]
Q /= Q.sum(1, keepdims=True)


def _q_step(state, tokens):
    return tokens, jnp.log(jnp.asarray(Q, jnp.float32))[tokens]


def _q_log_prob(tokens, length):
    return sum(np.log(Q[prev, tok]) for prev, tok in zip((SOS,) + tuple(tokens[:length]), tokens[:length]))


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_decoders_never_emit_pad_or_sos_even_when_the_model_prefers_them(strategy):
    assert (PAD, SOS, EOS, UNK) == (recurrax.vocab.PAD_ID, recurrax.vocab.SOS_ID, recurrax.vocab.EOS_ID, 3)
    start = jnp.full((64,), SOS, jnp.int32)
    out = jax.jit(lambda s: decoding.decode(_q_step, s, s, max_length=5, eos_id=EOS, strategy=strategy,
                                            key=jax.random.key(3), beam_width=3))(start)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row, n in zip(tokens, lengths):
        assert set(row[:n].tolist()) <= set(CHOICES) and (row[n:] == PAD).all()
        assert EOS not in row[: n - 1]
    # Scores stay the model's log-probabilities of the emitted tokens (not renormalised).
    np.testing.assert_allclose(out.scores, [_q_log_prob(row, n) for row, n in zip(tokens, lengths)], rtol=1e-5)
    if strategy == "greedy":  # the argmax over the allowed choices: <unk> five times
        assert (tokens == UNK).all() and (lengths == 5).all()
    if strategy == "sample":
        assert (tokens == UNK).any() and (tokens == B_).any() and (lengths < 5).any()
    if strategy == "beam":  # the most probable sequence over the allowed choices
        best = _brute_force(5, 0.0, P=Q)
        assert best == (B_, EOS) and tuple(tokens[0, : lengths[0]]) == best


def test_mask_special_tokens():
    logits = jnp.arange(5.0)
    np.testing.assert_array_equal(decoding.mask_special_tokens(logits, eos_id=EOS), [-np.inf, -np.inf, 2, 3, 4])
    np.testing.assert_array_equal(decoding.mask_special_tokens(logits, eos_id=EOS, pad_id=4, sos_id=None),
                                  [0, 1, 2, 3, -np.inf])
    np.testing.assert_array_equal(decoding.mask_special_tokens(logits, eos_id=0, pad_id=0), [0, -np.inf, 2, 3, 4])
    with pytest.raises(ValueError, match=r"Expected sos_id in \[0, 4\] \(the logits' vocabulary\), got 5"):
        decoding.mask_special_tokens(logits, eos_id=EOS, sos_id=5)


@pytest.mark.parametrize("options, message", [
    ({"strategy": "top_p"}, "Expected a decoding strategy in"),
    ({"strategy": "beam", "beam_width": 0}, "Expected beam_width to be an integer >= 1, got 0"),
    ({"strategy": "sample"}, "Sampling needs a PRNG key"),
    ({"strategy": "sample", "key": jax.random.key(0), "temperature": 0.0}, "Expected temperature > 0"),
    ({"max_length": 0}, "max_length .* positive integer"),
])
def test_bad_decoding_options(options, message):
    start = jnp.array([SOS], jnp.int32)
    with pytest.raises(ValueError, match=message):
        decoding.decode(_markov_step, start, start, **{"max_length": 4, "eos_id": EOS, **options})
    with pytest.raises(ValueError, match=r"Expected integer start_tokens of shape \(B,\)"):
        decoding.decode(_markov_step, start, jnp.array([1.0]), max_length=4, eos_id=EOS)
