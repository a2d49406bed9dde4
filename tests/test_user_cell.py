"""A cell written here, outside recurrax, goes through every entry point of the library.

``twin`` follows the protocol with nothing but its three functions (plus ``recurrent_blocks`` for
the spectra); ``twin_fused`` is the same cell that also declares the products/pointwise split of
the fused backward pass. References: a Python loop over the cell's own ``step`` (masking written
out by hand), ``jax.jacrev`` and plain ``jax.grad``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recurrax
from recurrax import gradient_flow as gf

D, H, T = 3, 4, 6


class TwinParams(NamedTuple):
    w_x: jax.Array  # (D, 2H): gate and candidate blocks
    w_h: jax.Array  # (H, 2H)
    b: jax.Array  # (2H,)


class TwinCarry(NamedTuple):
    h: jax.Array  # (*batch, H): the output
    m: jax.Array  # (*batch, H): a leaky memory


def _init(key, input_size, hidden_size, *, scale=0.8):
    k_x, k_h, k_b = jax.random.split(key, 3)
    return TwinParams(
        w_x=jax.random.normal(k_x, (input_size, 2 * hidden_size)) / np.sqrt(input_size),
        w_h=scale * jax.random.normal(k_h, (hidden_size, 2 * hidden_size)) / np.sqrt(hidden_size),
        b=0.3 * jax.random.normal(k_b, (2 * hidden_size,)),
    )


def _initial_carry(params, batch_shape=()):
    zeros = jnp.zeros(tuple(batch_shape) + (params.w_h.shape[0],), params.w_h.dtype)
    return TwinCarry(zeros, zeros)


def _pointwise(params, carry, zx, zh):
    z = zx + zh + jax.lax.broadcast_to_rank(params.b, zx.ndim)
    gate, candidate = jnp.split(z, 2, axis=-1)
    m = 0.5 * carry.m + jnp.tanh(candidate)
    h = jax.nn.sigmoid(gate) * jnp.tanh(m)
    return TwinCarry(h, m), h


def _step(params, carry, x):
    return _pointwise(params, carry, x @ params.w_x, carry.h @ params.w_h)


twin = types.SimpleNamespace(
    name="twin", init=_init, initial_carry=_initial_carry, step=_step,
    recurrent_blocks=lambda p: {"gate": p.w_h[:, :H], "candidate": p.w_h[:, H:]},
)
twin_fused = types.SimpleNamespace(
    name="twin_fused", init=_init, initial_carry=_initial_carry, step=_step, pointwise=_pointwise, SUMS_PRODUCTS=True,
)


def _loop(params, xs, valid=None, reverse=False, carry=None):
    """The reference: a Python loop of ``twin.step`` over one batch, masking by hand."""
    batch = xs.shape[:-2]
    carry = _initial_carry(params, batch) if carry is None else carry
    valid = jnp.ones(xs.shape[:-1], bool) if valid is None else valid
    ys = [None] * xs.shape[-2]
    for t in (reversed(range(xs.shape[-2])) if reverse else range(xs.shape[-2])):
        new, y = _step(params, carry, jnp.where(valid[..., t, None], xs[..., t, :], 0.0))
        keep = valid[..., t, None]
        carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
        ys[t] = jnp.where(keep, y, 0.0)
    return carry, jnp.stack(ys, axis=-2)


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.key(1), (2, T, D))


LENGTHS = jnp.array([T, 3])
VALID = recurrax.sequence_mask(LENGTHS, T)


def _close(a, b, atol=1e-5):
    chex.assert_trees_all_close(a, b, atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("family", [twin, twin_fused], ids=["plain", "fused"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rnn_equals_a_python_loop(family, reverse, xs):
    layer = recurrax.init_rnn(jax.random.key(0), family, D, H)
    assert layer.family.name == family.name and layer.family.has_pointwise_split(layer.cell) == (family is twin_fused)
    final, ys = recurrax.rnn(layer, xs, lengths=LENGTHS, reverse=reverse)
    want_final, want_ys = _loop(layer.cell, xs, VALID, reverse)
    _close((final, ys), (want_final, want_ys))
    # Gradients: the fused pass (twin_fused), plain autodiff and the loop agree.
    loss = lambda p, run: sum(jnp.sum(v**2) for v in jax.tree.leaves(run(p)))
    g = jax.grad(loss)(layer, lambda p: recurrax.rnn(p, xs, lengths=LENGTHS, reverse=reverse))
    g_plain = jax.grad(loss)(layer, lambda p: recurrax.rnn(p, xs, lengths=LENGTHS, reverse=reverse,
                                                           fused_backward=False))
    g_loop = jax.grad(loss)(layer.cell, lambda c: _loop(c, xs, VALID, reverse))
    _close(g.cell, g_loop)
    _close(g_plain.cell, g_loop)


@pytest.mark.parametrize("remat", [True, jax.checkpoint_policies.dots_with_no_batch_dims_saveable, "sqrt"],
                         ids=["every-step", "policy", "sqrt"])
def test_every_remat_policy(remat, xs):
    layer = recurrax.init_rnn(jax.random.key(0), twin, D, H, learned_initial=True)
    loss = lambda p, **o: jnp.sum(recurrax.rnn(p, xs, lengths=LENGTHS, **o)[1] ** 2)
    _close(jax.grad(loss)(layer, remat=remat), jax.grad(loss)(layer))
    assert jax.grad(loss)(layer).initial.m.shape == (H,)  # the learned initial state's every field


def test_registered_name_and_bidirectional(xs):
    recurrax.register_cell(twin, "twin_test")
    try:
        params = recurrax.init_bidirectional(jax.random.key(0), "twin_test", D, H)
        assert params.forward.family.name == "twin_test"
        (f_final, b_final), ys = recurrax.bidirectional(params, xs, lengths=LENGTHS)
        want_f, fwd = _loop(params.forward.cell, xs, VALID)
        want_b, bwd = _loop(params.backward.cell, xs, VALID, reverse=True)
        _close((f_final, b_final, ys), (want_f, want_b, jnp.concatenate([fwd, bwd], -1)))
    finally:
        recurrax.unregister_cell("twin_test")
    with pytest.raises(ValueError, match="Expected a cell family in"):
        recurrax.init_rnn(jax.random.key(0), "twin_test", D, H)


def test_stack_mixes_user_and_built_in_cells_with_residual_and_dropout(xs):
    params = recurrax.init_stack(jax.random.key(0), D, [H, H, H], cell=[twin, "gru", twin_fused],
                                 bidirectional=[False, True, False], merge="sum")
    key = jax.random.key(7)
    _, ys = recurrax.stack(params, xs, lengths=LENGTHS, residual=True, dropout_rate=0.25, key=key)
    # By hand: layer by layer, residual from layer 1 on, dropout between layers with the split keys.
    keys = jax.random.split(key, 2)
    h0 = recurrax.dropout(keys[0], _loop(params.layers[0].cell, xs, VALID)[1], 0.25)
    _, h1 = recurrax.bidirectional(params.layers[1], h0, lengths=LENGTHS)
    h1 = recurrax.dropout(keys[1], h1 + h0, 0.25)
    want = _loop(params.layers[2].cell, h1, VALID)[1] + h1
    _close(ys, want)


def test_stack_step_generate_and_topologies(xs):
    params = recurrax.init_stack(jax.random.key(0), D, [H, H], cell=[twin, "lstm"])
    head = recurrax.init_dense(jax.random.key(1), H, 5)
    # stack_step over the sequence == stack.
    carries, outs = recurrax.stack_initial_carries(params, (2,)), []
    for t in range(T):
        carries, y = recurrax.stack_step(params, carries, xs[:, t])
        outs.append(y)
    _close(jnp.stack(outs, 1), recurrax.stack(params, xs)[1])
    # many_to_many and many_to_one (last / mean) from the loop's outputs.
    hs = recurrax.stack(params, xs, lengths=LENGTHS)[1]
    _close(recurrax.many_to_many(params, head, xs, lengths=LENGTHS),
           jnp.where(VALID[..., None], recurrax.dense(head, hs), 0.0))
    last = jnp.stack([hs[0, T - 1], hs[1, 2]])
    _close(recurrax.many_to_one(params, head, xs, lengths=LENGTHS), recurrax.dense(head, last))
    _close(recurrax.many_to_one(params, None, xs, lengths=LENGTHS, pool="mean"),
           hs.sum(1) / LENGTHS[:, None].astype(hs.dtype))
    # A user cell on top: pool="last" reads the outputs, not a carry field.
    top_user = recurrax.init_stack(jax.random.key(2), D, [H], cell=twin, bidirectional=True)
    (f, b) = recurrax.bidirectional(top_user.layers[0], xs, lengths=LENGTHS)[0]
    _close(recurrax.many_to_one(top_user, None, xs, lengths=LENGTHS), jnp.concatenate([f.h, b.h], -1))
    # generate: greedy decoding == a loop of stack_step and argmax.
    embed = recurrax.init_embedding(jax.random.key(3), 5, D)
    feedback = functools.partial(recurrax.embed, embed)
    generated = recurrax.generate(params, head, feedback, jnp.array([0, 4]), 4)
    carries, token, tokens = recurrax.stack_initial_carries(params, (2,)), jnp.array([0, 4]), []
    for _ in range(4):
        carries, h = recurrax.stack_step(params, carries, feedback(token))
        token = jnp.argmax(recurrax.dense(head, h), -1).astype(jnp.int32)
        tokens.append(token)
    np.testing.assert_array_equal(generated.tokens, jnp.stack(tokens, 1))
    encoded = recurrax.encode(params, xs, lengths=LENGTHS)
    _close(encoded.states, hs)
    assert bool(jnp.array_equal(encoded.mask, VALID))


def test_seq2seq_encoder_and_decoder():
    params = recurrax.seq2seq.init_seq2seq(jax.random.key(0), 7, 8, embed_size=D, encoder_sizes=(H,),
                                          decoder_sizes=(H,), encoder_cell=twin, decoder_cell=twin_fused,
                                          attention="dot")
    source = jnp.array([[3, 4, 5, 6], [4, 5, 0, 0]])
    source_lengths = jnp.array([4, 2])
    state = recurrax.seq2seq.encode_source(params, source, source_lengths)
    embedded = recurrax.embed(params.source_embedding, source)
    _, enc = _loop(params.encoder.layers[0].cell, embedded, recurrax.sequence_mask(source_lengths, 4))
    _close(state.carries[0].h, jnp.stack([enc[0, 3], enc[1, 1]]))  # the context at each last token
    target, target_lengths = jnp.array([[3, 4, 5], [5, 6, 0]]), jnp.array([3, 2])
    loss, grads = jax.value_and_grad(recurrax.seq2seq.loss)(params, source, source_lengths, target, target_lengths)
    assert jnp.isfinite(loss) and all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads.encoder.layers[0].cell.w_x).sum()) > 0  # the encoder learns through the bridge


def test_tbptt_with_full_windows_equals_full_bptt(xs):
    cell = _init(jax.random.key(0), D, H)
    head = recurrax.init_dense(jax.random.key(1), H, 2)
    params = {"cell": cell, "head": head}
    targets = jax.random.randint(jax.random.key(2), (2, T), 0, 2)

    def model_step(p, carry, x):
        carry, h = twin.step(p["cell"], carry, x)
        return carry, recurrax.dense(p["head"], h)

    carry = twin.initial_carry(cell, (2,))
    loss, grads = recurrax.truncated_gradient(model_step, optax.softmax_cross_entropy_with_integer_labels,
                                              params, carry, xs, targets, k1=T, k2=T)

    def full(p):
        _, logits = recurrax.unroll(functools.partial(model_step, p), carry, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    want_loss, want = jax.value_and_grad(full)(params)
    _close((loss, grads), (want_loss, want))


def test_gradient_flow_tools():
    cell = _init(jax.random.key(0), D, H, scale=1.5)
    step = functools.partial(twin.step, cell)
    carry = jax.tree.map(lambda v: v + 0.1, twin.initial_carry(cell))
    xs = jax.random.normal(jax.random.key(1), (T, D))
    jacobians = gf.carry_jacobians(step, carry, xs)
    assert jacobians.shape == (T, 2 * H, 2 * H)  # h then m
    c = carry
    for t in range(T):  # each J_t is jacrev of the step at the trajectory's carry
        flat, unravel = jax.flatten_util.ravel_pytree(c)
        want = jax.jacrev(lambda f: jax.flatten_util.ravel_pytree(step(unravel(f), xs[t])[0])[0])(flat)
        np.testing.assert_allclose(jacobians[t], want, atol=1e-5)
        c = step(c, xs[t])[0]
    norms = gf.lag_norms(jacobians)
    product = jnp.eye(2 * H)
    for lag in range(1, T + 1):
        product = product @ jacobians[T - lag]
        np.testing.assert_allclose(norms[lag - 1], jnp.linalg.norm(product, 2), rtol=1e-4)
    exponents = gf.lyapunov_exponents(jacobians)
    assert exponents.shape == (2 * H,) and float(exponents[0]) >= float(exponents[-1])
    params = {"rnn": recurrax.init_rnn(jax.random.key(3), twin, D, H)}
    track = gf.tracker(lambda p: p["rnn"], lambda p: functools.partial(twin.step, p["rnn"].cell),
                       twin.initial_carry(params["rnn"].cell), xs)
    metrics = track(params)
    blocks = twin.recurrent_blocks(params["rnn"].cell)
    assert metrics["sigma1"] == pytest.approx(max(np.linalg.norm(np.asarray(b, np.float64), 2)
                                                  for b in blocks.values()), rel=1e-5)
    with pytest.raises(ValueError, match="Cell 'twin_fused' defines no recurrent_blocks"):
        gf.recurrent_spectrum(recurrax.init_rnn(jax.random.key(3), twin_fused, D, H))


def test_nnx_shells(xs):
    from flax import nnx

    from recurrax import nnx as rnnx

    cell = rnnx.Cell(twin, D, H, rngs=nnx.Rngs(0))
    carry = cell.initial_carry((2,))
    _close(cell(carry, xs[:, 0]), twin.step(cell.pure_params, carry, xs[:, 0]))
    layer = rnnx.RNN(twin_fused, D, H, rngs=nnx.Rngs(1))
    _close(layer(xs, lengths=LENGTHS), recurrax.rnn(layer.pure_params, xs, lengths=LENGTHS))
    _close(layer(xs)[1], _loop(layer.pure_params.cell, xs)[1])
    stacked = rnnx.StackedRNN(D, [H, H], cell=[twin, "gru"], rngs=nnx.Rngs(2))
    _close(stacked(xs)[1], recurrax.stack(stacked.pure_params, xs)[1])


def test_checkpoints_round_trip(tmp_path, xs):
    params = {"rnn": recurrax.init_rnn(jax.random.key(0), twin, D, H, learned_initial=True)}
    optimizer = recurrax.default_optimizer(1e-2)
    train_step = recurrax.make_train_step(
        lambda p, batch, key: jnp.mean(recurrax.rnn(p["rnn"], batch)[1] ** 2), optimizer)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(1))
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float scalars
        result = recurrax.fit(state, train_step, lambda step: xs, num_steps=3, progress=False,
                              checkpoint_dir=str(tmp_path), checkpoint_every=3)
    restored = recurrax.restore_checkpoint(str(tmp_path), state)
    chex.assert_trees_all_equal(restored.params, result.state.params)
    assert restored.params["rnn"].family == params["rnn"].family


def test_bench_times_a_user_cell():
    from experiments import bench

    config = dataclasses.replace(bench.QUICK, modes=("forward", "forward+backward"), repeats=1)
    rows = bench.bench_shape("test_user_cell:twin_fused", (2, 5, D, H), config)
    assert [(r["impl"], r["mode"]) for r in rows] == [("recurrax", "forward"), ("recurrax", "forward+backward")]
    assert all(r["median_ms"] > 0 for r in rows)
    with pytest.raises(ValueError, match="could not load 'test_user_cell:nothing'"):
        bench.resolve_cell("test_user_cell:nothing")


# --------------------------------------------------------------------------- broken cells


def _broken(**changes):
    attributes = dict(name="broken", init=_init, initial_carry=_initial_carry, step=_step)
    attributes.update(changes)
    return types.SimpleNamespace(**{k: v for k, v in attributes.items() if v is not None})


@pytest.mark.parametrize("changes, message", [
    ({"initial_carry": None}, "'broken' \\(SimpleNamespace\\) lacks initial_carry"),
    ({"step": lambda p, c, x: (c.h, c.h)},
     "Cell 'broken': expected step to return a carry of the structure it received"),
    ({"step": lambda p, c, x: (c, c.h[..., 0])}, "Cell 'broken': expected step to return an output of shape \\(2, O\\)"),
    ({"step": lambda p, c, x: (TwinCarry(c.h[..., :2], c.m), c.h)},
     "Cell 'broken': expected step to return a carry with the shapes and dtypes it received"),
    ({"step": lambda p, c, x: c.h}, "Cell 'broken': expected step to return a \\(carry, y\\) pair"),
    ({"initial_carry": lambda p, batch_shape=(): TwinCarry(jnp.zeros((H,)), jnp.zeros((H,)))},
     "Cell 'broken': expected initial_carry\\(params, \\(2,\\)\\) to give leaves of shape \\(2, ...\\)"),
])
def test_a_cell_that_breaks_the_protocol_is_refused_at_init(changes, message):
    with pytest.raises(ValueError, match=message):
        recurrax.init_rnn(jax.random.key(0), _broken(**changes), D, H)


def test_a_non_family_is_refused():
    with pytest.raises(ValueError, match="Expected a cell family"):
        recurrax.init_rnn(jax.random.key(0), 3, D, H)
    with pytest.raises(ValueError, match="lacks init, initial_carry, step"):
        recurrax.init_stack(jax.random.key(0), D, [H], cell=object())
    with pytest.raises(ValueError, match="already registered"):
        recurrax.register_cell(twin, "lstm")


# --------------------------------------------------------------------------- static options


@dataclasses.dataclass(frozen=True)
class OscillatorOptions:
    """coRNN's hyperparameters (Rusch & Mishra 2021), held as static pytree metadata."""

    dt: float = 0.042
    gamma: float = 2.7
    eps: float = 4.7


jax.tree_util.register_static(OscillatorOptions)


class OscillatorParams(NamedTuple):
    w_x: jax.Array  # (D, H)
    w_h: jax.Array  # (H, H)
    w_z: jax.Array  # (H, H)
    options: OscillatorOptions


class OscillatorCarry(NamedTuple):
    h: jax.Array  # (*batch, H): position
    z: jax.Array  # (*batch, H): velocity


def _oscillator_init(key, input_size, hidden_size, **options):
    keys = jax.random.split(key, 3)
    shapes = ((input_size, hidden_size), (hidden_size, hidden_size), (hidden_size, hidden_size))
    return OscillatorParams(*(jax.random.normal(k, s) / np.sqrt(s[0]) for k, s in zip(keys, shapes)),
                            OscillatorOptions(**options))


def _oscillator_step(params, carry, x):
    o = params.options
    force = jnp.tanh(x @ params.w_x + carry.h @ params.w_h + carry.z @ params.w_z)
    z = carry.z + o.dt * (force - o.gamma * carry.h - o.eps * carry.z)
    h = carry.h + o.dt * z
    return OscillatorCarry(h, z), h


oscillator = types.SimpleNamespace(
    name="oscillator", init=_oscillator_init, step=_oscillator_step,
    initial_carry=lambda p, batch_shape=(): OscillatorCarry(*(jnp.zeros((*batch_shape, p.w_h.shape[0])),) * 2))


def test_static_options_are_not_trained_and_survive_checkpoints(tmp_path, xs):
    # A float field would be a leaf, and Adam would train it (a user's dt went 0.042 -> 0.032 in one step).
    params = {"rnn": recurrax.init_rnn(jax.random.key(0), oscillator, D, H, dt=0.05)}
    assert len(jax.tree.leaves(params)) == 3
    optimizer = recurrax.default_optimizer(1e-1)
    train_step = recurrax.make_train_step(
        lambda p, batch, key: jnp.mean((recurrax.rnn(p["rnn"], batch)[1] - 1.0) ** 2), optimizer)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(1))
    with jax.numpy_dtype_promotion("standard"):
        result = recurrax.fit(state, train_step, lambda step: xs, num_steps=2, progress=False,
                              checkpoint_dir=str(tmp_path))
    trained = result.state.params["rnn"].cell
    assert trained.options == OscillatorOptions(dt=0.05) and not np.allclose(trained.w_h, params["rnn"].cell.w_h)
    restored = recurrax.restore_checkpoint(str(tmp_path), state).params["rnn"].cell
    assert restored.options == OscillatorOptions(dt=0.05)
    # The option changes the computation: jit compiles once per value.
    other = params["rnn"]._replace(cell=params["rnn"].cell._replace(options=OscillatorOptions(dt=0.5)))
    run = jax.jit(lambda p: recurrax.rnn(p, xs)[1])
    assert not np.allclose(run(params["rnn"]), run(other))


def test_a_pointwise_family_needs_the_fields_the_fused_backward_reads(xs):
    class Renamed(NamedTuple):
        w_in: jax.Array
        w_h: jax.Array
        b: jax.Array

    no_w_x = types.SimpleNamespace(
        name="no_w_x", initial_carry=_initial_carry, SUMS_PRODUCTS=True, input_size=lambda p: p.w_in.shape[0],
        init=lambda *a, **k: Renamed(*_init(*a, **k)),
        step=lambda p, c, x: _pointwise(p, c, x @ p.w_in, c.h @ p.w_h),
        pointwise=_pointwise)
    layer = recurrax.init_rnn(jax.random.key(0), no_w_x, D, H)
    with pytest.raises(ValueError, match="params need fields w_x and w_h; Renamed has no w_x"):
        recurrax.rnn(layer, xs, fused_backward=True)

    class NoH(NamedTuple):
        out: jax.Array
        m: jax.Array

    def pointwise(p, c, zx, zh):
        new, y = _pointwise(p, TwinCarry(c.out, c.m), zx, zh)
        return NoH(*new), y

    no_h = types.SimpleNamespace(
        name="no_h", init=_init, SUMS_PRODUCTS=True, pointwise=pointwise,
        initial_carry=lambda p, batch_shape=(): NoH(*_initial_carry(p, batch_shape)),
        step=lambda p, c, x: pointwise(p, c, x @ p.w_x, c.out @ p.w_h))
    layer = recurrax.init_rnn(jax.random.key(0), no_h, D, H)
    with pytest.raises(ValueError, match="its carry needs a field h; NoH has none"):
        recurrax.rnn(layer, xs, fused_backward=True)
