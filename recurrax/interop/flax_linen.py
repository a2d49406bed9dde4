"""flax.linen ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell`` and ``Dense``.

Works on a cell's param dict (``variables["params"]["cell"]`` for an ``nn.RNN(cell)``; the
``{"params": {"cell": ...}}`` wrapping is removed if present). flax.linen keeps one ``Dense``
per gate, kernels ``(in, out)`` like recurrax; the converters concatenate / split gate blocks:

- ``LSTMCell`` and ``OptimizedLSTMCell`` (same params): ``ii, if, ig, io`` (input kernels, no
  bias) and ``hi, hf, hg, ho`` (recurrent kernels with the biases). Gate order i, f, g, o.
- ``GRUCell``: ``ir, iz, in`` (input kernels with biases), ``hr, hz`` (kernels), ``hn``
  (kernel and bias: recurrax's ``b_hn``). Update ``h' = (1 − z) ⊙ n + z ⊙ h``, as recurrax's
  reset-after GRU. Exact both ways: no biases are summed.
- ``SimpleCell``: ``i`` (kernel, bias) and ``h`` (kernel); ``residual=True`` has no equivalent.
- ``Dense``: ``kernel`` ``(in, out)`` and ``bias``, a ``DenseParams`` head for ``recurrax.dense``
  (``use_bias=False`` imports a zero ``b``).

**Carry order.** flax.linen's LSTM carry is ``(c, h)``; recurrax's is ``LSTMCarry(h, c)``:
``carry_from_flax_linen`` / ``carry_to_flax_linen`` swap them. GRU and simple carries are ``h``.

>>> import jax, recurrax
>>> from recurrax.interop import to_flax_linen
>>> params = recurrax.init_rnn(jax.random.key(0), "gru", 3, 4)
>>> sorted(to_flax_linen(params))
['hn', 'hr', 'hz', 'in', 'ir', 'iz']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recurrax._layers import DenseParams, RNNParams
from recurrax.interop import _common as c

__all__ = ["carry_from_flax_linen", "carry_to_flax_linen", "from_flax_linen", "to_flax_linen"]

_FAMILY = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "GRUCell": "gru", "SimpleCell": "elman"}


def _expected(kind: str, features: int, hidden: int) -> dict[str, tuple]:
    x, h, b = (features, hidden), (hidden, hidden), (hidden,)
    if _FAMILY[kind] == "lstm":
        out = {f"i{g}/kernel": x for g in "ifgo"}
        for g in "ifgo":
            out[f"h{g}/kernel"], out[f"h{g}/bias"] = h, b
        return out
    if kind == "GRUCell":
        return {
            "ir/kernel": x,
            "ir/bias": b,
            "iz/kernel": x,
            "iz/bias": b,
            "in/kernel": x,
            "in/bias": b,
            "hr/kernel": h,
            "hz/kernel": h,
            "hn/kernel": h,
            "hn/bias": b,
        }
    return {"i/kernel": x, "i/bias": b, "h/kernel": h}


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if not hasattr(tree, "items"):
        return {prefix.rstrip("/"): c.as_numpy(tree)}
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}/"))
    return out


def _unwrap(tree: Any) -> Any:
    while (
        hasattr(tree, "keys") and len(tree) == 1 and next(iter(tree.keys())) in ("params", "cell")
    ):
        tree = tree[next(iter(tree.keys()))]
    return tree


def _cell_kind(cell: Any, activation: str) -> tuple[str, str]:
    if isinstance(cell, str):
        if cell not in _FAMILY:
            raise ValueError(f"Expected the flax.linen cell in {list(_FAMILY)}, got {cell!r}.")
        return cell, activation
    kind = type(cell).__name__
    if kind not in _FAMILY:
        raise ValueError(f"Expected a flax.linen cell in {list(_FAMILY)}, got {kind}.")
    names = {}
    for field in ("gate_fn", "activation_fn"):
        fn = getattr(cell, field, None)
        if fn is not None:
            names[field] = getattr(fn, "__name__", repr(fn))
    if names.get("gate_fn", "sigmoid") != "sigmoid":
        raise ValueError(
            f"flax.linen {kind} with gate_fn={names['gate_fn']} has no recurrax equivalent (sigmoid)."
        )
    act = names.get("activation_fn", "tanh")
    if act not in (("tanh", "relu") if kind == "SimpleCell" else ("tanh",)):
        raise ValueError(f"flax.linen {kind} with activation_fn={act} has no recurrax equivalent.")
    if getattr(cell, "residual", False):
        raise ValueError("flax.linen SimpleCell(residual=True) has no recurrax equivalent.")
    return kind, act


def _from_dense(params: Any, module: Any) -> DenseParams:
    flat = _flatten(_unwrap(params))
    source = "flax.linen Dense params"
    kernel = c.require_2d(flat.get("kernel"), "kernel", "(in_features, features)", source)
    use_bias = "bias" in flat if isinstance(module, str) else getattr(module, "use_bias", True)
    expected = {"kernel": kernel.shape}
    if use_bias:
        expected["bias"] = kernel.shape[1:]
    c.check_entries(flat, expected, source)
    return c.dense_layer(kernel, flat.get("bias"))


def from_flax_linen(params: Any, cell: Any, *, activation: str = "tanh") -> RNNParams | DenseParams:
    """Convert a flax.linen cell's params to a recurrax layer (``RNNParams``), or ``Dense``'s to
    a ``DenseParams`` head.

    Args:
      params: the cell's param dict (``variables["params"]["cell"]`` of ``nn.RNN(cell)``, or
        the whole ``variables``); a ``Dense``'s ``variables`` or ``variables["params"]``.
      cell: ``"LSTMCell"``, ``"OptimizedLSTMCell"``, ``"GRUCell"``, ``"SimpleCell"``, ``"Dense"``,
        or the flax module itself (a cell's activations are then checked, a ``Dense``'s
        ``use_bias`` read; with the name ``"Dense"`` a missing ``bias`` means ``use_bias=False``).
      activation: ``SimpleCell``'s ``activation_fn`` (``"tanh"`` or ``"relu"``) when ``cell``
        is a name.

    Raises:
      ValueError: a missing or unexpected entry or a wrong shape (naming it, e.g.
        ``'hn/bias'``, and the expected shape).

    >>> import numpy as np
    >>> p = {"i": {"kernel": np.ones((3, 4), np.float32), "bias": np.zeros(4, np.float32)},
    ...      "h": {"kernel": np.eye(4, dtype=np.float32)}}
    >>> from_flax_linen(p, "SimpleCell").cell.w_x.shape
    (3, 4)
    >>> from_flax_linen(p["i"], "Dense").w.shape
    (3, 4)
    """
    if (cell if isinstance(cell, str) else type(cell).__name__) == "Dense":
        return _from_dense(params, cell)
    kind, activation = _cell_kind(cell, activation)
    flat = _flatten(_unwrap(params))
    source = f"flax.linen {kind} params"
    h_kernel = {"lstm": "hi/kernel", "gru": "hr/kernel", "elman": "h/kernel"}[_FAMILY[kind]]
    i_kernel = {"lstm": "ii/kernel", "gru": "ir/kernel", "elman": "i/kernel"}[_FAMILY[kind]]
    hidden = c.require_2d(flat.get(h_kernel), h_kernel, "(hidden, hidden)", source).shape[1]
    features = c.require_2d(flat.get(i_kernel), i_kernel, f"(input_size, {hidden})", source).shape[
        0
    ]
    c.check_entries(flat, _expected(kind, features, hidden), source)
    family = _FAMILY[kind]
    if family == "lstm":
        return c.lstm_layer(
            np.concatenate([flat[f"i{g}/kernel"] for g in "ifgo"], 1),
            np.concatenate([flat[f"h{g}/kernel"] for g in "ifgo"], 1),
            np.concatenate([flat[f"h{g}/bias"] for g in "ifgo"]),
        )
    if family == "gru":
        return c.gru_layer(
            np.concatenate([flat[f"i{g}/kernel"] for g in "rzn"], 1),
            np.concatenate([flat[f"h{g}/kernel"] for g in "rzn"], 1),
            np.concatenate([flat[f"i{g}/bias"] for g in "rzn"]),
            flat["hn/bias"],
        )
    return c.elman_layer(flat["i/kernel"], flat["h/kernel"], flat["i/bias"], activation)


def to_flax_linen(
    params: RNNParams | DenseParams, cell: str | None = None, *, use_bias: bool = True
) -> dict:
    """Export a recurrax layer as a flax.linen cell's param dict (JAX arrays).

    ``lstm`` → ``LSTMCell`` / ``OptimizedLSTMCell`` (same params), ``gru`` (reset-after) →
    ``GRUCell``, ``elman`` → ``SimpleCell``. For ``nn.RNN(cell)`` use
    ``{"params": {"cell": to_flax_linen(params)}}``. ``cell`` optionally names the target to
    check it matches. A ``DenseParams`` head → ``Dense``'s ``{"kernel", "bias"}`` (no ``bias``
    with ``use_bias=False``, for ``Dense(use_bias=False)``; the head's bias must then be zero).

    >>> import jax, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    >>> to_flax_linen(params)["hf"]["bias"].shape
    (4,)
    """
    if isinstance(params, DenseParams):
        if cell not in (None, "Dense"):
            raise ValueError(f"A recurrax dense head converts to flax.linen 'Dense', not {cell!r}.")
        kernel, bias = c.dense_arrays(params, "use_bias", use_bias)
        return {"kernel": c.to_jax(kernel), **({} if bias is None else {"bias": c.to_jax(bias)})}
    family, cell_params = c.describe(params, "flax.linen")
    if cell is not None and _FAMILY.get(cell) != family:
        raise ValueError(f"A recurrax {family!r} layer does not convert to flax.linen {cell!r}.")
    arrays = c.numpy_cell(cell_params)
    w_x, w_h, b = arrays["w_x"], arrays["w_h"], arrays["b"]
    j = c.to_jax
    if family == "lstm":
        out = {f"i{g}": {"kernel": j(k)} for g, k in zip("ifgo", c.blocks(w_x, 4))}
        for g, k, bias in zip("ifgo", c.blocks(w_h, 4), c.blocks(b, 4)):
            out[f"h{g}"] = {"kernel": j(k), "bias": j(bias)}
        return out
    if family == "gru":
        if cell_params.b_hn is None:
            raise ValueError(
                "flax.linen's GRUCell is reset-after: a reset-before GRU (b_hn=None) does not convert."
            )
        out = {
            f"i{g}": {"kernel": j(k), "bias": j(bias)}
            for g, k, bias in zip("rzn", c.blocks(w_x, 3), c.blocks(b, 3))
        }
        out.update({f"h{g}": {"kernel": j(k)} for g, k in zip("rzn", c.blocks(w_h, 3))})
        out["hn"]["bias"] = j(arrays["b_hn"])
        return out
    if cell_params.activation.name not in ("tanh", "relu"):
        raise ValueError(
            f"Only tanh and relu SimpleCells convert, got {cell_params.activation.name!r}."
        )
    return {"i": {"kernel": j(w_x), "bias": j(b)}, "h": {"kernel": j(w_h)}}


def carry_from_flax_linen(carry: Any, params: RNNParams) -> Any:
    """A flax.linen carry to recurrax's: LSTM ``(c, h)`` → ``LSTMCarry(h=h, c=c)``; else ``h``.

    >>> import jax, jax.numpy as jnp, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    >>> c_, h_ = jnp.zeros((2, 4)), jnp.ones((2, 4))
    >>> float(carry_from_flax_linen((c_, h_), params).h[0, 0])
    1.0
    """
    family = params.family.name
    if family == "lstm":
        cell_state, h = carry
        return c.make_carry(family, h, cell_state)
    return c.make_carry(family, carry)


def carry_to_flax_linen(carry: Any) -> Any:
    """A recurrax carry to flax.linen's: ``LSTMCarry(h, c)`` → ``(c, h)``; others → ``h``.

    >>> import jax.numpy as jnp, recurrax
    >>> c_, h_ = carry_to_flax_linen(recurrax.LSTMCarry(h=jnp.ones(4), c=jnp.zeros(4)))
    >>> float(h_[0])
    1.0
    """
    if hasattr(carry, "c"):
        return carry.c, carry.h
    return carry.h
