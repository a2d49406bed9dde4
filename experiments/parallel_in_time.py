"""Parallel in time: associative scan, DEER, quasi-DEER and ELK against the sequential scan.

Speed-ups. For every (H, T) of the grid (batch ``batch_size`` = 16, float32, inputs of size H):
minGRU with ``method="associative"`` against minGRU with the sequential scan, and GRU with
``"deer"``, ``"quasi_deer"`` and ``"elk"`` against GRU with the sequential scan, timed as a user
calls the public API: ``jax.jit`` of ``recurrax.rnn(params, xs, method=m)`` (forward) and of
``jax.grad`` of a loss through it (forward+backward). All the functions of one (H, T) are
compiled first, then called in interleaved rounds (``repeats`` rounds, ``large_t_repeats`` at
T ≥ 10⁴) in one process, and the medians are compared: speed-up = median(scan) / median(method),
so load on a shared machine hits both sides alike. Also per Newton method, from
``recurrax.parallel.solve``: the iterations to tolerance (float32 default 1e-5), the residual,
whether it converged, and the max |Δ| of the outputs (and, relative to the largest gradient
entry, of the gradients) from the sequential scan's.

DEER forms B·T·H² Jacobian entries (4 bytes each in float32); it runs only where
``B·T·H²·4 ≤ deer_max_bytes`` (default 2²⁶ = 64 MiB: the matrix scan keeps several arrays of
that size and does O(H³) work per combine, which on this CPU is the binding limit; ``--full``
raises it to 2 GiB). Skipped cells are listed.

Grids. The issue's grid is T ∈ {10², 10³, 10⁴, 10⁵} × H ∈ {1, 2, 8, 32, 64, 256}: on a 2-core
CPU it does not fit a run of minutes (T = 10⁵ at H = 256 alone is a sequential GRU pass of
seconds, and every cell compiles 10 functions and a ``solve``, 1–8 s each). The default config is
a subset: T ∈ {10², 10³, 10⁴} × H ∈ {1, 8, 64}, plus T = 10⁵ at H ∈ {1, 2}. A first run with a
256 MiB DEER bound took 23 min on the shared 2-core machine (load average 3–7): DEER at H = 64,
T = 10³ (250 MiB of Jacobians, O(H³) per combine) alone took 5.5 min, so the default bound is
64 MiB. ``--full true`` selects the whole grid (hours on this CPU).

Gradient deviations: that first run found quasi-DEER's and ELK's gradients off by up to 16% of
the largest entry (the loss is a mean, so the cotangents are ≪ 1, and the backward iteration
stopped on an absolute change); the library's stopping rules are relative since, and the
gradient column checks it.

Crossover model (accelerators; **not measured here**: this machine has no GPU). The sequential
scan is T dependent steps; on a GPU each is at least one kernel launch, so it costs at least
``T · L`` with ``L = launch_latency_s`` (default 5 µs, a typical CUDA launch-plus-sync latency; a
documented assumption). A parallel evaluation is ``passes`` passes (1 for the associative scan;
iterations + 1 for Newton: each iteration one scan and one linearisation, plus the initial
linearisation and the output pass), each pass costing its dependent depth in launches,
``(2·⌈log₂ T⌉ + 4) · L`` (the up- and down-sweep of the scan plus a few elementwise kernels), plus
its work, taken as the measured CPU time of one pass (forward time / passes) divided by
``throughput_ratio`` (default 100: the assumed ratio of an accelerator's throughput on these
elementwise/small-matrix kernels to this 2-core CPU's). Predicted forward speed-up
= T·L / (passes · ((2⌈log₂ T⌉ + 4) · L + t_pass / throughput_ratio)). It is a lower bound on the
sequential side (one launch per step, no compute) and an optimistic one on the parallel side
(perfect use of the accelerator's throughput), so read it as "where the crossover lies", not as
a promise; it also ignores the backward pass and the memory of DEER's Jacobians.

Training. A GRU (``train_hidden`` = 8 units, dense readout) on the adding problem at T =
``train_length`` (10⁴), last-step MSE, ``train_steps`` Adam updates of ``train_batch`` sequences:
once with the sequential scan and once with ELK, warm-started from the previous step's trajectory
(``rnn(..., method="elk", initial_guess=carries, return_carries=True)``; the batches differ from
step to step, so it is a guess of the right scale, not of the right values), from the same
initial weights on the same batches. Reported: both loss curves, max |Δloss|, and each run's
wall time (compilation excluded, reported separately).

Results: ``results.json`` (all numbers), ``results.md`` (the tables),
``parallel_in_time_speedup.png`` and ``parallel_in_time_training.png``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recurrax
from experiments import _style
from experiments._measure import max_abs, max_deviation
from recurrax import tasks

# method label: (cell family, method passed to rnn)
METHODS = {
    "associative": ("mingru", "associative"),
    "deer": ("gru", "deer"),
    "quasi_deer": ("gru", "quasi_deer"),
    "elk": ("gru", "elk"),
}
MODES = ("forward", "forward+backward")


@dataclasses.dataclass(frozen=True)
class Config:
    batch_size: int = 16
    lengths: tuple = (100, 1000, 10_000)
    hidden_sizes: tuple = (1, 8, 64)
    long_length: int = 100_000          # also run at this T, for the hidden sizes below
    long_hidden_sizes: tuple = (1, 2)
    full: bool = False                  # the whole grid (hours on a 2-core CPU)
    methods: tuple = tuple(METHODS)
    repeats: int = 5
    large_t_repeats: int = 3            # at T >= 10^4
    deer_max_bytes: int = 2**26         # B·T·H²·4 bytes of DEER Jacobians at most (2 GiB with full)
    launch_latency_s: float = 5e-6      # crossover model: per dependent kernel launch (assumed)
    throughput_ratio: float = 100.0     # crossover model: accelerator / this CPU throughput (assumed)
    train_hidden: int = 8
    train_length: int = 10_000
    train_batch: int = 16
    train_steps: int = 40
    train_method: str = "elk"
    learning_rate: float = 3e-3
    seed: int = 0


# One cell and the cheaper-to-compile methods (compilation dominates at this size): for the tests.
QUICK = Config(lengths=(30,), hidden_sizes=(2,), long_length=0, long_hidden_sizes=(), methods=("associative", "quasi_deer"),
               repeats=2, large_t_repeats=1, train_hidden=2, train_length=50, train_batch=4, train_steps=3,
               train_method="quasi_deer")

FULL_LENGTHS = (100, 1000, 10_000, 100_000)
FULL_HIDDEN = (1, 2, 8, 32, 64, 256)


def _grid(config: Config) -> list[tuple[int, int]]:
    """``(H, T)`` cells, in increasing cost."""
    if config.full:
        cells = [(h, t) for t in FULL_LENGTHS for h in FULL_HIDDEN]
    else:
        cells = [(h, t) for t in config.lengths for h in config.hidden_sizes]
        if config.long_length:
            cells += [(h, config.long_length) for h in config.long_hidden_sizes]
    return sorted(set(cells), key=lambda c: (c[1], c[0]))


def _deer_bound(config: Config) -> int:
    return max(config.deer_max_bytes, 2**31) if config.full else config.deer_max_bytes


def _block(tree):
    return jax.block_until_ready(tree)


def _loss(params, xs, method):
    _, ys = recurrax.rnn(params, xs, method=method)
    return jnp.mean(ys**2)


def _jobs(params, xs, method):
    forward = jax.jit(lambda p, x: recurrax.rnn(p, x, method=method)[1])
    backward = jax.jit(jax.grad(lambda p, x: _loss(p, x, method)))
    return {"forward": (forward, (params, xs)), "forward+backward": (backward, (params, xs))}


def measure_cell(config: Config, hidden: int, length: int) -> list[dict]:
    """All methods at one (H, T): interleaved timings, iterations, deviations. One row per method."""
    B = config.batch_size
    k_x, k_gru, k_min = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), hidden * 10**7 + length), 3)
    xs = jax.random.normal(k_x, (B, length, hidden), jnp.float32)
    params = {"gru": recurrax.init_rnn(k_gru, "gru", hidden, hidden),
              "mingru": recurrax.init_rnn(k_min, "mingru", hidden, hidden)}
    deer_bytes = B * length * hidden**2 * 4
    methods = [m for m in config.methods if m != "deer" or deer_bytes <= _deer_bound(config)]
    skipped = [m for m in config.methods if m not in methods]

    jobs = {}   # (label, mode) -> (fn, args)
    for family in sorted({METHODS[m][0] for m in methods}):
        for mode, job in _jobs(params[family], xs, "scan").items():
            jobs[(f"scan/{family}", mode)] = job
    for m in methods:
        family, name = METHODS[m]
        for mode, job in _jobs(params[family], xs, name).items():
            jobs[(m, mode)] = job
    compile_s, results = {}, {}
    for key, (fn, args) in jobs.items():
        start = time.perf_counter()
        results[key] = _block(fn(*args))
        compile_s[key] = time.perf_counter() - start
    repeats = config.large_t_repeats if length >= 10_000 else config.repeats
    times = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, (fn, args) in jobs.items():
            start = time.perf_counter()
            _block(fn(*args))
            times[key].append(time.perf_counter() - start)
    median = {key: statistics.median(v) for key, v in times.items()}

    rows = []
    for m in methods:
        family, name = METHODS[m]
        base = f"scan/{family}"
        row = {"method": m, "cell": family, "H": hidden, "T": length, "B": B, "repeats": repeats}
        for mode in MODES:
            row[mode] = {"scan_s": median[(base, mode)], "method_s": median[(m, mode)],
                         "speedup": median[(base, mode)] / median[(m, mode)],
                         "compile_s": compile_s[(m, mode)]}
        row["output_deviation"] = max_deviation(results[(m, "forward")], results[(base, "forward")])
        grads, ref = results[(m, "forward+backward")], results[(base, "forward+backward")]
        row["gradient_deviation_relative"] = max_deviation(grads, ref) / max(max_abs(ref), 1e-30)
        if m == "associative":
            row.update(iterations=0, residual=0.0, converged=True, passes=1)
        else:
            sol = jax.jit(lambda p, x: recurrax.parallel.solve(p, x, method=name))(params[family], xs)
            row.update(iterations=int(sol.iterations), residual=float(sol.residual),
                       converged=bool(sol.converged), passes=int(sol.iterations) + 1)
        row["pass_s"] = row["forward"]["method_s"] / row["passes"]
        rows.append(row)
    if skipped:
        rows.append({"method": "deer", "cell": "gru", "H": hidden, "T": length, "B": B, "skipped": True,
                     "jacobian_bytes": deer_bytes, "bound_bytes": _deer_bound(config)})
    return rows


def predicted_speedup(config: Config, row: dict) -> dict:
    """The crossover model (module docstring) for one measured row."""
    T, L = row["T"], config.launch_latency_s
    depth = 2 * math.ceil(math.log2(T)) + 4
    sequential = T * L
    per_pass = depth * L + row["pass_s"] / config.throughput_ratio
    parallel = row["passes"] * per_pass
    return {"sequential_s": sequential, "parallel_s": parallel, "depth_launches": depth,
            "speedup": sequential / parallel}


# ----------------------------------------------------------------------------------------------
# Training: GRU on the adding problem, sequential scan vs ELK (warm-started).


def train(config: Config) -> dict:
    H, T = config.train_hidden, config.train_length
    k_rnn, k_head = jax.random.split(jax.random.key(config.seed + 7))
    params0 = {"rnn": recurrax.init_rnn(k_rnn, "gru", 2, H), "head": recurrax.init_dense(k_head, H, 1)}
    optimizer = optax.adam(config.learning_rate)
    batches = [tasks.adding_problem(jax.random.fold_in(jax.random.key(config.seed + 8), i), config.train_batch, T)
               for i in range(config.train_steps)]

    def loss(params, batch, method, guess):
        kwargs = {} if guess is None else {"initial_guess": guess}
        _, ys, carries = recurrax.rnn(params["rnn"], batch.xs, method=method, return_carries=True, **kwargs)
        out = recurrax.dense(params["head"], ys[:, -1])
        return jnp.mean((out - batch.targets[:, -1]) ** 2), carries

    def make_step(method, warm):
        @jax.jit
        def step(params, opt_state, batch, guess):
            (value, carries), grads = jax.value_and_grad(loss, has_aux=True)(
                params, batch, method, guess if warm else None)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value, carries
        return step

    runs = {}
    parallel = f"{config.train_method} (warm start)"
    for label, method, warm in (("scan", "scan", False), (parallel, config.train_method, True)):
        step = make_step(method, warm)
        params, opt_state = params0, optimizer.init(params0)
        # The first step's guess: zeros in the carries' structure (rnn's return_carries layout).
        shapes = jax.eval_shape(lambda p, x: recurrax.rnn(p, x, return_carries=True)[2], params0["rnn"],
                                batches[0].xs)
        guess = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        start = time.perf_counter()
        _block(step.lower(params, opt_state, batches[0], guess).compile())
        compile_s = time.perf_counter() - start
        losses, start = [], time.perf_counter()
        for i, batch in enumerate(batches):
            params, opt_state, value, carries = step(params, opt_state, batch, guess)
            guess = carries
            losses.append(float(value))   # syncs each step, both runs alike
        runs[label] = {"losses": losses, "wall_s": time.perf_counter() - start, "compile_s": compile_s}
    a, b = runs["scan"]["losses"], runs[parallel]["losses"]
    return {"H": H, "T": T, "B": config.train_batch, "steps": config.train_steps, "method": config.train_method,
            "runs": runs, "max_abs_loss_difference": float(np.max(np.abs(np.subtract(a, b)))),
            "parallel_over_scan_wall": runs[parallel]["wall_s"] / runs["scan"]["wall_s"]}


# ----------------------------------------------------------------------------------------------
# Tables and figures.


def _fmt_t(t):
    return f"1e{round(math.log10(t))}" if t >= 10 and 10 ** round(math.log10(t)) == t else str(t)


def speed_table(rows: list[dict]) -> str:
    lines = ["| method (cell) | H | T | iterations | converged | fwd scan ms | fwd method ms | fwd speed-up "
             "| f+b scan ms | f+b method ms | f+b speed-up | max |Δ out| | rel |Δ grad| |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['method']} ({r['cell']}) | {r['H']} | {_fmt_t(r['T'])} | skipped: Jacobians "
                         f"{r['jacobian_bytes'] / 2**20:.0f} MiB > {r['bound_bytes'] / 2**20:.0f} MiB "
                         "| | | | | | | | | |")
            continue
        f, b = r["forward"], r["forward+backward"]
        lines.append(
            f"| {r['method']} ({r['cell']}) | {r['H']} | {_fmt_t(r['T'])} | {r['iterations']} | {r['converged']} "
            f"| {f['scan_s'] * 1e3:.2f} | {f['method_s'] * 1e3:.2f} | {f['speedup']:.2f}× "
            f"| {b['scan_s'] * 1e3:.2f} | {b['method_s'] * 1e3:.2f} | {b['speedup']:.2f}× "
            f"| {r['output_deviation']:.1e} | {r['gradient_deviation_relative']:.1e} |")
    return "\n".join(lines)


def model_table(config: Config, rows: list[dict]) -> str:
    lines = [f"Predicted forward speed-up on an accelerator (model, not measured): sequential = T·L, "
             f"parallel = passes·((2⌈log2 T⌉+4)·L + t_pass/P); L = {config.launch_latency_s * 1e6:g} µs per "
             f"dependent kernel launch, P = {config.throughput_ratio:g} (accelerator/this-CPU throughput), "
             "t_pass = measured CPU forward time / passes.",
             "",
             "| method (cell) | H | T | passes | CPU t_pass ms | sequential ms (model) | parallel ms (model) "
             "| predicted speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            continue
        p = r["predicted"]
        lines.append(f"| {r['method']} ({r['cell']}) | {r['H']} | {_fmt_t(r['T'])} | {r['passes']} "
                     f"| {r['pass_s'] * 1e3:.2f} | {p['sequential_s'] * 1e3:.2f} | {p['parallel_s'] * 1e3:.2f} "
                     f"| {p['speedup']:.1f}× |")
    return "\n".join(lines)


def training_table(result: dict) -> str:
    runs = result["runs"]
    lines = [f"Training: GRU H={result['H']} on the adding problem, T={result['T']}, B={result['B']}, "
             f"{result['steps']} Adam steps, same init and batches",
             "",
             "| run | first loss | last loss | wall s (excl. compile) | compile s |",
             "|---|---|---|---|---|"]
    for label, run in runs.items():
        lines.append(f"| {label} | {run['losses'][0]:.4f} | {run['losses'][-1]:.4f} | {run['wall_s']:.1f} "
                     f"| {run['compile_s']:.1f} |")
    lines.append("")
    lines.append(f"max |Δloss| = {result['max_abs_loss_difference']:.2e}; {result['method']} wall / scan wall = "
                 f"{result['parallel_over_scan_wall']:.2f}")
    return "\n".join(lines)


def _figures(rows: list[dict], training: dict, out_dir: pathlib.Path) -> None:
    plt = _style.pyplot()
    methods = [m for m in METHODS if any(r["method"] == m and not r.get("skipped") for r in rows)]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.8), sharey=True, squeeze=False)
    hs = sorted({r["H"] for r in rows})
    colors = dict(zip(hs, _style.COLORS))
    for ax, m in zip(axes[0], methods):
        for h in hs:
            sel = sorted((r for r in rows if r["method"] == m and r["H"] == h and not r.get("skipped")),
                         key=lambda r: r["T"])
            if not sel:
                continue
            ts = [r["T"] for r in sel]
            ax.plot(ts, [r["forward"]["speedup"] for r in sel], "o-", color=colors[h], label=f"H={h} fwd")
            ax.plot(ts, [r["forward+backward"]["speedup"] for r in sel], "s--", color=colors[h], alpha=0.7,
                    label=f"H={h} f+b")
            ax.plot(ts, [r["predicted"]["speedup"] for r in sel], ":", color=colors[h], lw=2,
                    label=f"H={h} fwd, accelerator model")
        ax.axhline(1.0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(f"{m} ({METHODS[m][0]})")
    axes[0][0].set_ylabel("speed-up over lax.scan (same cell)")
    axes[0][-1].legend(loc="best", ncol=2)
    fig.suptitle("Parallel-in-time evaluation: measured on this CPU (markers) and the crossover model of an "
                 "accelerator (dotted: 5 µs launches, assumed); B = 16, float32; < 1 = slower", fontsize=9)
    _style.save(fig, out_dir / "parallel_in_time_speedup.png")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for (label, run), style in zip(training["runs"].items(), ("-", "--")):
        ax.plot(np.arange(1, len(run["losses"]) + 1), run["losses"], style,
                label=f"{label}: {run['wall_s']:.0f} s")
    ax.set_xlabel("training step")
    ax.set_ylabel("training MSE (last step)")
    ax.set_title(f"GRU H={training['H']}, adding problem T={training['T']}")
    ax.legend()
    _style.save(fig, out_dir / "parallel_in_time_training.png")


def run(config: Config, out_dir: pathlib.Path) -> dict:
    out_dir = pathlib.Path(out_dir)
    unknown = set(config.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Expected methods among {tuple(METHODS)}, got {sorted(unknown)}.")
    started = time.perf_counter()
    rows = []
    with jax.numpy_dtype_promotion("standard"):
        for hidden, length in _grid(config):
            t0 = time.perf_counter()
            cell_rows = measure_cell(config, hidden, length)
            for r in cell_rows:
                if not r.get("skipped"):
                    r["predicted"] = predicted_speedup(config, r)
            rows += cell_rows
            summary = ", ".join(
                f"{r['method']} {r['forward']['speedup']:.2f}×/{r['forward+backward']['speedup']:.2f}×"
                + (f" ({r['iterations']} it)" if r["iterations"] else "")
                for r in cell_rows if not r.get("skipped"))
            print(f"H={hidden} T={length}: {summary} [{time.perf_counter() - t0:.0f} s]", flush=True)
        training = train(config)
    tables = "\n\n".join([
        "Speed-up over the sequential scan of the same cell, measured on this CPU "
        f"({jax.device_count()} device(s), {jax.devices()[0].platform}); B = {config.batch_size}, float32",
        speed_table(rows), model_table(config, rows), training_table(training)])
    print("\n" + tables)
    (out_dir / "results.md").write_text(tables + "\n")
    _figures(rows, training, out_dir)
    return {"rows": rows, "training": training,
            "model": {"launch_latency_s": config.launch_latency_s, "throughput_ratio": config.throughput_ratio,
                      "depth_launches": "2*ceil(log2 T) + 4", "passes": "1 (associative), iterations + 1 (Newton)"},
            "deer_bound_bytes": _deer_bound(config), "wall_s": time.perf_counter() - started}
