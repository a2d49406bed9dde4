"""An independent float64 NumPy transcription of the cell equations and of the sequence layers.

Written from the equations in the module docstrings of ``recurrax/cells/{elman,lstm,gru}.py``
(which follow the seeds and DESIGN.md), of the echo-state reservoir (Jaeger 2001), and from the
papers of the modern cells: minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?"),
IndRNN (Li et al. 2018) and the LRU (Orvieto et al. 2023, in complex arithmetic). The
transcriptions of xLSTM's sLSTM and mLSTM, the RG-LRU, S6, CfC, LTC and the Hawk and Mamba blocks
live in ``tests/reference_*.py`` and plug in through ``MODERN``. Gate by gate, for one example
at a time, with a plain Python loop over time. Nothing here calls recurrax: the
recurrax NamedTuples are only read as containers of arrays (static metadata by field name).

Conventions: kernels are stored ``(in, out)`` and applied ``x @ W``; fused gate order is
i, f, g, o for the LSTM and r, z, n for the GRU.

Masking semantics (DESIGN.md, "Variable-length contract"): at a masked step the carry is left as
it was and the output is zero. ``reverse=True`` visits t = T-1, ..., 0 and keeps outputs aligned
with their inputs.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Optional

import numpy as np


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": sigmoid,
    "identity": lambda v: v,
}

_FAMILY_OF_TYPE = {"ElmanParams": "elman", "LSTMParams": "lstm", "GRUParams": "gru",
                   "ReservoirParams": "reservoir", "MinGRUParams": "mingru", "MinLSTMParams": "minlstm",
                   "IndRNNParams": "indrnn", "LRUParams": "lru"}
CARRY_FIELDS = {"elman": ("h",), "lstm": ("h", "c"), "gru": ("h",), "reservoir": ("h",), "mingru": ("h",),
                "minlstm": ("h",), "indrnn": ("h",), "lru": ("re", "im")}


def f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def cell_params(params: Any) -> dict:
    """A recurrax cell-params NamedTuple as a dict of float64 arrays plus its family name."""
    family = _FAMILY_OF_TYPE[type(params).__name__]
    out = {"family": family}
    for name, value in params._asdict().items():
        if name == "activation":
            out[name] = value.name
        elif value is None:
            out[name] = None
        elif dataclasses.is_dataclass(value):  # other static metadata, as a dict of its fields
            out[name] = dataclasses.asdict(value)
        elif hasattr(value, "_asdict"):  # a nested NamedTuple (a block's convolution, its cell)
            out[name] = {k: None if v is None else f64(v) for k, v in value._asdict().items()}
        else:
            out[name] = f64(value)
    return out


def state_size(p: dict) -> int:
    """The width of every carry field."""
    if p["family"] in ("mingru", "minlstm"):
        return p["b"].shape[0] // (2 if p["family"] == "mingru" else 3)
    if p["family"] == "indrnn":
        return p["u"].shape[0]
    if p["family"] == "lru":
        return p["nu_log"].shape[0]
    return p["w_h"].shape[0]


def output_size(p: dict) -> int:
    """The width of the step's output."""
    if p["family"] in MODERN:
        return MODERN[p["family"]].output_size(p)
    return p["C_re"].shape[1] if p["family"] == "lru" else state_size(p)


def carry_dict(carry: Any) -> dict:
    """A recurrax carry NamedTuple as a dict of float64 arrays."""
    return {name: f64(value) for name, value in carry._asdict().items()}


def carry_shapes(p: dict) -> dict:
    """The per-example shape of every carry field: ``(H,)`` for the classic cells; the modern cells'
    transcriptions (``MODERN``) give their own (matrix memories, SSM states, windows)."""
    if p["family"] in MODERN:
        return MODERN[p["family"]].carry_shapes(p)
    return {name: (state_size(p),) for name in CARRY_FIELDS[p["family"]]}


def zero_carry(p: dict, batch_shape: tuple = ()) -> dict:
    return {name: np.zeros(batch_shape + shape) for name, shape in carry_shapes(p).items()}


# --------------------------------------------------------------------------- one example, one step


def elman_step(p: dict, carry: dict, x: np.ndarray):
    """h' = f(x W_x + h W_h + b)."""
    f = ACTIVATIONS[p["activation"]]
    h = f(x @ p["w_x"] + carry["h"] @ p["w_h"] + p["b"])
    return {"h": h}, h


def lstm_step(p: dict, carry: dict, x: np.ndarray):
    """Seeds' LSTM, gate blocks i, f, g, o; peepholes p_i, p_f on c and p_o on c'."""
    hidden = p["w_h"].shape[0]
    h, c = carry["h"], carry["c"]

    def pre(gate):  # gate index in i, f, g, o
        cols = slice(gate * hidden, (gate + 1) * hidden)
        return x @ p["w_x"][:, cols] + h @ p["w_h"][:, cols] + p["b"][cols]

    if p["w_peep"] is None:
        p_i = p_f = p_o = np.zeros(hidden)
    else:
        p_i, p_f, p_o = p["w_peep"][0], p["w_peep"][1], p["w_peep"][2]
    i = sigmoid(pre(0) + p_i * c)
    f = sigmoid(pre(1) + p_f * c)
    g = np.tanh(pre(2))
    c_new = f * c + i * g
    o = sigmoid(pre(3) + p_o * c_new)
    h_new = o * np.tanh(c_new)
    return {"h": h_new, "c": c_new}, h_new


def gru_step(p: dict, carry: dict, x: np.ndarray):
    """GRU, gate blocks r, z, n; reset-after when ``b_hn`` is present, else reset-before."""
    hidden = p["w_h"].shape[0]
    h = carry["h"]
    blocks = [slice(k * hidden, (k + 1) * hidden) for k in range(3)]
    w_xr, w_xz, w_xn = (p["w_x"][:, s] for s in blocks)
    w_hr, w_hz, w_hn = (p["w_h"][:, s] for s in blocks)
    b_r, b_z, b_n = (p["b"][s] for s in blocks)
    r = sigmoid(x @ w_xr + b_r + h @ w_hr)
    z = sigmoid(x @ w_xz + b_z + h @ w_hz)
    if p["b_hn"] is not None:
        # reset-after: n = tanh(x W_n + b_in + r ⊙ (h U_n + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h
        n = np.tanh(x @ w_xn + b_n + r * (h @ w_hn + p["b_hn"]))
        h_new = (1.0 - z) * n + z * h
    else:
        # reset-before: h̃ = tanh(x W_h + (r ⊙ h) U_h + b_h), h' = (1 − z) ⊙ h + z ⊙ h̃
        candidate = np.tanh(x @ w_xn + (r * h) @ w_hn + b_n)
        h_new = (1.0 - z) * h + z * candidate
    return {"h": h_new}, h_new


def reservoir_step(p: dict, carry: dict, x: np.ndarray):
    """Leaky echo-state reservoir: x' = (1 − a) x + a f(W x + W_in u + b).

    ``W`` holds unit i's incoming weights in row i; the circulant layout stores
    ``w_h[i, j] = W[i, (i + offsets[j]) mod H]``.
    """
    hidden = p["w_h"].shape[0]
    offsets = p["layout"]["offsets"]
    if offsets is None:
        w = p["w_h"]
    else:
        w = np.zeros((hidden, hidden))
        for i in range(hidden):
            for j, offset in enumerate(offsets):
                w[i, (i + offset) % hidden] = p["w_h"][i, j]
    f = ACTIVATIONS[p["activation"]]
    a = float(p["leak_rate"])
    h = (1.0 - a) * carry["h"] + a * f(w @ carry["h"] + x @ p["w_x"] + p["b"])
    return {"h": h}, h


def min_g(v: np.ndarray) -> np.ndarray:
    """Feng et al.'s positive map for the log-space form: v + 1/2 for v ≥ 0, σ(v) below."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def mingru_step(p: dict, carry: dict, x: np.ndarray):
    """minGRU, blocks z, h̃: z = σ(x W_z + b_z), h̃ = x W_h + b_h (g(·) in log space),
    h' = (1 − z) ⊙ h + z ⊙ h̃."""
    hidden = state_size(p)
    k_z = x @ p["w_x"][:, :hidden] + p["b"][:hidden]
    k_h = x @ p["w_x"][:, hidden:] + p["b"][hidden:]
    z = sigmoid(k_z)
    candidate = min_g(k_h) if p["candidate"]["log_space"] else k_h
    h = (1.0 - z) * carry["h"] + z * candidate
    return {"h": h}, h


def minlstm_step(p: dict, carry: dict, x: np.ndarray):
    """minLSTM, blocks f, i, h̃: f = σ(·), i = σ(·), f' = f/(f + i), i' = i/(f + i),
    h' = f' ⊙ h + i' ⊙ h̃."""
    hidden = state_size(p)

    def pre(block):
        cols = slice(block * hidden, (block + 1) * hidden)
        return x @ p["w_x"][:, cols] + p["b"][cols]

    f, i = sigmoid(pre(0)), sigmoid(pre(1))
    candidate = min_g(pre(2)) if p["candidate"]["log_space"] else pre(2)
    h = f / (f + i) * carry["h"] + i / (f + i) * candidate
    return {"h": h}, h


def indrnn_step(p: dict, carry: dict, x: np.ndarray):
    """IndRNN: h' = σ(x W + u ⊙ h + b), with |u| clipped to recurrent_max when one is set."""
    u = p["u"]
    bound = p["recurrent_max"]["value"]
    if bound is not None:
        u = np.minimum(np.maximum(u, -bound), bound)
    f = ACTIVATIONS[p["activation"]]
    h = f(x @ p["w_x"] + u * carry["h"] + p["b"])
    return {"h": h}, h


def lru_step(p: dict, carry: dict, x: np.ndarray):
    """LRU in complex arithmetic: λ = exp(−exp(ν_log) + i exp(θ_log)), γ = exp(γ_log),
    h' = λ ⊙ h + γ ⊙ (x B), y = Re(h' C) + x D, B = B_re + i B_im, C = C_re + i C_im."""
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    b = p["B_re"] + 1j * p["B_im"]
    c = p["C_re"] + 1j * p["C_im"]
    h = lam * (carry["re"] + 1j * carry["im"]) + gamma * (x @ b)
    y = (h @ c).real + x @ p["D"]
    return {"re": h.real, "im": h.imag}, y


STEPS = {"elman": elman_step, "lstm": lstm_step, "gru": gru_step, "reservoir": reservoir_step,
         "mingru": mingru_step, "minlstm": minlstm_step, "indrnn": indrnn_step, "lru": lru_step}


@dataclasses.dataclass(frozen=True)
class Transcription:
    """A modern cell's transcription, written in its own ``tests/reference_<name>.py`` module."""

    params_type: str  # the recurrax Params class name, e.g. "RGLRUParams"
    carry_shapes: Any  # p -> {field: per-example shape}
    output_size: Any  # p -> int
    step: Any  # (p, carry, x) -> (carry, y), one example


def _modern() -> dict:
    """``{family: Transcription}`` from the modules that define ``FAMILY`` (one family) or ``FAMILIES``."""
    out = {}
    for name in _MODERN_MODULES:
        module = importlib.import_module(name)
        families = getattr(module, "FAMILIES", None) or {
            module.FAMILY: (module.PARAMS_TYPE, module.carry_shapes, module.output_size, module.step)}
        out.update({family: Transcription(*entry) for family, entry in families.items()})
    return out


_MODERN_MODULES = ("reference_xlstm", "reference_rglru", "reference_mamba", "reference_cfc")
MODERN = _modern()
_FAMILY_OF_TYPE.update({m.params_type: name for name, m in MODERN.items()})


def step(p: dict, carry: dict, x: np.ndarray):
    """One step for one example: ``carry`` fields shaped as ``carry_shapes(p)``, ``x`` ``(D,)``."""
    if p["family"] in MODERN:
        return MODERN[p["family"]].step(p, carry, x)
    return STEPS[p["family"]](p, carry, x)


def step_batched(p: dict, carry: dict, x: np.ndarray):
    """``step`` applied example by example over the leading batch axes of ``x``."""
    batch_shape = x.shape[:-1]
    new = zero_carry(p, batch_shape)
    ys = np.zeros(batch_shape + (output_size(p),))
    for idx in np.ndindex(*batch_shape):
        c, y = step(p, {name: v[idx] for name, v in carry.items()}, x[idx])
        for name in new:
            new[name][idx] = c[name]
        ys[idx] = y
    return new, ys


# --------------------------------------------------------------------------- sequences


def run(p: dict, xs: np.ndarray, carry: Optional[dict] = None, mask: Optional[np.ndarray] = None,
        reverse: bool = False, return_carries: bool = False):
    """One sequence ``xs`` ``(T, D)``: a Python loop over time with the masking semantics.

    Returns ``(final_carry, ys)`` (``ys`` ``(T, O)``), plus the carry after every step
    ``{name: (T, *shape)}`` with ``return_carries=True``.
    """
    time = xs.shape[0]
    carry = zero_carry(p) if carry is None else {k: f64(v) for k, v in carry.items()}
    ys = np.zeros((time, output_size(p)))
    carries = {name: np.zeros((time,) + shape) for name, shape in carry_shapes(p).items()}
    order = range(time - 1, -1, -1) if reverse else range(time)
    for t in order:
        if mask is None or mask[t]:
            carry, ys[t] = step(p, carry, f64(xs[t]))
        for name in carry:
            carries[name][t] = carry[name]
    if return_carries:
        return carry, ys, carries
    return carry, ys


def run_batched(p: dict, xs: np.ndarray, carry: Optional[dict] = None, mask: Optional[np.ndarray] = None,
                reverse: bool = False, return_carries: bool = False):
    """``run`` for every sequence of ``xs`` ``(*batch, T, D)``; ``mask`` is ``(*batch, T)``."""
    batch_shape = xs.shape[:-2]
    time = xs.shape[-2]
    if carry is None:
        carry = zero_carry(p, batch_shape)
    finals = zero_carry(p, batch_shape)
    ys = np.zeros(batch_shape + (time, output_size(p)))
    carries = {name: np.zeros(batch_shape + (time,) + shape) for name, shape in carry_shapes(p).items()}
    for idx in np.ndindex(*batch_shape):
        out = run(p, xs[idx], {k: v[idx] for k, v in carry.items()},
                  None if mask is None else mask[idx], reverse, return_carries=True)
        for name in finals:
            finals[name][idx] = out[0][name]
            carries[name][idx] = out[2][name]
        ys[idx] = out[1]
    if return_carries:
        return finals, ys, carries
    return finals, ys


def lengths_to_mask(lengths: np.ndarray, time: int) -> np.ndarray:
    """``mask[..., t] = t < lengths``, written as a loop."""
    lengths = np.asarray(lengths)
    mask = np.zeros(lengths.shape + (time,), dtype=bool)
    for idx in np.ndindex(*lengths.shape):
        mask[idx][: int(lengths[idx])] = True
    return mask


# --------------------------------------------------------------------------- layers (one unpadded sequence)


def _initial(layer: Any) -> Optional[dict]:
    return None if layer.initial is None else carry_dict(layer.initial)


def rnn(layer: Any, xs: np.ndarray, reverse: bool = False):
    """A recurrax ``RNNParams`` layer over one unpadded sequence ``(L, D)``: ``(final, ys)``."""
    return run(cell_params(layer.cell), f64(xs), _initial(layer), reverse=reverse)


def merge(name: str, forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    if name == "concat":
        return np.concatenate([forward, backward], axis=-1)
    if name == "sum":
        return forward + backward
    assert name == "mean"
    return (forward + backward) / 2.0


def bidirectional(layer: Any, xs: np.ndarray):
    """Forward over ``xs``; backward over the time-reversed sequence, its outputs reversed back."""
    fwd_final, fwd = rnn(layer.forward, xs)
    bwd_final, bwd_rev = rnn(layer.backward, f64(xs)[::-1])
    return (fwd_final, bwd_final), merge(layer.merge.name, fwd, bwd_rev[::-1])


def stack(params: Any, xs: np.ndarray, residual: bool = False):
    """A recurrax ``StackParams`` over one unpadded sequence: ``(finals, top outputs)``."""
    hs, finals = f64(xs), []
    for index, layer in enumerate(params.layers):
        if hasattr(layer, "merge"):
            final, out = bidirectional(layer, hs)
        else:
            final, out = rnn(layer, hs)
        if residual and index > 0:
            out = out + hs
        finals.append(final)
        hs = out
    return finals, hs


def dense(head: Any, x: np.ndarray) -> np.ndarray:
    return f64(x) @ f64(head.w) + f64(head.b)
