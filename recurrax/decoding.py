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

Beam search keeps ``beam_width`` hypotheses per sequence; a finished hypothesis is carried
along unchanged (it can only be extended by padding at no cost). The winner maximises
``score / length ** length_penalty`` (``0``: the raw log-probability, which favours short
outputs; ``1``: the mean per-token log-probability; Wu et al. 2016 use about 0.6-1).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_positive_int

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
    pad_id: int = 0,
) -> Decoded:
    """Decode with ``strategy`` ``"greedy"``, ``"sample"`` (needs ``key``; ``temperature`` > 0) or ``"beam"``."""
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
                            length_penalty, pad_id)
    return _stepwise(step_fn, state, start_tokens.astype(jnp.int32), max_length, eos_id, key, temperature, pad_id)


def _stepwise(step_fn, state, start, max_length, eos_id, key, temperature, pad_id) -> Decoded:
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
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if key is None:
            new = jnp.argmax(logits, axis=-1)
        else:
            k, sub = jax.random.split(k)
            new = jax.random.categorical(sub, logits.astype(jnp.float32) / temperature, axis=-1)
        new = jnp.where(finished, pad_id, new).astype(jnp.int32)
        step_score = jnp.take_along_axis(log_probs, new[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(finished, 0.0, step_score)
        lengths = jnp.where(finished, lengths, t + 1)
        tokens = tokens.at[:, t].set(new)
        return t + 1, state, new, tokens, finished | (new == eos_id), lengths, scores, k

    _, _, _, tokens, _, lengths, scores, _ = jax.lax.while_loop(cond, body, init)
    return Decoded(tokens, lengths, scores)


def _beam_search(step_fn, state, start, max_length, eos_id, width, length_penalty, pad_id) -> Decoded:
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
