"""``rnn``'s ``kernel`` option: which calls the oneDNN kernel runs, and recurrax's cells in its terms.

``kernel="onednn"`` runs a layer through oneDNN's fused RNN primitive, forward and backward
(a ``ValueError`` naming the reason where it cannot); ``"scan"`` never uses it; ``"auto"`` (the
default of ``rnn``, ``bidirectional`` and ``stack``) uses oneDNN where it was measured faster
than the scan: the forward of LSTM and GRU layers with H >= 256, their backward from H = 1024,
and the scan's gradient below that (the figures are beside ``slower_here``). Calls the kernel
cannot run at all take the scan under ``"auto"``:

=================================================  ==========================================
call                                               why
=================================================  ==========================================
kernel not built, oneDNN not installed,            nothing to run (``kernels.unavailable_reason``)
``RECURRAX_DISABLE_NATIVE=1``
default backend not the CPU                        oneDNN runs on the CPU only
a user's cell, reservoir, minGRU, … (not Elman,    oneDNN has these three cells only
LSTM, GRU)
LSTM with peepholes; Elman with ``identity``       not in oneDNN's cells
params, inputs or carry not all float32            the kernel is float32 only
``mask``                                           holes in a sequence are not expressible
``lengths`` with the LSTM                          its cell state at each sequence's own last
                                                   step is not an output of the primitive
``unroll``, ``remat``, ``segment_length``,         options of the scan (asked for, so honoured)
``return_carries``, ``fused_backward``,
``compute_dtype``, ``method`` other than scan
no time steps or an empty batch                    the scan raises or returns the empty result
=================================================  ==========================================

Right-padded ``lengths`` stay on the kernel for Elman and GRU layers: outputs at valid steps
never depend on later steps, so the padding is zeroed before the kernel reads it and in its
outputs, and each sequence's final carry is its output at its own last valid step (the carry
before the first step for length 0); the reverse direction reverses each sequence within its
own length first (and its outputs back). Gradients flow through those gathers to the kernel.

Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``; ``jax.linearize`` inside
``recurrax.forward_mode()``) cannot pass a ``custom_vjp``: under ``"auto"`` the layer then takes
the scan with plain autodiff (see ``rnn``); with ``kernel="onednn"`` it raises a ``ValueError``
naming ``kernel="scan"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from recurrax.cells import elman, gru, lstm
from recurrax.kernels import _onednn
from recurrax.kernels._onednn import Cell

KERNELS = ("auto", "scan", "onednn")


def check_kernel(kernel: Any) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"Expected kernel in {list(KERNELS)}, got {kernel!r}.")
    return kernel


@dataclasses.dataclass(frozen=True)
class _CellMap:
    """How a built-in family's params and carry map onto one oneDNN cell."""

    cell: Callable[[Any], Optional[Cell]]  # params -> oneDNN's cell, None for a variant it lacks
    weights: Callable[[Any], tuple]  # params -> w_x (C, G, H), w_h (H, G, H), bias (Gb, H)
    carry: Callable[[jax.Array, jax.Array], Any]  # (h, c) -> the family's carry
    why_not: str  # what the variant lacks, for messages


def _gates(p, gates: int):
    hidden = p.w_h.shape[0]
    return p.w_x.reshape(-1, gates, hidden), p.w_h.reshape(hidden, gates, hidden), p.b.reshape(gates, hidden)


def _gru_weights(p):
    # recurrax's gate order r, z, n -> oneDNN's u (= z), r, o (= n).
    order = jnp.asarray([1, 0, 2])
    w_x, w_h, b = _gates(p, 3)
    w_x, w_h, b = w_x[:, order], w_h[:, order], b[order]
    if p.b_hn is not None:  # reset-after = oneDNN's "linear before reset" GRU, b_hn as a 4th bias row
        return w_x, w_h, jnp.concatenate([b, p.b_hn[None]], axis=0)
    # Reset-before: oneDNN's h' = u ⊙ h + (1 − u) ⊙ o keeps the old state with weight u, recurrax's
    # h' = (1 − z) ⊙ h + z ⊙ h̃ with weight 1 − z; σ(−a) = 1 − σ(a), so u's pre-activation is −z's.
    sign = jnp.asarray([-1.0, 1.0, 1.0], b.dtype)[:, None]
    return w_x * sign[None], w_h * sign[None], b * sign


_ELMAN_CELLS = {"tanh": Cell.TANH, "relu": Cell.RELU, "sigmoid": Cell.SIGMOID}

_MAPS = {
    lstm.step: _CellMap(
        cell=lambda p: Cell.LSTM if p.w_peep is None else None,
        weights=lambda p: _gates(p, 4),
        carry=lambda h, c: lstm.LSTMCarry(h=h, c=c),
        why_not="peephole LSTMs are not among oneDNN's cells",
    ),
    gru.step: _CellMap(
        cell=lambda p: Cell.LBR_GRU if p.b_hn is not None else Cell.GRU,
        weights=_gru_weights,
        carry=lambda h, c: gru.GRUCarry(h=h),
        why_not="",
    ),
    elman.step: _CellMap(
        cell=lambda p: _ELMAN_CELLS.get(p.activation.name),
        weights=lambda p: _gates(p, 1),
        carry=lambda h, c: elman.ElmanCarry(h=h),
        why_not="oneDNN's vanilla RNN has tanh, relu and sigmoid, not this activation",
    ),
}


def _cell(layer) -> tuple[Optional[_CellMap], Optional[Cell]]:
    cell_map = _MAPS.get(layer.family.step)
    return cell_map, (None if cell_map is None else cell_map.cell(layer.cell))


def unsupported(layer, xs, carry, *, lengths, mask, time_major, scan_options: list) -> Optional[str]:
    """Why the kernel cannot run this ``rnn`` call (a phrase), or ``None`` when it can.

    ``scan_options``: the names of the scan's options the call set away from their defaults.
    """
    reason = _onednn.unavailable_reason()
    if reason is not None:
        return reason
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()!r}; oneDNN's kernel runs on the CPU"
    cell_map, cell = _cell(layer)
    if cell_map is None:
        return f"oneDNN has no {layer.family.name!r} cell (it has Elman, LSTM and GRU)"
    if cell is None:
        return cell_map.why_not
    if scan_options:
        verb = "is an option" if len(scan_options) == 1 else "are options"
        return f"{', '.join(scan_options)} {verb} of the scan"
    leaves = jax.tree.leaves((layer.cell, xs, carry))
    dtypes = sorted({str(jnp.result_type(leaf)) for leaf in leaves})
    if dtypes != ["float32"]:
        return f"the kernel is float32 only; this call has {', '.join(dtypes)}"
    if mask is not None:
        return "a mask may leave holes in a sequence; the kernel takes right-padded lengths only"
    if lengths is not None and cell.has_cell_state:
        return "with lengths, the LSTM's cell state at each sequence's last valid step is not an output of oneDNN"
    if jnp.ndim(xs) < 2 or 0 in jnp.shape(xs)[:-1]:
        return "no time steps or an empty batch"
    return None


def _time_major(xs, time_major):
    """``(*batch, T, D)`` (or ``(T, *batch, D)``) -> oneDNN's ``(T, N, D)``, and the batch shape.

    Always time-major: oneDNN's backward ran 1.1-1.3x faster on ``tnc`` than on ``ntc`` buffers
    (LSTM and GRU, B, T, D, H = 32, 256, 64, 256), far more than the transposes cost.
    """
    batch_shape = tuple(xs.shape[1:-1]) if time_major else tuple(xs.shape[:-2])
    if not time_major:
        xs = jnp.moveaxis(xs, -2, 0)
    return xs.reshape((xs.shape[0], math.prod(batch_shape), xs.shape[-1])), batch_shape


def _from_time_major(y, batch_shape, time_major):
    y = y.reshape((y.shape[0],) + batch_shape + y.shape[-1:])
    return y if time_major else jnp.moveaxis(y, 0, -2)


def _state(carry, cell, batch: int, hidden: int):
    h = carry.h.reshape(1, batch, hidden)
    c = carry.c.reshape(1, batch, hidden) if cell.has_cell_state else jnp.zeros_like(h)
    return h, c


def _reverse_within(x, lengths):
    """Each sequence of ``x`` ``(T, N, F)`` reversed within its own length (padding stays); an involution."""
    t = jnp.arange(x.shape[0], dtype=lengths.dtype)[:, None]
    index = jnp.where(t < lengths[None], lengths[None] - 1 - t, t)  # (T, N)
    return jnp.take_along_axis(x, index[..., None], axis=0)


def run(layer, xs, carry, *, lengths, reverse: bool, time_major: bool):
    """One layer through oneDNN: ``(final_carry, hs)`` as ``rnn`` returns them (checked call)."""
    cell_map, cell = _cell(layer)
    x, batch_shape = _time_major(xs, time_major)
    batch, hidden = math.prod(batch_shape), layer.cell.w_h.shape[0]
    h0, c0 = _state(carry, cell, batch, hidden)
    w_x, w_h, bias = cell_map.weights(layer.cell)
    call = functools.partial(_onednn.layer, cell, h0=h0, c0=c0, w_x=w_x[None], w_h=w_h[None], bias=bias[None])
    unbatch = lambda a: a.reshape(batch_shape + (hidden,))  # noqa: E731
    if lengths is None:
        y, h_t, c_t = call(x, reverse=reverse)
        return cell_map.carry(unbatch(h_t[0]), unbatch(c_t[0])), _from_time_major(y, batch_shape, time_major)
    # Right-padded sequences, a carry of h only (``unsupported`` keeps the LSTM off this path).
    lengths = lengths.reshape(batch)
    valid = (jnp.arange(x.shape[0], dtype=lengths.dtype)[:, None] < lengths[None])[..., None]  # (T, N, 1)
    # Zero the padding before the kernel reads it: NaN there would meet the zero cotangents of the
    # padded outputs in the backward pass (0 · NaN = NaN) and flow into the valid steps.
    x = jnp.where(valid, x, jnp.zeros((), x.dtype))
    if reverse:
        x = _reverse_within(x, lengths)
    y, _, _ = call(x, reverse=False)
    y = jnp.where(valid, y, jnp.zeros((), y.dtype))
    if reverse:
        y = _reverse_within(y, lengths)
    last = jnp.zeros_like(lengths) if reverse else jnp.maximum(lengths - 1, 0)  # the step processed last
    h = jnp.take_along_axis(y, last[None, :, None], axis=0)[0]
    h = jnp.where((lengths > 0)[:, None], h, h0[0])  # length 0: the initial carry
    return cell_map.carry(unbatch(h), None), _from_time_major(y, batch_shape, time_major)


# ``"auto"``'s rule, from ``python -m experiments bench`` and a sweep (issue 31's closing note)
# on the project's 2-core AMD EPYC (oneDNN 3.2 running its AVX2 kernels), jax 0.10.2,
# 2026-12-06, kernel ÷ scan (medians): LSTM and GRU forward 0.77–0.95 for H = 256–1024 and
# 0.95–2.5 below; their forward+backward 1.02–2.0 below H = 256, 0.93–1.09 at H = 256–512, and
# at H = 1024 0.77–0.96 (LSTM) and 0.92–0.95 (GRU); Elman 1.2–3.5 everywhere. So "auto" runs
# oneDNN's forward for LSTM and GRU layers from H = 256, their backward from H = 1024, and
# below that a differentiated call is the scan's (values and gradient alike).
FORWARD_FROM_HIDDEN = 256
TRAIN_FROM_HIDDEN = 1024


def slower_here(layer) -> Optional[str]:
    """Why ``"auto"`` prefers the scan for a call the kernel could run (measured), else ``None``."""
    cell = _cell(layer)[1]
    if cell not in (Cell.LSTM, Cell.LBR_GRU, Cell.GRU):
        return "oneDNN's vanilla RNN was slower than the scan at every measured shape"
    if layer.cell.w_h.shape[0] < FORWARD_FROM_HIDDEN:
        return f"below H = {FORWARD_FROM_HIDDEN} oneDNN's forward was slower than the scan"
    return None


def trains_on_kernel(layer) -> bool:
    """Whether ``"auto"`` differentiates a kernel call through oneDNN's backward (else the scan's)."""
    return slower_here(layer) is None and layer.cell.w_h.shape[0] >= TRAIN_FROM_HIDDEN


def with_gradient_of(forward: Callable, reference: Callable) -> Callable:
    """``forward``'s values with ``reference``'s gradient (the same function computed another way).

    Under ``grad``, the forward pass runs ``reference`` (its residuals are what its backward
    needs) and the backward is ``reference``'s; undifferentiated calls run ``forward`` alone.
    """
    function = jax.custom_vjp(forward)

    def fwd(*args):
        return jax.vjp(reference, *args)

    def bwd(vjp, cotangents):
        return vjp(cotangents)

    function.defvjp(fwd, bwd)
    return function
