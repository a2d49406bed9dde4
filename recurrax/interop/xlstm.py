"""xLSTM (the ``xlstm`` package, NX-AI): sLSTM cell weights and sLSTM/mLSTM states, into recurrax.

NumPy and JAX only: nothing here imports torch or xlstm (pass ``state_dict`` tensors as NumPy
arrays, ``{k: v.numpy() for k, v in cell.state_dict().items()}``).

- ``from_xlstm(state_dict, w_x, backend=...)``: an ``sLSTMCell``'s weights as ``SLSTMParams``.
  The cell holds the recurrent kernel and the biases; its input pre-activations come from the
  layer around it (head-wise projections, a convolution), so the dense input kernel ``w_x``
  (D, 4H), gates i, f, z, o and heads inside each gate block, is given separately. The cell
  stores both tensors in a backend-specific internal layout (its ``state_dict``):

  ==========  ==============================  ===========================
  backend     ``_recurrent_kernel_``          ``_bias_`` (4H,)
  ==========  ==============================  ===========================
  vanilla     (NH, 4·hd, hd): [k, g·hd+u, j]  gate-major [g, k, u]
  cuda        (NH, hd, 4·hd): [k, j, g·hd+u]  head-major [k, g, u]
  ==========  ==============================  ===========================

  (k head, g gate, j input unit, u output unit); both become recurrax's ``r`` (NH, hd, 4, hd)
  = xlstm's external ``recurrent_kernel`` layout, and a gate-major ``b``. The layouts cannot be
  told apart from the bias, hence ``backend``. Gradients with respect to these tensors convert
  the same way (the maps are permutations).
- ``slstm_carry_from_xlstm(states)``: xlstm's sLSTM state ``(4, *batch, H)`` (h, c, n, m) as an
  ``SLSTMCarry``; ``slstm_carry_to_xlstm`` back.
- ``mlstm_carry_from_xlstm(c, n, m, backend=...)``: the mLSTM backends' states as an
  ``MLSTMCarry``: ``recurrent_step_stabilized_simple``'s ``c`` (B, NH, d, d), ``n`` (B, NH, d, 1),
  ``m`` (B, NH, 1, 1) (``backend="recurrent"``), or ``chunkwise_simple``'s last state, whose keys
  are not scaled by ``1/sqrt(d)`` (its queries are), so its ``c`` and ``n`` are ``sqrt(d)``
  times recurrax's (``backend="chunkwise"``).

>>> import numpy as np
>>> from recurrax.interop.xlstm import from_xlstm
>>> sd = {"_recurrent_kernel_": np.zeros((2, 16, 4)), "_bias_": np.zeros(32)}
>>> params = from_xlstm(sd, np.zeros((3, 32)), backend="vanilla")
>>> (params.r.shape, params.b.shape)
((2, 4, 4, 4), (32,))
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from recurrax.cells.mlstm import MLSTMCarry
from recurrax.cells.slstm import SLSTMCarry, SLSTMParams

__all__ = ["from_xlstm", "slstm_carry_from_xlstm", "slstm_carry_to_xlstm", "mlstm_carry_from_xlstm"]

BACKENDS = ("vanilla", "cuda")


def _find(state_dict: Mapping[str, Any], suffix: str) -> np.ndarray:
    keys = [k for k in state_dict if k == suffix or k.endswith("." + suffix)]
    if len(keys) != 1:
        raise ValueError(
            f"Expected exactly one key ending in {suffix!r} in the sLSTM cell's state_dict, got "
            f"{keys or 'none'} among {sorted(state_dict)}."
        )
    return np.asarray(state_dict[keys[0]])


def from_xlstm(state_dict: Mapping[str, Any], w_x: Any, *, backend: str = "vanilla", dtype=None) -> SLSTMParams:
    """``SLSTMParams`` from an xlstm ``sLSTMCell`` state dict and an input kernel ``w_x`` (D, 4H).

    ``state_dict`` maps names to arrays; the keys ``_recurrent_kernel_`` and ``_bias_`` (alone or
    with a module prefix, ``"slstm_cell._bias_"``) are read. ``backend`` is the cell's,
    ``"vanilla"`` or ``"cuda"`` (their internal layouts differ; see the module docstring).
    ``dtype`` defaults to ``w_x``'s (as JAX holds it: float32 for float64 arrays without x64).
    """
    if backend not in BACKENDS:
        raise ValueError(f"Expected backend in {BACKENDS}, got {backend!r}.")
    kernel, bias = _find(state_dict, "_recurrent_kernel_"), _find(state_dict, "_bias_")
    w_x = np.asarray(w_x)
    if kernel.ndim != 3:
        raise ValueError(f"Expected _recurrent_kernel_ of rank 3 (num_heads, ., .), got shape {kernel.shape}.")
    heads = kernel.shape[0]
    head_dim = kernel.shape[2] if backend == "vanilla" else kernel.shape[1]
    expected = (heads, 4 * head_dim, head_dim) if backend == "vanilla" else (heads, head_dim, 4 * head_dim)
    hidden = heads * head_dim
    if kernel.shape != expected:
        raise ValueError(
            f"Expected the {backend} backend's _recurrent_kernel_ of shape (num_heads, "
            f"{'4·head_dim, head_dim' if backend == 'vanilla' else 'head_dim, 4·head_dim'}), got {kernel.shape}."
        )
    if bias.shape != (4 * hidden,):
        raise ValueError(f"Expected _bias_ of shape ({4 * hidden},) (4 · hidden_size), got {bias.shape}.")
    if w_x.ndim != 2 or w_x.shape[1] != 4 * hidden:
        raise ValueError(f"Expected w_x of shape (input_size, {4 * hidden}), got {w_x.shape}.")
    if backend == "vanilla":
        # [k, g·hd + u, j] -> [k, j, g, u]
        r = kernel.reshape(heads, 4, head_dim, head_dim).transpose(0, 3, 1, 2)
        b = bias
    else:
        # [k, j, g·hd + u] -> [k, j, g, u]; bias [k, g, u] -> [g, k, u]
        r = kernel.reshape(heads, head_dim, 4, head_dim)
        b = bias.reshape(heads, 4, head_dim).transpose(1, 0, 2).reshape(-1)
    # default: w_x's dtype as JAX holds it (float64 NumPy arrays become float32 without x64)
    dtype = jnp.asarray(w_x).dtype if dtype is None else dtype
    return SLSTMParams(w_x=jnp.asarray(w_x, dtype), r=jnp.asarray(r, dtype), b=jnp.asarray(b, dtype))


def slstm_carry_from_xlstm(states: Any) -> SLSTMCarry:
    """xlstm's sLSTM state ``(4, *batch, H)``, stacked h, c, n, m, as an ``SLSTMCarry``."""
    states = jnp.asarray(states)
    if states.ndim < 2 or states.shape[0] != 4:
        raise ValueError(f"Expected an sLSTM state of shape (4, *batch, hidden_size), got {tuple(states.shape)}.")
    return SLSTMCarry(*states)


def slstm_carry_to_xlstm(carry: SLSTMCarry) -> np.ndarray:
    """An ``SLSTMCarry`` as xlstm's stacked state ``(4, *batch, H)`` (NumPy)."""
    return np.stack([np.asarray(v) for v in carry])


def mlstm_carry_from_xlstm(c: Any, n: Any, m: Any, *, backend: str = "recurrent") -> MLSTMCarry:
    """An ``MLSTMCarry`` from the xlstm mLSTM backends' states (see the module docstring).

    ``c`` (*batch, NH, d, d); ``n`` (*batch, NH, d, 1) or (*batch, NH, d); ``m`` (*batch, NH, 1, 1)
    or (*batch, NH). ``backend="chunkwise"`` divides ``c`` and ``n`` by ``sqrt(d)``.
    """
    if backend not in ("recurrent", "chunkwise"):
        raise ValueError(f"Expected backend 'recurrent' or 'chunkwise', got {backend!r}.")
    c, n, m = jnp.asarray(c), jnp.asarray(n), jnp.asarray(m)
    if c.ndim < 3 or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"Expected c of shape (*batch, num_heads, d, d), got {tuple(c.shape)}.")
    lead, d = c.shape[:-2], c.shape[-1]
    if n.shape == lead + (d, 1):
        n = n[..., 0]
    if m.shape == lead + (1, 1):
        m = m[..., 0, 0]
    if n.shape != lead + (d,) or m.shape != lead:
        raise ValueError(
            f"Expected n of shape {lead + (d, 1)} or {lead + (d,)} and m of shape {lead + (1, 1)} or {lead} "
            f"for c of shape {tuple(c.shape)}, got {tuple(n.shape)} and {tuple(m.shape)}."
        )
    if backend == "chunkwise":
        c, n = c / math.sqrt(d), n / math.sqrt(d)
    return MLSTMCarry(c, n, m)
