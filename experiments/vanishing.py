"""Vanishing and exploding gradients against the λ₁γ theory: Elman sweeps, then LSTM and GRU.

Elman RNNs with ``W_h = scale × orthogonal`` (so λ₁ = σ₁ = scale: the eigenvalue and the norm
bounds coincide) for tanh, sigmoid and relu, with the scale set so that λ₁γ runs over
``rates`` (γ = 1, 1/4, 1). For each setting, along ``num_sequences`` random input sequences of
``length`` steps (inputs scaled by ``input_scale``, zero bias, zero initial state):

- ``‖∂h_T/∂h_{T-lag}‖₂`` for every lag (``gradient_flow.lag_norms``), their geometric mean
  over sequences, and the bound ``(σ₁γ)^lag`` (checked: never exceeded);
- the fitted per-step rate of the lag curve and the top Lyapunov exponent (QR method);
- the crossover: the λ₁γ where the fitted rate changes sign (interpolated in log λ₁γ).

Then LSTM and GRU cells at initialisation and after ``train_steps`` of training on the adding
problem: their lag curves over the whole carry, and for the LSTM the cell-state path alone
(products of the ``c → c`` blocks, diag(f_t)).

Last, the cost of the analysis itself: ``carry_jacobians`` + ``lag_norms`` per sequence after
compilation, at ``cost_size`` carry entries (an Elman cell of that width and an LSTM of half of it)
over ``length`` steps, for one sequence and ``jax.vmap`` over ``num_sequences``, beside the same
products normed by the SVD (``jnp.linalg.norm(·, 2)``, what ``lag_norms`` used before); medians of
``cost_repeats`` interleaved repeats.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import recurrax
from experiments import _style
from experiments._measure import timed_interleaved
from recurrax import gradient_flow as gf
from recurrax import tasks


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_size: int = 64
    length: int = 64
    num_sequences: int = 8
    input_scale: float = 0.1
    rates: tuple = (0.5, 0.59, 0.71, 0.84, 1.0, 1.19, 1.41, 1.68, 2.0)  # λ₁γ
    activations: tuple = ("tanh", "sigmoid", "relu")
    skip: int = 5  # lags left out of the rate fit (the transient)
    gated: tuple = ("lstm", "gru")  # the gated cells whose lag curves are measured
    train_steps: int = 300
    train_length: int = 50
    cost_size: int = 128  # N of the analysis-cost timing (0: not timed)
    cost_repeats: int = 7
    seed: int = 0


QUICK = Config(hidden_size=8, length=16, num_sequences=2, rates=(0.5, 1.0, 2.0), skip=2, train_steps=5,
               train_length=10, cost_size=16, cost_repeats=2)


def _sequences(config: Config, input_size: int, key) -> jax.Array:
    return config.input_scale * jax.random.normal(key, (config.num_sequences, config.length, input_size))


@jax.jit
def _elman_lag_curves(params, xs):
    """Per-sequence lag norms ``(S, T)`` and top Lyapunov exponents ``(S,)`` of an Elman cell.

    The params are an argument, not a constant: one compilation serves every scale of a sweep.
    """
    step = functools.partial(recurrax.elman.step, params)
    carry = recurrax.elman.initial_carry(params)

    def one(x):
        jacobians = gf.carry_jacobians(step, carry, x)
        return gf.lag_norms(jacobians), gf.lyapunov_exponents(jacobians, num=1)[0]

    return jax.vmap(one)(xs)


def _geometric_mean(norms) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(np.asarray(norms, np.float64)), axis=0))


def _crossover(rates, fitted) -> float | None:
    """λ₁γ where the fitted rate crosses 0, interpolated linearly in log λ₁γ (None if it does not)."""
    logs = np.log(rates)
    for a, b, ra, rb in zip(logs[:-1], logs[1:], fitted[:-1], fitted[1:]):
        if ra < 0 <= rb:
            return float(np.exp(a + (b - a) * (-ra) / (rb - ra)))
    return None


def elman_sweep(config: Config) -> dict:
    results = {}
    key = jax.random.key(config.seed)
    xs = _sequences(config, config.hidden_size, jax.random.fold_in(key, 1))
    for activation in config.activations:
        rows = []
        for rate in config.rates:
            params = recurrax.elman.init(key, config.hidden_size, config.hidden_size, activation=activation)
            gamma = gf.activation_gamma(params)
            scale = rate / gamma
            params = params._replace(w_h=scale * params.w_h)  # orthogonal × scale: λ₁ = σ₁ = scale
            spectrum = gf.spectrum(params.w_h)
            norms, lyapunov = _elman_lag_curves(params, xs)
            curve = _geometric_mean(norms)
            bound = gf.bound(np.arange(1, config.length + 1), spectrum.sigma1 * gamma)
            rows.append({
                "lambda1_gamma": spectrum.spectral_radius * gamma, "sigma1_gamma": spectrum.sigma1 * gamma,
                "fitted_rate": gf.decay_rate(curve, skip=config.skip),
                "lyapunov": float(np.mean(lyapunov)),
                "max_norm_over_bound": float(np.max(np.asarray(norms, np.float64) / bound)),
                "curve": curve.tolist(), "bound": bound.tolist(),
            })
        fitted = np.array([r["fitted_rate"] for r in rows])
        results[activation] = {
            "rows": rows,
            "crossover_lambda1_gamma": _crossover(np.array([r["lambda1_gamma"] for r in rows]), fitted),
            "bound_respected": all(r["max_norm_over_bound"] <= 1 + 1e-5 for r in rows),
            "decays_below_one": all(r["fitted_rate"] < 0 for r in rows if r["lambda1_gamma"] < 1 - 1e-6),
        }
    return results


def _train_on_adding(family: str, params: dict, config: Config) -> dict:
    module = getattr(recurrax, family)

    def loss(params, batch, key):
        _, hs = recurrax.unroll(functools.partial(module.step, params["cell"]),
                                module.initial_carry(params["cell"], batch.xs.shape[:1]), batch.xs)
        prediction = recurrax.dense(params["head"], hs[:, -1])
        return jnp.mean((prediction - batch.targets[:, -1]) ** 2)

    optimizer = recurrax.default_optimizer(1e-2)
    state = recurrax.init_train_state(params, optimizer, jax.random.key(config.seed))
    batches = lambda step: tasks.adding_problem(jax.random.fold_in(jax.random.key(config.seed + 7), step), 64,
                                                config.train_length)
    result = recurrax.fit(state, recurrax.make_train_step(loss, optimizer), batches, num_steps=config.train_steps,
                          progress=False)
    return result.state.params, result.history[-1]["loss"]


@functools.partial(jax.jit, static_argnames="family")
def _gated_lag_curves(family: str, cell_params, xs):
    """Lag norms ``(S, T)`` over the whole carry, and for the LSTM over the cell state alone."""
    module = getattr(recurrax, family)
    step = functools.partial(module.step, cell_params)
    carry = module.initial_carry(cell_params)
    jacobians = jax.vmap(lambda x: gf.carry_jacobians(step, carry, x))(xs)
    cell_path = None
    if family == "lstm":
        cell_path = jax.vmap(lambda j: gf.lag_norms(gf.carry_block(j, carry, "c")))(jacobians)
    return jax.vmap(gf.lag_norms)(jacobians), cell_path


def gated_cells(config: Config) -> dict:
    """Lag curves of LSTM and GRU cells at initialisation and after training on the adding problem."""
    results = {}
    xs = jax.random.uniform(jax.random.key(config.seed + 3), (config.num_sequences, config.length, 2))
    for family in config.gated:
        module = getattr(recurrax, family)
        k_cell, k_head = jax.random.split(jax.random.key(config.seed))
        params = {"cell": module.init(k_cell, 2, config.hidden_size), "head": recurrax.init_dense(k_head, config.hidden_size, 1)}
        with jax.numpy_dtype_promotion("standard"):
            trained, final_loss = _train_on_adding(family, params, config)
        for when, p in (("init", params), ("trained", trained)):
            norms, cell_path = _gated_lag_curves(family, p["cell"], xs)
            entry = {"curve": _geometric_mean(norms).tolist()}
            if cell_path is not None:
                entry["cell_state_path"] = _geometric_mean(cell_path).tolist()
            entry["fitted_rate"] = gf.decay_rate(entry["curve"], skip=config.skip)
            if when == "trained":
                entry["train_loss"] = final_loss
            results[f"{family} {when}"] = entry
    return results


def _figure(results: dict, config: Config, path: pathlib.Path) -> None:
    plt = _style.pyplot()

    sweep = results["elman"]
    columns = max(len(sweep), 2)
    fig, grid = plt.subplots(2, columns, figsize=(5 * columns, 8), squeeze=False)
    axes = list(grid[0][: len(sweep)]) + list(grid[1][:2])
    for ax in list(grid[0][len(sweep):]) + list(grid[1][2:]):
        ax.axis("off")
    lags = np.arange(1, config.length + 1)
    colors = plt.cm.viridis(np.linspace(0, 1, len(config.rates)))
    for ax, (activation, entry) in zip(axes, sweep.items()):
        for color, row in zip(colors, entry["rows"]):
            ax.semilogy(lags, row["curve"], color=color, label=f"λ₁γ={row['lambda1_gamma']:.2f}")
            ax.semilogy(lags, row["bound"], color=color, linestyle=":", linewidth=0.8)
        ax.set(xlabel="lag t − k (steps)", ylabel="‖∂h_T/∂h_k‖₂ (dotted: bound (σ₁γ)^lag)",
               title=f"Elman {activation}")
        values = np.concatenate([np.asarray(row["curve"] + row["bound"]) for row in entry["rows"]])
        values = values[np.isfinite(values) & (values > 0)]
        ax.set_ylim(max(values.min() / 10, 1e-30), min(values.max() * 10, 1e30))
    axes[0].legend(fontsize=7)
    rate_ax = axes[-2]
    grid = np.log(np.array(config.rates))
    rate_ax.plot(grid, grid, "k:", label="bound log(σ₁γ)")
    for activation, entry in sweep.items():
        rate_ax.plot([np.log(r["lambda1_gamma"]) for r in entry["rows"]], [r["fitted_rate"] for r in entry["rows"]],
                     "o-", label=f"{activation} fitted")
    rate_ax.axhline(0, color="gray", linewidth=0.5)
    rate_ax.axvline(0, color="gray", linewidth=0.5)
    rate_ax.set(xlabel="log(λ₁γ)", ylabel="fitted per-step log rate", title="decay rate vs log(λ₁γ)")
    rate_ax.legend(fontsize=7)
    gated_ax = axes[-1]
    for name, entry in results["gated"].items():
        gated_ax.semilogy(lags, entry["curve"], label=f"{name} (carry)")
        if "cell_state_path" in entry:
            gated_ax.semilogy(lags, entry["cell_state_path"], linestyle="--", label=f"{name} (c path)")
    if results["gated"]:
        gated_ax.set(xlabel="lag t − k (steps)", ylabel="‖∂c_T/∂c_k‖₂",
                     title="gated cells: init vs trained (adding)")
        gated_ax.legend(fontsize=7)
    else:  # config.gated = (): no gated cells measured
        gated_ax.axis("off")
    fig.tight_layout()
    _style.save(fig, path)


def _table(results: dict) -> str:
    lines = ["| activation | λ₁γ | fitted rate / step | top Lyapunov | max ‖·‖/bound |", "|---|---|---|---|---|"]
    for activation, entry in results["elman"].items():
        for row in entry["rows"]:
            lines.append(f"| {activation} | {row['lambda1_gamma']:.2f} | {row['fitted_rate']:+.3f} "
                         f"| {row['lyapunov']:+.3f} | {row['max_norm_over_bound']:.3f} |")
    lines += ["", "| activation | crossover λ₁γ | bound respected | decays for λ₁γ < 1 |", "|---|---|---|---|"]
    for activation, entry in results["elman"].items():
        crossover = entry["crossover_lambda1_gamma"]
        lines.append(f"| {activation} | {'none' if crossover is None else f'{crossover:.2f}'} "
                     f"| {entry['bound_respected']} | {entry['decays_below_one']} |")
    lines += ["", "| gated cell | fitted rate / step (carry) | train loss |", "|---|---|---|"]
    for name, entry in results["gated"].items():
        lines.append(f"| {name} | {entry['fitted_rate']:+.3f} | {entry.get('train_loss', '')} |")
    return "\n".join(lines)


def _svd_lag_norms(jacobians):
    """``lag_norms`` as it was: the SVD's ``jnp.linalg.norm(·, 2)`` of each product."""
    def body(product, jacobian):
        product = product @ jacobian
        return product, jnp.linalg.norm(product, 2)

    return jax.lax.scan(body, jnp.eye(jacobians.shape[1], dtype=jacobians.dtype), jacobians, reverse=True)[1][::-1]


def analysis_cost(config: Config) -> dict:
    """Milliseconds per sequence of ``carry_jacobians`` + ``lag_norms`` (and with SVD norms)."""
    rows = {}
    key = jax.random.key(config.seed)
    for name, hidden in (("elman", config.cost_size), ("lstm", config.cost_size // 2)):
        module = getattr(recurrax, name)
        params = recurrax.init_rnn(key, name, 32, hidden).cell
        step, carry = functools.partial(module.step, params), module.initial_carry(params)
        xs = jax.random.normal(jax.random.fold_in(key, 1), (config.num_sequences, config.length, 32))
        jobs = []
        for norms_name, norms in (("lag_norms", gf.lag_norms), ("svd", _svd_lag_norms)):
            analyse = jax.jit(jax.vmap(lambda x, norms=norms: norms(gf.carry_jacobians(step, carry, x))))
            for batch in (1, config.num_sequences):
                fn = functools.partial(analyse, xs[:batch])
                jax.block_until_ready(fn())   # compile
                jobs.append({"norms": norms_name, "batch": batch, "fn": fn, "times": []})
        timed_interleaved(jobs, config.cost_repeats)
        rows[name] = {f"{job['norms']}_ms_per_sequence_batch_{job['batch']}":
                      1e3 * float(np.median(job["times"])) / job["batch"] for job in jobs}
        rows[name]["carry_size"] = int(ravel_pytree(carry)[0].size)
    return {"length": config.length, "sequences": config.num_sequences, "repeats": config.cost_repeats,
            "rows": rows}


def _cost_table(cost: dict) -> str:
    batch = cost["sequences"]
    lines = [f"Analysis cost (carry_jacobians + lag_norms, T = {cost['length']}, after compilation, "
             f"median of {cost['repeats']} interleaved repeats, ms per sequence):", "",
             f"| cell | N | 1 sequence | vmap over {batch} | SVD norms, vmap over {batch} | SVD ÷ lag_norms |",
             "|---|---|---|---|---|---|"]
    for name, row in cost["rows"].items():
        ours, svd = row[f"lag_norms_ms_per_sequence_batch_{batch}"], row[f"svd_ms_per_sequence_batch_{batch}"]
        lines.append(f"| {name} | {row['carry_size']} | {row['lag_norms_ms_per_sequence_batch_1']:.1f} "
                     f"| {ours:.1f} | {svd:.1f} | {svd / ours:.2f} |")
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    results = {"elman": elman_sweep(config), "gated": gated_cells(config),
               "cost": analysis_cost(config) if config.cost_size else None}
    table = _table(results) + ("\n\n" + _cost_table(results["cost"]) if config.cost_size else "")
    print(table)
    (out_dir / "results.md").write_text(table + "\n")
    _figure(results, config, out_dir / "vanishing.png")
    return results
