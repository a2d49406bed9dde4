"""Equinox ``eqx.nn.LSTMCell``, ``eqx.nn.GRUCell`` and ``eqx.nn.Linear``, to and from recurrax.

Equinox stores ``weight_ih`` ``(G·H, D)`` and applies ``W x`` (recurrax: ``(D, G·H)``, ``x @ w``),
so weights are transposed; gate orders agree (LSTM i, f, g, o; GRU r, z, n). The LSTM has one
``bias`` ``(4H,)``; the GRU has ``bias`` ``(3H,)`` (input side, r and z recurrent biases folded
in) and ``bias_n`` ``(H,)``, exactly recurrax's reset-after ``b`` and ``b_hn``, with the same
update ``h' = (1 − z) ⊙ n + z ⊙ h``. ``use_bias=False`` imports as zero biases. Nothing is
summed, so conversions are exact both ways. ``Linear`` (``weight`` ``(out, in)``, ``bias``) is a
dense head, ``DenseParams(w=weight.T, b=bias)``, for ``recurrax.dense``.

Carries: Equinox's LSTM state is ``(h, c)``, the order of recurrax's ``LSTMCarry(h, c)`` (flax.linen
uses ``(c, h)``); the GRU state is ``h``. Importing reads the module's attributes, so it needs
no equinox import; ``to_equinox`` builds Equinox modules and imports equinox.

>>> import jax, recurrax
>>> from recurrax.interop import to_equinox, from_equinox
>>> params = recurrax.init_rnn(jax.random.key(0), "gru", 3, 4)
>>> cell = to_equinox(params)
>>> cell.weight_ih.shape, cell.bias_n.shape
((12, 3), (4,))
>>> bool((from_equinox(cell).cell.b == params.cell.b).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recurrax._layers import DenseParams, RNNParams
from recurrax.interop import _common as c

__all__ = ["carry_from_equinox", "carry_to_equinox", "from_equinox", "to_equinox"]

_FAMILY = {"LSTMCell": "lstm", "GRUCell": "gru"}


def _from_linear(linear: Any) -> DenseParams:
    source = "eqx.nn.Linear"
    for name in ("in_features", "out_features"):
        if getattr(linear, name, None) == "scalar":
            raise ValueError(
                f"Expected an Equinox Linear with integer in_features and out_features, got "
                f"{name}='scalar': recurrax.dense maps feature axes; use a size of 1 instead."
            )
    weight = c.require_2d(
        getattr(linear, "weight", None), "weight", "(out_features, in_features)", source
    )
    fields, expected = {"weight": weight}, {"weight": weight.shape}
    bias = getattr(linear, "bias", None)
    if bias is not None:
        fields["bias"], expected["bias"] = c.as_numpy(bias), weight.shape[:1]
    c.check_entries(fields, expected, source)
    return c.dense_layer(weight.T, fields.get("bias"))


def from_equinox(cell: Any) -> RNNParams | DenseParams:
    """Convert an ``eqx.nn.LSTMCell`` or ``eqx.nn.GRUCell`` to a recurrax layer (``RNNParams``),
    or an ``eqx.nn.Linear`` to a ``DenseParams`` head.

    Raises:
      ValueError: another module type, arrays of inconsistent shapes (naming the field and
        the expected shape), or a ``Linear`` with ``"scalar"`` features.

    >>> from types import SimpleNamespace
    >>> import numpy as np
    >>> LSTMCell = type("LSTMCell", (SimpleNamespace,), {})   # any object with Equinox's fields
    >>> cell = LSTMCell(weight_ih=np.ones((16, 3), np.float32), weight_hh=np.ones((16, 4), np.float32), bias=None)
    >>> from_equinox(cell).cell.b.shape
    (16,)
    """
    kind = type(cell).__name__
    if kind == "Linear":
        return _from_linear(cell)
    if kind not in _FAMILY:
        raise ValueError(f"Expected an Equinox LSTMCell, GRUCell or Linear, got {kind}.")
    family = _FAMILY[kind]
    gates = c.GATES[family]
    source = f"eqx.nn.{kind}"
    w_hh = c.require_2d(
        getattr(cell, "weight_hh", None), "weight_hh", f"({gates}*hidden_size, hidden_size)", source
    )
    hidden = w_hh.shape[1]
    w_ih = c.require_2d(
        getattr(cell, "weight_ih", None), "weight_ih", f"({gates * hidden}, input_size)", source
    )
    fields = {"weight_ih": w_ih, "weight_hh": w_hh}
    expected = {"weight_ih": (gates * hidden, w_ih.shape[1]), "weight_hh": (gates * hidden, hidden)}
    bias = getattr(cell, "bias", None)
    bias_n = getattr(cell, "bias_n", None)
    if bias is not None:
        fields["bias"], expected["bias"] = c.as_numpy(bias), (gates * hidden,)
    if family == "gru" and (bias is not None or bias_n is not None):
        fields["bias_n"], expected["bias_n"] = (
            (None if bias_n is None else c.as_numpy(bias_n)),
            (hidden,),
        )
        if bias_n is None or bias is None:
            missing = "bias_n" if bias_n is None else "bias"
            raise ValueError(
                f"Missing field {missing!r} (expected shape {expected.get(missing, (3 * hidden,))}) "
                f"in the {source}."
            )
    c.check_entries(fields, expected, source)
    zeros = np.zeros(gates * hidden, w_ih.dtype)
    b = fields.get("bias", zeros)
    if family == "lstm":
        return c.lstm_layer(w_ih.T, w_hh.T, b)
    return c.gru_layer(w_ih.T, w_hh.T, b, fields.get("bias_n", zeros[:hidden]))


def to_equinox(params: RNNParams | DenseParams, *, use_bias: bool = True) -> Any:
    """Export a recurrax ``lstm`` or reset-after ``gru`` layer as an Equinox cell, or a
    ``DenseParams`` head as an ``eqx.nn.Linear`` (imports equinox).

    ``use_bias=False`` gives a module without biases (the biases must be zero).

    >>> import jax, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    >>> type(to_equinox(params)).__name__
    'LSTMCell'
    """
    import equinox as eqx
    import jax

    if isinstance(params, DenseParams):
        kernel, bias = c.dense_arrays(params, "use_bias", use_bias)
        # The key only fills placeholders that are replaced below.
        linear = eqx.nn.Linear(*kernel.shape, use_bias=use_bias, dtype=kernel.dtype,
                               key=jax.random.key(0))
        linear = eqx.tree_at(lambda m: m.weight, linear, c.to_jax(kernel.T))
        return linear if bias is None else eqx.tree_at(lambda m: m.bias, linear, c.to_jax(bias))
    family, cell = c.describe(params, "Equinox", allowed=("lstm", "gru"))
    arrays = c.numpy_cell(cell)
    w_x, w_h, b = arrays["w_x"], arrays["w_h"], arrays["b"]
    features, hidden = w_x.shape[0], w_h.shape[0]
    if family == "gru" and cell.b_hn is None:
        raise ValueError(
            "Equinox's GRUCell is reset-after: a reset-before GRU (b_hn=None) does not convert."
        )
    biases = [b] + ([arrays["b_hn"]] if family == "gru" else [])
    if not use_bias and any(np.any(v != 0) for v in biases):
        raise ValueError(
            "use_bias=False, but the layer has nonzero biases; export with use_bias=True."
        )
    make = eqx.nn.LSTMCell if family == "lstm" else eqx.nn.GRUCell
    # The key only fills placeholders that are replaced below.
    module = make(features, hidden, use_bias=use_bias, dtype=w_x.dtype, key=jax.random.key(0))
    values = [c.to_jax(w_x.T), c.to_jax(w_h.T)]
    where = [lambda m: m.weight_ih, lambda m: m.weight_hh]
    if use_bias:
        values.append(c.to_jax(b))
        where.append(lambda m: m.bias)
        if family == "gru":
            values.append(c.to_jax(arrays["b_hn"]))
            where.append(lambda m: m.bias_n)
    return eqx.tree_at(lambda m: tuple(w(m) for w in where), module, tuple(values))


def carry_from_equinox(state: Any, params: RNNParams) -> Any:
    """An Equinox state to recurrax's: LSTM ``(h, c)`` → ``LSTMCarry(h, c)`` (same order); GRU ``h``.

    >>> import jax, jax.numpy as jnp, recurrax
    >>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
    >>> carry_from_equinox((jnp.ones(4), jnp.zeros(4)), params).h.shape
    (4,)
    """
    if params.family.name == "lstm":
        h, cell_state = state
        return c.make_carry("lstm", h, cell_state)
    return c.make_carry(params.family.name, state)


def carry_to_equinox(carry: Any) -> Any:
    """A recurrax carry to Equinox's: ``LSTMCarry(h, c)`` → ``(h, c)``; ``GRUCarry(h)`` → ``h``.

    >>> import jax.numpy as jnp, recurrax
    >>> carry_to_equinox(recurrax.GRUCarry(h=jnp.zeros(4))).shape
    (4,)
    """
    if hasattr(carry, "c"):
        return carry.h, carry.c
    return carry.h
