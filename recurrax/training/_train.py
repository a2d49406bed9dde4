"""Training with optax: a pure jitted ``train_step`` and a ``fit`` loop around it.

The optimiser is any ``optax.GradientTransformation``. The default follows the seeds:
``optax.chain(optax.clip_by_global_norm(threshold), optax.adam(learning_rate))`` with the
threshold in [1, 5] (Pascanu et al. 2013); clipping, schedules and optimisers are optax's own.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recurrax.training._sharding import jit_data_parallel

LossFn = Callable[[Any, Any, jax.Array], jax.Array]


def _check_positive(value: Any, name: str) -> float:
    if callable(value):  # an optax schedule
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise ValueError(f"Expected {name} > 0, got {value!r}.")
    return float(value)


def default_optimizer(
    learning_rate: Union[float, optax.Schedule] = 1e-3, clip_norm: float = 1.0
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` then Adam: the seeds' recipe against exploding gradients.

    >>> opt = default_optimizer(3e-3, clip_norm=5.0)
    >>> isinstance(opt, optax.GradientTransformation)
    True
    """
    learning_rate = _check_positive(learning_rate, "learning_rate")
    clip_norm = _check_positive(clip_norm, "clip_norm (the clipping threshold)")
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def sgd_momentum(
    learning_rate: Union[float, optax.Schedule] = 1e-2, momentum: float = 0.9, clip_norm: float = 1.0
) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip_norm)`` then SGD with (heavy-ball) momentum."""
    learning_rate = _check_positive(learning_rate, "learning_rate")
    clip_norm = _check_positive(clip_norm, "clip_norm (the clipping threshold)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Expected momentum in [0, 1), got {momentum!r}.")
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.sgd(learning_rate, momentum=momentum))


class TrainState(NamedTuple):
    """Everything a training run needs to continue exactly where it stopped."""

    params: Any  # the model's params pytree
    opt_state: Any  # the optimiser's state
    step: jax.Array  # () int32: updates done so far
    key: jax.Array  # PRNG key for the next step (dropout, sampling)


def init_train_state(params: Any, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh ``TrainState`` at step 0."""
    return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32), key=key)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    jit: bool = True,
    mesh: Optional[Any] = None,
    axis: str = "data",
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """Build ``train_step(state, batch) -> (state, metrics)``: one full-BPTT update.

    ``loss_fn(params, batch, key) -> scalar`` gets a fresh key each step (split from
    ``state.key``). ``metrics`` holds ``loss`` and ``grad_norm``, the global gradient norm
    *before* clipping, so exploding gradients stay visible when clipping hides them.

    Keys, to reproduce a step by hand: ``key, step_key = jax.random.split(state.key)``;
    ``step_key`` goes to ``loss_fn``, ``key`` becomes the next ``state.key``, i.e.
    ``loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_key)`` then
    ``apply_gradients(optimizer, state, loss, grads, key)``.

    Data parallelism: with ``mesh`` (a ``jax.sharding.Mesh``, e.g. ``data_mesh()``) the step is
    one ``jax.jit`` whose batch is split by rows over the mesh's ``axis`` (every batch leaf has
    the batch as its leading axis, its size divisible by the axis size) while the state is
    replicated; XLA inserts the all-reduce of the gradients. The loss is the same global mean,
    so the result equals the one-device step (up to float rounding) whatever the device count;
    random numbers drawn from the step's key over the whole batch (``dropout``) are the same
    too. The step places the state and batch on the mesh itself (``replicate``,
    ``shard_batch``), so ``fit`` needs nothing more; see ``recurrax.training._sharding``.

    >>> import jax.numpy as jnp
    >>> optimizer = default_optimizer(0.1)
    >>> step = make_train_step(lambda p, b, k: jnp.sum((p - b) ** 2), optimizer)
    >>> state, metrics = step(init_train_state(jnp.zeros(2), optimizer, jax.random.key(0)), jnp.ones(2))
    >>> round(float(metrics["grad_norm"]), 4)
    2.8284
    >>> noisy = lambda p, b, k: jnp.sum((p - b) ** 2 * jax.random.uniform(k, b.shape))  # uses its key
    >>> after, _ = make_train_step(noisy, optimizer)(state, jnp.ones(2))
    >>> key, step_key = jax.random.split(state.key)                  # the same step by hand
    >>> loss, grads = jax.value_and_grad(noisy)(state.params, jnp.ones(2), step_key)
    >>> by_hand, _ = apply_gradients(optimizer, state, loss, grads, key)
    >>> bool(jnp.allclose(by_hand.params, after.params))
    True
    >>> bool(jnp.array_equal(jax.random.key_data(by_hand.key), jax.random.key_data(after.key)))
    True
    """
    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        key, step_key = jax.random.split(state.key)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, step_key)
        return apply_gradients(optimizer, state, loss, grads, key)

    if mesh is not None:
        return jit_data_parallel(train_step, mesh, axis, jit, sharded=(False, True), sharded_out=(False, False))
    return jax.jit(train_step) if jit else train_step


def apply_gradients(
    optimizer: optax.GradientTransformation, state: TrainState, loss: jax.Array, grads: Any, key: jax.Array
) -> tuple[TrainState, dict]:
    """One optimiser update from given gradients (any estimator: autodiff, truncated, hand-derived).

    Returns the next state (step + 1, PRNG ``key``) and the metrics ``loss`` and ``grad_norm``
    (the global norm before clipping).
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return TrainState(params, opt_state, state.step + 1, key), metrics


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    """() bool: every floating leaf of ``tree`` is finite (one reduction, one transfer)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]).all() if leaves else jnp.array(True)


def _first_non_finite_leaf(tree: Any) -> str:
    """The path of the first leaf of ``tree`` holding a NaN or an infinity (for messages)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not np.isfinite(np.asarray(leaf)).all():
            return jax.tree_util.keystr(path)
    return ""


def _non_finite(loss: float, grad_norm: float, params: Any) -> Optional[str]:
    """Which quantity of a step is not finite (named for the message), or ``None``.

    The gradient norm is checked besides the loss because a finite loss can have a NaN gradient
    (``sqrt`` at 0, a bad custom VJP), and the params because a finite gradient can still give
    non-finite params (an overflowing update); only the params of the new state are checked,
    since optimiser states may hold infinities on purpose (``reduce_on_plateau``'s best value).
    """
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if not math.isfinite(grad_norm):
        return f"gradient norm became {grad_norm}"
    if not bool(_all_finite(params)):
        return "params became non-finite"
    return None


def _evaluate(eval_fn: Callable[[Any], dict], params: Any) -> dict:
    return {f"eval_{name}": float(value) for name, value in eval_fn(params).items()}


def _check_checkpoint_dir(directory: Optional[str], state: TrainState) -> Optional[int]:
    """Refuse a directory with checkpoints past ``state.step``; return the step already saved."""
    if directory is None:
        return None
    from recurrax.training._checkpoint import CheckpointError, checkpoint_steps

    steps = checkpoint_steps(directory)
    step = int(state.step)
    if steps and steps[-1] > step:
        raise CheckpointError(
            f"{directory} holds checkpoints up to step {steps[-1]}, past this state's step {step}: "
            "resume with restore_checkpoint, or use a new directory."
        )
    return step if step in steps else None


def _save(directory: str, state: TrainState, max_to_keep: Optional[int]) -> int:
    from recurrax.training._checkpoint import save_checkpoint

    save_checkpoint(directory, state, max_to_keep=max_to_keep)
    return int(state.step)


class FitResult(NamedTuple):
    """What ``fit`` returns."""

    state: TrainState  # the last finite state (loss, gradient norm and params all finite)
    history: list  # one dict per logged step: step, loss, grad_norm (and eval metrics)
    stopped: Optional[str]  # why training stopped early (non-finite, time_budget, stop_when), or None


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    batches: Union[Iterable[Any], Callable[[int], Any]],
    *,
    num_steps: Optional[int] = None,
    eval_fn: Optional[Callable[[Any], dict]] = None,
    eval_every: int = 0,
    log_every: int = 1,
    progress: bool = True,
    checkpoint_dir: Optional[str] = None,
    checkpoint_every: int = 0,
    max_to_keep: Optional[int] = None,
    time_budget: Optional[float] = None,
    stop_when: Optional[Callable[[dict], bool]] = None,
) -> FitResult:
    """Run ``train_step`` over ``batches`` with a tqdm progress bar showing loss and grad norm.

    Args:
      batches: an iterable of batches (stops when exhausted or after ``num_steps``), or a
        function ``step -> batch`` of the step number about to be taken (then ``num_steps`` is
        required): deterministic data, so a run resumed from a checkpoint sees the same batches.
      num_steps: updates to do in this call.
      eval_fn: ``params -> dict of metrics``, run every ``eval_every`` steps and at the end.
      log_every: record metrics in the history every this many steps.
      progress: ``False`` for silence (no bar, no messages).
      checkpoint_dir: save the state there (``save_checkpoint``) every ``checkpoint_every``
        steps and whenever ``fit`` returns or is interrupted (the last finite state). It must
        not hold checkpoints beyond ``state.step``: resume with ``restore_checkpoint`` first.
      max_to_keep: keep only the newest this many checkpoints (default all).
      time_budget: seconds of wall clock for this call (compilation included). Checked after
        each step: the step in flight finishes, so a call overruns by at most one step and its
        evaluation. At least one step is taken.
      stop_when: ``record -> bool``, called after every step with the metrics ``fit`` has for
        it: ``step``, ``loss``, ``grad_norm``, and ``eval_fn``'s metrics on evaluation steps
        (prefixed ``eval_``: ``lambda r: r.get("eval_accuracy", 0) >= 0.99``); ``True`` stops.

    Stopping on the budget or on ``stop_when`` is like an interrupt: the state is checkpointed
    (with ``checkpoint_dir``), evaluated at the end, and ``FitResult.stopped`` says which rule
    stopped it and at which step; calling ``fit`` again from the returned (or restored) state
    continues the same run.

    Data parallelism needs nothing here: a step built with ``make_train_step(..., mesh=...)``
    puts each batch on its mesh itself (split by rows, ``shard_batch``) and the state replicated.
    In a multi-process run every process calls ``fit`` with the same batches and checkpoint
    directory (orbax writes each checkpoint collectively).

    A non-finite loss, gradient norm or params stops training at once with a message naming the
    quantity and the step; the update that produced it is discarded, so the returned (and
    checkpointed) state is the last finite one. The given ``state`` must have finite params.
    """
    if num_steps is not None and (not isinstance(num_steps, int) or num_steps <= 0):
        raise ValueError(f"Expected num_steps to be a positive integer or None, got {num_steps!r}.")
    if eval_every < 0 or log_every <= 0 or checkpoint_every < 0:
        raise ValueError(
            f"Expected eval_every >= 0, log_every > 0 and checkpoint_every >= 0, got {eval_every}, "
            f"{log_every}, {checkpoint_every}."
        )
    if checkpoint_every and checkpoint_dir is None:
        raise ValueError(f"checkpoint_every={checkpoint_every} needs a checkpoint_dir; got None.")
    if callable(batches) and num_steps is None:
        raise ValueError("Expected num_steps with batches given as a function of the step.")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ValueError(f"Expected time_budget to be a positive number of seconds or None, got {time_budget!r}.")
    if stop_when is not None and not callable(stop_when):
        raise ValueError(f"Expected stop_when to be a function record -> bool or None, got {stop_when!r}.")
    if not bool(_all_finite(state.params)):
        # Every state kept below passes the same check, so no checkpoint is ever non-finite.
        raise ValueError(
            "Expected a state with finite params, got NaN or infinite values in "
            f"params{_first_non_finite_leaf(state.params)}."
        )
    saved = _check_checkpoint_dir(checkpoint_dir, state)
    from tqdm.auto import tqdm

    history: list = []
    stopped = None
    bar = tqdm(total=num_steps, disable=not progress, desc="fit", leave=False)
    iterator = None if callable(batches) else iter(batches)
    done, last_eval = 0, None
    started = time.perf_counter()
    try:
        while num_steps is None or done < num_steps:
            if iterator is None:
                batch = batches(int(state.step))
            else:
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
            new_state, metrics = train_step(state, batch)
            loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            step = int(new_state.step)
            problem = _non_finite(loss, grad_norm, new_state.params)
            if problem is not None:
                stopped = (
                    f"{problem} at step {step} (loss {loss}, grad norm {grad_norm}); stopped, "
                    f"returning the state after step {int(state.step)}."
                )
                if progress:
                    print(stopped)
                break
            state, done = new_state, done + 1
            record = {"step": step, "loss": loss, "grad_norm": grad_norm}
            evaluate = eval_fn is not None and eval_every > 0 and step % eval_every == 0
            if evaluate:
                record.update(_evaluate(eval_fn, state.params))
                last_eval = step
            if evaluate or step % log_every == 0:
                history.append(record)
            if checkpoint_every and step % checkpoint_every == 0:
                saved = _save(checkpoint_dir, state, max_to_keep)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", grad_norm=f"{grad_norm:.3g}")
            if stop_when is not None and stop_when(dict(record)):
                stopped = f"stop_when was true at step {step}."
            elapsed = time.perf_counter() - started
            if stopped is None and time_budget is not None and elapsed >= time_budget:
                stopped = f"time budget of {time_budget:g} s reached at step {step} ({elapsed:.1f} s)."
            if stopped is not None:
                if progress:
                    print(stopped)
                break
    finally:
        bar.close()
        if checkpoint_dir is not None and saved != int(state.step):
            _save(checkpoint_dir, state, max_to_keep)  # also on interruption: the last finite state
    if eval_fn is not None and last_eval != int(state.step):
        history.append({"step": int(state.step), **_evaluate(eval_fn, state.params)})
    return FitResult(state=state, history=history, stopped=stopped)
