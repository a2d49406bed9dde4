"""Classic and modern recurrences at matched parameter counts on the modern papers' synthetic tasks.

Tasks (``recurrax.tasks``, fresh batches from a seed each update, one held-out batch per task
shared by every model and seed):

- selective copying (Gu & Dao 2023): ``copy_tokens`` data tokens scattered among noise in
  ``copy_length`` steps, repeated in order after them; token accuracy on the answer, chance
  ``1 / (vocab_size − 2)``;
- induction heads (Olsson et al. 2022; Gu & Dao 2023): name the token that followed the special
  token, ``induction_length`` steps; accuracy at the last step, chance ``1 / (vocab_size − 1)``;
- the adding problem at T = ``long_length`` (``tasks.adding_problem``): squared error at the last
  step, and its accuracy, ``|error| < 0.04`` (Hochreiter & Schmidhuber's criterion; the mean
  predictor scores ≈ 0.08);
- temporal order at T = ``long_length`` (``tasks.temporal_order``): accuracy, chance 0.25.

Models: a linear embedding of the inputs to ``embed_size`` features, one recurrent layer, a
dense readout; the recurrent layer is each family at its defaults except where noted in
``MODELS`` (the CfC's backbone is 64 units, not ncps's 128, so that its cell is not mostly
backbone at these sizes). Each model's width is the one (a multiple of 4, so that the 4 heads
of sLSTM and mLSTM divide it) whose parameter count, embedding and readout included, is nearest
to ``params``; the table gives each count. Hawk and Mamba are their blocks (convolution, gate,
projections), as the papers use them; the others are the bare cells.

Training: ``clip_by_global_norm(clip_norm)`` + Adam at ``learning_rate`` for every model,
``steps`` updates of ``batch_size`` sequences, the same batches for every model at a seed.
Each model runs in its fastest exact form on this CPU (``FORMS``, measured by
``python -m experiments modern_speed``): the mLSTM chunkwise, Hawk's block by its associative
scan (``hawk.sequence``), the rest by ``recurrax.rnn``'s scan. Reported per task, model and
seed: the held-out metric, the wall time of the training run (its own compilation included), and
the memory of one compiled gradient step (arguments + outputs + temporaries, XLA's memory
analysis).

Beside ours, the published result on the same task where a paper gives one (``PAPER``), with
its configuration: those runs are 2-layer models trained for far longer, so they are where a
model can get to, not a like-for-like comparison with this budget.
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
from experiments._measure import executable_memory
from recurrax import tasks
from recurrax.blocks import hawk
from recurrax.cells import mlstm

# name: (registered family, init options)
MODELS = {
    "LSTM": ("lstm", {}),
    "GRU": ("gru", {}),
    "sLSTM": ("slstm", {"num_heads": 4}),
    "mLSTM": ("mlstm", {"num_heads": 4}),
    "Hawk": ("hawk", {}),
    "Mamba": ("mamba", {}),
    "CfC": ("cfc", {"elapsed_time": False, "backbone_units": 64}),
}
# How each model runs a sequence (default: recurrax.rnn's scan).
FORMS = {"mLSTM": "chunkwise", "Hawk": "sequence"}
TASKS = ("selective_copying", "induction_heads", "adding", "temporal_order")
# Published results on the same tasks, with the setting they were measured in.
PAPER = {
    ("selective_copying", "Mamba"): "99.8% (Gu & Dao 2023, Table 1: T = 4096, 16 tokens, vocabulary 16, "
                                    "2 layers of width 64, 400k updates of 64)",
    ("induction_heads", "Mamba"): "100% (Gu & Dao 2023, Table 2: trained at T = 256, vocabulary 16, 2 layers)",
    ("adding", "LSTM"): "solved at T = 1000 (Hochreiter & Schmidhuber 1997, experiment 4: |error| < 0.04 "
                        "on their layout, values in [−1, 1], after hundreds of thousands of sequences)",
}


@dataclasses.dataclass(frozen=True)
class Config:
    params: int = 10_000
    embed_size: int = 32
    batch_size: int = 16
    steps: int = 400
    learning_rate: float = 3e-3
    clip_norm: float = 1.0
    seeds: tuple = (0, 1)
    models: tuple = tuple(MODELS)
    tasks: tuple = TASKS
    copy_length: int = 256
    copy_tokens: int = 16
    induction_length: int = 256
    vocab_size: int = 16
    long_length: int = 1000
    eval_size: int = 512


QUICK = Config(params=1500, embed_size=8, batch_size=8, steps=3, seeds=(0,), copy_length=24, copy_tokens=4,
               induction_length=16, vocab_size=6, long_length=24, eval_size=32)


def _task(config: Config, name: str):
    """``(make(key, batch) -> Task, output size, chance accuracy)``."""
    if name == "selective_copying":
        make = lambda key, b: tasks.selective_copying(key, b, config.copy_length, num_tokens=config.copy_tokens,
                                                      vocab_size=config.vocab_size)
        return make, config.vocab_size, 1 / (config.vocab_size - 2)
    if name == "induction_heads":
        make = lambda key, b: tasks.induction_heads(key, b, config.induction_length, vocab_size=config.vocab_size)
        return make, config.vocab_size, 1 / (config.vocab_size - 1)
    if name == "adding":
        # P(|S − 1| < 0.04) for S the sum of two U(0, 1): the mean predictor's accuracy
        return (lambda key, b: tasks.adding_problem(key, b, config.long_length)), 1, 0.08 - 0.04**2
    if name == "temporal_order":
        return (lambda key, b: tasks.temporal_order(key, b, config.long_length)), 4, 0.25
    raise ValueError(f"Expected tasks among {TASKS}, got {name!r}.")


def parameter_count(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _init(key, model: str, input_size: int, output_size: int, width: int, embed_size: int) -> dict:
    family, options = MODELS[model]
    k_embed, k_rnn, k_head = jax.random.split(key, 3)
    return {"embed": recurrax.init_dense(k_embed, input_size, embed_size),
            "rnn": recurrax.init_rnn(k_rnn, family, embed_size, width, **options),
            "head": recurrax.init_dense(k_head, width, output_size)}


@functools.cache  # asked once for the memory and once per seed of every (task, model)
def matched_width(model: str, input_size: int, output_size: int, config: Config) -> int:
    """The width (a multiple of 4 up to 512) whose model has the parameter count nearest ``config.params``.

    The count grows with the width, so a bisection finds the two widths around the budget."""
    def count(width):
        shapes = jax.eval_shape(lambda: _init(jax.random.key(0), model, input_size, output_size, width,
                                              config.embed_size))
        return parameter_count(shapes)

    low, high = 1, 128  # widths 4·low … 4·high
    while low < high:  # the smallest width whose count reaches the budget
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(4 * middle) < config.params else (low, middle)
    candidates = {4 * max(low - 1, 1), 4 * low}
    return min(sorted(candidates), key=lambda width: abs(count(width) - config.params))


def _predict(model: str, params: dict, xs: jax.Array) -> jax.Array:
    zs = recurrax.dense(params["embed"], xs)
    cell = params["rnn"].cell
    form = FORMS.get(model, "scan")
    if form == "chunkwise":
        _, hs = mlstm.chunkwise(cell, zs, mlstm.initial_carry(cell, zs.shape[:-2]))
    elif form == "sequence":
        _, hs = hawk.sequence(cell, zs)
    else:
        _, hs = recurrax.rnn(params["rnn"], zs)
    return recurrax.dense(params["head"], hs)


def _losses(model: str, task_name: str):
    """``loss(params, task)`` and ``metrics(params, task)`` on the scored steps."""
    def loss(params, task):
        outputs = _predict(model, params, task.xs)
        if task_name == "adding":
            return jnp.mean((outputs[:, -1] - task.targets[:, -1]) ** 2)
        return recurrax.sequence_cross_entropy(outputs, task.targets, mask=task.teaching)

    def metrics(params, task):
        outputs = _predict(model, params, task.xs)
        if task_name == "adding":
            error = outputs[:, -1, 0] - task.targets[:, -1, 0]
            return {"accuracy": jnp.mean(jnp.abs(error) < 0.04), "mse": jnp.mean(error**2)}
        hits = (jnp.argmax(outputs, -1) == task.targets) & task.teaching
        return {"accuracy": jnp.sum(hits) / jnp.sum(task.teaching)}

    return loss, metrics


def train_one(config: Config, task_name: str, model: str, seed: int) -> dict:
    if model not in MODELS:
        raise ValueError(f"Expected models among {tuple(MODELS)}, got {model!r}.")
    make, out_size, chance = _task(config, task_name)
    input_size = make(jax.random.key(0), 1).xs.shape[-1]
    width = matched_width(model, input_size, out_size, config)
    params = _init(jax.random.key(seed), model, input_size, out_size, width, config.embed_size)
    optimizer = recurrax.default_optimizer(config.learning_rate, config.clip_norm)
    loss, metrics = _losses(model, task_name)
    eval_task = make(jax.random.key(10**6), config.eval_size)

    def batches(step):
        return make(jax.random.fold_in(jax.random.key(seed + 1), step), config.batch_size)

    state = recurrax.init_train_state(params, optimizer, jax.random.key(seed + 2))
    # A step compiled for this run alone: each run's wall time includes its own compilation.
    train_step = recurrax.make_train_step(lambda p, batch, key: loss(p, batch), optimizer)
    start = time.perf_counter()
    result = recurrax.fit(state, train_step, batches, num_steps=config.steps, progress=False,
                          log_every=max(config.steps // 40, 1))
    seconds = time.perf_counter() - start
    final = {k: float(v) for k, v in jax.jit(metrics)(result.state.params, eval_task).items()}
    return {
        "task": task_name, "model": model, "seed": seed, "width": width, "params": parameter_count(params),
        "chance": chance, "seconds": seconds,
        "stopped": result.stopped, **final,
        "train_loss_curve": [(r["step"], r["loss"]) for r in result.history if "loss" in r],
    }


def gradient_memory(config: Config, task_name: str, model: str) -> int:
    """Bytes of one compiled gradient step of ``model`` on a training batch of ``task_name``."""
    make, out_size, _ = _task(config, task_name)
    batch = jax.eval_shape(lambda: make(jax.random.key(0), config.batch_size))
    width = matched_width(model, batch.xs.shape[-1], out_size, config)
    params = jax.eval_shape(lambda: _init(jax.random.key(0), model, batch.xs.shape[-1], out_size, width,
                                          config.embed_size))
    loss, _ = _losses(model, task_name)
    return executable_memory(jax.jit(jax.grad(loss)).lower(params, batch).compile())


def summarise(rows: list) -> list:
    """One row per task and model: the accuracy at each seed and their mean, size, time, memory."""
    out = []
    for task_name in dict.fromkeys(r["task"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["task"] == task_name):
            runs = [r for r in rows if r["task"] == task_name and r["model"] == model]
            out.append({
                "task": task_name, "model": model, "params": runs[0]["params"], "width": runs[0]["width"],
                "chance": runs[0]["chance"], "accuracies": [r["accuracy"] for r in runs],
                "mean_accuracy": float(np.mean([r["accuracy"] for r in runs])),
                "mse": [r["mse"] for r in runs] if "mse" in runs[0] else None,
                "seconds": float(np.mean([r["seconds"] for r in runs])),
                "memory_mib": runs[0]["memory_bytes"] / 2**20,
                "paper": PAPER.get((task_name, model), ""),
            })
    return out


def _table(summary: list, config: Config) -> str:
    lines = [f"Seeds {', '.join(map(str, config.seeds))}; {config.steps} updates of {config.batch_size}; "
             f"parameter budget {config.params}.", "",
             "| task | model | width | params | accuracy per seed | mean | chance | s per run | MiB per step | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary:
        per_seed = ", ".join(f"{a:.3f}" for a in row["accuracies"])
        if row["mse"] is not None:
            per_seed += " (MSE " + ", ".join(f"{m:.4f}" for m in row["mse"]) + ")"
        lines.append(f"| {row['task']} | {row['model']} | {row['width']} | {row['params']} | {per_seed} "
                     f"| {row['mean_accuracy']:.3f} | {row['chance']:.3f} | {row['seconds']:.0f} "
                     f"| {row['memory_mib']:.1f} | {row['paper']} |")
    return "\n".join(lines)


def _figure(summary: list, path: pathlib.Path, config: Config) -> None:
    plt = _style.pyplot()
    names = list(dict.fromkeys(row["task"] for row in summary))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, task_name in zip(axes[0], names):
        rows = [r for r in summary if r["task"] == task_name]
        x = np.arange(len(rows))
        ax.bar(x, [r["mean_accuracy"] for r in rows], color="#8fb3d9", label="mean over seeds")
        for i, row in enumerate(rows):
            ax.plot([i] * len(row["accuracies"]), row["accuracies"], "k.", label="one seed" if i == 0 else None)
        ax.axhline(rows[0]["chance"], color="gray", linestyle=":", label="chance")
        length = {"selective_copying": config.copy_length, "induction_heads": config.induction_length}.get(
            task_name, config.long_length)
        ax.set(title=f"{task_name.replace('_', ' ')}, T = {length}", ylabel="held-out accuracy", ylim=(0, 1.02),
               xticks=x)
        ax.set_xticklabels([r["model"] for r in rows], rotation=45)
        ax.legend(fontsize=7)
    fig.suptitle(f"~{config.params} parameters each; {config.steps} updates of {config.batch_size}; "
                 f"seeds {', '.join(map(str, config.seeds))}", fontsize=9)
    fig.tight_layout()
    _style.save(fig, path)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    unknown = [name for name in config.models if name not in MODELS]
    if unknown:
        raise ValueError(f"Expected models among {tuple(MODELS)}, got {', '.join(map(repr, unknown))}.")
    rows = []
    for task_name in config.tasks:
        _task(config, task_name)  # refuse an unknown task before training anything
        for model in config.models:
            with jax.numpy_dtype_promotion("standard"):
                memory = gradient_memory(config, task_name, model)
            for seed in config.seeds:
                with jax.numpy_dtype_promotion("standard"):
                    row = train_one(config, task_name, model, seed)
                rows.append({**row, "memory_bytes": memory})
                print(f"{task_name} / {model} / seed {seed}: accuracy {row['accuracy']:.3f} "
                      f"(chance {row['chance']:.3f}), {row['params']} params, {row['seconds']:.0f} s", flush=True)
    summary = summarise(rows)
    table = _table(summary, config)
    print("\n" + table)
    (out_dir / "results.md").write_text(table + "\n")
    _figure(summary, out_dir / "modern.png", config)
    return {"rows": rows, "summary": summary}
