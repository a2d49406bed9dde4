"""Encoder–decoder with and without attention on reversal, digit sorting and date normalisation.

Tasks (``recurrax.tasks``, text pairs from a seed): reverse a string of letters, sort a string of
digits, and rewrite "3 March 2021" / "March 3, 2021" / "03/03/21" as "2021-03-03". Each task has
a fixed training set of ``train_size`` pairs and a test set of ``test_size`` pairs whose sources
never occur in the training set.

Model (``recurrax.seq2seq``): character embeddings, a bidirectional LSTM encoder, an LSTM decoder
started from the encoder's final state, trained with teacher forcing (``clip_by_global_norm`` +
Adam), once without attention (the context vector is the only path from source to decoder: the
seeds' bottleneck) and once with ``attention`` (Bahdanau's additive score by default). Reported:
exact-match accuracy of greedy decoding per task and per source-length bucket, beam search on the
test set, and attention heat-maps of test examples (``attention.png``).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import recurrax
from experiments import _style
from recurrax import seq2seq, tasks
from recurrax.vocab import EOS_ID, Vocabulary

TASKS = ("reverse", "sort", "dates")


@dataclasses.dataclass(frozen=True)
class Config:
    tasks: tuple = TASKS
    attention: str = "additive"  # the score of the attention runs: additive, dot or general
    min_length: int = 1  # source lengths of reverse and sort
    max_length: int = 25
    bucket_width: int = 5  # source-length buckets of the report
    train_size: int = 20_000
    test_size: int = 1000
    embed_size: int = 32
    encoder_size: int = 64  # per direction (bidirectional encoder)
    decoder_size: int = 128
    batch_size: int = 64
    steps: int = 1500
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    beam_width: int = 4
    seed: int = 0


QUICK = Config(tasks=("dates",), max_length=6, bucket_width=3, train_size=200, test_size=32, embed_size=8,
               encoder_size=8, decoder_size=16, batch_size=16, steps=30, beam_width=2)


def make_pairs(config: Config, task: str, seed: int, num: int) -> list[tuple[str, str]]:
    """``num`` pairs of ``task`` drawn with ``seed``."""
    if task == "reverse":
        return tasks.reverse_pairs(seed, num, min_length=config.min_length, max_length=config.max_length)
    if task == "sort":
        return tasks.sort_pairs(seed, num, min_length=config.min_length, max_length=config.max_length)
    if task == "dates":
        return tasks.date_pairs(seed, num)
    raise ValueError(f"Expected tasks among {TASKS}, got {task!r}.")


def split(config: Config, task: str) -> tuple[list, list]:
    """A training set and a test set whose sources never occur in the training set."""
    train = make_pairs(config, task, config.seed, config.train_size)
    seen = {source for source, _ in train}
    test, seed = [], config.seed + 1
    while len(test) < config.test_size:
        test += [pair for pair in make_pairs(config, task, seed, config.test_size) if pair[0] not in seen]
        seed += 1
    return train, test[: config.test_size]


class Encoded:
    """Pairs as padded id arrays of fixed widths (one compiled shape per task)."""

    def __init__(self, pairs, source_vocab: Vocabulary, target_vocab: Vocabulary, source_width: int, target_width: int):
        self.source, self.source_lengths = source_vocab.pad_batch([s for s, _ in pairs], length=source_width)
        self.target, self.target_lengths = target_vocab.pad_batch([t for _, t in pairs], length=target_width)

    def batch(self, rows: np.ndarray) -> tuple:
        return self.source[rows], self.source_lengths[rows], self.target[rows], self.target_lengths[rows]


def exact_matches(decoded: recurrax.decoding.Decoded, target: np.ndarray, target_lengths: np.ndarray) -> np.ndarray:
    """Whether each decoded sequence is exactly the target followed by ``<eos>``."""
    tokens, lengths = np.asarray(decoded.tokens), np.asarray(decoded.lengths)
    hits = []
    for row, n in enumerate(target_lengths):
        expected = list(target[row, :n]) + [EOS_ID]
        hits.append(int(lengths[row]) == n + 1 and list(tokens[row, : n + 1]) == expected)
    return np.array(hits)


def length_buckets(lengths: np.ndarray, hits: np.ndarray, width: int) -> dict:
    """Exact match per source-length bucket ``1..w, w+1..2w, ...``: ``{"lo-hi": (accuracy, count)}``."""
    out = {}
    for bucket in np.unique((lengths - 1) // width):
        inside = (lengths - 1) // width == bucket
        out[f"{bucket * width + 1}-{(bucket + 1) * width}"] = (float(hits[inside].mean()), int(inside.sum()))
    return out


def train_one(config: Config, task: str, attention: str | None) -> dict:
    train, test = split(config, task)
    source_vocab = Vocabulary.build([s for s, _ in train])
    target_vocab = Vocabulary.build([t for _, t in train])
    source_width = max(len(s) for s, _ in train + test)
    target_width = max(len(t) for _, t in train + test)
    train_set = Encoded(train, source_vocab, target_vocab, source_width, target_width)
    test_set = Encoded(test, source_vocab, target_vocab, source_width, target_width)

    params = seq2seq.init_seq2seq(
        jax.random.key(config.seed), len(source_vocab), len(target_vocab), embed_size=config.embed_size,
        encoder_sizes=(config.encoder_size,), decoder_sizes=(config.decoder_size,), bidirectional_encoder=True,
        attention=attention,
    )
    optimizer = recurrax.default_optimizer(config.learning_rate, config.clip_norm)
    train_step = recurrax.make_train_step(lambda p, batch, key: seq2seq.loss(p, *batch), optimizer)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(config.seed + 1))

    def batch_at(step: int) -> tuple:  # random training rows, a function of the step
        rows = np.random.default_rng((config.seed, step)).integers(0, len(train), config.batch_size)
        return tuple(jnp.asarray(a) for a in train_set.batch(rows))

    start = time.perf_counter()
    result = recurrax.fit(state, train_step, batch_at, num_steps=config.steps, progress=False,
                          log_every=max(config.steps // 20, 1))
    seconds = time.perf_counter() - start
    params = result.state.params

    source, source_lengths = jnp.asarray(test_set.source), jnp.asarray(test_set.source_lengths)
    translate = jax.jit(functools.partial(seq2seq.translate, max_length=target_width + 1),
                        static_argnames=("strategy", "beam_width", "length_penalty"))
    greedy = translate(params, source, source_lengths)
    beam = translate(params, source, source_lengths, strategy="beam", beam_width=config.beam_width,
                     length_penalty=1.0)
    greedy_hits = exact_matches(greedy, test_set.target, test_set.target_lengths)
    beam_hits = exact_matches(beam, test_set.target, test_set.target_lengths)
    examples = [{"source": s, "target": t, "greedy": target_vocab.decode(np.asarray(greedy.tokens[i]))}
                for i, (s, t) in enumerate(test[:5])]
    return {
        "task": task, "attention": attention or "none", "seconds": seconds, "stopped": result.stopped,
        "final_train_loss": float(result.history[-1]["loss"]),
        "exact_match": float(greedy_hits.mean()), "beam_exact_match": float(beam_hits.mean()),
        "buckets": length_buckets(np.asarray(test_set.source_lengths), greedy_hits, config.bucket_width),
        "examples": examples, "params": params, "vocabs": (source_vocab, target_vocab),
        "test": test_set,
    }


def _table(rows: list) -> str:
    lines = ["| task | attention | exact match (greedy) | exact match (beam) | by source length: accuracy (n) | train s |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        buckets = ", ".join(f"{k}: {acc:.2f} ({n})" for k, (acc, n) in row["buckets"].items())
        lines.append(f"| {row['task']} | {row['attention']} | {row['exact_match']:.3f} | {row['beam_exact_match']:.3f} "
                     f"| {buckets} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def _attention_figure(rows: list, path: pathlib.Path) -> None:
    """Heat-maps of the attention weights of the first test examples, one per task."""
    plt = _style.pyplot()

    attended = [row for row in rows if row["attention"] != "none"]
    if not attended:
        return
    fig, axes = plt.subplots(1, len(attended), figsize=(4.5 * len(attended), 4.5), squeeze=False)
    for ax, row in zip(axes[0], attended):
        test, (source_vocab, target_vocab) = row["test"], row["vocabs"]
        i = int(np.argmax(test.source_lengths))  # the longest test source
        n = int(test.source_lengths[i])
        source, lengths = jnp.asarray(test.source[i : i + 1]), jnp.asarray(test.source_lengths[i : i + 1])
        decoded = seq2seq.translate(row["params"], source, lengths, max_length=test.target.shape[1] + 1)
        weights, m = seq2seq.attention_map(row["params"], source, lengths, decoded), int(decoded.lengths[0])
        ax.imshow(np.asarray(weights[0, :m, :n]), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n), [source_vocab.tokens[t] for t in np.asarray(source[0, :n])])
        ax.set_yticks(range(m), [target_vocab.tokens[t] for t in np.asarray(decoded.tokens[0, :m])])
        ax.set(title=f"{row['task']} ({row['attention']})", xlabel="source", ylabel="output")
    fig.tight_layout()
    _style.save(fig, path)


def _length_figure(rows: list, path: pathlib.Path) -> None:
    """Exact match by source length, with and without attention, one panel per task."""
    plt = _style.pyplot()
    names = list(dict.fromkeys(row["task"] for row in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, task in zip(axes[0], names):
        for i, row in enumerate(r for r in rows if r["task"] == task):
            buckets = list(row["buckets"])
            accuracy = [row["buckets"][b][0] for b in buckets]
            ax.plot(buckets, accuracy, "o-" if row["attention"] != "none" else "s--", color=_style.COLORS[i],
                    label=f"attention: {row['attention']} (all: {row['exact_match']:.2f})")
        ax.set_ylim(-0.03, 1.03)
        ax.set(xlabel="source length (characters)", ylabel="exact match (greedy, test set)", title=task)
        ax.legend(loc="lower left")
    _style.save(fig, path)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    rows = []
    for task in config.tasks:
        for attention in (None, config.attention):
            with jax.numpy_dtype_promotion("standard"):
                row = train_one(config, task, attention)
            rows.append(row)
            print(f"{task} / attention {row['attention']}: exact match {row['exact_match']:.3f} "
                  f"(beam {row['beam_exact_match']:.3f}), {row['seconds']:.0f} s", flush=True)
    table = _table(rows)
    print("\n" + table)
    (out_dir / "results.md").write_text(table + "\n")
    with jax.numpy_dtype_promotion("standard"):
        _attention_figure(rows, out_dir / "attention.png")
    _length_figure(rows, out_dir / "exact_match_by_length.png")
    private = ("params", "vocabs", "test")
    return {"rows": [{k: v for k, v in row.items() if k not in private} for row in rows]}
