"""The hand-derived BPTT references agree with autodiff of ``unroll`` and ``unroll_cell``.

Float64 (``jax.enable_x64``), so agreement is to rounding error, not to float32 noise; the cell
cases carry random nonzero biases (and peephole weights), and the initial carry, the inputs, the
output cotangents and the final-carry cotangents are all random, so every term of the backward
equations is exercised.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import pytest
from cell_cases import CASES_BY_ID, HIDDEN_SIZE, INPUT_SIZE, CellCase, family_of

import recurrax

TIME = 7
TOL = {"rtol": 1e-9, "atol": 1e-9}  # float64: both computations are exact up to rounding
BATCH_SHAPES = [(), (3,)]
ELMAN_CASES = [
    CASES_BY_ID["elman-tanh"],
    CASES_BY_ID["elman-relu"],
    CASES_BY_ID["elman-sigmoid"],
    CellCase("elman-identity", "elman", (("activation", "identity"),)),
]
LSTM_CASES = [CASES_BY_ID["lstm"], CASES_BY_ID["lstm-peephole"]]


def _unroll(params, carry, xs):
    step = functools.partial(family_of(params).step, params)
    return recurrax.unroll(step, carry, xs, time_major=True)


def _unroll_cell(params, carry, xs):
    return recurrax.unroll_cell(params, carry, xs, cell=family_of(params), time_major=True)


UNROLLS = {"unroll": _unroll, "unroll_cell": _unroll_cell}


def _elman_bptt(params, carry, xs, dys, d_final):
    """``elman_bptt``, the final carry's cotangent added to the last output's (``h_T`` is both)."""
    d_params, d_h0, d_xs = recurrax.elman_bptt(params, carry.h, xs, dys.at[-1].add(d_final.h))
    return d_params, recurrax.ElmanCarry(d_h0), d_xs


def _lstm_bptt(params, carry, xs, dys, d_final):
    """``lstm_bptt`` given the cotangent of the whole final carry."""
    return recurrax.lstm_bptt(params, carry, xs, dys.at[-1].add(d_final.h), dc_final=d_final.c)


def _inputs(case, key, batch_shape, dtype=jnp.float64):
    """Params, initial carry, xs ``(T, *batch, D)``, dys ``(T, *batch, H)``, final-carry cotangent."""
    k_p, k_c, k_x, k_y, k_f = jax.random.split(key, 5)
    params = case.init(k_p, dtype=dtype)
    carry = case.random_carry(k_c, params, batch_shape)
    xs = jax.random.normal(k_x, (TIME, *batch_shape, INPUT_SIZE), dtype)
    dys = jax.random.normal(k_y, (TIME, *batch_shape, HIDDEN_SIZE), dtype)
    d_final = case.random_carry(k_f, params, batch_shape)
    return params, carry, xs, dys, d_final


@functools.partial(jax.jit, static_argnums=0)
def _autodiff(run, params, carry, xs, d_final, dys):
    """``jax.vjp`` of ``(final_carry, ys) = run(params, carry, xs)`` at ``(d_final, dys)``."""
    _, vjp = jax.vjp(run, params, carry, xs)
    return vjp((d_final, dys))


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("case", ELMAN_CASES, ids=lambda c: c.id)
def test_elman_bptt_matches_autodiff(case, batch_shape, key):
    with jax.enable_x64(True):
        params, carry, xs, dys, d_final = _inputs(case, key, batch_shape)
        got = _elman_bptt(params, carry, xs, dys, d_final)
        assert got[0].activation == params.activation
        for name, run in UNROLLS.items():
            want = _autodiff(run, params, carry, xs, d_final, dys)
            chex.assert_trees_all_close(got, want, **TOL, custom_message=f"against {name}")


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: c.id)
def test_lstm_bptt_matches_autodiff(case, batch_shape, key):
    with jax.enable_x64(True):
        params, carry, xs, dys, d_final = _inputs(case, key, batch_shape)
        got = _lstm_bptt(params, carry, xs, dys, d_final)
        assert (got[0].w_peep is None) == (params.w_peep is None)
        for name, run in UNROLLS.items():
            want = _autodiff(run, params, carry, xs, d_final, dys)
            chex.assert_trees_all_close(got, want, **TOL, custom_message=f"against {name}")


def test_lstm_bptt_dc_final_defaults_to_zero(key):
    case = CASES_BY_ID["lstm"]
    with jax.enable_x64(True):
        params, carry, xs, dys, _ = _inputs(case, key, (3,))
        zero_final = recurrax.LSTMCarry(h=jnp.zeros_like(carry.h), c=jnp.zeros_like(carry.c))
        want = _autodiff(UNROLLS["unroll"], params, carry, xs, zero_final, dys)
        chex.assert_trees_all_close(recurrax.lstm_bptt(params, carry, xs, dys), want, **TOL)


@pytest.mark.parametrize("case", [ELMAN_CASES[0], LSTM_CASES[1]], ids=lambda c: c.id)
def test_float32_matches_autodiff(case, key):
    params, carry, xs, dys, d_final = _inputs(case, key, (3,), dtype=jnp.float32)
    want = _autodiff(UNROLLS["unroll"], params, carry, xs, d_final, dys)
    got = (_elman_bptt if case.family == "elman" else _lstm_bptt)(params, carry, xs, dys, d_final)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_bptt_under_jit(key):
    case = LSTM_CASES[1]
    params, carry, xs, dys, _ = _inputs(case, key, (3,), dtype=jnp.float32)
    chex.assert_trees_all_close(
        jax.jit(recurrax.lstm_bptt)(params, carry, xs, dys),
        recurrax.lstm_bptt(params, carry, xs, dys),
        rtol=1e-6, atol=1e-6,
    )


# --------------------------------------------------------------------------- softmax readout

VOCAB = 5


def _readout_inputs(case, key, batch_shape):
    k_cell, k_w, k_b, k_t = jax.random.split(key, 4)
    params, carry, xs, _, _ = _inputs(case, k_cell, batch_shape)
    readout = recurrax.init_dense(k_w, HIDDEN_SIZE, VOCAB, dtype=jnp.float64)
    readout = readout._replace(b=0.5 * jax.random.normal(k_b, (VOCAB,), jnp.float64))
    targets = jax.random.randint(k_t, (TIME, *batch_shape), 0, VOCAB)
    return params, readout, carry.h, xs, targets


def _mean_cross_entropy(params, readout, h0, xs, targets):
    """``J = mean over steps (and sequences) of -log softmax(dense(h_t))[target_t]``, by autodiff."""
    _, hs = recurrax.unroll(
        functools.partial(recurrax.elman.step, params), recurrax.ElmanCarry(h0), xs, time_major=True
    )
    log_probs = jax.nn.log_softmax(recurrax.dense(readout, hs), axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1).mean()


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES, ids=str)
def test_elman_readout_bptt_matches_grad_of_mean_cross_entropy(batch_shape, key):
    with jax.enable_x64(True):
        params, readout, h0, xs, targets = _readout_inputs(ELMAN_CASES[0], key, batch_shape)
        loss, (d_params, d_readout) = jax.value_and_grad(_mean_cross_entropy, argnums=(0, 1))(
            params, readout, h0, xs, targets
        )
        got = recurrax.elman_readout_bptt(params, readout, h0, xs, targets)
        chex.assert_trees_all_close(got, (d_params, d_readout, loss), **TOL)


def test_elman_readout_bptt_one_step_is_the_seeds_formula(key):
    """T = 1, no batch: ``∂J/∂U = s_1ᵀ (ŷ_1 − y_1)`` and ``∂J/∂b_y = ŷ_1 − y_1`` exactly."""
    with jax.enable_x64(True):
        params, readout, h0, xs, targets = _readout_inputs(ELMAN_CASES[0], key, ())
        xs, targets = xs[:1], targets[:1]
        _, d_readout, _ = recurrax.elman_readout_bptt(params, readout, h0, xs, targets)
        s = recurrax.elman.step(params, recurrax.ElmanCarry(h0), xs[0])[1]
        y_hat = jax.nn.softmax(recurrax.dense(readout, s))
        y = jnp.zeros(VOCAB, jnp.float64).at[targets[0]].set(1.0)
        chex.assert_trees_all_close(d_readout.w, jnp.outer(s, y_hat - y), **TOL)
        chex.assert_trees_all_close(d_readout.b, y_hat - y, **TOL)


# --------------------------------------------------------------------------- bad inputs


def _bad_calls(key):
    elman = recurrax.elman.init(key, INPUT_SIZE, HIDDEN_SIZE)
    lstm = recurrax.lstm.init(key, INPUT_SIZE, HIDDEN_SIZE)
    readout = recurrax.init_dense(key, HIDDEN_SIZE, VOCAB)
    h0, carry = jnp.zeros((2, HIDDEN_SIZE)), recurrax.lstm.initial_carry(lstm, (2,))
    xs, dys = jnp.ones((TIME, 2, INPUT_SIZE)), jnp.ones((TIME, 2, HIDDEN_SIZE))
    targets = jnp.zeros((TIME, 2), jnp.int32)
    return {
        "elman-wrong-params": (lambda: recurrax.elman_bptt(lstm, h0, xs, dys), "expects ElmanParams"),
        "lstm-wrong-params": (lambda: recurrax.lstm_bptt(elman, carry, xs, dys), "expects LSTMParams"),
        "elman-dys-shape": (
            lambda: recurrax.elman_bptt(elman, h0, xs, dys[:-1]), r"Expected dys with shape \(7, 2, 4\)"
        ),
        "lstm-dys-shape": (
            lambda: recurrax.lstm_bptt(lstm, carry, xs, dys[..., :2]), r"Expected dys with shape \(7, 2, 4\)"
        ),
        "elman-h0-shape": (lambda: recurrax.elman_bptt(elman, h0[0], xs, dys), "Expected h0 with shape"),
        "elman-carry-as-h0": (
            lambda: recurrax.elman_bptt(elman, recurrax.ElmanCarry(h0), xs, dys), "Expected h0 to be an array"
        ),
        "xs-features": (lambda: recurrax.elman_bptt(elman, h0, xs[..., :2], dys), "time-major xs"),
        "xs-empty": (lambda: recurrax.lstm_bptt(lstm, carry, xs[:0], dys[:0]), "T >= 1"),
        "lstm-carry-type": (lambda: recurrax.lstm_bptt(lstm, (h0, h0), xs, dys), "expects an LSTMCarry"),
        "lstm-carry-shape": (
            lambda: recurrax.lstm_bptt(lstm, carry._replace(c=h0[:1]), xs, dys), "Expected carry0.c with shape"
        ),
        "lstm-dc-final-shape": (
            lambda: recurrax.lstm_bptt(lstm, carry, xs, dys, dc_final=h0[0]), "Expected dc_final with shape"
        ),
        "readout-type": (
            lambda: recurrax.elman_readout_bptt(elman, tuple(readout), h0, xs, targets), "expects DenseParams"
        ),
        "readout-in-features": (
            lambda: recurrax.elman_readout_bptt(elman, readout._replace(w=readout.w[:2]), h0, xs, targets),
            r"Expected readout.w of shape \(4, V\)",
        ),
        "targets-float": (
            lambda: recurrax.elman_readout_bptt(elman, readout, h0, xs, targets.astype(jnp.float32)),
            "integer class targets",
        ),
        "targets-range": (
            lambda: recurrax.elman_readout_bptt(elman, readout, h0, xs, targets.at[0, 0].set(VOCAB)),
            r"Expected targets in \[0, 4\] \(the readout's out_features\)",
        ),
        "targets-shape": (
            lambda: recurrax.elman_readout_bptt(elman, readout, h0, xs, targets[0]), "Expected targets with shape"
        ),
    }


BAD_CALL_IDS = list(_bad_calls(jax.random.key(0)))


@pytest.mark.parametrize("which", BAD_CALL_IDS)
def test_bad_inputs_raise(which, key):
    call, match = _bad_calls(key)[which]
    with pytest.raises(ValueError, match=match):
        call()
