"""Truncated vs full BPTT on recall-at-lag-L: k2 < L cannot learn the dependency, k2 >= L can.

Task (``recurrax.tasks.recall_task``): every step shows a random symbol of ``vocab_size``,
step T − L is flagged, and the last step must name the flagged symbol (chance: 1 / vocab_size).
Model: LSTM (``hidden_size``) + dense readout, zero initial state, ``clip_by_global_norm`` +
Adam. Each setting trains the same initial parameters on the same batches with the TBPTT
gradient of ``k2 ∈ {L/4, L/2, L, 2L}`` (``k1 = k2``) or full BPTT, for each seed.

Reported per setting: final accuracy (mean and per seed, on a held-out batch), steps to reach
99% (per seed; None if never), median milliseconds per update, the compiled temporary memory
of one gradient evaluation (XLA's memory analysis: the stored activations), and the cosine
similarity between the truncated and the full gradient at initialisation, over all parameters
and over the LSTM's parameters only (the readout's gradient is the same for every k2).
Expectation (Tallec & Ollivier 2017): k2 < L stays near chance, k2 >= L and full reach 99%.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import optax

import recurrax
from experiments import _style
from experiments._measure import compiled_temp_bytes
from recurrax import tasks, truncation


@dataclasses.dataclass(frozen=True)
class Config:
    lag: int = 16  # L
    length: int = 64  # T
    vocab_size: int = 8
    hidden_size: int = 64
    batch_size: int = 64
    steps: int = 2000
    eval_every: int = 50
    eval_size: int = 1024
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    seeds: tuple = (0, 1, 2)
    k2_fractions: tuple = (0.25, 0.5, 1.0, 2.0)  # k2 = fraction × L; full BPTT is added


QUICK = Config(lag=4, length=12, hidden_size=16, batch_size=32, steps=300, eval_every=50, eval_size=256, seeds=(0,),
               k2_fractions=(0.25, 1.0))


def _model_step(params, carry, x):
    carry, h = recurrax.lstm.step(params["cell"], carry, x)
    return carry, recurrax.dense(params["head"], h)


def _initial_carry(params, batch_shape):
    return recurrax.lstm.initial_carry(params["cell"], batch_shape)


def _init(config: Config, seed: int) -> dict:
    k_cell, k_head = jax.random.split(jax.random.key(seed))
    return {
        "cell": recurrax.lstm.init(k_cell, config.vocab_size + 1, config.hidden_size),
        "head": recurrax.init_dense(k_head, config.hidden_size, config.vocab_size),
    }


def _settings(config: Config) -> list:
    k2s = []
    for fraction in config.k2_fractions:
        k2 = round(fraction * config.lag)
        if k2 < 1 or k2 in k2s:
            raise ValueError(f"Expected k2_fractions giving distinct k2 >= 1 for lag {config.lag}, got {config.k2_fractions}.")
        k2s.append(k2)
    return k2s + [None]


def _name(k2) -> str:
    return "full" if k2 is None else f"k2={k2}"


def _cosines(config: Config, params, k2s) -> dict:
    """Cosine of each truncated gradient with the full one at initialisation (seed 0's params)."""
    task = tasks.recall_task(jax.random.key(12345), config.eval_size, lag=config.lag, length=config.length,
                                  vocab_size=config.vocab_size)
    carry = _initial_carry(params, (config.eval_size,))
    step_loss = optax.softmax_cross_entropy_with_integer_labels
    grads = {k2: jax.jit(truncation.bptt_gradient(_model_step, step_loss, k2))(params, carry, task)[1] for k2 in k2s}
    full = grads[None]
    return {
        _name(k2): {"all": truncation.gradient_cosine(g, full), "lstm": truncation.gradient_cosine(g["cell"], full["cell"])}
        for k2, g in grads.items()
    }


def _memory(config: Config, params, k2) -> int:
    task = tasks.recall_task(jax.random.key(0), config.batch_size, lag=config.lag, length=config.length,
                                  vocab_size=config.vocab_size)
    carry = _initial_carry(params, (config.batch_size,))
    gradient = truncation.bptt_gradient(_model_step, optax.softmax_cross_entropy_with_integer_labels, k2)
    return compiled_temp_bytes(gradient, params, carry, task)


def _figure(results: dict, config: Config, path: pathlib.Path) -> None:
    plt = _style.pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in results["settings"].items():
        steps, accs = np.array(row["curves"][0]).T
        mean = np.mean([np.array(curve)[:, 1] for curve in row["curves"]], axis=0)
        left.plot(steps, mean, label=name)
    left.axhline(1 / config.vocab_size, color="gray", linestyle=":", label="chance")
    left.set(xlabel="training step", ylabel=f"accuracy (mean of {len(config.seeds)} seeds)",
             title=f"recall at lag L={config.lag}, T={config.length}")
    left.legend()
    truncated = [(row["k2"], row["cosine_at_init"]) for row in results["settings"].values() if row["k2"] is not None]
    k2s = [k2 for k2, _ in truncated]
    right.plot(k2s, [c["all"] for _, c in truncated], "o-", label="all parameters")
    right.plot(k2s, [c["lstm"] for _, c in truncated], "s-", label="LSTM parameters")
    right.axvline(config.lag, color="gray", linestyle=":", label="k2 = L")
    right.set(xscale="log", xlabel="k2 (steps backpropagated)", ylabel="cosine with full-BPTT gradient",
              title="truncated vs full gradient at initialisation")
    right.set_xticks(k2s, [str(k) for k in k2s])
    right.minorticks_off()
    right.legend()
    fig.tight_layout()
    _style.save(fig, path)


def _table(results: dict) -> str:
    lines = [
        "| setting | final accuracy (mean; per seed) | steps to 99% (per seed) | ms / step | temp memory MiB "
        "| cosine at init (all; LSTM) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["settings"].items():
        per_seed = ", ".join(f"{a:.3f}" for a in row["final_accuracy"])
        cos = row["cosine_at_init"]
        lines.append(
            f"| {name} | {np.mean(row['final_accuracy']):.3f}; {per_seed} | {row['steps_to_99']} "
            f"| {row['ms_per_step']:.1f} | {row['temp_memory_bytes'] / 2**20:.2f} | {cos['all']:.3f}; {cos['lstm']:.3f} |"
        )
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    k2s = _settings(config)
    optimizer = recurrax.default_optimizer(config.learning_rate, config.clip_norm)
    eval_task = tasks.recall_task(jax.random.key(10**6), config.eval_size, lag=config.lag,
                                       length=config.length, vocab_size=config.vocab_size)

    def make_batch(key):
        return tasks.recall_task(key, config.batch_size, lag=config.lag, length=config.length,
                                      vocab_size=config.vocab_size)

    cosines = _cosines(config, _init(config, config.seeds[0]), k2s)
    settings = {}
    for k2 in k2s:
        runs = []
        for seed in config.seeds:
            runs.append(truncation.train(
                _model_step, optax.softmax_cross_entropy_with_integer_labels, _init(config, seed), _initial_carry,
                optimizer, make_batch, eval_task, k2=k2, num_steps=config.steps, eval_every=config.eval_every,
                key=jax.random.key(1000 + seed),
            ))
        settings[_name(k2)] = {
            "k2": k2,
            "final_accuracy": [r.curve[-1][1] for r in runs],
            "steps_to_99": [r.steps_to_target for r in runs],
            "ms_per_step": float(np.median([r.ms_per_step for r in runs])),
            "temp_memory_bytes": _memory(config, _init(config, 0), k2),
            "cosine_at_init": cosines[_name(k2)],
            "curves": [r.curve for r in runs],
        }
        row = settings[_name(k2)]
        print(f"{_name(k2)}: final accuracy {row['final_accuracy']}, steps to 99% {row['steps_to_99']}, "
              f"{row['ms_per_step']:.1f} ms/step", flush=True)
    results = {"chance": 1 / config.vocab_size, "lag": config.lag, "settings": settings}
    table = _table(results)
    print("\n" + table)
    (out_dir / "results.md").write_text(table + "\n")
    _figure(results, config, out_dir / "truncated_vs_full.png")
    return results
