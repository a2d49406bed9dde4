"""Keras 3 ``LSTM``, ``GRU``, ``SimpleRNN``, ``Bidirectional`` and ``Dense``, to and from recurrax.

Works on ``layer.get_weights()`` lists (NumPy arrays; keras is never imported): ``kernel``
``(D, G·H)``, ``recurrent_kernel`` ``(H, G·H)`` and, with ``use_bias``, ``bias``. Keras stores
kernels ``(in, out)`` like recurrax, so only gate blocks move:

- ``LSTM``: gate order i, f, c, o = recurrax's i, f, g, o; one bias. Identical layout.
- ``GRU``: gate order **z, r, h** (z first), reordered to recurrax's r, z, n.
  ``reset_after=True`` (Keras's default) is recurrax's default reset-after GRU, with the same
  update ``h' = z ⊙ h + (1 − z) ⊙ h̃``; its ``bias`` is ``(2, 3H)`` (input row, recurrent row):
  import sums the rows for r and z, keeps the input row's h block as ``b``'s n block and the
  recurrent row's h block as ``b_hn``. Export puts ``b`` in the input row and only ``b_hn``
  in the recurrent row, so export then import is bit-identical.
  ``reset_after=False`` is recurrax's reset-before GRU (``b_hn=None``), whose update gate weighs
  the *candidate* (``h' = (1 − z) ⊙ h + z ⊙ h̃``), the opposite of Keras's: the z blocks of
  both kernels and of the bias are negated (``σ(−a) = 1 − σ(a)``), exactly, both ways.
- ``SimpleRNN``: an Elman layer (``activation`` ``"tanh"`` or ``"relu"``).
- ``Bidirectional``: the forward layer's weights then the backward layer's; a
  ``BidirectionalParams`` with ``merge_mode`` ``concat``/``sum``/``ave`` as ``concat``/``sum``/``mean``.
- ``Dense``: ``kernel`` ``(in, out)`` and ``bias``, a ``DenseParams`` head for ``recurrax.dense``
  (``activation=None`` only; ``use_bias=False`` imports a zero ``b``).

Keras's padded batches use a ``mask`` (``Masking`` or ``mask=``); recurrax's ``lengths`` give the
same valid outputs and final states (Keras repeats the last output at masked steps, recurrax
writes zeros). Only Keras's default activations (``tanh``, recurrent ``sigmoid``) convert.
A layer with ``go_backwards=True`` is refused (params hold no direction): convert its
``get_weights()`` and run ``recurrax.rnn(..., reverse=True)``; Keras's outputs are those flipped
in time (``jnp.flip(ys, axis=-2)``), its final states the final carry.

>>> import numpy as np
>>> from recurrax.interop import from_keras, to_keras
>>> weights = [np.ones((3, 12), np.float32), np.zeros((4, 12), np.float32), np.zeros((2, 12), np.float32)]
>>> params = from_keras(weights, "GRU")
>>> params.cell.b_hn.shape
(4,)
>>> [w.shape for w in to_keras(params)]
[(3, 12), (4, 12), (2, 12)]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recurrax._layers import BidirectionalParams, DenseParams, Merge, RNNParams
from recurrax.interop import _common as c

__all__ = ["carry_from_keras", "carry_to_keras", "from_keras", "to_keras"]

_FAMILY = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "elman"}
_MERGE = {"concat": "concat", "sum": "sum", "ave": "mean"}
_MERGE_BACK = {v: k for k, v in _MERGE.items()}


def _check_config(config: dict, kind: str) -> None:
    activation = config.get("activation", "tanh")
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(
            f"Keras {kind} with activation={activation!r} has no recurrax equivalent; expected {allowed}."
        )
    recurrent = config.get("recurrent_activation", "sigmoid")
    if kind != "SimpleRNN" and recurrent != "sigmoid":
        raise ValueError(
            f"Keras {kind} with recurrent_activation={recurrent!r} has no recurrax equivalent "
            "(recurrax gates use the sigmoid)."
        )


def _from_layer(layer: Any) -> dict:
    """Options read off a Keras layer object."""
    kind = type(layer).__name__
    options: dict[str, Any] = {"bidirectional": kind == "Bidirectional"}
    if kind == "Dense":
        config = layer.get_config()
        return dict(options, kind=kind, use_bias=config.get("use_bias", True),
                    activation=config.get("activation", "linear"))
    if kind == "Bidirectional":
        merge = layer.merge_mode
        if merge not in _MERGE:
            raise ValueError(
                f"Keras Bidirectional merge_mode={merge!r} has no recurrax equivalent; "
                f"expected one of {list(_MERGE)}."
            )
        options["merge_mode"] = merge
        inner = layer.forward_layer
        if type(layer.backward_layer).__name__ != type(inner).__name__:
            raise ValueError(
                "Keras Bidirectional with different forward and backward layer types is not supported."
            )
        kind = type(inner).__name__
    else:
        inner = layer
    config = inner.get_config()
    _check_config(config, kind)
    options.update(
        kind=kind,
        use_bias=config.get("use_bias", True),
        activation=config.get("activation", "tanh"),
    )
    if kind == "GRU":
        options["reset_after"] = config.get("reset_after", True)
    if config.get("go_backwards", False):
        _refuse_go_backwards(options)
    return options


def _refuse_go_backwards(options: dict) -> None:
    """``go_backwards=True`` is how a layer runs, not weights: params alone would run forwards."""
    kind = options["kind"]
    if options["bidirectional"]:
        raise ValueError(
            f"Expected a Keras Bidirectional({kind}) whose forward layer runs forwards and "
            "backward layer backwards, as Bidirectional(layer) builds them; got a forward layer "
            "with go_backwards=True, which has no recurrax equivalent."
        )
    call = [repr(kind)] + [
        f"{name}={options[name]!r}"
        for name, default in (("use_bias", True), ("reset_after", True), ("activation", "tanh"))
        if options.get(name, default) != default
    ]
    raise ValueError(
        f"Expected a Keras {kind} with go_backwards=False, got go_backwards=True: recurrax params "
        "hold no direction, so the converted layer would run forwards. Convert the weights alone, "
        f"params = from_keras(layer.get_weights(), {', '.join(call)}), and run "
        "recurrax.rnn(params, xs, reverse=True): its final carry is Keras's final state, and "
        "its outputs flipped in time, jnp.flip(ys, axis=-2), are Keras's outputs (last input "
        "step first; with a mask, Keras's padded steps come first)."
    )


def _shapes(
    kind: str, features: int, hidden: int, use_bias: bool, reset_after: bool
) -> list[tuple[str, tuple]]:
    gates = c.GATES[_FAMILY[kind]] * hidden
    names = [("kernel", (features, gates)), ("recurrent_kernel", (hidden, gates))]
    if use_bias:
        names.append(("bias", (2, gates) if kind == "GRU" and reset_after else (gates,)))
    return names


def _import_direction(
    kind: str, arrays: dict, hidden: int, reset_after: bool, activation: str
) -> RNNParams:
    kernel, recurrent = arrays["kernel"], arrays["recurrent_kernel"]
    bias = arrays.get("bias")
    if kind == "LSTM":
        return c.lstm_layer(
            kernel, recurrent, np.zeros(4 * hidden, kernel.dtype) if bias is None else bias
        )
    if kind == "SimpleRNN":
        return c.elman_layer(
            kernel, recurrent, np.zeros(hidden, kernel.dtype) if bias is None else bias, activation
        )
    zx, rx, hx = c.blocks(kernel, 3)
    zh, rh, hh = c.blocks(recurrent, 3)
    if reset_after:
        if bias is None:
            bias = np.zeros((2, 3 * hidden), kernel.dtype)
        (bz, br, bn), (rz, rr, rn) = c.blocks(bias[0], 3), c.blocks(bias[1], 3)
        b = np.concatenate([c.fold(br, rr), c.fold(bz, rz), bn])
        return c.gru_layer(np.concatenate([rx, zx, hx], 1), np.concatenate([rh, zh, hh], 1), b, rn)
    if bias is None:
        bias = np.zeros(3 * hidden, kernel.dtype)
    bz, br, bn = c.blocks(bias, 3)
    return c.gru_layer(
        np.concatenate([rx, -zx, hx], 1),
        np.concatenate([rh, -zh, hh], 1),
        np.concatenate([br, -bz, bn]),
        None,
    )


def _import_dense(weights: Any, use_bias: bool, activation: Any) -> DenseParams:
    if activation not in ("linear", None):
        raise ValueError(
            f"Keras Dense with activation={activation!r} has no recurrax equivalent "
            "(recurrax.dense is affine); expected 'linear' (activation=None): apply the "
            "activation to recurrax.dense's output."
        )
    arrays = [c.as_numpy(w) for w in weights]
    source = "Keras Dense weights"
    if len(arrays) != (2 if use_bias else 1):
        raise ValueError(
            f"Expected {2 if use_bias else 1} arrays in the {source} (kernel"
            f"{', bias' if use_bias else ''}; use_bias={use_bias}), got {len(arrays)}."
        )
    kernel = c.require_2d(arrays[0], "weights[0] (kernel)", "(input_dim, units)", source)
    expected = {"weights[0] (kernel)": kernel.shape}
    if use_bias:
        expected["weights[1] (bias)"] = kernel.shape[1:]
    c.check_entries(dict(zip(expected, arrays)), expected, source)
    return c.dense_layer(kernel, arrays[1] if use_bias else None)


def from_keras(
    weights: Any,
    kind: str | None = None,
    *,
    bidirectional: bool = False,
    merge_mode: str = "concat",
    use_bias: bool = True,
    reset_after: bool = True,
    activation: str | None = None,
):
    """Convert a Keras 3 recurrent layer's (or ``Dense`` layer's) weights to recurrax params.

    Args:
      weights: ``layer.get_weights()``, or the Keras layer itself (its configuration then
        overrides the options below; a ``Bidirectional`` layer gives ``bidirectional=True``).
      kind: ``"LSTM"``, ``"GRU"``, ``"SimpleRNN"`` (the wrapped layer's class for
        ``Bidirectional``) or ``"Dense"``.
      bidirectional, merge_mode: the weights are a ``Bidirectional`` wrapper's (forward then
        backward), merged with ``merge_mode`` ``"concat"``, ``"sum"`` or ``"ave"``.
      use_bias, reset_after, activation: the layer's constructor arguments (Keras's defaults;
        ``activation=None`` is ``"tanh"``, or ``"linear"`` for ``Dense``).

    Returns:
      ``RNNParams``, or ``BidirectionalParams`` when ``bidirectional``; ``DenseParams`` for
      ``Dense``.

    Raises:
      ValueError: a wrong number of arrays or a wrong shape (naming the array and the expected
        shape), or a configuration recurrax cannot express (activations, ``merge_mode="mul"``,
        a layer with ``go_backwards=True``).

    >>> import numpy as np
    >>> w = [np.zeros((3, 4), np.float32), np.eye(4, dtype=np.float32), np.zeros(4, np.float32)]
    >>> from_keras(w + w, "SimpleRNN", bidirectional=True, merge_mode="sum").merge.name
    'sum'
    >>> from_keras([np.ones((3, 2), np.float32), np.zeros(2, np.float32)], "Dense").b.shape
    (2,)
    """
    if hasattr(weights, "get_weights"):
        options = _from_layer(weights)
        kind = options["kind"]
        bidirectional, use_bias = options["bidirectional"], options["use_bias"]
        merge_mode = options.get("merge_mode", merge_mode)
        reset_after, activation = options.get("reset_after", reset_after), options["activation"]
        weights = weights.get_weights()
    if kind == "Dense" and not bidirectional:
        return _import_dense(weights, use_bias, activation)
    if kind not in _FAMILY:
        raise ValueError(
            f"Expected the Keras layer kind in {list(_FAMILY) + ['Dense']}, got {kind!r}"
            f"{' (a Bidirectional wrapper holds a recurrent layer)' if bidirectional else ''}."
        )
    if activation is None:
        activation = "tanh"
    _check_config({"activation": activation}, kind)
    if bidirectional and merge_mode not in _MERGE:
        raise ValueError(
            f"Keras Bidirectional merge_mode={merge_mode!r} has no recurrax equivalent; "
            f"expected one of {list(_MERGE)}."
        )
    arrays = [c.as_numpy(w) for w in weights]
    per = 3 if use_bias else 2
    directions = ("forward", "backward") if bidirectional else ("",)
    source = f"Keras {'Bidirectional(' + kind + ')' if bidirectional else kind} weights"
    roles = ", ".join(name for name, _ in _shapes(kind, 0, 0, use_bias, reset_after))
    if len(arrays) != per * len(directions):
        raise ValueError(
            f"Expected {per * len(directions)} arrays in the {source} ({roles}"
            f"{' for the forward then the backward layer' if bidirectional else ''}; "
            f"use_bias={use_bias}), got {len(arrays)}."
        )
    hidden = c.require_2d(
        arrays[1], "weights[1] (recurrent_kernel)", "(units, G*units)", source
    ).shape[0]
    features = c.require_2d(arrays[0], "weights[0] (kernel)", "(input_dim, G*units)", source).shape[
        0
    ]
    layers = []
    for index, direction in enumerate(directions):
        named, expected = {}, {}
        for offset, (role, shape) in enumerate(
            _shapes(kind, features, hidden, use_bias, reset_after)
        ):
            key = f"weights[{index * per + offset}] ({direction + ' ' if direction else ''}{role})"
            named[role], expected[key] = arrays[index * per + offset], shape
        c.check_entries(dict(zip(expected, named.values())), expected, source)
        layers.append(_import_direction(kind, named, hidden, reset_after, activation))
    if bidirectional:
        return BidirectionalParams(
            forward=layers[0], backward=layers[1], merge=Merge(_MERGE[merge_mode])
        )
    return layers[0]


def _export_direction(params: RNNParams, use_bias: bool) -> list[np.ndarray]:
    family, cell = c.describe(params, "Keras")
    arrays = c.numpy_cell(cell)
    w_x, w_h, b = arrays["w_x"], arrays["w_h"], arrays["b"]
    if family == "elman" and cell.activation.name not in ("tanh", "relu"):
        raise ValueError(
            f"Keras SimpleRNN conversion supports 'tanh' and 'relu', got {cell.activation.name!r}."
        )
    if family == "gru":
        (rx, zx, nx), (rh, zh, nh), (br, bz, bn) = (
            c.blocks(w_x, 3),
            c.blocks(w_h, 3),
            c.blocks(b, 3),
        )
        if cell.b_hn is not None:  # reset-after: same update convention, reorder to z, r, h
            zeros = np.zeros_like(bz)
            w_x, w_h = np.concatenate([zx, rx, nx], 1), np.concatenate([zh, rh, nh], 1)
            b_out = np.stack(
                [np.concatenate([bz, br, bn]), np.concatenate([zeros, zeros, arrays["b_hn"]])]
            )
        else:  # reset-before: Keras's z is 1 − recurrax's z
            w_x, w_h = np.concatenate([-zx, rx, nx], 1), np.concatenate([-zh, rh, nh], 1)
            b_out = np.concatenate([-bz, br, bn])
    else:
        b_out = np.array(b)
    out = [np.ascontiguousarray(w_x), np.ascontiguousarray(w_h)]
    if use_bias:
        out.append(b_out)
    elif np.any(b_out != 0):
        raise ValueError(
            "use_bias=False, but the layer has nonzero biases; export with use_bias=True."
        )
    return out


def to_keras(params: Any, *, use_bias: bool = True) -> list[np.ndarray]:
    """Export recurrax params as a Keras 3 ``layer.get_weights()`` list, for ``layer.set_weights``.

    An ``RNNParams`` of ``lstm`` → ``LSTM``, ``gru`` → ``GRU`` (``reset_after`` is
    ``params.cell.b_hn is not None``), ``elman`` → ``SimpleRNN``; a ``BidirectionalParams`` →
    ``Bidirectional`` (forward weights then backward; build it with the matching
    ``merge_mode``: concat → ``"concat"``, sum → ``"sum"``, mean → ``"ave"``); a ``DenseParams``
    → ``Dense`` (``[kernel, bias]``, or ``[kernel]`` with ``use_bias=False``).

    >>> import jax, recurrax
    >>> params = recurrax.init_bidirectional(jax.random.key(0), "lstm", 3, 4)
    >>> [w.shape for w in to_keras(params)][:3]
    [(3, 16), (4, 16), (16,)]
    """
    if isinstance(params, DenseParams):
        kernel, bias = c.dense_arrays(params, "use_bias", use_bias)
        return [np.array(kernel)] + ([] if bias is None else [np.array(bias)])
    if isinstance(params, BidirectionalParams):
        if params.merge.name not in _MERGE_BACK:
            raise ValueError(f"Keras has no merge_mode for merge={params.merge.name!r}.")
        return _export_direction(params.forward, use_bias) + _export_direction(
            params.backward, use_bias
        )
    return _export_direction(params, use_bias)


def carry_from_keras(states: Any, params: Any) -> Any:
    """Keras initial/final states to a recurrax carry for ``params``.

    Keras's order: ``[h, c]`` for ``LSTM``, ``[h]`` (or ``h``) for ``GRU`` and ``SimpleRNN``,
    each ``(batch, units)``; for ``Bidirectional`` the forward layer's states then the
    backward's (returns a ``(forward, backward)`` pair, as ``recurrax.bidirectional`` takes).

    >>> import jax, numpy as np, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    >>> h = np.zeros((2, 4), np.float32)
    >>> carry_from_keras([h, h + 1], params).c[0, 0]
    Array(1., dtype=float32)
    """
    if not isinstance(states, (list, tuple)):
        states = [states]
    states = [c.as_numpy(s) for s in states]
    directions = (
        [params.forward, params.backward] if isinstance(params, BidirectionalParams) else [params]
    )
    per = 2 if directions[0].family.name == "lstm" else 1
    if len(states) != per * len(directions):
        raise ValueError(
            f"Expected {per * len(directions)} Keras state arrays for this layer, got {len(states)}."
        )
    carries = [
        c.make_carry(layer.family.name, *states[i * per : (i + 1) * per])
        for i, layer in enumerate(directions)
    ]
    return tuple(carries) if len(carries) == 2 else carries[0]


def carry_to_keras(carry: Any, params: Any) -> list[np.ndarray]:
    """The inverse of ``carry_from_keras``: a list ``[h, c]`` / ``[h]`` (forward then backward).

    >>> import jax, jax.numpy as jnp, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "gru", 3, 4)
    >>> [s.shape for s in carry_to_keras(recurrax.gru.GRUCarry(jnp.zeros((2, 4))), params)]
    [(2, 4)]
    """
    carries = carry if isinstance(params, BidirectionalParams) else (carry,)
    out: list[np.ndarray] = []
    for part in carries:
        out.append(np.asarray(part.h))
        if hasattr(part, "c"):
            out.append(np.asarray(part.c))
    return out
