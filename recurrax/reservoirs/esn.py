"""Echo state networks: ridge readouts, teacher-forced and free-running runs, diagnostics, sweeps.

A reservoir (``recurrax.reservoir``, a cell like the others) is run over the inputs with
``recurrax.unroll``; only a linear readout ``y = W_out [u;] x + b`` is fitted, in closed form
(Jaeger 2001; Lukoševičius 2012 for the practical recipe). The protocol is reservoirpy's:
``fit`` runs the reservoir from a zero state over the training inputs, discards the first
``warmup`` states, solves the ridge regression and returns the readout with the final state;
``predict`` continues from that state (teacher-forced, one step ahead); ``generate`` feeds the
readout's outputs back (free-running).

>>> import jax, jax.numpy as jnp
>>> from recurrax import esn, reservoir, timeseries
>>> series = jnp.asarray(timeseries.mackey_glass(600), jnp.float32)
>>> params = reservoir.init(jax.random.key(0), 1, 50, spectral_radius=1.25, leak_rate=0.3)
>>> readout, carry = esn.fit(params, series[:399], series[1:400], ridge=1e-5, warmup=100)
>>> carry, predictions = esn.predict(params, readout, series[399:-1], carry=carry)
>>> bool(esn.rmse(series[400:], predictions) < 0.02)
True

References: H. Jaeger, GMD Report 148 (2001) and "Short term memory in echo state networks",
GMD Report 152 (2002); M. Lukoševičius, "A practical guide to applying echo state networks",
Neural Networks: Tricks of the Trade (2012); N. Trouvain et al., "ReservoirPy", ICANN (2020).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.sharding import PartitionSpec as P

from recurrax.training import _sharding
from recurrax._checks import check_array, check_positive_int, is_traced
from recurrax._unroll import unroll
from recurrax.cells import reservoir
from recurrax.cells._common import check_number
from recurrax.cells.reservoir import ReservoirCarry, ReservoirParams

__all__ = [
    "Readout",
    "EchoStateCheck",
    "MemoryCapacity",
    "SweepResult",
    "collect_states",
    "teacher_forcing",
    "ridge_readout",
    "apply_readout",
    "fit",
    "predict",
    "generate",
    "rmse",
    "rsquare",
    "effective_spectral_radius",
    "echo_state_check",
    "memory_capacity",
    "sweep",
]


class Readout(NamedTuple):
    """A linear readout ``y = features @ w + b``; features are ``x`` or ``[u, x]``."""

    w: jax.Array  # (features, output_size): features = hidden_size, or input_size + hidden_size
    b: jax.Array  # (output_size,)


# --------------------------------------------------------------------------- checks


def _check_params(params: Any, fn: str) -> ReservoirParams:
    if not isinstance(params, ReservoirParams):
        raise ValueError(
            f"{fn} expects ReservoirParams (from recurrax.reservoir.init), got "
            f"{type(params).__name__}."
        )
    return params


def _check_sequence(x: Any, name: str, features: int, what: str) -> jax.Array:
    check_array(x, name)
    if x.ndim < 2 or x.shape[-1] != features:
        raise ValueError(
            f"Expected {name} of shape (*batch, time, {features}) ({what}), got shape "
            f"{tuple(x.shape)}."
        )
    return x


def _check_warmup(warmup: Any, time: int) -> int:
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"Expected warmup to be an integer >= 0, got {warmup!r}.")
    if time <= warmup:
        raise ValueError(
            f"Expected more time steps than warmup={warmup} (the first {warmup} states are "
            f"discarded), got {time} steps."
        )
    return int(warmup)


def _check_ridges(ridge: Any) -> tuple[np.ndarray, bool]:
    """The ridge values as a float64 vector, and whether a single value was given."""
    values = np.asarray(ridge, np.float64)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"Expected ridge as a number or a 1-D sequence of numbers, got {ridge!r}.")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"Expected ridge >= 0 (the L2 penalty λ), got {ridge!r}.")
    return values.reshape(-1), values.ndim == 0


def _feedback_size(params: ReservoirParams) -> int:
    return params.layout.feedback_size


# --------------------------------------------------------------------------- running


@jax.jit
def _run(params, carry, xs):
    return unroll(functools.partial(reservoir.step, params), carry, xs)


def _step_inputs(params, inputs, feedback, fn):
    """``[u, y_fb]`` for the step, with the feedback checked against the reservoir's F."""
    size = _feedback_size(params)
    if size == 0:
        if feedback is not None:
            raise ValueError(
                f"{fn}: this reservoir has no feedback (feedback_size=0), got feedback."
            )
        return inputs
    if feedback is None:
        raise ValueError(
            f"{fn}: this reservoir feeds back {size} outputs; pass feedback of shape "
            f"(*batch, time, {size}) (the previous outputs, e.g. esn.teacher_forcing(targets))."
        )
    _check_sequence(feedback, "feedback", size, "the reservoir's feedback_size")
    if tuple(feedback.shape[:-1]) != tuple(inputs.shape[:-1]):
        raise ValueError(
            f"Expected feedback with the inputs' batch and time shape {tuple(inputs.shape[:-1])}, "
            f"got shape {tuple(feedback.shape)}."
        )
    return jnp.concatenate([inputs, feedback.astype(inputs.dtype)], axis=-1)


def collect_states(
    params: ReservoirParams,
    inputs: jax.Array,
    *,
    carry: Optional[ReservoirCarry] = None,
    feedback: Optional[jax.Array] = None,
) -> tuple[ReservoirCarry, jax.Array]:
    """Run the reservoir over ``inputs`` ``(*batch, T, D)`` and return every state.

    Args:
      carry: the state before the first step (default zeros).
      feedback: ``(*batch, T, F)`` outputs fed back at each step, for reservoirs drawn with
        ``feedback_size=F`` (the previous targets when teacher forcing).

    Returns:
      ``(final_carry, states)`` with ``states`` of shape ``(*batch, T, H)``.
    """
    _check_params(params, "collect_states")
    inputs = _check_sequence(
        inputs, "inputs", reservoir.external_input_size(params), "the reservoir's input_size"
    )
    xs = _step_inputs(params, jnp.asarray(inputs, params.w_x.dtype), feedback, "collect_states")
    if carry is None:
        carry = reservoir.initial_carry(params, tuple(inputs.shape[:-2]))
    return _run(params, carry, xs)


def teacher_forcing(targets: jax.Array, *, initial: Optional[jax.Array] = None) -> jax.Array:
    """The feedback for teacher forcing: ``targets`` delayed by one step along time (axis −2).

    Step ``t`` is fed ``targets[t − 1]``; step 0 gets ``initial`` (``(*batch, F)``, default
    zeros), e.g. the last target of the previous segment.

    >>> teacher_forcing(jnp.array([[1.0], [2.0], [3.0]]))[:, 0].tolist()
    [0.0, 1.0, 2.0]
    """
    check_array(targets, "targets")
    if targets.ndim < 2:
        raise ValueError(
            f"Expected targets of shape (*batch, time, F), got shape {tuple(targets.shape)}."
        )
    first = (
        jnp.zeros_like(targets[..., :1, :])
        if initial is None
        else jnp.asarray(initial, targets.dtype)[..., None, :]
    )
    if first.shape != targets[..., :1, :].shape:
        raise ValueError(
            f"Expected initial of shape {tuple(targets.shape[:-2]) + targets.shape[-1:]} (targets' "
            f"batch shape and features), got shape {tuple(jnp.shape(initial))}."
        )
    return jnp.concatenate([first, targets[..., :-1, :]], axis=-2)


# --------------------------------------------------------------------------- ridge readout

_ROWS_PER_BLOCK = 4096


def _solve_ridge_host(features, targets, ridges, fit_bias: bool):
    """Closed-form ridge regression in float64 on the host, for every value in ``ridges``.

    Minimises ``‖X W + 1 bᵀ − Y‖² + λ ‖W‖²`` (the bias unpenalised): with ``fit_bias`` the
    columns are centred, ``W = (X_cᵀ X_c + λ I)⁻¹ X_cᵀ Y_c`` and ``b = ȳ − x̄ W`` (as
    reservoirpy ≥ 0.4 and scikit-learn). One ``λ``: a Cholesky solve (exact for λ > 0; λ = 0
    falls back to the eigen-solution). Several: one eigendecomposition ``X_cᵀ X_c = V diag(s) Vᵀ``
    and ``W(λ) = V diag(1/(s + λ)) Vᵀ X_cᵀ Y_c`` for each, so a sweep over λ costs one solve.
    Directions with ``s + λ`` below ``P · eps · max(s)`` are dropped (a pseudo-inverse, as
    ``lstsq``).
    """
    x, y = np.asarray(features), np.asarray(targets)
    ridges = np.asarray(ridges, np.float64).reshape(-1)
    x_mean = x.mean(axis=0, dtype=np.float64) if fit_bias else np.zeros(x.shape[1])
    y_mean = y.mean(axis=0, dtype=np.float64) if fit_bias else np.zeros(y.shape[1])
    gram, cross = np.zeros((x.shape[1], x.shape[1])), np.zeros((x.shape[1], y.shape[1]))
    # Centred float64 copies of row blocks, accumulated: a float64 copy of all of X at once
    # (320 MB at 40 000 × 1000) cost as much again as the products, in page faults.
    for start in range(0, x.shape[0], _ROWS_PER_BLOCK):
        xb = x[start : start + _ROWS_PER_BLOCK].astype(np.float64) - x_mean
        gram += xb.T @ xb  # NumPy calls BLAS syrk for xᵀx: half a general product
        cross += xb.T @ (y[start : start + _ROWS_PER_BLOCK].astype(np.float64) - y_mean)
    if ridges.size == 1 and ridges[0] > 0:
        try:
            factor = scipy.linalg.cho_factor(
                gram + ridges[0] * np.eye(gram.shape[0]), check_finite=False
            )
            weights = scipy.linalg.cho_solve(factor, cross, check_finite=False)[None]
        except np.linalg.LinAlgError:
            weights = None
    else:
        weights = None
    if weights is None:
        s, v = np.linalg.eigh(gram)
        projected = v.T @ cross
        cutoff = gram.shape[0] * np.finfo(np.float64).eps * max(float(s[-1]), 0.0)
        weights = []
        for lam in ridges:
            denominator = s + lam
            scale = np.where(
                denominator > cutoff, 1.0 / np.where(denominator > cutoff, denominator, 1.0), 0.0
            )
            weights.append(v @ (scale[:, None] * projected))
        weights = np.stack(weights)
    bias = y_mean[None] - np.einsum("p,lpo->lo", x_mean, weights)  # zero without fit_bias
    return weights, bias


def _ridge(features: jax.Array, targets: jax.Array, ridges: np.ndarray, fit_bias: bool):
    """``_solve_ridge_host`` on ``(N, P)`` features, under ``jit``/``vmap`` via a host callback."""
    dtype = features.dtype
    shapes = (
        jax.ShapeDtypeStruct((ridges.size, features.shape[-1], targets.shape[-1]), dtype),
        jax.ShapeDtypeStruct((ridges.size, targets.shape[-1]), dtype),
    )

    def host(f, t):
        w, b = _solve_ridge_host(f, t, ridges, fit_bias)
        return w.astype(dtype), b.astype(dtype)

    if is_traced(features) or is_traced(targets):
        return jax.pure_callback(host, shapes, features, targets, vmap_method="sequential")
    w, b = host(np.asarray(features), np.asarray(targets))
    return jnp.asarray(w), jnp.asarray(b)


def _features(states: jax.Array, inputs: Optional[jax.Array]) -> jax.Array:
    if inputs is None:
        return states
    return jnp.concatenate([inputs.astype(states.dtype), states], axis=-1)


def ridge_readout(
    states: jax.Array,
    targets: jax.Array,
    *,
    ridge: Union[float, Sequence[float]],
    warmup: int = 0,
    inputs: Optional[jax.Array] = None,
    fit_bias: bool = True,
) -> Readout:
    """Fit ``y ≈ features @ w + b`` by ridge regression over collected states.

        w = (X_cᵀ X_c + λ I)⁻¹ X_cᵀ Y_c,   b = ȳ − x̄ w    (X_c, Y_c: centred over the rows)

    The first ``warmup`` steps of every sequence are discarded (their states still remember the
    arbitrary initial state). The bias is not penalised (``fit_bias=False``: no bias, no
    centring). ``XᵀX`` is accumulated and solved (Cholesky) in float64 on the host whatever the
    states' dtype: reservoirpy's JAX backend accumulates it in float32, which drowns the small
    eigenvalues of ill-conditioned features (reservoirpy issue #238; ``test_reservoir`` has a
    case where float32 normal equations are 50% off and this solve 2e-7). Inside
    ``jit``/``vmap`` the solve runs as a host callback.

    Args:
      states: ``(*batch, T, H)``, e.g. from ``collect_states``.
      targets: ``(*batch, T, O)``.
      ridge: λ ≥ 0, or a 1-D sequence of λ values (one eigendecomposition serves them all).
      warmup: steps discarded at the start of each sequence; T must exceed it.
      inputs: ``(*batch, T, D)`` to include the inputs in the features (``[u, x]``, Jaeger's
        extended state; reservoirpy's ``input_to_readout``).
      fit_bias: fit an unpenalised bias.

    Returns:
      ``Readout`` with ``w`` ``(P, O)`` and ``b`` ``(O,)`` (P = H, or D + H with inputs), in the
      states' dtype; with several λ, a leading axis of their number on both.

    >>> states = jax.random.normal(jax.random.key(0), (50, 4))
    >>> readout = ridge_readout(states, states @ jnp.ones((4, 1)) + 2.0, ridge=1e-9)
    >>> [round(float(v), 3) for v in (readout.w[0, 0], readout.b[0])]
    [1.0, 2.0]
    """
    ridges, single = _check_ridges(ridge)
    check_array(states, "states")
    check_array(targets, "targets")
    if (
        states.ndim < 2
        or targets.ndim != states.ndim
        or tuple(targets.shape[:-1]) != tuple(states.shape[:-1])
    ):
        raise ValueError(
            "Expected states (*batch, T, H) and targets (*batch, T, O) with the same batch and "
            f"time shape, got shapes {tuple(states.shape)} and {tuple(targets.shape)}."
        )
    if inputs is not None:
        check_array(inputs, "inputs")
        if tuple(inputs.shape[:-1]) != tuple(states.shape[:-1]):
            raise ValueError(
                "Expected inputs with the states' batch and time shape "
                f"{tuple(states.shape[:-1])}, "
                f"got shape {tuple(inputs.shape)}."
            )
    warmup = _check_warmup(warmup, states.shape[-2])
    features = _features(states, inputs)[..., warmup:, :]
    rows = features.reshape(-1, features.shape[-1])
    w, b = _ridge(
        rows,
        jnp.asarray(targets, states.dtype)[..., warmup:, :].reshape(rows.shape[0], -1),
        ridges,
        fit_bias,
    )
    return Readout(w[0], b[0]) if single else Readout(w, b)


def apply_readout(
    readout: Readout, states: jax.Array, *, inputs: Optional[jax.Array] = None
) -> jax.Array:
    """``features @ w + b`` for states ``(*batch, T, H)`` (and inputs if the readout takes them).

    Whether the readout takes ``[u, x]`` or ``x`` is read from ``w``'s first dimension.
    """
    if not isinstance(readout, Readout):
        raise ValueError(f"Expected a Readout, got {type(readout).__name__}.")
    hidden = states.shape[-1]
    size = readout.w.shape[-2]
    if size == hidden:
        features = states
    elif inputs is not None and size == hidden + inputs.shape[-1]:
        features = _features(states, inputs)
    else:
        raise ValueError(
            f"The readout takes {size} features; states give {hidden}"
            + ("" if inputs is None else f" and inputs {inputs.shape[-1]} more")
            + "."
        )
    out = features @ readout.w
    return out + jax.lax.broadcast_to_rank(readout.b, out.ndim)


# --------------------------------------------------------------------------- fit and runs


def fit(
    params: ReservoirParams,
    inputs: jax.Array,
    targets: jax.Array,
    *,
    ridge: float,
    warmup: int = 0,
    carry: Optional[ReservoirCarry] = None,
    feedback: Optional[jax.Array] = None,
    input_to_readout: bool = True,
    fit_bias: bool = True,
) -> tuple[Readout, ReservoirCarry]:
    """Run the reservoir over the training inputs and fit a ridge readout to the targets.

    Args:
      inputs: ``(*batch, T, D)``; targets: ``(*batch, T, O)``.
      ridge: λ ≥ 0.
      warmup: initial steps of each sequence left out of the regression (T must exceed it).
      carry: the starting state (default zeros).
      feedback: for reservoirs with feedback, the outputs fed back at each step; default
        ``teacher_forcing(targets)`` (the true previous outputs, zeros at step 0).
      input_to_readout: readout on ``[u, x]`` (default) or on the states ``x`` alone. The
        default is the standard ESN readout ``y = W_out [1; u; x]`` (Jaeger 2001; Lukoševičius
        2012, eq. 4); ``False`` is reservoirpy's default (``reservoir >> ridge``).
      fit_bias: fit an unpenalised bias (reservoirpy's default).

    Returns:
      ``(readout, final_carry)``; ``predict`` continues from ``final_carry``.
    """
    _check_params(params, "fit")
    _check_sequence(
        inputs, "inputs", reservoir.external_input_size(params), "the reservoir's input_size"
    )
    check_array(targets, "targets")
    if targets.ndim != inputs.ndim or tuple(targets.shape[:-1]) != tuple(inputs.shape[:-1]):
        raise ValueError(
            "Expected targets of shape (*batch, T, O) matching the inputs' "
            f"{tuple(inputs.shape[:-1])}, "
            f"got shape {tuple(targets.shape)}."
        )
    _check_ridges(ridge)
    _check_warmup(warmup, inputs.shape[-2])
    if feedback is None and _feedback_size(params):
        feedback = teacher_forcing(jnp.asarray(targets, params.w_x.dtype))
    final, states = collect_states(params, inputs, carry=carry, feedback=feedback)
    readout = ridge_readout(
        states,
        targets,
        ridge=ridge,
        warmup=warmup,
        fit_bias=fit_bias,
        inputs=jnp.asarray(inputs, states.dtype) if input_to_readout else None,
    )
    return readout, final


def predict(
    params: ReservoirParams,
    readout: Readout,
    inputs: jax.Array,
    *,
    carry: Optional[ReservoirCarry] = None,
    feedback: Optional[jax.Array] = None,
) -> tuple[ReservoirCarry, jax.Array]:
    """Teacher-forced run: one output per input step, ``y_t = W_out [u_t,] x_t + b``.

    Each step sees the true input (for a one-step-ahead forecast, the true current value); a
    reservoir with feedback gets ``feedback`` (the true previous outputs). Start from ``carry``,
    e.g. ``fit``'s final state, to continue a series.

    Returns:
      ``(final_carry, outputs)`` with outputs ``(*batch, T, O)``.
    """
    final, states = collect_states(params, inputs, carry=carry, feedback=feedback)
    return final, apply_readout(readout, states, inputs=jnp.asarray(inputs, states.dtype))


@functools.partial(jax.jit, static_argnames=("steps",))
def _generate(params, readout, carry, last_output, inputs, steps):
    takes_input = readout.w.shape[-2] != params.w_h.shape[0]
    feedback = _feedback_size(params) > 0

    def step(state, u_t):
        c, y_prev = state
        u = y_prev if u_t is None else u_t
        x = jnp.concatenate([u, y_prev], axis=-1) if feedback else u
        c, h = reservoir.step(params, c, x)
        features = jnp.concatenate([u, h], axis=-1) if takes_input else h
        y = features @ readout.w
        y = y + jax.lax.broadcast_to_rank(readout.b, y.ndim)
        return (c, y), y

    if inputs is None:
        (final, _), ys = unroll(step, (carry, last_output), None, length=steps, time_major=True)
        return final, jnp.moveaxis(ys, 0, -2)
    (final, _), ys = unroll(step, (carry, last_output), inputs)
    return final, ys


def generate(
    params: ReservoirParams,
    readout: Readout,
    steps: int,
    *,
    carry: ReservoirCarry,
    last_output: jax.Array,
    inputs: Optional[jax.Array] = None,
) -> tuple[ReservoirCarry, jax.Array]:
    """Free-running (generative) run: the readout's outputs are fed back for ``steps`` steps.

    Without ``inputs`` the ESN drives itself: each output is the next input (``u_{t+1} = y_t``,
    so the output and input sizes must agree), as when a one-step forecaster is iterated; a
    reservoir with feedback also gets ``y_t`` through ``W_fb``. With ``inputs``
    ``(*batch, steps, D)`` the external inputs are given and the outputs return only through
    ``W_fb`` (the reservoir needs ``feedback_size`` = output size).

    Args:
      steps: number of outputs to generate.
      carry: the state to start from, e.g. after a teacher-forced ``predict``; ``h`` of shape
        ``(*batch, H)``.
      last_output: ``(*batch, O)``, the last known output: the first fed-back value.
      inputs: optional external inputs.

    Returns:
      ``(final_carry, outputs)`` with outputs ``(*batch, steps, O)``.
    """
    _check_params(params, "generate")
    steps = check_positive_int(steps, "steps")
    if not isinstance(readout, Readout) or readout.w.ndim != 2:
        raise ValueError("generate expects a single Readout (w of shape (features, O)).")
    if not isinstance(carry, ReservoirCarry):
        raise ValueError(f"generate expects a ReservoirCarry, got {type(carry).__name__}.")
    out_size, hidden = readout.w.shape[1], params.w_h.shape[0]
    last_output = jnp.asarray(check_array(last_output, "last_output"), params.w_x.dtype)
    expected = tuple(carry.h.shape[:-1]) + (out_size,)
    if tuple(last_output.shape) != expected:
        raise ValueError(
            f"Expected last_output of shape {expected} (carry's batch + outputs), got "
            f"{tuple(last_output.shape)}."
        )
    d, f = reservoir.external_input_size(params), _feedback_size(params)
    if f and f != out_size:
        raise ValueError(f"The reservoir feeds back {f} values but the readout gives {out_size}.")
    if readout.w.shape[0] not in (hidden, hidden + d):
        raise ValueError(
            f"The readout takes {readout.w.shape[0]} features; the reservoir gives {hidden} "
            f"(+{d} inputs)."
        )
    if inputs is None:
        if d != out_size:
            raise ValueError(
                f"Without inputs the outputs are fed back as inputs, so the input size ({d}) must "
                f"equal the output size ({out_size}); got different sizes."
            )
    else:
        if not f:
            raise ValueError(
                "With external inputs the outputs can only return through feedback; "
                "this reservoir has feedback_size=0."
            )
        inputs = jnp.asarray(
            _check_sequence(inputs, "inputs", d, "the reservoir's input_size"), params.w_x.dtype
        )
        if tuple(inputs.shape[:-2]) != tuple(carry.h.shape[:-1]) or inputs.shape[-2] != steps:
            raise ValueError(
                f"Expected inputs of shape {tuple(carry.h.shape[:-1]) + (steps, d)}, got "
                f"{tuple(inputs.shape)}."
            )
    return _generate(params, readout, carry, last_output, inputs, steps)


# --------------------------------------------------------------------------- metrics


def _pair(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    if y.shape != p.shape:
        raise ValueError(
            f"Expected targets and predictions of the same shape, got {y.shape} and {p.shape}."
        )
    return y, p


def rmse(targets: jax.Array, predictions: jax.Array) -> float:
    """Root mean squared error over every element, ``sqrt(mean((y − ŷ)²))``, in float64.

    >>> rmse(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0]))
    1.4142135623730951
    """
    y, p = _pair(targets, predictions)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def rsquare(targets: jax.Array, predictions: jax.Array) -> float:
    """Coefficient of determination ``1 − Σ(y − ŷ)² / Σ(y − ȳ)²``, ȳ over all elements.

    The mean is over every element, as reservoirpy's ``rsquare``.

    >>> rsquare(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 2.0, 4.0]))
    0.5
    """
    y, p = _pair(targets, predictions)
    return float(1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


# --------------------------------------------------------------------------- diagnostics


def effective_spectral_radius(params: ReservoirParams) -> float:
    """ρ((1 − a) I + a W): the spectral radius of the leaky reservoir's linearisation at 0.

    For leaky units the Jacobian of the update at the origin is ``(1 − a) I + a W`` (tanh'(0) =
    1), so this, not ρ(W), decides whether small perturbations decay; it is below 1 exactly when
    every eigenvalue of W lies inside the circle of radius 1/a around 1 − 1/a (Jaeger,
    Lukoševičius, Popovici & Siewert 2007). Computed from all eigenvalues in float64.

    >>> params = reservoir.init(jax.random.key(0), 1, 40, spectral_radius=1.25, leak_rate=0.3)
    >>> bool(effective_spectral_radius(params) < 1.25)
    True
    """
    _check_params(params, "effective_spectral_radius")
    w = reservoir.recurrent_matrix(params)
    a = float(params.leak_rate)
    return float(np.max(np.abs(np.linalg.eigvals((1 - a) * np.eye(w.shape[0]) + a * w))))


class EchoStateCheck(NamedTuple):
    """Two runs of one reservoir from different initial states under the same inputs."""

    distances: (
        np.ndarray
    )  # (T + 1,) RMS distance between the two states, before each step and after the last
    ratio: float  # distances[-1] / distances[0]
    converged: bool  # ratio <= tol: the states forgot where they started


def echo_state_check(
    params: ReservoirParams,
    inputs: jax.Array,
    *,
    key: jax.Array,
    tol: float = 1e-4,
    feedback: Optional[jax.Array] = None,
) -> EchoStateCheck:
    """Empirical echo-state property: do two different initial states converge under one input?

    The echo-state property (Jaeger 2001) says the state is a function of the input history
    alone: from any two initial states the trajectories approach each other. Here both start
    uniform in [−1, 1]^H (two draws from ``key``), run over ``inputs`` ``(T, D)``, and
    ``converged`` is whether their RMS distance shrank by ``tol`` or more. A finite run can only
    support the property, not prove it; a contracting reservoir (ρ(W) < 1, tanh) always passes,
    a chaotic one (large ρ, weak input) does not.

    >>> u = jax.random.uniform(jax.random.key(1), (300, 1), minval=-1.0, maxval=1.0)
    >>> params = reservoir.init(jax.random.key(0), 1, 50, spectral_radius=0.9)
    >>> echo_state_check(params, u, key=jax.random.key(2)).converged
    True
    """
    _check_params(params, "echo_state_check")
    inputs = _check_sequence(
        inputs, "inputs", reservoir.external_input_size(params), "the reservoir's input_size"
    )
    if inputs.ndim != 2:
        raise ValueError(
            f"Expected one input sequence of shape (T, D), got shape {tuple(inputs.shape)}."
        )
    hidden = params.w_h.shape[0]
    starts = jax.random.uniform(key, (2, hidden), params.w_h.dtype, minval=-1.0, maxval=1.0)
    pair = jnp.broadcast_to(jnp.asarray(inputs, params.w_x.dtype), (2,) + inputs.shape)
    if feedback is not None:
        feedback = jnp.broadcast_to(jnp.asarray(feedback), (2,) + tuple(jnp.shape(feedback)))
    elif _feedback_size(params):
        feedback = jnp.zeros((2,) + inputs.shape[:-1] + (_feedback_size(params),), params.w_x.dtype)
    _, states = collect_states(params, pair, carry=ReservoirCarry(starts), feedback=feedback)
    trajectory = np.concatenate(
        [np.asarray(starts, np.float64)[:, None], np.asarray(states, np.float64)], axis=1
    )
    distances = np.sqrt(np.mean((trajectory[0] - trajectory[1]) ** 2, axis=-1))
    ratio = float(distances[-1] / distances[0])
    return EchoStateCheck(distances, ratio, bool(ratio <= tol))


class MemoryCapacity(NamedTuple):
    """Short-term memory capacity (Jaeger 2002)."""

    total: float  # Σ_k MC_k
    per_delay: np.ndarray  # (max_delay,) MC_k for k = 1..max_delay


def memory_capacity(
    params: ReservoirParams,
    *,
    key: jax.Array,
    max_delay: Optional[int] = None,
    length: int = 4000,
    warmup: int = 200,
    ridge: float = 1e-8,
) -> MemoryCapacity:
    """Jaeger's (2002) memory capacity ``MC = Σ_{k≥1} MC_k``, ``MC_k = corr²(u(t−k), ŷ_k(t))``.

    The reservoir (one input) is driven by i.i.d. inputs uniform in [−1, 1]; one linear readout
    per delay ``k = 1..max_delay`` (default 2H) is fitted by ridge regression on the first half of
    the steps after ``warmup``, and ``MC_k`` is the squared correlation between ``u(t − k)`` and
    its reconstruction on the second half. For any reservoir ``MC ≤ H`` (Jaeger 2002); a finite
    test set adds about ``max_delay / (test steps)`` of chance correlation.

    Args:
      key: PRNG key of the input sequence.
      max_delay: the largest delay (default 2H).
      length: total steps; warmup: steps discarded first (at least ``max_delay`` are).
      ridge: λ of the readouts.

    Returns:
      ``MemoryCapacity(total, per_delay)``.

    >>> params = reservoir.init(jax.random.key(0), 1, 20, spectral_radius=0.9,
    ...                         input_connectivity=1.0)
    >>> mc = memory_capacity(params, key=jax.random.key(1), length=1000)
    >>> bool(1.0 < mc.total <= 20.5), mc.per_delay.shape
    (True, (40,))
    """
    _check_params(params, "memory_capacity")
    if reservoir.external_input_size(params) != 1 or _feedback_size(params):
        raise ValueError(
            "memory_capacity needs a reservoir with one input and no feedback "
            "(input_size=1, feedback_size=0)."
        )
    hidden = params.w_h.shape[0]
    max_delay = 2 * hidden if max_delay is None else check_positive_int(max_delay, "max_delay")
    length = check_positive_int(length, "length")
    start = max(int(warmup), max_delay)
    if length - start < 4:
        raise ValueError(
            f"Expected length well above max(warmup, max_delay) = {start}, got length={length}."
        )
    u = jax.random.uniform(key, (length, 1), params.w_x.dtype, minval=-1.0, maxval=1.0)
    _, states = collect_states(params, u)
    u_np = np.asarray(u, np.float64)[:, 0]
    delays = np.arange(1, max_delay + 1)
    targets = np.stack([u_np[start - k : length - k] for k in delays], axis=-1)  # (N, K): u(t − k)
    kept = np.asarray(states, np.float64)[start:]
    half = kept.shape[0] // 2
    w, b = _solve_ridge_host(kept[:half], targets[:half], np.array([ridge]), True)
    predicted = kept[half:] @ w[0] + b[0]
    actual = targets[half:]
    pc, ac = predicted - predicted.mean(0), actual - actual.mean(0)
    denominator = np.sum(pc**2, 0) * np.sum(ac**2, 0)
    per_delay = np.where(
        denominator > 0, np.sum(pc * ac, 0) ** 2 / np.where(denominator > 0, denominator, 1.0), 0.0
    )
    return MemoryCapacity(float(per_delay.sum()), per_delay)


# --------------------------------------------------------------------------- sweeps


class SweepResult(NamedTuple):
    """Validation errors over a grid of hyper-parameters (``sweep``)."""

    errors: np.ndarray  # (num_keys, num_radii, num_leaks, num_ridges): validation RMSE
    spectral_radii: np.ndarray  # (num_radii,)
    leak_rates: np.ndarray  # (num_leaks,)
    ridges: np.ndarray  # (num_ridges,)

    def best(self) -> dict:
        """The setting with the lowest error averaged over keys, and that mean error."""
        mean = self.errors.mean(axis=0)
        i, j, k = np.unravel_index(int(np.argmin(mean)), mean.shape)
        return {
            "spectral_radius": float(self.spectral_radii[i]),
            "leak_rate": float(self.leak_rates[j]),
            "ridge": float(self.ridges[k]),
            "rmse": float(mean[i, j, k]),
        }


def _sweep_point(
    params,
    radius,
    leak,
    train_x,
    train_y,
    train_fb,
    val_x,
    val_y,
    val_fb,
    *,
    ridges,
    warmup,
    input_to_readout,
    fit_bias,
):
    params = reservoir.with_spectral_radius(params, radius, current=1.0)._replace(
        leak_rate=leak.astype(params.leak_rate.dtype)
    )
    xs = train_x if train_fb is None else jnp.concatenate([train_x, train_fb], axis=-1)
    carry, states = unroll(
        functools.partial(reservoir.step, params), reservoir.initial_carry(params), xs
    )
    features = _features(states, train_x if input_to_readout else None)[warmup:]
    w, b = _ridge(features, train_y[warmup:], ridges, fit_bias)
    xs = val_x if val_fb is None else jnp.concatenate([val_x, val_fb], axis=-1)
    _, states = unroll(functools.partial(reservoir.step, params), carry, xs)
    features = _features(states, val_x if input_to_readout else None)
    predictions = jnp.einsum("tp,lpo->lto", features, w) + b[:, None, :]
    return jnp.sqrt(jnp.mean((predictions - val_y[None]) ** 2, axis=(1, 2)))


def sweep(
    keys: Union[jax.Array, Sequence[jax.Array]],
    train_inputs: jax.Array,
    train_targets: jax.Array,
    val_inputs: jax.Array,
    val_targets: jax.Array,
    *,
    hidden_size: int,
    spectral_radii: Sequence[float],
    leak_rates: Sequence[float],
    ridges: Sequence[float],
    warmup: int = 0,
    input_to_readout: bool = True,
    fit_bias: bool = True,
    mesh: Optional[jax.sharding.Mesh] = None,
    axis: str = "data",
    **init_kwargs: Any,
) -> SweepResult:
    """Validation RMSE over keys × spectral radii × leak rates × ridges, in one compiled call.

    For each key a reservoir is drawn once with ρ(W) = 1 (``reservoir.init(key, D, hidden_size,
    **init_kwargs)``); ``W`` is then rescaled to each radius (ρ(cW) = cρ(W), so no new
    eigenvalues), the leak rate set, the reservoir run over the training inputs from a zero state
    and on over the validation inputs (the protocol of ``fit`` then ``predict``), and the readout
    solved for every ridge from one eigendecomposition. Keys, radii and leaks are ``jax.vmap``
    axes of a single ``jit``; the solves are host callbacks inside it. Each grid entry equals
    ``fit`` + ``predict`` with that setting run alone (tested).

    Args:
      keys: PRNG keys, one reservoir each (e.g. ``jax.random.split(key, 3)``). Circulant
        reservoirs from different keys have different static offsets and cannot share one
        ``vmap``: sweep those one key at a time.
      train_inputs, train_targets: ``(T, D)``, ``(T, O)``.
      val_inputs, val_targets: ``(T_val, D)``, ``(T_val, O)``.
      hidden_size: H.
      spectral_radii, leak_rates, ridges: the grid's axes (each value validated as in ``init``
        and ``ridge_readout``).
      warmup: training steps left out of the regression.
      input_to_readout, fit_bias: as in ``fit``.
      mesh, axis: spread the grid over the devices of ``mesh``'s ``axis`` (e.g.
        ``recurrax.data_mesh()``): the (key, radius, leak) points are dealt out in equal shares
        (the last point repeated to fill the last share) and each device runs its share, host
        solves included, under ``jax.shard_map``; the data and reservoirs are replicated. The
        errors are those of the one-device sweep up to float rounding.
      init_kwargs: other ``reservoir.init`` options (not ``spectral_radius`` or ``leak_rate``).

    Returns:
      ``SweepResult`` with ``errors`` of shape (keys, radii, leaks, ridges).
    """
    for name in ("spectral_radius", "leak_rate"):
        if name in init_kwargs:
            raise ValueError(
                f"sweep varies {name} itself (pass {name.replace('radius', 'radii')}"
                f"{'s' if name == 'leak_rate' else ''}), got {name}= in init_kwargs."
            )
    keys = list(keys)
    if not keys:
        raise ValueError("Expected at least one key.")
    ridge_values, _ = _check_ridges(np.asarray(ridges, np.float64).reshape(-1))
    radii = np.asarray(spectral_radii, np.float64).reshape(-1)
    leaks = np.asarray(leak_rates, np.float64).reshape(-1)
    for value in radii:
        check_number(float(value), "spectral_radius", low=0.0)
    for value in leaks:
        check_number(float(value), "leak_rate", low=0.0, high=1.0, low_open=True)
    for name, x in (
        ("train_inputs", train_inputs),
        ("train_targets", train_targets),
        ("val_inputs", val_inputs),
        ("val_targets", val_targets),
    ):
        check_array(x, name)
        if x.ndim != 2:
            raise ValueError(
                f"Expected {name} of shape (time, features), got shape {tuple(x.shape)}."
            )
    input_size = train_inputs.shape[-1]
    params = [
        reservoir.init(
            k, input_size, hidden_size, spectral_radius=1.0, leak_rate=1.0, **init_kwargs
        )
        for k in keys
    ]
    if len({p.layout for p in params}) > 1:
        raise ValueError(
            "The reservoirs drawn from these keys have different static layouts (circulant "
            "offsets), so they cannot be vmapped together: sweep one key at a time."
        )
    dtype = params[0].w_x.dtype
    train_x, val_x = jnp.asarray(train_inputs, dtype), jnp.asarray(val_inputs, dtype)
    train_y, val_y = jnp.asarray(train_targets, dtype), jnp.asarray(val_targets, dtype)
    for name, x, y in (("train", train_x, train_y), ("val", val_x, val_y)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"Expected {name} inputs and targets with the same number of steps, got "
                f"{x.shape[0]} and {y.shape[0]}."
            )
    if val_y.shape[-1] != train_y.shape[-1] or val_x.shape[-1] != input_size:
        raise ValueError(
            "Expected the validation inputs and targets to have the training ones' feature sizes."
        )
    warmup = _check_warmup(warmup, train_x.shape[0])
    train_fb = val_fb = None
    if _feedback_size(params[0]):
        train_fb = teacher_forcing(train_y)
        val_fb = teacher_forcing(val_y, initial=train_y[-1])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    point = functools.partial(
        _sweep_point,
        ridges=ridge_values,
        warmup=warmup,
        input_to_readout=input_to_readout,
        fit_bias=fit_bias,
    )
    data = (train_x, train_y, train_fb, val_x, val_y, val_fb)
    if mesh is not None:
        errors = _sharded_sweep(point, stacked, radii, leaks, dtype, data, mesh, axis)
        return SweepResult(errors, radii, leaks, ridge_values)
    over_leaks = jax.vmap(point, in_axes=(None, None, 0) + (None,) * 6)
    over_radii = jax.vmap(over_leaks, in_axes=(None, 0, None) + (None,) * 6)
    over_keys = jax.vmap(over_radii, in_axes=(0, None, None) + (None,) * 6)
    errors = jax.jit(over_keys)(
        stacked, jnp.asarray(radii, dtype), jnp.asarray(leaks, dtype), *data
    )
    return SweepResult(np.asarray(errors, np.float64), radii, leaks, ridge_values)


def _sharded_sweep(point, stacked, radii, leaks, dtype, data, mesh, axis) -> np.ndarray:
    """``sweep``'s grid as a flat list of (key, radius, leak) points split over ``mesh``'s ``axis``."""
    mesh = _sharding.check_mesh(mesh, axis)
    num_keys = jax.tree.leaves(stacked)[0].shape[0]
    grid = (num_keys, len(radii), len(leaks))
    which = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=-1)  # (G, 3)
    devices = mesh.shape[axis]
    padded = -(-len(which) // devices) * devices
    which = np.concatenate([which, np.repeat(which[-1:], padded - len(which), axis=0)])

    def share(stacked, key_index, radius, leak, data):
        params = jax.tree.map(lambda leaf: leaf[key_index], stacked)
        return jax.vmap(point, in_axes=(0, 0, 0) + (None,) * 6)(params, radius, leak, *data)

    run = jax.jit(jax.shard_map(share, mesh=mesh, in_specs=(P(), P(axis), P(axis), P(axis), P()),
                                out_specs=P(axis), check_vma=False))
    with jax.set_mesh(mesh):  # also inside a caller's set_mesh of an Explicit-axes mesh
        errors = run(stacked, jnp.asarray(which[:, 0]), jnp.asarray(radii[which[:, 1]], dtype),
                     jnp.asarray(leaks[which[:, 2]], dtype), data)
    return np.asarray(errors, np.float64)[: int(np.prod(grid))].reshape(grid + (-1,))
