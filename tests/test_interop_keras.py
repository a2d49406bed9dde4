"""Keras 3 interop (JAX backend): converted weights reproduce Keras's own outputs on a masked batch."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.interop import carry_from_keras, carry_to_keras, from_keras, to_keras

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # keras was imported earlier with another backend
    pytest.skip("Keras runs on another backend in this process", allow_module_level=True)

# Keras's variables warn under NumPy 2 when converted with np.array; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

B, T, D, H = 3, 5, 3, 4
LENGTHS = np.array([5, 3, 1], np.int32)


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(B, T, D)).astype(np.float32)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    xs[~mask] = 7.0  # padding content must not matter
    return xs, mask


def randomize(layer, seed: int):
    """Nonzero weights everywhere (Keras initialises biases to zero)."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [0.5 * rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
    )


def loose():
    """Keras's own code relies on JAX's default promotion rules (conftest.py makes them strict)."""
    return jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow")


def build(layer):
    with loose()[0], loose()[1]:
        layer.build((B, T, D))
    return layer


def keras_run(layer, xs, mask, states):
    with loose()[0], loose()[1]:
        out = layer(xs, mask=mask, initial_state=[jnp.asarray(s) for s in states])
    return [np.asarray(o) for o in out]


def initial_states(kind: str, directions: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    per = 2 if kind == "LSTM" else 1
    return [0.5 * rng.normal(size=(B, H)).astype(np.float32) for _ in range(per * directions)]


def ours(params, xs, carry):
    run = (
        recurrax.bidirectional if isinstance(params, recurrax.BidirectionalParams) else recurrax.rnn
    )
    final, ys = run(params, jnp.asarray(xs), carry=carry, lengths=jnp.asarray(LENGTHS))
    return np.asarray(ys), carry_to_keras(final, params)


def assert_valid_steps_close(a, b, mask):
    np.testing.assert_allclose(a[mask], b[mask], atol=1e-5, rtol=0)


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


LAYERS = [
    ("LSTM", {}),
    ("GRU", {"reset_after": True}),
    ("GRU", {"reset_after": False}),
    ("SimpleRNN", {}),
    ("SimpleRNN", {"activation": "relu"}),
    ("LSTM", {"use_bias": False}),
]


@pytest.mark.parametrize("kind, kwargs", LAYERS, ids=lambda v: str(v))
def test_matches_keras(kind, kwargs):
    xs, mask = batch()
    layer = getattr(keras.layers, kind)(H, return_sequences=True, return_state=True, **kwargs)
    build(layer)
    randomize(layer, 1)
    states = initial_states(kind, 1)
    ys, *finals = keras_run(layer, xs, mask, states)

    params = from_keras(layer)  # the layer object: its configuration is read off it
    listed = from_keras(layer.get_weights(), kind, **kwargs)
    assert bits(params) == bits(listed)
    our_ys, our_finals = ours(params, xs, carry_from_keras(states, params))
    assert_valid_steps_close(our_ys, ys, mask)
    for a, b in zip(our_finals, finals):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    exported = to_keras(params, use_bias=kwargs.get("use_bias", True))
    if not (kind == "GRU" and kwargs["reset_after"]):  # no bias split to choose: the same arrays
        assert [w.tobytes() for w in exported] == [w.tobytes() for w in layer.get_weights()]
    again = from_keras(exported, kind, **kwargs)
    assert bits(again) == bits(params)
    # the exported list loads into Keras and gives the same outputs
    layer.set_weights(exported)
    ys_again = keras_run(layer, xs, mask, states)[0]
    assert_valid_steps_close(ys_again, ys, mask)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_matches_keras_bidirectional(kind, merge_mode):
    xs, mask = batch(1)
    inner = getattr(keras.layers, kind)(H, return_sequences=True, return_state=True)
    layer = keras.layers.Bidirectional(inner, merge_mode=merge_mode)
    build(layer)
    randomize(layer, 2)
    states = initial_states(kind, 2)
    ys, *finals = keras_run(layer, xs, mask, states)

    params = from_keras(layer)
    assert isinstance(params, recurrax.BidirectionalParams)
    assert bits(params) == bits(
        from_keras(layer.get_weights(), kind, bidirectional=True, merge_mode=merge_mode)
    )
    our_ys, our_finals = ours(params, xs, carry_from_keras(states, params))
    assert_valid_steps_close(our_ys, ys, mask)
    for a, b in zip(our_finals, finals):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert bits(
        from_keras(to_keras(params), kind, bidirectional=True, merge_mode=merge_mode)
    ) == bits(params)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_go_backwards_is_refused_with_its_recurrax_equivalent(kind):
    xs, mask = batch(2)
    layer = getattr(keras.layers, kind)(
        H, return_sequences=True, return_state=True, go_backwards=True
    )
    build(layer)
    randomize(layer, 3)
    states = initial_states(kind, 1)
    ys, *finals = keras_run(layer, xs, mask, states)
    message = r"go_backwards=True.*reverse=True.*jnp\.flip\(ys, axis=-2\)"
    with pytest.raises(ValueError, match=message):
        from_keras(layer)  # the params alone would run forwards
    # What the message says to do: the weights, run with reverse=True, outputs flipped in time
    # (Keras's go_backwards outputs are in processing order, last input step first).
    params = from_keras(layer.get_weights(), kind)
    final, ours = recurrax.rnn(
        params, jnp.asarray(xs), carry=carry_from_keras(states, params),
        lengths=jnp.asarray(LENGTHS), reverse=True,
    )
    assert_valid_steps_close(np.asarray(jnp.flip(ours, axis=-2)), ys, mask[:, ::-1])
    for a, b in zip(carry_to_keras(final, params), finals):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_bidirectional_with_a_backwards_forward_layer_is_refused():
    forward = keras.layers.LSTM(H, return_sequences=True, go_backwards=True)
    backward = keras.layers.LSTM(H, return_sequences=True)
    layer = build(keras.layers.Bidirectional(forward, backward_layer=backward))
    with pytest.raises(ValueError, match="got a forward layer with go_backwards=True"):
        from_keras(layer)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_keras(use_bias):
    xs, _ = batch(3)
    layer = build(keras.layers.Dense(H, use_bias=use_bias))
    randomize(layer, 4)
    with loose()[0], loose()[1]:
        theirs = np.asarray(layer(xs))

    head = from_keras(layer)
    assert isinstance(head, recurrax.DenseParams)
    ours = recurrax.dense(head, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-6, rtol=0)
    assert bits(head) == bits(from_keras(layer.get_weights(), "Dense", use_bias=use_bias))
    exported = to_keras(head, use_bias=use_bias)
    assert [w.tobytes() for w in exported] == [w.tobytes() for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"Dense with activation='relu'.*expected 'linear'"):
        from_keras(build(keras.layers.Dense(H, activation="relu")))
    with pytest.raises(ValueError, match=r"Expected 2 arrays .*got 1"):
        from_keras(layer.get_weights()[:1], "Dense")


def test_export_then_import_is_bit_identical(key):
    for cell, kwargs in [("gru", {}), ("gru", {"reset_after": False}), ("lstm", {}), ("elman", {})]:
        k_init, k_b, key = jax.random.split(key, 3)
        params = recurrax.init_rnn(k_init, cell, D, H, **kwargs)
        # biases nonzero everywhere, so the bias split is exercised
        cell_params = params.cell._replace(b=jax.random.normal(k_b, params.cell.b.shape))
        if cell == "gru" and cell_params.b_hn is not None:
            cell_params = cell_params._replace(b_hn=cell_params.b[:H] * 2)
        params = params._replace(cell=cell_params)
        kind = {"gru": "GRU", "lstm": "LSTM", "elman": "SimpleRNN"}[cell]
        back = from_keras(to_keras(params), kind, reset_after=kwargs.get("reset_after", True))
        assert bits(back) == bits(params)
        assert [w.tobytes() for w in to_keras(back)] == [w.tobytes() for w in to_keras(params)]


def test_carry_round_trip():
    params = from_keras(keras_layer_weights("LSTM"), "LSTM", bidirectional=True)
    states = initial_states("LSTM", 2)
    again = carry_to_keras(carry_from_keras(states, params), params)
    assert [s.tobytes() for s in again] == [s.tobytes() for s in states]


def keras_layer_weights(kind: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind] * H
    one = [
        rng.normal(size=(D, g)).astype(np.float32),
        rng.normal(size=(H, g)).astype(np.float32),
        rng.normal(size=(g,)).astype(np.float32),
    ]
    return one + one


def test_bad_weights():
    weights = keras_layer_weights("LSTM")
    with pytest.raises(ValueError, match=r"Expected 3 arrays .*got 6"):
        from_keras(weights, "LSTM")
    gru = keras_layer_weights("GRU")
    gru[2] = np.zeros((2, 3 * H), np.float32)
    with pytest.raises(
        ValueError, match=r"weights\[5\] \(backward bias\).*shape \(12,\), expected shape \(2, 12\)"
    ):
        from_keras(gru, "GRU", bidirectional=True)
    with pytest.raises(ValueError, match="merge_mode='mul'"):
        from_keras(weights, "LSTM", bidirectional=True, merge_mode="mul")
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        from_keras(weights[:3], "LSTM", activation="sigmoid")
