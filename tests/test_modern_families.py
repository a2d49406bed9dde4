"""The modern families (sLSTM, mLSTM, RG-LRU, selective SSM, CfC, LTC and the Hawk and Mamba
blocks) through the layers and the training tools: what the common suite (``test_cells``, which
runs them all against ``numpy_reference``) does not reach.

For each family: a two-layer stack (bidirectional first layer, learned initial states, right
padding) against the float64 NumPy transcription run sequence by sequence on the unpadded
steps; TBPTT with whole-sequence windows against plain ``jax.grad``; the NNX shells against the
pure functions; a checkpoint written by ``fit`` and read back.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest
from cell_cases import VARIANTS

import recurrax

D, H, T = 3, 4, 5
LENGTHS = np.array([5, 2, 4])
MODERN = ["slstm", "mlstm", "rglru", "selective_ssm", "hawk", "mamba", "cfc", "ltc"]


def _options(family: str) -> dict:
    return VARIANTS[family][family]  # the common suite's small configuration of the family


def _xs(key=jax.random.key(3)):
    return jax.random.normal(key, (len(LENGTHS), T, D))


@pytest.mark.parametrize("family", MODERN)
def test_bidirectional_stack_with_lengths_matches_numpy(family):
    options = _options(family)
    params = recurrax.init_stack(jax.random.key(0), D, [H, H], cell=family, bidirectional=[True, False],
                                 learned_initial=True, cell_kwargs=options)
    # Learned initial states away from zero, so that reading them (or not) shows.
    params = jax.tree.map(lambda v: v + 0.1 if v.dtype == jnp.float32 else v, params)
    xs = _xs()
    _, ys = jax.jit(lambda p, x: recurrax.stack(p, x, lengths=jnp.asarray(LENGTHS)))(params, xs)
    for b, length in enumerate(LENGTHS):
        _, want = ref.stack(params, np.asarray(xs[b, :length]))
        np.testing.assert_allclose(ys[b, :length], want, rtol=2e-4, atol=2e-5, err_msg=f"{family}, sequence {b}")
        np.testing.assert_array_equal(ys[b, length:], 0.0)


@pytest.mark.parametrize("family", MODERN)
def test_tbptt_with_whole_windows_equals_full_bptt(family):
    layer = recurrax.init_rnn(jax.random.key(0), family, D, H, **_options(family))
    params = {"cell": layer.cell, "head": recurrax.init_dense(jax.random.key(1), H, 2)}
    xs, targets = _xs(), jax.random.randint(jax.random.key(2), (len(LENGTHS), T), 0, 2)
    cell = layer.family

    def model_step(p, carry, x):
        carry, h = cell.step(p["cell"], carry, x)
        return carry, recurrax.dense(p["head"], h)

    carry = cell.initial_carry(layer.cell, (len(LENGTHS),))
    loss, grads = recurrax.truncated_gradient(model_step, optax.softmax_cross_entropy_with_integer_labels,
                                              params, carry, xs, targets, k1=T, k2=T)

    def full(p):
        _, logits = recurrax.unroll(lambda c, x: model_step(p, c, x), carry, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    want_loss, want = jax.value_and_grad(full)(params)
    chex.assert_trees_all_close((loss, grads), (want_loss, want), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", MODERN)
def test_nnx_shells_and_checkpoints(family, tmp_path):
    from flax import nnx

    from recurrax import nnx as rnnx

    options, xs = _options(family), _xs()
    shell = rnnx.RNN(family, D, H, rngs=nnx.Rngs(0), learned_initial=True, **options)
    chex.assert_trees_all_equal(shell(xs, lengths=LENGTHS), recurrax.rnn(shell.pure_params, xs, lengths=LENGTHS))
    cell = rnnx.Cell(family, D, H, rngs=nnx.Rngs(1), **options)
    carry = cell.initial_carry((len(LENGTHS),))
    chex.assert_trees_all_equal(cell(carry, xs[:, 0]), cell.family.step(cell.pure_params, carry, xs[:, 0]))

    params = {"rnn": shell.pure_params}
    optimizer = recurrax.default_optimizer(1e-2)
    train_step = recurrax.make_train_step(
        lambda p, batch, key: jnp.mean(recurrax.rnn(p["rnn"], batch, lengths=LENGTHS)[1] ** 2), optimizer)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(1))
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes int and float scalars
        result = recurrax.fit(state, train_step, lambda step: xs, num_steps=2, progress=False,
                              checkpoint_dir=str(tmp_path), checkpoint_every=2)
    restored = recurrax.restore_checkpoint(str(tmp_path), state)
    chex.assert_trees_all_equal(restored.params, result.state.params)
    assert restored.params["rnn"].family == params["rnn"].family
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), result.state.params, params)
    assert any(jax.tree.leaves(changed)), "training changed no parameter"
