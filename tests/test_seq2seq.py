"""Encoder–decoder: teacher forcing against a Python loop, padding invariance, attention, decoding."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax import decoding, seq2seq
from recurrax.vocab import EOS_ID, PAD_ID, SOS_ID

SV, TV = 9, 8
CONFIGS = {
    "plain-lstm": {},
    "bidirectional-gru-additive": {"encoder_cell": "gru", "decoder_cell": "gru", "bidirectional_encoder": True,
                                   "attention": "additive", "decoder_sizes": (12, 12)},
    "lstm-general": {"attention": "general", "encoder_sizes": (10,), "decoder_sizes": (14,)},
    "lstm-dot": {"attention": "dot", "encoder_sizes": (10,), "decoder_sizes": (10,)},
}


def _model(name):
    return seq2seq.init_seq2seq(jax.random.key(0), SV, TV, embed_size=5, **{"encoder_sizes": (10,), **CONFIGS[name]})


def _batch():
    source = jnp.array([[4, 5, 6, 7, 3], [8, 3, 0, 0, 0], [5, 0, 0, 0, 0]])
    source_lengths = jnp.array([5, 2, 1])
    target = jnp.array([[3, 4, 5], [6, 0, 0], [7, 3, 0]])
    target_lengths = jnp.array([3, 1, 2])
    return source, source_lengths, target, target_lengths


def test_teacher_forcing_layout():
    inputs, outputs = seq2seq.teacher_forcing(jnp.array([[5, 6, 0], [7, 0, 0]]), jnp.array([2, 1]))
    np.testing.assert_array_equal(inputs, [[SOS_ID, 5, 6, PAD_ID], [SOS_ID, 7, PAD_ID, PAD_ID]])
    np.testing.assert_array_equal(outputs, [[5, 6, EOS_ID, PAD_ID], [7, EOS_ID, PAD_ID, PAD_ID]])


@pytest.mark.parametrize("name", CONFIGS)
def test_loss_equals_step_by_step_python_loop(name):
    params = _model(name)
    source, source_lengths, target, target_lengths = _batch()
    total, count = 0.0, 0
    step = jax.jit(seq2seq.decoder_step)  # one compile per model; the loop itself stays in Python
    for b in range(3):  # each example alone, unpadded
        n, m = int(source_lengths[b]), int(target_lengths[b])
        state = seq2seq.encode_source(params, source[b:b + 1, :n], jnp.array([n]))
        inputs = [SOS_ID] + target[b, :m].tolist()
        outputs = target[b, :m].tolist() + [EOS_ID]
        for token, expected in zip(inputs, outputs):
            state, logits, weights = step(params, state, jnp.array([token]))
            total -= float(jax.nn.log_softmax(logits[0])[expected])
            count += 1
    loss = seq2seq.loss(params, source, source_lengths, target, target_lengths)
    np.testing.assert_allclose(loss, total / count, rtol=1e-5)


@pytest.mark.parametrize("name", ["bidirectional-gru-additive", "lstm-general"])
def test_source_padding_never_changes_the_translation(name):
    params = _model(name)
    source, source_lengths, _, _ = _batch()
    garbage = jnp.where(jnp.arange(5)[None] < source_lengths[:, None], source, 7)
    wider = jnp.concatenate([garbage, jnp.full((3, 3), 6)], axis=1)
    for options in ({"strategy": "greedy"}, {"strategy": "beam", "beam_width": 3, "length_penalty": 0.6}):
        a = seq2seq.translate(params, source, source_lengths, max_length=7, **options)
        b = seq2seq.translate(params, wider, source_lengths, max_length=7, **options)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    # ... and each row alone, unpadded, decodes the same.
    greedy = seq2seq.translate(params, source, source_lengths, max_length=7)
    for row in range(3):
        n = int(source_lengths[row])
        alone = seq2seq.translate(params, source[row:row + 1, :n], jnp.array([n]), max_length=7)
        np.testing.assert_array_equal(alone.tokens[0], greedy.tokens[row])


def test_attention_weights_sum_to_one_and_are_zero_on_padding():
    params = _model("bidirectional-gru-additive")
    source, source_lengths, target, target_lengths = _batch()
    inputs, _ = seq2seq.teacher_forcing(target, target_lengths)
    _, weights = seq2seq.decode_teacher_forced(params, source, source_lengths, inputs)
    assert weights.shape == (3, 4, 5)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    padding = np.arange(5)[None, None] >= np.asarray(source_lengths)[:, None, None]
    assert np.all(np.asarray(weights)[np.broadcast_to(padding, weights.shape)] == 0.0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_attention_map_is_the_weights_of_each_decoded_token(strategy):
    params = _model("lstm-general")
    source, source_lengths, _, _ = _batch()
    decoded = seq2seq.translate(params, source, source_lengths, max_length=6, strategy=strategy, beam_width=3)
    weights = np.asarray(seq2seq.attention_map(params, source, source_lengths, decoded))
    step = jax.jit(seq2seq.decoder_step)
    for b in range(3):  # each row alone, stepping the decoder through its own output tokens
        n, m = int(source_lengths[b]), int(decoded.lengths[b])
        state = seq2seq.encode_source(params, source[b:b + 1, :n], jnp.array([n]))
        token = SOS_ID
        for t in range(m):
            state, _, expected = step(params, state, jnp.array([token]))
            np.testing.assert_allclose(weights[b, t, :n], expected[0], rtol=1e-5, atol=1e-7)
            token = int(decoded.tokens[b, t])
        assert (weights[b, m:] == 0).all() and (weights[b, :, n:] == 0).all()
    with pytest.raises(ValueError, match="Expected a model with attention"):
        seq2seq.attention_map(_model("plain-lstm"), source, source_lengths, decoded)


def test_full_scheduled_sampling_follows_greedy_decoding():
    # sampling_ratio = 1 feeds back the argmax at every step after <sos>: the greedy decode.
    params = _model("lstm-general")
    source, source_lengths, _, _ = _batch()
    greedy = seq2seq.translate(params, source, source_lengths, max_length=6)
    inputs = jnp.full((3, 6), 5, jnp.int32).at[:, 0].set(SOS_ID)  # the given tokens must be ignored
    logits, _ = seq2seq.decode_teacher_forced(params, source, source_lengths, inputs, sampling_ratio=1.0,
                                              key=jax.random.key(1))
    for row in range(3):
        n = int(greedy.lengths[row])
        choices = decoding.mask_special_tokens(logits[row, :n], eos_id=EOS_ID)  # decode never picks <pad>/<sos>
        np.testing.assert_array_equal(np.argmax(choices, -1), greedy.tokens[row, :n])


def test_bad_input():
    params = _model("plain-lstm")
    source, source_lengths, target, target_lengths = _batch()
    with pytest.raises(ValueError, match="empty source"):
        seq2seq.translate(params, source, source_lengths.at[1].set(0), max_length=4)
    with pytest.raises(ValueError, match="token ids"):
        seq2seq.loss(params, source.at[0, 0].set(SV), source_lengths, target, target_lengths)
    with pytest.raises(ValueError, match=r"Expected decoder_inputs in \[0, 7\] \(the target vocabulary\)"):
        seq2seq.loss(params, source, source_lengths, target.at[0, 0].set(TV + 3), target_lengths)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        seq2seq.loss(params, source, source_lengths, target, target_lengths, sampling_ratio=0.5)
    with pytest.raises(ValueError, match="Expected a decoding strategy"):
        seq2seq.translate(params, source, source_lengths, max_length=4, strategy="nucleus")
    with pytest.raises(ValueError, match="beam_width to be an integer >= 1"):
        seq2seq.translate(params, source, source_lengths, max_length=4, strategy="beam", beam_width=0)


def test_loss_under_jit_with_closed_over_lengths():
    # Lengths closed over by a jitted function are constants, not tracers: the empty-source
    # check must still read them on the host (it raised ConcretizationTypeError).
    params = _model("bidirectional-gru-additive")
    source, source_lengths, target, target_lengths = _batch()
    eager = seq2seq.loss(params, source, source_lengths, target, target_lengths)
    for lengths in (source_lengths, np.asarray(source_lengths)):  # a jax.Array or a NumPy constant
        closed = jax.jit(lambda p, s, t: seq2seq.loss(p, s, lengths, t, target_lengths))
        np.testing.assert_allclose(closed(params, source, target), eager, rtol=1e-6)
    as_arguments = jax.jit(seq2seq.loss)(params, source, source_lengths, target, target_lengths)
    np.testing.assert_allclose(as_arguments, eager, rtol=1e-6)
    empty = source_lengths.at[1].set(0)
    with pytest.raises(ValueError, match="empty source"):  # a constant is still checked at once
        jax.jit(lambda p, s: seq2seq.loss(p, s, empty, target, target_lengths))(params, source)


def test_float64_model_is_float64_throughout():
    with jax.enable_x64(True):
        config = {"encoder_sizes": (10,), **CONFIGS["bidirectional-gru-additive"]}
        params = seq2seq.init_seq2seq(jax.random.key(0), SV, TV, embed_size=5, dtype=jnp.float64,
                                      **config)
        dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(params)}
        assert dtypes == {"float64"}
        source, source_lengths, target, target_lengths = _batch()
        loss = seq2seq.loss(params, source, source_lengths, target, target_lengths)
        assert loss.dtype == jnp.float64
        # ... and the same model in float32 gives the same loss, to float32 rounding
        narrow = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
        narrow_loss = seq2seq.loss(narrow, source, source_lengths, target, target_lengths)
        np.testing.assert_allclose(narrow_loss, loss, rtol=1e-5)


def test_cell_options_reach_the_families_init():
    seen = []

    def init(key, input_size, hidden_size, *, scale, **options):
        seen.append(scale)
        params = recurrax.elman.init(key, input_size, hidden_size, **options)
        return params._replace(w_h=scale * params.w_h)

    elman = recurrax.elman
    scaled = types.SimpleNamespace(
        name="scaled_elman", init=init, initial_carry=elman.initial_carry, step=elman.step
    )

    def model(encoder_scale, decoder_scale):
        return seq2seq.init_seq2seq(jax.random.key(0), SV, TV, embed_size=5, encoder_sizes=(6,),
                                    decoder_sizes=(6,), encoder_cell=scaled, decoder_cell=scaled,
                                    encoder_cell_kwargs={"scale": encoder_scale},
                                    decoder_cell_kwargs={"scale": decoder_scale})

    plain, scaled_params = model(1.0, 1.0), model(0.5, 2.0)
    assert seen == [1.0, 1.0, 0.5, 2.0]
    for part, scale in (("encoder", 0.5), ("decoder", 2.0)):
        w_h = getattr(scaled_params, part).layers[0].cell.w_h
        np.testing.assert_array_equal(w_h, scale * getattr(plain, part).layers[0].cell.w_h)
    # a built-in family's option, per layer
    lstm = seq2seq.init_seq2seq(jax.random.key(0), SV, TV, decoder_sizes=(4, 4),
                                decoder_cell_kwargs=[{"forget_bias": 3.0}, {"peephole": True}])
    np.testing.assert_array_equal(lstm.decoder.layers[0].cell.b.reshape(4, 4)[1], 3.0)
    assert lstm.decoder.layers[0].cell.w_peep is None
    assert lstm.decoder.layers[1].cell.w_peep.shape == (3, 4)
