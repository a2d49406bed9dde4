"""Parallel forms of the modern recurrences against their own sequential scan, on this CPU.

For each cell with a parallel form, ``recurrax.rnn(params, xs)`` (the sequential ``lax.scan``,
the default) against ``recurrax.rnn(params, xs, method="associative")`` (a parallel scan over
``linear_recurrence``, O(log T) depth), the same scan within chunks of ``scan_chunk_size`` steps
and a sequential scan across them (``method=recurrax.parallel.associative(chunk_size=L)``:
``"chunked_associative"``) and, for the mLSTM, ``mlstm.chunkwise`` (matrix products
within chunks of L steps, a scan over the T / L chunks), forward and forward+backward (the
gradient of ``mean(ys²)`` with respect to the parameters), at B = 8, H = 256, float32:

- ``rglru``: the RG-LRU (De et al. 2024), one head;
- ``selective_ssm``: Mamba's selective SSM (Gu & Dao 2023), N = 16 states per channel;
- ``mlstm``: the mLSTM (Beck et al. 2024), 4 heads of 64 (a 64 × 64 matrix memory per head).

Every method is compiled first (the compile time is reported, not timed), then each parallel
form is timed interleaved with the sequential scan, one mode at a time, ``repeats`` rounds,
medians reported (the speed-up is the ratio within that pair); the outputs and gradients of each method are
checked against the sequential scan's in the same run. A call whose compiled memory (XLA's
``memory_analysis``: arguments, outputs and temporaries) exceeds ``max_bytes`` is not run, and
the table says so with its size: the mLSTM's associative scan at T = 4096 materialises a
``(T, B, heads, d, d)`` state for every level of the scan. The crossover is the smallest T of the
grid at which a parallel form is at least as fast as the sequential scan.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

import recurrax
from experiments import _style
from experiments._measure import executable_memory, max_abs, max_deviation, timed_interleaved

# cell -> (init options, methods): "scan", "associative" and "chunked_associative" through recurrax.rnn,
# "chunkwise" mlstm.chunkwise
CELLS = {
    "rglru": ({"num_heads": 1}, ("scan", "associative", "chunked_associative")),
    "selective_ssm": ({"state_size": 16}, ("scan", "associative", "chunked_associative")),
    "mlstm": ({"num_heads": 4}, ("scan", "associative", "chunked_associative", "chunkwise")),
}
MODES = ("forward", "forward+backward")


@dataclasses.dataclass(frozen=True)
class Config:
    batch_size: int = 8
    hidden_size: int = 256
    lengths: tuple = (256, 1024, 4096)
    cells: tuple = tuple(CELLS)
    chunk_size: int = 64  # the mLSTM's chunkwise form
    scan_chunk_size: int = 16  # the chunked associative scan
    repeats: int = 5
    breakdown_length: int = 1024  # where the selective SSM's associative form spends its time (0: skip)
    max_bytes: int = 16 * 2**30  # a call whose compiled memory exceeds this is not run (24 GiB here)
    seed: int = 0


QUICK = Config(batch_size=2, hidden_size=8, lengths=(16, 32), repeats=2, chunk_size=8, scan_chunk_size=5,
               breakdown_length=16)


def _run_fn(method: str, config: Config):
    if method == "chunkwise":
        return lambda p, x: recurrax.mlstm.chunkwise(p.cell, x, chunk_size=config.chunk_size)[1]
    if method == "chunked_associative":
        chunked = recurrax.parallel.associative(chunk_size=config.scan_chunk_size)
        return lambda p, x: recurrax.rnn(p, x, method=chunked)[1]
    return lambda p, x: recurrax.rnn(p, x, method=method)[1]


def measure(config: Config, name: str, length: int) -> list[dict]:
    """Every method of one cell at one T: compile, check against the scan, time interleaved."""
    options, methods = CELLS[name]
    key = jax.random.fold_in(jax.random.key(config.seed), length)
    k_p, k_x = jax.random.split(key)
    params = recurrax.init_rnn(k_p, name, config.hidden_size, config.hidden_size, **options)
    xs = jax.random.normal(k_x, (config.batch_size, length, config.hidden_size), jnp.float32)
    jobs, compile_s, results, memory, skipped = [], {}, {}, {}, {}
    for method in methods:
        run = _run_fn(method, config)
        fns = {"forward": run, "forward+backward": jax.grad(lambda p, x, run=run: jnp.mean(run(p, x) ** 2))}
        for mode, fn in fns.items():
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(params, xs).compile()
            memory[(method, mode)] = executable_memory(compiled)
            if memory[(method, mode)] > config.max_bytes:  # would not fit, or would swap: not timed
                skipped[method] = memory[(method, mode)]
                continue
            results[(method, mode)] = jax.block_until_ready(compiled(params, xs))
            compile_s[(method, mode)] = time.perf_counter() - start
            jobs.append({"method": method, "mode": mode, "fn": (lambda c=compiled: c(params, xs)), "times": []})
    if "scan" in skipped:
        raise ValueError(f"The sequential scan of {name} at T = {length} needs {skipped['scan']} bytes, over "
                         f"max_bytes = {config.max_bytes}: nothing to compare the parallel forms with.")
    # Each parallel form is timed interleaved with the scan alone, one mode at a time: a call that
    # allocates gigabytes (a gradient, an associative scan) slows whichever call runs next, as
    # its memory is mapped again (measured: the mLSTM's chunkwise forward at T = 1024 took 84 ms
    # alone, 303 ms interleaved with the scan's gradient). Each ratio is within its own pair.
    median = {}
    for method in methods[1:]:
        if method in skipped:
            continue
        for mode in MODES:
            pair = [dict(j, times=[]) for j in jobs if j["mode"] == mode and j["method"] in ("scan", method)]
            timed_interleaved(pair, config.repeats)
            median.update({(method, mode, j["method"]): statistics.median(j["times"]) for j in pair})
    if not median:  # every parallel form was over max_bytes: the scan alone
        scan = [j for j in jobs if j["method"] == "scan"]
        timed_interleaved(scan, config.repeats)
        median.update({("scan", j["mode"], "scan"): statistics.median(j["times"]) for j in scan})
    rows = []
    for method in methods:
        row = {"cell": name, "method": method, "T": length, "B": config.batch_size,
               "H": config.hidden_size, "repeats": config.repeats}
        if method in skipped:
            rows.append({**row, "skipped": True, "bytes": skipped[method], "max_bytes": config.max_bytes})
            continue
        for mode in MODES:
            if method == "scan":  # the median over the pairs of the scan's medians
                seconds = statistics.median(v for (_, m, who), v in median.items() if m == mode and who == "scan")
                speedup = 1.0
            else:
                seconds = median[(method, mode, method)]
                speedup = median[(method, mode, "scan")] / seconds
            row[mode] = {"seconds": seconds, "compile_s": compile_s[(method, mode)],
                         "bytes": memory[(method, mode)], "speedup_over_scan": speedup}
        row["output_deviation"] = max_deviation(results[(method, "forward")], results[("scan", "forward")])
        ref = results[("scan", "forward+backward")]
        row["gradient_deviation_relative"] = (max_deviation(results[(method, "forward+backward")], ref)
                                              / max(max_abs(ref), 1e-30))
        rows.append(row)
    return rows


def ssm_breakdown(config: Config) -> dict:
    """The selective SSM's associative form in parts, at T = ``breakdown_length``: forming
    ``a = exp(Δ ⊗ A)`` and ``b`` for every step (``linear_recurrence``), the associative scan of
    given ``a`` and ``b`` (``recurrax.parallel.linear_scan``), the whole form, and the sequential
    scan; forward, medians of ``repeats`` interleaved calls, in seconds."""
    options, _ = CELLS["selective_ssm"]
    k_p, k_x = jax.random.split(jax.random.key(config.seed))
    params = recurrax.init_rnn(k_p, "selective_ssm", config.hidden_size, config.hidden_size, **options)
    xs = jax.random.normal(k_x, (config.batch_size, config.breakdown_length, config.hidden_size), jnp.float32)
    coefficients = jax.jit(lambda p, x: recurrax.selective_ssm.linear_recurrence(p.cell, jnp.swapaxes(x, 0, 1)))
    a, b = coefficients(params, xs)
    h0 = jnp.zeros(a.state.shape[1:], a.state.dtype)
    scan_given = jax.jit(lambda a, b: recurrax.parallel.linear_scan(a, b, h0))
    whole = {m: jax.jit(lambda p, x, m=m: recurrax.rnn(p, x, method=m)[1]) for m in ("associative", "scan")}
    jobs = [{"name": "form a and b", "fn": lambda: coefficients(params, xs), "times": []},
            {"name": "associative scan of a and b", "fn": lambda: scan_given(a.state, b.state), "times": []},
            {"name": "whole associative form", "fn": lambda: whole["associative"](params, xs), "times": []},
            {"name": "sequential scan", "fn": lambda: whole["scan"](params, xs), "times": []}]
    for job in jobs:
        jax.block_until_ready(job["fn"]())  # compile
    timed_interleaved(jobs, config.repeats)
    return {"T": config.breakdown_length, "bytes_of_a_and_b": int(a.state.nbytes + b.state.nbytes),
            "seconds": {j["name"]: statistics.median(j["times"]) for j in jobs}}


def crossovers(rows: list[dict]) -> dict:
    """``{(cell, method, mode): smallest T with speed-up ≥ 1, or None}`` over the measured grid."""
    out = {}
    for r in sorted(rows, key=lambda r: r["T"]):
        if r["method"] == "scan" or r.get("skipped"):
            continue
        for mode in MODES:
            k = f"{r['cell']}/{r['method']}/{mode}"
            if out.get(k) is None and r[mode]["speedup_over_scan"] >= 1.0:
                out[k] = r["T"]
            out.setdefault(k, None)
    return out


def table(config: Config, rows: list[dict]) -> str:
    lines = [f"B = {config.batch_size}, H = {config.hidden_size}, float32, {config.repeats} interleaved "
             f"repeats (median), chunkwise chunks of {config.chunk_size}, chunked associative chunks of "
             f"{config.scan_chunk_size}; speed-up = scan time / method time.", "",
             "| cell | method | T | forward | speed-up | fwd+bwd | speed-up | max output dev. | max grad dev. (rel.) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['cell']} | {r['method']} | {r['T']} | not run: XLA's compiled memory "
                         f"{r['bytes'] / 2**30:.1f} GiB > {r['max_bytes'] / 2**30:.0f} GiB | | | | | |")
            continue
        f, b = r["forward"], r["forward+backward"]
        lines.append(f"| {r['cell']} | {r['method']} | {r['T']} | {f['seconds'] * 1e3:.1f} ms | "
                     f"{f['speedup_over_scan']:.2f}× | {b['seconds'] * 1e3:.1f} ms | {b['speedup_over_scan']:.2f}× | "
                     f"{r['output_deviation']:.1e} | {r['gradient_deviation_relative']:.1e} |")
    return "\n".join(lines)


def _figure(config: Config, rows: list[dict], out_dir: pathlib.Path) -> None:
    plt = _style.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, mode in zip(axes, MODES):
        for name in config.cells:
            for method in CELLS[name][1][1:]:
                pts = sorted((r["T"], r[mode]["speedup_over_scan"]) for r in rows
                             if r["cell"] == name and r["method"] == method and not r.get("skipped"))
                if pts:  # none where every T was over max_bytes
                    ax.plot(*zip(*pts), marker="o", label=f"{name} {method}")
        ax.axhline(1.0, color="0.5", lw=1, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (steps)")
        ax.set_title(mode)
    axes[0].set_ylabel("speed-up over the sequential scan")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"Parallel forms on this CPU (B = {config.batch_size}, H = {config.hidden_size})")
    _style.save(fig, out_dir / "modern_speed.png")


def run(config: Config, out_dir: pathlib.Path) -> dict:
    out_dir = pathlib.Path(out_dir)
    unknown = set(config.cells) - set(CELLS)
    if unknown:
        raise ValueError(f"Expected cells among {tuple(CELLS)}, got {sorted(unknown)}.")
    started = time.perf_counter()
    rows = []
    for name in config.cells:
        for length in config.lengths:
            t0 = time.perf_counter()
            cell_rows = measure(config, name, length)
            rows += cell_rows
            print(f"{name} T={length}: " + ", ".join(
                f"{r['method']} {r['forward']['speedup_over_scan']:.2f}×/{r['forward+backward']['speedup_over_scan']:.2f}×"
                if not r.get("skipped") else f"{r['method']} not run ({r['bytes'] / 2**30:.1f} GiB)"
                for r in cell_rows if r["method"] != "scan") + f" [{time.perf_counter() - t0:.0f} s]", flush=True)
    cross = crossovers(rows)
    breakdown = ssm_breakdown(config) if config.breakdown_length and "selective_ssm" in config.cells else None
    text = table(config, rows) + "\n\nCrossover (smallest T of the grid where the parallel form is at least as fast):\n\n" + \
        "\n".join(f"- {k}: {'T = ' + str(v) if v else 'not within the grid'}" for k, v in cross.items())
    if breakdown:
        text += (f"\n\nThe selective SSM's associative form in parts, forward, T = {breakdown['T']} "
                 f"(a and b: {breakdown['bytes_of_a_and_b'] / 2**20:.0f} MiB together):\n\n" +
                 "\n".join(f"- {k}: {v * 1e3:.1f} ms" for k, v in breakdown["seconds"].items()))
    print("\n" + text)
    (out_dir / "results.md").write_text(text + "\n")
    _figure(config, rows, out_dir)
    result = {"rows": rows, "crossover": cross, "ssm_breakdown": breakdown, "devices": f"{jax.device_count()} {jax.devices()[0].platform}",
              "wall_s": time.perf_counter() - started}
    json.dumps(result)  # fail here, not in the writer, on anything not JSON
    return result
