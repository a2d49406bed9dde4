"""Decoding an autoregressive model: greedy, temperature sampling, and beam search, jit-compiled.

The model is a step function ``step_fn(state, tokens) -> (state, logits)``: ``tokens`` is
``(B,)`` int32, ``logits`` ``(B, V)``, and every leaf of ``state`` has a leading batch axis ``B``
(e.g. a decoder's carries plus its attention memory). Decoding starts from ``start_tokens``
(``<sos>``) and runs at most ``max_length`` steps inside one ``lax.while_loop``, which exits as
soon as every sequence (every beam) has produced ``eos_id``.

Output convention: ``tokens (B, max_length)`` holds each sequence up to and including its
``<eos>``, then ``pad_id``; ``lengths`` counts the tokens up to and including ``<eos>`` (or
``max_length`` if it never came); ``scores`` is the sequence's total log-probability under the
model (temperature 1).

Choices: the decoder never emits ``pad_id`` or ``sos_id`` (their logits are masked to −∞ in
greedy, sampled and beam decoding), so ``tokens`` read without ``lengths``: the content ends at
the first ``<eos>`` or ``<pad>``. These are markers of the batch layout, never training targets,
yet an undertrained model can still rank them first. ``<unk>`` stays a choice: a model trained
on a ``Vocabulary`` with ``min_freq > 1`` learns ``<unk>`` as the target for rare tokens, so
predicting it is legitimate, and it cannot be mistaken for padding. ``scores`` stay the model's
log-probabilities (not renormalised over the allowed tokens); sampling draws from the model's
distribution restricted to the allowed tokens.

Beam search keeps ``beam_width`` hypotheses per sequence; a finished hypothesis is carried
along unchanged (it can only be extended by padding at no cost). The winner maximises
``score / length ** length_penalty`` (``0``: the raw log-probability, which favours short
outputs; ``1``: the mean per-token log-probability; Wu et al. 2016 use about 0.6-1).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_array, check_positive_int
from recurrax.seq2seq.vocab import PAD_ID, SOS_ID

StepFn = Callable[[Any, jax.Array], tuple[Any, jax.Array]]
STRATEGIES = ("greedy", "sample", "beam")


class Decoded(NamedTuple):
    """What ``decode`` returns."""

    tokens: jax.Array  # (B, max_length) int32, padded after <eos>
    lengths: jax.Array  # (B,) int32, <eos> included
    scores: jax.Array  # (B,) float32 total log-probability


def decode(
    step_fn: StepFn,
    state: Any,
    start_tokens: jax.Array,
    *,
    max_length: int,
    eos_id: int,
    strategy: str = "greedy",
    key: Optional[jax.Array] = None,
    temperature: float = 1.0,
    beam_width: int = 4,
    length_penalty: float = 0.0,
    pad_id: int = PAD_ID,
    sos_id: Optional[int] = SOS_ID,
) -> Decoded:
    """Decode with ``strategy`` ``"greedy"``, ``"sample"`` (needs ``key``; ``temperature`` > 0) or ``"beam"``.

    ``pad_id`` and ``sos_id`` (defaults: ``recurrax.vocab``'s) are never chosen (``eos_id`` always
    may be); ``sos_id=None`` for a vocabulary without a start token. See the module docstring.
    """
    max_length = check_positive_int(max_length, "max_length")
    if strategy not in STRATEGIES:
        raise ValueError(f"Expected a decoding strategy in {STRATEGIES}, got {strategy!r}.")
    check_array(start_tokens, "start_tokens")
    if start_tokens.ndim != 1 or not jnp.issubdtype(start_tokens.dtype, jnp.integer):
        raise ValueError(f"Expected integer start_tokens of shape (B,), got {start_tokens.dtype} {tuple(start_tokens.shape)}.")
    if strategy == "sample":
        if key is None:
            raise ValueError("Sampling needs a PRNG key; got key=None.")
        if not temperature > 0:
            raise ValueError(f"Expected temperature > 0, got {temperature!r}.")
    if strategy == "beam":
        if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
            raise ValueError(f"Expected beam_width to be an integer >= 1, got {beam_width!r}.")
        return _beam_search(step_fn, state, start_tokens.astype(jnp.int32), max_length, eos_id, beam_width,
                            length_penalty, pad_id, sos_id)
    key = key if strategy == "sample" else None  # greedy ignores a key (it used to sample with it)
    return _stepwise(step_fn, state, start_tokens.astype(jnp.int32), max_length, eos_id, key, temperature, pad_id,
                     sos_id)


def mask_special_tokens(
    logits: jax.Array, *, eos_id: int, pad_id: int = PAD_ID, sos_id: Optional[int] = SOS_ID
) -> jax.Array:
    """The logits a decoder chooses from: ``pad_id`` and ``sos_id`` set to −∞, ``eos_id`` kept.

    For a decoder written outside ``decode`` (e.g. feeding back its own argmax in scheduled
    sampling) to make the same choices.

    >>> mask_special_tokens(jnp.array([3.0, 2.0, 1.0, 0.5]), eos_id=2).tolist()
    [-inf, -inf, 1.0, 0.5]
    """
    check_array(logits, "logits")
    return jnp.where(_allowed(logits.shape[-1], eos_id, pad_id, sos_id), logits, -jnp.inf)


def _allowed(vocab: int, eos_id: int, pad_id: int, sos_id: Optional[int]) -> jax.Array:
    """``(V,)`` bool: the tokens a decoder may choose, every id but ``pad_id`` and ``sos_id`` (``eos_id`` always)."""
    special = {"eos_id": eos_id, "pad_id": pad_id, "sos_id": sos_id}
    for name, value in special.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or not 0 <= value < vocab):
            raise ValueError(f"Expected {name} in [0, {vocab - 1}] (the logits' vocabulary), got {value!r}.")
    banned = [i for i in (pad_id, sos_id) if i is not None and i != eos_id]
    return jnp.ones((vocab,), bool).at[jnp.asarray(banned, jnp.int32)].set(False)


def _stepwise(step_fn, state, start, max_length, eos_id, key, temperature, pad_id, sos_id) -> Decoded:
    """Greedy (``key is None``) or sampled decoding, one token per sequence per step."""
    batch = start.shape[0]
    init = (0, state, start, jnp.full((batch, max_length), pad_id, jnp.int32), jnp.zeros(batch, bool),
            jnp.zeros(batch, jnp.int32), jnp.zeros(batch, jnp.float32), key if key is not None else jax.random.key(0))

    def cond(carry):
        t, *_, finished, _, _, _ = carry
        return (t < max_length) & ~jnp.all(finished)

    def body(carry):
        t, state, token, tokens, finished, lengths, scores, k = carry
        state, logits = step_fn(state, token)
        logits = logits.astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        choices = mask_special_tokens(logits, eos_id=eos_id, pad_id=pad_id, sos_id=sos_id)
        if key is None:
            new = jnp.argmax(choices, axis=-1)
        else:
            k, sub = jax.random.split(k)
            new = jax.random.categorical(sub, choices / temperature, axis=-1)
        new = jnp.where(finished, pad_id, new).astype(jnp.int32)
        step_score = jnp.take_along_axis(log_probs, new[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(finished, 0.0, step_score)
        lengths = jnp.where(finished, lengths, t + 1)
        tokens = tokens.at[:, t].set(new)
        return t + 1, state, new, tokens, finished | (new == eos_id), lengths, scores, k

    _, _, _, tokens, _, lengths, scores, _ = jax.lax.while_loop(cond, body, init)
    return Decoded(tokens, lengths, scores)


def _beam_search(step_fn, state, start, max_length, eos_id, width, length_penalty, pad_id, sos_id) -> Decoded:
    batch = start.shape[0]
    flat = batch * width

    def tile(leaf):  # (B, ...) -> (B·W, ...), each sequence's state repeated for its beams
        return jnp.repeat(leaf, width, axis=0)

    # Only beam 0 is alive at first, so the first step expands one hypothesis, not W copies.
    scores = jnp.full((batch, width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
    init = (0, jax.tree.map(tile, state), jnp.repeat(start, width), jnp.full((batch, width, max_length), pad_id, jnp.int32),
            scores, jnp.zeros((batch, width), bool), jnp.zeros((batch, width), jnp.int32))

    def cond(carry):
        t, _, _, _, scores, finished, _ = carry
        alive = finished | (scores == -jnp.inf)  # an empty slot (W > reachable hypotheses) counts as done
        return (t < max_length) & ~jnp.all(alive)

    def body(carry):
        t, state, last, tokens, scores, finished, lengths = carry
        state, logits = step_fn(state, last)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, width, -1)
        vocab = log_probs.shape[-1]
        log_probs = jnp.where(_allowed(vocab, eos_id, pad_id, sos_id), log_probs, -jnp.inf)
        # A finished hypothesis may only be extended by padding, at no cost.
        done_row = jnp.full((vocab,), -jnp.inf, jnp.float32).at[pad_id].set(0.0)
        log_probs = jnp.where(finished[..., None], done_row, log_probs)
        top, index = jax.lax.top_k((scores[..., None] + log_probs).reshape(batch, width * vocab), width)
        parent, token = index // vocab, (index % vocab).astype(jnp.int32)
        parent_finished = jnp.take_along_axis(finished, parent, axis=1)
        lengths = jnp.where(parent_finished, jnp.take_along_axis(lengths, parent, axis=1), t + 1)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
        rows = (jnp.arange(batch)[:, None] * width + parent).reshape(flat)
        state = jax.tree.map(lambda leaf: leaf[rows], state)
        return t + 1, state, token.reshape(flat), tokens, top, parent_finished | (token == eos_id), lengths

    _, _, _, tokens, scores, _, lengths = jax.lax.while_loop(cond, body, init)
    normalised = scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
    best = jnp.argmax(normalised, axis=1)
    pick = lambda a: jnp.take_along_axis(a, best.reshape((batch,) + (1,) * (a.ndim - 1)), axis=1)[:, 0]
    return Decoded(pick(tokens), pick(lengths), pick(scores))
