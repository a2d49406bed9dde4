"""Measurements shared by the experiments: interleaved wall times, the compiled memory of a function, deviations."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp


def timed_interleaved(jobs: list[dict], repeats: int) -> None:
    """Append ``repeats`` wall times to each job's ``times``, round-robin across jobs (so drift in
    the machine's speed hits all alike); each ``job["fn"]()`` is waited for (``block_until_ready``)."""
    for _ in range(repeats):
        for job in jobs:
            start = time.perf_counter()
            jax.block_until_ready(job["fn"]())
            job["times"].append(time.perf_counter() - start)


def compiled_temp_bytes(fn: Callable, *args) -> int:
    """Bytes of temporary buffers XLA allocates for one call of ``jax.jit(fn)(*args)``.

    For a gradient this is dominated by the residuals the forward pass keeps for the backward
    pass (the activations BPTT stores), so it is how memory-bounded BPTT is compared. Read
    from the compiled executable's ``memory_analysis()``: no run, no allocator noise.
    """
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(f"This backend ({jax.default_backend()}) reports no compiled memory analysis.")
    return int(analysis.temp_size_in_bytes)


def compiled_memory(fn: Callable, *args) -> int:
    """Bytes one call of ``jax.jit(fn)(*args)`` needs: arguments + outputs + temporaries.

    From the compiled executable's ``memory_analysis()`` (``executable_memory``); ``args`` may be
    ``jax.ShapeDtypeStruct``, so nothing is allocated or run.
    """
    return executable_memory(jax.jit(fn).lower(*args).compile())


def executable_memory(compiled) -> int:
    """Bytes one call of a compiled executable needs: arguments + outputs + temporaries, from its
    ``memory_analysis()`` (buffers shared between arguments and outputs counted once)."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise RuntimeError(f"This backend ({jax.default_backend()}) reports no compiled memory analysis.")
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def max_abs(tree) -> float:
    """The largest ``|leaf entry|`` of a pytree of arrays."""
    return max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(tree))


def max_deviation(a, b) -> float:
    """The largest ``|a − b|`` over two pytrees of the same structure."""
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def saved_residual_bytes(fn: Callable, *args) -> int:
    """Bytes of the arrays ``jax.vjp(fn, *args)`` keeps for the backward pass.

    These are jax's saved residuals (what ``jax.ad_checkpoint.print_saved_residuals`` lists),
    read as the leaves of the pullback closure, with the inputs themselves counted when the
    backward pass needs them (e.g. ``xs`` for the input-weight gradient).
    """
    _, pullback = jax.vjp(fn, *args)
    return int(sum(leaf.nbytes for leaf in jax.tree.leaves(pullback)))
