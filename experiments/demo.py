"""Train a small character-level LSTM on CPython's bundled pydoc text and watch the loss fall.

Model: embedding → LSTM stack → dense readout over the characters; loss: per-step
cross-entropy averaged over time and batch, J = (1/T) Σ_t J_t (the seeds' form), reported in
bits per character next to the unigram entropy of the text (what a model without context
achieves). Optimiser: ``clip_by_global_norm`` + Adam. Data: ``pydoc_data.topics`` ships with
CPython, so nothing downloads.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_size: int = 256
    num_layers: int = 1
    embed_size: int = 32
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 400
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    log_every: int = 50
    seed: int = 0


QUICK = Config(hidden_size=32, embed_size=8, seq_len=16, batch_size=8, steps=30, log_every=10)


def load_text() -> str:
    """The text of ``pydoc_data.topics`` (CPython's help topics), topics in sorted order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))


def unigram_entropy_bits(ids: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def run(config: Config, out_dir: pathlib.Path) -> dict:
    text = load_text()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
    data = jnp.asarray(ids)
    vocab_size = len(vocab)
    baseline = unigram_entropy_bits(ids, vocab_size)
    print(f"text: {len(text)} chars, {vocab_size} symbols, unigram entropy {baseline:.3f} bits/char")

    k_emb, k_rnn, k_head, k_data = jax.random.split(jax.random.key(config.seed), 4)
    params = {
        "embed": recurrax.init_embedding(k_emb, vocab_size, config.embed_size),
        "rnn": recurrax.init_stack(k_rnn, config.embed_size, [config.hidden_size] * config.num_layers, cell="lstm"),
        "head": recurrax.init_dense(k_head, config.hidden_size, vocab_size),
    }
    optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate))
    opt_state = optimizer.init(params)

    def loss_fn(params, window):
        inputs, targets = window[:, :-1], window[:, 1:]
        logits = recurrax.many_to_many(params["rnn"], params["head"], recurrax.embed(params["embed"], inputs))
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def train_step(params, opt_state, key):
        starts = jax.random.randint(key, (config.batch_size,), 0, data.shape[0] - config.seq_len - 1)
        window = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (config.seq_len + 1,)))(starts)
        loss, grads = jax.value_and_grad(loss_fn)(params, window)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    history, start = [], time.perf_counter()
    for step, key in enumerate(jax.random.split(k_data, config.steps), start=1):
        params, opt_state, loss = train_step(params, opt_state, key)
        if step == 1 or step % config.log_every == 0 or step == config.steps:
            bits = float(loss) / math.log(2)
            history.append({"step": step, "loss_nats": float(loss), "bits_per_char": bits})
            print(f"step {step:5d}  loss {float(loss):.4f} nats  {bits:.3f} bits/char", flush=True)
    seconds = time.perf_counter() - start
    print(f"{config.steps} steps in {seconds:.1f} s; unigram baseline {baseline:.3f} bits/char")
    return {
        "unigram_entropy_bits": baseline,
        "history": history,
        "first_loss_bits": history[0]["bits_per_char"],
        "final_loss_bits": history[-1]["bits_per_char"],
        "seconds": seconds,
    }
