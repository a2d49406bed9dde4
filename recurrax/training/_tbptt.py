"""Truncated backpropagation through time, TBPTT(k1, k2) (Williams & Peng 1990).

The forward pass runs through the whole sequence carrying the state; every ``k1`` steps the
parameters are updated with the gradient of the losses of those ``k1`` steps, backpropagated
``k2 >= k1`` steps (``stop_gradient`` on the carry at the truncation boundary). So the loss at a
step sees between ``k2 − k1 + 1`` and ``k2`` steps of history.

Implementation: the sequence is cut into windows of ``k2`` steps that start ``k1`` apart (the
first ones reach back into masked steps before the start), and each window recomputes its
forward pass from the carry the previous window computed at the window's start. Only the
last ``k1`` steps of a window are scored, so every step's loss counts exactly once. Masked
steps leave the carry unchanged and score nothing, so padding (``lengths`` / ``mask``) is
handled as in ``unroll``. With ``k1 = k2 = T`` this is full BPTT.

Sequence resets: in a stream of concatenated sequences, ``resets`` (``(*batch, T)`` booleans)
marks the first step of each new sequence; the carry entering it is replaced by
``reset_carry`` (default zeros), so neither state nor gradient crosses a sequence boundary
(``unroll``'s ``resets``). A fixed ``reset_carry`` gets no gradient; a model with a learned
initial state can instead read a reset flag from its inputs inside ``model_step``.

When ``k1`` does not divide ``T``, the updates fall every ``k1`` steps counted back from the
end, so the first update covers the remaining ``T mod k1`` steps and the last one ends at ``T``.

The model is a step function ``model_step(params, carry, x) -> (carry, y)`` (a cell's ``step``,
``stack_step`` plus a head, ...) and ``step_loss(y, target) -> (*batch,)`` a per-example loss.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from recurrax._checks import check_array, check_positive_int
from recurrax.training._sharding import jit_data_parallel
from recurrax.training._train import TrainState, apply_gradients
from recurrax._unroll import unroll, valid_steps

ModelStep = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
StepLoss = Callable[[jax.Array, jax.Array], jax.Array]


def _check_truncation(k1: Any, k2: Any) -> tuple[int, int]:
    k1 = check_positive_int(k1, "k1 (steps between updates)")
    k2 = check_positive_int(k2, "k2 (steps backpropagated)")
    if k1 > k2:
        raise ValueError(f"Expected k1 <= k2 (each update's losses must be backpropagated), got k1={k1}, k2={k2}.")
    return k1, k2


def _windows(xs, targets, mask, lengths, resets, k1, k2, teaching=None):
    """Time-major windows ``(num_windows, k2, *batch, ...)`` of xs, targets, validity, scoring, resets."""
    check_array(xs, "xs")
    check_array(targets, "targets")
    if xs.ndim < 2:
        raise ValueError(f"Expected xs of shape (*batch, T, D), got shape {tuple(xs.shape)}.")
    time, batch = xs.shape[-2], tuple(xs.shape[:-2])
    if tuple(targets.shape[: len(batch) + 1]) != batch + (time,):
        raise ValueError(
            f"Expected targets starting with (*batch, T) = {batch + (time,)}, got shape {tuple(targets.shape)}."
        )
    mask = valid_steps(lengths, mask, batch, time, time_major=False)
    if mask is None:
        mask = jnp.ones(batch + (time,), bool)
    resets = valid_steps(None, resets, batch, time, time_major=False, name="resets")
    if resets is None:
        resets = jnp.zeros(batch + (time,), bool)
    teaching = valid_steps(None, teaching, batch, time, time_major=False, name="teaching")
    # Updates fall every k1 steps counted back from the end, so the last window ends at T and
    # backpropagates a full k2 steps; when k1 does not divide T the first update gets the
    # remainder. Everything before step 0 is masked padding.
    num = -(-time // k1)
    front = k2 - k1 + num * k1 - time

    def windows(a):  # (*batch, T, ...) -> (num, k2, *batch, ...), padded with zeros/False
        a = jnp.moveaxis(a, len(batch), 0)
        a = jnp.concatenate([jnp.zeros((front,) + a.shape[1:], a.dtype), a])
        index = k1 * jnp.arange(num)[:, None] + jnp.arange(k2)[None, :]
        return a[index]

    valid = windows(mask)
    scored = valid & (jnp.arange(k2) >= k2 - k1).reshape((1, k2) + (1,) * len(batch))
    if teaching is not None:
        scored = scored & windows(teaching)
    return windows(xs), windows(targets), valid, scored, windows(resets)


def _reset_carry(reset_carry, carry):
    return jax.tree.map(jnp.zeros_like, carry) if reset_carry is None else reset_carry


def _window_loss(model_step, step_loss, k1, params, start, reset_carry, window):
    """Mean loss of a window's scored steps; aux: the carry k1 steps in, and the final carry."""
    xs, targets, valid, scored, resets = window
    final, ys, carries = unroll(
        lambda c, x: model_step(params, c, x), start, xs, mask=valid, time_major=True,
        return_carries=True, resets=resets, reset_carry=reset_carry,
    )
    # Unscored targets (padding, which may hold NaN or out-of-range ids) are zeroed before the
    # loss sees them: a zero weight times a NaN loss, or its gradient, would still be NaN.
    targets = jnp.where(scored.reshape(scored.shape + (1,) * (targets.ndim - scored.ndim)), targets,
                        jnp.zeros((), targets.dtype))
    per_step = jax.vmap(step_loss)(ys, targets)  # (k2, *batch)
    weights = scored.astype(per_step.dtype)
    count = jnp.sum(weights)
    total = jnp.sum(jnp.where(scored, per_step, jnp.zeros((), per_step.dtype)))
    loss = total / jnp.maximum(count, jnp.ones((), count.dtype))
    next_start = jax.tree.map(lambda c: jax.lax.stop_gradient(c[k1 - 1]), carries)
    return loss, (count, next_start, final)


def truncated_gradient(
    model_step: ModelStep,
    step_loss: StepLoss,
    params: Any,
    carry: Any,
    xs: jax.Array,
    targets: jax.Array,
    *,
    k1: int,
    k2: int,
    mask: Optional[jax.Array] = None,
    lengths: Optional[jax.Array] = None,
    resets: Optional[jax.Array] = None,
    reset_carry: Any = None,
    teaching: Optional[jax.Array] = None,
) -> tuple[jax.Array, Any]:
    """The TBPTT(k1, k2) gradient of the mean per-step loss, all windows at the same params.

    ``Σ_u (N_u / N) ∇ loss_u`` over windows ``u`` with ``N_u`` scored steps of ``N``: with
    ``k1 = k2 = T`` it equals the full-BPTT gradient of the mean loss; with ``k2 < T`` it is what
    truncation leaves of it (compare with cosine similarity).

    Args:
      carry: the carry before step 0 (a stream's state, or an initial carry).
      xs, targets: ``(*batch, T, D)`` inputs and ``(*batch, T, ...)`` targets for ``step_loss``.
      mask, lengths: valid steps (at most one), as in ``unroll``.
      resets, reset_carry: sequence starts inside the stream and the carry they restart from
        (default zeros), as in ``unroll``.
      teaching: booleans ``(*batch, T)``, the steps whose loss counts (e.g. only the last step
        for a many-to-one task; see ``teaching_mask``); default every valid step. Unlike
        ``mask``, steps outside it still update the carry.

    Returns:
      ``(mean loss, gradient)``.
    """
    k1, k2 = _check_truncation(k1, k2)
    windows = _windows(xs, targets, mask, lengths, resets, k1, k2, teaching)
    reset_carry = _reset_carry(reset_carry, carry)
    grad_fn = jax.value_and_grad(
        lambda p, s, w: _window_loss(model_step, step_loss, k1, p, s, reset_carry, w), has_aux=True
    )

    def body(acc, window):
        start, loss_sum, grad_sum, total = acc
        (loss, (count, next_start, _)), grads = grad_fn(params, start, window)
        grad_sum = jax.tree.map(lambda g, d: g + count * d, grad_sum, grads)
        return (next_start, loss_sum + count * loss, grad_sum, total + count), None

    zero = jnp.zeros((), jnp.result_type(float))
    init = (carry, zero, jax.tree.map(jnp.zeros_like, params), zero)
    (_, loss_sum, grad_sum, total), _ = jax.lax.scan(body, init, windows)
    total = jnp.maximum(total, jnp.ones((), total.dtype))
    return loss_sum / total, jax.tree.map(lambda g: (g / total).astype(g.dtype), grad_sum)


def make_tbptt_train_step(
    model_step: ModelStep,
    step_loss: StepLoss,
    optimizer: optax.GradientTransformation,
    *,
    k1: int,
    k2: int,
    reset_carry: Any = None,
    jit: bool = True,
    mesh: Optional[Any] = None,
    axis: str = "data",
):
    """Build ``train_step(state, carry, batch) -> (state, carry, metrics)`` doing TBPTT(k1, k2).

    ``batch`` is ``(xs, targets)``, ``(xs, targets, lengths)`` or ``(xs, targets, lengths,
    resets)`` (``lengths`` may be ``None``) for one chunk of a stream ``(*batch, T, D)``; one
    optimiser update per ``k1`` steps, all inside one ``lax.scan``. The returned carry is the
    state after the chunk's last valid step: pass it to the next call to continue an endless
    stream, or a fresh initial carry to start new sequences; ``resets`` restart sequences
    inside a chunk from ``reset_carry`` (default zeros).
    ``metrics`` has per-update ``loss`` and ``grad_norm`` (before clipping), each
    ``(num_updates,)``.

    ``mesh``: data parallelism as in ``make_train_step``: the batch and the carry split by rows
    over the mesh's ``axis``, the state replicated. The returned carry stays split with its
    batch rows, so passing it to the next call moves nothing between devices.
    """
    k1, k2 = _check_truncation(k1, k2)

    def train_step(state: TrainState, carry: Any, batch: Any):
        if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 4:
            raise ValueError(
                "Expected batch = (xs, targets[, lengths[, resets]]), got "
                f"{type(batch).__name__} of length {len(batch) if isinstance(batch, (tuple, list)) else '-'}."
            )
        xs, targets, lengths, resets = (*batch, None, None)[:4]
        windows = _windows(xs, targets, None, lengths, resets, k1, k2)
        restart = _reset_carry(reset_carry, carry)
        grad_fn = jax.value_and_grad(
            lambda p, s, w: _window_loss(model_step, step_loss, k1, p, s, restart, w), has_aux=True
        )

        def update(acc, window):
            state, start, _ = acc
            (loss, (_, next_start, final)), grads = grad_fn(state.params, start, window)
            key, _ = jax.random.split(state.key)
            new_state, metrics = apply_gradients(optimizer, state, loss, grads, key)
            return (new_state, next_start, final), metrics

        (state, _, final), metrics = jax.lax.scan(update, (state, carry, carry), windows)
        return state, jax.lax.stop_gradient(final), metrics

    if mesh is not None:
        return jit_data_parallel(train_step, mesh, axis, jit, sharded=(False, True, True),
                                 sharded_out=(False, True, False))
    return jax.jit(train_step) if jit else train_step
