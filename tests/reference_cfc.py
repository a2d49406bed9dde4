"""NumPy float64 transcriptions of one CfC step and one LTC step (ncps ``CfCCell`` / ``LTCCell``).

Written from the papers' equations and ncps's cells, not from ``recurrax.cells.cfc`` / ``ltc``:
one example at a time, each head its own matrix, the backbone and the synapses plain loops.
``p`` holds the params' fields as float64 arrays (``None`` where absent) and ``p["config"]``
their static options as a dict. Two families, so ``FAMILIES`` names them.

CfC (Hasani et al. 2022):

    z = [u, h];  z ← f(z W_l + b_l) for each backbone layer
    ff1, ff2, t_a, t_b = z W_ff1 + b_ff1, ...             (the blocks of p["w"], in that order)
    default:  h' = tanh(ff1)(1 − σ(t_a Δt + t_b)) + σ(t_a Δt + t_b) tanh(ff2)
    no_gate:  h' = tanh(ff1) + σ(t_a Δt + t_b) tanh(ff2)
    pure:     h' = A − A exp(−Δt (|w_τ| + |ff1|)) ff1

LTC (Hasani et al. 2021), K semi-implicit Euler unfolds of length Δt / K:

    v_j ← (c_j v_j + g_j vleak_j + Σ_i A_ij E_ij + Σ_k S_kj E^s_kj) / (c_j + g_j + Σ_i A_ij + Σ_k S_kj + ε)
    A_ij = w_ij σ(σ_ij (v_i − μ_ij)),  S_kj = w^s_kj σ(σ^s_kj (u_k − μ^s_kj)),  c_j = cm_j K / Δt
    y = v ⊙ output_w + output_b
"""

from __future__ import annotations

import math

import numpy as np



def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _activation(name: str, v: np.ndarray) -> np.ndarray:
    if name == "lecun_tanh":
        return 1.7159 * np.tanh(0.666 * v)
    if name == "tanh":
        return np.tanh(v)
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "silu":
        return v * _sigmoid(v)
    if name == "gelu":  # exact: v Φ(v)
        return np.array([0.5 * e * (1.0 + math.erf(e / math.sqrt(2.0))) for e in v])
    raise ValueError(name)


def cfc_output_size(p: dict) -> int:
    heads = 1 if p["config"]["mode"] == "pure" else 4
    return p["b"].shape[0] // heads


def cfc_carry_shapes(p: dict) -> dict:
    return {"h": (cfc_output_size(p),)}


def cfc_step(p: dict, carry: dict, x: np.ndarray):
    config = p["config"]
    n = cfc_output_size(p)
    h = carry["h"]
    if config["elapsed_time"]:
        u, dt = x[:-1], float(x[-1])
    else:
        u, dt = x, 1.0
    z = np.concatenate([u, h])
    layers = []
    if p["backbone_w"] is not None:
        layers.append((p["backbone_w"], p["backbone_b"]))
    if p["backbone_deep_w"] is not None:
        layers += [(p["backbone_deep_w"][i], p["backbone_deep_b"][i]) for i in range(p["backbone_deep_w"].shape[0])]
    for w, b in layers:
        z = _activation(config["activation"], z @ w + b)

    def head(k):  # the k-th (F, H) block of the fused heads
        return z @ p["w"][:, k * n:(k + 1) * n] + p["b"][k * n:(k + 1) * n]

    if config["mode"] == "pure":
        ff1 = head(0)
        rate = np.abs(p["w_tau"]) + np.abs(ff1)
        h_new = p["a"] - p["a"] * np.exp(-dt * rate) * ff1
    else:
        ff1, ff2 = np.tanh(head(0)), np.tanh(head(1))
        gate = _sigmoid(head(2) * dt + head(3))
        if config["mode"] == "no_gate":
            h_new = ff1 + gate * ff2
        else:
            h_new = (1.0 - gate) * ff1 + gate * ff2
    return {"h": h_new}, h_new.copy()


def ltc_output_size(p: dict) -> int:
    return p["gleak"].shape[0]


def ltc_carry_shapes(p: dict) -> dict:
    return {"v": (ltc_output_size(p),)}


def _softplus(v):
    return np.logaddexp(0.0, v)


def ltc_step(p: dict, carry: dict, x: np.ndarray):
    config = p["config"]
    positive = _softplus if config["implicit_param_constraints"] else (lambda v: v)
    if config["elapsed_time"]:
        u, dt = x[:-1], float(x[-1])
    else:
        u, dt = x, 1.0
    u = u * p["input_w"] + p["input_b"]
    n, d = ltc_output_size(p), u.shape[0]
    sensory_w, w = positive(p["sensory_w"]), positive(p["w"])
    num_s, den_s = np.zeros(n), np.zeros(n)
    for k in range(d):
        for j in range(n):
            s = sensory_w[k, j] * _sigmoid(p["sensory_sigma"][k, j] * (u[k] - p["sensory_mu"][k, j]))
            num_s[j] += s * p["sensory_erev"][k, j]
            den_s[j] += s
    c = positive(p["cm"]) * config["ode_unfolds"] / dt
    g = positive(p["gleak"])
    v = np.array(carry["v"], dtype=np.float64)
    for _ in range(config["ode_unfolds"]):
        new = np.empty(n)
        for j in range(n):
            a = [w[i, j] * _sigmoid(p["sigma"][i, j] * (v[i] - p["mu"][i, j])) for i in range(n)]
            numerator = c[j] * v[j] + g[j] * p["vleak"][j] + sum(ai * p["erev"][i, j] for i, ai in enumerate(a)) + num_s[j]
            denominator = c[j] + g[j] + sum(a) + den_s[j] + config["epsilon"]
            new[j] = numerator / denominator
        v = new
    return {"v": v}, v * p["output_w"] + p["output_b"]


FAMILIES = {
    "cfc": ("CfCParams", cfc_carry_shapes, cfc_output_size, cfc_step),
    "ltc": ("LTCParams", ltc_carry_shapes, ltc_output_size, ltc_step),
}
