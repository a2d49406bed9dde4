"""Validation helpers shared by the library: every message names what was expected and what came.

Static problems (shapes, dtypes, types) are checked at trace time and raise ``ValueError``.
Value problems that only exist at run time (a length larger than the time axis) are checked
eagerly when the value is concrete and with ``jax.debug.callback`` when it is traced, so a
jitted call fails with the same message instead of silently truncating.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a jax transformation."""
    return isinstance(x, jax.core.Tracer)


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected {name} to be a positive integer, got {value!r}.")
    return int(value)


def check_array(x: Any, name: str) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"Expected {name} to be an array, got {type(x).__name__}.")
    return x


def check_feature_size(x: jax.Array, expected: int, name: str, what: str) -> None:
    """``x`` must be at least rank 1 with last dimension ``expected``."""
    check_array(x, name)
    if x.ndim < 1 or x.shape[-1] != expected:
        raise ValueError(
            f"Expected {name} with last dimension {expected} ({what}), got shape {tuple(x.shape)}."
        )


def check_params_type(params: Any, expected: type, fn: str) -> None:
    if not isinstance(params, expected):
        raise ValueError(
            f"{fn} expects {expected.__name__}, got {type(params).__name__}: "
            "params from a different cell family (or not cell params at all)."
        )


def check_same_shape(x: jax.Array, expected: tuple[int, ...], name: str, why: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"Expected {name} with shape {tuple(expected)} ({why}), got shape {tuple(x.shape)}.")


def check_int_range(values: jax.Array, low: int, high: int, name: str, why: str) -> None:
    """Integer ``values`` must lie in ``[low, high)``: checked now when concrete, at run time when traced.

    Under ``jit`` the check is a ``jax.debug.callback``, so a bad value makes the call fail with
    this message instead of silently indexing or truncating.
    """

    def check(values):
        values = np.asarray(values)
        if values.size and (values.min() < low or values.max() >= high):
            raise ValueError(
                f"Expected {name} in [{low}, {high - 1}] ({why}), "
                f"got {name} with min {values.min()} and max {values.max()}."
            )

    if is_traced(values):
        jax.debug.callback(check, values)
    else:
        check(values)


def check_lengths(lengths: Any, batch_shape: tuple[int, ...], time: int) -> jax.Array:
    """Validate sequence lengths: shape ``batch_shape``, integer dtype, values in [0, time]."""
    lengths = jnp.asarray(check_array(lengths, "lengths"))
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"Expected lengths with shape {tuple(batch_shape)} (the batch shape of xs), "
            f"got shape {tuple(lengths.shape)}."
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"Expected lengths with an integer dtype, got dtype {lengths.dtype}.")

    check_int_range(lengths, 0, time + 1, "lengths", f"the time axis has {time} steps")
    return lengths
