"""Backpropagation through time written out by hand: reference backward passes for Elman and LSTM.

Each function runs its own forward ``lax.scan`` that stores the activations of every step, then a
reverse ``lax.scan`` over them that applies the chain rule as written in the docstring, one step
at a time, accumulating the weight gradients in the scan's carry (Werbos 1990). No ``jax.grad``
or ``jax.vjp`` is used, and neither ``unroll`` nor the cells' ``step``, so the tests can check
the library's autodiff and its fused backward (``unroll_cell``) against an independent
derivation. Training code should use ``jax.grad``; these are for tests and for teaching.

Conventions: row vectors (``h_t = f(x_t W_x + h_{t-1} W_h + b)``, as in the cells), time-major
sequences ``(T, *batch, F)``, full-length sequences only (no lengths or masks), and
``dys[t] = ∂J/∂h_t`` the cotangent of the output at step ``t`` from everything *outside* the
recurrence (a loss, a head). The gradient flowing back *through* the recurrence is what the
reverse scan carries.

>>> import jax, jax.numpy as jnp
>>> import recurrax
>>> params = recurrax.elman.init(jax.random.key(0), 3, 4)
>>> d_params, d_h0, d_xs = recurrax.elman_bptt(params, jnp.zeros((2, 4)), jnp.ones((5, 2, 3)),
...                                            jnp.ones((5, 2, 4)))
>>> d_params.w_h.shape, d_h0.shape, d_xs.shape
((4, 4), (2, 4), (5, 2, 3))
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from recurrax._checks import check_array, check_int_range, check_params_type, check_same_shape
from recurrax._layers import DenseParams
from recurrax.cells._common import lift, split_gates
from recurrax.cells.elman import ElmanParams
from recurrax.cells.lstm import LSTMCarry, LSTMParams

__all__ = ["elman_bptt", "elman_readout_bptt", "lstm_bptt"]


# --------------------------------------------------------------------------- helpers


def _rows(a: jax.Array) -> jax.Array:
    """``(..., F) -> (N, F)``: every leading (time and batch) axis flattened into one."""
    return a.reshape(-1, a.shape[-1])


def _outer_sum(a: jax.Array, b: jax.Array) -> jax.Array:
    """``Σ_batch aᵀ b`` for ``a (..., F)``, ``b (..., G)``: the ``x_tᵀ δa_t`` of a weight gradient."""
    return _rows(a).T @ _rows(b)


def _batch_sum(a: jax.Array) -> jax.Array:
    """``Σ_batch a`` for ``a (..., F)``: the bias gradient, the bias being shared by the batch."""
    return _rows(a).sum(0)


def _check_xs(xs: Any, input_size: int, fn: str) -> tuple[int, ...]:
    """Time-major ``xs (T, *batch, D)`` with ``T >= 1``; returns the batch shape."""
    check_array(xs, "xs")
    if xs.ndim < 2 or xs.shape[-1] != input_size or xs.shape[0] == 0:
        raise ValueError(
            f"{fn} expects time-major xs of shape (T, *batch, {input_size}) with T >= 1 "
            f"({input_size} is the cell's input_size), got shape {tuple(xs.shape)}; "
            "for batch-major inputs pass jnp.moveaxis(xs, -2, 0)."
        )
    return tuple(xs.shape[1:-1])


def _check_shape(x: Any, expected: tuple[int, ...], name: str, why: str) -> None:
    check_array(x, name)
    check_same_shape(x, expected, name, why)


# --------------------------------------------------------------------------- Elman


def _activation_derivative(name: str, a: jax.Array, h: jax.Array) -> jax.Array:
    """``f'(a_t)`` by hand, from the stored pre-activation ``a_t`` or output ``h_t = f(a_t)``."""
    if name == "tanh":
        return 1 - h * h  # tanh' = 1 - tanh²
    if name == "sigmoid":
        return h * (1 - h)  # σ' = σ (1 - σ)
    if name == "relu":
        return (a > 0).astype(a.dtype)  # 0 at a = 0, as jax.nn.relu's derivative
    if name == "identity":
        return jnp.ones_like(a)
    raise ValueError(f"No hand-derived derivative for activation {name!r}.")


def _elman_forward(params: ElmanParams, h0: jax.Array, xs: jax.Array):
    """Forward scan storing, per step, ``(h_{t-1}, a_t, h_t)``, each ``(T, *batch, H)``."""

    def body(h_prev, x):
        a = x @ params.w_x + h_prev @ params.w_h
        a = a + lift(params.b, a)
        h = params.activation(a)
        return h, (h_prev, a, h)

    _, stored = jax.lax.scan(body, h0, xs)
    return stored


def _elman_backward(params: ElmanParams, xs: jax.Array, stored, dys: jax.Array):
    """Reverse scan of the Elman BPTT equations; returns ``(d_params, d_h0, d_xs)``."""
    w_x_t, w_h_t = params.w_x.T, params.w_h.T  # transposed once, outside the loop
    name = params.activation.name

    def body(carry, inputs):
        dh_next, dw_x, dw_h, db = carry  # dh_next: δh_t from step t+1, i.e. δa_{t+1} W_hᵀ
        x, h_prev, a, h, dy = inputs
        da = (dy + dh_next) * _activation_derivative(name, a, h)  # δa_t
        dw_x = dw_x + _outer_sum(x, da)  # δW_x += x_tᵀ δa_t
        dw_h = dw_h + _outer_sum(h_prev, da)  # δW_h += h_{t-1}ᵀ δa_t
        db = db + _batch_sum(da)  # δb += Σ_batch δa_t
        return (da @ w_h_t, dw_x, dw_h, db), da @ w_x_t  # δh_{t-1} = δa_t W_hᵀ, δx_t = δa_t W_xᵀ

    h_prev, a, h = stored
    zeros = (jnp.zeros_like(h[0]), jnp.zeros_like(params.w_x), jnp.zeros_like(params.w_h),
             jnp.zeros_like(params.b))
    (d_h0, dw_x, dw_h, db), d_xs = jax.lax.scan(
        body, zeros, (xs, h_prev, a, h, dys), reverse=True
    )
    return params._replace(w_x=dw_x, w_h=dw_h, b=db), d_h0, d_xs


def _check_elman(params: Any, h0: Any, xs: Any, fn: str) -> tuple[int, ...]:
    check_params_type(params, ElmanParams, fn)
    batch_shape = _check_xs(xs, params.w_x.shape[0], fn)
    hidden_size = params.w_h.shape[0]
    _check_shape(h0, batch_shape + (hidden_size,), "h0", "xs's batch shape + hidden_size")
    return batch_shape


def elman_bptt(
    params: ElmanParams, h0: jax.Array, xs: jax.Array, dys: jax.Array
) -> tuple[ElmanParams, jax.Array, jax.Array]:
    """Hand-derived BPTT through an Elman RNN: gradients from the output cotangents ``dys``.

    Forward (row vectors, ``f`` the cell's activation), for ``t = 1..T``:

        a_t = x_t W_x + h_{t-1} W_h + b,    h_t = f(a_t)

    Backward, for ``t = T..1``, with ``δh_T^{from T+1} = 0`` (Werbos 1990; the seeds' BPTT
    slides, ``∂J/∂W = Σ_t Σ_{k≤t} ∂J_t/∂s_t ∂s_t/∂s_k ∂s_k/∂W`` summed step by step):

        δa_t      = (dys_t + δh_t^{from t+1}) ⊙ f'(a_t)
        δW_x     += x_tᵀ δa_t          δW_h += h_{t-1}ᵀ δa_t          δb += Σ_batch δa_t
        δh_{t-1}  = δa_t W_hᵀ          δx_t  = δa_t W_xᵀ

    with ``f'`` written out per activation: tanh ``1 - h_t²``, sigmoid ``h_t (1 - h_t)``, relu
    ``[a_t > 0]`` (0 at 0, as ``jax.nn.relu``), identity ``1``. ``δh_0`` is ``∂J/∂h0``.

    Full-length sequences only (no lengths or mask). As ``h_T`` is both the last output and the
    final carry, a cotangent of the final carry is passed by adding it to ``dys[-1]``.

    Args:
      params: ``ElmanParams``; ``w_x (D, H)``, ``w_h (H, H)``, ``b (H,)``.
      h0: initial state ``(*batch, H)``.
      xs: inputs ``(T, *batch, D)``, time-major.
      dys: ``∂J/∂h_t`` for every step, ``(T, *batch, H)``.

    Returns:
      ``(d_params, d_h0, d_xs)``: ``ElmanParams`` of gradients (same activation), ``∂J/∂h0``
      ``(*batch, H)`` and ``∂J/∂xs`` ``(T, *batch, D)``; equal to ``jax.vjp`` of
      ``unroll(partial(elman.step, params), ElmanCarry(h0), xs, time_major=True)``.

    References: Werbos (1990), Backpropagation through time: what it does and how to do it;
    Elman (1990), Finding structure in time; the seeds' "Backpropagation Through Time" slides.

    >>> import functools, jax, jax.numpy as jnp
    >>> import recurrax
    >>> params = recurrax.elman.init(jax.random.key(0), 3, 4)
    >>> h0, xs, dys = jnp.zeros((2, 4)), jnp.ones((5, 2, 3)), jnp.ones((5, 2, 4))
    >>> d_params, d_h0, d_xs = recurrax.elman_bptt(params, h0, xs, dys)
    >>> run = lambda p, h, x: recurrax.unroll(functools.partial(recurrax.elman.step, p),
    ...                                       recurrax.ElmanCarry(h), x, time_major=True)[1]
    >>> _, vjp = jax.vjp(run, params, h0, xs)
    >>> got, want = jax.tree.leaves((d_params, d_h0, d_xs)), jax.tree.leaves(vjp(dys))
    >>> all(bool(jnp.allclose(a, b, atol=1e-5)) for a, b in zip(got, want))
    True
    """
    batch_shape = _check_elman(params, h0, xs, "elman_bptt")
    _check_shape(dys, (xs.shape[0],) + batch_shape + (params.w_h.shape[0],), "dys",
                 "(T, *batch, hidden_size): one cotangent per output h_t")
    return _elman_backward(params, xs, _elman_forward(params, h0, xs), dys)


def _check_targets(targets: Any, expected: tuple[int, ...], num_classes: int) -> None:
    _check_shape(targets, expected, "targets", "(T, *batch): xs.shape[:-1]")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"Expected integer class targets, got dtype {targets.dtype}.")

    check_int_range(targets, 0, num_classes, "targets", "the readout's out_features")


def elman_readout_bptt(
    params: ElmanParams,
    readout: DenseParams,
    h0: jax.Array,
    xs: jax.Array,
    targets: jax.Array,
) -> tuple[ElmanParams, DenseParams, jax.Array]:
    """Hand-derived BPTT for an Elman RNN with a softmax readout and mean cross-entropy loss.

    The seeds' language-model setting (row vectors; ``U = readout.w``, ``b_y = readout.b``):

        s_t = f(x_t W_x + s_{t-1} W_h + b),    ŷ_t = softmax(s_t U + b_y)
        J   = (1/T) Σ_t J_t,    J_t = -Σ_j y_tj log ŷ_tj = -log ŷ_t[targets_t]

    (with a batch, ``J`` is also averaged over the batch: ``N = T · prod(batch)`` terms).
    Backward: the softmax-cross-entropy gradient is the seeds' ``ŷ_t − y_t`` (``y_t`` one-hot):

        δo_t     = (ŷ_t − y_t) / N                         ∂J/∂(s_t U + b_y)
        δU       = Σ_t s_tᵀ δo_t                           the seeds' (ŷ_t − y_t) s_tᵀ, transposed
        δb_y     = Σ_t Σ_batch δo_t
        dys_t    = δo_t Uᵀ                                  ∂J/∂s_t through the head

    then ``elman_bptt`` with these ``dys`` gives the cell's gradients (the seeds'
    ``∂J_t/∂W = Σ_{k≤t} ∂J_t/∂ŷ_t ∂ŷ_t/∂s_t ∂s_t/∂s_k ∂s_k/∂W``). The seeds write column vectors
    (``ŷ = g(U s + b_y)``, ``U (V, H)``); here ``U = readout.w`` is ``(H, V)``, hence the transpose.

    Full-length sequences only (no lengths or mask).

    Args:
      params: ``ElmanParams`` (``D`` inputs, ``H`` hidden units).
      readout: ``DenseParams`` with ``w (H, V)``, ``b (V,)``.
      h0: initial state ``(*batch, H)``.
      xs: inputs ``(T, *batch, D)``, time-major.
      targets: integer classes ``(T, *batch)`` in ``[0, V)`` (checked when concrete; under
        ``jit``, by a runtime callback).

    Returns:
      ``(d_params, d_readout, loss)``: ``ElmanParams`` and ``DenseParams`` of gradients of
      ``J``, and ``J`` itself (a scalar).

    References: Werbos (1990), Backpropagation through time; Elman (1990); the seeds' "Lost
    Function" and "Backpropagation Through Time" slides.

    >>> import jax, jax.numpy as jnp
    >>> import recurrax
    >>> params = recurrax.elman.init(jax.random.key(0), 3, 4)
    >>> readout = recurrax.init_dense(jax.random.key(1), 4, 6)
    >>> d_params, d_readout, loss = recurrax.elman_readout_bptt(
    ...     params, readout, jnp.zeros((2, 4)), jnp.ones((5, 2, 3)), jnp.zeros((5, 2), jnp.int32))
    >>> d_readout.w.shape, loss.shape
    ((4, 6), ())
    """
    batch_shape = _check_elman(params, h0, xs, "elman_readout_bptt")
    if not isinstance(readout, DenseParams):
        raise ValueError(f"elman_readout_bptt expects DenseParams as readout, got {type(readout).__name__}.")
    hidden_size = params.w_h.shape[0]
    if readout.w.ndim != 2 or readout.w.shape[0] != hidden_size:
        raise ValueError(
            f"Expected readout.w of shape ({hidden_size}, V) ({hidden_size} is the cell's "
            f"hidden_size), got shape {tuple(readout.w.shape)}."
        )
    num_classes = readout.w.shape[1]
    _check_shape(readout.b, (num_classes,), "readout.b", "(V,): readout.w's out_features")
    _check_targets(targets, (xs.shape[0],) + batch_shape, num_classes)

    stored = _elman_forward(params, h0, xs)
    s = stored[2]  # s_t = h_t, (T, *batch, H)
    logits = s @ readout.w
    logits = logits + lift(readout.b, logits)
    y_hat = jax.nn.softmax(logits, axis=-1)  # ŷ_t
    y = jax.nn.one_hot(targets, num_classes, dtype=logits.dtype)  # y_t, one-hot
    n = targets.size  # N = T · prod(batch): J is the mean of N per-step losses
    loss = -(y * jax.nn.log_softmax(logits, axis=-1)).sum() / n

    d_logits = (y_hat - y) / n  # the seeds' (ŷ_t − y_t), scaled by the mean's 1/N
    d_readout = DenseParams(w=_outer_sum(s, d_logits), b=_batch_sum(d_logits))
    dys = d_logits @ readout.w.T
    d_params, _, _ = _elman_backward(params, xs, stored, dys)
    return d_params, d_readout, loss


# --------------------------------------------------------------------------- LSTM


def _lstm_forward(params: LSTMParams, carry0: LSTMCarry, xs: jax.Array):
    """Forward scan storing, per step, ``(h_{t-1}, c_{t-1}, i, f, g, o, c_t, tanh c_t)``."""
    peep = params.w_peep

    def body(carry, x):
        h_prev, c_prev = carry
        z = x @ params.w_x + h_prev @ params.w_h
        zi, zf, zg, zo = split_gates(z + lift(params.b, z), 4)
        if peep is not None:
            zi = zi + lift(peep[0], c_prev) * c_prev
            zf = zf + lift(peep[1], c_prev) * c_prev
        i, f, g = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg)
        c = f * c_prev + i * g
        if peep is not None:
            zo = zo + lift(peep[2], c) * c
        o = jax.nn.sigmoid(zo)
        tanh_c = jnp.tanh(c)
        return LSTMCarry(h=o * tanh_c, c=c), (h_prev, c_prev, i, f, g, o, c, tanh_c)

    _, stored = jax.lax.scan(body, carry0, xs)
    return stored


def lstm_bptt(
    params: LSTMParams,
    carry0: LSTMCarry,
    xs: jax.Array,
    dys: jax.Array,
    dc_final: Optional[jax.Array] = None,
) -> tuple[LSTMParams, LSTMCarry, jax.Array]:
    """Hand-derived BPTT through an LSTM: gradients from the output cotangents ``dys``.

    Forward, gates fused in the order i, f, g, o as in ``recurrax.lstm`` (row vectors):

        [zi, zf, zg, zo] = x_t W_x + h_{t-1} W_h + b
        i_t = σ(zi + p_i ⊙ c_{t-1})   f_t = σ(zf + p_f ⊙ c_{t-1})   g_t = tanh(zg)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,   o_t = σ(zo + p_o ⊙ c_t),   h_t = o_t ⊙ tanh(c_t)

    (``p`` terms only with peepholes). Backward, for ``t = T..1``, the seeds' "LSTM - Backward"
    slide; ``δc_t^{from t+1}`` starts at ``dc_final`` and ``δh_T^{from T+1}`` at 0:

        δh_t     = dys_t + δh_t^{from t+1}
        δo_t     = δh_t ⊙ tanh(c_t)                         δzo = δo_t ⊙ o_t (1 − o_t)
        δc_t     = δc_t^{from t+1} + δh_t ⊙ o_t ⊙ (1 − tanh²(c_t))  [+ δzo ⊙ p_o]
        δi_t     = δc_t ⊙ g_t                               δzi = δi_t ⊙ i_t (1 − i_t)
        δf_t     = δc_t ⊙ c_{t-1}                           δzf = δf_t ⊙ f_t (1 − f_t)
        δg_t     = δc_t ⊙ i_t                               δzg = δg_t ⊙ (1 − g_t²)
        δc_{t-1} = δc_t ⊙ f_t  [+ δzi ⊙ p_i + δzf ⊙ p_f]
        δz = [δzi, δzf, δzg, δzo]:  δW_x += x_tᵀ δz,  δW_h += h_{t-1}ᵀ δz,  δb += Σ_batch δz
        δh_{t-1} = δz W_hᵀ,   δx_t = δz W_xᵀ
        δp_i += Σ_batch δzi ⊙ c_{t-1},   δp_f += Σ_batch δzf ⊙ c_{t-1},   δp_o += Σ_batch δzo ⊙ c_t

    Two differences from the slide as printed: its ``δc_t`` term reads ``δh_t * δo_t * (1 −
    tanh²)`` where the chain rule gives ``δh_t ⊙ o_t ⊙ (1 − tanh²)``; and its ``δi, δf, δo,
    δg`` are gradients with respect to the gate *values*, which the weight gradients need
    through the gate nonlinearities (``δzi`` etc. above). The slide's ``δc̃_t`` is ``δg_t``.

    Full-length sequences only (no lengths or mask). As ``h_T`` is both the last output and the
    final carry's ``h``, a cotangent of the final ``h`` is passed by adding it to ``dys[-1]``.

    Args:
      params: ``LSTMParams``; ``w_x (D, 4H)``, ``w_h (H, 4H)``, ``b (4H,)``, ``w_peep (3, H)``
        or ``None``.
      carry0: initial ``LSTMCarry`` with ``h`` and ``c`` of shape ``(*batch, H)``.
      xs: inputs ``(T, *batch, D)``, time-major.
      dys: ``∂J/∂h_t`` for every step, ``(T, *batch, H)``.
      dc_final: ``∂J/∂c_T`` ``(*batch, H)``, the cotangent of the final cell state; ``None``
        for zero.

    Returns:
      ``(d_params, d_carry0, d_xs)``: ``LSTMParams`` of gradients (``w_peep`` ``None`` when the
      params have none), ``LSTMCarry`` of ``∂J/∂h0``, ``∂J/∂c0``, and ``∂J/∂xs``
      ``(T, *batch, D)``; equal to ``jax.vjp`` of
      ``unroll(partial(lstm.step, params), carry0, xs, time_major=True)``.

    References: Hochreiter & Schmidhuber (1997), Long short-term memory; Gers et al. (2000),
    Learning to forget; Gers & Schmidhuber (2000), peepholes; Werbos (1990); the seeds' "LSTM -
    Backward" slide.

    >>> import jax, jax.numpy as jnp
    >>> import recurrax
    >>> params = recurrax.lstm.init(jax.random.key(0), 3, 4)
    >>> carry0 = recurrax.lstm.initial_carry(params, (2,))
    >>> d_params, d_carry0, d_xs = recurrax.lstm_bptt(params, carry0, jnp.ones((5, 2, 3)),
    ...                                               jnp.ones((5, 2, 4)))
    >>> d_params.w_x.shape, d_carry0.c.shape, d_xs.shape
    ((3, 16), (2, 4), (5, 2, 3))
    """
    check_params_type(params, LSTMParams, "lstm_bptt")
    batch_shape = _check_xs(xs, params.w_x.shape[0], "lstm_bptt")
    hidden_size = params.w_h.shape[0]
    state_shape = batch_shape + (hidden_size,)
    if not isinstance(carry0, LSTMCarry):
        raise ValueError(f"lstm_bptt expects an LSTMCarry as carry0, got {type(carry0).__name__}.")
    for name, value in zip(LSTMCarry._fields, carry0):
        _check_shape(value, state_shape, f"carry0.{name}", "xs's batch shape + hidden_size")
    _check_shape(dys, (xs.shape[0],) + state_shape, "dys",
                 "(T, *batch, hidden_size): one cotangent per output h_t")
    if dc_final is None:
        dc_final = jnp.zeros_like(carry0.c)
    _check_shape(dc_final, state_shape, "dc_final", "xs's batch shape + hidden_size")

    peep = params.w_peep
    w_x_t, w_h_t = params.w_x.T, params.w_h.T  # transposed once, outside the loop

    def body(carry, inputs):
        dh_next, dc_next, grads = carry  # δh_t, δc_t from step t+1
        x, h_prev, c_prev, i, f, g, o, c, tanh_c, dy = inputs
        dh = dy + dh_next  # δh_t
        do = dh * tanh_c  # δo_t
        dzo = do * o * (1 - o)
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)  # δc_t
        if peep is not None:
            dc = dc + dzo * lift(peep[2], dzo)
        di, df, dg = dc * g, dc * c_prev, dc * i  # δi_t, δf_t, δg_t
        dzi, dzf, dzg = di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g)
        dc_prev = dc * f  # δc_{t-1}
        if peep is not None:
            dc_prev = dc_prev + dzi * lift(peep[0], dzi) + dzf * lift(peep[1], dzf)
        dz = jnp.concatenate([dzi, dzf, dzg, dzo], axis=-1)  # gate order i, f, g, o
        step_grads = LSTMParams(
            w_x=_outer_sum(x, dz),
            w_h=_outer_sum(h_prev, dz),
            b=_batch_sum(dz),
            w_peep=None if peep is None else jnp.stack(
                [_batch_sum(dzi * c_prev), _batch_sum(dzf * c_prev), _batch_sum(dzo * c)]
            ),
        )
        grads = jax.tree.map(jnp.add, grads, step_grads)
        return (dz @ w_h_t, dc_prev, grads), dz @ w_x_t

    stored = _lstm_forward(params, carry0, xs)
    zeros = (jnp.zeros_like(carry0.h), dc_final, jax.tree.map(jnp.zeros_like, params))
    (dh0, dc0, d_params), d_xs = jax.lax.scan(body, zeros, (xs, *stored, dys), reverse=True)
    return d_params, LSTMCarry(h=dh0, c=dc0), d_xs
