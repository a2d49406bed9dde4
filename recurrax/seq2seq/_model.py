"""The encoder–decoder model, documented and re-exported by ``recurrax.seq2seq`` (the package)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from recurrax.seq2seq import attention as attn
from recurrax.seq2seq import decoding
from recurrax._checks import check_array, check_int_range, check_lengths, is_traced
from recurrax._layers import (
    DenseParams,
    EmbeddingParams,
    StackParams,
    dense,
    embed,
    init_dense,
    init_embedding,
    init_stack,
    layer_output_size,
    rnn_initial_carry,
    stack_step,
    _run_stack,
)
from recurrax._topologies import pick_last
from recurrax.training._losses import sequence_cross_entropy
from recurrax._unroll import sequence_mask
from recurrax.seq2seq.vocab import EOS_ID, PAD_ID, SOS_ID


class Seq2SeqParams(NamedTuple):
    """An encoder–decoder model's parameters."""

    source_embedding: EmbeddingParams
    encoder: StackParams
    bridge: tuple  # per decoder layer: DenseParams (context → h_0) or None (identity)
    target_embedding: EmbeddingParams
    decoder: StackParams  # unidirectional
    attention: Optional[attn.AttentionParams]  # None: no attention
    combine: Optional[DenseParams]  # (H_dec + K, H_dec), with attention only
    head: DenseParams  # (H_dec, V_target)


class DecoderState(NamedTuple):
    """What the decoder carries from step to step (every leaf has the batch axis first)."""

    carries: tuple  # one carry per decoder layer
    memory: Optional[attn.Memory]  # the encoder states, with attention


def init_seq2seq(
    key: jax.Array,
    source_vocab_size: int,
    target_vocab_size: int,
    *,
    embed_size: int = 32,
    encoder_sizes: Sequence[int] = (64,),
    decoder_sizes: Sequence[int] = (64,),
    encoder_cell: str = "lstm",
    decoder_cell: str = "lstm",
    bidirectional_encoder: bool = False,
    attention: Optional[str] = None,
    encoder_cell_kwargs: Union[dict, Sequence[dict], None] = None,
    decoder_cell_kwargs: Union[dict, Sequence[dict], None] = None,
    dtype: Any = None,
) -> Seq2SeqParams:
    """Initialise an encoder–decoder; ``attention``: None, ``"additive"``, ``"dot"``, ``"general"``.

    ``encoder_cell_kwargs`` / ``decoder_cell_kwargs``: options for the cell family's ``init``
    (e.g. ``{"forget_bias": 2.0}``), one dict for every layer or one per layer, as ``init_stack``'s
    ``cell_kwargs``. ``dtype`` (e.g. ``jnp.float64``, with x64 enabled): the dtype of every
    parameter, also passed to the families' ``init`` as ``dtype``; ``None`` keeps float32 for the
    embeddings, bridges, attention and head and each family's own default for the cells.
    """
    if dtype is not None and jax.dtypes.canonicalize_dtype(dtype) != jnp.dtype(dtype):
        raise ValueError(
            f"Expected a dtype JAX can hold, got dtype={jnp.dtype(dtype)} with x64 disabled: "
            "enable it (jax.config.update('jax_enable_x64', True)) or pass a 32-bit dtype."
        )
    keys = jax.random.split(key, 8)
    encoder = init_stack(keys[0], embed_size, list(encoder_sizes), cell=encoder_cell,
                         bidirectional=bidirectional_encoder,
                         cell_kwargs=_with_dtype(encoder_cell_kwargs, dtype, "encoder_cell_kwargs"))
    decoder = init_stack(keys[1], embed_size, list(decoder_sizes), cell=decoder_cell,
                         cell_kwargs=_with_dtype(decoder_cell_kwargs, dtype, "decoder_cell_kwargs"))
    context_size = layer_output_size(encoder.layers[-1])
    float_dtype = jnp.float32 if dtype is None else dtype
    bridge = tuple(
        None if size == context_size else init_dense(k, context_size, size, dtype=float_dtype)
        for k, size in zip(jax.random.split(keys[2], len(decoder_sizes)), decoder_sizes)
    )
    top = list(decoder_sizes)[-1]
    attention_params = combine = None
    if attention is not None:
        attention_params = attn.init_attention(keys[3], attention, top, context_size,
                                               dtype=float_dtype)
        combine = init_dense(keys[4], top + context_size, top, dtype=float_dtype)
    params = Seq2SeqParams(
        init_embedding(keys[5], source_vocab_size, embed_size, dtype=float_dtype), encoder, bridge,
        init_embedding(keys[6], target_vocab_size, embed_size, dtype=float_dtype), decoder,
        attention_params, combine,
        init_dense(keys[7], top, target_vocab_size, dtype=float_dtype),
    )
    if dtype is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != jnp.dtype(dtype):
                raise ValueError(
                    f"Expected every parameter in dtype {jnp.dtype(dtype)}, got {leaf.dtype} at "
                    f"{jax.tree_util.keystr(path)}: does its cell family's init take a dtype?"
                )
    return params


def _with_dtype(cell_kwargs: Any, dtype: Any, name: str) -> Any:
    """``cell_kwargs`` (a dict, one per layer, or ``None``) with ``dtype`` added to each dict."""
    if dtype is None:
        return cell_kwargs
    per_layer = cell_kwargs is not None and not isinstance(cell_kwargs, dict)
    out = []
    for options in (cell_kwargs if per_layer else [cell_kwargs or {}]):
        if "dtype" in options and jnp.dtype(options["dtype"]) != jnp.dtype(dtype):
            raise ValueError(
                f"Expected {name} without a dtype, or with dtype={jnp.dtype(dtype)} as passed, "
                f"got dtype={options['dtype']}."
            )
        out.append({**options, "dtype": dtype})
    return out if per_layer else out[0]


def encode_source(params: Seq2SeqParams, source: jax.Array, lengths: jax.Array) -> DecoderState:
    """Run the encoder over ``source`` ids ``(B, S)`` (right-padded, ``lengths`` ≥ 1) → the decoder's start."""
    source = jnp.asarray(check_array(source, "source"))
    if source.ndim != 2:
        raise ValueError(f"Expected source ids of shape (B, S), got {tuple(source.shape)}.")
    lengths = check_lengths(lengths, source.shape[:1], source.shape[1])
    # Read on the host: under jit, lengths closed over are constants but jnp.min's result is traced.
    if not is_traced(lengths) and int(np.min(np.asarray(lengths))) < 1:
        raise ValueError("Expected every source to have at least one token; got an empty source (length 0).")
    _, states, own = _run_stack(params.encoder, embed(params.source_embedding, source), carries=None,
                                residual=False, dropout_rate=0.0, key=None, lengths=lengths)
    # The encoder's top output at each source's last token (both ends for a bidirectional top).
    context = pick_last(params.encoder.layers[-1], own, sequence_mask(lengths, source.shape[1]), time_axis=1)
    carries = []
    for layer, bridge in zip(params.decoder.layers, params.bridge):
        carry = rnn_initial_carry(layer, source.shape[:1])
        if "h" not in getattr(carry, "_fields", ()):
            raise ValueError(
                f"A seq2seq decoder cell needs a carry with an 'h' field (its output state, set from the "
                f"encoder's context); cell {layer.family.name!r} has a {type(carry).__name__} carry."
            )
        h = context if bridge is None else jnp.tanh(dense(bridge, context))
        carries.append(carry._replace(h=h))
    memory = None
    if params.attention is not None:
        memory = attn.memory(params.attention, states, sequence_mask(lengths, source.shape[1]))
    return DecoderState(tuple(carries), memory)


def decoder_step(params: Seq2SeqParams, state: DecoderState, tokens: jax.Array):
    """One decoder step from the previous tokens ``(B,)`` → ``(state, logits (B, V), weights (B, S) or None)``."""
    carries, s = stack_step(params.decoder, state.carries, embed(params.target_embedding, tokens))
    if params.attention is None:
        return DecoderState(carries, None), dense(params.head, s), None
    context, weights = attn.attend(params.attention, s, state.memory)
    attentional = jnp.tanh(dense(params.combine, jnp.concatenate([s, context], -1)))
    return DecoderState(carries, state.memory), dense(params.head, attentional), weights


def teacher_forcing(target: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Decoder inputs ``<sos> y_1 … y_n`` and outputs ``y_1 … y_n <eos>``, both ``(B, T + 1)``, padded with ``<pad>``."""
    target = jnp.asarray(check_array(target, "target"))
    if target.ndim != 2:
        raise ValueError(f"Expected target ids of shape (B, T), got {tuple(target.shape)}.")
    lengths = check_lengths(lengths, target.shape[:1], target.shape[1])
    pad = jnp.full(target.shape[:1] + (1,), PAD_ID, target.dtype)
    inputs = jnp.concatenate([jnp.full_like(pad, SOS_ID), target], axis=1)
    outputs = jnp.concatenate([target, pad], axis=1)
    outputs = jnp.where(jnp.arange(outputs.shape[1])[None] == lengths[:, None], EOS_ID, outputs)
    valid = sequence_mask(lengths + 1, outputs.shape[1])
    return jnp.where(valid, inputs, PAD_ID), jnp.where(valid, outputs, PAD_ID)


def decode_teacher_forced(
    params: Seq2SeqParams,
    source: jax.Array,
    source_lengths: jax.Array,
    decoder_inputs: jax.Array,
    *,
    sampling_ratio: float = 0.0,
    key: Optional[jax.Array] = None,
):
    """Run the decoder over given inputs ``(B, T)``: ``(logits (B, T, V), weights (B, T, S) or None)``.

    With ``sampling_ratio`` > 0 (needs ``key``), each step after the first takes the model's own
    previous argmax instead of the given token with that probability.
    """
    if not 0.0 <= sampling_ratio <= 1.0:
        raise ValueError(f"Expected sampling_ratio in [0, 1], got {sampling_ratio!r}.")
    if sampling_ratio > 0 and key is None:
        raise ValueError("Scheduled sampling (sampling_ratio > 0) needs a PRNG key; got key=None.")
    decoder_inputs = jnp.asarray(check_array(decoder_inputs, "decoder_inputs"))
    if decoder_inputs.ndim != 2 or not jnp.issubdtype(decoder_inputs.dtype, jnp.integer):
        raise ValueError(f"Expected integer decoder_inputs (B, T), got {decoder_inputs.dtype} {tuple(decoder_inputs.shape)}.")
    # Checked here: inside the scan the embedding lookup sees traced ids and cannot check them.
    check_int_range(decoder_inputs, 0, params.target_embedding.table.shape[0], "decoder_inputs", "the target vocabulary")
    state = encode_source(params, source, source_lengths)
    keys = jax.random.split(key if key is not None else jax.random.key(0), decoder_inputs.shape[1])
    first = decoder_inputs[:, 0]

    def step(carry, inputs):
        state, previous = carry
        given, k, t = inputs
        if sampling_ratio > 0:
            use_model = (t > 0) & jax.random.bernoulli(k, sampling_ratio, given.shape)
            given = jnp.where(use_model, previous, given)
        state, logits, weights = decoder_step(params, state, given)
        # The fed-back token is what greedy decoding would emit: never <pad> or <sos>.
        own = jnp.argmax(decoding.mask_special_tokens(logits, eos_id=EOS_ID), -1).astype(given.dtype)
        return (state, own), (logits, weights)

    steps = (jnp.moveaxis(decoder_inputs, 1, 0), keys, jnp.arange(decoder_inputs.shape[1]))
    _, (logits, weights) = jax.lax.scan(step, (state, first), steps)
    weights = None if weights is None else jnp.moveaxis(weights, 0, 1)
    return jnp.moveaxis(logits, 0, 1), weights


def loss(
    params: Seq2SeqParams,
    source: jax.Array,
    source_lengths: jax.Array,
    target: jax.Array,
    target_lengths: jax.Array,
    *,
    sampling_ratio: float = 0.0,
    key: Optional[jax.Array] = None,
) -> jax.Array:
    """Teacher-forced cross-entropy, ``−(1/N) Σ log p(y_t | y_<t, x)`` over the ``n + 1`` steps of each target."""
    inputs, outputs = teacher_forcing(target, target_lengths)
    logits, _ = decode_teacher_forced(params, source, source_lengths, inputs, sampling_ratio=sampling_ratio, key=key)
    return sequence_cross_entropy(logits, outputs, lengths=jnp.asarray(target_lengths) + 1)


def attention_map(
    params: Seq2SeqParams, source: jax.Array, source_lengths: jax.Array, decoded: decoding.Decoded
) -> jax.Array:
    """The attention weights ``(B, max_length, S)`` behind decoded outputs, for inspection.

    Row ``t`` holds ``α_t``, the weights with which output token ``t`` was produced: the decoder is
    run again on ``<sos>`` and the decoded tokens (teacher forcing with the model's own outputs,
    so with greedy or beam outputs it retraces the same states). Rows past each output's length
    are zero.
    """
    if params.attention is None:
        raise ValueError("Expected a model with attention (init_seq2seq(..., attention=...)), got attention=None.")
    tokens = jnp.asarray(decoded.tokens)
    start = jnp.full(tokens.shape[:1] + (1,), SOS_ID, tokens.dtype)
    _, weights = decode_teacher_forced(params, source, source_lengths, jnp.concatenate([start, tokens[:, :-1]], 1))
    produced = sequence_mask(jnp.asarray(decoded.lengths), tokens.shape[1])
    return jnp.where(produced[..., None], weights, 0.0)


def translate(
    params: Seq2SeqParams, source: jax.Array, source_lengths: jax.Array, *, max_length: int, **options: Any
) -> decoding.Decoded:
    """Decode targets for ``source`` with ``recurrax.decoding.decode`` (``strategy``, ``beam_width``, ``key``, ...)."""
    state = encode_source(params, source, source_lengths)

    def step_fn(state, tokens):
        state, logits, _ = decoder_step(params, state, tokens)
        return state, logits

    start = jnp.full(source.shape[:1], SOS_ID, jnp.int32)
    return decoding.decode(step_fn, state, start, max_length=max_length, eos_id=EOS_ID, pad_id=PAD_ID, **options)
