"""Benchmark recurrax against flax.linen, equinox and PyTorch in one process: speed, compile, memory.

Rows (``cells`` × ``shapes`` × modes): forward, forward+backward (gradient of the sum of the
outputs with respect to the parameters) and a full training step (gradient of the mean squared
output, ``clip_by_global_norm(1)`` + Adam, the parameters updated). Implementations, each on its
own parameters of the same sizes:

- recurrax (``recurrax.rnn``, its defaults: ``kernel="auto"``, the fused backward pass below
  H = 1024) for any cell family: a registered name or a user's family as
  ``package.module:attribute`` (anchors and FLOP counts exist for ``lstm``, ``gru`` and ``elman``
  only), and for ``bf16_cells`` also with ``compute_dtype=bfloat16`` (products on bfloat16
  operands, float32 accumulation; a row of its own, not an anchor);
- where the oneDNN kernel is built (``recurrax.kernels``), for Elman, LSTM and GRU: recurrax with
  each ``kernel`` option, ``"scan"`` and ``"onednn"`` (so the default is seen against the options
  it chooses between), and "oneDNN primitive (C++)": the same forward (inference) and forward
  (training) + backward primitives with their weight reorders, timed inside C++ on buffers of
  their own (``time_primitive``; no XLA, no FFI, no layout changes), so the cost of the call
  around them shows;
- flax.linen through ``nn.RNN``: ``LSTMCell`` and ``OptimizedLSTMCell``, ``GRUCell``,
  ``SimpleCell``;
- equinox ``LSTMCell`` / ``GRUCell`` under ``vmap`` of a ``lax.scan`` when equinox is installed
  (equinox has no Elman cell);
- ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` when torch is installed (optional; CPU threads as torch
  sets them), with ``clip_grad_norm_`` + ``torch.optim.Adam`` for the training step.

Every function is compiled (compile time reported on its own: first call minus a warm call),
warmed up, then timed ``repeats`` times interleaved across implementations (round-robin, so drift
in machine speed hits all alike). Per row: median / min / max ms, achieved GFLOP/s, the fraction
of this machine's float32 GEMM rate measured in the same run, and recurrax ÷ implementation
(< 1: recurrax is faster). FLOPs count the matrix products: forward 2·B·T·(D+H)·G·H with G
gates (4 LSTM, 3 GRU, 1 Elman); forward+backward and the training step as 3× forward.

Deep stacks (``stack_shapes``, each B, T, D, H, layers): bidirectional LSTM layers, compile time
of the jitted gradient (trace + XLA), forward, forward+backward and the training step, against
flax.linen ``Bidirectional`` of ``OptimizedLSTMCell`` and ``torch.nn.LSTM(num_layers,
bidirectional=True)``.

Memory (``remat_shapes``, one LSTM layer): the same gradient by plain autodiff through the scan,
the fused backward pass, rematerialising every step, and √T segments. Per policy: jax's saved
residuals, XLA's compiled temporary bytes, the median time, each against plain autodiff, and the
longest sequence whose gradient fits in ``memory_budget_gib`` (arguments + outputs + temporaries
of the compiled program, found by bisection on T from compilation alone, nothing run).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
import platform
import statistics
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

import recurrax
from experiments._measure import compiled_memory, compiled_temp_bytes, saved_residual_bytes, timed_interleaved

SHAPES = ((32, 256, 64, 256), (16, 1000, 32, 64), (64, 128, 256, 1024), (16, 10_000, 32, 64))
GATES = {"lstm": 4, "gru": 3, "elman": 1}  # the cells with anchors; FLOPs counted for these


def resolve_cell(cell: str):
    """A bench cell: a registered name (``"lstm"``, ``"mingru"``, ...) or ``"package.module:attribute"``,
    a user's cell family (imported and registered under that spec, so it runs exactly as a user calls it)."""
    if ":" in cell:
        import importlib

        module_name, _, attribute = cell.partition(":")
        try:
            family = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"Expected a cell as 'package.module:attribute', could not load {cell!r}: {error}") from None
        return recurrax.register_cell(family, cell, overwrite=True)
    return recurrax.cells.resolve_family(cell)
MODES = ("forward", "forward+backward", "train step")


@dataclasses.dataclass(frozen=True)
class Config:
    shapes: tuple = SHAPES  # (B, T, D, H) each
    cells: tuple = ("lstm", "gru", "elman")
    modes: tuple = MODES
    repeats: int = 15  # 7 left ratios like 0.95 vs 1.12 between runs; see summarise
    gemm_size: int = 2048
    torch: bool = True  # time torch.nn when it is installed
    kernels: bool = True  # time recurrax's kernel options and oneDNN's primitive where the kernel is built
    bf16_cells: tuple = ("lstm",)  # also time recurrax with bfloat16 products for these cells
    stack_shapes: tuple = ((8, 100, 32, 128, 4), (32, 256, 64, 256, 2))  # (B, T, D, H, layers), bidirectional LSTM
    remat_shapes: tuple = ((16, 1000, 32, 128), (16, 10_000, 32, 128))
    memory_budget_gib: float = 24.0  # for the longest trainable T; 0 skips that search


QUICK = Config(shapes=((4, 16, 8, 16),), cells=("lstm", "gru"), modes=("forward", "forward+backward"), repeats=2,
               gemm_size=256, torch=False, stack_shapes=((2, 8, 4, 8, 2),), remat_shapes=((2, 16, 4, 8),),
               memory_budget_gib=0.0)


def _block(tree):
    return jax.block_until_ready(tree)


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


# --------------------------------------------------------------------------- implementations
# Each factory(cell, B, T, D, H) returns {mode: zero-argument callable} or None (no such cell).


def _jax_modes(params, forward: Callable, xs) -> dict:
    """forward, forward+backward and an optax training step of ``forward(params, xs) -> (B, T, H)``."""
    optimizer = recurrax.default_optimizer(1e-3, clip_norm=1.0)

    def train_step(params, opt_state, xs):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(forward(p, xs) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    fwd = jax.jit(forward)
    grad = jax.jit(jax.grad(lambda p, x: forward(p, x).sum()))
    step = jax.jit(train_step)
    opt_state = optimizer.init(params)
    return {
        "forward": lambda: fwd(params, xs),
        "forward+backward": lambda: grad(params, xs),
        "train step": lambda: step(params, opt_state, xs),
    }


def _recurrax(compute_dtype=None, **options):
    def factory(cell, batch, time_steps, features, hidden):
        params = recurrax.init_rnn(jax.random.key(0), resolve_cell(cell), features, hidden)
        xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
        return _jax_modes(params, lambda p, x: recurrax.rnn(p, x, compute_dtype=compute_dtype, **options)[1], xs)

    return factory


ONEDNN_CELLS = {"lstm": 3, "gru": 4, "elman": 0}  # recurrax.kernels._onednn.Cell: LSTM, LBR-GRU, tanh RNN


def _onednn_primitive(cell, batch, time_steps, features, hidden):
    """oneDNN's primitives alone, timed inside C++: the job's time is the C++ figure (see ``bench_shape``)."""
    from recurrax.kernels import _onednn

    module = _onednn._extension()[0]

    def timed(which: int) -> Callable:
        def fn():  # the wall time of this call includes a warm-up run; the C++ figure does not
            ms = module.time_primitive(ONEDNN_CELLS[cell], time_steps, batch, features, hidden, 1, False, 1)
            fn.cpp_seconds.append(1e-3 * ms[which][0])

        fn.cpp_seconds = []
        return fn

    return {"forward": timed(0), "forward+backward": timed(1)}


FLAX_CELLS = {"lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",), "elman": ("SimpleCell",)}


def _flax(cell_name):
    def factory(cell, batch, time_steps, features, hidden):
        import flax.linen as nn

        model = nn.RNN(getattr(nn, cell_name)(hidden))
        xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
        return _jax_modes(model.init(jax.random.key(0), xs), model.apply, xs)

    return factory


def _equinox(cell, batch, time_steps, features, hidden):
    import equinox as eqx

    if cell == "elman":
        return None
    module = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell](features, hidden, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)

    def forward(module, xs):
        def one(x):  # (T, D): equinox cells take one example; vmap adds the batch
            zeros = jnp.zeros((hidden,), x.dtype)

            def body(carry, x_t):
                carry = module(x_t, carry)
                return carry, carry[0] if cell == "lstm" else carry

            return jax.lax.scan(body, (zeros, zeros) if cell == "lstm" else zeros, x)[1]

        return jax.vmap(one)(xs)

    return _jax_modes(module, forward, xs)


def _torch(cell, batch, time_steps, features, hidden):
    import torch

    torch.manual_seed(0)
    model = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[cell](
        features, hidden, batch_first=True)
    return _torch_modes(model, torch.randn(batch, time_steps, features))


def _torch_modes(model, xs) -> dict:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward():
        with torch.no_grad():
            return model(xs)[0]

    def forward_backward():
        model.zero_grad()
        model(xs)[0].sum().backward()

    def train_step():
        optimizer.zero_grad()
        loss = model(xs)[0].pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return {"forward": forward, "forward+backward": forward_backward, "train step": train_step}


def installed(module: str) -> bool:
    """Whether an optional anchor (``equinox``, ``torch``: the ``bench`` extra) can be imported."""
    return importlib.util.find_spec(module) is not None


def implementations(cell: str, config: Config) -> dict:
    """name -> factory(cell, B, T, D, H): recurrax first, then the anchors (built-in cells only)."""
    impls = {"recurrax": _recurrax()}
    if cell in config.bf16_cells:
        impls["recurrax bf16 products"] = _recurrax(jnp.bfloat16)
    if cell not in GATES:  # a cell no other library has: recurrax alone, no ratio to an anchor
        return impls
    if config.kernels and recurrax.kernels.available():
        impls["recurrax kernel='scan'"] = _recurrax(kernel="scan")
        impls["recurrax kernel='onednn'"] = _recurrax(kernel="onednn")
        impls["oneDNN primitive (C++)"] = _onednn_primitive
    for cell_name in FLAX_CELLS[cell]:
        impls[f"flax.linen {cell_name}"] = _flax(cell_name)
    if cell != "elman" and installed("equinox"):
        impls["equinox"] = _equinox
    if config.torch and installed("torch"):
        impls[f"torch.nn.{ {'lstm': 'LSTM', 'gru': 'GRU', 'elman': 'RNN'}[cell]}"] = _torch
    return impls


# --------------------------------------------------------------------------- timing


def _compile_and_warm(fn: Callable) -> float:
    """Seconds of the first call beyond a warm one (jit tracing + compilation); warms ``fn``."""
    start = time.perf_counter()
    _block(fn())
    first = time.perf_counter() - start
    start = time.perf_counter()
    _block(fn())
    return max(0.0, first - (time.perf_counter() - start))


def bench_shape(cell: str, shape: tuple, config: Config) -> list[dict]:
    batch, time_steps, features, hidden = shape
    jobs = []
    for name, factory in implementations(cell, config).items():
        fns = factory(cell, batch, time_steps, features, hidden)
        if fns is None:
            continue
        for mode in config.modes:
            if mode in fns:
                jobs.append({"impl": name, "mode": mode, "fn": fns[mode], "times": [],
                             "compile_s": _compile_and_warm(fns[mode])})
    timed_interleaved(jobs, config.repeats)
    for job in jobs:
        if job["impl"] == "oneDNN primitive (C++)":  # its own clock, inside C++, not the call's
            job["times"] = job["fn"].cpp_seconds[-len(job["times"]):]
            job["compile_s"] = float("nan")
    gates = GATES.get(cell)  # FLOPs of other cells are not counted (NaN GFLOP/s)
    flops_fwd = 2 * batch * time_steps * (features + hidden) * gates * hidden if gates else float("nan")
    rows = []
    for job in jobs:
        ms = [1e3 * t for t in job["times"]]
        median = statistics.median(ms)
        flops = flops_fwd * (1 if job["mode"] == "forward" else 3)
        rows.append({
            "cell": cell, "shape": list(shape), "impl": job["impl"], "mode": job["mode"], "median_ms": median,
            "min_ms": min(ms), "max_ms": max(ms), "compile_s": job["compile_s"], "gflops": flops / median / 1e6,
        })
    for row in rows:
        ours = next(r for r in rows if r["impl"] == "recurrax" and r["mode"] == row["mode"])
        row["ratio"] = ours["median_ms"] / row["median_ms"]
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


def summarise(rows: list[dict]) -> list[dict]:
    """Per (cell, shape, mode): recurrax's time over the fastest anchor's."""
    out = []
    for key in dict.fromkeys((r["cell"], tuple(r["shape"]), r["mode"]) for r in rows):
        group = [r for r in rows if (r["cell"], tuple(r["shape"]), r["mode"]) == key]
        anchors = [r for r in group if not r["impl"].startswith(("recurrax", "oneDNN"))]
        if not anchors:
            continue
        fastest = min(anchors, key=lambda r: r["median_ms"])
        ours = next(r for r in group if r["impl"] == "recurrax")
        # The repeats' ranges apart: the machine's speed drifts within a run, and a ratio whose
        # ranges overlap (e.g. 0.95 from 7 repeats) can flip sign in the next run.
        separated = ours["max_ms"] < fastest["min_ms"] or ours["min_ms"] > fastest["max_ms"]
        out.append({"cell": key[0], "shape": list(key[1]), "mode": key[2], "fastest_anchor": fastest["impl"],
                    "ratio": ours["median_ms"] / fastest["median_ms"], "ranges_separated": separated})
    return out


# --------------------------------------------------------------------------- deep stack


def bench_stack(shape: tuple, config: Config) -> list[dict]:
    """A deep bidirectional LSTM: gradient compile time and forward / forward+backward times."""
    batch, time_steps, features, hidden, layers = shape
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
    candidates = {}
    params = recurrax.init_stack(jax.random.key(0), features, [hidden] * layers, cell="lstm", bidirectional=True)
    candidates["recurrax"] = (params, lambda p, x: recurrax.stack(p, x)[1])
    if config.kernels and recurrax.kernels.available():
        candidates["recurrax kernel='scan'"] = (params, lambda p, x: recurrax.stack(p, x, kernel="scan")[1])
    import flax.linen as nn

    class FlaxStack(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(layers):
                x = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(hidden)), nn.RNN(nn.OptimizedLSTMCell(hidden)))(x)
            return x

    model = FlaxStack()
    candidates["flax.linen OptimizedLSTMCell"] = (model.init(jax.random.key(0), xs), model.apply)
    jobs = []
    for name, (params, forward) in candidates.items():
        grad = jax.jit(jax.grad(lambda p, x, f=forward: f(p, x).sum()))
        start = time.perf_counter()
        lowered = grad.lower(params, xs)
        traced = time.perf_counter()
        compiled_grad = lowered.compile()
        compiled = time.perf_counter()
        fns = {**_jax_modes(params, forward, xs),
               "forward+backward": functools.partial(compiled_grad, params, xs)}  # timed as compiled above
        for mode, fn in fns.items():
            _compile_and_warm(fn)
            jobs.append({"impl": name, "mode": mode, "fn": fn, "times": [],
                         "trace_s": traced - start, "xla_compile_s": compiled - traced})
    if config.torch and installed("torch"):
        import torch

        torch.manual_seed(0)
        model = torch.nn.LSTM(features, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        fns = _torch_modes(model, torch.randn(batch, time_steps, features))
        for mode in MODES:
            _compile_and_warm(fns[mode])
            jobs.append({"impl": "torch.nn.LSTM", "mode": mode, "fn": fns[mode], "times": [], "trace_s": None,
                         "xla_compile_s": None})
    timed_interleaved(jobs, config.repeats)
    rows = []
    for job in jobs:
        trace, xla = job["trace_s"], job["xla_compile_s"]
        rows.append({"shape": list(shape), "impl": job["impl"], "mode": job["mode"],
                     "median_ms": 1e3 * statistics.median(job["times"]),
                     "grad_compile_s": None if trace is None else trace + xla, "trace_s": trace, "xla_compile_s": xla})
    for row in rows:
        ours = next(r for r in rows if r["impl"] == "recurrax" and r["mode"] == row["mode"])
        row["ratio"] = ours["median_ms"] / row["median_ms"]
    return rows


def _stack_table(rows: list[dict]) -> str:
    lines = ["| B, T, D, H, layers | impl | mode | median ms | recurrax / impl | gradient compile s (trace + XLA) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        compile_s = ("–" if row["grad_compile_s"] is None
                     else f"{row['grad_compile_s']:.2f} ({row['trace_s']:.2f} + {row['xla_compile_s']:.2f})")
        lines.append(f"| {', '.join(map(str, row['shape']))} | {row['impl']} | {row['mode']} "
                     f"| {row['median_ms']:.1f} | {row['ratio']:.2f} | {compile_s} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- memory


REMAT_POLICIES = {
    "plain autodiff": {"fused_backward": False},
    "fused backward": {"fused_backward": True},
    "remat every step": {"remat": True},
    "remat sqrt(T) segments": {"remat": "sqrt"},
}


def _remat_loss(options: dict) -> Callable:
    return lambda params, xs: recurrax.rnn(params, xs, **options)[1].sum()


@functools.lru_cache(maxsize=None)
def longest_sequence(policy: str, batch: int, features: int, hidden: int, budget_bytes: float,
                     high: int = 1 << 30) -> Optional[int]:
    """Largest T whose jitted gradient under ``REMAT_POLICIES[policy]`` needs at most ``budget_bytes``.

    Bisection on T to 0.1% (``compiled_memory`` of the program lowered on abstract inputs:
    compiled, never run); ``None`` if even T = 1 does not fit, ``high`` if T = ``high`` fits.
    """
    params = recurrax.init_rnn(jax.random.key(0), "lstm", features, hidden)
    grad = jax.grad(_remat_loss(REMAT_POLICIES[policy]))

    def fits(time_steps: int) -> bool:
        xs = jax.ShapeDtypeStruct((batch, time_steps, features), jnp.float32)
        return compiled_memory(grad, params, xs) <= budget_bytes

    if not fits(1):
        return None
    low, top = 1, 2
    while top < high and fits(top):
        low, top = top, min(2 * top, high)
    if top == high and fits(high):
        return high
    while top - low > max(1, low // 1000):  # to 0.1%
        middle = (low + top) // 2
        low, top = (middle, top) if fits(middle) else (low, middle)
    return low


def bench_remat(shape: tuple, config: Config) -> list[dict]:
    """Residual memory, compiled memory, time and the longest trainable T per remat policy."""
    batch, time_steps, features, hidden = shape
    params = recurrax.init_rnn(jax.random.key(0), "lstm", features, hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, features), jnp.float32)
    budget = config.memory_budget_gib * 2**30
    jobs = []
    for name, options in REMAT_POLICIES.items():
        loss = _remat_loss(options)
        grad = jax.jit(jax.grad(loss))
        fn = functools.partial(grad, params, xs)
        jobs.append({"policy": name, "fn": fn, "compile_s": _compile_and_warm(fn), "times": [],
                     "residual_bytes": saved_residual_bytes(loss, params, xs),
                     "temp_bytes": compiled_temp_bytes(jax.grad(loss), params, xs),
                     "longest_t": longest_sequence(name, batch, features, hidden, budget) if budget else None})
    timed_interleaved(jobs, config.repeats)
    plain = jobs[0]
    plain_ms = 1e3 * statistics.median(plain["times"])
    rows = []
    for job in jobs:
        median = 1e3 * statistics.median(job["times"])
        rows.append({
            "shape": list(shape), "policy": job["policy"], "median_ms": median, "compile_s": job["compile_s"],
            "residual_bytes": job["residual_bytes"], "temp_bytes": job["temp_bytes"],
            "residual_ratio": job["residual_bytes"] / plain["residual_bytes"],
            "temp_ratio": job["temp_bytes"] / plain["temp_bytes"], "time_ratio": median / plain_ms,
            "longest_t": job["longest_t"],
        })
    return rows


def _remat_table(rows: list[dict], budget_gib: float) -> str:
    lines = [
        f"| LSTM B, T, D, H | policy | saved residuals MiB | / plain | compiled temp MiB | / plain | median ms "
        f"| / plain | longest T in {budget_gib:g} GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        longest = "–" if row["longest_t"] is None else f"{row['longest_t']:,}"
        lines.append(
            f"| {', '.join(map(str, row['shape']))} | {row['policy']} | {row['residual_bytes'] / 2**20:.2f} "
            f"| {row['residual_ratio']:.3f} | {row['temp_bytes'] / 2**20:.2f} | {row['temp_ratio']:.3f} "
            f"| {row['median_ms']:.1f} | {row['time_ratio']:.2f} | {longest} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- run


def _check_config(config: Config) -> None:
    for cell in config.cells:
        resolve_cell(cell)  # a registered name or a loadable 'module:attribute', else ValueError
    for mode in config.modes:
        if mode not in MODES:
            raise ValueError(f"Expected modes among {MODES}, got {mode!r}.")
    for shape in config.shapes + config.remat_shapes:
        if len(shape) != 4:
            raise ValueError(f"Expected shapes as (B, T, D, H), got {shape!r}.")
    for shape in config.stack_shapes:
        if len(shape) != 5:
            raise ValueError(f"Expected stack shapes as (B, T, D, H, layers), got {shape!r}.")


def run(config: Config, out_dir: pathlib.Path) -> dict:
    _check_config(config)
    gemm = measure_gemm_gflops(config.gemm_size)
    machine = (f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
               f"jax {jax.__version__}")
    if config.torch and installed("torch"):
        import torch

        machine += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"machine: {machine}; float32 GEMM {config.gemm_size}^3: {gemm:.1f} GFLOP/s", flush=True)
    rows = []
    for cell in config.cells:
        for shape in config.shapes:
            shape_rows = bench_shape(cell, tuple(shape), config)
            rows.extend(shape_rows)
            print(_table(shape_rows, gemm).split("\n", 2)[2], flush=True)
    summary = summarise(rows)
    stack_rows = [row for shape in config.stack_shapes for row in bench_stack(tuple(shape), config)]
    remat_rows = [row for shape in config.remat_shapes for row in bench_remat(tuple(shape), config)]
    summary_table = "\n".join(
        ["| cell | B, T, D, H | mode | fastest anchor | recurrax / fastest | min–max ranges apart |",
         "|---|---|---|---|---|---|"]
        + [f"| {s['cell']} | {', '.join(map(str, s['shape']))} | {s['mode']} | {s['fastest_anchor']} "
           f"| {s['ratio']:.2f} | {'yes' if s['ranges_separated'] else 'no: within noise'} |" for s in summary])
    report = (
        f"machine: {machine}; float32 GEMM {config.gemm_size}^3: {gemm:.1f} GFLOP/s\n\n"
        f"{_table(rows, gemm)}\n\nrecurrax against the fastest anchor:\n\n{summary_table}\n\n"
        f"Deep bidirectional LSTM:\n\n{_stack_table(stack_rows)}\n\n"
        + (f"Memory-bounded BPTT:\n\n{_remat_table(remat_rows, config.memory_budget_gib)}\n" if remat_rows else "")
    )
    print("\n" + report)
    (out_dir / "results.md").write_text(report)
    return {"machine": machine, "gemm_gflops": gemm, "rows": rows, "summary": summary, "stack": stack_rows,
            "remat": remat_rows}
