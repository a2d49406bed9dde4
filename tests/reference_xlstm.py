"""NumPy float64 transcriptions of one sLSTM and one mLSTM step (Beck et al. 2024, xLSTM).

Written from the paper's equations (Section 2.2 and 2.3, with the stabiliser of Appendix A and
xlstm 2.0.6's conventions: k scaled by 1/sqrt(d), eps after the max, the n = 0 start of the
sLSTM), head by head with explicit loops, independently of ``recurrax.cells.slstm`` /
``recurrax.cells.mlstm``. One example: ``x`` (D,), carries without batch axes.

``p`` is the params NamedTuple as a dict of float64 arrays by field name (``options`` as a dict),
``carry`` a dict of float64 arrays by field name.
"""

from __future__ import annotations

import math

import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _log_sigmoid(v):
    # log σ(v) = −log(1 + e^{−v}), written stably for either sign
    return np.where(v >= 0, -np.log1p(np.exp(-np.abs(v))), v - np.log1p(np.exp(-np.abs(v))))


# ----------------------------------------------------------------------------- sLSTM


def slstm_output_size(p: dict) -> int:
    heads, head_dim = p["r"].shape[0], p["r"].shape[1]
    return heads * head_dim


def slstm_carry_shapes(p: dict) -> dict:
    H = slstm_output_size(p)
    return {"h": (H,), "c": (H,), "n": (H,), "m": (H,)}


def slstm_step(p: dict, carry: dict, x: np.ndarray):
    """Gates i, f, z, o; R block-diagonal per head: r[k, j, g, u] maps unit j of head k to unit u, gate g."""
    heads, head_dim = p["r"].shape[0], p["r"].shape[1]
    H = heads * head_dim
    h, c, n, m = (np.asarray(carry[name], np.float64) for name in "hcnm")
    pre = np.zeros((4, H))
    for g in range(4):
        for k in range(heads):
            for u in range(head_dim):
                unit = k * head_dim + u
                column = g * H + unit
                recurrent = sum(h[k * head_dim + j] * p["r"][k, j, g, u] for j in range(head_dim))
                pre[g, unit] = x @ p["w_x"][:, column] + recurrent + p["b"][column]
    i_pre, f_pre, z_pre, o_pre = pre
    log_f_plus_m = m + _log_sigmoid(f_pre)
    m_new = np.where(n == 0.0, i_pre, np.maximum(i_pre, log_f_plus_m))
    i_gate = np.minimum(np.exp(i_pre - m_new), 1.0)
    f_gate = np.minimum(np.exp(log_f_plus_m - m_new), 1.0)
    c_new = f_gate * c + i_gate * np.tanh(z_pre)
    n_new = f_gate * n + i_gate
    h_new = _sigmoid(o_pre) * c_new / n_new
    return {"h": h_new, "c": c_new, "n": n_new, "m": m_new}, h_new


# ----------------------------------------------------------------------------- mLSTM


def mlstm_output_size(p: dict) -> int:
    return p["w_q"].shape[1]


def mlstm_carry_shapes(p: dict) -> dict:
    heads = p["w_i"].shape[1]
    d = mlstm_output_size(p) // heads
    return {"C": (heads, d, d), "n": (heads, d), "m": (heads,)}


def mlstm_step(p: dict, carry: dict, x: np.ndarray):
    """Per head: C' = f' C + i' k vᵀ (C[key, value]), n' = f' n + i' k, h̃ = Cᵀ q / (max(|nᵀq|, e^{−m'}) + eps)."""
    heads = p["w_i"].shape[1]
    H = mlstm_output_size(p)
    d = H // heads
    eps = p["options"]["eps"]
    C_all, n_all, m_all = (np.asarray(carry[name], np.float64) for name in ("C", "n", "m"))
    q_all, k_all, v_all = x @ p["w_q"], x @ p["w_k"], x @ p["w_v"]
    i_all = x @ p["w_i"] + p["b_i"]
    f_all = x @ p["w_f"] + p["b_f"]
    C_new, n_new, m_new = np.zeros_like(C_all), np.zeros_like(n_all), np.zeros_like(m_all)
    h_tilde = np.zeros(H)
    for k in range(heads):
        part = slice(k * d, (k + 1) * d)
        q, key, v = q_all[part], k_all[part] / math.sqrt(d), v_all[part]
        log_f = _log_sigmoid(f_all[k])
        m_new[k] = max(log_f + m_all[k], i_all[k])
        f_gate = math.exp(log_f + m_all[k] - m_new[k])
        i_gate = math.exp(i_all[k] - m_new[k])
        C_new[k] = f_gate * C_all[k] + i_gate * np.outer(key, v)
        n_new[k] = f_gate * n_all[k] + i_gate * key
        denominator = max(abs(n_new[k] @ q), math.exp(-m_new[k])) + eps
        h_tilde[part] = (C_new[k].T @ q) / denominator
    if p["w_o"] is None:
        y = h_tilde
    else:
        y = _sigmoid(x @ p["w_o"] + p["b_o"]) * h_tilde
    return {"C": C_new, "n": n_new, "m": m_new}, y


FAMILIES = {
    "slstm": ("SLSTMParams", slstm_carry_shapes, slstm_output_size, slstm_step),
    "mlstm": ("MLSTMParams", mlstm_carry_shapes, mlstm_output_size, mlstm_step),
}
