"""NumPy float64 transcription of one RG-LRU step and one step of Hawk's recurrent block.

Written from the Griffin paper's equations (De et al. 2024, eqs. 1–4 and Figure 2) and
recurrentgemma's ``RGLRU`` / ``RecurrentBlock``, not from ``recurrax.cells.rglru`` or
``recurrax.blocks.hawk``: one example at a time, each head's block a separate product, the
conv an explicit sum over taps, ``sqrt(1 − a²)`` formed plainly.

RG-LRU (``p``: ``RGLRUParams``' fields; ``w_in`` None when D == H):

    x̂ = x  or  x w_in
    r = σ(x̂ W_a + b_a),  i = σ(x̂ W_x + b_x)        W block-diagonal: head k maps x̂[kB:(k+1)B]
    a = exp(−8 r softplus(Λ))
    h' = a h + sqrt(1 − a²) (i x̂),   y = h'

Hawk (``p``: ``HawkParams``' fields; ``p["conv"]`` and ``p["lru"]`` the nested ``ConvParams`` /
``RGLRUParams``, as dicts or as the NamedTuples):

    g = gelu_tanh(x W_y + b_y),  u = x W_x + b_x
    v = b_c + Σ_k w_c[k] s_k,   s = [window; u]  (K rows, oldest first),  window' = s[1:]
    h' = RG-LRU(h, v),   y = (h' g) W_out + b_out
"""

from __future__ import annotations

import math

import numpy as np

C = 8.0


def _get(p, name):
    return p[name] if isinstance(p, dict) else getattr(p, name)


def _f64(v):
    return None if v is None else np.asarray(v, np.float64)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _softplus(v):
    return np.logaddexp(0.0, v)


def _block_diagonal(w, b, x):
    heads, size, _ = w.shape
    out = np.empty(heads * size)
    for k in range(heads):
        out[k * size:(k + 1) * size] = x[k * size:(k + 1) * size] @ w[k]
    return out + b


# --------------------------------------------------------------------------- RG-LRU

def rglru_output_size(p: dict) -> int:
    return _f64(_get(p, "a_param")).shape[0]


def rglru_carry_shapes(p: dict) -> dict:
    return {"h": (rglru_output_size(p),)}


def rglru_step(p: dict, carry: dict, x: np.ndarray):
    w_in = _f64(_get(p, "w_in"))
    x_hat = np.asarray(x, np.float64) if w_in is None else np.asarray(x, np.float64) @ w_in
    r = _sigmoid(_block_diagonal(_f64(_get(p, "w_a")), _f64(_get(p, "b_a")), x_hat))
    i = _sigmoid(_block_diagonal(_f64(_get(p, "w_i")), _f64(_get(p, "b_i")), x_hat))
    a = np.exp(-C * r * _softplus(_f64(_get(p, "a_param"))))
    h = a * np.asarray(carry["h"], np.float64) + np.sqrt(1.0 - a * a) * (i * x_hat)
    return {"h": h}, h


# --------------------------------------------------------------------------- Hawk block

def _gelu_tanh(v):
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))


def hawk_output_size(p: dict) -> int:
    return _f64(_get(p, "w_out")).shape[1]


def hawk_carry_shapes(p: dict) -> dict:
    taps = _f64(_get(_get(p, "conv"), "w"))
    return {"window": (taps.shape[0] - 1, taps.shape[1]), "state": (taps.shape[1],)}


def hawk_step(p: dict, carry: dict, x: np.ndarray):
    x = np.asarray(x, np.float64)
    g = _gelu_tanh(x @ _f64(_get(p, "w_y")) + _f64(_get(p, "b_y")))
    u = x @ _f64(_get(p, "w_x")) + _f64(_get(p, "b_x"))
    taps, bias = _f64(_get(_get(p, "conv"), "w")), _f64(_get(_get(p, "conv"), "b"))
    s = np.concatenate([np.asarray(carry["window"], np.float64).reshape(-1, u.shape[0]), u[None]], axis=0)
    v = bias + sum(taps[k] * s[k] for k in range(taps.shape[0]))
    lru_carry, h = rglru_step(_get(p, "lru"), {"h": carry["state"]}, v)
    y = (h * g) @ _f64(_get(p, "w_out")) + _f64(_get(p, "b_out"))
    return {"window": s[1:], "state": lru_carry["h"]}, y


FAMILIES = {
    "rglru": ("RGLRUParams", rglru_carry_shapes, rglru_output_size, rglru_step),
    "hawk": ("HawkParams", hawk_carry_shapes, hawk_output_size, hawk_step),
}
