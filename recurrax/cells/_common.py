"""Checks shared by every cell family's ``init``, ``initial_carry`` and ``step``."""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_array, check_batch_shape, check_params_type, check_positive_int


def check_sizes(input_size: Any, hidden_size: Any) -> tuple[int, int]:
    return check_positive_int(input_size, "input_size"), check_positive_int(hidden_size, "hidden_size")


def check_number(
    value: Any,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` must be a finite real number in the stated interval; returns it as a float.

    The interval is ``[low, high]``, open at either end with ``low_open`` / ``high_open``.
    """
    left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    interval = f"{left}{low:g}, {high:g}{right}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Expected {name} to be a number in {interval}, got {value!r}.")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"Expected {name} in {interval}, got {value!r}.")
    return value


def check_heads(num_heads: Any, width: int, width_name: str = "hidden_size", why: str = "") -> int:
    """``num_heads`` must be a positive int dividing ``width``; returns the head size ``width // num_heads``.

    ``why`` (e.g. ``" (the gates are block-diagonal over heads)"``) is said in the message.
    """
    heads = check_positive_int(num_heads, "num_heads")
    if width % heads:
        raise ValueError(f"Expected num_heads to divide {width_name}{why}, got {width_name}={width}, num_heads={heads}.")
    return width // heads


def zeros_carry(
    carry_type: type,
    params: Any,
    params_type: type,
    batch_shape: Any,
    fn: str,
    *,
    hidden_size: Optional[int] = None,
    dtype: Any = None,
):
    """A carry of zeros, every field ``(*batch_shape, hidden_size)`` in the params' dtype.

    ``hidden_size`` and ``dtype`` default to ``params.w_h``'s rows and dtype; families without a
    ``w_h`` (IndRNN, minGRU, LRU, ...) pass them.
    """
    check_params_type(params, params_type, fn)
    batch_shape = check_batch_shape(batch_shape)
    hidden_size = params.w_h.shape[0] if hidden_size is None else hidden_size
    zeros = jnp.zeros(batch_shape + (hidden_size,), params.w_h.dtype if dtype is None else dtype)
    return carry_type(*([zeros] * len(carry_type._fields)))


def check_step(
    params: Any,
    params_type: type,
    carry: Any,
    carry_type: type,
    x: Any,
    fn: str,
    *,
    input_size: Optional[int] = None,
    hidden_size: Optional[int] = None,
) -> None:
    """Static checks of one step: params family, input feature size, carry type and shapes.

    ``input_size`` and ``hidden_size`` default to ``params.w_x``'s and ``params.w_h``'s rows.
    """
    check_params_type(params, params_type, fn)
    input_size = params.w_x.shape[0] if input_size is None else input_size
    hidden_size = params.w_h.shape[0] if hidden_size is None else hidden_size
    check_array(x, "x")
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"Expected x with last dimension {input_size} (the cell's input_size), "
            f"got shape {tuple(x.shape)}."
        )
    if not isinstance(carry, carry_type):
        raise ValueError(f"{fn} expects a {carry_type.__name__} carry, got {type(carry).__name__}.")
    expected = tuple(x.shape[:-1]) + (hidden_size,)
    for name, value in zip(carry_type._fields, carry):
        check_array(value, f"carry.{name}")
        if tuple(value.shape) != expected:
            raise ValueError(
                f"Expected carry.{name} with shape {expected} (x's batch shape + hidden_size), "
                f"got shape {tuple(value.shape)}."
            )


def lift(v: jax.Array, like: jax.Array) -> jax.Array:
    """``v`` (e.g. a bias ``(H,)``) with leading unit axes up to ``like``'s rank.

    Broadcasting against the batch axes is thus explicit, so the cells also run under
    ``jax_numpy_rank_promotion="raise"`` (the test suite's strict mode).
    """
    return jax.lax.broadcast_to_rank(v, like.ndim)


def split_gates(z: jax.Array, num: int) -> list[jax.Array]:
    """Split fused pre-activations ``(..., num * H)`` into ``num`` blocks of ``(..., H)``."""
    return jnp.split(z, num, axis=-1)


def pointwise_jacobian_diagonal(pointwise, params: Any, carry: Any, x: jax.Array) -> tuple[Any, Any]:
    """``(new_carry, diag)`` of ``pointwise(params, carry, x @ w_x, h @ w_h)``'s carry Jacobian.

    For the built-in cells whose pointwise part acts unit by unit (output unit i reads only the
    i-th entry of each gate block of ``zh`` and the i-th entry of each carry leaf), ``∂ leaf'_i /
    ∂ leaf_i`` for every i at once is one ``jax.jvp`` per carry leaf: the leaf's tangent is ones,
    and for ``h`` the products' tangent is the diagonal of each gate block of ``w_h``
    (``zh = h @ w_h``, block g of ``w_h`` is ``(H, H)``). No H×H Jacobian is formed.
    """
    w_h = params.w_h
    hidden = carry.h.shape[-1]
    gates = w_h.shape[-1] // hidden
    w_diag = jnp.concatenate([jnp.diagonal(w_h[:, g * hidden:(g + 1) * hidden]) for g in range(gates)])
    zx, zh = x @ params.w_x, carry.h @ w_h
    zeros = jax.tree.map(jnp.zeros_like, carry)
    diags = {}
    for name in carry._fields:
        tangent = zeros._replace(**{name: jnp.ones_like(getattr(carry, name))})
        zh_dot = jnp.broadcast_to(w_diag, zh.shape) if name == "h" else jnp.zeros_like(zh)
        (new, _), (new_dot, _) = jax.jvp(lambda c, z: pointwise(params, c, zx, z), (carry, zh), (tangent, zh_dot))
        diags[name] = getattr(new_dot, name)
    return new, type(carry)(**diags)
