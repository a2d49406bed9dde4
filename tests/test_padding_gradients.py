"""Padding never reaches the gradients: NaN or inf garbage at masked steps gives the gradient of
zero padding, on every path that takes ``lengths`` or ``mask`` (issue 13, defect 1).

Before the fix the step formed ``x_t @ w_x`` from the garbage and the mask was applied after it,
so the zero cotangent met the NaN product (0 · NaN = NaN) in every weight gradient.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from cell_cases import CASES, layer_params

import recurrax

D, H, T = 3, 4, 6
GARBAGE = [jnp.nan, jnp.inf, -jnp.inf, 1e30]
GARBAGE_IDS = ["nan", "inf", "-inf", "huge"]
BATCH = (2, 3)  # two batch dimensions
LENGTHS = jnp.array([[6, 2, 0], [1, 5, 3]])


def _pad(a, valid, value):
    """``a`` ``(*batch, T, ...)`` with ``value`` at the invalid steps."""
    valid = valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim))
    return jnp.where(valid, a, jnp.asarray(value, a.dtype))


VALID = recurrax.sequence_mask(LENGTHS, T)
XS = jax.random.normal(jax.random.key(1), BATCH + (T, D))


def _same_gradient(loss, params):
    """With each garbage, the gradient is finite and equals the one with zero padding."""
    grad = jax.jit(jax.grad(loss))  # compiled once, called with every garbage
    want = grad(params, _pad(XS, VALID, 0.0))
    for value in GARBAGE:
        got = grad(params, _pad(XS, VALID, value))
        assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(got)), value
        chex.assert_trees_all_close(got, want, atol=1e-6, rtol=1e-6)


def _outputs_loss(run):
    def loss(params, xs):
        final, ys = run(params, xs)
        return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))
    return loss


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("options", [{}, {"fused_backward": False}, {"reverse": True}, {"remat": True},
                                     {"remat": "sqrt"}], ids=["default", "autodiff", "reverse", "remat", "sqrt"])
def test_rnn(case, options):
    params = layer_params(case.id, jax.random.key(0), D, H, learned_initial=True)
    _same_gradient(_outputs_loss(lambda p, xs: recurrax.rnn(p, xs, lengths=LENGTHS, **options)), params)


@pytest.mark.parametrize("value", GARBAGE, ids=GARBAGE_IDS)
def test_the_issue_reproduction(value):
    p = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    xs = jnp.ones((2, 5, 3)).at[1, 2:].set(value)
    g = jax.grad(lambda p: recurrax.rnn(p, xs, lengths=jnp.array([5, 2]))[1].sum())(p)
    assert not jnp.isnan(g.cell.w_x).any()


def test_bidirectional_stack_and_mask():
    params = recurrax.init_stack(jax.random.key(0), D, [H, H], cell=["gru", "lstm"],
                                 bidirectional=[True, True], learned_initial=True)
    _same_gradient(_outputs_loss(lambda p, xs: recurrax.stack(p, xs, lengths=LENGTHS)), params)
    _same_gradient(_outputs_loss(lambda p, xs: recurrax.stack(p, xs, mask=VALID, residual=True)), params)
    layer = recurrax.init_bidirectional(jax.random.key(1), "elman", D, H)
    _same_gradient(_outputs_loss(lambda p, xs: recurrax.bidirectional(p, xs, lengths=LENGTHS)), layer)
    # And the gradient with respect to the inputs: zero at padding, finite everywhere.
    g = jax.grad(lambda xs: jnp.sum(recurrax.bidirectional(layer, xs, lengths=LENGTHS)[1] ** 2))(
        _pad(XS, VALID, jnp.nan))
    assert bool(jnp.isfinite(g).all()) and bool((g[~VALID] == 0).all())


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_topologies_and_losses(pool):
    model = recurrax.init_stack(jax.random.key(0), D, [H], cell="lstm", bidirectional=True)
    head = recurrax.init_dense(jax.random.key(1), 2 * H, 5)
    params = (model, head)
    targets = jax.random.randint(jax.random.key(2), BATCH + (T,), 0, 5)

    def one(p, xs):
        return jnp.sum(recurrax.many_to_one(*p, xs, lengths=LENGTHS, pool=pool) ** 2)

    def many(p, xs):
        logits = recurrax.many_to_many(*p, xs, lengths=LENGTHS)
        return recurrax.sequence_cross_entropy(logits, targets, lengths=LENGTHS)

    _same_gradient(one, params)
    _same_gradient(many, params)


@pytest.mark.parametrize("value", GARBAGE, ids=GARBAGE_IDS)
def test_losses_with_garbage_predictions_and_targets(value):
    predictions = jax.random.normal(jax.random.key(3), BATCH + (T, 5))
    targets = jax.random.normal(jax.random.key(4), BATCH + (T, 5))
    one_hot = jax.nn.one_hot(jax.random.randint(jax.random.key(5), BATCH + (T,), 0, 5), 5)
    for loss in (
        lambda p, t: recurrax.sequence_mse(p, t, lengths=LENGTHS),
        lambda p, t: recurrax.sequence_mse(p, t, mask=jnp.broadcast_to(VALID[..., None], p.shape)),
        lambda p, t: recurrax.sequence_cross_entropy(p, one_hot, mask=VALID),
        lambda p, t: recurrax.sequence_nll(p, one_hot, mask=VALID),  # p as log-probabilities
    ):
        want_value, want = jax.value_and_grad(loss)(_pad(predictions, VALID, 0.0), _pad(targets, VALID, 0.0))
        got_value, got = jax.value_and_grad(loss)(_pad(predictions, VALID, value), _pad(targets, VALID, value))
        chex.assert_trees_all_close((got_value, got), (want_value, want), atol=1e-6)


@pytest.mark.parametrize("value", GARBAGE, ids=GARBAGE_IDS)
def test_tbptt(value):
    cell = recurrax.gru.init(jax.random.key(0), D, H)
    params = {"cell": cell, "head": recurrax.init_dense(jax.random.key(1), H, 2)}

    def model_step(p, carry, x):
        carry, h = recurrax.gru.step(p["cell"], carry, x)
        return carry, recurrax.dense(p["head"], h)

    def squared(y, target):
        return jnp.sum((y - target) ** 2, axis=-1)

    carry = recurrax.gru.initial_carry(cell, BATCH)
    targets = jax.random.normal(jax.random.key(2), BATCH + (T, 2))

    def run(xs, targets):
        return recurrax.truncated_gradient(model_step, squared, params, carry, xs, targets, k1=2, k2=3,
                                           lengths=LENGTHS)

    want = run(_pad(XS, VALID, 0.0), _pad(targets, VALID, 0.0))
    got = run(_pad(XS, VALID, value), _pad(targets, VALID, value))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(got))
    chex.assert_trees_all_close(got, want, atol=1e-6)
    # Integer targets: the padding may hold ids out of range (e.g. -100).
    ids = jax.random.randint(jax.random.key(3), BATCH + (T,), 0, 2)
    loss = optax.softmax_cross_entropy_with_integer_labels
    run_ids = functools.partial(recurrax.truncated_gradient, model_step, loss, params, carry, k1=2, k2=3,
                                lengths=LENGTHS)
    chex.assert_trees_all_close(run_ids(_pad(XS, VALID, value), jnp.where(VALID, ids, -100)),
                                run_ids(_pad(XS, VALID, 0.0), jnp.where(VALID, ids, 0)), atol=1e-6)


def test_seq2seq_encoder_with_out_of_range_padding_ids():
    params = recurrax.seq2seq.init_seq2seq(jax.random.key(0), 7, 8, embed_size=D, encoder_sizes=(H,),
                                          decoder_sizes=(H,), attention="additive")
    source_lengths, target, target_lengths = jnp.array([4, 2]), jnp.array([[3, 4, 5], [5, 6, 0]]), jnp.array([3, 2])
    grad = jax.jit(jax.grad(recurrax.seq2seq.loss))  # under jit, an out-of-range id embeds as NaN
    want = grad(params, jnp.array([[3, 4, 5, 6], [4, 5, 0, 0]]), source_lengths, target, target_lengths)
    got = grad(params, jnp.array([[3, 4, 5, 6], [4, 5, 99, 99]]), source_lengths, target, target_lengths)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(got))
    chex.assert_trees_all_close(got, want, atol=1e-6)
