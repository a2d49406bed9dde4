"""Echo-state reservoir: a leaky-integrator cell with fixed, random, sparse weights.

Equations (Jaeger 2001; leaky integrators, Jaeger, Lukoševičius, Popovici & Siewert 2007), with
``u`` the input, ``y`` an optional output fed back and ``a`` the leak rate:

    x' = (1 − a) ⊙ x + a ⊙ f(W x + W_in u + W_fb y + b),   f in {tanh (default), ...}

Nothing here is trained: a reservoir is run forward, its states are collected, and a linear
readout is fitted to them in closed form (``recurrax.esn``). The cell follows the family protocol
(``init`` / ``initial_carry`` / ``step``), so ``unroll``, ``rnn`` and ``stack`` run it like any
other cell; ``step`` returns the new state ``x'`` as its output.

Storage, and how it was chosen (measured on this project's 2-core AMD EPYC CPU under XLA:CPU,
1000 units, connectivity 0.1, per step of a 5000-step ``lax.scan``, machine otherwise idle):

- ``topology="random"`` (default): each entry of ``W`` is non-zero independently of the others,
  exactly ``round(connectivity · H²)`` of them, N(0, 1) values, as reservoirpy's
  ``Reservoir(rc_connectivity=...)``. Stored **dense**: the dense product took 32–36 µs per
  step, sparse storage of the same matrix 10× more — ``jax.experimental.sparse`` BCOO 400 µs,
  a padded per-row gather (ELL) 412 µs, a segment sum 372 µs — because XLA:CPU's gathers and
  scatters are not vectorised.
- ``topology="circulant"``: every unit receives from the same ``k = round(connectivity · H)``
  offsets, unit ``i`` from units ``(i + o_j) mod H``, with independent N(0, 1) weights. Stored
  **sparse** (``k`` values per unit, the offsets as static metadata), the product is ``k``
  shifted copies of ``x`` (slices, no gather): 8 µs per step at the same size, 4× faster than
  dense, in ``k·H`` memory instead of ``H²``. Simple structured topologies predict about as
  well as random ones (Rodan & Tiňo 2011); the ``esn`` study reports both, on Mackey–Glass at
  100 units over 20 keys and at 1000 units.

Orientation: ``w_h`` is stored as ``W`` is written (row ``i`` holds unit ``i``'s incoming
weights, as in reservoirpy), unlike Elman's ``h @ w_h``: receiving units along rows is what the
sparse layout needs, and the dense product ``W x`` was also 15% faster in that orientation.
Inputs keep the library's convention, ``x @ w_x``.

>>> import jax, jax.numpy as jnp
>>> from recurrax import reservoir
>>> params = reservoir.init(jax.random.key(0), 1, 50, spectral_radius=0.9, leak_rate=0.3)
>>> carry, y = reservoir.step(params, reservoir.initial_carry(params, (2,)), jnp.ones((2, 1)))
>>> y.shape
(2, 50)

References: H. Jaeger, "The echo state approach to analysing and training recurrent neural
networks", GMD Report 148 (2001); H. Jaeger et al., "Optimization and applications of echo state
networks with leaky-integrator neurons", Neural Networks 20 (2007); A. Rodan and P. Tiňo,
"Minimum complexity echo state network", IEEE Trans. Neural Networks 22 (2011).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._activations import Activation
from recurrax.cells._common import check_number, check_sizes, check_step, lift, zeros_carry

__all__ = [
    "ReservoirParams",
    "ReservoirCarry",
    "ReservoirLayout",
    "init",
    "initial_carry",
    "step",
    "recurrent_matrix",
    "with_spectral_radius",
    "external_input_size",
    "output_size",
    "recurrent_blocks",
]

TOPOLOGIES = ("random", "circulant")


@dataclasses.dataclass(frozen=True)
class ReservoirLayout:
    """Static layout of a reservoir's weights (pytree metadata, not a leaf).

    ``offsets``: ``None`` when ``w_h`` is the dense ``W`` ``(H, H)``; else the circulant
    topology's ``k`` offsets, with ``w_h[i, j] = W[i, (i + offsets[j]) mod H]``.
    ``feedback_size``: F, the number of trailing rows of ``w_x`` that take fed-back outputs.
    """

    offsets: Optional[tuple[int, ...]] = None
    feedback_size: int = 0


jax.tree_util.register_static(ReservoirLayout)


class ReservoirParams(NamedTuple):
    """Parameters of a reservoir (fixed after ``init``; only a readout is trained)."""

    w_x: jax.Array  # (input_size + feedback_size, hidden_size): [W_in; W_fb] applied as x @ w_x
    w_h: jax.Array  # (hidden_size, hidden_size) dense W, or (hidden_size, k) circulant values
    b: jax.Array  # (hidden_size,)
    leak_rate: jax.Array  # (): the leak rate a, a leaf so that sweeps can vmap over it
    activation: Activation  # static pytree metadata
    layout: ReservoirLayout  # static pytree metadata


class ReservoirCarry(NamedTuple):
    """State of a reservoir: the unit activations ``h`` (the x of the equations)."""

    h: jax.Array  # (*batch, hidden_size)


def _sparse_positions(key: jax.Array, size: int, connectivity: float) -> np.ndarray:
    """``max(1, round(connectivity · size))`` distinct flat positions, uniformly drawn."""
    count = max(1, round(connectivity * size))
    return np.asarray(jax.random.choice(key, size, (count,), replace=False))


def _signs(key: jax.Array, count: int) -> np.ndarray:
    """±1 with equal probability (reservoirpy's Bernoulli initialiser)."""
    return np.where(np.asarray(jax.random.bernoulli(key, 0.5, (count,))), 1.0, -1.0)


def _bernoulli_matrix(pos_key, sign_key, rows: int, cols: int, connectivity: float, scale: float):
    matrix = np.zeros(rows * cols)
    positions = _sparse_positions(pos_key, rows * cols, connectivity)
    matrix[positions] = scale * _signs(sign_key, positions.size)
    return matrix.reshape(rows, cols)


def _dense_from_circulant(values: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    hidden = values.shape[0]
    w = np.zeros((hidden, hidden), values.dtype)
    rows = np.arange(hidden)
    for j, offset in enumerate(offsets):
        w[rows, (rows + offset) % hidden] = values[:, j]
    return w


def _spectral_radius(w: np.ndarray) -> float:
    """max |eig(w)|, from all eigenvalues in float64 (exact to round-off; O(H³) once, at init)."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(w, np.float64)))))


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    spectral_radius: float = 1.0,
    leak_rate: float = 1.0,
    input_scaling: float = 1.0,
    connectivity: float = 0.1,
    input_connectivity: float = 0.1,
    bias_scaling: float = 0.0,
    activation: str = "tanh",
    feedback_size: int = 0,
    feedback_scaling: float = 1.0,
    feedback_connectivity: float = 0.1,
    topology: str = "random",
    dtype=jnp.float32,
) -> ReservoirParams:
    """Draw a reservoir; defaults are reservoirpy's ``Reservoir`` defaults (0.4).

    ``W`` has N(0, 1) non-zero entries (see the module docstring for the two topologies) and is
    rescaled so that ``max |eig(W)|`` equals ``spectral_radius``: all eigenvalues are computed in
    float64 on the host (O(H³), about a second at H = 1000), so the radius is exact up to the
    final rounding to ``dtype``, not an iterative estimate. ``W_in`` and ``W_fb`` have
    ``round(connectivity · rows · H)`` entries (at least one) equal to ±scaling, the rest zero;
    the bias is ±``bias_scaling`` per unit (zero by default), as reservoirpy draws them.

    Args:
      key: PRNG key, split once per random tensor.
      input_size: D, the external inputs ``u``.
      hidden_size: H, the number of units.
      spectral_radius: ρ(W) ≥ 0. Above 1 the echo-state property may fail (check it with
        ``esn.echo_state_check``); with leaky units the radius that matters is
        ``esn.effective_spectral_radius``.
      leak_rate: a in (0, 1]; 1 gives the non-leaky update ``x' = f(...)``.
      input_scaling: the magnitude of the non-zero entries of ``W_in`` (≥ 0).
      connectivity: fraction of non-zero entries of ``W`` in (0, 1].
      input_connectivity: fraction of non-zero entries of ``W_in`` in (0, 1].
      bias_scaling: magnitude of the bias (≥ 0).
      activation: ``"tanh"`` (default), ``"sigmoid"``, ``"relu"`` or ``"identity"``.
      feedback_size: F ≥ 0 outputs fed back through ``W_fb`` (0: no feedback). The step then
        takes ``x = [u, y_prev]`` of size D + F (``recurrax.esn`` builds it).
      feedback_scaling, feedback_connectivity: as for the inputs, for ``W_fb``.
      topology: ``"random"`` (dense storage) or ``"circulant"`` (sparse storage).
      dtype: parameter dtype.

    Returns:
      ``ReservoirParams``.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    spectral_radius = check_number(spectral_radius, "spectral_radius", low=0.0)
    leak_rate = check_number(leak_rate, "leak_rate", low=0.0, high=1.0, low_open=True)
    input_scaling = check_number(input_scaling, "input_scaling", low=0.0)
    connectivity = check_number(connectivity, "connectivity", low=0.0, high=1.0, low_open=True)
    input_connectivity = check_number(
        input_connectivity, "input_connectivity", low=0.0, high=1.0, low_open=True
    )
    bias_scaling = check_number(bias_scaling, "bias_scaling", low=0.0)
    feedback_scaling = check_number(feedback_scaling, "feedback_scaling", low=0.0)
    feedback_connectivity = check_number(
        feedback_connectivity, "feedback_connectivity", low=0.0, high=1.0, low_open=True
    )
    if (
        isinstance(feedback_size, bool)
        or not isinstance(feedback_size, (int, np.integer))
        or feedback_size < 0
    ):
        raise ValueError(f"Expected feedback_size to be an integer >= 0, got {feedback_size!r}.")
    if topology not in TOPOLOGIES:
        raise ValueError(f"Expected topology in {list(TOPOLOGIES)}, got {topology!r}.")
    act = Activation(activation)
    keys = jax.random.split(key, 7)

    if topology == "random":
        offsets = None
        dense = np.zeros(hidden_size * hidden_size)
        positions = _sparse_positions(keys[0], dense.size, connectivity)
        dense[positions] = np.asarray(jax.random.normal(keys[1], (positions.size,), jnp.float32))
        dense = values = dense.reshape(hidden_size, hidden_size)
    else:
        k = max(1, round(connectivity * hidden_size))
        offsets = tuple(
            sorted(int(o) for o in jax.random.choice(keys[0], hidden_size, (k,), replace=False))
        )
        values = np.asarray(jax.random.normal(keys[1], (hidden_size, k), jnp.float32), np.float64)
        dense = _dense_from_circulant(values, offsets)
    current = _spectral_radius(dense)
    if current == 0.0:
        raise ValueError(
            f"The drawn W has spectral radius 0 (nilpotent: connectivity {connectivity} is too "
            f"sparse for {hidden_size} units); raise connectivity or change the key."
        )
    # Normalised to ρ = 1 in float64, rounded, then scaled in ``dtype``: so a reservoir drawn
    # with radius r is bit for bit ``with_spectral_radius(<drawn with 1>, r, current=1)``, the
    # reservoir ``esn.sweep`` runs.
    w_unit = jnp.asarray(values / current, dtype)

    w_in = _bernoulli_matrix(
        keys[2], keys[3], input_size, hidden_size, input_connectivity, input_scaling
    )
    if feedback_size:
        w_fb = _bernoulli_matrix(
            keys[4],
            keys[5],
            int(feedback_size),
            hidden_size,
            feedback_connectivity,
            feedback_scaling,
        )
        w_in = np.concatenate([w_in, w_fb], axis=0)
    b = bias_scaling * _signs(keys[6], hidden_size)
    return ReservoirParams(
        w_x=jnp.asarray(w_in, dtype),
        w_h=w_unit * jnp.asarray(spectral_radius, dtype),
        b=jnp.asarray(b, dtype),
        leak_rate=jnp.asarray(leak_rate, dtype),
        activation=act,
        layout=ReservoirLayout(offsets=offsets, feedback_size=int(feedback_size)),
    )


def initial_carry(params: ReservoirParams, batch_shape: tuple[int, ...] = ()) -> ReservoirCarry:
    """Zero state with ``h`` of shape ``(*batch_shape, hidden_size)``."""
    return zeros_carry(
        ReservoirCarry, params, ReservoirParams, batch_shape, "reservoir.initial_carry"
    )


# Shifted terms summed per XLA fusion (barriers between groups): one fusion of all 100 terms at
# H = 1000 ran 15 µs per step on one core, groups of 50 ran 11.5 µs (25: 13 µs, 10: 13 µs).
_TERMS_PER_FUSION = 50


def _recurrent(params: ReservoirParams, h: jax.Array) -> jax.Array:
    """``W h`` for ``h`` of shape ``(*batch, H)``, in the params' storage."""
    offsets = params.layout.offsets
    if offsets is None:
        return jnp.einsum("...j,ij->...i", h, params.w_h)
    hidden = h.shape[-1]
    # Unit i reads h[(i + o) mod H] = hh[i + o] with hh = [h, h]: k static slices, no gather.
    hh = jnp.concatenate([h, h], axis=-1)
    # (k, H): one contiguous row per offset. The barrier makes XLA materialise the transpose
    # (a 4·k·H-byte copy) instead of fusing strided column reads into the sum: 33 vs 44 µs per
    # step at H = 1000, k = 100.
    w_t = jax.lax.optimization_barrier(params.w_h.T)
    total = None
    for start in range(0, len(offsets), _TERMS_PER_FUSION):
        part = None
        for j in range(start, min(start + _TERMS_PER_FUSION, len(offsets))):
            shifted = hh[..., offsets[j] : offsets[j] + hidden]
            term = lift(w_t[j], shifted) * shifted
            part = term if part is None else part + term
        total = part if total is None else total + part
        if len(offsets) > _TERMS_PER_FUSION:
            total = jax.lax.optimization_barrier(total)
    return total


def step(
    params: ReservoirParams, carry: ReservoirCarry, x: jax.Array
) -> tuple[ReservoirCarry, jax.Array]:
    """One step ``h' = (1 − a) h + a f(W h + x @ w_x + b)`` for ``x`` of shape ``(*batch, D + F)``.

    ``x`` holds the external input and, for reservoirs with feedback, the fed-back output after
    it. Returns ``(ReservoirCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    check_step(params, ReservoirParams, carry, ReservoirCarry, x, "reservoir.step")
    h = carry.h
    z = x @ params.w_x + _recurrent(params, h)
    z = z + lift(params.b, z)
    a = params.leak_rate.astype(h.dtype)
    h = (1 - a) * h + a * params.activation(z)
    return ReservoirCarry(h), h


def recurrent_matrix(params: ReservoirParams) -> np.ndarray:
    """The dense ``W`` ``(H, H)`` as a float64 NumPy array, whatever the storage (for analysis).

    >>> params = init(jax.random.key(0), 1, 20, spectral_radius=0.5, topology="circulant")
    >>> w = recurrent_matrix(params)
    >>> round(float(np.max(np.abs(np.linalg.eigvals(w)))), 5)
    0.5
    """
    _check_params(params, "recurrent_matrix")
    values = np.asarray(params.w_h, np.float64)
    if params.layout.offsets is None:
        return values
    return _dense_from_circulant(values, params.layout.offsets)


def with_spectral_radius(
    params: ReservoirParams, spectral_radius: Any, *, current: Any = None
) -> ReservoirParams:
    """The same reservoir with ``W`` rescaled: ``W · ρ_new / ρ_current``.

    ``current`` defaults to ρ(W) computed here from all eigenvalues; pass it (e.g. 1.0 for a
    reservoir drawn with ``spectral_radius=1.0``) to rescale inside ``jit``/``vmap`` with a
    traced ``spectral_radius``, which is how ``esn.sweep`` varies ρ without redrawing ``W``.

    >>> params = init(jax.random.key(0), 1, 30, spectral_radius=1.0)
    >>> w = recurrent_matrix(with_spectral_radius(params, 0.8))
    >>> round(float(np.max(np.abs(np.linalg.eigvals(w)))), 5)
    0.8
    """
    _check_params(params, "with_spectral_radius")
    if not isinstance(spectral_radius, jax.core.Tracer):
        check_number(float(np.asarray(spectral_radius)), "spectral_radius", low=0.0)
    if current is None:
        current = _spectral_radius(recurrent_matrix(params))
        if current == 0.0:
            raise ValueError("Cannot rescale a reservoir whose W has spectral radius 0.")
    scale = jnp.asarray(spectral_radius, params.w_h.dtype) / jnp.asarray(current, params.w_h.dtype)
    return params._replace(w_h=params.w_h * scale)


def external_input_size(params: ReservoirParams) -> int:
    """D, the external inputs ``u`` (the step's input size minus the feedback size F)."""
    _check_params(params, "external_input_size")
    return params.w_x.shape[0] - params.layout.feedback_size


def _check_params(params: Any, fn: str) -> None:
    if not isinstance(params, ReservoirParams):
        raise ValueError(f"{fn} expects ReservoirParams, got {type(params).__name__}.")


def output_size(params: ReservoirParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    _check_params(params, "output_size")
    return params.w_h.shape[0]


def recurrent_blocks(params: ReservoirParams) -> dict[str, np.ndarray]:
    """``{"h": W}`` in any storage, dense (for ``gradient_flow.recurrent_spectrum``)."""
    return {"h": recurrent_matrix(params)}
