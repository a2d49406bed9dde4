"""What every converter shares: arrays in and out, key and shape checks, layers by family, heads.

Conversions run eagerly in NumPy (they are one-off, not traced): arrays are copied, transposed
and concatenated, never recomputed, so an export followed by an import gives back the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from recurrax import cells
from recurrax._activations import Activation
from recurrax._layers import BidirectionalParams, DenseParams, RNNParams, StackParams
from recurrax.cells.elman import ElmanCarry, ElmanParams
from recurrax.cells.gru import GRUCarry, GRUParams
from recurrax.cells.lstm import LSTMCarry, LSTMParams

GATES = {"lstm": 4, "gru": 3, "elman": 1}


def as_numpy(value: Any) -> np.ndarray:
    """A NumPy array from a NumPy/JAX array, a torch tensor or a Keras variable (no imports)."""
    if hasattr(value, "detach"):  # a torch tensor (possibly on a device, possibly requiring grad)
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_jax(value: np.ndarray) -> Any:
    return jnp.asarray(np.ascontiguousarray(value))


def fold(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """``b_ih + b_hh``, keeping ``b_ih``'s exact bits where ``b_hh`` is zero (so an exported
    ``(b, 0)`` pair imports back to ``b`` bit for bit, signed zeros included)."""
    return np.where(b_hh == 0, b_ih, b_ih + b_hh)


def check_entries(
    given: Mapping[str, np.ndarray], expected: Mapping[str, tuple], source: str, hint: str = ""
) -> None:
    """Raise a ``ValueError`` naming the first missing, unexpected or misshapen entry."""
    for name, shape in expected.items():
        if name not in given:
            raise ValueError(
                f"Missing key {name!r} (expected shape {shape}) in the {source}.{hint}"
            )
    for name, value in given.items():
        if name not in expected:
            raise ValueError(
                f"Unexpected key {name!r} (shape {tuple(np.shape(value))}) in the {source}; "
                f"expected exactly the keys {list(expected)}.{hint}"
            )
    for name, shape in expected.items():
        got = tuple(np.shape(given[name]))
        if got != tuple(shape):
            raise ValueError(
                f"Key {name!r} of the {source} has shape {got}, expected shape {tuple(shape)}."
            )


def require_2d(value: Any, name: str, expected: str, source: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"Missing key {name!r} (expected shape {expected}) in the {source}.")
    value = as_numpy(value)
    if value.ndim != 2:
        raise ValueError(
            f"Key {name!r} of the {source} has shape {value.shape}, expected shape {expected}."
        )
    return value


def blocks(value: np.ndarray, count: int) -> list[np.ndarray]:
    """Split the last axis into ``count`` equal gate blocks."""
    return np.split(value, count, axis=-1)


def layer(family: str, cell_params: Any) -> RNNParams:
    return RNNParams(cell=cell_params, initial=None, family=cells.resolve_family(family))


def lstm_layer(w_x, w_h, b) -> RNNParams:
    return layer("lstm", LSTMParams(w_x=to_jax(w_x), w_h=to_jax(w_h), b=to_jax(b), w_peep=None))


def gru_layer(w_x, w_h, b, b_hn: np.ndarray | None) -> RNNParams:
    return layer(
        "gru",
        GRUParams(
            w_x=to_jax(w_x),
            w_h=to_jax(w_h),
            b=to_jax(b),
            b_hn=None if b_hn is None else to_jax(b_hn),
        ),
    )


def elman_layer(w_x, w_h, b, activation: str) -> RNNParams:
    return layer(
        "elman",
        ElmanParams(
            w_x=to_jax(w_x), w_h=to_jax(w_h), b=to_jax(b), activation=Activation(activation)
        ),
    )


def dense_layer(kernel: np.ndarray, bias: np.ndarray | None) -> DenseParams:
    """A dense head from a kernel ``(in, out)`` (recurrax's layout) and a bias ``(out,)``
    (zeros of the kernel's dtype when the layer has none)."""
    if bias is None:
        bias = np.zeros(kernel.shape[1], kernel.dtype)
    return DenseParams(w=to_jax(kernel), b=to_jax(bias))


def dense_arrays(params: DenseParams, flag: str, use_bias: bool) -> tuple[np.ndarray, Any]:
    """A head's kernel ``(in, out)`` and bias as NumPy; the bias is ``None`` with ``use_bias``
    false (named ``flag`` in the message), which needs it to be zero."""
    kernel, bias = np.asarray(params.w), np.asarray(params.b)
    if kernel.ndim != 2 or bias.shape != kernel.shape[1:]:
        raise ValueError(
            f"Expected DenseParams with w (in_features, out_features) and b (out_features,), got "
            f"w of shape {kernel.shape} and b of shape {bias.shape}."
        )
    if use_bias:
        return kernel, bias
    if np.any(bias != 0):
        raise ValueError(
            f"{flag}=False, but the head has nonzero biases; export with {flag}=True."
        )
    return kernel, None


def describe(params: Any, library: str, *, allowed=("lstm", "gru", "elman")) -> tuple[str, Any]:
    """``(family name, cell params)`` of a layer the converters can export, or a ``ValueError``."""
    if not isinstance(params, RNNParams):
        raise ValueError(f"Expected RNNParams (one recurrent layer), got {type(params).__name__}.")
    name = getattr(params.family, "name", None)
    if name not in allowed:
        raise ValueError(
            f"{library} has no equivalent of a {name!r} layer; convertible families: {list(allowed)}."
        )
    if params.initial is not None:
        raise ValueError(
            f"This layer has a learned initial state, which {library} keeps outside the layer's "
            "weights: export it as an initial carry (the carry_to_* function of this module) and "
            "export the layer with params._replace(initial=None)."
        )
    cell = params.cell
    if name == "lstm" and cell.w_peep is not None:
        raise ValueError(f"{library} has no peephole LSTM: this LSTM has w_peep (peephole=True).")
    return name, cell


def numpy_cell(cell: Any) -> dict[str, np.ndarray | None]:
    """The cell's arrays as NumPy, by field name (``None`` stays ``None``)."""
    return {
        k: (None if v is None else np.asarray(v))
        for k, v in cell._asdict().items()
        if k != "activation"
    }


def make_carry(family: str, h: Any, c: Any = None) -> Any:
    if family == "lstm":
        return LSTMCarry(h=jnp.asarray(h), c=jnp.asarray(c))
    if family == "gru":
        return GRUCarry(h=jnp.asarray(h))
    return ElmanCarry(h=jnp.asarray(h))


def stack_layers(params: Any) -> list:
    """The layers of a ``StackParams``, or a single layer as a one-layer list."""
    if isinstance(params, StackParams):
        return list(params.layers)
    if isinstance(params, (RNNParams, BidirectionalParams)):
        return [params]
    raise ValueError(
        f"Expected StackParams, BidirectionalParams or RNNParams, got {type(params).__name__}."
    )
