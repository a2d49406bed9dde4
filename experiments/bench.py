"""Benchmark recurrax cells against flax.linen in one process: forward and forward+backward.

For each cell family and shape (B, T, D, H) every implementation is compiled (compile time
reported on its own), warmed up, then timed ``repeats`` times *interleaved* across
implementations (round-robin, so drift in machine speed hits all of them alike). Reported per
row: median / min / max milliseconds, achieved GFLOP/s, the fraction of this machine's float32
GEMM rate measured in the same run, and recurrax / anchor ratios (< 1: recurrax is faster).

FLOPs count the matrix products only: forward 2·B·T·(D+H)·G·H with G gates (4 LSTM, 3 GRU);
forward+backward is counted as 3× forward. The loss for the backward pass is the sum of all
outputs; gradients are taken with respect to the parameters.

Memory-bounded BPTT (``remat_shape``, an LSTM layer): the same gradient by plain autodiff
through the scan, the fused backward pass (``rnn``'s default), rematerialising every step, and
checkpointing √T segments. Per policy: jax's saved residuals (the arrays the VJP keeps for the
backward pass), the compiled temporary memory of the whole gradient evaluation, the median
time, and each as a ratio to plain autodiff. Target (TARGETS.md): √T keeps ≤ 10% of plain
BPTT's residuals at T=1000 for ≤ 1.5× the time.
"""

from __future__ import annotations

import dataclasses
import pathlib
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

import recurrax
from experiments._measure import compiled_temp_bytes, saved_residual_bytes

SHAPES = ((32, 256, 64, 256), (16, 1000, 32, 64), (64, 128, 256, 1024))
GATES = {"lstm": 4, "gru": 3}


@dataclasses.dataclass(frozen=True)
class Config:
    shapes: tuple = SHAPES  # (B, T, D, H) each
    cells: tuple = ("lstm", "gru")
    repeats: int = 7
    gemm_size: int = 2048
    remat_shape: tuple = (16, 1000, 32, 128)  # (B, T, D, H) of the memory-bounded BPTT rows


QUICK = Config(shapes=((4, 16, 8, 16),), repeats=2, gemm_size=256, remat_shape=(2, 16, 4, 8))


def _block(tree):
    return jax.block_until_ready(tree)


def _compile_seconds(fn: Callable, *args) -> float:
    start = time.perf_counter()
    _block(fn(*args))
    return time.perf_counter() - start


def measure_gemm_gflops(n: int, repeats: int = 5) -> float:
    """Achieved float32 GFLOP/s of one jitted n×n×n matrix product (the machine's ceiling)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    _block(matmul(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def _recurrax_fns(family: str, batch: int, time_steps: int, features: int, hidden: int):
    params = recurrax.init_rnn(jax.random.key(0), family, features, hidden)

    def forward(params, xs):
        return recurrax.rnn(params, xs)[1]

    return params, forward


def _flax_fns(cell_name: str, batch: int, time_steps: int, features: int, hidden: int):
    import flax.linen as nn

    model = nn.RNN(getattr(nn, cell_name)(hidden))
    xs = jnp.zeros((batch, time_steps, features), jnp.float32)
    params = model.init(jax.random.key(0), xs)
    return params, model.apply


def implementations(family: str) -> dict:
    """name -> factory(B, T, D, H) returning (params, forward(params, xs))."""
    impls = {"recurrax": lambda *shape: _recurrax_fns(family, *shape)}
    anchors = {"lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",)}[family]
    for cell_name in anchors:
        impls[f"flax.linen {cell_name}"] = lambda *shape, c=cell_name: _flax_fns(c, *shape)
    return impls


def _timed_interleaved(jobs: list[dict], args_of, repeats: int) -> None:
    """Append ``repeats`` wall times to each job's ``times``, round-robin across jobs."""
    for _ in range(repeats):
        for job in jobs:
            start = time.perf_counter()
            _block(job["fn"](*args_of(job)))
            job["times"].append(time.perf_counter() - start)


REMAT_POLICIES = {
    "plain autodiff": {"fused_backward": False},
    "fused backward": {"fused_backward": True},
    "remat every step": {"remat": True},
    "remat sqrt(T) segments": {"remat": "sqrt"},
}


def bench_remat(shape: tuple, repeats: int) -> list[dict]:
    """Residual memory, compiled memory and time of one LSTM layer's gradient per remat policy."""
    batch, time_steps, features, hidden = shape
    params = recurrax.init_rnn(jax.random.key(0), "lstm", features, hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
    jobs = []
    for name, options in REMAT_POLICIES.items():
        def loss(params, xs, options=options):
            return recurrax.rnn(params, xs, **options)[1].sum()

        grad = jax.jit(jax.grad(loss))
        compile_s = _compile_seconds(grad, params, xs)
        _block(grad(params, xs))
        jobs.append({"policy": name, "fn": grad, "compile_s": compile_s, "times": [],
                     "residual_bytes": saved_residual_bytes(loss, params, xs),
                     "temp_bytes": compiled_temp_bytes(jax.grad(loss), params, xs)})
    _timed_interleaved(jobs, lambda job: (params, xs), repeats)
    plain = jobs[0]
    rows = []
    for job in jobs:
        median = 1e3 * statistics.median(job["times"])
        rows.append({
            "shape": list(shape), "policy": job["policy"], "median_ms": median,
            "compile_s": job["compile_s"], "residual_bytes": job["residual_bytes"], "temp_bytes": job["temp_bytes"],
            "residual_ratio": job["residual_bytes"] / plain["residual_bytes"],
            "temp_ratio": job["temp_bytes"] / plain["temp_bytes"],
            "time_ratio": median / (1e3 * statistics.median(plain["times"])),
        })
    return rows


def _remat_table(rows: list[dict]) -> str:
    lines = [
        "| LSTM B, T, D, H | policy | saved residuals MiB | / plain | compiled temp MiB | / plain | median ms | / plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {', '.join(map(str, row['shape']))} | {row['policy']} | {row['residual_bytes'] / 2**20:.2f} "
            f"| {row['residual_ratio']:.3f} | {row['temp_bytes'] / 2**20:.2f} | {row['temp_ratio']:.3f} "
            f"| {row['median_ms']:.1f} | {row['time_ratio']:.2f} |"
        )
    return "\n".join(lines)


def bench_shape(family: str, shape: tuple, repeats: int) -> list[dict]:
    batch, time_steps, features, hidden = shape
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
    jobs = []
    for name, factory in implementations(family).items():
        params, forward = factory(batch, time_steps, features, hidden)
        fwd = jax.jit(forward)
        grad = jax.jit(jax.grad(lambda p, x, f=forward: f(p, x).sum()))
        for mode, fn in (("forward", fwd), ("forward+backward", grad)):
            compile_s = _compile_seconds(fn, params, xs)
            _block(fn(params, xs))  # warm-up after compilation
            jobs.append({"impl": name, "mode": mode, "fn": fn, "params": params,
                         "compile_s": compile_s, "times": []})
    _timed_interleaved(jobs, lambda job: (job["params"], xs), repeats)
    flops_fwd = 2 * batch * time_steps * (features + hidden) * GATES[family] * hidden
    rows = []
    for job in jobs:
        ms = [1e3 * t for t in job["times"]]
        flops = flops_fwd * (3 if job["mode"] == "forward+backward" else 1)
        median = statistics.median(ms)
        rows.append({
            "cell": family, "shape": list(shape), "impl": job["impl"], "mode": job["mode"],
            "median_ms": median, "min_ms": min(ms), "max_ms": max(ms),
            "compile_s": job["compile_s"], "gflops": flops / (median / 1e3) / 1e9,
        })
    return rows


def _table(rows: list[dict], gemm: float) -> str:
    lines = [
        "| cell | B, T, D, H | mode | impl | median ms | min–max ms | GFLOP/s | % GEMM | compile s | recurrax / impl |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cell']} | {', '.join(map(str, row['shape']))} | {row['mode']} | {row['impl']} "
            f"| {row['median_ms']:.1f} | {row['min_ms']:.1f}–{row['max_ms']:.1f} | {row['gflops']:.1f} "
            f"| {100 * row['gflops'] / gemm:.0f}% | {row['compile_s']:.2f} | {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    gemm = measure_gemm_gflops(config.gemm_size)
    machine = f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}"
    print(f"machine: {machine}; float32 GEMM {config.gemm_size}^3: {gemm:.1f} GFLOP/s")
    rows = []
    for family in config.cells:
        if family not in GATES:
            raise ValueError(f"Expected cells among {sorted(GATES)}, got {family!r}.")
        for shape in config.shapes:
            if len(shape) != 4:
                raise ValueError(f"Expected shapes as (B, T, D, H), got {shape!r}.")
            shape_rows = bench_shape(family, tuple(shape), config.repeats)
            for row in shape_rows:
                ours = next(r for r in shape_rows if r["impl"] == "recurrax" and r["mode"] == row["mode"])
                row["ratio"] = ours["median_ms"] / row["median_ms"]
            rows.extend(shape_rows)
            print(_table(shape_rows, gemm).split("\n", 2)[2], flush=True)
    table = _table(rows, gemm)
    worst = max((r["ratio"] for r in rows if r["impl"] != "recurrax"), default=float("nan"))
    summary = f"worst recurrax/anchor ratio: {worst:.2f}"
    if len(config.remat_shape) != 4:
        raise ValueError(f"Expected remat_shape as (B, T, D, H), got {config.remat_shape!r}.")
    remat_rows = bench_remat(tuple(config.remat_shape), config.repeats)
    remat_table = _remat_table(remat_rows)
    print("\n" + table + "\n\n" + summary + "\n\nMemory-bounded BPTT:\n" + remat_table)
    (out_dir / "results.md").write_text(
        f"machine: {machine}; GEMM {gemm:.1f} GFLOP/s\n\n{table}\n\n{summary}\n\n"
        f"Memory-bounded BPTT:\n\n{remat_table}\n"
    )
    return {"machine": machine, "gemm_gflops": gemm, "rows": rows, "worst_ratio": worst, "remat": remat_rows}
