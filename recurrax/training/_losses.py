"""Sequence losses averaged over valid steps (the seeds' J(θ) = (1/T) Σ_t J_t, with padding).

Every loss takes per-step predictions ``(*batch, T, ...)`` and a validity ``mask`` ``(*batch, T)``
(or ``lengths``), and returns the mean of the per-step losses over the valid steps of the whole
batch: ``J = Σ_{valid (b, t)} J_{b,t} / #valid``. With equal lengths this is exactly
``(1/B) Σ_b (1/T) Σ_t J_{b,t}``; with padding every valid step weighs the same and padded steps
weigh nothing. A batch with no valid step has loss 0 (not 0/0 = NaN).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_int_range
from recurrax._unroll import valid_steps


def _step_mask(
    shape: tuple, mask: Optional[jax.Array], lengths: Optional[jax.Array], source: str
) -> Optional[jax.Array]:
    """Validity mask of the per-step losses ``shape`` = ``(*batch, T)``."""
    return valid_steps(lengths, mask, tuple(shape[:-1]), shape[-1], time_major=False, source=source)


def _masked_mean(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    weights = mask.astype(values.dtype)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros((), values.dtype)))
    return total / jnp.maximum(jnp.sum(weights), jnp.ones((), values.dtype))


def _zero_padding(a: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """``a`` ``(*mask.shape, ...)`` with zeros where ``mask`` is False.

    Applied to predictions and targets *before* the loss: padding that holds NaN or inf would
    otherwise give NaN gradients, since the mask's zero cotangent meets them (0 · NaN = NaN).
    """
    if mask is None:
        return a
    mask = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
    return jnp.where(mask, a, jnp.zeros((), a.dtype))


def sequence_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    *,
    mask: Optional[jax.Array] = None,
    lengths: Optional[jax.Array] = None,
) -> jax.Array:
    """Softmax cross-entropy per step, averaged over valid steps.

    ``J_{b,t} = −log softmax(logits_{b,t})[y_{b,t}]``, computed with ``log_softmax`` (stable for
    large logits).

    Args:
      logits: ``(*batch, T, V)``.
      targets: integer class ids ``(*batch, T)``, or one-hot / probability vectors
        ``(*batch, T, V)`` (then ``J = −Σ_v y_v log p_v``).
      mask: boolean ``(*batch, T)``; or ``lengths`` ``(*batch,)`` for right padding.

    >>> logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    >>> round(float(sequence_cross_entropy(logits, jnp.array([[0, 0]]), lengths=jnp.array([1]))), 4)
    0.6931
    """
    check_array(logits, "logits")
    check_array(targets, "targets")
    if logits.ndim < 2:
        raise ValueError(f"Expected logits of shape (*batch, T, V), got shape {tuple(logits.shape)}.")
    logits = _zero_padding(logits, _step_mask(logits.shape[:-1], mask, lengths, "logits"))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return sequence_nll(log_probs, targets, mask=mask, lengths=lengths)


def sequence_nll(
    log_probs: jax.Array,
    targets: jax.Array,
    *,
    mask: Optional[jax.Array] = None,
    lengths: Optional[jax.Array] = None,
) -> jax.Array:
    """Negative log-likelihood of the targets under given log-probabilities, per valid step.

    For decoders that already produce ``log p(y_t | y_<t, x)`` (the seq2seq form
    ``−(1/T) Σ_t log p(y_t | …)``). Shapes as ``sequence_cross_entropy``.
    """
    check_array(log_probs, "log_probs")
    check_array(targets, "targets")
    if jnp.issubdtype(targets.dtype, jnp.integer):
        if tuple(targets.shape) != tuple(log_probs.shape[:-1]):
            raise ValueError(
                f"Expected integer targets with shape {tuple(log_probs.shape[:-1])} (*batch, T), "
                f"got shape {tuple(targets.shape)}."
            )
        step_mask = _step_mask(targets.shape, mask, lengths, "log_probs")
        # Padded steps may hold any id (e.g. -100): zero them, so the gather never reads out of
        # range (which gives NaN, and NaN · 0 is NaN); valid ids must be classes.
        targets = _zero_padding(targets, step_mask)
        log_probs = _zero_padding(log_probs, step_mask)
        check_int_range(targets, 0, log_probs.shape[-1], "targets", "the number of classes")
        per_step = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        return _masked_mean(per_step, step_mask)
    else:
        if tuple(targets.shape) != tuple(log_probs.shape):
            raise ValueError(
                f"Expected one-hot targets with shape {tuple(log_probs.shape)} (*batch, T, V), "
                f"got shape {tuple(targets.shape)}."
            )
        step_mask = _step_mask(log_probs.shape[:-1], mask, lengths, "log_probs")
        targets, log_probs = _zero_padding(targets, step_mask), _zero_padding(log_probs, step_mask)
        per_step = -jnp.sum(targets.astype(log_probs.dtype) * log_probs, axis=-1)
    return _masked_mean(per_step, step_mask)


def sequence_mse(
    predictions: jax.Array,
    targets: jax.Array,
    *,
    mask: Optional[jax.Array] = None,
    lengths: Optional[jax.Array] = None,
) -> jax.Array:
    """Mean squared error over valid steps and features: ``mean_{valid} (ŷ − y)²``.

    Args:
      predictions, targets: ``(*batch, T, F)``, same shape.
      mask: boolean ``(*batch, T)`` (valid steps), or ``(*batch, T, F)`` to put the teaching
        signal on a subset of units (``teaching_mask(..., units=...)``); or ``lengths``.
    """
    check_array(predictions, "predictions")
    check_array(targets, "targets")
    if tuple(predictions.shape) != tuple(targets.shape):
        raise ValueError(
            f"Expected targets with the predictions' shape {tuple(predictions.shape)}, "
            f"got shape {tuple(targets.shape)}."
        )
    if predictions.ndim < 2:
        raise ValueError(f"Expected predictions of shape (*batch, T, F), got shape {tuple(predictions.shape)}.")
    if mask is not None and tuple(mask.shape) == tuple(predictions.shape) and lengths is None:
        check_array(mask, "mask")
        element_mask = mask
    else:
        step_mask = _step_mask(predictions.shape[:-1], mask, lengths, "predictions")
        element_mask = None if step_mask is None else jnp.broadcast_to(step_mask[..., None], predictions.shape)
    predictions, targets = _zero_padding(predictions, element_mask), _zero_padding(targets, element_mask)
    squared = jnp.square(predictions - targets.astype(predictions.dtype))
    return _masked_mean(squared, element_mask)
