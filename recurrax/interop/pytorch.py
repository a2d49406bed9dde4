"""PyTorch ``nn.RNN`` / ``LSTM`` / ``GRU``, their ``*Cell`` classes and ``nn.Linear``, both ways.

Works on ``state_dict``s of NumPy arrays or tensors: importing never imports torch.

Layouts. PyTorch stores ``weight_ih`` as ``(G·H, D)`` and applies ``W x``; recurrax stores
``w_x`` as ``(D, G·H)`` and applies ``x @ w_x``, so weights are transposed. Gate orders agree:
LSTM **i, f, g, o**, GRU **r, z, n**, and PyTorch's GRU is recurrax's default reset-after GRU,
``h' = (1 − z) ⊙ n + z ⊙ h``. ``nn.RNN(nonlinearity=...)`` is an Elman layer with ``tanh`` or
``relu``. Multi-layer modules become ``StackParams`` (bidirectional layers a
``BidirectionalParams`` with ``merge="concat"``, as PyTorch concatenates directions); cells
become one ``RNNParams`` layer. Run them with ``recurrax.stack`` / ``recurrax.rnn`` and
``lengths``: the outputs equal ``pack_padded_sequence`` runs, zero at padded steps.

**Bias convention.** PyTorch has two biases per gate, recurrax one (plus the GRU's ``b_hn``,
which sits inside ``r ⊙ (·)``): import sums ``b = b_ih + b_hh`` (for the GRU's r and z blocks;
its n block keeps ``b_in = bias_ih``'s n block and ``b_hn = bias_hh``'s n block). Export puts
all of ``b`` in ``bias_ih`` and zeros in ``bias_hh`` (except the GRU's n block, which holds
``b_hn``); the sum skips zero terms, so export followed by import is bit-identical.

``proj_size > 0`` (LSTM projections) has no recurrax equivalent and raises a ``ValueError``.

``nn.Linear`` (``weight`` ``(out, in)``, ``bias``) is a dense head for ``recurrax.dense``,
``DenseParams(w=weight.T, b=bias)`` (``bias=False`` imports a zero ``b``).

>>> import numpy as np
>>> from recurrax.interop import from_torch, to_torch
>>> rng = np.random.default_rng(0)
>>> sd = {"weight_ih_l0": rng.normal(size=(16, 3)), "weight_hh_l0": rng.normal(size=(16, 4)),
...       "bias_ih_l0": rng.normal(size=16), "bias_hh_l0": rng.normal(size=16)}
>>> params = from_torch({k: v.astype(np.float32) for k, v in sd.items()}, "LSTM")
>>> params.layers[0].cell.w_x.shape
(3, 16)
>>> sorted(to_torch(params))
['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from recurrax._layers import BidirectionalParams, DenseParams, Merge, RNNParams, StackParams
from recurrax.interop import _common as c

__all__ = ["carry_from_torch", "carry_to_torch", "from_torch", "to_torch"]

_FAMILY = {"RNN": "elman", "LSTM": "lstm", "GRU": "gru"}
_KIND = {"elman": "RNN", "lstm": "LSTM", "gru": "GRU"}
_KINDS = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "Linear")
_PROJ = (
    "proj_size > 0 (an LSTM with projections, PyTorch's weight_hr_l* keys) has no recurrax "
    "equivalent: recurrax's LSTM outputs its hidden state h of hidden_size. Use proj_size=0."
)


def _kind(kind: Any) -> str:
    name = str(kind).removeprefix("nn.").removeprefix("torch.nn.")
    if name not in _KINDS:
        raise ValueError(f"Expected the PyTorch module kind in {list(_KINDS)}, got {kind!r}.")
    return name


def _cell_params(family: str, w_ih, w_hh, b_ih, b_hh, nonlinearity: str) -> RNNParams:
    hidden = w_hh.shape[1]
    if b_ih is None:  # bias=False
        b_ih = b_hh = np.zeros(w_hh.shape[0], w_hh.dtype)
    w_x, w_h = w_ih.T, w_hh.T
    if family == "lstm":
        return c.lstm_layer(w_x, w_h, c.fold(b_ih, b_hh))
    if family == "gru":
        b = np.concatenate([c.fold(b_ih[: 2 * hidden], b_hh[: 2 * hidden]), b_ih[2 * hidden :]])
        return c.gru_layer(w_x, w_h, b, b_hh[2 * hidden :])
    return c.elman_layer(w_x, w_h, c.fold(b_ih, b_hh), nonlinearity)


def _from_linear(sd: dict, bias: bool) -> DenseParams:
    source = "nn.Linear state_dict"
    weight = c.require_2d(sd.get("weight"), "weight", "(out_features, in_features)", source)
    expected = {"weight": weight.shape}
    if bias:
        expected["bias"] = weight.shape[:1]
    hint = "" if ("bias" in sd) == bias else f" Check bias={bias} (the module's setting)."
    c.check_entries(sd, expected, source, hint)
    return c.dense_layer(weight.T, sd.get("bias"))


def from_torch(
    state_dict: Any,
    kind: str | None = None,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    bias: bool = True,
    nonlinearity: str = "tanh",
    proj_size: int = 0,
):
    """Convert a PyTorch recurrent module's (or ``nn.Linear``'s) ``state_dict`` to recurrax params.

    Args:
      state_dict: a mapping of key to NumPy array or tensor (torch is not needed for arrays),
        or a torch module itself, whose configuration then overrides the options below.
      kind: ``"RNN"``, ``"LSTM"``, ``"GRU"``, ``"RNNCell"``, ``"LSTMCell"``, ``"GRUCell"`` or
        ``"Linear"``.
      num_layers, bidirectional, bias, nonlinearity, proj_size: the module's constructor
        arguments (PyTorch's defaults). The state_dict must hold exactly the keys they imply.

    Returns:
      ``StackParams`` for ``RNN``/``LSTM``/``GRU`` (``num_layers`` layers, each an
      ``RNNParams`` or a concat ``BidirectionalParams``), one ``RNNParams`` for a ``*Cell``,
      ``DenseParams`` (``w`` ``(in, out)``) for a ``Linear``.

    Raises:
      ValueError: a missing or unexpected key (a layer count that does not match shows as one),
        a wrong shape (naming the key and the expected shape), or ``proj_size > 0``.

    >>> import numpy as np
    >>> sd = {"weight_ih": np.ones((4, 3), np.float32), "weight_hh": np.eye(4, dtype=np.float32)}
    >>> from_torch(sd, "RNNCell", bias=False, nonlinearity="relu").cell.activation.name
    'relu'
    >>> from_torch({"weight": np.ones((2, 3), np.float32)}, "Linear", bias=False).w.shape
    (3, 2)
    """
    if hasattr(state_dict, "state_dict") and callable(state_dict.state_dict):  # a torch module
        module = state_dict
        kind = type(module).__name__
        num_layers = getattr(module, "num_layers", 1)
        bidirectional = bool(getattr(module, "bidirectional", False))
        # nn.Linear's bias is a tensor or None; the recurrent modules' is their bool option
        bias = module.bias is not None if kind == "Linear" else bool(module.bias)
        nonlinearity = getattr(module, "nonlinearity", "tanh")
        proj_size = getattr(module, "proj_size", 0)
        state_dict = module.state_dict()
    if kind is None:
        raise ValueError(
            "Pass the module kind, e.g. from_torch(state_dict, 'LSTM'), or the torch module itself."
        )
    kind = _kind(kind)
    if kind == "Linear":
        if num_layers != 1 or bidirectional:
            raise ValueError(
                f"nn.Linear has one layer and one direction, got num_layers={num_layers}, "
                f"bidirectional={bidirectional}."
            )
        return _from_linear({str(k): c.as_numpy(v) for k, v in dict(state_dict).items()}, bias)
    is_cell = kind.endswith("Cell")
    family = _FAMILY[kind.removesuffix("Cell")]
    if family == "elman" and nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            f"Expected nonlinearity 'tanh' or 'relu' (PyTorch's nn.RNN), got {nonlinearity!r}."
        )
    sd = {str(k): c.as_numpy(v) for k, v in dict(state_dict).items()}
    if proj_size or any(k.startswith("weight_hr") for k in sd):
        raise ValueError(_PROJ)
    if is_cell and (num_layers != 1 or bidirectional):
        raise ValueError(
            f"nn.{kind} has one layer and one direction, got num_layers={num_layers}, "
            f"bidirectional={bidirectional}."
        )
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"Expected num_layers a positive int, got {num_layers!r}.")

    gates = c.GATES[family]
    source = f"nn.{kind} state_dict"
    first = "" if is_cell else "_l0"
    hidden = c.require_2d(
        sd.get("weight_hh" + first),
        "weight_hh" + first,
        f"({gates}*hidden_size, hidden_size)",
        source,
    ).shape[1]
    features = c.require_2d(
        sd.get("weight_ih" + first), "weight_ih" + first, f"({gates * hidden}, input_size)", source
    ).shape[1]
    directions = ("", "_reverse") if bidirectional else ("",)
    expected: dict[str, tuple] = {}
    for index in range(num_layers):
        size = features if index == 0 else hidden * len(directions)
        for direction in directions:
            suffix = "" if is_cell else f"_l{index}{direction}"
            expected[f"weight_ih{suffix}"] = (gates * hidden, size)
            expected[f"weight_hh{suffix}"] = (gates * hidden, hidden)
            if bias:
                expected[f"bias_ih{suffix}"] = (gates * hidden,)
                expected[f"bias_hh{suffix}"] = (gates * hidden,)
    hint = ""
    if not is_cell:
        found = {int(m.group(1)) for k in sd if (m := re.search(r"_l(\d+)", k))}
        if found and max(found) + 1 != num_layers:
            hint = (
                f" The state_dict has keys for {max(found) + 1} layers, but num_layers={num_layers}: "
                "the layer count does not match."
            )
        elif any(k.endswith("_reverse") for k in sd) != bidirectional:
            hint = f" Check bidirectional={bidirectional} (the module's setting)."
        elif any(k.startswith("bias") for k in sd) != bias:
            hint = f" Check bias={bias} (the module's setting)."
    c.check_entries(sd, expected, source, hint)

    def convert(suffix: str) -> RNNParams:
        get = sd.get
        return _cell_params(
            family,
            sd[f"weight_ih{suffix}"],
            sd[f"weight_hh{suffix}"],
            get(f"bias_ih{suffix}"),
            get(f"bias_hh{suffix}"),
            nonlinearity,
        )

    if is_cell:
        return convert("")
    layers = []
    for index in range(num_layers):
        fwd = convert(f"_l{index}")
        if bidirectional:
            layers.append(
                BidirectionalParams(
                    forward=fwd, backward=convert(f"_l{index}_reverse"), merge=Merge("concat")
                )
            )
        else:
            layers.append(fwd)
    return StackParams(layers=tuple(layers))


def _export_cell(params: RNNParams, suffix: str, bias: bool, where: str) -> tuple[str, dict, str]:
    family, cell = c.describe(params, "PyTorch")
    arrays = c.numpy_cell(cell)
    w_x, w_h, b = arrays["w_x"], arrays["w_h"], arrays["b"]
    hidden = w_h.shape[0]
    nonlinearity = "tanh"
    if family == "gru":
        if cell.b_hn is None:
            raise ValueError(
                "PyTorch's GRU is reset-after: a reset-before GRU (b_hn=None) has no nn.GRU equivalent."
            )
        b_hh = np.concatenate([np.zeros(2 * hidden, b.dtype), arrays["b_hn"]])
    else:
        b_hh = np.zeros_like(b)
    if family == "elman":
        nonlinearity = cell.activation.name
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nn.RNN supports nonlinearity 'tanh' or 'relu', this {where} uses {nonlinearity!r}."
            )
    out = {
        f"weight_ih{suffix}": np.ascontiguousarray(w_x.T),
        f"weight_hh{suffix}": np.ascontiguousarray(w_h.T),
    }
    if bias:
        out[f"bias_ih{suffix}"] = np.array(b)
        out[f"bias_hh{suffix}"] = b_hh
    elif np.any(b != 0) or np.any(b_hh != 0):
        raise ValueError(f"bias=False, but the {where} has nonzero biases; export with bias=True.")
    return family, out, nonlinearity


def to_torch(params: Any, *, bias: bool = True, tensors: bool = False) -> dict:
    """Export recurrax params as a PyTorch ``state_dict`` (NumPy arrays; tensors if asked).

    ``StackParams`` become the keys of ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``*_l{k}`` and
    ``*_l{k}_reverse``); all layers must share the family and hidden size, and be all
    bidirectional (``merge="concat"``) or none. An ``RNNParams`` becomes an ``nn.*Cell``'s keys.
    Biases follow the module's bias convention (all of ``b`` in ``bias_ih``). A ``DenseParams``
    head becomes an ``nn.Linear``'s ``weight`` ``(out, in)`` and ``bias``. Load with
    ``module.load_state_dict(to_torch(params, tensors=True))``.

    Args:
      params: ``StackParams`` or ``RNNParams`` of ``lstm``, ``gru`` (reset-after) or ``elman``
        (``tanh``/``relu``) layers, without learned initial states or peepholes, or a
        ``DenseParams``.
      bias: ``False`` for a module built with ``bias=False`` (the biases must then be zero).
      tensors: return ``torch.Tensor`` values (imports torch) instead of NumPy arrays.

    >>> import jax
    >>> import recurrax
    >>> params = recurrax.init_stack(jax.random.key(0), 3, [4, 4], cell="gru", bidirectional=True)
    >>> sd = to_torch(params)
    >>> sd["weight_ih_l1_reverse"].shape, sd["bias_hh_l0"].shape
    ((12, 8), (12,))
    """
    out: dict[str, Any] = {}
    if isinstance(params, DenseParams):
        kernel, b = c.dense_arrays(params, "bias", bias)
        out["weight"] = np.ascontiguousarray(kernel.T)
        if b is not None:
            out["bias"] = np.array(b)
    elif isinstance(params, RNNParams):
        _, out, _ = _export_cell(params, "", bias, "layer")
    else:
        layers = c.stack_layers(params)
        kinds = set()
        for index, layer in enumerate(layers):
            if isinstance(layer, BidirectionalParams):
                if layer.merge.name != "concat":
                    raise ValueError(
                        f"PyTorch concatenates directions: layer {index} has merge={layer.merge.name!r}."
                    )
                directions = [("", layer.forward), ("_reverse", layer.backward)]
            else:
                directions = [("", layer)]
            for direction, part in directions:
                where = f"layer {index}{' (reverse)' if direction else ''}"
                family, arrays, nonlinearity = _export_cell(
                    part, f"_l{index}{direction}", bias, where
                )
                hidden = np.shape(part.cell.w_h)[0]
                kinds.add((family, nonlinearity, hidden, len(directions)))
                out.update(arrays)
        if len(kinds) != 1:
            raise ValueError(
                "A PyTorch recurrent module has one family, nonlinearity, hidden size and direction "
                f"count for all layers; these layers have (family, nonlinearity, hidden, directions) "
                f"{sorted(kinds)}."
            )
    if tensors:
        import torch

        return {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
    return out


def _layers_and_directions(params: Any) -> list[tuple[RNNParams, ...]]:
    return [
        (layer.forward, layer.backward) if isinstance(layer, BidirectionalParams) else (layer,)
        for layer in c.stack_layers(params)
    ]


def carry_from_torch(hx: Any, params: Any) -> Any:
    """Convert PyTorch initial/final states to recurrax carries for ``params``.

    For modules (``StackParams``): ``hx`` is ``h`` of shape ``(num_layers * num_directions,
    *batch, H)`` for ``RNN``/``GRU``, or the pair ``(h, c)`` for ``LSTM`` (PyTorch's order,
    which recurrax's ``LSTMCarry(h, c)`` shares). Returns one carry per layer (a
    ``(forward, backward)`` pair for bidirectional layers), ready for ``stack(carries=...)``.
    For a cell (``RNNParams``): ``h`` or ``(h, c)`` of shape ``(*batch, H)``, returns one carry.

    >>> import jax, numpy as np, recurrax
    >>> params = recurrax.init_stack(jax.random.key(0), 3, [4, 4], cell="lstm")
    >>> h0 = np.zeros((2, 5, 4), np.float32)
    >>> carry_from_torch((h0, h0), params)[1].c.shape
    (5, 4)
    """
    if isinstance(params, RNNParams):
        family = params.family.name
        if family == "lstm":
            h, cc = hx
            return c.make_carry(family, c.as_numpy(h), c.as_numpy(cc))
        return c.make_carry(family, c.as_numpy(hx))
    layers = _layers_and_directions(params)
    family = layers[0][0].family.name
    if family == "lstm":
        h, cc = (c.as_numpy(v) for v in hx)
    else:
        h, cc = c.as_numpy(hx), None
    rows = sum(len(directions) for directions in layers)
    if h.shape[0] != rows:
        raise ValueError(
            f"Expected initial states with leading dimension num_layers * num_directions = {rows}, "
            f"got shape {h.shape}."
        )
    out, row = [], 0
    for directions in layers:
        carries = []
        for _ in directions:
            carries.append(c.make_carry(family, h[row], None if cc is None else cc[row]))
            row += 1
        out.append(tuple(carries) if len(carries) == 2 else carries[0])
    return tuple(out)


def carry_to_torch(carries: Any, params: Any) -> Any:
    """The inverse of ``carry_from_torch``: recurrax carries to PyTorch's ``h`` or ``(h, c)``.

    Final carries of ``recurrax.stack`` become ``h_n`` (and ``c_n``) as ``nn.LSTM`` returns
    them, ``(num_layers * num_directions, *batch, H)``, as NumPy arrays.

    >>> import jax, jax.numpy as jnp, recurrax
    >>> params = recurrax.init_stack(jax.random.key(0), 3, [4], cell="gru", bidirectional=True)
    >>> finals, _ = recurrax.stack(params, jnp.ones((2, 5, 3)))
    >>> carry_to_torch(finals, params).shape
    (2, 2, 4)
    """
    if isinstance(params, RNNParams):
        if params.family.name == "lstm":
            return np.asarray(carries.h), np.asarray(carries.c)
        return np.asarray(carries.h)
    layers = _layers_and_directions(params)
    if len(carries) != len(layers):
        raise ValueError(f"Expected one carry per layer ({len(layers)}), got {len(carries)}.")
    flat = []
    for directions, carry in zip(layers, carries):
        flat.extend(carry if len(directions) == 2 else [carry])
    h = np.stack([np.asarray(carry.h) for carry in flat])
    if layers[0][0].family.name == "lstm":
        return h, np.stack([np.asarray(carry.c) for carry in flat])
    return h
