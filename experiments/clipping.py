"""Exploding gradients and clipping: a tanh RNN at λ₁γ = 3 trained with and without clipping.

Model: Elman tanh RNN (``hidden_size``) with ``W_h`` = orthogonal scaled to spectral radius
``radius`` (λ₁γ = 3 for tanh), linear readout at the last step. Task: the adding problem at
``length`` steps (predicting the mean gives MSE ≈ 0.167). Optimiser: SGD with momentum 0.9 and
a cosine-decayed learning rate, without clipping (``optax.sgd``) and with
``clip_by_global_norm`` at each threshold in ``thresholds`` (``recurrax.sgd_momentum``). Same
initial parameters and batches for every run.

Recorded every step: the loss and the global gradient norm *before* clipping; every
``track_every`` steps, through ``gradient_flow.tracker`` as ``fit``'s ``eval_fn``: the spectral
radius λ₁ and σ₁ of ``W_h`` and the fitted lag slope. A run whose loss becomes NaN or infinite
stops there (``fit``'s NaN stop), and the report names the step.

Why this setting (T = 10, lr 0.1): at T = 50 and lr 0.01 the picture was different. One
unclipped step pushed λ₁ from 3 to ~7e4 and saturated every unit (the loss stayed at the
baseline, never NaN: tanh bounds everything), while clipping at 1 starved the readout (the
global norm was all W_h's ~1e6 gradient). The threshold also trades off against the learning
rate: at lr 0.1 a threshold of 5 stays finite but does not learn.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax
from experiments import _style
from recurrax import gradient_flow as gf
from recurrax import tasks


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_size: int = 32
    length: int = 10
    radius: float = 3.0  # λ₁γ for tanh
    batch_size: int = 64
    steps: int = 1000
    learning_rate: float = 0.1
    momentum: float = 0.9
    thresholds: tuple = (1.0, 2.5, 5.0)
    track_every: int = 50
    eval_size: int = 2048
    seed: int = 0


QUICK = Config(steps=150, thresholds=(1.0,), track_every=50, eval_size=256)


def _loss(params, batch, key):
    step = functools.partial(recurrax.elman.step, params["cell"])
    _, hs = recurrax.unroll(step, recurrax.elman.initial_carry(params["cell"], batch.xs.shape[:1]), batch.xs)
    return jnp.mean((recurrax.dense(params["head"], hs[:, -1]) - batch.targets[:, -1]) ** 2)


def _run(config: Config, params, threshold) -> dict:
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    if threshold is None:
        optimizer = optax.sgd(schedule, momentum=config.momentum)
    else:
        optimizer = recurrax.sgd_momentum(schedule, config.momentum, clip_norm=threshold)
    eval_task = tasks.adding_problem(jax.random.key(config.seed + 10**6), config.eval_size, config.length)
    probe = jax.random.uniform(jax.random.key(config.seed + 3), (config.length, 2))
    track = gf.tracker(lambda p: p["cell"], lambda p: functools.partial(recurrax.elman.step, p["cell"]),
                       recurrax.elman.initial_carry(params["cell"]), probe, cell="elman")
    eval_loss = jax.jit(lambda p: _loss(p, eval_task, None))

    def evaluate(p):
        return {"test_mse": eval_loss(p), **track(p)}

    def batches(step):
        return tasks.adding_problem(jax.random.fold_in(jax.random.key(config.seed + 1), step), config.batch_size,
                                    config.length)

    state = recurrax.init_train_state(params, optimizer, jax.random.key(config.seed + 2))
    result = recurrax.fit(state, recurrax.make_train_step(_loss, optimizer), batches, num_steps=config.steps,
                          eval_fn=evaluate, eval_every=config.track_every, progress=False)
    steps = [r for r in result.history if "loss" in r]
    evals = [r for r in result.history if "eval_test_mse" in r]
    norms = [r["grad_norm"] for r in steps]
    return {
        "threshold": threshold,
        "stopped": result.stopped,
        "steps_done": int(result.state.step),
        "loss": [r["loss"] for r in steps],
        "grad_norm": norms,
        "max_grad_norm": float(np.max(norms)),
        "final_test_mse": evals[-1]["eval_test_mse"],
        "tracked": [{k.removeprefix("eval_"): v for k, v in r.items()} for r in evals],
    }


def _figure(results: dict, path: pathlib.Path) -> None:
    plt = _style.pyplot()

    fig, (loss_ax, norm_ax, radius_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for name, run in results["runs"].items():
        steps = np.arange(1, len(run["loss"]) + 1)
        loss_ax.semilogy(steps, run["loss"], label=name, linewidth=0.8)
        norm_ax.semilogy(steps, run["grad_norm"], label=name, linewidth=0.8)
        radius_ax.semilogy([t["step"] for t in run["tracked"]], [t["spectral_radius"] for t in run["tracked"]],
                           "o-", label=name)
    loss_ax.axhline(1 / 6, color="gray", linestyle=":", label="predict the mean (1/6)")
    loss_ax.set(xlabel="training step", ylabel="training MSE (log scale)", title="training loss")
    norm_ax.set(xlabel="training step", ylabel="global gradient norm before clipping",
                title="gradient norm")
    radius_ax.set(xlabel="training step", ylabel="spectral radius λ₁ of W_h", title="λ₁ of W_h during training")
    for ax in (loss_ax, norm_ax, radius_ax):
        ax.legend(fontsize=8)
    fig.tight_layout()
    _style.save(fig, path)


def _table(results: dict) -> str:
    lines = ["| run | steps done | stopped | max grad norm | final test MSE | final λ₁ |", "|---|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        lines.append(f"| {name} | {run['steps_done']} | {run['stopped'] or 'no'} | {run['max_grad_norm']:.3g} "
                     f"| {run['final_test_mse']:.4g} | {run['tracked'][-1]['spectral_radius']:.3g} |")
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    k_cell, k_head = jax.random.split(jax.random.key(config.seed))
    params = {"cell": recurrax.elman.init(k_cell, 2, config.hidden_size, spectral_radius=config.radius),
              "head": recurrax.init_dense(k_head, config.hidden_size, 1)}
    spectrum = gf.spectrum(params["cell"].w_h)
    runs = {}
    for threshold in (None, *config.thresholds):
        name = "no clipping" if threshold is None else f"clip {threshold:g}"
        with jax.numpy_dtype_promotion("standard"):
            runs[name] = _run(config, params, threshold)
    results = {"lambda1_gamma": spectrum.spectral_radius * gf.activation_gamma(params["cell"]), "runs": runs}
    table = _table(results)
    print(f"λ₁γ at initialisation: {results['lambda1_gamma']:.3f}\n{table}")
    (out_dir / "results.md").write_text(table + "\n")
    _figure(results, out_dir / "clipping.png")
    return results
