"""Character-level LSTM language model on CPython's help text, in bits per character.

Data: the text of ``pydoc_data.topics`` (ships with CPython, about 465k characters, 103
symbols; topics in sorted order, nothing downloads). The first 90% trains, the last 10% is held
out. Model: ``recurrax.char_lm`` (embedding → LSTM stack → readout). Training: random windows
of ``seq_len + 1`` characters from the training text, full BPTT through each window,
``clip_by_global_norm`` + Adam with a cosine-decayed learning rate. Validation: the held-out
text cut into ``eval_streams`` contiguous streams (the last one shorter), each read from a zero
state, every character after a stream's first one predicted: ``bits_per_char`` over all of them.
Compared with the unigram entropy of the text (the code length of a model without context).
Afterwards ``num_sample_chars`` characters are sampled at each of ``temperatures`` after
``prompt``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax
from recurrax import char_lm
from recurrax.vocab import Vocabulary


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_sizes: tuple = (256,)
    embed_size: int = 32
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 2000  # about 20 passes over the training text; longer runs overfit it
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    eval_every: int = 250
    eval_streams: int = 32
    validation_fraction: float = 0.1
    prompt: str = "The "
    temperatures: tuple = (0.5, 1.0)
    num_sample_chars: int = 300
    seed: int = 0


QUICK = Config(hidden_sizes=(32,), embed_size=8, seq_len=16, batch_size=8, steps=30, eval_every=15, eval_streams=4,
               num_sample_chars=20)


def load_text() -> str:
    """The text of ``pydoc_data.topics`` (CPython's help topics), topics in sorted order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))


def unigram_entropy_bits(text: str) -> float:
    """``−Σ_c p(c) log₂ p(c)`` over the character frequencies of ``text``."""
    counts = np.unique(np.frombuffer(text.encode("utf-32-le"), np.uint32), return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def streams(ids: np.ndarray, num: int) -> tuple[jax.Array, jax.Array]:
    """``ids`` cut into ``num`` contiguous right-padded rows ``(num, ⌈n/num⌉)`` and their lengths."""
    width = -(-ids.size // num)
    padded = np.zeros(num * width, np.int32)
    padded[: ids.size] = ids
    lengths = np.clip(ids.size - width * np.arange(num), 0, width).astype(np.int32)
    if lengths.min() < 2:
        raise ValueError(f"Expected at least 2 characters per stream, got {ids.size} characters for {num} streams.")
    return jnp.asarray(padded.reshape(num, width)), jnp.asarray(lengths)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    text = load_text()
    vocab = Vocabulary.build([text], level="char")
    ids = np.asarray(vocab.encode(text), np.int32)
    cut = int(round(ids.size * (1 - config.validation_fraction)))
    train_ids, valid = jnp.asarray(ids[:cut]), streams(ids[cut:], config.eval_streams)
    baseline = unigram_entropy_bits(text)
    print(f"text: {len(text)} chars ({cut} train, {ids.size - cut} validation), {len(vocab) - 4} symbols, "
          f"unigram entropy {baseline:.3f} bits/char")

    k_init, k_train, k_sample = jax.random.split(jax.random.key(config.seed), 3)
    params = char_lm.init_char_lm(k_init, len(vocab), config.hidden_sizes, embed_size=config.embed_size)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps, alpha=0.05)
    optimizer = recurrax.default_optimizer(schedule, config.clip_norm)

    def loss_fn(params, data, key):  # a batch of random windows of the training text
        starts = jax.random.randint(key, (config.batch_size,), 0, data.shape[0] - config.seq_len)
        windows = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (config.seq_len + 1,)))(starts)
        return char_lm.loss(params, windows)

    validation_bits = jax.jit(lambda p: char_lm.bits_per_char(p, valid[0], lengths=valid[1]))
    initial = float(validation_bits(params))  # about log2(vocabulary size) before training
    print(f"step      0  validation {initial:.3f} bits/char", flush=True)
    evaluated = itertools.count(1)

    def evaluate(params):  # fit calls it every eval_every steps and after the last step
        bits = float(validation_bits(params))
        print(f"step {min(next(evaluated) * config.eval_every, config.steps):6d}  validation {bits:.3f} bits/char",
              flush=True)
        return {"validation_bits": bits}

    train_step = recurrax.make_train_step(loss_fn, optimizer)
    state = recurrax.init_train_state(params, optimizer, k_train)
    start = time.perf_counter()
    result = recurrax.fit(state, train_step, lambda step: train_ids, num_steps=config.steps, progress=False,
                          eval_fn=evaluate, eval_every=config.eval_every, log_every=max(config.steps // 50, 1))
    seconds = time.perf_counter() - start
    params = result.state.params
    history = [{"step": r["step"], "train_bits": r["loss"] / math.log(2)} for r in result.history if "loss" in r]
    evaluations = [{"step": r["step"], "validation_bits": r["eval_validation_bits"]}
                   for r in result.history if "eval_validation_bits" in r]

    prompt = jnp.asarray(vocab.encode(config.prompt), jnp.int32)
    samples = {}
    for temperature, key in zip(config.temperatures, jax.random.split(k_sample, len(config.temperatures))):
        drawn = char_lm.sample(params, prompt, config.num_sample_chars, key=key, temperature=temperature)
        # strip=False: a special token the model drew (it should not) stays visible as "<eos>".
        samples[str(temperature)] = config.prompt + vocab.decode(np.asarray(drawn), strip=False)
        print(f"\n--- temperature {temperature} ---\n{samples[str(temperature)]}", flush=True)

    final = evaluations[-1]["validation_bits"]
    print(f"\n{config.steps} steps in {seconds:.0f} s: validation {initial:.3f} -> {final:.3f} bits/char "
          f"(unigram entropy {baseline:.3f}); last training windows {history[-1]['train_bits']:.3f} bits/char")
    (out_dir / "results.md").write_text(
        f"validation {final:.3f} bits/char (unigram entropy {baseline:.3f}) after {config.steps} steps, "
        f"{seconds:.0f} s\n\n" + "\n\n".join(f"temperature {t}:\n\n```\n{s}\n```" for t, s in samples.items()) + "\n"
    )
    _figure(history, initial, evaluations, baseline, out_dir / "char_lm.png")
    return {
        "unigram_entropy_bits": baseline, "initial_validation_bits": initial, "validation_bits": final,
        "history": history, "evaluations": evaluations, "samples": samples, "seconds": seconds,
        "stopped": result.stopped,
    }


def _figure(history: list, initial: float, evaluations: list, baseline: float, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in history], [r["train_bits"] for r in history], label="training windows")
    ax.plot([0] + [r["step"] for r in evaluations], [initial] + [r["validation_bits"] for r in evaluations], "o-",
            label="validation")
    ax.axhline(baseline, color="gray", linestyle=":", label="unigram entropy")
    ax.set(xlabel="step", ylabel="bits per character", title="character LSTM on pydoc_data.topics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
