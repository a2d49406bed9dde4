"""Weights and states to and from recurrentgemma's ``RGLRU`` and ``RecurrentBlock`` (Hawk).

recurrentgemma (google-deepmind/recurrentgemma, flax.linen) stores, for an ``RGLRU`` of width H
with ``num_heads`` heads:

    a_gate/w, input_gate/w   (heads, H/heads, H/heads)     a_gate/b, input_gate/b  (heads, H/heads)
    a_param                  (H,)

and for a ``RecurrentBlock`` (width W, ``lru_width`` L, conv width K) ``linear_y``, ``linear_x``
(``kernel`` (W, L), ``bias`` (L,)), ``linear_out`` (``kernel`` (L, W), ``bias`` (W,)),
``conv_1d`` (``w`` (K, L), ``b`` (L,)) and ``rg_lru`` as above. recurrax keeps the same arrays
(kernels ``(in, out)`` on both sides, conv taps in the same order), the gate biases flat
``(H,)``: conversion is a reshape, bit for bit both ways. Only the real-valued RG-LRU
(recurrentgemma's default ``only_real=True``) exists here; a complex one (``a_imag_param``) is
refused.

States: the RG-LRU's ``cache`` / ``rg_lru_state`` ``(B, H)`` is ``RGLRUCarry.h``; the block's
``RecurrentBlockCache(rg_lru_state, conv1d_state)`` is ``HawkCarry(window=conv1d_state,
state=rg_lru_state)``. Outputs match recurrentgemma's for ``segment_pos`` never 0 (a continued
stream); at a document start pass ``reset`` to ``rglru.step`` / ``hawk.step`` /
``hawk.sequence`` (see ``recurrax.cells.rglru``).

>>> import jax, recurrax
>>> from recurrax.blocks import hawk
>>> from recurrax.interop import recurrentgemma as rgi
>>> layer = recurrax.init_rnn(jax.random.key(0), hawk, 8, 8, num_heads=2)
>>> weights = rgi.to_recurrentgemma(layer)          # nested dict, recurrentgemma's names
>>> sorted(weights)
['conv_1d', 'linear_out', 'linear_x', 'linear_y', 'rg_lru']
>>> back = rgi.from_recurrentgemma(weights)
>>> bool((back.cell.lru.w_a == layer.cell.lru.w_a).all())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recurrax import cells
from recurrax._rnn_params import RNNParams
from recurrax.blocks import hawk
from recurrax.blocks._conv import ConvParams
from recurrax.cells import rglru
from recurrax.interop._common import as_numpy, check_entries, to_jax

__all__ = ["from_recurrentgemma", "to_recurrentgemma", "carry_from_recurrentgemma", "carry_to_recurrentgemma"]

_SOURCE = "recurrentgemma parameters"


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a_gate/w": array, ...}`` from a nested mapping (flax's params) or a flat one."""
    if not isinstance(tree, Mapping):
        return {prefix.rstrip("/"): as_numpy(tree)}
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}/"))
    return out


def _rglru_shapes(prefix: str, heads: int, width: int) -> dict[str, tuple]:
    block = width // heads
    return {f"{prefix}a_gate/w": (heads, block, block), f"{prefix}a_gate/b": (heads, block),
            f"{prefix}input_gate/w": (heads, block, block), f"{prefix}input_gate/b": (heads, block),
            f"{prefix}a_param": (width,)}


def _rglru_params(flat: dict[str, np.ndarray], prefix: str) -> rglru.RGLRUParams:
    if f"{prefix}a_imag_param" in flat:
        raise ValueError(
            "Expected a real-valued RG-LRU (recurrentgemma's only_real=True), got an a_imag_param: "
            "the complex RG-LRU has no recurrax counterpart."
        )
    w_a = flat.get(f"{prefix}a_gate/w")
    if w_a is None or w_a.ndim != 3 or w_a.shape[1] != w_a.shape[2]:
        shape = None if w_a is None else tuple(w_a.shape)
        raise ValueError(
            f"Expected {prefix}a_gate/w of shape (heads, H/heads, H/heads) in the {_SOURCE}, got {shape}."
        )
    heads, block = w_a.shape[0], w_a.shape[1]
    expected = _rglru_shapes(prefix, heads, heads * block)
    check_entries({k: v for k, v in flat.items() if k.startswith(prefix) and k[len(prefix):].split("/")[0]
                   in ("a_gate", "input_gate", "a_param")}, expected, _SOURCE)
    return rglru.RGLRUParams(
        w_in=None,
        w_a=to_jax(w_a),
        b_a=to_jax(flat[f"{prefix}a_gate/b"].reshape(-1)),
        w_i=to_jax(flat[f"{prefix}input_gate/w"]),
        b_i=to_jax(flat[f"{prefix}input_gate/b"].reshape(-1)),
        a_param=to_jax(flat[f"{prefix}a_param"]),
    )


def from_recurrentgemma(params: Mapping) -> RNNParams:
    """A recurrax layer from recurrentgemma's parameters of an ``RGLRU`` or a ``RecurrentBlock``.

    ``params``: the module's params as flax returns them (nested, with or without the outer
    ``"params"`` key) or flat with ``/``-joined keys (``"rg_lru/a_gate/w"``), arrays of any kind
    NumPy can read. An ``RGLRU`` gives an ``rglru`` layer, a ``RecurrentBlock`` a ``hawk`` layer;
    the dtype is the arrays'. Raises ``ValueError`` naming a missing, unexpected or misshapen key.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"Expected recurrentgemma's params as a mapping, got {type(params).__name__}.")
    while isinstance(params, Mapping) and list(params.keys()) == ["params"]:
        params = params["params"]
    flat = _flatten(params)
    if "rg_lru/a_param" not in flat and "a_param" in flat:
        cell = _rglru_params(flat, "")
        check_entries(flat, _rglru_shapes("", rglru.num_heads(cell), rglru.output_size(cell)), _SOURCE)
        return RNNParams(cell=cell, initial=None, family=cells.as_family(rglru))
    if "rg_lru/a_param" not in flat:
        raise ValueError(
            f"Expected the parameters of a recurrentgemma RGLRU (a_gate, input_gate, a_param) or RecurrentBlock "
            f"(linear_y, linear_x, conv_1d, rg_lru, linear_out), got the keys {sorted(flat)}."
        )
    lru = _rglru_params(flat, "rg_lru/")
    kernel = flat.get("linear_x/kernel")
    conv_w = flat.get("conv_1d/w")
    if kernel is None or kernel.ndim != 2 or conv_w is None or conv_w.ndim != 2:
        raise ValueError(
            f"Expected linear_x/kernel (W, L) and conv_1d/w (K, L) in the {_SOURCE}, got the keys {sorted(flat)}."
        )
    width, lru_width = kernel.shape
    hidden = flat["linear_out/kernel"].shape[-1] if "linear_out/kernel" in flat else width
    expected = {"linear_y/kernel": (width, lru_width), "linear_y/bias": (lru_width,),
                "linear_x/kernel": (width, lru_width), "linear_x/bias": (lru_width,),
                "conv_1d/w": (conv_w.shape[0], lru_width), "conv_1d/b": (lru_width,),
                "linear_out/kernel": (lru_width, hidden), "linear_out/bias": (hidden,),
                **_rglru_shapes("rg_lru/", rglru.num_heads(lru), lru_width)}
    check_entries(flat, expected, _SOURCE)
    cell = hawk.HawkParams(
        w_y=to_jax(flat["linear_y/kernel"]), b_y=to_jax(flat["linear_y/bias"]),
        w_x=to_jax(flat["linear_x/kernel"]), b_x=to_jax(flat["linear_x/bias"]),
        conv=ConvParams(to_jax(flat["conv_1d/w"]), to_jax(flat["conv_1d/b"])),
        lru=lru,
        w_out=to_jax(flat["linear_out/kernel"]), b_out=to_jax(flat["linear_out/bias"]),
    )
    return RNNParams(cell=cell, initial=None, family=cells.as_family(hawk))


def _cell(params: Any) -> Any:
    cell = params.cell if isinstance(params, RNNParams) else params
    if not isinstance(cell, (rglru.RGLRUParams, hawk.HawkParams)):
        raise ValueError(f"Expected an rglru or hawk layer (or its cell params), got {type(cell).__name__}.")
    return cell


def _rglru_export(cell: rglru.RGLRUParams) -> dict:
    if cell.w_in is not None:
        raise ValueError(
            "recurrentgemma's RGLRU has no in-projection: export an rglru cell with input_size == hidden_size "
            f"(this one has w_in of shape {tuple(cell.w_in.shape)})."
        )
    heads = rglru.num_heads(cell)
    gate = lambda w, b: {"w": np.asarray(w), "b": np.asarray(b).reshape(heads, -1)}  # noqa: E731
    return {"a_gate": gate(cell.w_a, cell.b_a), "input_gate": gate(cell.w_i, cell.b_i),
            "a_param": np.asarray(cell.a_param)}


def to_recurrentgemma(params: Any) -> dict:
    """recurrentgemma's nested params dict (NumPy arrays) of an ``rglru`` or ``hawk`` layer or cell.

    A ``hawk`` block with ``input_size ≠ hidden_size`` exports as is (recurrentgemma's block maps
    its width to itself, so such weights fit no recurrentgemma module of one ``width``).
    """
    cell = _cell(params)
    if isinstance(cell, rglru.RGLRUParams):
        return _rglru_export(cell)
    dense = lambda w, b: {"kernel": np.asarray(w), "bias": np.asarray(b)}  # noqa: E731
    return {"linear_y": dense(cell.w_y, cell.b_y), "linear_x": dense(cell.w_x, cell.b_x),
            "conv_1d": {"w": np.asarray(cell.conv.w), "b": np.asarray(cell.conv.b)},
            "rg_lru": _rglru_export(cell.lru), "linear_out": dense(cell.w_out, cell.b_out)}


def carry_from_recurrentgemma(state: Any, params: Any) -> Any:
    """The carry for recurrentgemma's state: an RGLRU's ``h`` ``(B, H)``, or a block's
    ``RecurrentBlockCache`` (or a mapping with ``rg_lru_state`` and ``conv1d_state``)."""
    cell = _cell(params)
    if isinstance(cell, rglru.RGLRUParams):
        return rglru.RGLRUCarry(to_jax(as_numpy(state)))
    if isinstance(state, Mapping):
        h, conv = state.get("rg_lru_state"), state.get("conv1d_state")
    else:
        h, conv = getattr(state, "rg_lru_state", None), getattr(state, "conv1d_state", None)
    if h is None or conv is None:
        raise ValueError(
            "Expected a RecurrentBlockCache (rg_lru_state, conv1d_state) for a hawk layer, "
            f"got {type(state).__name__}."
        )
    return hawk.HawkCarry(window=to_jax(as_numpy(conv)), state=to_jax(as_numpy(h)))


def carry_to_recurrentgemma(carry: Any) -> Any:
    """recurrentgemma's state of a carry: ``h`` for an ``RGLRUCarry``, ``{"rg_lru_state", "conv1d_state"}``
    for a ``HawkCarry`` (the fields of its ``RecurrentBlockCache``)."""
    if isinstance(carry, rglru.RGLRUCarry):
        return np.asarray(carry.h)
    if isinstance(carry, hawk.HawkCarry):
        return {"rg_lru_state": np.asarray(carry.state), "conv1d_state": np.asarray(carry.window)}
    raise ValueError(f"Expected an RGLRUCarry or a HawkCarry, got {type(carry).__name__}.")
