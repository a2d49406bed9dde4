"""Float64 NumPy transcription of one step of Mamba's selective SSM (S6) and of the Mamba block.

Written from Gu & Dao (2023), "Mamba: Linear-time sequence modeling with selective state
spaces" (Algorithm 2 and Figure 3) and mambapy's ``MambaBlock.step`` / ``ssm_step``, for ONE
example, channel by channel and state by state, with nothing from recurrax. Layouts (the
recurrax params read as containers of arrays): kernels ``(in, out)``; ``w_xproj`` blocks
``δ (dt_rank), B (N), C (N)``; the block's ``w_in`` blocks ``u`` (conv branch), ``z`` (gate);
conv taps ``w`` ``(width, ED)`` with tap ``width − 1`` on the current input; the window holds
the previous ``width − 1`` conv inputs, oldest first.

Selective SSM, channel e, state n:
    x̂ = x (no in-projection) or x @ w_in
    δ, B, C = split(x̂ @ w_xproj)
    Δ_e = softplus(Σ_r δ_r w_dt[r, e] + b_dt[e])
    h'[e, n] = exp(Δ_e · (−exp(A_log[e, n]))) h[e, n] + Δ_e x̂_e B_n
    y_e = Σ_n h'[e, n] C_n + D_e x̂_e
Block: [u, z] = x @ w_in; c = b + Σ_k w[k] ⊙ [window; u][k]; v = SiLU(c);
    (h', s) = SSM(v); y = (s ⊙ SiLU(z)) @ w_out.

``p`` is the params as a dict by field name; nested params (the block's ``conv`` and ``ssm``)
may be dicts or NamedTuples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FAMILIES: dict = {}  # filled at the bottom: {name: (PARAMS_TYPE, carry_shapes, output_size, step)}


def _as_dict(value: Any) -> dict:
    """Nested params as a dict of float64 arrays (None stays None)."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    return {k: (None if v is None or isinstance(v, str) else (v if isinstance(v, dict) else np.asarray(v, np.float64)))
            for k, v in value.items()}


def softplus(v: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, v)


def silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


# --------------------------------------------------------------------------- selective SSM


def ssm_carry_shapes(p: dict) -> dict:
    return {"state": tuple(np.shape(p["A_log"]))}


def ssm_output_size(p: dict) -> int:
    return int(np.shape(p["D"])[0])


def ssm_step(p: dict, carry: dict, x: np.ndarray):
    """One step of S6 for one example ``x`` ``(input_size,)``; carry ``{"state": (E, N)}``."""
    p = _as_dict(p)
    channels, states = p["A_log"].shape
    rank = p["w_dt"].shape[0]
    x_hat = x if p.get("w_in") is None else x @ p["w_in"]
    proj = x_hat @ p["w_xproj"]
    delta_low, B, C = proj[:rank], proj[rank:rank + states], proj[rank + states:rank + 2 * states]
    h = np.empty((channels, states))
    y = np.empty(channels)
    for e in range(channels):
        delta = softplus(sum(delta_low[r] * p["w_dt"][r, e] for r in range(rank)) + p["b_dt"][e])
        for n in range(states):
            A = -np.exp(p["A_log"][e, n])
            h[e, n] = np.exp(delta * A) * carry["state"][e, n] + delta * x_hat[e] * B[n]
        y[e] = sum(h[e, n] * C[n] for n in range(states)) + p["D"][e] * x_hat[e]
    return {"state": h}, y


# --------------------------------------------------------------------------- Mamba block


def block_carry_shapes(p: dict) -> dict:
    conv, ssm = _as_dict(p["conv"]), _as_dict(p["ssm"])
    width, inner = conv["w"].shape
    return {"window": (width - 1, inner), "state": tuple(ssm["A_log"].shape)}


def block_output_size(p: dict) -> int:
    return int(np.shape(p["w_out"])[1])


def block_step(p: dict, carry: dict, x: np.ndarray):
    """One step of the Mamba block for one example ``x`` ``(input_size,)``."""
    conv, ssm = _as_dict(p["conv"]), _as_dict(p["ssm"])
    w_in, w_out = np.asarray(p["w_in"], np.float64), np.asarray(p["w_out"], np.float64)
    inner = w_out.shape[0]
    xz = x @ w_in
    u, z = xz[:inner], xz[inner:]
    stacked = np.concatenate([carry["window"], u[None, :]], axis=0)  # (width, ED), oldest first
    c = conv["b"] + sum(conv["w"][k] * stacked[k] for k in range(stacked.shape[0]))
    ssm_carry, s = ssm_step(ssm, {"state": carry["state"]}, silu(c))
    y = (s * silu(z)) @ w_out
    return {"window": stacked[1:], "state": ssm_carry["state"]}, y


FAMILIES.update({
    "selective_ssm": ("SelectiveSSMParams", ssm_carry_shapes, ssm_output_size, ssm_step),
    "mamba": ("MambaParams", block_carry_shapes, block_output_size, block_step),
})
