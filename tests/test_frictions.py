"""Frictions without a topic file of their own: what the README says must be what the code does."""

import pathlib

import jax
import numpy as np

import recurrax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


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


def test_readme_states_that_the_reset_before_update_gate_is_the_opposite_of_cho_et_al():
    text = " ".join(README.read_text(encoding="utf-8").split())
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
