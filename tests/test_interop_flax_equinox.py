"""flax.linen and Equinox interop: converted params reproduce the anchors' own outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrax
from recurrax.interop import (
    carry_from_equinox,
    carry_from_flax_linen,
    carry_to_equinox,
    carry_to_flax_linen,
    from_equinox,
    from_flax_linen,
    to_equinox,
    to_flax_linen,
)

B, T, D, H = 3, 5, 3, 4
LENGTHS = jnp.array([5, 3, 1], jnp.int32)


def batch(key):
    xs = jax.random.normal(key, (B, T, D))
    mask = jnp.arange(T)[None, :] < LENGTHS[:, None]
    return jnp.where(mask[..., None], xs, 7.0), np.asarray(mask)


def randomize(tree, key):
    """Nonzero values everywhere (flax and equinox initialise some biases to zero)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def loose():
    return jax.numpy_dtype_promotion("standard")


# ----------------------------------------------------------------------------- flax.linen

FLAX_CELLS = ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"]


@pytest.mark.parametrize("name", FLAX_CELLS)
def test_matches_flax_linen(name, key):
    import flax.linen as nn

    k_x, k_init, k_rand, k_carry = jax.random.split(key, 4)
    xs, mask = batch(k_x)
    cell = getattr(nn, name)(H)
    model = nn.RNN(cell, return_carry=True)
    with loose(), jax.numpy_rank_promotion("allow"):
        variables = randomize(model.init(k_init, xs), k_rand)
        carry0 = randomize(cell.initialize_carry(k_carry, (B, D)), k_carry)
        their_carry, their_ys = model.apply(
            variables, xs, initial_carry=carry0, seq_lengths=LENGTHS
        )

    params = from_flax_linen(variables, cell)  # the whole variables dict and the module
    assert bits(params) == bits(from_flax_linen(variables["params"]["cell"], name))
    final, ys = recurrax.rnn(
        params, xs, carry=carry_from_flax_linen(carry0, params), lengths=LENGTHS
    )
    np.testing.assert_allclose(np.asarray(ys)[mask], np.asarray(their_ys)[mask], atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(carry_to_flax_linen(final)), jax.tree.leaves(their_carry)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    # export gives back the very same arrays, in flax's own structure
    exported = to_flax_linen(params, name)
    assert jax.tree.structure(exported) == jax.tree.structure(variables["params"]["cell"])
    assert bits(exported) == bits(variables["params"]["cell"])
    assert bits(from_flax_linen(exported, name)) == bits(params)


def test_flax_linen_carry_order():
    # flax.linen's LSTM carry is (c, h); recurrax's is LSTMCarry(h, c).
    params = recurrax.init_rnn(jax.random.key(0), "lstm", D, H)
    c, h = jnp.zeros((B, H)), jnp.ones((B, H))
    carry = carry_from_flax_linen((c, h), params)
    assert bits(carry.h) == bits(h) and bits(carry.c) == bits(c)
    assert bits(carry_to_flax_linen(carry)) == bits((c, h))


def test_flax_linen_bad_params(key):
    params = to_flax_linen(recurrax.init_rnn(key, "gru", D, H))
    missing = {k: dict(v) for k, v in params.items()}
    del missing["hn"]["bias"]
    with pytest.raises(ValueError, match=r"Missing key 'hn/bias' \(expected shape \(4,\)\)"):
        from_flax_linen(missing, "GRUCell")
    wrong = {**params, "iz": {"kernel": jnp.zeros((D, H + 1)), "bias": params["iz"]["bias"]}}
    with pytest.raises(ValueError, match=r"'iz/kernel'.*expected shape \(3, 4\)"):
        from_flax_linen(wrong, "GRUCell")
    with pytest.raises(ValueError, match="reset-after"):
        to_flax_linen(recurrax.init_rnn(key, "gru", D, H, reset_after=False))
    with pytest.raises(ValueError, match="'hr/kernel'"):  # an LSTM's params are not a GRU's
        from_flax_linen(to_flax_linen(recurrax.init_rnn(key, "lstm", D, H)), "GRUCell")


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_flax_linen(use_bias, key):
    import flax.linen as nn

    k_x, k_init, k_rand = jax.random.split(key, 3)
    xs, _ = batch(k_x)
    module = nn.Dense(H, use_bias=use_bias)
    with loose(), jax.numpy_rank_promotion("allow"):
        variables = randomize(module.init(k_init, xs), k_rand)
        theirs = module.apply(variables, xs)

    head = from_flax_linen(variables, module)  # the whole variables dict and the module
    assert isinstance(head, recurrax.DenseParams)
    ours = recurrax.dense(head, xs)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6, rtol=0)
    assert bits(head) == bits(from_flax_linen(variables["params"], "Dense"))
    exported = to_flax_linen(head, use_bias=use_bias)
    assert jax.tree.structure(exported) == jax.tree.structure(variables["params"])
    assert bits(exported) == bits(variables["params"])
    with pytest.raises(ValueError, match=r"Missing key 'bias' \(expected shape \(4,\)\)"):
        from_flax_linen({"kernel": variables["params"]["kernel"]}, nn.Dense(H))


# ----------------------------------------------------------------------------- equinox


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_equinox(name, use_bias, key):
    eqx = pytest.importorskip("equinox")
    k_x, k_cell, k_carry = jax.random.split(key, 3)
    xs, mask = batch(k_x)
    cell = getattr(eqx.nn, name)(D, H, use_bias=use_bias, key=k_cell)
    h0 = 0.5 * jax.random.normal(k_carry, (B, H))
    state0 = (h0, -h0) if name == "LSTMCell" else h0

    def their_step(state, inputs):  # equinox's own __call__, frozen at padded steps
        x, valid = inputs
        with loose():
            new = jax.vmap(cell)(x, state)
        state = jax.tree.map(lambda n, o: jnp.where(valid[:, None], n, o), new, state)
        h = state[0] if name == "LSTMCell" else state
        return state, jnp.where(valid[:, None], h, 0.0)

    their_final, their_ys = jax.lax.scan(
        their_step, state0, (jnp.swapaxes(xs, 0, 1), jnp.asarray(mask).T)
    )
    their_ys = jnp.swapaxes(their_ys, 0, 1)

    params = from_equinox(cell)
    final, ys = recurrax.rnn(params, xs, carry=carry_from_equinox(state0, params), lengths=LENGTHS)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(their_ys), atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(carry_to_equinox(final)), jax.tree.leaves(their_final)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    exported = to_equinox(params, use_bias=use_bias)
    assert bits(exported) == bits(cell)
    assert bits(from_equinox(exported)) == bits(params)


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_equinox(use_bias, key):
    eqx = pytest.importorskip("equinox")
    k_x, k_init, k_rand = jax.random.split(key, 3)
    xs, _ = batch(k_x)
    linear = randomize(eqx.nn.Linear(D, H, use_bias=use_bias, key=k_init), k_rand)
    theirs = jax.vmap(jax.vmap(linear))(xs)  # equinox's own __call__, one vector at a time

    head = from_equinox(linear)
    assert isinstance(head, recurrax.DenseParams)
    ours = recurrax.dense(head, xs)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6, rtol=0)
    exported = to_equinox(head, use_bias=use_bias)
    assert type(exported) is eqx.nn.Linear and bits(exported) == bits(linear)
    assert bits(from_equinox(exported)) == bits(head)


def test_equinox_bad_input(key):
    eqx = pytest.importorskip("equinox")
    cell = eqx.nn.GRUCell(D, H, key=key)
    broken = eqx.tree_at(lambda m: m.bias_n, cell, jnp.zeros(H + 1))
    with pytest.raises(ValueError, match=r"'bias_n'.*expected shape \(4,\)"):
        from_equinox(broken)
    with pytest.raises(ValueError, match="LSTMCell, GRUCell or Linear, got MLP"):
        from_equinox(eqx.nn.MLP(D, H, 2, 1, key=key))
    with pytest.raises(ValueError, match="in_features='scalar'"):
        from_equinox(eqx.nn.Linear("scalar", H, key=key))
    with pytest.raises(ValueError, match="no equivalent"):
        to_equinox(recurrax.init_rnn(key, "elman", D, H))


def test_equinox_carry_order():
    # Equinox's LSTM state is (h, c), the order of recurrax's LSTMCarry(h, c).
    params = recurrax.init_rnn(jax.random.key(0), "lstm", D, H)
    h, c = jnp.ones(H), jnp.zeros(H)
    carry = carry_from_equinox((h, c), params)
    assert bits(carry) == bits((h, c)) and bits(carry_to_equinox(carry)) == bits((h, c))
