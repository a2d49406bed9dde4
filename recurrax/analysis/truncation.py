"""Truncated vs full BPTT: what truncation does to the gradient, and what it lets a model learn.

Williams & Peng (1990) truncate backpropagation to the last ``k2`` steps; Tallec & Ollivier
(2017) point out that the truncated gradient is biased: a dependency longer than ``k2`` gets no
gradient at all, however long training runs (the model can only exploit whatever trace of the
input its untrained path happens to keep). This module measures that on a task whose answer
depends on an input exactly ``L`` steps back:

- ``recurrax.tasks.recall_task``: the recall-at-lag-L task (many-to-one);
- ``bptt_gradient``: the TBPTT gradient with truncation ``k2`` (``None``: full BPTT), through
  the library's ``truncated_gradient``;
- ``gradient_cosine``: how close a truncated gradient is to the full one;
- ``train``: train one setting and record accuracy, steps to a target accuracy and time per step.

``python -m experiments truncated_vs_full`` runs the comparison for ``k2 ∈ {L/4, L/2, L, 2L}``
and full BPTT and adds the compiled memory of each gradient.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recurrax._checks import check_positive_int
from recurrax.training._tbptt import ModelStep, StepLoss, truncated_gradient
from recurrax.training._train import apply_gradients, init_train_state
from recurrax.analysis.tasks import Task

InitialCarry = Callable[[Any, tuple[int, ...]], Any]


def bptt_gradient(model_step: ModelStep, step_loss: StepLoss, k2: Optional[int] = None):
    """``(params, carry, task) -> (loss, grads)``: TBPTT with windows of ``k2`` steps (``k1 = k2``).

    ``k2=None`` (or ``k2 >= T``) is full BPTT. With ``k1 = k2`` the windows tile the sequence,
    so the forward and backward work is the same as full BPTT's; what truncation saves is the
    memory of all but one window's activations.
    """
    if k2 is not None:
        k2 = check_positive_int(k2, "k2")

    def gradient(params, carry, task: Task):
        k = task.xs.shape[-2] if k2 is None else k2
        return truncated_gradient(
            model_step, step_loss, params, carry, task.xs, task.targets, k1=k, k2=k, teaching=task.teaching
        )

    return gradient


def gradient_cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two gradient pytrees, flattened (computed in float64 on the host)."""
    flat_a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    flat_b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    if flat_a.shape != flat_b.shape:
        raise ValueError(f"Expected gradients of the same size, got {flat_a.size} and {flat_b.size} entries.")
    norm = np.linalg.norm(flat_a) * np.linalg.norm(flat_b)
    if norm == 0.0:
        raise ValueError("The cosine of a zero gradient is undefined.")
    return float(flat_a @ flat_b / norm)


def accuracy(model_step: ModelStep, params: Any, carry: Any, task: Task) -> jax.Array:
    """Fraction of scored steps (``task.teaching``) where the argmax output is the target."""
    from recurrax._unroll import unroll

    _, logits = unroll(lambda c, x: model_step(params, c, x), carry, task.xs)
    hits = (jnp.argmax(logits, -1) == task.targets) & task.teaching
    return jnp.sum(hits) / jnp.sum(task.teaching)


class TrainResult(NamedTuple):
    """What ``train`` returns for one truncation setting."""

    params: Any
    curve: list  # [(step, accuracy on the evaluation batch)]
    steps_to_target: Optional[int]  # first evaluated step at or above the target, or None
    ms_per_step: float  # median wall time of one jitted update (gradient + optimiser)


def train(
    model_step: ModelStep,
    step_loss: StepLoss,
    params: Any,
    initial_carry: InitialCarry,
    optimizer: optax.GradientTransformation,
    make_batch: Callable[[jax.Array], Task],
    eval_task: Task,
    *,
    k2: Optional[int],
    num_steps: int,
    eval_every: int,
    key: jax.Array,
    target_accuracy: float = 0.99,
) -> TrainResult:
    """Train with ``bptt_gradient(k2)`` for ``num_steps`` updates, evaluating every ``eval_every``.

    ``make_batch(key) -> Task`` draws a fresh training batch per step; ``initial_carry
    (params, batch_shape)`` gives the zero state. Every setting sees the same batches for the
    same ``key``.
    """
    gradient = bptt_gradient(model_step, step_loss, k2)

    @jax.jit
    def update(state, batch_key):
        task = make_batch(batch_key)
        carry = initial_carry(state.params, task.xs.shape[:-2])
        loss, grads = gradient(state.params, carry, task)
        return apply_gradients(optimizer, state, loss, grads, jax.random.split(state.key)[0])

    evaluate = jax.jit(lambda p: accuracy(model_step, p, initial_carry(p, eval_task.xs.shape[:-2]), eval_task))
    state = init_train_state(params, optimizer, key)
    curve, times, reached = [(0, float(evaluate(params)))], [], None
    for step in range(1, num_steps + 1):
        start = time.perf_counter()
        state, metrics = update(state, jax.random.fold_in(key, step))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
        if step % eval_every == 0 or step == num_steps:
            curve.append((step, float(evaluate(state.params))))
            if reached is None and curve[-1][1] >= target_accuracy:
                reached = step
    ms = 1e3 * float(np.median(times[1:] if len(times) > 1 else times))  # the first call compiles
    return TrainResult(state.params, curve, reached, ms)
