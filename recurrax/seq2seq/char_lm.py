"""Character-level language model: embedding → recurrent stack → readout over the characters.

Trained to predict each next character, ``J = (1/T) Σ_t −log p(x_{t+1} | x_≤t)`` (the seeds'
per-step cross-entropy), reported in bits per character. Sampling continues a prompt: the stack
reads the prompt, then ``generate`` feeds each drawn character back (greedy without a key,
else from ``softmax(logits / temperature)``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_positive_int
from recurrax._layers import (
    DenseParams,
    EmbeddingParams,
    StackParams,
    embed,
    init_dense,
    init_embedding,
    init_stack,
    stack,
    stack_initial_carries,
)
from recurrax.training._losses import sequence_cross_entropy
from recurrax._topologies import generate, many_to_many


class CharLMParams(NamedTuple):
    """A character language model's parameters."""

    embedding: EmbeddingParams  # (V, E)
    stack: StackParams  # unidirectional layers (generation steps them one at a time)
    head: DenseParams  # (H_top, V)


def init_char_lm(
    key: jax.Array, vocab_size: int, hidden_sizes: Sequence[int] = (256,), *, embed_size: int = 32, cell: str = "lstm"
) -> CharLMParams:
    """Initialise a character LM over ``vocab_size`` symbols with layers of ``hidden_sizes``."""
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    k_embed, k_stack, k_head = jax.random.split(key, 3)
    layers = init_stack(k_stack, embed_size, list(hidden_sizes), cell=cell)
    return CharLMParams(init_embedding(k_embed, vocab_size, embed_size), layers,
                        init_dense(k_head, list(hidden_sizes)[-1], vocab_size))


def _check_sequences(ids: jax.Array) -> jax.Array:
    ids = jnp.asarray(check_array(ids, "ids"))
    if ids.ndim < 1 or ids.shape[-1] < 2:
        raise ValueError(f"Expected ids of shape (*batch, T) with T >= 2 (an input and a target), got {tuple(ids.shape)}.")
    return ids


def next_char_logits(params: CharLMParams, ids: jax.Array, *, lengths: Optional[jax.Array] = None) -> jax.Array:
    """Logits ``(*batch, T, V)`` of the character after each of ``ids`` ``(*batch, T)``."""
    return many_to_many(params.stack, params.head, embed(params.embedding, ids), lengths=lengths)


def loss(params: CharLMParams, ids: jax.Array, *, lengths: Optional[jax.Array] = None) -> jax.Array:
    """Mean next-character cross-entropy (nats) over the valid steps of ``ids`` ``(*batch, T)``.

    Inputs ``ids[..., :-1]``, targets ``ids[..., 1:]``; with ``lengths`` (right padding), a
    sequence of ``n`` characters has ``n − 1`` predictions.
    """
    ids = _check_sequences(ids)
    inputs, targets = ids[..., :-1], ids[..., 1:]
    steps = None if lengths is None else jnp.maximum(jnp.asarray(lengths) - 1, 0)
    return sequence_cross_entropy(next_char_logits(params, inputs, lengths=steps), targets, lengths=steps)


def bits_per_char(params: CharLMParams, ids: jax.Array, *, lengths: Optional[jax.Array] = None) -> jax.Array:
    """``loss / ln 2``: the model's code length per character."""
    return loss(params, ids, lengths=lengths) / math.log(2)


def sample(
    params: CharLMParams,
    prompt: jax.Array,
    num_chars: int,
    *,
    key: Optional[jax.Array] = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Continue ``prompt`` (ids ``(P,)``, ``P >= 1``) by ``num_chars`` characters: ids ``(num_chars,)``.

    Greedy (the most likely character each step) when ``key`` is ``None``.
    """
    prompt = jnp.asarray(check_array(prompt, "prompt"))
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(f"Expected a non-empty prompt of ids (P,), got shape {tuple(prompt.shape)}.")
    if prompt.shape[0] > 1:  # read all but the last character; generation starts from the last
        carries, _ = stack(params.stack, embed(params.embedding, prompt[None, :-1]))
    else:
        carries = stack_initial_carries(params.stack, (1,))
    generated = generate(params.stack, params.head, lambda token: embed(params.embedding, token), prompt[-1:],
                         num_chars, carries=carries, key=key, temperature=temperature)
    return generated.tokens[0]
