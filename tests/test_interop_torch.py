"""PyTorch interop: recurrax with converted weights reproduces torch's own numbers.

The reference files in ``tests/fixtures/torch/`` were written by
``tests/fixtures/make_torch_fixtures.py`` (rerun it with torch installed): each holds a
``state_dict``, a padded batch with ``lengths``, initial states, and torch's outputs through
``pack_padded_sequence`` and its final states. These tests need no torch; ``test_live_torch``
runs the same comparison against a live torch when it is importable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.interop import carry_from_torch, carry_to_torch, from_torch, to_torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torch"
NAMES = ["rnn_tanh", "rnn_relu", "lstm", "gru", "lstm_nobias", "rnn_cell", "lstm_cell", "gru_cell"]


def load(name: str):
    data = np.load(FIXTURES / f"{name}.npz")
    config = json.loads(str(data["config"]))
    state_dict = {
        k.removeprefix("state_dict."): data[k] for k in data.files if k.startswith("state_dict.")
    }
    return config, state_dict, {k: data[k] for k in data.files if not k.startswith("state_dict.")}


def options(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "kind"}


def run_converted(params, data, is_lstm: bool):
    """recurrax's outputs and final states (torch's layout) on the fixture's padded batch."""
    hx = (data["h0"], data["c0"]) if is_lstm else data["h0"]
    carry = carry_from_torch(hx, params)
    xs, lengths = jnp.asarray(data["xs"]), jnp.asarray(data["lengths"])
    if isinstance(params, recurrax.RNNParams):
        final, ys = recurrax.rnn(params, xs, carry=carry, lengths=lengths)
    else:
        final, ys = recurrax.stack(params, xs, carries=carry, lengths=lengths)
    return np.asarray(ys), carry_to_torch(final, params)


def assert_matches(params, config, data):
    is_lstm = "LSTM" in config["kind"]
    ys, final = run_converted(params, data, is_lstm)
    np.testing.assert_allclose(ys, data["ys"], atol=1e-5, rtol=0)
    if is_lstm:
        np.testing.assert_allclose(final[0], data["h_n"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(final[1], data["c_n"], atol=1e-5, rtol=0)
    else:
        np.testing.assert_allclose(final, data["h_n"], atol=1e-5, rtol=0)


def assert_bit_identical(a: dict, b: dict):
    assert list(a) == list(b)
    for key, value in a.items():
        assert value.dtype == b[key].dtype, key
        assert value.shape == b[key].shape, key
        assert value.tobytes() == b[key].tobytes(), key


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_reference(name):
    config, state_dict, data = load(name)
    params = from_torch(state_dict, config["kind"], **options(config))
    assert_matches(params, config, data)


@pytest.mark.parametrize("name", NAMES)
def test_export_then_import_is_bit_identical(name):
    config, state_dict, _ = load(name)
    params = from_torch(state_dict, config["kind"], **options(config))
    exported = to_torch(params, bias=config["bias"])
    assert set(exported) == set(state_dict)
    again = from_torch(exported, config["kind"], **options(config))
    leaves, again_leaves = jax.tree.leaves(params), jax.tree.leaves(again)
    assert jax.tree.structure(params) == jax.tree.structure(again)
    for x, y in zip(leaves, again_leaves):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    assert_bit_identical(exported, to_torch(again, bias=config["bias"]))


def test_exported_weights_give_the_same_outputs():
    # The export's bias split differs from torch's, but the function is the same.
    config, state_dict, data = load("gru")
    params = from_torch(state_dict, "GRU", **options(config))
    exported = to_torch(params)
    assert not np.array_equal(exported["bias_hh_l0"], state_dict["bias_hh_l0"])
    assert_matches(from_torch(exported, "GRU", **options(config)), config, data)


def test_carry_round_trip():
    _, _, data = load("lstm")
    params = from_torch(load("lstm")[1], "LSTM", num_layers=2, bidirectional=True)
    h, c = carry_to_torch(carry_from_torch((data["h0"], data["c0"]), params), params)
    assert h.tobytes() == data["h0"].tobytes() and c.tobytes() == data["c0"].tobytes()


# ----------------------------------------------------------------------------- bad input


def test_proj_size_is_a_value_error():
    _, state_dict, _ = load("lstm_nobias")
    with pytest.raises(ValueError, match="proj_size > 0"):
        from_torch(state_dict, "LSTM", bias=False, proj_size=2)
    with pytest.raises(ValueError, match="proj_size > 0"):
        from_torch({**state_dict, "weight_hr_l0": np.zeros((2, 4), np.float32)}, "LSTM", bias=False)


def test_missing_key_names_key_and_shape():
    _, state_dict, _ = load("gru")
    del state_dict["bias_hh_l1_reverse"]
    with pytest.raises(
        ValueError, match=r"Missing key 'bias_hh_l1_reverse' \(expected shape \(12,\)\)"
    ):
        from_torch(state_dict, "GRU", num_layers=2, bidirectional=True)


def test_extra_key_is_named():
    _, state_dict, _ = load("lstm_cell")
    state_dict["weight_xx"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="Unexpected key 'weight_xx'"):
        from_torch(state_dict, "LSTMCell")


def test_wrong_shape_names_key_and_expected_shape():
    _, state_dict, _ = load("lstm")
    state_dict["weight_ih_l1"] = state_dict["weight_ih_l1"][:, :4]
    with pytest.raises(
        ValueError, match=r"'weight_ih_l1'.*shape \(16, 4\), expected shape \(16, 8\)"
    ):
        from_torch(state_dict, "LSTM", num_layers=2, bidirectional=True)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_layer_count_mismatch(num_layers):
    _, state_dict, _ = load("rnn_tanh")
    pattern = (
        "Unexpected key 'weight_ih_l1'"
        if num_layers == 1
        else r"Missing key 'weight_ih_l2' \(expected shape \(4, 8\)\)"
    )
    with pytest.raises(ValueError, match=pattern) as info:
        from_torch(state_dict, "RNN", num_layers=num_layers, bidirectional=True)
    assert "layer count does not match" in str(info.value)


def test_bias_false_mismatch_is_reported():
    _, state_dict, _ = load("lstm")
    with pytest.raises(ValueError, match="Unexpected key 'bias_ih_l0'.*bias=False"):
        from_torch(state_dict, "LSTM", num_layers=2, bidirectional=True, bias=False)


def test_export_rejects_what_torch_cannot_hold(key):
    reset_before = recurrax.init_stack(key, 3, [4], cell="gru", cell_kwargs={"reset_after": False})
    with pytest.raises(ValueError, match="reset-after"):
        to_torch(reset_before)
    mixed = recurrax.init_stack(key, 3, [4, 4], cell=["gru", "lstm"])
    with pytest.raises(ValueError, match="one family"):
        to_torch(mixed)
    summed = recurrax.init_stack(key, 3, [4], cell="lstm", bidirectional=True, merge="sum")
    with pytest.raises(ValueError, match="concatenates"):
        to_torch(summed)
    biased = recurrax.init_stack(key, 3, [4], cell="lstm")  # forget bias 1.0
    with pytest.raises(ValueError, match="nonzero biases"):
        to_torch(biased, bias=False)


# ----------------------------------------------------------------------------- live torch


def test_live_torch():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(1)
    B, T, D, H = 3, 6, 3, 5
    lengths = torch.tensor([6, 2, 4])
    xs = torch.randn(B, T, D)
    packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
    configs = [
        ("LSTM", {"num_layers": 2, "bidirectional": True}),
        ("GRU", {"num_layers": 3, "bias": False}),
        ("RNN", {"nonlinearity": "relu", "bidirectional": True}),
    ]
    for kind, kwargs in configs:
        module = getattr(torch.nn, kind)(D, H, batch_first=True, **kwargs)
        with torch.no_grad():
            out, hn = module(packed)
        ys = pad_packed_sequence(out, batch_first=True, total_length=T)[0].numpy()
        theirs_hn = [t.numpy() for t in hn] if isinstance(hn, tuple) else [hn.numpy()]

        params = from_torch(module)  # the module itself: its configuration is read off it
        finals, ours = recurrax.stack(
            params, jnp.asarray(xs.numpy()), lengths=jnp.asarray(lengths.numpy())
        )
        np.testing.assert_allclose(np.asarray(ours), ys, atol=1e-5, rtol=0)
        for a, b in zip(jax.tree.leaves(carry_to_torch(finals, params)), theirs_hn):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

        # exported into a fresh module, torch computes the same outputs
        clone = getattr(torch.nn, kind)(D, H, batch_first=True, **kwargs)
        clone.load_state_dict(to_torch(params, bias=kwargs.get("bias", True), tensors=True))
        with torch.no_grad():
            again = pad_packed_sequence(clone(packed)[0], batch_first=True, total_length=T)[
                0
            ].numpy()
        np.testing.assert_allclose(again, ys, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    module = torch.nn.Linear(5, 3, bias=bias)
    xs = torch.randn(2, 4, 5)
    with torch.no_grad():
        theirs = module(xs).numpy()

    head = from_torch(module)  # the module itself
    assert isinstance(head, recurrax.DenseParams)
    ours = recurrax.dense(head, jnp.asarray(xs.numpy()))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-6, rtol=0)
    listed = from_torch(module.state_dict(), "Linear", bias=bias)
    assert [np.asarray(x).tobytes() for x in jax.tree.leaves(listed)] == [
        np.asarray(x).tobytes() for x in jax.tree.leaves(head)
    ]
    # exported into a fresh module, torch computes the same outputs; the arrays are the same bits
    exported = to_torch(head, bias=bias)
    assert_bit_identical(exported, {k: v.numpy() for k, v in module.state_dict().items()})
    clone = torch.nn.Linear(5, 3, bias=bias)
    clone.load_state_dict(to_torch(head, bias=bias, tensors=True))
    with torch.no_grad():
        np.testing.assert_array_equal(clone(xs).numpy(), theirs)


def test_linear_bad_input():
    sd = {"weight": np.zeros((3, 5), np.float32), "bias": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match=r"'bias'.*shape \(4,\), expected shape \(3,\)"):
        from_torch(sd, "Linear")
    with pytest.raises(ValueError, match="Unexpected key 'bias'.*bias=False"):
        from_torch(sd, "Linear", bias=False)
    with pytest.raises(ValueError, match=r"Missing key 'bias' \(expected shape \(3,\)\)"):
        from_torch({"weight": sd["weight"]}, "nn.Linear")
    head = recurrax.init_dense(jax.random.key(0), 5, 3)._replace(b=jnp.ones(3))
    with pytest.raises(ValueError, match="nonzero biases"):
        to_torch(head, bias=False)


def test_import_needs_no_torch_keras_or_equinox():
    # Block the three libraries in a fresh interpreter: conversion from arrays still works.
    code = (
        "import sys, json, numpy as np\n"
        "for name in ('torch', 'keras', 'equinox'): sys.modules[name] = None\n"
        "from recurrax.interop import from_torch, to_torch\n"
        f"data = np.load({str(FIXTURES / 'lstm.npz')!r})\n"
        "sd = {k.removeprefix('state_dict.'): data[k] for k in data.files if k.startswith('state_dict.')}\n"
        "params = from_torch(sd, 'LSTM', num_layers=2, bidirectional=True)\n"
        "assert set(to_torch(params)) == set(sd)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
