"""The sequence topologies of the seeds: many-to-many, many-to-one, one-to-many, encoders.

A model here is a deep stack (``StackParams``) and an output head (``DenseParams``, or ``None``
to read the top layer's states directly).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_positive_int
from recurrax._layers import (
    BidirectionalParams,
    _run_stack,
    DenseParams,
    StackParams,
    dense,
    stack,
    stack_initial_carries,
    stack_step,
)
from recurrax._unroll import unroll, valid_steps


def _head(head: Optional[DenseParams], hs: jax.Array) -> jax.Array:
    return hs if head is None else dense(head, hs)


def _valid_mask(xs, lengths, mask, time_major):
    """``(*batch, T)`` (or time-major) validity mask, or ``None`` when every step is valid."""
    time = xs.shape[0] if time_major else xs.shape[-2]
    batch = tuple(xs.shape[1:-1]) if time_major else tuple(xs.shape[:-2])
    return valid_steps(lengths, mask, batch, time, time_major=time_major)


def many_to_many(
    stack_params: StackParams,
    head: Optional[DenseParams],
    xs: jax.Array,
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    time_major: bool = False,
    **stack_options: Any,
) -> jax.Array:
    """Synced many-to-many: a readout at every step, ``y_t = head(s^(L)_t)`` → ``(*batch, T, O)``.

    Outputs at masked steps are zero (the head is not applied to padding). Pick the steps and
    units that carry a teaching signal with ``teaching_mask``.
    """
    _, hs = stack(stack_params, xs, lengths=lengths, mask=mask, time_major=time_major, **stack_options)
    ys = _head(head, hs)
    valid = _valid_mask(xs, lengths, mask, time_major)
    if valid is not None and head is not None:
        ys = jnp.where(valid[..., None], ys, jnp.zeros_like(ys))
    return ys


def teaching_mask(
    valid: jax.Array,
    *,
    last_k: Optional[int] = None,
    units: Optional[Sequence[int]] = None,
    num_units: Optional[int] = None,
) -> jax.Array:
    """Where a many-to-many model receives a teaching signal (the seeds' three choices).

    Args:
      valid: boolean ``(*batch, T)`` mask of valid steps (e.g. ``sequence_mask(lengths, T)``).
      last_k: only the last ``k`` valid steps of each sequence (to learn attractors); default:
        all valid steps.
      units: only these output units carry targets (the others are free); needs ``num_units``.
        A concrete list of indices (checked in range), not a traced array.

    Returns:
      boolean ``(*batch, T)``, or ``(*batch, T, num_units)`` when ``units`` is given: multiply a
      per-element loss by it and average over its true entries.

    >>> valid = jnp.array([[True, True, True, False]])
    >>> teaching_mask(valid, last_k=2).astype(int).tolist()
    [[0, 1, 1, 0]]
    """
    check_array(valid, "valid")
    if valid.dtype != jnp.bool_ or valid.ndim < 1:
        raise ValueError(f"Expected a boolean valid-step mask (*batch, T), got {valid.dtype} {tuple(valid.shape)}.")
    steps = valid
    if last_k is not None:
        last_k = check_positive_int(last_k, "last_k")
        # Count valid steps from the end: a step is among the last k if fewer than k valid
        # steps follow it.
        counts = valid.astype(jnp.int32)
        after = jnp.flip(jnp.cumsum(jnp.flip(counts, -1), axis=-1), -1) - counts
        steps = valid & (after < last_k)
    if units is None:
        return steps
    if num_units is None:
        raise ValueError("teaching_mask(units=...) needs num_units, the size of the output.")
    num_units = check_positive_int(num_units, "num_units")
    units = jnp.asarray(units)
    if units.ndim != 1 or units.size == 0 or int(units.min()) < 0 or int(units.max()) >= num_units:
        raise ValueError(f"Expected a non-empty list of unit indices in [0, {num_units}), got {units.tolist()}.")
    selected = jnp.zeros((num_units,), bool).at[units].set(True)
    return steps[..., None] & jax.lax.broadcast_to_rank(selected, steps.ndim + 1)


def many_to_one(
    stack_params: StackParams,
    head: Optional[DenseParams],
    xs: jax.Array,
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    pool: str = "last",
    time_major: bool = False,
    **stack_options: Any,
) -> jax.Array:
    """Many-to-one: one readout per sequence → ``(*batch, O)``.

    Args:
      pool: ``"last"``: the top layer's state at each sequence's own last valid step (for a
        bidirectional top layer, the merge of the forward state at the last valid step and the
        backward state at step 0); ``"mean"`` / ``"max"``: pooled over valid steps. An empty
        sequence (length 0) pools to zeros.
    """
    if pool not in ("last", "mean", "max"):
        raise ValueError(f"Expected pool in ['last', 'max', 'mean'], got {pool!r}.")
    if pool == "last":
        return _head(head, last_outputs(stack_params, xs, lengths=lengths, mask=mask, time_major=time_major,
                                        **stack_options))
    _, hs = stack(stack_params, xs, lengths=lengths, mask=mask, time_major=time_major, **stack_options)
    time_axis = 0 if time_major else hs.ndim - 2
    valid = _valid_mask(xs, lengths, mask, time_major)
    if valid is None:
        valid = jnp.ones(hs.shape[:-1], bool)
    valid = valid[..., None]
    if pool == "mean":
        count = jnp.maximum(valid.sum(axis=time_axis), 1).astype(hs.dtype)
        pooled = jnp.where(valid, hs, jnp.zeros_like(hs)).sum(axis=time_axis) / count
    else:
        pooled = jnp.where(valid, hs, jnp.full_like(hs, -jnp.inf)).max(axis=time_axis)
        pooled = jnp.where(jnp.isfinite(pooled), pooled, jnp.zeros_like(pooled))
    return _head(head, pooled)


def last_outputs(
    stack_params: StackParams,
    xs: jax.Array,
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    time_major: bool = False,
    **stack_options: Any,
) -> jax.Array:
    """The top layer's own output at each sequence's last valid step → ``(*batch, H_top)``.

    For a bidirectional top layer, the merge of the forward output at the last valid step and
    the backward output at the first valid step (where the backward direction has read the
    whole sequence). Read off the outputs, not the carry, so it holds for any cell family
    (a carry need not contain the output). The output is the layer's own, before a residual
    connection. A sequence with no valid step gives zeros.

    >>> import recurrax
    >>> params = recurrax.init_stack(jax.random.key(0), 3, [4])
    >>> xs = jnp.ones((2, 5, 3))
    >>> last = last_outputs(params, xs, lengths=jnp.array([5, 2]))
    >>> bool(jnp.allclose(last[1], recurrax.stack(params, xs, lengths=jnp.array([5, 2]))[1][1, 1]))
    True
    """
    _, _, own = _run_stack(stack_params, xs, carries=stack_options.pop("carries", None),
                           residual=stack_options.pop("residual", False),
                           dropout_rate=stack_options.pop("dropout_rate", 0.0), key=stack_options.pop("key", None),
                           lengths=lengths, mask=mask, time_major=time_major, **stack_options)
    valid = _valid_mask(xs, lengths, mask, time_major)
    return pick_last(stack_params.layers[-1], own, valid, time_axis=0 if time_major else xs.ndim - 2)


def pick_last(top: Any, own: Any, valid: Optional[jax.Array], *, time_axis: int) -> jax.Array:
    """``last_outputs`` from the top layer's own outputs (``ys``, or ``(forward, backward)``)."""
    ys = own[0] if isinstance(top, BidirectionalParams) else own
    time = ys.shape[time_axis]
    if valid is None:
        valid = jnp.ones(ys.shape[:-1], bool)
    steps = jnp.arange(time).reshape([-1 if a == time_axis else 1 for a in range(valid.ndim)])
    last = jnp.max(jnp.where(valid, steps, -1), axis=time_axis)
    first = jnp.min(jnp.where(valid, steps, time), axis=time_axis)

    def at(ys, index):  # ys at one step per sequence: (*batch, H)
        index = jnp.clip(index, 0, time - 1)
        index = jnp.expand_dims(jnp.expand_dims(index, time_axis), -1)
        return jnp.take_along_axis(ys, index, axis=time_axis).squeeze(time_axis)

    if isinstance(top, BidirectionalParams):
        out = top.merge(at(own[0], last), at(own[1], first))
    else:
        out = at(own, last)
    return jnp.where((last < 0)[..., None], jnp.zeros_like(out), out)


class Generated(NamedTuple):
    """Output of ``generate``."""

    tokens: jax.Array  # (*batch, num_steps) int32
    logits: jax.Array  # (*batch, num_steps, vocab_size)
    carries: tuple  # each layer's carry after the last step


def generate(
    stack_params: StackParams,
    head: DenseParams,
    feedback: Callable[[jax.Array], jax.Array],
    first_token: jax.Array,
    num_steps: int,
    *,
    carries: Optional[Sequence[Any]] = None,
    key: Optional[jax.Array] = None,
    temperature: float = 1.0,
    residual: bool = False,
) -> Generated:
    """One-to-many: autoregressive generation inside one ``lax.scan``.

    At each step ``x_t = feedback(token_{t-1})`` (an embedding lookup or ``one_hot``), the stack
    steps once, ``logits_t = head(s_t)``, and ``token_t`` is ``argmax(logits_t)`` (greedy, when
    ``key`` is ``None``) or a sample from ``softmax(logits_t / temperature)``.

    Args:
      feedback: maps integer tokens ``(*batch,)`` to inputs ``(*batch, D)``.
      first_token: integer ``(*batch,)``, the first input (e.g. ``<sos>`` or a prompt's last char).
      num_steps: tokens to generate.
      carries: starting carries (e.g. an encoder's or a prompt's), default learned or zeros.
      key: PRNG key for sampling; ``None`` for greedy decoding.
      temperature: > 0; lower is greedier.

    Returns:
      ``Generated(tokens, logits, carries)``.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    if not temperature > 0:
        raise ValueError(f"Expected temperature > 0, got {temperature!r}.")
    first_token = jnp.asarray(check_array(first_token, "first_token"))
    if not jnp.issubdtype(first_token.dtype, jnp.integer):
        raise ValueError(f"Expected integer first_token, got dtype {first_token.dtype}.")
    batch_shape = tuple(first_token.shape)
    if carries is None:
        carries = stack_initial_carries(stack_params, batch_shape)
    greedy = key is None

    def step(state, _):
        layer_carries, token, k = state
        layer_carries, h = stack_step(stack_params, layer_carries, feedback(token), residual=residual)
        logits = dense(head, h)
        if greedy:
            new_token = jnp.argmax(logits, axis=-1)
        else:
            k, sub = jax.random.split(k)
            new_token = jax.random.categorical(sub, logits.astype(jnp.float32) / temperature, axis=-1)
        new_token = new_token.astype(jnp.int32)
        return (layer_carries, new_token, k), (new_token, logits)

    state = (tuple(carries), first_token.astype(jnp.int32), key if key is not None else jax.random.key(0))
    (final_carries, _, _), (tokens, logits) = unroll(step, state, None, length=num_steps, time_major=True)
    axis = len(batch_shape)
    return Generated(
        tokens=jnp.moveaxis(tokens, 0, axis),
        logits=jnp.moveaxis(logits, 0, axis),
        carries=final_carries,
    )


class Encoded(NamedTuple):
    """What an encoder hands a decoder (and attention)."""

    states: jax.Array  # (*batch, T, H_top), zero at padding
    final_carries: tuple  # each layer's final carry (pairs for bidirectional layers)
    mask: Optional[jax.Array]  # (*batch, T) valid steps, None when all are valid


def encode(
    stack_params: StackParams,
    xs: jax.Array,
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    time_major: bool = False,
    **stack_options: Any,
) -> Encoded:
    """Encoder of a seq2seq model: all top-layer states, every layer's final carry, the mask.

    ``states`` and ``mask`` follow the layout of ``xs`` (time-major with ``time_major=True``).
    """
    finals, states = stack(
        stack_params, xs, lengths=lengths, mask=mask, time_major=time_major, **stack_options
    )
    return Encoded(states=states, final_carries=finals, mask=_valid_mask(xs, lengths, mask, time_major))
