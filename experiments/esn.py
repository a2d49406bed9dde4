"""Echo state network on Mackey–Glass: reservoirpy's README setting, a sweep, free running, timing.

Setting (reservoirpy 0.4's README, reproduced with reservoirpy itself when it is installed):
the raw Mackey–Glass series of ``length`` = 2000 points (τ = 17, reservoirpy's discretisation
and history, ``timeseries.mackey_glass(method="reservoirpy")``: the same data to 1e-10),
one-step-ahead pairs split by ``to_forecasting(test_size=0.2)`` (1599 to fit, the last 400 to
test), 100 units, spectral radius 1.25, leak 0.3, ridge 1e-5, 100 warm-up steps, reservoirpy's
other defaults (connectivity 0.1, input connectivity 0.1, input scaling 1, no bias, an
unpenalised readout bias). The test run continues from the state after fitting.

Reported:

1. test RMSE and R² for ``num_seeds`` reservoirs (recurrax keys 0.., reservoirpy seeds 0..): the
   result depends on the draw, so the median and range are the numbers to compare. Two
   readouts, each in both libraries: on ``[u, x]`` (the standard ESN readout and recurrax's
   default; reservoirpy's ``input_to_readout=True``) and on the states ``x`` alone (the model
   of reservoirpy's README, ``reservoir >> ridge``); also recurrax's circulant topology;
2. a sweep over spectral radius × leak × ridge × key in one compiled call, validated on the last
   20% of the training part (never on the test part), heat map of the best ridge per cell,
   and the test RMSE of the chosen setting;
3. a free-running forecast from the end of the training part (outputs fed back as inputs);
4. the time of fit + run with ``timing_hidden_size`` = 1000 units over ``timing_steps`` = 50 000
   Mackey–Glass steps (the same 80/20 split: fit on 40 000, run on 10 000), recurrax with the
   random (dense) and circulant (sparse) topologies against reservoirpy's NumPy backend and its
   JAX backend (``reservoirpy.jax``: at its default float32, and in float64 under
   ``jax.enable_x64``, where its ridge solve matches the others' RMSE) in the same process.
   Initialisation and compilation are reported apart from the run.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import recurrax
from experiments import _style
from recurrax import esn, reservoir, timeseries


@dataclasses.dataclass(frozen=True)
class Config:
    length: int = 2000
    test_size: float = 0.2
    hidden_size: int = 100
    spectral_radius: float = 1.25
    leak_rate: float = 0.3
    ridge: float = 1e-5
    warmup: int = 100
    num_seeds: int = 20
    sweep_radii: tuple = (0.5, 0.8, 1.0, 1.25, 1.5)
    sweep_leaks: tuple = (0.1, 0.2, 0.3, 0.5, 1.0)
    sweep_ridges: tuple = (1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
    sweep_keys: int = 3
    generate_steps: int = 400
    timing_hidden_size: int = 1000
    timing_steps: int = 50000
    timing_repeats: int = 3
    timing_topologies: tuple = ("random", "circulant")
    reservoirpy: bool = True


QUICK = Config(
    length=600,
    hidden_size=30,
    num_seeds=2,
    sweep_radii=(0.8, 1.25),
    sweep_leaks=(0.3, 1.0),
    sweep_ridges=(1e-6, 1e-4),
    sweep_keys=2,
    generate_steps=50,
    timing_hidden_size=50,
    timing_steps=2000,
    timing_repeats=1,
)


def _data(length: int, test_size: float):
    series = timeseries.mackey_glass(length, method="reservoirpy")
    return series, timeseries.to_forecasting(series, test_size=test_size)


def _import_reservoirpy():
    """``(reservoirpy, its ESN, its JAX backend's ESN or None)``, or Nones when it is not installed."""
    try:
        import reservoirpy
        from reservoirpy import ESN
    except ImportError:
        print(
            "note: reservoirpy is not importable; its rows are skipped "
            "(pip install 'recurrax[bench]' to compare)."
        )
        return None, None, None
    try:
        from reservoirpy.jax import ESN as JaxESN
    except ImportError:
        JaxESN = None
    return reservoirpy, ESN, JaxESN


def _recurrax_run(
    config: Config, split, seed: int, input_to_readout: bool, topology: str = "random"
):
    x_train, x_test, y_train, y_test = split
    params = reservoir.init(
        jax.random.key(seed),
        1,
        config.hidden_size,
        topology=topology,
        spectral_radius=config.spectral_radius,
        leak_rate=config.leak_rate,
    )
    readout, carry = esn.fit(
        params,
        x_train,
        y_train,
        ridge=config.ridge,
        warmup=config.warmup,
        input_to_readout=input_to_readout,
    )
    _, predictions = esn.predict(params, readout, x_test, carry=carry)
    return (
        esn.rmse(y_test, predictions),
        esn.rsquare(y_test, predictions),
        (params, readout, carry, predictions),
    )


def _reservoirpy_run(ESN, config: Config, split, seed: int, input_to_readout: bool):
    x_train, x_test, y_train, y_test = split
    model = ESN(
        units=config.hidden_size,
        sr=config.spectral_radius,
        lr=config.leak_rate,
        ridge=config.ridge,
        seed=seed,
        input_to_readout=input_to_readout,
    )
    model.fit(x_train, y_train, warmup=config.warmup)
    predictions = model.run(x_test)
    return esn.rmse(y_test, predictions), esn.rsquare(y_test, predictions)


def _summary(values) -> dict:
    values = np.asarray(values, np.float64)
    return {
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "values": values.tolist(),
    }


def accuracy(config: Config, split, ESN) -> dict:
    """Test RMSE and R² over seeds, x-readout and [u, x]-readout, for both libraries."""
    results = {}
    models = [  # recurrax's default readout [u, x] first, then reservoirpy README's x
        ("[u, x]", True, "recurrax"),
        ("[u, x]", True, "recurrax circulant"),
        ("[u, x]", True, "reservoirpy"),
        ("x", False, "recurrax"),
        ("x", False, "reservoirpy"),
    ]
    for readout_name, to_readout, library in models:
        if library == "reservoirpy" and ESN is None:
            continue
        rmses, r2s = [], []
        for seed in range(config.num_seeds):
            if library.startswith("recurrax"):
                topology = "circulant" if library.endswith("circulant") else "random"
                rmse, r2, _ = _recurrax_run(config, split, seed, to_readout, topology)
            else:
                rmse, r2 = _reservoirpy_run(ESN, config, split, seed, to_readout)
            rmses.append(rmse)
            r2s.append(r2)
        results[f"{library} readout {readout_name}"] = {
            "rmse": _summary(rmses),
            "r2": _summary(r2s),
            "fraction_rmse_le_0.0020": float(np.mean(np.asarray(rmses) <= 0.0020)),
        }
    return results


def sweep_study(config: Config, split) -> dict:
    """The grid on a validation split of the training part; the chosen setting on the test part."""
    x_train, x_test, y_train, y_test = split
    cut = round(0.8 * x_train.shape[0])
    keys = jax.random.split(jax.random.key(1234), config.sweep_keys)
    start = time.perf_counter()
    result = esn.sweep(
        keys,
        x_train[:cut],
        y_train[:cut],
        x_train[cut:],
        y_train[cut:],
        hidden_size=config.hidden_size,
        spectral_radii=config.sweep_radii,
        leak_rates=config.sweep_leaks,
        ridges=config.sweep_ridges,
        warmup=config.warmup,
    )
    seconds = time.perf_counter() - start
    best = result.best()
    test = []
    for key in keys:
        params = reservoir.init(
            key,
            1,
            config.hidden_size,
            spectral_radius=best["spectral_radius"],
            leak_rate=best["leak_rate"],
        )
        readout, carry = esn.fit(
            params, x_train, y_train, ridge=best["ridge"], warmup=config.warmup
        )
        test.append(esn.rmse(y_test, esn.predict(params, readout, x_test, carry=carry)[1]))
    return {
        "errors": result.errors.tolist(),
        "spectral_radii": result.spectral_radii.tolist(),
        "leak_rates": result.leak_rates.tolist(),
        "ridges": result.ridges.tolist(),
        "best": best,
        "best_test_rmse": _summary(test),
        "seconds": seconds,
        "points": int(result.errors.size),
    }


def free_running(config: Config, split) -> dict:
    x_train, x_test, y_train, y_test = split
    _, _, (params, readout, carry, teacher_forced) = _recurrax_run(config, split, 0, True)
    steps = min(config.generate_steps, y_test.shape[0])
    _, generated = esn.generate(
        params, readout, steps, carry=carry, last_output=jnp.asarray(y_train[-1], jnp.float32)
    )
    generated = np.asarray(generated, np.float64)
    errors = np.abs(generated[:, 0] - y_test[:steps, 0])
    above = np.nonzero(errors > 0.05)[0]
    first_100 = min(100, steps)
    return {
        "steps": steps,
        "rmse_first_100": esn.rmse(y_test[:first_100], generated[:first_100]),
        "rmse_all": esn.rmse(y_test[:steps], generated),
        "steps_within_0.05": int(above[0]) if above.size else steps,
        "generated": generated[:, 0].tolist(),
        "teacher_forced": np.asarray(teacher_forced)[:steps, 0].tolist(),
        "truth": y_test[:steps, 0].tolist(),
    }


def _block(tree):
    return jax.block_until_ready(tree)


def _reservoirpy_timing(name: str, ESN, config: Config, x_train, y_train, x_test, y_test) -> dict:
    """One reservoirpy backend's init, then fit + run ``timing_repeats + 1`` times."""
    model = ESN(units=config.timing_hidden_size, sr=config.spectral_radius, lr=config.leak_rate,
                ridge=config.ridge, seed=0)
    start = time.perf_counter()
    model.initialize(x_train[:1], y_train[:1])
    init_s = time.perf_counter() - start
    fits, runs = [], []
    for _ in range(config.timing_repeats + 1):
        start = time.perf_counter()
        model.fit(x_train, y_train, warmup=config.warmup)
        middle = time.perf_counter()
        predictions = np.asarray(model.run(x_test))
        fits.append(middle - start)
        runs.append(time.perf_counter() - middle)
    return _timing_row(name, init_s, fits, runs, esn.rmse(y_test, predictions))


def _timing_row(name: str, init_s: float, fits: list, runs: list, rmse: float) -> dict:
    """Medians of the warm calls (all but the first); the first call's excess is its compilation."""
    warm = np.asarray(fits[1:]) + np.asarray(runs[1:])
    return {
        "impl": name,
        "init_s": init_s,
        "first_call_s": fits[0] + runs[0],
        "compile_s": max(0.0, fits[0] + runs[0] - float(np.median(warm))),
        "fit_s": float(np.median(fits[1:])),
        "run_s": float(np.median(runs[1:])),
        "fit_run_s": float(np.median(warm)),
        "rmse": rmse,
    }


def timing(config: Config, ESN, JaxESN=None) -> dict:
    """Fit + run at ``timing_hidden_size`` units over ``timing_steps`` steps: recurrax, reservoirpy's
    NumPy backend and (when importable) its JAX backend, each at its defaults, in this process."""
    _, (x_train, x_test, y_train, y_test) = _data(config.timing_steps + 1, config.test_size)
    rows = []
    setting = dict(spectral_radius=config.spectral_radius, leak_rate=config.leak_rate)
    x_train32, x_test32 = jnp.asarray(x_train, jnp.float32), jnp.asarray(x_test, jnp.float32)
    reservoir.init(
        jax.random.key(0), 1, 8
    )  # traces jax.random's functions once, outside the timings
    for topology in config.timing_topologies:
        start = time.perf_counter()
        params = _block(
            reservoir.init(
                jax.random.key(0), 1, config.timing_hidden_size, topology=topology, **setting
            )
        )
        init_s = time.perf_counter() - start
        fits, runs = [], []
        for _ in range(config.timing_repeats + 1):  # the first call compiles
            start = time.perf_counter()
            readout, carry = _block(
                esn.fit(params, x_train32, y_train, ridge=config.ridge, warmup=config.warmup)
            )
            middle = time.perf_counter()
            _, predictions = _block(esn.predict(params, readout, x_test32, carry=carry))
            fits.append(middle - start)
            runs.append(time.perf_counter() - middle)
        name = f"recurrax ({topology}, {'dense' if topology == 'random' else 'sparse'} W)"
        rows.append(_timing_row(name, init_s, fits, runs, esn.rmse(y_test, predictions)))
    if ESN is not None:
        backends = [("reservoirpy (scipy sparse W)", ESN, False)]
        if JaxESN is not None:
            # its default (float32), and float64 (jax.enable_x64), where its ridge solve is exact
            backends += [("reservoirpy.jax", JaxESN, False), ("reservoirpy.jax, float64", JaxESN, True)]
        for name, backend, x64 in backends:
            # JAX's default promotion rules, which reservoirpy.jax is written for (the test suite
            # runs with strict ones)
            with jax.enable_x64(x64), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
                rows.append(_reservoirpy_timing(name, backend, config, x_train, y_train, x_test, y_test))
        numpy_s = next(r for r in rows if r["impl"] == backends[0][0])["fit_run_s"]
        jax_row = next((r for r in rows if r["impl"] == "reservoirpy.jax"), None)
        for row in rows:
            row["speedup_vs_reservoirpy"] = numpy_s / row["fit_run_s"]
            row["speedup_incl_compile"] = numpy_s / (row["fit_run_s"] + row["compile_s"])
            if jax_row is not None:
                row["speedup_vs_reservoirpy_jax"] = jax_row["fit_run_s"] / row["fit_run_s"]
    return {
        "rows": rows,
        "train_steps": int(x_train.shape[0]),
        "test_steps": int(x_test.shape[0]),
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def _figures(results: dict, config: Config, out_dir: pathlib.Path) -> None:
    plt = _style.pyplot()

    sweep = results["sweep"]
    errors = np.asarray(sweep["errors"]).mean(axis=0)  # (radii, leaks, ridges)
    best_ridge = errors.min(axis=-1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    image = ax.imshow(np.log10(best_ridge), origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sweep["leak_rates"])), [f"{v:g}" for v in sweep["leak_rates"]])
    ax.set_yticks(range(len(sweep["spectral_radii"])), [f"{v:g}" for v in sweep["spectral_radii"]])
    for i in range(best_ridge.shape[0]):
        for j in range(best_ridge.shape[1]):
            ridge = sweep["ridges"][int(np.argmin(errors[i, j]))]
            ax.text(
                j,
                i,
                f"{best_ridge[i, j]:.1e}\nλ={ridge:.0e}",
                ha="center",
                va="center",
                fontsize=6,
                color="w",
            )
    ax.set(
        xlabel="leak rate",
        ylabel="spectral radius",
        title=f"validation RMSE (best ridge, mean of {len(sweep['errors'])} keys)",
    )
    fig.colorbar(image, label="log10 RMSE")
    fig.tight_layout()
    _style.save(fig, out_dir / "esn_sweep.png")

    run = results["free_running"]
    steps = np.arange(run["steps"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    top.plot(steps, run["truth"], "k", label="Mackey–Glass (test part)")
    top.plot(steps, run["teacher_forced"], "C0--", label="one-step (teacher forced)")
    top.plot(steps, run["generated"], "C3", label="free running (outputs fed back)")
    top.set(ylabel="x(t)", title="ESN forecast from the end of the training part")
    top.legend(fontsize=7)
    bottom.semilogy(
        steps,
        np.abs(np.asarray(run["generated"]) - np.asarray(run["truth"])) + 1e-12,
        "C3",
        label="free running",
    )
    bottom.semilogy(
        steps,
        np.abs(np.asarray(run["teacher_forced"]) - np.asarray(run["truth"])) + 1e-12,
        "C0--",
        label="one-step",
    )
    bottom.set(xlabel="test step", ylabel="|error|")
    bottom.legend(fontsize=7)
    fig.tight_layout()
    _style.save(fig, out_dir / "esn_forecast.png")


def _table(results: dict, config: Config) -> str:
    lines = [
        f"Mackey–Glass one-step forecast, {config.hidden_size} units, ρ={config.spectral_radius}, "
        f"leak={config.leak_rate}, ridge={config.ridge:g}, warm-up {config.warmup}, "
        f"{results['split']['train']} fit / {results['split']['test']} test steps, "
        f"{config.num_seeds} seeds",
        "",
        "| model | RMSE median [min, max] | R² median | RMSE ≤ 0.0020 | seed 0 RMSE |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results["accuracy"].items():
        rmse, r2 = entry["rmse"], entry["r2"]
        lines.append(
            f"| {name} | {rmse['median']:.5f} [{rmse['min']:.5f}, {rmse['max']:.5f}] | "
            f"{r2['median']:.6f} "
            f"| {entry['fraction_rmse_le_0.0020']:.0%} | {rmse['values'][0]:.5f} |"
        )
    sweep = results["sweep"]
    best = sweep["best"]
    lines += [
        "",
        f"Sweep: {sweep['points']} settings (keys × radii × leaks × ridges) in one compiled call, "
        f"{sweep['seconds']:.2f} s including compilation. Best on validation: "
        f"ρ={best['spectral_radius']:g}, "
        f"leak={best['leak_rate']:g}, ridge={best['ridge']:g} (validation RMSE "
        f"{best['rmse']:.5f}); "
        f"test RMSE median {sweep['best_test_rmse']['median']:.5f} over the sweep's keys.",
    ]
    run = results["free_running"]
    lines += [
        "",
        f"Free running from the end of the training part: RMSE {run['rmse_first_100']:.4f} "
        "over the first "
        f"{min(100, run['steps'])} steps, {run['rmse_all']:.4f} over {run['steps']}; "
        "|error| ≤ 0.05 for the first "
        f"{run['steps_within_0.05']} steps.",
    ]
    timing = results["timing"]
    lines += [
        "",
        f"Timing: {config.timing_hidden_size} units, fit on {timing['train_steps']} steps + run on "
        f"{timing['test_steps']} (load average {timing['load_average']:.2f} on "
        f"{timing['cpus']} CPUs; "
        "seconds, median of repeats)",
        "",
        "| implementation | init | compile | fit | run | fit + run | × vs reservoirpy "
        "(incl. compile) | × vs reservoirpy.jax | RMSE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in timing["rows"]:
        speed = (
            f"{row['speedup_vs_reservoirpy']:.1f} ({row['speedup_incl_compile']:.1f})"
            if "speedup_vs_reservoirpy" in row
            else "n/a"
        )
        versus_jax = f"{row['speedup_vs_reservoirpy_jax']:.1f}" if "speedup_vs_reservoirpy_jax" in row else "n/a"
        lines.append(
            f"| {row['impl']} | {row['init_s']:.2f} | {row['compile_s']:.2f} | "
            f"{row['fit_s']:.2f} | "
            f"{row['run_s']:.2f} | {row['fit_run_s']:.2f} | {speed} | {versus_jax} | {row['rmse']:.2e} |"
        )
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    reservoirpy, ESN, JaxESN = _import_reservoirpy() if config.reservoirpy else (None, None, None)
    _, split = _data(config.length, config.test_size)
    results = {
        "versions": {
            "jax": jax.__version__,
            "recurrax": recurrax.__version__,
            "reservoirpy": getattr(reservoirpy, "__version__", None),
        },
        "split": {"train": int(split[0].shape[0]), "test": int(split[1].shape[0])},
    }
    results["accuracy"] = accuracy(config, split, ESN)
    results["sweep"] = sweep_study(config, split)
    results["free_running"] = free_running(config, split)
    results["timing"] = timing(config, ESN, JaxESN)
    table = _table(results, config)
    print(table)
    (out_dir / "results.md").write_text(table + "\n")
    _figures(results, config, out_dir)
    return results
