"""Benchmark recurrax cells against flax.linen in one process: forward and forward+backward.

For each cell family and shape (B, T, D, H) every implementation is compiled (compile time
reported on its own), warmed up, then timed ``repeats`` times *interleaved* across
implementations (round-robin, so drift in machine speed hits all of them alike). Reported per
row: median / min / max milliseconds, achieved GFLOP/s, the fraction of this machine's float32
GEMM rate measured in the same run, and recurrax / anchor ratios (< 1: recurrax is faster).

FLOPs count the matrix products only: forward 2·B·T·(D+H)·G·H with G gates (4 LSTM, 3 GRU);
forward+backward is counted as 3× forward. The loss for the backward pass is the sum of all
outputs; gradients are taken with respect to the parameters.
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

SHAPES = ((32, 256, 64, 256), (16, 1000, 32, 64), (64, 128, 256, 1024))
GATES = {"lstm": 4, "gru": 3}


@dataclasses.dataclass(frozen=True)
class Config:
    shapes: tuple = SHAPES  # (B, T, D, H) each
    cells: tuple = ("lstm", "gru")
    repeats: int = 7
    gemm_size: int = 2048


QUICK = Config(shapes=((4, 16, 8, 16),), repeats=2, gemm_size=256)


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
    for _ in range(repeats):
        for job in jobs:
            start = time.perf_counter()
            _block(job["fn"](job["params"], xs))
            job["times"].append(time.perf_counter() - start)
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
    print("\n" + table + "\n\n" + summary)
    (out_dir / "results.md").write_text(f"machine: {machine}; GEMM {gemm:.1f} GFLOP/s\n\n{table}\n\n{summary}\n")
    return {"machine": machine, "gemm_gflops": gemm, "rows": rows, "worst_ratio": worst}
