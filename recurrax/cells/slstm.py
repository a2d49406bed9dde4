"""sLSTM (Beck et al. 2024, xLSTM): a scalar-memory LSTM with exponential gates and a stabiliser.

Equations, row-vector form, gates **i, f, z, o** (xLSTM's order) fused in ``w_x`` and ``b``; NH
heads of size hd = H / NH; ``h`` split into heads ``h^(k)`` (*batch, hd):

    [ĩ, f̃, z̃, õ] = x @ w_x + rec(h) + b                each (*batch, H)
    rec(h)_{g, k} = h^(k) @ r[k, :, g, :]                per gate g and head k: block-diagonal R
    log f = m + log σ(f̃)              (xlstm's ``logfplusm``: the sigmoid forget gate, in log space)
    m'    = max(ĩ, log f)             (m' = ĩ where n = 0: see below)
    i' = min(exp(ĩ − m'), 1)     f' = min(exp(log f − m'), 1)
    c' = f' ⊙ c + i' ⊙ tanh(z̃)       n' = f' ⊙ n + i'
    h' = σ(õ) ⊙ c' / n'

The carry is ``SLSTMCarry(h, c, n, m)``, each ``(*batch, H)``, in xlstm's state order; the
output is ``h'``. ``m`` is the stabiliser: ``c`` and ``n`` are the paper's ``exp``-gated sums
scaled by ``exp(−m)``, so no ``exp`` overflows, and ``h = c / n`` is the same for any ``m``.

Shapes: ``w_x`` (D, 4H) and ``b`` (4H,), gate-major ``[i | f | z | o]``, each block head-major
(xlstm's internal "SBGNH" layout of the vanilla backend). ``r`` is (NH, hd, 4, hd), exactly
xlstm's *external* ``recurrent_kernel`` layout (head, input unit, gate, output unit), so
``h^(k) @ r[k, :, g, :]`` is the house's (in, out) convention for each square block.

Choices, and why:

- **Reference.** Everything here is xlstm 2.0.6's "vanilla" backend (``slstm_forward`` with
  ``slstm_forward_pointwise``), which the tests match to 1e-10 in float64, gradients included:
  the gradient flows through ``m`` as there (the commented-out ``no_grad`` is not applied), and
  the ``min(·, 1)`` clamps are kept (they only bind at ``n = 0``, where ``f' = exp(log f − ĩ)``
  may exceed 1 and is cut to 1; ``f'`` multiplies ``c = n = 0`` then, so the value is moot).
- **The n = 0 case, per unit.** xlstm sets ``m' = ĩ`` when *all* of ``n`` (the whole batch)
  is zero, i.e. at the first step from its zero state. Here the test is per unit
  (``m' = where(n == 0, ĩ, max(ĩ, log f))``) so that examples of a batch stay independent
  (masking, ``vmap``, sharding); the two agree whenever ``n`` is all zero or nowhere zero, the
  only cases a run from xlstm's zero state meets (``n' ≥ i' > 0`` after any step).
- **Input weights.** xlstm's sLSTM layer feeds the cell with head-wise projections (and a
  causal convolution for i and f); the cell itself takes the pre-activations ``x @ w_x``. Here
  the cell owns a dense ``w_x`` (D, 4H) so that it maps any D to H like every family.
- **No ``pointwise``.** The products/pointwise split of the fused backward pass needs a dense
  ``w_h``; R is stored block-diagonally (NH·hd²·4 numbers, not H²·4), so it is not declared.
  ``recurrent_blocks`` gives the dense (H, H) block-diagonal matrix per gate for spectra.

Initialisation as xlstm's sLSTM layer/cell: ``w_x`` normal with std ``sqrt(2 / (5 D))``
("small init"), ``r`` zeros (``recurrent_init="zeros"``, xlstm's default; ``"standard"``:
uniform ``±1/sqrt(H)``), biases zero except the forget gate's ``"powerlaw_blockdependent"``
values per head, ``−(−5 + 12 (u / (hd − 1))^(0.3 + 1.3 ρ))`` for unit ``u`` with ``ρ =
block_index / (num_blocks − 1)`` (0 for one block): from 5 down to −7 (for hd = 1, where
xlstm divides 0 by 0, the fraction is taken as 0: the bias is 5).

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import slstm
>>> params = slstm.init(jax.random.key(0), 3, 8, num_heads=2)
>>> carry, y = slstm.step(params, slstm.initial_carry(params, (2,)), jnp.ones((2, 3)))
>>> (y.shape, carry.m.shape, params.r.shape)
((2, 8), (2, 8), (2, 4, 4, 4))

Reference: M. Beck, K. Pöppel, M. Spanring, A. Auer, O. Prudnikova, M. Kopp, G. Klambauer,
J. Brandstetter and S. Hochreiter, "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024
(arXiv:2405.04517); code: the ``xlstm`` package (NX-AI/xlstm), ``blocks/slstm/src/vanilla``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_params_type, check_positive_int
from recurrax.cells._common import check_heads, check_sizes, check_step, lift, split_gates, zeros_carry

__all__ = [
    "SLSTMParams",
    "SLSTMCarry",
    "init",
    "initial_carry",
    "step",
    "recurrent",
    "num_heads",
    "input_size",
    "output_size",
    "recurrent_blocks",
    "forget_bias_powerlaw",
]

GATES = "ifzo"
BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")
RECURRENT_INITS = ("zeros", "standard")


class SLSTMParams(NamedTuple):
    """Parameters of an sLSTM cell, gates fused in xlstm's order i, f, z, o."""

    w_x: jax.Array  # (input_size, 4 * hidden_size), gate-major, heads inside each gate block
    r: jax.Array  # (num_heads, head_dim, 4, head_dim): xlstm's external recurrent_kernel layout
    b: jax.Array  # (4 * hidden_size,), same layout as w_x's columns


class SLSTMCarry(NamedTuple):
    """State of an sLSTM cell, in xlstm's order: output ``h``, cell ``c``, normaliser ``n``, stabiliser ``m``."""

    h: jax.Array  # (*batch, hidden_size)
    c: jax.Array  # (*batch, hidden_size)
    n: jax.Array  # (*batch, hidden_size)
    m: jax.Array  # (*batch, hidden_size)


def forget_bias_powerlaw(head_dim: int, block_index: int = 0, num_blocks: int = 1) -> np.ndarray:
    """xlstm's "powerlaw_blockdependent" forget-gate bias of one head, ``(head_dim,)`` float64."""
    ratio = block_index / (num_blocks - 1) if num_blocks > 1 else 0.0
    fraction = np.arange(head_dim) / (head_dim - 1) if head_dim > 1 else np.zeros(1)
    return -(-5.0 + 12.0 * fraction ** (0.3 + 1.3 * ratio))


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    bias_init: str = "powerlaw_blockdependent",
    recurrent_init: str = "zeros",
    block_index: int = 0,
    num_blocks: int = 1,
    dtype=jnp.float32,
) -> SLSTMParams:
    """Initialise an sLSTM cell as xlstm does (see the module docstring).

    Args:
      key: PRNG key, split once per tensor.
      input_size, hidden_size: D and H.
      num_heads: NH, dividing H (xlstm's default is 4).
      bias_init: xlstm's ``bias_init``: ``"powerlaw_blockdependent"`` (forget gate from 5 down to
        −7 per head, others 0), ``"small_init"`` (forget gate ``linspace(3, 6)`` per head),
        ``"standard"`` (every bias uniform ``±1/sqrt(H)``) or ``"zeros"``.
      recurrent_init: ``"zeros"`` (xlstm's default) or ``"standard"`` (uniform ``±1/sqrt(H)``).
      block_index, num_blocks: the block's place in a residual stack (the power law's exponent).
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    head_dim = check_heads(num_heads, hidden_size)
    if bias_init not in BIAS_INITS:
        raise ValueError(f"Expected bias_init in {BIAS_INITS}, got {bias_init!r}.")
    if recurrent_init not in RECURRENT_INITS:
        raise ValueError(f"Expected recurrent_init in {RECURRENT_INITS}, got {recurrent_init!r}.")
    num_blocks = check_positive_int(num_blocks, "num_blocks")
    if isinstance(block_index, bool) or not isinstance(block_index, (int, np.integer)) or not (
            0 <= block_index < num_blocks):
        raise ValueError(f"Expected block_index an integer in [0, {num_blocks - 1}], got {block_index!r}.")
    k_x, k_r, k_b = jax.random.split(key, 3)
    w_x = math.sqrt(2 / (5 * input_size)) * jax.random.normal(k_x, (input_size, 4 * hidden_size), dtype)
    bound = 1 / math.sqrt(hidden_size)
    r_shape = (num_heads, head_dim, 4, head_dim)
    if recurrent_init == "zeros":
        r = jnp.zeros(r_shape, dtype)
    else:
        r = jax.random.uniform(k_r, r_shape, dtype, -bound, bound)
    # Biases built per (gate, head, unit), then flattened gate-major like w_x's columns.
    b = np.zeros((4, num_heads, head_dim))
    if bias_init == "powerlaw_blockdependent":
        b[1] = forget_bias_powerlaw(head_dim, int(block_index), num_blocks)
    elif bias_init == "small_init":
        b[1] = np.linspace(3.0, 6.0, head_dim)
    b = jnp.asarray(b.reshape(-1), dtype)
    if bias_init == "standard":
        b = jax.random.uniform(k_b, (4 * hidden_size,), dtype, -bound, bound)
    return SLSTMParams(w_x=w_x, r=r, b=b)


def num_heads(params: SLSTMParams) -> int:
    """NH, the number of heads of the block-diagonal R."""
    return params.r.shape[0]


def input_size(params: SLSTMParams) -> int:
    """D, the feature size ``step`` expects."""
    return params.w_x.shape[0]


def output_size(params: SLSTMParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    return params.r.shape[0] * params.r.shape[1]


def _check_params(params: SLSTMParams, fn: str) -> None:
    check_params_type(params, SLSTMParams, fn)
    r, w_x, b = params.r, params.w_x, params.b
    if r.ndim != 4 or r.shape[2] != 4 or r.shape[1] != r.shape[3]:
        raise ValueError(f"Expected params.r of shape (num_heads, head_dim, 4, head_dim), got {tuple(r.shape)}.")
    width = 4 * output_size(params)
    if w_x.ndim != 2 or w_x.shape[1] != width or tuple(b.shape) != (width,):
        raise ValueError(
            f"Expected params.w_x (D, {width}) and params.b ({width},) for r of shape {tuple(r.shape)}, "
            f"got {tuple(w_x.shape)} and {tuple(b.shape)}."
        )


def initial_carry(params: SLSTMParams, batch_shape: tuple[int, ...] = ()) -> SLSTMCarry:
    """Zero state (xlstm's), every field ``(*batch_shape, hidden_size)``."""
    _check_params(params, "slstm.initial_carry")
    return zeros_carry(SLSTMCarry, params, SLSTMParams, batch_shape, "slstm.initial_carry",
                       hidden_size=output_size(params), dtype=params.w_x.dtype)


def recurrent(params: SLSTMParams, h: jax.Array) -> jax.Array:
    """``rec(h)`` ``(*batch, 4H)``: ``h^(k) @ r[k, :, g, :]`` per head k and gate g, gate-major."""
    heads, head_dim = params.r.shape[0], params.r.shape[1]
    per_head = h.reshape(h.shape[:-1] + (heads, head_dim))
    out = jnp.einsum("...kj,kjgu->...gku", per_head, params.r)
    return out.reshape(h.shape[:-1] + (4 * heads * head_dim,))


def step(params: SLSTMParams, carry: SLSTMCarry, x: jax.Array) -> tuple[SLSTMCarry, jax.Array]:
    """One sLSTM step for ``x`` of shape ``(*batch, input_size)``.

    Returns ``(SLSTMCarry(h', c', n', m'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    _check_params(params, "slstm.step")
    check_step(params, SLSTMParams, carry, SLSTMCarry, x, "slstm.step",
               input_size=input_size(params), hidden_size=output_size(params))
    z = x @ params.w_x + recurrent(params, carry.h)
    z_i, z_f, z_z, z_o = split_gates(z + lift(params.b, z), 4)
    log_f = carry.m + jax.nn.log_sigmoid(z_f)
    m = jnp.where(carry.n == 0, z_i, jnp.maximum(z_i, log_f))
    one = jnp.ones((), z_i.dtype)
    gate_i = jnp.minimum(jnp.exp(z_i - m), one)
    gate_f = jnp.minimum(jnp.exp(log_f - m), one)
    c = gate_f * carry.c + gate_i * jnp.tanh(z_z)
    n = gate_f * carry.n + gate_i
    h = jax.nn.sigmoid(z_o) * c / n
    return SLSTMCarry(h, c, n, m), h


def recurrent_blocks(params: SLSTMParams) -> dict[str, jax.Array]:
    """The dense ``(H, H)`` block-diagonal recurrent matrix of each gate, ``{"i", "f", "z", "o"}``.

    ``rec(h)``'s gate-g block is ``h @ blocks[g]`` (zero outside the NH diagonal blocks), for
    ``gradient_flow.recurrent_spectrum``.
    """
    heads = params.r.shape[0]
    return {g: jax.scipy.linalg.block_diag(*(params.r[k, :, index, :] for k in range(heads)))
            for index, g in enumerate(GATES)}
