"""ncps's PyTorch ``CfC`` / ``CfCCell`` and ``LTC`` / ``LTCCell`` weights to recurrax layers, and back.

``from_ncps`` gives a ``recurrax.cells.cfc`` layer, ``from_ncps_ltc`` a ``recurrax.cells.ltc``
layer (fully connected wiring only), ``to_ncps`` the ``state_dict`` of either.

Works on ``state_dict``-like mappings of NumPy arrays (or tensors): importing never imports
ncps or torch. Keys are ncps's, either a ``CfC`` module's (``rnn_cell.ff1.weight``, ...) or a
``CfCCell``'s (``ff1.weight``, ...):

    backbone.<i>.weight (U, in), backbone.<i>.bias (U,)   the backbone's Linear layers, in order
    ff1, ff2, time_a, time_b .weight (H, F), .bias (H,)   the heads ("pure": ff1 only)
    w_tau (1, H), A (1, H)                               "pure" only

Layout: ``nn.Linear`` stores ``(out, in)`` and applies ``W x``; recurrax stores ``(in, out)``,
so kernels are transposed, and the four heads are concatenated into ``w`` (F, 4H) in the order
ff1, ff2, time_a, time_b. ``to_ncps`` writes the backbone's Linear layers at the
``nn.Sequential`` indices 0, 2, 4, ... (Linear, activation, Linear, ...), ncps's layout without
dropout; ``from_ncps`` reads any indices in increasing order (dropout layers shift them).

The mode ``"no_gate"`` has the same keys as ``"default"`` and the backbone activation is not in
a ``state_dict``: pass them. ncps's ``hx`` (B, H) is ``CfCCarry(h=hx)``. Wired CfCs (a
``sparsity_mask`` key), the mixed-memory LSTM (``lstm.*``) and the projection head (``fc.*``)
are not CfC cell weights and raise ``ValueError`` (the head converts as ``nn.Linear`` with
``recurrax.interop.from_torch(..., "Linear")``).

>>> import jax, numpy as np
>>> from recurrax.cells import cfc, ltc
>>> from recurrax.interop.ncps import from_ncps, to_ncps
>>> layer = from_ncps(to_ncps(cfc.init(jax.random.key(0), 3, 5, backbone_units=8)))
>>> (cfc.input_size(layer.cell), cfc.output_size(layer.cell))
(4, 5)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from recurrax import cells
from recurrax._layers import RNNParams
from recurrax.cells import cfc, ltc
from recurrax.interop import _common as c

__all__ = ["from_ncps", "from_ncps_ltc", "to_ncps"]

_HEADS = ("ff1", "ff2", "time_a", "time_b")
_SOURCE = "ncps CfC state_dict"
_BACKBONE = re.compile(r"backbone\.(\d+)\.(weight|bias)")


def _strip(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The entries as NumPy arrays, keys without a ``CfC`` module's ``rnn_cell.`` prefix."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"Expected a mapping of ncps weights (a state_dict), got {type(state_dict).__name__}.")
    keys = list(state_dict)
    for key in keys:
        head = str(key).split(".", 1)[0]
        if head in ("lstm", "fc"):
            what = "the mixed-memory LSTM (mixed_memory=True)" if head == "lstm" else "the projection (proj_size)"
            raise ValueError(
                f"Unexpected key {key!r}: {what} is not part of the cell. Convert the "
                "rnn_cell.* entries alone (a projection is an nn.Linear head: interop.from_torch(..., 'Linear'))."
            )
    prefixed = [k.startswith("rnn_cell.") for k in keys]
    if any(prefixed) and not all(prefixed):
        raise ValueError(
            f"Expected the keys of a CfC module (all under 'rnn_cell.') or of a CfCCell (none), got a mix: {keys}."
        )
    return {k.removeprefix("rnn_cell."): c.as_numpy(v) for k, v in state_dict.items()}


def _check_shape(sd: dict, key: str, shape: tuple) -> np.ndarray:
    if key not in sd:
        raise ValueError(f"Missing key {key!r} (expected shape {shape}) in the {_SOURCE}.")
    got = tuple(sd[key].shape)
    if got != tuple(shape):
        raise ValueError(f"Key {key!r} of the {_SOURCE} has shape {got}, expected shape {tuple(shape)}.")
    return sd[key]


def from_ncps(
    state_dict: Mapping[str, Any],
    *,
    mode: Optional[str] = None,
    activation: str = "lecun_tanh",
    elapsed_time: bool = True,
) -> RNNParams:
    """A ``cfc`` layer from an ncps ``CfC`` (or ``CfCCell``) ``state_dict``.

    Args:
      state_dict: ncps's keys (see the module docstring) to NumPy arrays or tensors.
      mode: ``"default"``, ``"no_gate"`` or ``"pure"``; ``None`` reads it off the keys
        (``"pure"`` if ``w_tau`` is there, else ``"default"``: say ``"no_gate"``).
      activation: ncps's ``activation`` / ``backbone_activation`` (default ``"lecun_tanh"``).
      elapsed_time: the layer's interface (``cfc.init``): Δt as the last input feature, or Δt = 1.

    Returns:
      ``RNNParams`` of the ``cfc`` family, arrays in the state_dict's dtype.

    Raises:
      ValueError: a missing, unexpected or misshapen key, or a mode the keys contradict.
    """
    sd = _strip(state_dict)
    for key in sd:
        if key.endswith("sparsity_mask"):
            raise ValueError(f"Unexpected key {key!r}: wired CfCs (WiredCfCCell, sparsity masks) are not supported.")
    pure = "w_tau" in sd
    if mode is None:
        mode = "pure" if pure else "default"
    config = cfc.CfCConfig(mode=mode, activation=activation, elapsed_time=elapsed_time)
    if (mode == "pure") != pure:
        raise ValueError(
            f"Expected the keys of a {mode!r} CfC ({'with' if mode == 'pure' else 'without'} w_tau and A), "
            f"got {'a' if pure else 'no'} 'w_tau' key: pass the mode the module was built with."
        )
    if "ff1.weight" not in sd:
        raise ValueError(f"Missing key 'ff1.weight' (expected shape (H, F)) in the {_SOURCE}.")
    hidden, features = sd["ff1.weight"].shape
    backbone = sorted({int(m.group(1)) for k in sd if (m := _BACKBONE.fullmatch(k))})
    expected = set()
    layers_w, layers_b = [], []
    for i, index in enumerate(backbone):
        weight, bias = f"backbone.{index}.weight", f"backbone.{index}.bias"
        # Every backbone layer has U = the heads' fan-in outputs; the first reads D + H features.
        fan_in = sd[weight].shape[-1] if i == 0 and weight in sd else features
        layers_w.append(_check_shape(sd, weight, (features, fan_in)).T)
        layers_b.append(_check_shape(sd, bias, (features,)))
        expected |= {weight, bias}
    n_in = layers_w[0].shape[0] if backbone else features
    if n_in <= hidden:
        raise ValueError(
            f"Expected the first layer's fan-in to be D + H with D ≥ 1 (H = {hidden} from ff1.weight), got {n_in}."
        )
    heads = ("ff1",) if pure else _HEADS
    w = np.concatenate([_check_shape(sd, f"{h}.weight", (hidden, features)).T for h in heads], axis=1)
    b = np.concatenate([_check_shape(sd, f"{h}.bias", (hidden,)) for h in heads])
    expected |= {f"{h}.{p}" for h in heads for p in ("weight", "bias")}
    w_tau = a = None
    if pure:
        w_tau = _check_shape(sd, "w_tau", (1, hidden))[0]
        a = _check_shape(sd, "A", (1, hidden))[0]
        expected |= {"w_tau", "A"}
    for key in sd:
        if key not in expected:
            raise ValueError(
                f"Unexpected key {key!r} (shape {tuple(sd[key].shape)}) in the {_SOURCE} of a {mode!r} CfC; "
                f"expected exactly {sorted(expected)}."
            )
    j = c.to_jax
    deep_w = deep_b = None
    if len(backbone) > 1:
        deep_w, deep_b = j(np.stack(layers_w[1:])), j(np.stack(layers_b[1:]))
    params = cfc.CfCParams(
        backbone_w=j(layers_w[0]) if backbone else None,
        backbone_b=j(layers_b[0]) if backbone else None,
        backbone_deep_w=deep_w,
        backbone_deep_b=deep_b,
        w=j(w),
        b=j(b),
        w_tau=None if w_tau is None else j(w_tau),
        a=None if a is None else j(a),
        config=config,
    )
    return RNNParams(cell=params, initial=None, family=cells.as_family(cfc))


_LTC_KEYS = ("gleak", "vleak", "cm", "sigma", "mu", "w", "erev", "sensory_sigma", "sensory_mu", "sensory_w",
             "sensory_erev", "input_w", "input_b", "output_w", "output_b")
_LTC_MASKS = ("sparsity_mask", "sensory_sparsity_mask")


def from_ncps_ltc(
    state_dict: Mapping[str, Any],
    *,
    ode_unfolds: int = 6,
    epsilon: float = 1e-8,
    implicit_param_constraints: bool = True,
    elapsed_time: bool = True,
) -> RNNParams:
    """An ``ltc`` layer from an ncps ``LTC`` (or ``LTCCell``) ``state_dict`` with a fully connected wiring.

    The keys are ncps's parameter names (``rnn_cell.gleak``, ..., ``rnn_cell.output_b``, and the
    masks ``sparsity_mask`` (N, N) and ``sensory_sparsity_mask`` (D, N), which must be all ones
    in absolute value: ``FullyConnected(N)`` with self-connections; other wirings raise). The
    arrays keep ncps's orientation (rows presynaptic) and its constrained form. The options are
    the module's (not in a ``state_dict``); note ncps's ``LTC`` defaults to
    ``implicit_param_constraints=True`` and its ``LTCCell`` to ``False``.
    """
    config = ltc.LTCConfig(ode_unfolds=ode_unfolds, epsilon=epsilon,
                           implicit_param_constraints=implicit_param_constraints, elapsed_time=elapsed_time)
    sd = _strip(state_dict)
    source = "ncps LTC state_dict"
    for key in ("gleak", "input_w"):
        if key not in sd or sd[key].ndim != 1:
            raise ValueError(f"Missing key {key!r} (a vector) in the {source} (input_mapping='affine' expected).")
    n, d = sd["gleak"].shape[0], sd["input_w"].shape[0]
    shapes = {"gleak": (n,), "vleak": (n,), "cm": (n,), "sigma": (n, n), "mu": (n, n), "w": (n, n), "erev": (n, n),
              "sensory_sigma": (d, n), "sensory_mu": (d, n), "sensory_w": (d, n), "sensory_erev": (d, n),
              "input_w": (d,), "input_b": (d,), "output_w": (n,), "output_b": (n,),
              "sparsity_mask": (n, n), "sensory_sparsity_mask": (d, n)}
    c.check_entries(sd, shapes, source, " Only ncps's FullyConnected wiring with affine input and output maps converts.")
    for key in _LTC_MASKS:
        if not np.all(np.abs(sd[key]) == 1):
            raise ValueError(
                f"Expected {key!r} all ones in absolute value (ncps's FullyConnected wiring with self-connections), "
                f"got {int(np.sum(np.abs(sd[key]) != 1))} absent synapses: sparse wirings are not supported."
            )
    params = ltc.LTCParams(**{k: c.to_jax(sd[k]) for k in _LTC_KEYS}, config=config)
    return RNNParams(cell=params, initial=None, family=cells.as_family(ltc))


def to_ncps(params: Any, *, prefix: str = "rnn_cell.") -> dict[str, np.ndarray]:
    """ncps's ``state_dict`` (NumPy arrays) of a ``cfc`` or ``ltc`` layer (or its cell params).

    ``prefix="rnn_cell."`` gives a ``CfC`` / ``LTC`` module's keys, ``prefix=""`` a cell's. Works
    on gradients too (a pytree of the params' structure), to compare them with torch's ``.grad``
    (the LTC's masks, constant, are then left out). The options (mode, activation, ODE unfolds,
    constraints) are not in a ``state_dict``: build the ncps module with ``params.config``'s.
    """
    cell = params.cell if isinstance(params, RNNParams) else params
    if isinstance(cell, ltc.LTCParams):
        out = {f"{prefix}{k}": np.asarray(getattr(cell, k)) for k in _LTC_KEYS}
        n, d = cell.gleak.shape[-1], cell.input_w.shape[-1]
        dtype = np.asarray(cell.gleak).dtype
        out[f"{prefix}sparsity_mask"] = np.ones((n, n), dtype)
        out[f"{prefix}sensory_sparsity_mask"] = np.ones((d, n), dtype)
        return out
    if not isinstance(cell, cfc.CfCParams):
        raise ValueError(f"to_ncps expects a cfc or ltc layer or their params, got {type(cell).__name__}.")
    out: dict[str, np.ndarray] = {}
    layers = []
    if cell.backbone_w is not None:
        layers.append((cell.backbone_w, cell.backbone_b))
    if cell.backbone_deep_w is not None:
        layers += list(zip(cell.backbone_deep_w, cell.backbone_deep_b))
    for i, (w, b) in enumerate(layers):  # nn.Sequential(Linear, activation, Linear, ...)
        out[f"{prefix}backbone.{2 * i}.weight"] = np.asarray(w).T
        out[f"{prefix}backbone.{2 * i}.bias"] = np.asarray(b)
    heads = ("ff1",) if cell.config.mode == "pure" else _HEADS
    for h, w, b in zip(heads, np.split(np.asarray(cell.w), len(heads), axis=1), np.split(np.asarray(cell.b), len(heads))):
        out[f"{prefix}{h}.weight"] = w.T
        out[f"{prefix}{h}.bias"] = b
    if cell.config.mode == "pure":
        out[f"{prefix}w_tau"] = np.asarray(cell.w_tau)[None]
        out[f"{prefix}A"] = np.asarray(cell.a)[None]
    return out
