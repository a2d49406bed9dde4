"""Frictions without a topic file of their own: what the docs say must be what the code does."""

import pathlib

import jax
import numpy as np

import recurrax

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The README's sections moved to the documentation site (docs/): the conventions to the
# architecture page, the multi-host paragraph to the guide on several devices and hosts.
CONVENTIONS = ROOT / "docs" / "architecture.md"
MULTI_HOST = ROOT / "docs" / "guides" / "distributed.md"


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _cho_gru(params, h, x):
    """Cho et al. 2014, eqs. 5–8, ``h' = z ⊙ h + (1 − z) ⊙ h̃``, in float64 NumPy (fused gates r, z, n)."""
    w_x, w_h, b = (np.asarray(a, np.float64) for a in (params.w_x, params.w_h, params.b))
    n = h.shape[-1]
    a = x @ w_x + b
    r = _sigmoid(a[:, :n] + h @ w_h[:, :n])
    z = _sigmoid(a[:, n : 2 * n] + h @ w_h[:, n : 2 * n])
    candidate = np.tanh(a[:, 2 * n :] + (r * h) @ w_h[:, 2 * n :])
    return z * h + (1 - z) * candidate


def test_docs_state_that_the_reset_before_update_gate_is_the_opposite_of_cho_et_al():
    text = " ".join(CONVENTIONS.read_text(encoding="utf-8").split())
    assert ("`h' = (1 − z) ⊙ h + z ⊙ h̃`, the opposite of Cho et al.'s eq. 7 (`h' = z ⊙ h + (1 − z) ⊙ h̃`); "
            "negate the z-gate's weights and bias to convert between them.") in text
    keys = jax.random.split(jax.random.key(0), 4)
    hidden = 5
    params = recurrax.gru.init(keys[0], 3, hidden, reset_after=False)
    params = params._replace(b=jax.random.normal(keys[1], params.b.shape))
    x = np.asarray(jax.random.normal(keys[2], (4, 3)), np.float64)
    h = np.asarray(jax.random.normal(keys[3], (4, hidden)), np.float64)
    ours = np.asarray(recurrax.gru.step(params, recurrax.gru.GRUCarry(h.astype(np.float32)), x.astype(np.float32))[1])
    assert not np.allclose(ours, _cho_gru(params, h, x), atol=1e-3)  # z weighs the other term
    z_block = slice(hidden, 2 * hidden)
    converted = params._replace(w_x=params.w_x.at[:, z_block].multiply(-1), w_h=params.w_h.at[:, z_block].multiply(-1),
                                b=params.b.at[z_block].multiply(-1))
    np.testing.assert_allclose(ours, _cho_gru(converted, h, x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- issue 13, items 3–5


def test_every_documented_module_path_imports_both_ways():
    import subprocess
    import sys

    # A fresh interpreter: `import recurrax.lstm` must work before anything else imported it.
    modules = ["nnx", "lstm", "gru", "elman", "reservoir", "cells", "gradient_flow", "esn", "seq2seq",
               "mingru", "minlstm", "indrnn", "lru", "ntm", "interop"]
    code = "; ".join(f"import recurrax.{m}; from recurrax import {m} as _{m}; assert recurrax.{m} is _{m}"
                     for m in modules)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert recurrax.nnx.StackedRNN is not None  # an attribute after a plain `import recurrax`


def test_float64_inputs_into_float32_params_get_a_clear_error():
    import re

    import jax.numpy as jnp
    import pytest

    params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    with jax.enable_x64(True):
        xs = jnp.ones((2, 5, 3), jnp.float64)
        message = re.escape("Expected xs in the carry's dtype float32, got float64") + ".*" + re.escape(
            ": cast xs to float32 (xs.astype(jnp.float32)), or the params and carry to float64.")
        for fused in (True, False):
            with pytest.raises(ValueError, match=message):
                recurrax.rnn(params, xs, fused_backward=fused)
            with jax.numpy_dtype_promotion("standard"), pytest.raises(ValueError, match=message):
                recurrax.rnn(params, xs, fused_backward=fused)  # a user's default promotion
        with pytest.raises(ValueError, match=message):
            recurrax.stack(recurrax.init_stack(jax.random.key(0), 3, [4]), xs)
        recurrax.rnn(params, xs.astype(jnp.float32))  # the fix the message names


def test_layers_pass_segment_length_through():
    import jax.numpy as jnp
    import pytest

    params = recurrax.init_stack(jax.random.key(0), 3, [4, 4], cell=["gru", "lstm"], bidirectional=[True, False])
    xs = jax.random.normal(jax.random.key(1), (2, 7, 3))

    def loss(p, **options):
        return jnp.sum(recurrax.stack(p, xs, lengths=jnp.array([7, 3]), **options)[1] ** 2)

    want = jax.grad(loss)(params)
    for segment_length in (2, 3, 7):
        got = jax.grad(loss)(params, remat="sqrt", segment_length=segment_length)
        np.testing.assert_allclose(got.layers[1].cell.w_h, want.layers[1].cell.w_h, rtol=1e-5, atol=1e-6)
    layer = params.layers[1]
    got = jax.grad(lambda p: jnp.sum(recurrax.rnn(p, jnp.ones((2, 7, 8)), remat="sqrt", segment_length=2)[1]))(layer)
    assert np.isfinite(np.asarray(got.cell.w_x)).all()
    with pytest.raises(ValueError, match="segment_length is only for remat='sqrt'"):
        recurrax.rnn(layer, jnp.ones((2, 7, 8)), segment_length=2)


def test_docs_multi_host_advice_matches_the_killed_peer_test():
    # The README said "about 100 s"; a killed peer was noticed after 53-76 s at JAX's default
    # heartbeat. The docs now advise the timeout that tests/test_sharding.py runs with and measures.
    text = " ".join(MULTI_HOST.read_text(encoding="utf-8").split())
    sharding_test = (ROOT / "tests" / "test_sharding.py").read_text(encoding="utf-8")
    assert "heartbeat_timeout_seconds=10)" in text and '"--heartbeat", "10"' in sharding_test
    assert "about 100 s" not in text
    assert "python tests/sharding_worker.py detection OUT 100 10 5" in text
    assert "What survives is every checkpoint written before the failure" in text


def test_the_studies_are_not_installed_as_a_top_level_experiments_package(tmp_path):
    # An installed `experiments` shadowed the experiments/ folder of a user's own project.
    import subprocess
    import sys

    probe = ("import importlib.util, recurrax; "
             "print(importlib.util.find_spec('experiments') is None, recurrax.__name__)")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, check=True, timeout=120)
    assert completed.stdout.split() == ["True", "recurrax"], completed.stdout + completed.stderr
