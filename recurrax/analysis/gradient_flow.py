"""Gradient-flow analysis: how gradients vanish or explode through the recurrence.

Theory (Bengio et al. 1994; Pascanu et al. 2013). For an Elman RNN ``h_{t+1} = f(x W_x + h_t W_h
+ b)`` (row vectors) the state Jacobian is ``J_t = ∂h_{t+1}/∂h_t = diag(f'(z_t)) W_hᵀ`` and

    ∂h_t/∂h_k = J_{t-1} ··· J_k,   ‖∂h_t/∂h_k‖₂ ≤ (σ₁ γ)^(t-k),

with ``γ = sup |f'|`` (1 for tanh and relu, 1/4 for sigmoid) and ``σ₁`` the largest singular
value of ``W_h``. The seeds state the bound with the spectral radius ``λ₁ = max |eig W_h|``:
``λ₁ γ < 1`` is sufficient for vanishing and ``λ₁ γ > 1`` necessary for exploding. ``λ₁ ≤ σ₁``,
with equality for normal matrices (e.g. scaled orthogonal ones); a norm bound on finite products
needs ``σ₁``, so measurements here are checked against ``(σ₁ γ)^lag``, and both are reported.

Everything works on any step function ``step(carry, x) -> (carry, y)`` of the library (a cell,
a stack via ``stack_step``, a model with a head): carries are flattened to vectors of size
``N`` (for the LSTM, ``h`` then ``c``). Functions take one sequence (no batch axes; ``jax.vmap``
over a batch):

- ``carry_jacobians``: the per-step Jacobians ``J_t`` along the trajectory, ``(T, N, N)``;
- ``lag_norms``: ``‖J_{T-1} ··· J_{T-lag}‖₂`` for every lag (optionally a block of the product,
  named by carry fields, e.g. ``block="h"`` for ``h → h``), by accumulating the product from
  the end: T matrix products, never the ``(T·N)²`` Jacobian;
- ``spectral_norm``: ``‖M‖₂`` by the top eigenvalue of the Gram matrix (faster than an SVD);
- ``state_gradient_norms``: ``‖∂L/∂c_k‖`` for every step with one backward pass (any ``N``);
- ``carry_block``: one field's block of each ``J_t``; for the LSTM the ``c → c`` block is
  ``diag(f_t)``, the "constant error carousel", whose products are the cell-state path;
- ``field_slice``: where a named carry field sits in the flattened carry;
- ``spectrum``, ``recurrent_spectrum``, ``bound``: λ₁, σ₁, γ and the bound;
- ``decay_rate``: the fitted per-step log rate of a lag curve;
- ``lyapunov_exponents``: the QR method, the rates at which the products actually grow;
- ``tracker``: ``params -> {λ₁, σ₁, lag slope}``, to pass to ``fit`` as ``eval_fn``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import eigh_tridiagonal

from recurrax import cells
from recurrax._checks import check_array, check_positive_int
from recurrax._unroll import unroll

StepFn = Callable[[Any, jax.Array], tuple[Any, Any]]


def _check_sequence(xs: jax.Array) -> None:
    check_array(xs, "xs")
    if xs.ndim != 2:
        raise ValueError(
            f"Expected one sequence xs of shape (T, D) (vmap over a batch), got shape {tuple(xs.shape)}."
        )


def _flat_step(step_fn: StepFn, carry: Any):
    flat, unravel = ravel_pytree(carry)

    def step(flat_carry, x):
        new, _ = step_fn(unravel(flat_carry), x)
        return ravel_pytree(new)[0]

    return flat, unravel, step


def carry_jacobians(step_fn: StepFn, carry: Any, xs: jax.Array) -> jax.Array:
    """Per-step Jacobians ``J_t = ∂c_{t+1}/∂c_t`` along the trajectory from ``carry`` over ``xs``.

    Args:
      step_fn: ``(carry, x) -> (carry, y)`` (e.g. ``functools.partial(elman.step, params)``).
      carry: the initial carry of one sequence (leaves without batch axes).
      xs: ``(T, D)``.

    Returns:
      ``(T, N, N)`` with ``N`` the flattened carry size; ``J_t[i, j] = ∂c_{t+1,i}/∂c_{t,j}``.
    """
    _check_sequence(xs)
    flat, _, step = _flat_step(step_fn, carry)
    _, _, carries = unroll(step_fn, carry, xs, return_carries=True)
    after = jax.vmap(lambda c: ravel_pytree(c)[0])(carries)
    before = jnp.concatenate([flat[None], after[:-1]])
    return jax.vmap(jax.jacrev(step))(before, xs)


def carry_block(jacobians: jax.Array, carry: Any, output: str, input: Optional[str] = None) -> jax.Array:
    """The ``input → output`` block of each per-step Jacobian, for named carry fields.

    E.g. ``carry_block(J, lstm_carry, "c")`` is ``∂c_{t+1}/∂c_t = diag(f_{t+1})`` (without
    peepholes): products of these blocks follow the cell-state path only. (The block of the
    products ``J_{T-1} ··· J_{T-lag}``, paths through the other fields included, is
    ``lag_norms(J, block=output, carry=carry)``.)
    """
    rows, cols = field_slice(carry, output), field_slice(carry, output if input is None else input)
    return jacobians[:, rows, cols]


def field_slice(carry: Any, name: str) -> slice:
    """The entries of the carry field ``name`` in the flattened carry (the rows and columns of ``J_t``).

    Fields are laid out in the NamedTuple's order, each flattened, as ``carry_jacobians`` does.

    >>> from recurrax import lstm
    >>> field_slice(lstm.initial_carry(lstm.init(jax.random.key(0), 2, 3)), "c")   # LSTMCarry(h, c)
    slice(3, 6, None)
    """
    fields = getattr(carry, "_fields", None)
    if fields is None or name not in fields:
        raise ValueError(f"Expected a carry field among {fields}, got {name!r}.")
    start = 0
    for field, value in zip(fields, carry):
        size = int(np.size(value))
        if field == name:
            return slice(start, start + size)
        start += size
    raise AssertionError("unreachable")


def lag_norms(
    jacobians: jax.Array,
    block: Union[None, str, tuple[str, str], tuple[slice, slice]] = None,
    *,
    carry: Any = None,
) -> jax.Array:
    """Spectral norms of the products ``P_lag = J_{T-1} ··· J_{T-lag}`` for ``lag = 1 .. T``.

    ``P_lag = ∂c_T/∂c_{T-lag}``: how much the last state depends on the state ``lag`` steps
    earlier. ``block`` takes the norm of one block of each product instead, paths through the
    other fields included (unlike products of ``carry_block``'s blocks):

    - a carry field, ``block="h"``: ``‖∂h_T/∂h_{T-lag}‖₂``;
    - ``(output, input)`` fields, ``block=("c", "h")``: ``‖∂c_T/∂h_{T-lag}‖₂``;
    - ``(rows, cols)`` slices of the flattened carry (see ``field_slice``).

    Args:
      jacobians: ``(T, N, N)`` from ``carry_jacobians``.
      block: ``None`` for the whole product, or the block as above.
      carry: the carry ``jacobians`` were taken of (any value of it); needed for named fields.

    Returns:
      ``(T,)``, entry ``lag - 1`` for ``lag = 1 .. T``.

    Cost: T products of N×N matrices (2N³ flops each) and T ``spectral_norm``s (about N³ flops
    each, bound by LAPACK's tridiagonal reduction); O(16·N²) memory, whatever T. Measured on a
    2-core AVX2 CPU after compilation, ``carry_jacobians`` + ``lag_norms`` at N = 128, T = 64
    (Elman, or LSTM with H = 64), ``jax.vmap`` over 16 sequences: 40–70 ms per sequence as the
    machine's load varied, 1.7–2.5× faster than SVD norms in the same runs; 64 norms of
    128 × 128 products are most of it. ``python -m experiments vanishing`` prints its cost table.

    >>> import functools
    >>> from recurrax import lstm
    >>> params = lstm.init(jax.random.key(0), 2, 3)
    >>> carry = lstm.initial_carry(params)                         # LSTMCarry(h, c), each (3,)
    >>> J = carry_jacobians(functools.partial(lstm.step, params), carry, jnp.ones((5, 2)))
    >>> lag_norms(J, block="c", carry=carry).shape                 # ‖∂c_5/∂c_{5-lag}‖₂
    (5,)
    """
    check_array(jacobians, "jacobians")
    if jacobians.ndim != 3 or jacobians.shape[1] != jacobians.shape[2]:
        raise ValueError(f"Expected jacobians of shape (T, N, N), got {tuple(jacobians.shape)}.")
    rows, cols = _block_slices(block, carry)

    def products(product, chunk):   # P_lag for the lags of one chunk, then their norms at once
        def body(product, jacobian):
            product = product @ jacobian
            return product, product[rows, cols]

        product, blocks = jax.lax.scan(body, product, chunk, reverse=True)
        return product, jax.vmap(spectral_norm)(blocks)

    # Chunks of _LAG_CHUNK lags: the norms as one batched LAPACK call per chunk (about 20% faster
    # than one per lag) while memory stays O(chunk · N²). The reverse scans run from J_{T-1}; the
    # T mod chunk first Jacobians (the largest lags) are the last, partial chunk.
    time, size = jacobians.shape[0], jacobians.shape[1]
    head = time % _LAG_CHUNK
    product, norms = jnp.eye(size, dtype=jacobians.dtype), jnp.zeros((0,), jacobians.dtype)
    if time > head:
        tail = jacobians[head:].reshape((-1, _LAG_CHUNK) + jacobians.shape[1:])
        product, norms = jax.lax.scan(products, product, tail, reverse=True)
        norms = norms.reshape(-1)
    if head:
        norms = jnp.concatenate([products(product, jacobians[:head])[1], norms])
    return norms[::-1]  # the reverse scans end at J_0: reorder by lag


_LAG_CHUNK = 16


def spectral_norm(matrix: jax.Array) -> jax.Array:
    """``‖M‖₂ = σ₁(M)`` of an ``(m, n)`` matrix, as ``s·sqrt(λ_max(GᵀG))`` with ``G = M/s``, ``s = max|M|``.

    The largest eigenvalue of the smaller Gram matrix, from LAPACK's tridiagonal reduction and
    bisection on that one eigenvalue: the same value as ``jnp.linalg.norm(M, 2)`` (relative
    difference ~1e-7 in float32), faster on CPU, where the SVD computes every singular value (64
    norms of 128 × 128 matrices on a 2-core AVX2 CPU: 29 ms against the SVD's 130–145 ms).
    Scaling by ``max|M|`` first keeps the Gram matrix finite for products that vanish (1e-25) or
    explode (1e+25) in float32. Reverse-mode autodiff is not supported (the bisection is a loop);
    use ``jnp.linalg.norm(M, 2)`` to differentiate.
    """
    scale = jnp.max(jnp.abs(matrix))
    unit = matrix / jnp.where(scale > 0, scale, 1)
    gram = unit.T @ unit if matrix.shape[0] >= matrix.shape[1] else unit @ unit.T
    if gram.shape[0] == 1:
        return scale * jnp.sqrt(gram[0, 0])
    _, diagonal, off_diagonal, _ = jax.lax.linalg.tridiagonal(gram)
    last = gram.shape[0] - 1
    top = eigh_tridiagonal(diagonal, off_diagonal, eigvals_only=True, select="i", select_range=(last, last))[0]
    return scale * jnp.sqrt(jnp.maximum(top, 0))


def _block_slices(block: Any, carry: Any) -> tuple[slice, slice]:
    """``lag_norms``'s ``block`` as ``(rows, cols)`` slices of the flattened carry."""
    if block is None:
        return slice(None), slice(None)
    names = (block, block) if isinstance(block, str) else block
    if isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, slice) for n in names):
        return names
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise ValueError(
            "Expected block to be a carry field name, an (output, input) pair of field names or a "
            f"(rows, cols) pair of slices, got {block!r}."
        )
    if carry is None:
        raise ValueError(f"Naming carry fields (block={block!r}) needs the carry: pass carry=.")
    return field_slice(carry, names[0]), field_slice(carry, names[1])


def state_gradient_norms(
    step_fn: StepFn, carry: Any, xs: jax.Array, loss_fn: Callable[[Any, Any], jax.Array]
) -> jax.Array:
    """``‖∂L/∂c_k‖₂`` for the carry ``c_k`` entering every step ``k = 0 .. T-1``, in one backward pass.

    ``L = loss_fn(ys, final_carry)``. Computed by adding a zero perturbation ``δ_k`` to the
    carry entering step ``k`` and differentiating with respect to all ``δ`` at once, so it
    costs one forward and one backward pass for any carry size. With ``loss_fn = v · c_T`` it
    gives ``‖vᵀ ∂c_T/∂c_k‖``, the lag curve seen by one direction.
    """
    _check_sequence(xs)
    flat, unravel, _ = _flat_step(step_fn, carry)

    def loss(deltas):
        def step(c, inputs):
            x, delta = inputs
            c = jax.tree.map(jnp.add, c, unravel(delta))
            return step_fn(c, x)

        final, ys = jax.lax.scan(step, carry, (xs, deltas))
        return loss_fn(ys, final)

    grads = jax.grad(loss)(jnp.zeros((xs.shape[0], flat.size), flat.dtype))
    return jnp.linalg.norm(grads, axis=-1)


class Spectrum(NamedTuple):
    """Spectral quantities of a square matrix."""

    eigenvalues: np.ndarray  # complex, sorted by decreasing modulus
    spectral_radius: float  # λ₁ = max |eig|
    sigma1: float  # σ₁, the largest singular value (= ‖W‖₂)


def spectrum(w: jax.Array) -> Spectrum:
    """Eigenvalues, spectral radius λ₁ and largest singular value σ₁ (float64, on the host)."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"Expected a square matrix (n, n), got shape {tuple(w.shape)}.")
    eig = np.linalg.eigvals(w)
    eig = eig[np.argsort(-np.abs(eig))]
    return Spectrum(eig, float(np.abs(eig[0])), float(np.linalg.norm(w, 2)))


def recurrent_spectrum(layer: Any, cell: Any = None) -> dict[str, Spectrum]:
    """The spectrum of each square recurrent block of a cell, from its family's ``recurrent_blocks``.

    ``layer`` is a layer (``RNNParams``, which knows its family), or a cell's params with its
    family as ``cell`` (a registered name or a family object). Elman: ``{"h": ...}`` for
    ``W_h``. LSTM: one per gate, ``"i", "f", "g", "o"``; GRU: ``"r", "z", "n"`` (the blocks act
    on ``h`` through the gates, so no single bound applies). Reservoir: ``{"h": ...}`` for its
    ``W`` in any storage. A user family opts in by defining ``recurrent_blocks(params)``.
    """
    if cell is None:
        if not hasattr(layer, "family") or not hasattr(layer, "cell"):
            raise ValueError(
                f"Expected a layer (RNNParams) or cell params with cell=<family>, got {type(layer).__name__} "
                "without a family."
            )
        family, params = layer.family, layer.cell
    else:
        family, params = cells.resolve_family(cell), layer
    if family.recurrent_blocks is None:
        raise ValueError(
            f"Cell {family.name!r} defines no recurrent_blocks(params): give its family one to get spectra."
        )
    return {name: spectrum(block) for name, block in family.recurrent_blocks(params).items()}


def activation_gamma(params: Any) -> float:
    """γ = sup |f'| of an Elman cell's activation (1 tanh, relu, identity; 1/4 sigmoid)."""
    if not isinstance(params, cells.elman.ElmanParams):
        raise ValueError(f"γ is defined for Elman cells (one activation), got {type(params).__name__}.")
    return params.activation.gamma


def bound(lags: Any, rate: float) -> np.ndarray:
    """``rate^lag`` for each lag: the norm bound with ``rate = σ₁γ`` (or the seeds' ``λ₁γ``)."""
    return np.power(float(rate), np.asarray(lags, dtype=np.float64))


def decay_rate(norms: Any, *, skip: int = 0) -> float:
    """Least-squares slope of ``log ‖P_lag‖`` against lag: the per-step log growth rate.

    Negative: vanishing (``‖P_lag‖ ≈ e^(rate·lag)``); positive: exploding. Lags whose norm is
    not a positive finite number (underflow) are left out; ``skip`` drops the first lags
    (the transient before the geometric regime).
    """
    norms = np.asarray(norms, dtype=np.float64)
    lags = np.arange(1, norms.size + 1)[skip:]
    norms = norms[skip:]
    keep = np.isfinite(norms) & (norms > 0)
    if keep.sum() < 2:
        raise ValueError(f"Expected at least two positive finite norms to fit a rate, got {int(keep.sum())}.")
    return float(np.polyfit(lags[keep], np.log(norms[keep]), 1)[0])


def lyapunov_exponents(jacobians: jax.Array, num: Optional[int] = None) -> jax.Array:
    """The ``num`` largest Lyapunov exponents of the trajectory (QR method), per step, natural log.

    ``Q_0 = I``; ``J_t Q_t = Q_{t+1} R_{t+1}``; ``λ_i = (1/T) Σ_t log |R_t[i, i]|``. The first
    exponent is the asymptotic rate of ``log ‖∂c_t/∂c_0‖``, without the overflow or underflow
    of the raw product (Benettin et al. 1980).
    """
    check_array(jacobians, "jacobians")
    if jacobians.ndim != 3 or jacobians.shape[1] != jacobians.shape[2]:
        raise ValueError(f"Expected jacobians of shape (T, N, N), got {tuple(jacobians.shape)}.")
    size = jacobians.shape[1]
    num = size if num is None else check_positive_int(num, "num")
    if num > size:
        raise ValueError(f"Expected num <= N = {size}, got {num}.")

    def body(q, jacobian):
        q, r = jnp.linalg.qr(jacobian @ q)
        return q, jnp.log(jnp.abs(jnp.diagonal(r)))

    _, logs = jax.lax.scan(body, jnp.eye(size, num, dtype=jacobians.dtype), jacobians)
    return jnp.sort(jnp.mean(logs, axis=0))[::-1]


def tracker(cell_of: Callable[[Any], Any], step_of: Callable[[Any], StepFn], carry: Any, xs: jax.Array, *,
            cell: Any = None):
    """``params -> dict`` of gradient-flow metrics, to pass to ``fit`` as ``eval_fn``.

    Every ``eval_every`` steps ``fit`` then records ``spectral_radius`` and ``sigma1`` of the
    recurrent kernel (the largest over gate blocks for gated cells), and ``lag_slope``, the
    ``decay_rate`` of ``lag_norms`` along the probe sequence ``xs`` from ``carry`` (NaN when
    no product norm is finite and positive, e.g. after the parameters blew up).

    Args:
      cell_of: ``params -> layer`` (an ``RNNParams``, e.g. ``lambda p: p["rnn"]``) or ``params ->
        cell params`` with their family as ``cell``; the family's ``recurrent_blocks`` give the
        spectra (see ``recurrent_spectrum``).
      step_of: ``params -> step_fn(carry, x)`` of the recurrence to probe.
    """
    _check_sequence(xs)
    norms_fn = jax.jit(lambda params: lag_norms(carry_jacobians(step_of(params), carry, xs)))

    def metrics(params):
        spectra = recurrent_spectrum(cell_of(params), cell).values()
        try:
            slope = decay_rate(norms_fn(params))
        except ValueError:  # every product overflowed or underflowed: no rate to fit
            slope = float("nan")
        return {
            "spectral_radius": max(s.spectral_radius for s in spectra),
            "sigma1": max(s.sigma1 for s in spectra),
            "lag_slope": slope,
        }

    return metrics
