"""Where an LSTM layer's time goes on XLA:CPU, and the levers tried against PyTorch's CPU path.

One process, every variant timed interleaved (round-robin, ``repeats`` medians with min–max),
each checked against ``recurrax.rnn`` (largest absolute difference printed) before it is timed:

1. **The step's matrix product alone**: ``[x, h] @ [w_x; w_h]`` (``B × (D+H) × 4H``, what
   ``recurrax.rnn`` runs per step), ``h @ w_h`` (``B × H × 4H``, what PyTorch runs per step
   after projecting all inputs at once) and a ``gemm_size``³ product: XLA (50 products in one compiled
   loop, so no dispatch is timed) against ``torch.mm``.
2. **The forward pass, per step** at ``shapes`` (B, T, D, H): ``recurrax.rnn``; the same fused
   scan written out (``[x, h] @ W``); PyTorch's scheme (the input projection of the whole
   sequence in one product before the loop, ``h @ w_h`` in it); one product per gate; the
   gates through one ``tanh`` (σ(z) = (1 + tanh(z/2))/2: one transcendental pass over 4H);
   and two diagnostics that compute something else: the product with no gates, and the gates
   with ``clip`` in place of σ and tanh (the cost of the transcendentals);
   ``torch.nn.LSTM`` under ``no_grad``.
3. **``unroll=``** of ``recurrax.rnn`` (1, 2, 4, 8), forward and forward+backward, at
   ``unroll_shape``.
4. **Both directions of a bidirectional layer in one scan** (``vmap`` over the two layers, the
   backward one over time-flipped inputs, which is exactly a reverse scan) against
   ``recurrax.bidirectional`` (two scans), forward and forward+backward, at
   ``bidirectional_shapes``.

Nothing here changes recurrax; the study is the evidence behind what it does and does not do
(see docs/guides/performance.md).
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import recurrax
from experiments._measure import timed_interleaved


@dataclasses.dataclass(frozen=True)
class Config:
    shapes: tuple = ((32, 256, 64, 256), (16, 1000, 32, 64), (64, 128, 256, 1024))  # (B, T, D, H)
    unroll_shape: tuple = (16, 1000, 32, 64)
    bidirectional_shapes: tuple = ((16, 1000, 32, 64), (32, 256, 64, 256))
    repeats: int = 15
    gemm_repeats: int = 20
    gemm_size: int = 2048  # also an N × N × N product, near the machine's peak
    torch: bool = True  # time PyTorch when it is installed


QUICK = Config(shapes=((2, 6, 3, 8),), unroll_shape=(2, 6, 3, 8), bidirectional_shapes=((2, 6, 3, 8),),
               repeats=2, gemm_repeats=2, gemm_size=64, torch=False)


def _torch(config: Config):
    if not config.torch:
        return None
    try:
        import torch
    except ImportError:
        print("note: torch is not importable; its rows are skipped (pip install -e '.[bench]').")
        return None
    return torch


def _interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict]:
    """Median / min / max milliseconds of each call, round-robin after one warm-up call each."""
    jobs = [{"fn": call, "times": []} for call in calls.values()]
    for job in jobs:
        job["fn"]()
    timed_interleaved(jobs, repeats)
    return {name: {"median_ms": 1e3 * statistics.median(job["times"]), "min_ms": 1e3 * min(job["times"]),
                   "max_ms": 1e3 * max(job["times"])} for name, job in zip(calls, jobs)}


def _blocked(fn, *args):
    return lambda: jax.block_until_ready(fn(*args))


# --------------------------------------------------------------------------- 1. the product


def gemm(config: Config, torch) -> list[dict]:
    """µs per product at the forward step's shapes and at 2048³, XLA against torch.mm."""
    rows, loops = [], 50
    batch, _, features, hidden = config.shapes[0]
    square = (config.gemm_size,) * 3
    for m, k, n in ((batch, features + hidden, 4 * hidden), (batch, hidden, 4 * hidden), square):
        a = np.asarray(jax.random.normal(jax.random.key(0), (m, k)))
        b = np.asarray(jax.random.normal(jax.random.key(1), (k, n)))

        @jax.jit
        def products(a, b):  # ``loops`` products in one program; the tiny shift defeats CSE
            return jax.lax.fori_loop(0, loops, lambda i, acc: acc + (a + i * 1e-9) @ b, jnp.zeros((m, n), a.dtype))

        calls = {"XLA": _blocked(products, jnp.asarray(a), jnp.asarray(b))}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            calls["torch"] = lambda: [torch.mm(ta, tb) for _ in range(loops)]
        timed = _interleaved(calls, config.gemm_repeats if (m, k, n) != square else max(2, config.gemm_repeats // 4))
        row = {"m": m, "k": k, "n": n}
        for name, t in timed.items():
            row[f"{name}_us"] = t["median_ms"] * 1e3 / loops
            row[f"{name}_gflops"] = 2 * m * k * n / (row[f"{name}_us"] * 1e3)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- 2. forward variants


def _lstm_scan(kind: str):
    """An LSTM forward pass ``(params, xs (B, T, D)) -> hs (B, T, H)`` written out, per variant."""

    def forward(params, xs):
        cell = params.cell
        hidden = cell.w_h.shape[0]
        xs_t = jnp.swapaxes(xs, 0, 1)
        if kind in ("input projection first", "one product per gate"):
            xs_t = xs_t @ cell.w_x + cell.b[None, None]  # (T, B, 4H), one product for the whole sequence
        w = jnp.concatenate([cell.w_x, cell.w_h], axis=0)
        scale = jnp.repeat(jnp.array([0.5, 0.5, 1.0, 0.5], xs.dtype), hidden)
        sigmoid = (lambda v: jnp.clip(v, 0, 1)) if kind == "gates with clip (diagnostic)" else jax.nn.sigmoid
        tanh = (lambda v: jnp.clip(v, -1, 1)) if kind == "gates with clip (diagnostic)" else jnp.tanh

        def body(carry, x):
            h, c = carry
            if kind == "input projection first":
                z = x + h @ cell.w_h
            elif kind == "one product per gate":
                z = jnp.concatenate([x_g + h @ w_g for x_g, w_g in
                                     zip(jnp.split(x, 4, -1), jnp.split(cell.w_h, 4, -1))], -1)
            else:
                z = jnp.concatenate([x, h], -1) @ w + cell.b[None]
            if kind == "product only (diagnostic)":
                return (z[:, :hidden], c), z[:, :hidden]
            if kind == "gates through one tanh":
                i, f, g, o = jnp.split(jnp.tanh(z * scale[None]), 4, -1)
                i, f, o = 0.5 * i + 0.5, 0.5 * f + 0.5, 0.5 * o + 0.5
            else:
                i, f, g, o = jnp.split(z, 4, -1)
                i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
            c = f * c + i * g
            h = o * tanh(c)
            return (h, c), h

        zeros = jnp.zeros(xs.shape[:1] + (hidden,), xs.dtype)
        return jnp.swapaxes(jax.lax.scan(body, (zeros, zeros), xs_t)[1], 0, 1)

    return forward


VARIANTS = ("fused [x, h] @ W (written out)", "input projection first", "one product per gate",
            "gates through one tanh", "product only (diagnostic)", "gates with clip (diagnostic)")


def forward_variants(config: Config, torch) -> list[dict]:
    rows = []
    for shape in config.shapes:
        batch, steps, features, hidden = shape
        params = recurrax.init_rnn(jax.random.key(0), "lstm", features, hidden)
        params = params._replace(cell=params.cell._replace(b=params.cell.b + 0.1))  # a bias that matters
        xs = jax.random.normal(jax.random.key(1), (batch, steps, features))
        reference = jax.jit(lambda p, x: recurrax.rnn(p, x)[1])
        want = reference(params, xs)
        calls, deviations = {"recurrax.rnn": _blocked(reference, params, xs)}, {"recurrax.rnn": 0.0}
        for kind in VARIANTS:
            fn = jax.jit(_lstm_scan(kind))
            if "diagnostic" not in kind:
                deviations[kind] = float(jnp.abs(fn(params, xs) - want).max())
            calls[kind] = _blocked(fn, params, xs)
        if torch is not None:
            layer = torch.nn.LSTM(features, hidden, batch_first=True)
            inputs = torch.from_numpy(np.asarray(xs))

            def torch_forward(layer=layer, inputs=inputs):
                with torch.no_grad():
                    return layer(inputs)

            calls["torch.nn.LSTM (no_grad)"] = torch_forward
        for name, t in _interleaved(calls, config.repeats).items():
            rows.append({"shape": list(shape), "variant": name, **t, "us_per_step": t["median_ms"] * 1e3 / steps,
                         "max_abs_deviation": deviations.get(name)})
    return rows


# --------------------------------------------------------------------------- 3. unroll


def unroll_factors(config: Config) -> list[dict]:
    batch, steps, features, hidden = config.unroll_shape
    params = recurrax.init_rnn(jax.random.key(0), "lstm", features, hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, features))
    calls, want = {}, None
    for factor in (1, 2, 4, 8):
        forward = jax.jit(lambda p, x, u=factor: recurrax.rnn(p, x, unroll=u)[1])
        grad = jax.jit(jax.grad(lambda p, x, u=factor: recurrax.rnn(p, x, unroll=u)[1].sum()))
        got = (forward(params, xs), grad(params, xs))
        want = got if want is None else want
        deviation = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
        calls[(factor, "forward", deviation)] = _blocked(forward, params, xs)
        calls[(factor, "forward+backward", deviation)] = _blocked(grad, params, xs)
    timed = _interleaved(calls, config.repeats)
    return [{"unroll": factor, "mode": mode, "max_abs_deviation": deviation, **t}
            for (factor, mode, deviation), t in timed.items()]


# --------------------------------------------------------------------------- 4. directions


def _directions_in_one_scan(params, xs):
    """``recurrax.bidirectional``'s concat outputs from one ``vmap``-ed forward scan."""
    layers = jax.tree.map(lambda a, b: jnp.stack([a, b]), params.forward, params.backward)
    ys = jax.vmap(lambda layer, x: recurrax.rnn(layer, x)[1])(layers, jnp.stack([xs, jnp.flip(xs, -2)]))
    return jnp.concatenate([ys[0], jnp.flip(ys[1], -2)], -1)


def directions(config: Config) -> list[dict]:
    rows = []
    for shape in config.bidirectional_shapes:
        batch, steps, features, hidden = shape
        params = recurrax.init_bidirectional(jax.random.key(0), "lstm", features, hidden)
        xs = jax.random.normal(jax.random.key(1), (batch, steps, features))
        impls = {"two scans (recurrax.bidirectional)": lambda p, x: recurrax.bidirectional(p, x)[1],
                 "one vmap-ed scan": _directions_in_one_scan}
        calls, results = {}, {}
        for name, fn in impls.items():
            forward = jax.jit(fn)
            grad = jax.jit(jax.grad(lambda p, x, fn=fn: (fn(p, x) ** 2).sum()))
            results[name] = (forward(params, xs), grad(params, xs))
            calls[(name, "forward")] = _blocked(forward, params, xs)
            calls[(name, "forward+backward")] = _blocked(grad, params, xs)
        deviation = max(float(jnp.abs(a - b).max()) for a, b in zip(*(jax.tree.leaves(r) for r in results.values())))
        for (name, mode), t in _interleaved(calls, config.repeats).items():
            rows.append({"shape": list(shape), "impl": name, "mode": mode, "max_abs_deviation": deviation, **t})
    return rows


# --------------------------------------------------------------------------- report


def _table(results: dict) -> str:
    lines = ["Matrix products (µs each; GFLOP/s):", "", "| M × K × N | XLA | torch.mm | XLA / torch |", "|---|---|---|---|"]
    for r in results["gemm"]:
        torch_cell = f"{r['torch_us']:.1f} ({r['torch_gflops']:.0f})" if "torch_us" in r else "n/a"
        ratio = f"{r['XLA_us'] / r['torch_us']:.2f}" if "torch_us" in r else "n/a"
        lines.append(f"| {r['m']} × {r['k']} × {r['n']} | {r['XLA_us']:.1f} ({r['XLA_gflops']:.0f}) | {torch_cell} | {ratio} |")
    lines += ["", "LSTM forward (ms, median [min, max]; µs per step; / recurrax.rnn; largest |difference| from it):", "",
              "| B, T, D, H | variant | ms | µs/step | / recurrax.rnn | max abs deviation |", "|---|---|---|---|---|---|"]
    for r in results["forward"]:
        base = next(b for b in results["forward"] if b["shape"] == r["shape"] and b["variant"] == "recurrax.rnn")
        deviation = "–" if r["max_abs_deviation"] is None else f"{r['max_abs_deviation']:.1e}"
        lines.append(f"| {', '.join(map(str, r['shape']))} | {r['variant']} | {r['median_ms']:.1f} "
                     f"[{r['min_ms']:.1f}, {r['max_ms']:.1f}] | {r['us_per_step']:.0f} | "
                     f"{r['median_ms'] / base['median_ms']:.2f} | {deviation} |")
    lines += ["", "unroll= of recurrax.rnn (ms; / unroll=1):", "", "| unroll | mode | ms | / unroll=1 |", "|---|---|---|---|"]
    for r in results["unroll"]:
        base = next(b for b in results["unroll"] if b["unroll"] == 1 and b["mode"] == r["mode"])
        lines.append(f"| {r['unroll']} | {r['mode']} | {r['median_ms']:.1f} [{r['min_ms']:.1f}, {r['max_ms']:.1f}] | "
                     f"{r['median_ms'] / base['median_ms']:.2f} |")
    lines += ["", "Bidirectional LSTM layer (ms; / two scans):", "", "| B, T, D, H | implementation | mode | ms | / two scans |",
              "|---|---|---|---|---|"]
    for r in results["directions"]:
        base = next(b for b in results["directions"] if b["shape"] == r["shape"] and b["mode"] == r["mode"]
                    and b["impl"].startswith("two scans"))
        lines.append(f"| {', '.join(map(str, r['shape']))} | {r['impl']} | {r['mode']} | {r['median_ms']:.1f} "
                     f"[{r['min_ms']:.1f}, {r['max_ms']:.1f}] | {r['median_ms'] / base['median_ms']:.2f} |")
    return "\n".join(lines)


def run(config: Config, out_dir: pathlib.Path) -> dict:
    torch = _torch(config)
    if torch is not None:
        print(f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    results = {"machine": {"jax": jax.__version__, "torch": None if torch is None else torch.__version__},
               "gemm": gemm(config, torch), "forward": forward_variants(config, torch),
               "unroll": unroll_factors(config), "directions": directions(config)}
    table = _table(results)
    print(table)
    (out_dir / "results.md").write_text(table + "\n")
    return results
