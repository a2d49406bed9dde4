"""The Flax NNX modules are shells: their outputs, gradients and updates are the pure functions'."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import recurrax
from recurrax import nnx as rnnx

D, H, T = 3, 4, 5
LENGTHS = jnp.array([5, 2, 0])


def _xs():
    return jax.random.normal(jax.random.key(1), (3, T, D))


def _bump(params):
    """Make every bias-like leaf nonzero so that the comparisons see them."""
    return jax.tree.map(lambda v: v + 0.1 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape), params)


# modules built from sizes and rngs
MODULES = {
    "ElmanCell": lambda rngs: rnnx.ElmanCell(D, H, rngs=rngs, activation="relu"),
    "LSTMCell": lambda rngs: rnnx.LSTMCell(D, H, rngs=rngs, peephole=True),
    "GRUCell": lambda rngs: rnnx.GRUCell(D, H, rngs=rngs, reset_after=False),
    "RNN": lambda rngs: rnnx.RNN("gru", D, H, rngs=rngs, learned_initial=True),
    "Bidirectional": lambda rngs: rnnx.Bidirectional("lstm", D, H, merge="sum", rngs=rngs),
    "StackedRNN": lambda rngs: rnnx.StackedRNN(D, [H, H], cell=["gru", "lstm"], bidirectional=[True, False],
                                               residual=False, rngs=rngs),
}
PARAMS = {  # pure params for the params=... constructors
    "ElmanCell": lambda k: recurrax.elman.init(k, D, H, activation="sigmoid"),
    "LSTMCell": lambda k: recurrax.lstm.init(k, D, H, peephole=True),
    "GRUCell": lambda k: recurrax.gru.init(k, D, H),
    "RNN": lambda k: recurrax.init_rnn(k, "lstm", D, H, learned_initial=True),
    "Bidirectional": lambda k: recurrax.init_bidirectional(k, "gru", D, H, merge="mean"),
    "StackedRNN": lambda k: recurrax.init_stack(k, D, [H, H], cell="elman"),
}
CELL_FAMILIES = {"ElmanCell": recurrax.elman, "LSTMCell": recurrax.lstm, "GRUCell": recurrax.gru}


def _pure_apply(name, params):
    """The pure function a module of kind ``name`` must equal, as ``params -> output``."""
    if name in CELL_FAMILIES:
        family = CELL_FAMILIES[name]
        carry = jax.tree.map(lambda v: v + 0.5, family.initial_carry(params, (3,)))
        return lambda p: family.step(p, carry, _xs()[:, 0])
    fn = {"RNN": recurrax.rnn, "Bidirectional": recurrax.bidirectional, "StackedRNN": recurrax.stack}[name]
    return lambda p: fn(p, _xs(), lengths=LENGTHS)


def _module_apply(name, module):
    if name in CELL_FAMILIES:
        carry = jax.tree.map(lambda v: v + 0.5, module.initial_carry((3,)))
        return module(carry, _xs()[:, 0])
    return module(_xs(), lengths=LENGTHS)


def _loss(out):
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(out))


names = pytest.mark.parametrize("name", list(MODULES))


@names
def test_module_equals_pure_function(name):
    module = MODULES[name](nnx.Rngs(0))
    params = module.pure_params
    chex.assert_trees_all_equal(_module_apply(name, module), _pure_apply(name, params)(params))


@names
def test_module_wraps_given_params(name):
    params = _bump(PARAMS[name](jax.random.key(3)))
    cls = getattr(rnnx, name)
    module = cls(params=params)
    chex.assert_trees_all_equal(module.pure_params, params)
    assert jax.tree.structure(module.pure_params) == jax.tree.structure(params)
    chex.assert_trees_all_equal(_module_apply(name, module), _pure_apply(name, params)(params))
    # the leaves are trainable nnx.Params
    assert len(jax.tree.leaves(nnx.state(module, nnx.Param))) == len(jax.tree.leaves(params))


def test_cell_module_refuses_another_family():
    with pytest.raises(ValueError, match="LSTMCell expects lstm params: lstm.initial_carry expects LSTMParams, got GRUParams"):
        rnnx.LSTMCell(params=recurrax.gru.init(jax.random.key(0), D, H))
    with pytest.raises(ValueError, match=r"GRUCell needs rngs=nnx.Rngs\(...\) or params=..."):
        rnnx.GRUCell(D, H)
    with pytest.raises(ValueError, match=r"StackedRNN needs rngs=nnx.Rngs\(...\) or params=..."):
        rnnx.StackedRNN(D, [H])


@names
def test_nnx_grad_equals_jax_grad_of_pure_function(name):
    module = MODULES[name](nnx.Rngs(0))
    nnx.update(module, jax.tree.map(lambda v: v + 0.05, nnx.state(module, nnx.Param)))  # nonzero biases
    params = module.pure_params
    grads = nnx.grad(lambda m: _loss(_module_apply(name, m)))(module)
    want = jax.grad(lambda p: _loss(_pure_apply(name, params)(p)))(params)
    # read the nnx gradient state back in the pure params' structure
    holder = nnx.clone(module)
    nnx.update(holder, grads)
    chex.assert_trees_all_close(holder.pure_params, want, rtol=1e-6, atol=1e-7)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(want))


@names
def test_nnx_optimizer_step_equals_optax_on_pure_params(name):
    module = MODULES[name](nnx.Rngs(0))
    params = module.pure_params
    tx = optax.adam(1e-2)
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)
    grads = nnx.grad(lambda m: _loss(_module_apply(name, m)))(module)
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction: float ** int32
        optimizer.update(module, grads)
        pure_grads = jax.grad(lambda p: _loss(_pure_apply(name, params)(p)))(params)
        updates, _ = tx.update(pure_grads, tx.init(params), params)
    want = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(module.pure_params, want, rtol=1e-6, atol=1e-7)
    changed = [not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(module.pure_params), jax.tree.leaves(params))]
    assert any(changed)


def test_stacked_rnn_dropout_only_with_a_key():
    model = rnnx.StackedRNN(D, [H, H, H], cell="lstm", dropout_rate=0.5, residual=True, rngs=nnx.Rngs(0))
    params = model.pure_params
    xs = _xs()
    plain = model(xs, lengths=LENGTHS)
    chex.assert_trees_all_equal(plain, recurrax.stack(params, xs, lengths=LENGTHS, residual=True))
    chex.assert_trees_all_equal(plain, model(xs, lengths=LENGTHS))  # deterministic without a key
    key = jax.random.key(7)
    dropped = model(xs, lengths=LENGTHS, key=key)
    chex.assert_trees_all_equal(dropped, recurrax.stack(params, xs, lengths=LENGTHS, residual=True,
                                                        dropout_rate=0.5, key=key))
    assert not np.allclose(np.asarray(dropped[1]), np.asarray(plain[1]))


def test_module_under_nnx_jit():
    model = MODULES["StackedRNN"](nnx.Rngs(0))
    run = nnx.jit(lambda m, xs, lengths: m(xs, lengths=lengths))
    chex.assert_trees_all_close(run(model, _xs(), LENGTHS), recurrax.stack(model.pure_params, _xs(), lengths=LENGTHS),
                                rtol=1e-6, atol=1e-6)
