"""Attention over encoder states, with the source padding mask.

Scores ``e_j`` of a decoder query ``s`` (``(*batch, Q)``) against encoder states ``h_j``
(``(*batch, S, K)``), then ``α = softmax(e)`` over the valid source positions and the context
``c = Σ_j α_j v_j`` (values ``v_j`` default to the states):

- additive (Bahdanau et al. 2015): ``e_j = vᵀ tanh(s W_q + h_j W_k)``;
- dot (Luong et al. 2015): ``e_j = s · h_j`` (needs ``Q = K``);
- general (Luong et al. 2015): ``e_j = s W h_jᵀ``.

Padding: masked positions get weight exactly 0 (their scores never enter the exponentials), so
padding never changes the context. A row with no valid position is an error when the mask is
concrete; under ``jit`` it gets all-zero weights and a zero context, never NaN.

The state-side work is done once per source with ``memory(params, states, mask)`` (for additive
attention, the projection ``h_j W_k``), then ``attend(params, query, memory)`` runs per decoder
step.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import initializers
from recurrax._checks import check_array, check_positive_int, is_traced

KINDS = ("additive", "dot", "general")


class AdditiveParams(NamedTuple):
    """Bahdanau attention: ``e_j = vᵀ tanh(s W_q + h_j W_k)``."""

    w_query: jax.Array  # (Q, A)
    w_key: jax.Array  # (K, A)
    v: jax.Array  # (A,)


class GeneralParams(NamedTuple):
    """Luong "general" attention: ``e_j = s W h_jᵀ``."""

    w: jax.Array  # (Q, K)


class DotParams(NamedTuple):
    """Luong "dot" attention: ``e_j = s · h_j``, no parameters."""


AttentionParams = Union[AdditiveParams, GeneralParams, DotParams]


class Memory(NamedTuple):
    """The encoder side, prepared once per source sequence."""

    keys: jax.Array  # (*batch, S, K), or (*batch, S, A) projected for additive attention
    values: jax.Array  # (*batch, S, V)
    mask: jax.Array  # (*batch, S) bool: valid source positions


def init_attention(
    key: jax.Array, kind: str, query_size: int, key_size: int, attention_size: Optional[int] = None, dtype=jnp.float32
) -> AttentionParams:
    """Initialise attention of ``kind`` (``"additive"``, ``"dot"``, ``"general"``).

    ``attention_size`` (A, additive only) defaults to ``query_size``. Weights are Glorot uniform.
    """
    query_size = check_positive_int(query_size, "query_size")
    key_size = check_positive_int(key_size, "key_size")
    if kind == "dot":
        if query_size != key_size:
            raise ValueError(f"Dot attention needs query_size == key_size, got {query_size} and {key_size}.")
        return DotParams()
    glorot = initializers.get("glorot_uniform")
    if kind == "general":
        return GeneralParams(glorot(key, (query_size, key_size), dtype))
    if kind == "additive":
        size = query_size if attention_size is None else check_positive_int(attention_size, "attention_size")
        k_q, k_k, k_v = jax.random.split(key, 3)
        return AdditiveParams(
            glorot(k_q, (query_size, size), dtype), glorot(k_k, (key_size, size), dtype), glorot(k_v, (size, 1), dtype)[:, 0]
        )
    raise ValueError(f"Expected attention kind in {KINDS}, got {kind!r}.")


def memory(
    params: AttentionParams, states: jax.Array, mask: Optional[jax.Array] = None, values: Optional[jax.Array] = None
) -> Memory:
    """Prepare encoder ``states`` ``(*batch, S, K)`` (and their ``mask`` ``(*batch, S)``) for ``attend``."""
    check_array(states, "states")
    if states.ndim < 2:
        raise ValueError(f"Expected states of shape (*batch, S, K), got {tuple(states.shape)}.")
    if mask is None:
        mask = jnp.ones(states.shape[:-1], bool)
    check_array(mask, "mask")
    if tuple(mask.shape) != tuple(states.shape[:-1]) or mask.dtype != jnp.bool_:
        raise ValueError(
            f"Expected a boolean mask of shape {tuple(states.shape[:-1])} (states.shape[:-1]), "
            f"got {mask.dtype} {tuple(mask.shape)}."
        )
    if not is_traced(mask) and not np.all(np.any(np.asarray(mask), axis=-1)):
        raise ValueError("Expected every source sequence to have at least one valid position; got an empty source.")
    values = states if values is None else values
    if tuple(values.shape[:-1]) != tuple(states.shape[:-1]):
        raise ValueError(f"Expected values of shape {tuple(states.shape[:-1])} + (V,), got {tuple(values.shape)}.")
    # Zero the padding first: whatever it holds (even inf) then reaches neither the context nor,
    # through the unselected branch of a where, the gradient.
    states = jnp.where(mask[..., None], states, jnp.zeros((), states.dtype))
    values = jnp.where(mask[..., None], values, jnp.zeros((), values.dtype))
    key_size = states.shape[-1]
    if isinstance(params, AdditiveParams):
        _check_size(params.w_key.shape[0], key_size, "the key size of w_key")
        return Memory(states @ params.w_key, values, mask)
    if isinstance(params, GeneralParams):
        _check_size(params.w.shape[1], key_size, "the key size of w")
    elif not isinstance(params, DotParams):
        raise ValueError(f"Expected attention params ({', '.join(k for k in KINDS)}), got {type(params).__name__}.")
    return Memory(states, values, mask)


def _check_size(expected: int, got: int, what: str) -> None:
    if expected != got:
        raise ValueError(f"Expected states with last dimension {expected} ({what}), got {got}.")


def scores(params: AttentionParams, query: jax.Array, mem: Memory) -> jax.Array:
    """Unnormalised scores ``e`` ``(*batch, S)`` of ``query`` ``(*batch, Q)`` against the memory."""
    check_array(query, "query")
    if tuple(query.shape[:-1]) != tuple(mem.keys.shape[:-2]):
        raise ValueError(f"Expected query of shape {tuple(mem.keys.shape[:-2])} + (Q,), got {tuple(query.shape)}.")
    if isinstance(params, AdditiveParams):
        _check_size(params.w_query.shape[0], query.shape[-1], "the query size of w_query")
        hidden = jnp.tanh(mem.keys + (query @ params.w_query)[..., None, :])
        return hidden @ params.v
    if isinstance(params, GeneralParams):
        _check_size(params.w.shape[0], query.shape[-1], "the query size of w")
        query = query @ params.w
    _check_size(mem.keys.shape[-1], query.shape[-1], "the key size")
    return jnp.einsum("...k,...sk->...s", query, mem.keys)


def attend(params: AttentionParams, query: jax.Array, mem: Memory) -> tuple[jax.Array, jax.Array]:
    """Context ``(*batch, V)`` and weights ``α`` ``(*batch, S)``: softmax of the scores over valid positions."""
    e = scores(params, query, mem)
    # Masked scores never enter an exponential: exact zeros, and no NaN from an all-masked row.
    top = jnp.max(jnp.where(mem.mask, e, jnp.finfo(e.dtype).min), axis=-1, keepdims=True)
    exp = jnp.where(mem.mask, jnp.exp(jnp.where(mem.mask, e - top, 0.0)), 0.0)
    total = jnp.sum(exp, axis=-1, keepdims=True)
    weights = exp / jnp.where(total > 0, total, 1.0)
    return jnp.einsum("...s,...sv->...v", weights, mem.values), weights
