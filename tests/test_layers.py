"""Layers and topologies: bidirectional, deep and residual stacks, dropout, embeddings, heads,
learned initial states, many-to-many / many-to-one / generation / encoding.

References: the NumPy transcription of the layers (``numpy_reference.rnn/bidirectional/stack``)
run sequence by sequence on the unpadded data, and manual compositions of the pure functions.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest
from cell_cases import CASES_BY_ID, bidirectional_params, layer_params

import recurrax

T, D, H, V = 6, 3, 4, 5
LENGTHS = [6, 0, 3, 1]
RTOL, ATOL = 1e-5, 1e-6


def _xs(key, batch=len(LENGTHS), time=T, features=D):
    return jax.random.normal(key, (batch, time, features))


def _assert_close(got, want, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(ref.f64(got), ref.f64(want), rtol=rtol, atol=atol)


def _assert_carry_close(got, want: dict):
    for name, value in want.items():
        _assert_close(getattr(got, name), value)


def _tree_at(tree, idx):
    return jax.tree.map(lambda v: v[idx], tree)


# --------------------------------------------------------------------------- bidirectional


@pytest.mark.parametrize("merge", ["concat", "sum", "mean"])
@pytest.mark.parametrize("case_id", ["lstm-peephole", "gru-reset-after"])
def test_bidirectional_equals_forward_and_reversed_backward(key, merge, case_id):
    k_p, k_x = jax.random.split(key)
    params = bidirectional_params(case_id, k_p, D, H, merge)
    xs = _xs(k_x)
    (fwd_final, bwd_final), ys = recurrax.bidirectional(params, xs, lengths=jnp.array(LENGTHS))
    assert ys.shape == (len(LENGTHS), T, 2 * H if merge == "concat" else H)
    assert params.merge.output_size(H) == ys.shape[-1]
    for b, length in enumerate(LENGTHS):
        (want_fwd, want_bwd), want_ys = ref.bidirectional(params, ref.f64(xs[b, :length]))
        _assert_close(ys[b, :length], want_ys)
        assert (np.asarray(ys[b, length:]) == 0).all()
        _assert_carry_close(_tree_at(fwd_final, b), want_fwd)
        _assert_carry_close(_tree_at(bwd_final, b), want_bwd)


def test_bidirectional_with_given_carries(key):
    k_p, k_x, k_f, k_b = jax.random.split(key, 4)
    params = bidirectional_params("lstm", k_p, D, H, "concat")
    case = CASES_BY_ID["lstm"]
    carry = (case.random_carry(k_f, params.forward.cell, (4,)), case.random_carry(k_b, params.backward.cell, (4,)))
    xs = _xs(k_x)
    lengths = jnp.array(LENGTHS)
    _, ys = recurrax.bidirectional(params, xs, carry=carry, lengths=lengths)
    _, fwd = recurrax.rnn(params.forward, xs, carry=carry[0], lengths=lengths)
    _, bwd = recurrax.rnn(params.backward, xs, carry=carry[1], lengths=lengths, reverse=True)
    chex.assert_trees_all_close(ys, jnp.concatenate([fwd, bwd], -1), rtol=0, atol=0)


# --------------------------------------------------------------------------- deep stacks


def test_stack_equals_chained_rnn_layers(key):
    params = recurrax.init_stack(key, D, [H, 5, H], cell="lstm")
    xs, lengths = _xs(jax.random.key(1)), jnp.array(LENGTHS)
    finals, ys = recurrax.stack(params, xs, lengths=lengths)
    hs, want_finals = xs, []
    for layer in params.layers:
        final, hs = recurrax.rnn(layer, hs, lengths=lengths)
        want_finals.append(final)
    chex.assert_trees_all_close((finals, ys), (tuple(want_finals), hs), rtol=1e-6, atol=1e-6)


def test_stack_with_per_layer_cells_sizes_and_options_matches_numpy(key):
    params = recurrax.init_stack(
        key, D, [3, 5, 4, 2], cell=["elman", "gru", "lstm", "gru"], bidirectional=[False, True, False, False],
        merge="mean", cell_kwargs=[{"activation": "relu"}, {"reset_after": False}, {"peephole": True}, {}],
    )
    kinds = [type(layer).__name__ for layer in params.layers]
    assert kinds == ["RNNParams", "BidirectionalParams", "RNNParams", "RNNParams"]
    assert isinstance(params.layers[0].cell, recurrax.ElmanParams) and params.layers[0].cell.activation.name == "relu"
    assert isinstance(params.layers[1].forward.cell, recurrax.GRUParams) and params.layers[1].forward.cell.b_hn is None
    assert isinstance(params.layers[2].cell, recurrax.LSTMParams) and params.layers[2].cell.w_peep.shape == (3, 4)
    assert [recurrax.layer_input_size(layer) for layer in params.layers] == [D, 3, 5, 4]  # mean keeps H
    assert [recurrax.layer_output_size(layer) for layer in params.layers] == [3, 5, 4, 2]
    # nonzero peepholes and biases, so the NumPy comparison sees them
    lstm = params.layers[2].cell
    params = params._replace(layers=params.layers[:2] + (
        params.layers[2]._replace(cell=lstm._replace(w_peep=jnp.full_like(lstm.w_peep, 0.3),
                                                     b=lstm.b + 0.1)),) + params.layers[3:])
    xs = _xs(jax.random.key(1))
    finals, ys = recurrax.stack(params, xs, lengths=jnp.array(LENGTHS))
    assert ys.shape == (4, T, 2)
    for b, length in enumerate(LENGTHS):
        want_finals, want_ys = ref.stack(params, ref.f64(xs[b, :length]))
        _assert_close(ys[b, :length], want_ys)
        _assert_carry_close(_tree_at(finals[0], b), want_finals[0])
        _assert_carry_close(_tree_at(finals[1][0], b), want_finals[1][0])
        _assert_carry_close(_tree_at(finals[1][1], b), want_finals[1][1])
        _assert_carry_close(_tree_at(finals[3], b), want_finals[3])


def test_residual_stack_equals_manual_composition(key):
    params = recurrax.StackParams(layers=(
        layer_params("gru-reset-after", jax.random.key(1), D, H),
        bidirectional_params("elman-tanh", jax.random.key(2), H, H, "sum"),
        layer_params("lstm-peephole", jax.random.key(3), H, H),
    ))
    xs, lengths = _xs(key), jnp.array(LENGTHS)
    finals, ys = recurrax.stack(params, xs, lengths=lengths, residual=True)
    _, h1 = recurrax.rnn(params.layers[0], xs, lengths=lengths)  # no residual: it changes the size
    _, h2 = recurrax.bidirectional(params.layers[1], h1, lengths=lengths)
    _, h3 = recurrax.rnn(params.layers[2], h2 + h1, lengths=lengths)
    chex.assert_trees_all_close(ys, h3 + h2 + h1, rtol=1e-6, atol=1e-6)
    for b, length in enumerate(LENGTHS):
        _, want_ys = ref.stack(params, ref.f64(xs[b, :length]), residual=True)
        _assert_close(ys[b, :length], want_ys)


def test_residual_size_mismatch_raises(key):
    params = recurrax.init_stack(key, D, [H, 5], cell="gru")
    with pytest.raises(ValueError, match=r"Residual connections need equal input and output sizes.*layer 1 maps 4 "
                                         r"features to 5"):
        recurrax.stack(params, _xs(key), residual=True)
    with pytest.raises(ValueError, match=r"layer 1 maps 4 features to 5"):
        recurrax.stack_step(params, recurrax.stack_initial_carries(params, (4,)), jnp.ones((4, D)), residual=True)
    # the first layer may change the size
    recurrax.stack(recurrax.init_stack(key, D, [H, H], cell="gru"), _xs(key), residual=True)


# --------------------------------------------------------------------------- dropout


def test_dropout_function_scales_survivors():
    xs = jax.random.normal(jax.random.key(1), (64, 64))
    for rate in (0.25, 0.5):
        out = np.asarray(recurrax.dropout(jax.random.key(2), xs, rate))
        kept = out != 0
        np.testing.assert_allclose(out[kept], np.asarray(xs)[kept] / (1 - rate), rtol=1e-6)
        assert abs((~kept).mean() - rate) < 0.05  # 4096 draws: 5% is > 6 standard deviations
    np.testing.assert_array_equal(np.asarray(recurrax.dropout(jax.random.key(2), xs, 0.0)), np.asarray(xs))


def test_stack_dropout_is_off_by_default_and_needs_a_key(key):
    params = recurrax.init_stack(key, D, [H, H], cell="gru")
    xs = _xs(jax.random.key(1))
    plain = recurrax.stack(params, xs)
    _, h1 = recurrax.rnn(params.layers[0], xs)
    chex.assert_trees_all_equal(plain[1], recurrax.rnn(params.layers[1], h1)[1])
    chex.assert_trees_all_equal(plain, recurrax.stack(params, xs, dropout_rate=0.0, key=jax.random.key(5)))
    with pytest.raises(ValueError, match=r"dropout_rate > 0 needs a PRNG key"):
        recurrax.stack(params, xs, dropout_rate=0.5)


def test_stack_dropout_drops_and_rescales_between_layers(key):
    """Read the dropped layer-1 outputs back through a linear second layer.

    Layer 2 is an identity-activation Elman cell with ``w_h = 0`` and an invertible ``w_x``, so its
    output at each step is ``u_t @ w_x + b``: solving for ``u_t`` recovers exactly what dropout
    fed it, which must be either 0 or ``h1_t / (1 - rate)`` elementwise. The top layer's outputs
    get no dropout.
    """
    rate = 0.5
    first = layer_params("lstm", jax.random.key(1), D, H)
    second = recurrax.init_rnn(jax.random.key(2), "elman", H, H, activation="identity")
    second = second._replace(cell=second.cell._replace(w_h=jnp.zeros((H, H)), b=jnp.arange(H, dtype=jnp.float32)))
    params = recurrax.StackParams(layers=(first, second))
    xs = _xs(key)
    _, h1 = recurrax.rnn(first, xs)
    _, ys = recurrax.stack(params, xs, dropout_rate=rate, key=jax.random.key(3))
    w, b = ref.f64(second.cell.w_x), ref.f64(second.cell.b)
    fed = (ref.f64(ys) - b) @ np.linalg.inv(w)
    h1 = ref.f64(h1)
    dropped = np.abs(fed) < 1e-4
    np.testing.assert_allclose(fed[~dropped], h1[~dropped] / (1 - rate), rtol=1e-4, atol=1e-5)
    assert 0.2 < dropped.mean() < 0.8
    # deterministic given the key, different for another key
    chex.assert_trees_all_equal(ys, recurrax.stack(params, xs, dropout_rate=rate, key=jax.random.key(3))[1])
    assert not np.array_equal(np.asarray(ys), np.asarray(recurrax.stack(params, xs, dropout_rate=rate,
                                                                        key=jax.random.key(4))[1]))
    # one layer: nothing to drop between layers
    single = recurrax.StackParams(layers=(first,))
    chex.assert_trees_all_equal(recurrax.stack(single, xs), recurrax.stack(single, xs, dropout_rate=rate,
                                                                           key=jax.random.key(3)))


# --------------------------------------------------------------------------- stepping a stack


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_stack_step_iterated_equals_stack(key, residual):
    params = recurrax.StackParams(layers=(
        layer_params("lstm-peephole", jax.random.key(1), D, H, learned_initial=True),
        layer_params("gru-reset-before", jax.random.key(2), H, H),
        layer_params("elman-relu", jax.random.key(3), H, H, learned_initial=True),
    ))
    xs = _xs(key, batch=2)
    finals, ys = recurrax.stack(params, xs, residual=residual)
    carries = recurrax.stack_initial_carries(params, (2,))
    chex.assert_trees_all_equal(carries[0], jax.tree.map(lambda v: jnp.broadcast_to(v, (2, H)), params.layers[0].initial))
    outs = []
    for t in range(T):
        carries, y = recurrax.stack_step(params, carries, xs[:, t], residual=residual)
        outs.append(y)
    chex.assert_trees_all_close((finals, ys), (carries, jnp.stack(outs, 1)), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- embeddings and heads


def test_embed_is_a_table_lookup(key):
    params = recurrax.init_embedding(key, V, 3)
    ids = jnp.array([[0, 4, 2], [1, 1, 3]])
    np.testing.assert_array_equal(np.asarray(recurrax.embed(params, ids)), np.asarray(params.table)[np.asarray(ids)])
    assert params.table.shape == (V, 3)


def test_embed_under_jit_with_ids_closed_over(key):
    """Constant ids inside ``jit`` are checked on the host, not traced (was ConcretizationTypeError)."""
    params = recurrax.init_embedding(key, V, 3)
    ids = jnp.array([[0, 4, 2], [1, 1, 3]])
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda p: recurrax.embed(p, ids))(params)),
                                  np.asarray(params.table)[np.asarray(ids)])
    bad = ids + 1
    with pytest.raises(ValueError, match=r"Expected token ids in \[0, 5\) .*got ids in \[1, 5\]"):
        jax.jit(lambda p: recurrax.embed(p, bad))(params)


def test_one_hot(key):
    ids = np.array([[2, 0], [4, 4]])
    np.testing.assert_array_equal(np.asarray(recurrax.one_hot(jnp.asarray(ids), V)), np.eye(V)[ids])
    assert recurrax.one_hot(jnp.asarray(ids), V, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_dense(key):
    k_w, k_b, k_x = jax.random.split(key, 3)
    head = recurrax.init_dense(k_w, H, V)
    np.testing.assert_array_equal(np.asarray(head.b), np.zeros(V))
    head = head._replace(b=jax.random.normal(k_b, (V,)))
    for shape in [(H,), (2, H), (2, 3, H)]:
        x = jax.random.normal(k_x, shape)
        _assert_close(recurrax.dense(head, x), ref.dense(head, x))


# --------------------------------------------------------------------------- learned initial state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_learned_initial_state_is_used_and_trainable(key, cell):
    params = recurrax.init_rnn(key, cell, D, H, learned_initial=True)
    chex.assert_trees_all_equal(params.initial, jax.tree.map(jnp.zeros_like, params.initial))
    params = params._replace(initial=jax.tree.map(lambda v: v + 0.3, params.initial))
    xs = _xs(jax.random.key(1), batch=2, time=3)
    lengths = jnp.array([3, 2])
    _, ys = recurrax.rnn(params, xs, lengths=lengths)
    for b, length in enumerate([3, 2]):
        _, want = ref.rnn(params, ref.f64(xs[b, :length]))  # starts from params.initial
        _assert_close(ys[b, :length], want)

    target = jnp.ones((2, 3, H)) * 0.5

    def loss(params):
        _, ys = recurrax.rnn(params, xs, lengths=lengths)
        return jnp.mean((ys[:, :1] - target[:, :1]) ** 2)  # the first step depends on the initial state

    grads = jax.grad(loss)(params)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads.initial))
    optimizer = optax.adam(0.05)
    state = optimizer.init(params)

    @jax.jit
    def train_step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: float ** int32
            updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    first = loss(params)
    start = params.initial
    for _ in range(10):
        params, state, _ = train_step(params, state)
    assert float(loss(params)) < 0.9 * float(first)
    assert not np.allclose(np.asarray(params.initial.h), np.asarray(start.h))


# --------------------------------------------------------------------------- topologies


def _model(key, bidirectional_top=False, out=V):
    k_s, k_h, k_b = jax.random.split(key, 3)
    params = recurrax.StackParams(layers=(
        layer_params("gru-reset-after", jax.random.fold_in(k_s, 0), D, H),
        bidirectional_params("lstm-peephole", jax.random.fold_in(k_s, 1), H, H, "concat") if bidirectional_top
        else layer_params("lstm-peephole", jax.random.fold_in(k_s, 1), H, H),
    ))
    head = recurrax.init_dense(k_h, recurrax.layer_output_size(params.layers[-1]), out)
    head = head._replace(b=jax.random.normal(k_b, (out,)))
    return params, head


def test_many_to_many_is_the_head_at_valid_steps_and_zero_at_padding(key):
    params, head = _model(key)
    xs = _xs(jax.random.key(1))
    ys = recurrax.many_to_many(params, head, xs, lengths=jnp.array(LENGTHS))
    assert ys.shape == (4, T, V)
    for b, length in enumerate(LENGTHS):
        _, hs = ref.stack(params, ref.f64(xs[b, :length]))
        _assert_close(ys[b, :length], ref.dense(head, hs))
        assert (np.asarray(ys[b, length:]) == 0).all()
    mask = recurrax.sequence_mask(jnp.array(LENGTHS), T)
    chex.assert_trees_all_equal(ys, recurrax.many_to_many(params, head, xs, mask=mask))
    # no head: the top layer's states
    chex.assert_trees_all_equal(recurrax.many_to_many(params, None, xs, lengths=jnp.array(LENGTHS)),
                                recurrax.stack(params, xs, lengths=jnp.array(LENGTHS))[1])


def test_teaching_mask_patterns():
    valid = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 1]], bool)  # last row has a hole
    np.testing.assert_array_equal(np.asarray(recurrax.teaching_mask(valid)), np.asarray(valid))
    np.testing.assert_array_equal(
        np.asarray(recurrax.teaching_mask(valid, last_k=2)).astype(int),
        [[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(
        np.asarray(recurrax.teaching_mask(valid, last_k=1)).astype(int),
        [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(
        np.asarray(recurrax.teaching_mask(valid, last_k=3)).astype(int),
        [[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 1]])
    units = recurrax.teaching_mask(valid[:2], units=[0, 2], num_units=3)
    assert units.shape == (2, 4, 3)
    np.testing.assert_array_equal(np.asarray(units).astype(int), [
        [[1, 0, 1], [1, 0, 1], [1, 0, 1], [0, 0, 0]],
        [[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]],
    ])
    both = recurrax.teaching_mask(valid[:1], last_k=1, units=[1], num_units=2)
    np.testing.assert_array_equal(np.asarray(both).astype(int), [[[0, 0], [0, 0], [0, 1], [0, 0]]])
    two_batch = recurrax.teaching_mask(valid.reshape(2, 2, 4), last_k=2)
    np.testing.assert_array_equal(np.asarray(two_batch), np.asarray(recurrax.teaching_mask(valid, last_k=2)).reshape(2, 2, 4))


@pytest.mark.parametrize("bidirectional_top", [False, True], ids=["unidirectional", "bidirectional-top"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_many_to_one_pools_valid_steps(key, pool, bidirectional_top):
    params, head = _model(key, bidirectional_top)
    xs = _xs(jax.random.key(1))
    got = recurrax.many_to_one(params, head, xs, lengths=jnp.array(LENGTHS), pool=pool)
    assert got.shape == (4, V)
    width = recurrax.layer_output_size(params.layers[-1])
    for b, length in enumerate(LENGTHS):
        finals, hs = ref.stack(params, ref.f64(xs[b, :length]))
        if pool == "last":
            if bidirectional_top:  # forward state at the last valid step, backward state after step 0
                pooled = np.concatenate([finals[-1][0]["h"], finals[-1][1]["h"]])
            else:
                pooled = finals[-1]["h"]
            if length > 0:
                np.testing.assert_allclose(pooled[:H], hs[length - 1, :H], rtol=1e-12)
        elif length == 0:
            pooled = np.zeros(width)  # an empty sequence pools to zeros
        elif pool == "mean":
            pooled = hs.mean(axis=0)
        else:
            pooled = hs.max(axis=0)
        _assert_close(got[b], ref.dense(head, pooled))


def test_many_to_one_without_lengths_uses_every_step(key):
    params, head = _model(key)
    xs = _xs(jax.random.key(1), batch=2)
    for pool, reduce in [("mean", np.mean), ("max", np.max)]:
        got = recurrax.many_to_one(params, None, xs, pool=pool)
        for b in range(2):
            _, hs = ref.stack(params, ref.f64(xs[b]))
            _assert_close(got[b], reduce(hs, axis=0))


def _generation_model(key):
    params = recurrax.StackParams(layers=(
        layer_params("gru-reset-after", jax.random.key(1), V, H),
        layer_params("lstm-peephole", jax.random.key(2), H, H),
    ))
    head = recurrax.init_dense(key, H, V)
    return params, head._replace(w=3.0 * head.w, b=jax.random.normal(jax.random.key(3), (V,)))


def test_generate_greedy_equals_manual_loop(key):
    params, head = _generation_model(key)
    feedback = functools.partial(recurrax.one_hot, num_classes=V)
    first = jnp.array([0, 3])
    out = recurrax.generate(params, head, feedback, first, 7)
    assert out.tokens.dtype == jnp.int32 and out.tokens.shape == (2, 7) and out.logits.shape == (2, 7, V)
    carries, token, tokens, logits = recurrax.stack_initial_carries(params, (2,)), first, [], []
    for _ in range(7):
        carries, h = recurrax.stack_step(params, carries, jax.nn.one_hot(token, V))
        step_logits = ref.dense(head, h)
        token = jnp.asarray(np.argmax(step_logits, axis=-1))
        tokens.append(np.asarray(token))
        logits.append(step_logits)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.stack(tokens, 1))
    _assert_close(out.logits, np.stack(logits, 1))
    chex.assert_trees_all_close(out.carries, carries, rtol=1e-5, atol=1e-6)
    assert len(set(np.asarray(out.tokens).ravel().tolist())) > 1  # not a degenerate constant sequence


def test_generate_from_given_carries_with_embedding_feedback(key):
    params, head = _generation_model(key)
    table = recurrax.init_embedding(jax.random.key(9), V, V)
    feedback = functools.partial(recurrax.embed, table)
    start = tuple(CASES_BY_ID[c].random_carry(jax.random.key(i), layer.cell, (3,))
                  for i, (c, layer) in enumerate(zip(["gru-reset-after", "lstm-peephole"], params.layers)))
    first = jnp.array([1, 2, 4])
    out = recurrax.generate(params, head, feedback, first, 4, carries=start)
    carries, token = start, first
    for t in range(4):
        carries, h = recurrax.stack_step(params, carries, np.asarray(table.table)[np.asarray(token)])
        token = np.argmax(ref.dense(head, h), axis=-1)
        np.testing.assert_array_equal(np.asarray(out.tokens[:, t]), token)


def test_generate_sampling_is_reproducible_and_key_dependent(key):
    params, head = _generation_model(key)
    feedback = functools.partial(recurrax.one_hot, num_classes=V)
    first = jnp.array([0, 1, 2, 3])
    a = recurrax.generate(params, head, feedback, first, 10, key=jax.random.key(1), temperature=1.5)
    b = recurrax.generate(params, head, feedback, first, 10, key=jax.random.key(1), temperature=1.5)
    c = recurrax.generate(params, head, feedback, first, 10, key=jax.random.key(2), temperature=1.5)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
    # the logits are still those of the fed-back sampled tokens
    carries, token = recurrax.stack_initial_carries(params, (4,)), first
    for t in range(10):
        carries, h = recurrax.stack_step(params, carries, jax.nn.one_hot(token, V))
        _assert_close(a.logits[:, t], ref.dense(head, h))
        token = a.tokens[:, t]
    # a vanishing temperature is greedy decoding
    greedy = recurrax.generate(params, head, feedback, first, 10)
    cold = recurrax.generate(params, head, feedback, first, 10, key=jax.random.key(1), temperature=1e-4)
    np.testing.assert_array_equal(np.asarray(cold.tokens), np.asarray(greedy.tokens))


@pytest.mark.parametrize("time_major", [False, True], ids=["batch-major", "time-major"])
def test_encode_is_consistent_with_stack(key, time_major):
    params, _ = _model(key, bidirectional_top=True)
    xs = _xs(jax.random.key(1))
    lengths = jnp.array(LENGTHS)
    inputs = jnp.swapaxes(xs, 0, 1) if time_major else xs
    encoded = recurrax.encode(params, inputs, lengths=lengths, time_major=time_major)
    finals, states = recurrax.stack(params, inputs, lengths=lengths, time_major=time_major)
    chex.assert_trees_all_equal((encoded.final_carries, encoded.states), (finals, states))
    want_mask = ref.lengths_to_mask(LENGTHS, T)
    np.testing.assert_array_equal(np.asarray(encoded.mask), want_mask.T if time_major else want_mask)
    states = np.swapaxes(np.asarray(states), 0, 1) if time_major else np.asarray(states)
    for b, length in enumerate(LENGTHS):
        _, want = ref.stack(params, ref.f64(xs[b, :length]))
        _assert_close(states[b, :length], want)
        assert (states[b, length:] == 0).all()
    assert recurrax.encode(params, xs).mask is None


@pytest.mark.parametrize("cell, fused", [("lstm", True), ("elman", True), ("gru", False)])
def test_the_default_gradient_is_the_measured_faster_one(key, cell, fused):
    """The fused backward by default below H = 1024 except for the GRU (measured slower: see ``rnn``)."""
    params = recurrax.init_rnn(key, cell, D, H)
    jaxpr = str(jax.make_jaxpr(lambda p, x: recurrax.rnn(p, x, kernel="scan")[1])(params, jnp.ones((2, T, D))))
    assert ("custom_vjp_call" in jaxpr) == fused
