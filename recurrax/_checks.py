"""Validation helpers shared by the library: every message names what was expected and what came.

Static problems (shapes, dtypes, types) are checked at trace time and raise ``ValueError``.
Value problems that only exist at run time (a length larger than the time axis) are checked
eagerly when the value is concrete and with ``jax.debug.callback`` when it is traced, so a
jitted call fails with the same message instead of silently truncating.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

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


def check_batch_shape(batch_shape: Any) -> tuple:
    """``batch_shape`` as a tuple; an int (``2`` for ``(2,)``, a common slip) is refused by name."""
    if isinstance(batch_shape, int):
        raise ValueError(f"Expected batch_shape as a tuple of ints, got the int {batch_shape}; write ({batch_shape},).")
    return tuple(batch_shape)


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
    this message instead of silently indexing or truncating. Only the min and max, reduced on
    the device, go to the host: a batch split over devices is not gathered for the check.
    """
    if not np.size(values):
        return
    if is_traced(values):
        jax.debug.callback(functools.partial(_check_range_on_host, low=low, high=high, name=name, why=why),
                           jnp.min(values), jnp.max(values))
    else:
        values = np.asarray(values)
        _check_range_on_host(values.min(), values.max(), low=low, high=high, name=name, why=why)


def _check_range_on_host(smallest, largest, *, low: int, high: int, name: str, why: str) -> None:
    """``check_int_range``'s test on two scalars, in NumPy only.

    Under ``jit`` this runs inside a host callback, on one of XLA:CPU's execution threads, and
    must not launch a JAX computation: on a mesh of CPU devices the other devices' threads wait
    in a collective for this one, and a computation launched here can wait for them in turn (a
    ``<`` on the ``jax.Array`` the callback receives deadlocked the 8-device training step: 7 of
    8 threads waited in an all-reduce, the 8th, in this callback, for a slot in device 0's full
    queue of computations, which no free thread could drain). So the scalars are read into
    Python numbers first, which computes nothing.
    """
    smallest, largest = np.asarray(smallest).item(), np.asarray(largest).item()
    if smallest < low or largest >= high:
        raise ValueError(
            f"Expected {name} in [{low}, {high - 1}] ({why}), got {name} with min {smallest} and max {largest}."
        )


def check_lengths(lengths: Any, batch_shape: Sequence[int], time: int) -> jax.Array:
    """Validate the lengths of right-padded sequences and return them as an integer ``jax.Array``.

    ``lengths`` is any array-like of integers (a JAX or NumPy array, a list, a Python int for
    one unbatched sequence) of shape ``batch_shape``, each value in ``[0, time]``. Shape and
    dtype are checked at once. Concrete values are checked at once too; traced ones (inside
    ``jit``) only when the compiled call runs, by a ``jax.debug.callback``, so there a bad length
    raises ``jax.errors.JaxRuntimeError`` (carrying the same message) instead of ``ValueError``
    and JAX prints the callback's traceback on stderr. To get the ``ValueError``, call this on
    the concrete lengths before the jitted call, as in the example.

    Args:
      lengths: integers of shape ``batch_shape``.
      batch_shape: the batch shape of the sequences, e.g. ``xs.shape[:-2]`` for ``(*batch, T, D)``.
      time: T, the padded length of the time axis.

    Returns:
      ``lengths`` as a ``jax.Array`` with their integer dtype.

    Raises:
      ValueError: naming the expected and the received shape, dtype or range.

    >>> xs = jnp.ones((2, 5, 3))                                   # (batch, time, features)
    >>> check_lengths([5, 2], xs.shape[:-2], xs.shape[-2]).tolist()
    [5, 2]
    >>> check_lengths([5, 6], xs.shape[:-2], xs.shape[-2])
    Traceback (most recent call last):
    ValueError: Expected lengths in [0, 5] (the time axis has 5 steps), got lengths with min 5 and max 6.
    """
    if not (isinstance(time, (int, np.integer)) and not isinstance(time, bool) and time >= 0):
        raise ValueError(f"Expected time to be a non-negative integer, got {time!r}.")
    if not isinstance(batch_shape, (tuple, list)) or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in batch_shape
    ):
        raise ValueError(f"Expected batch_shape to be a tuple of integers, got {batch_shape!r}.")
    batch_shape = tuple(int(n) for n in batch_shape)
    if not (hasattr(lengths, "shape") and hasattr(lengths, "dtype")):
        # A list or a Python int: read it on the host, where its values are exact (a JAX
        # conversion would first wrap int64 values above 2**31 when x64 is off).
        try:
            array = np.asarray(lengths)
        except (TypeError, ValueError):  # e.g. a ragged list
            array = None
        if array is None or array.dtype.kind not in "biuf":  # bool, float: the dtype error below
            raise ValueError(
                f"Expected lengths to be an array-like of integers, got {type(lengths).__name__}."
            )
        lengths = array
    if tuple(lengths.shape) != batch_shape:
        raise ValueError(
            f"Expected lengths with shape {batch_shape} (the batch shape of xs), "
            f"got shape {tuple(lengths.shape)}."
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"Expected lengths with an integer dtype, got dtype {lengths.dtype}.")

    check_int_range(lengths, 0, time + 1, "lengths", f"the time axis has {time} steps")
    return jnp.asarray(lengths)
