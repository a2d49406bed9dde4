"""Weights and caches from mambapy (mamba.py, a pure-PyTorch Mamba) to ``recurrax.blocks.mamba``.

A mambapy ``MambaBlock``'s ``state_dict`` becomes a Mamba layer (``RNNParams`` of the ``mamba``
block family) with the same outputs: kernels are transposed to recurrax's ``(in, out)``
layout, the depthwise ``conv1d.weight`` ``(ED, 1, width)`` becomes taps ``(width, ED)``, and
``x_proj``, ``dt_proj``, ``A_log``, ``D`` become the selective SSM's ``w_xproj``, ``w_dt``,
``b_dt``, ``A_log``, ``D``. A block inside a whole ``Mamba`` model is picked by ``prefix``
(``"layers.0.mixer."``); the model's RMSNorms and residuals are not part of the block.
NumPy and JAX only: the mambapy package is not imported (torch tensors are read through
``.detach().cpu().numpy()``).

>>> import numpy as np
>>> ED, D, N, R, W = 8, 4, 3, 1, 4
>>> sd = {"in_proj.weight": np.zeros((2 * ED, D)), "conv1d.weight": np.zeros((ED, 1, W)),
...       "conv1d.bias": np.zeros(ED), "x_proj.weight": np.zeros((R + 2 * N, ED)),
...       "dt_proj.weight": np.zeros((ED, R)), "dt_proj.bias": np.zeros(ED),
...       "A_log": np.zeros((ED, N)), "D": np.ones(ED), "out_proj.weight": np.zeros((D, ED))}
>>> layer = from_mambapy({k: v.astype(np.float32) for k, v in sd.items()})
>>> (layer.cell.conv.w.shape, layer.cell.ssm.w_xproj.shape, layer.cell.w_out.shape)
((4, 8), (8, 7), (8, 4))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from recurrax import cells
from recurrax._rnn_params import RNNParams
from recurrax.blocks import mamba
from recurrax.blocks._conv import ConvParams
from recurrax.cells.selective_ssm import SelectiveSSMParams
from recurrax.interop._common import as_numpy, check_entries, to_jax

__all__ = ["from_mambapy", "to_mambapy", "carry_from_mambapy", "carry_to_mambapy"]

_SOURCE = "mambapy MambaBlock state_dict"
_HINT = (
    " (recurrax's Mamba block has no in_proj/out_proj biases, mambapy's default bias=False, nor "
    "the inner_layernorms of Jamba's blocks.)"
)


def from_mambapy(state_dict: Mapping[str, Any], *, prefix: str = "", dtype: Optional[Any] = None) -> RNNParams:
    """A Mamba layer (``RNNParams`` of ``recurrax.blocks.mamba``) from a mambapy ``MambaBlock``'s weights.

    Args:
      state_dict: ``name -> array`` (NumPy, JAX or torch tensors) of a ``MambaBlock``:
        ``in_proj.weight`` ``(2·ED, d_model)``, ``conv1d.weight`` ``(ED, 1, d_conv)``,
        ``conv1d.bias`` ``(ED,)`` (absent with ``conv_bias=False``: a zero bias),
        ``x_proj.weight`` ``(dt_rank + 2N, ED)``, ``dt_proj.weight`` ``(ED, dt_rank)``,
        ``dt_proj.bias`` ``(ED,)``, ``A_log`` ``(ED, N)``, ``D`` ``(ED,)``,
        ``out_proj.weight`` ``(d_model, ED)``.
      prefix: only keys starting with it are read, with it removed (e.g. ``"layers.1.mixer."``
        for the second block of a ``Mamba`` model's ``state_dict``).
      dtype: the params' dtype (default: the arrays' own).

    Raises ``ValueError`` naming a missing, unexpected or misshapen key.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"Expected prefix to be a string, got {prefix!r}.")
    sd = {k[len(prefix):]: as_numpy(v) for k, v in state_dict.items() if k.startswith(prefix)}
    if not sd:
        raise ValueError(f"Expected keys starting with {prefix!r} in the {_SOURCE}, got {sorted(state_dict)[:8]}.")
    for key, ndim in (("A_log", 2), ("dt_proj.weight", 2), ("conv1d.weight", 3), ("in_proj.weight", 2),
                      ("out_proj.weight", 2)):
        if key not in sd:
            raise ValueError(f"Missing key {prefix + key!r} in the {_SOURCE}.{_HINT}")
        if sd[key].ndim != ndim:
            raise ValueError(f"Key {prefix + key!r} of the {_SOURCE} has shape {sd[key].shape}, expected rank {ndim}.")
    inner, states = sd["A_log"].shape
    rank, width = sd["dt_proj.weight"].shape[1], sd["conv1d.weight"].shape[2]
    d_in, d_out = sd["in_proj.weight"].shape[1], sd["out_proj.weight"].shape[0]
    expected = {
        "in_proj.weight": (2 * inner, d_in),
        "conv1d.weight": (inner, 1, width),
        "conv1d.bias": (inner,),
        "x_proj.weight": (rank + 2 * states, inner),
        "dt_proj.weight": (inner, rank),
        "dt_proj.bias": (inner,),
        "A_log": (inner, states),
        "D": (inner,),
        "out_proj.weight": (d_out, inner),
    }
    if "conv1d.bias" not in sd:  # conv_bias=False
        sd["conv1d.bias"] = np.zeros(inner, sd["conv1d.weight"].dtype)
    check_entries(sd, expected, _SOURCE + (f" (prefix {prefix!r})" if prefix else ""), _HINT)
    if dtype is None:
        dtype = sd["A_log"].dtype
    arr = {k: np.asarray(v, dtype) for k, v in sd.items()}  # transposed in NumPy, then moved to JAX
    params = mamba.MambaParams(
        w_in=to_jax(arr["in_proj.weight"].T),
        conv=ConvParams(w=to_jax(arr["conv1d.weight"][:, 0, :].T), b=to_jax(arr["conv1d.bias"])),
        ssm=SelectiveSSMParams(
            w_in=None,
            w_xproj=to_jax(arr["x_proj.weight"].T),
            w_dt=to_jax(arr["dt_proj.weight"].T),
            b_dt=to_jax(arr["dt_proj.bias"]),
            A_log=to_jax(arr["A_log"]),
            D=to_jax(arr["D"]),
        ),
        w_out=to_jax(arr["out_proj.weight"].T),
    )
    return RNNParams(cell=params, initial=None, family=cells.as_family(mamba))


def to_mambapy(params: Any) -> dict[str, np.ndarray]:
    """A mambapy ``MambaBlock`` ``state_dict`` (NumPy arrays) from a Mamba layer or its ``MambaParams``.

    The inverse of ``from_mambapy`` (bit for bit): load it with
    ``block.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``. Any pytree of
    ``MambaParams`` structure converts the same way (e.g. gradients, for comparing with torch's).
    """
    if isinstance(params, RNNParams):
        params = params.cell
    if not isinstance(params, mamba.MambaParams):
        raise ValueError(f"Expected a Mamba layer (RNNParams) or MambaParams, got {type(params).__name__}.")
    if params.ssm.w_in is not None:
        raise ValueError("Expected params.ssm without an in-projection (w_in None), as in a Mamba block.")
    ssm = params.ssm
    return {
        "in_proj.weight": as_numpy(params.w_in).T,
        "conv1d.weight": as_numpy(params.conv.w).T[:, None, :],
        "conv1d.bias": as_numpy(params.conv.b),
        "x_proj.weight": as_numpy(ssm.w_xproj).T,
        "dt_proj.weight": as_numpy(ssm.w_dt).T,
        "dt_proj.bias": as_numpy(ssm.b_dt),
        "A_log": as_numpy(ssm.A_log),
        "D": as_numpy(ssm.D),
        "out_proj.weight": as_numpy(params.w_out).T,
    }


def carry_from_mambapy(cache: Any) -> mamba.MambaCarry:
    """A ``MambaCarry`` from mambapy's per-block cache ``(h, inputs)``.

    ``h`` ``(B, ED, N)`` is the SSM's state as is; ``inputs`` ``(B, ED, d_conv − 1)``
    (channels first) becomes the window ``(B, d_conv − 1, ED)``. mambapy's ``h = None`` (its
    start) has no shape to read: pass zeros, or use ``mamba.initial_carry``.
    """
    if not (isinstance(cache, (tuple, list)) and len(cache) == 2):
        raise ValueError(f"Expected mambapy's cache as a pair (h, inputs), got {type(cache).__name__}.")
    h, inputs = cache
    if h is None:
        raise ValueError("Expected the cache's h as an array (B, ED, N), got None: pass zeros of that shape.")
    h, inputs = as_numpy(h), as_numpy(inputs)
    if h.ndim < 2 or inputs.ndim < 2 or h.shape[:-1] != inputs.shape[:-1]:
        raise ValueError(
            f"Expected h (*batch, ED, N) and inputs (*batch, ED, d_conv − 1), got shapes {h.shape} and {inputs.shape}."
        )
    return mamba.MambaCarry(window=to_jax(np.swapaxes(inputs, -1, -2)), state=to_jax(h))


def carry_to_mambapy(carry: mamba.MambaCarry) -> tuple[np.ndarray, np.ndarray]:
    """mambapy's cache ``(h, inputs)`` (NumPy) from a ``MambaCarry``: the inverse of ``carry_from_mambapy``."""
    if not isinstance(carry, mamba.MambaCarry):
        raise ValueError(f"Expected a MambaCarry, got {type(carry).__name__}.")
    return as_numpy(carry.state), np.swapaxes(as_numpy(carry.window), -1, -2)
