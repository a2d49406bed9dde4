"""Closed-form continuous-time cell, CfC (Hasani et al. 2022), as in ``ncps.torch.CfCCell``.

The CfC replaces the liquid time-constant ODE by an approximation of its closed-form solution,
so a step costs one small MLP and no ODE solver; the time ``Δt`` elapsed since the previous
step enters the step as an input. Equations, row-vector form, for one step with input features
``u`` (*batch, D), elapsed time ``Δt`` (*batch, 1) and state ``h`` (*batch, H):

    z_0 = [u, h]                                               (*batch, D + H)
    z_l = f(z_{l−1} @ W_l + b_l),   l = 1 … L                  (*batch, U)   the backbone
    ff1 = z_L @ W_ff1 + b_ff1,  ff2 = z_L @ W_ff2 + b_ff2       (*batch, H)
    t_a = z_L @ W_ta + b_ta,    t_b = z_L @ W_tb + b_tb         (*batch, H)
    σ_t = σ(t_a ⊙ Δt + t_b)

    "default":  h' = tanh(ff1) ⊙ (1 − σ_t) + σ_t ⊙ tanh(ff2)
    "no_gate":  h' = tanh(ff1) + σ_t ⊙ tanh(ff2)
    "pure":     h' = −A ⊙ exp(−Δt (|w_τ| + |ff1|)) ⊙ ff1 + A      (ff1 without tanh; no ff2, t_a, t_b)

with ``L = backbone_layers`` (``L = 0``: no backbone, the heads read ``z_0``), ``U =
backbone_units`` and ``f`` the backbone activation, by default ncps's ``lecun_tanh(v) = 1.7159
tanh(0.666 v)``. The output is ``y = h'`` (*batch, H). The step is nonlinear in ``h``: there is
no ``linear_recurrence``, and a parallel scan over time does not apply.

**Interface: Δt is the last input feature.** ``step(params, carry, x)`` takes ``x`` (*batch,
D + 1) whose last feature is ``Δt``, so the cell keeps the protocol and every tool (``rnn``,
``lengths``, masking, ``unroll``) works unchanged; ``input_size(params) == D + 1``.
``with_elapsed_time(xs, times)`` appends ``Δt`` to a sequence from absolute time stamps. With
``init(..., elapsed_time=False)`` the input is ``u`` alone and ``Δt = 1``, ncps's ``ts`` when
``CfC`` is called without ``timespans`` (regular sampling); that cell also stacks on other layers,
whereas a CfC with elapsed time after another layer needs ``Δt`` appended to that layer's outputs.

Layout. Kernels are ``(in, out)`` and applied ``x @ W`` (ncps's ``nn.Linear`` stores ``(out,
in)``); the first backbone kernel's rows are the D input features then the H state units
(ncps's ``cat([input, hx])``). The four heads are fused in ``w`` (F, 4H), blocks ff1, ff2,
t_a, t_b (``pure``: ``w`` is W_ff1 alone, (F, H)), ``F = U`` with a backbone, ``D + H``
without. Backbone layers after the first are stacked in ``backbone_deep_w`` (L − 1, U, U), so
every parameter is one array (or ``None`` where the configuration has no such tensor).

Initialisation as ncps's effective one: every 2-D weight Xavier-uniform (``CfCCell.init_weights``
runs over all parameters, so the ``pure`` mode's ``w_τ`` and ``A``, declared as zeros and ones of
shape (1, H), end up ``U(±sqrt(6 / (1 + H)))`` too: fan-in H, fan-out 1), biases as
``nn.Linear``'s ``U(±1/sqrt(fan_in))``. Each head block is drawn with its own fans (F, H).

Out of scope, as in ncps but not here: backbone dropout (use ``backbone_layers`` without it, or
drop out around the layer), sparsity masks and wirings (``WiredCfCCell``), the mixed-memory LSTM
and the projection ``proj_size`` (a dense head after the layer, ``recurrax.dense``).

>>> import jax, jax.numpy as jnp
>>> from recurrax.cells import cfc
>>> params = cfc.init(jax.random.key(0), 3, 5, backbone_units=8)
>>> xs = cfc.with_elapsed_time(jnp.ones((2, 4, 3)), jnp.array([[0.0, 0.5, 1.5, 1.75]] * 2))
>>> xs[0, :, -1].tolist()                    # Δt; the first step gets ncps's default 1.0
[1.0, 0.5, 1.0, 0.25]
>>> carry, y = cfc.step(params, cfc.initial_carry(params, (2,)), xs[:, 0])
>>> (cfc.input_size(params), y.shape)
(4, (2, 5))

Reference: R. Hasani, M. Lechner, A. Amini, L. Liebenwein, A. Ray, M. Tschaikowski, G. Teschl
and D. Rus, "Closed-form continuous-time neural networks", Nature Machine Intelligence 4,
992–1003 (2022), arXiv:2106.13898; code: ``ncps`` (github.com/mlech26l/ncps), ``CfCCell``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from recurrax._checks import check_array, check_params_type, check_positive_int, is_traced
from recurrax.cells._common import check_sizes, check_step, lift, split_gates, zeros_carry

__all__ = [
    "CfCConfig",
    "CfCParams",
    "CfCCarry",
    "MODES",
    "ACTIVATIONS",
    "init",
    "initial_carry",
    "step",
    "input_size",
    "output_size",
    "with_elapsed_time",
]

MODES = ("default", "pure", "no_gate")
"""The CfC's modes, as ncps names them (equations in the module docstring)."""


def _lecun_tanh(v: jax.Array) -> jax.Array:
    return 1.7159 * jnp.tanh(0.666 * v)  # ncps's constants (LeCun 1998 uses 2/3)


ACTIVATIONS = {
    "lecun_tanh": _lecun_tanh,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}
"""The backbone activations by ncps's names; ``gelu`` is the exact (erf) GELU, as torch's."""


@dataclasses.dataclass(frozen=True)
class CfCConfig:
    """The CfC's static options (pytree metadata, not leaves): see ``init``."""

    mode: str = "default"
    activation: str = "lecun_tanh"
    elapsed_time: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Expected mode in {list(MODES)}, got {self.mode!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation in {list(ACTIVATIONS)}, got {self.activation!r}.")
        if not isinstance(self.elapsed_time, bool):
            raise ValueError(f"Expected elapsed_time to be True or False, got {self.elapsed_time!r}.")

    @property
    def heads(self) -> int:
        """G, the head blocks fused in ``w``: ff1, ff2, t_a, t_b; ff1 alone in ``pure``."""
        return 1 if self.mode == "pure" else 4


jax.tree_util.register_static(CfCConfig)


class CfCParams(NamedTuple):
    """Parameters of a CfC cell (``None`` where the configuration has no such tensor)."""

    backbone_w: Optional[jax.Array]  # (D + H, U): first backbone layer; None when L = 0
    backbone_b: Optional[jax.Array]  # (U,)
    backbone_deep_w: Optional[jax.Array]  # (L − 1, U, U): backbone layers 2 … L; None when L ≤ 1
    backbone_deep_b: Optional[jax.Array]  # (L − 1, U)
    w: jax.Array  # (F, G·H): heads ff1, ff2, t_a, t_b (G = 4), ff1 alone in "pure" (G = 1)
    b: jax.Array  # (G·H,)
    w_tau: Optional[jax.Array]  # (H,): "pure" only, the rate |w_τ| added to |ff1|
    a: Optional[jax.Array]  # (H,): "pure" only, ncps's A (the state h' tends to)
    config: CfCConfig  # static: mode, activation, elapsed_time


class CfCCarry(NamedTuple):
    """State of a CfC cell: the hidden state ``h``."""

    h: jax.Array  # (*batch, hidden_size)


def _xavier(key: jax.Array, shape: tuple, fan_in: int, fan_out: int, dtype) -> jax.Array:
    bound = (6.0 / (fan_in + fan_out)) ** 0.5  # torch.nn.init.xavier_uniform_, gain 1
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _linear_bias(key: jax.Array, shape: tuple, fan_in: int, dtype) -> jax.Array:
    bound = fan_in ** -0.5  # torch.nn.Linear's bias init
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    mode: str = "default",
    backbone_units: int = 128,
    backbone_layers: int = 1,
    activation: str = "lecun_tanh",
    elapsed_time: bool = True,
    dtype=jnp.float32,
) -> CfCParams:
    """Initialise a CfC cell as ncps does (see the module docstring); defaults are ncps's.

    Args:
      key: PRNG key.
      input_size: D, the input features **without** Δt (the step takes D + 1 when
        ``elapsed_time``).
      hidden_size: H, the state and output size.
      mode: ``"default"``, ``"no_gate"`` or ``"pure"``.
      backbone_units: U, the width of each backbone layer.
      backbone_layers: L ≥ 0 (0: the heads read ``[u, h]`` directly).
      activation: the backbone's, one of ``ACTIVATIONS`` (ncps's names).
      elapsed_time: ``True``: the last input feature is Δt; ``False``: Δt = 1 (regular sampling).
      dtype: parameter dtype.
    """
    input_size, hidden_size = check_sizes(input_size, hidden_size)
    units = check_positive_int(backbone_units, "backbone_units")
    if isinstance(backbone_layers, bool) or not isinstance(backbone_layers, (int, np.integer)) or backbone_layers < 0:
        raise ValueError(f"Expected backbone_layers to be a non-negative integer, got {backbone_layers!r}.")
    layers = int(backbone_layers)
    config = CfCConfig(mode=mode, activation=activation, elapsed_time=elapsed_time)
    keys = iter(jax.random.split(key, 8))
    n_in = input_size + hidden_size
    backbone_w = backbone_b = deep_w = deep_b = None
    if layers > 0:
        backbone_w = _xavier(next(keys), (n_in, units), n_in, units, dtype)
        backbone_b = _linear_bias(next(keys), (units,), n_in, dtype)
    if layers > 1:
        deep_w = _xavier(next(keys), (layers - 1, units, units), units, units, dtype)
        deep_b = _linear_bias(next(keys), (layers - 1, units), units, dtype)
    features = units if layers > 0 else n_in
    heads = config.heads
    # Each head is its own (F, H) nn.Linear in ncps: Xavier with fans (F, H) per block.
    w = _xavier(next(keys), (features, heads * hidden_size), features, hidden_size, dtype)
    b = _linear_bias(next(keys), (heads * hidden_size,), features, dtype)
    w_tau = a = None
    if mode == "pure":  # ncps's (1, H) tensors, re-drawn by init_weights: fans (H, 1)
        w_tau = _xavier(next(keys), (hidden_size,), hidden_size, 1, dtype)
        a = _xavier(next(keys), (hidden_size,), hidden_size, 1, dtype)
    return CfCParams(backbone_w, backbone_b, deep_w, deep_b, w, b, w_tau, a, config)


def output_size(params: CfCParams) -> int:
    """H, the size of ``h`` (the step's output)."""
    check_params_type(params, CfCParams, "cfc.output_size")
    return params.b.shape[-1] // params.config.heads


def input_size(params: CfCParams) -> int:
    """D + 1 (the features and Δt), or D with ``elapsed_time=False``: what ``step`` expects."""
    check_params_type(params, CfCParams, "cfc.input_size")
    first = params.w if params.backbone_w is None else params.backbone_w
    return first.shape[0] - output_size(params) + int(params.config.elapsed_time)


def initial_carry(params: CfCParams, batch_shape: tuple[int, ...] = ()) -> CfCCarry:
    """Zero state, ``h`` of shape ``(*batch_shape, hidden_size)`` (ncps's default ``hx``)."""
    return zeros_carry(CfCCarry, params, CfCParams, batch_shape, "cfc.initial_carry",
                       hidden_size=output_size(params), dtype=params.w.dtype)


def _affine(z: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    out = z @ w
    return out + lift(b, out)


def step(params: CfCParams, carry: CfCCarry, x: jax.Array) -> tuple[CfCCarry, jax.Array]:
    """One CfC step for ``x`` (*batch, D + 1), its last feature Δt (or (*batch, D) without).

    Returns ``(CfCCarry(h'), h')``, ``h'`` of shape ``(*batch, hidden_size)``.
    """
    check_params_type(params, CfCParams, "cfc.step")
    hidden = output_size(params)
    check_step(params, CfCParams, carry, CfCCarry, x, "cfc.step", input_size=input_size(params), hidden_size=hidden)
    config = params.config
    if config.elapsed_time:
        u, dt = x[..., :-1], x[..., -1:]  # dt (*batch, 1) broadcasts over the H units
    else:
        u, dt = x, jnp.ones(x.shape[:-1] + (1,), x.dtype)
    z = jnp.concatenate([u, carry.h], axis=-1)
    f = ACTIVATIONS[config.activation]
    if params.backbone_w is not None:
        z = f(_affine(z, params.backbone_w, params.backbone_b))
    if params.backbone_deep_w is not None:
        for layer in range(params.backbone_deep_w.shape[0]):  # L − 1 is static
            z = f(_affine(z, params.backbone_deep_w[layer], params.backbone_deep_b[layer]))
    heads = _affine(z, params.w, params.b)
    if config.mode == "pure":
        ff1 = heads  # no tanh here: ncps applies it in the gated modes only
        a, w_tau = lift(params.a, ff1), lift(params.w_tau, ff1)
        h = -a * jnp.exp(-dt * (jnp.abs(w_tau) + jnp.abs(ff1))) * ff1 + a
    else:
        ff1, ff2, t_a, t_b = split_gates(heads, 4)
        ff1, ff2 = jnp.tanh(ff1), jnp.tanh(ff2)
        t_interp = jax.nn.sigmoid(t_a * dt + t_b)
        if config.mode == "no_gate":
            h = ff1 + t_interp * ff2
        else:
            h = ff1 * (1.0 - t_interp) + t_interp * ff2
    return CfCCarry(h), h


def with_elapsed_time(xs: jax.Array, times: Any, *, initial_time: Any = None) -> jax.Array:
    """``xs`` (*batch, T, D) with Δt appended as its last feature: (*batch, T, D + 1).

    ``times`` (*batch, T) are absolute time stamps, non-decreasing along T. ``Δt_t = times_t −
    times_{t−1}``; the first step's ``Δt`` is ``times_0 − initial_time`` (a number, or one per
    sequence, shape (*batch,)) or, with ``initial_time=None``, 1.0: ncps's ``ts`` when no time
    spans are given, the one elapsed time a step without a predecessor can be given without
    guessing where the sequence started. To pass ncps-style ``timespans`` (Δt already) write
    ``jnp.concatenate([xs, timespans[..., None]], -1)``.

    Differences are taken in the stamps' own precision (NumPy stamps in NumPy, so float64 Unix
    times keep their resolution with x64 off) and then cast to ``xs``'s dtype.

    Raises ``ValueError`` for a ``times`` shape other than ``xs.shape[:-1]`` and for decreasing
    stamps (or ``times_0 < initial_time``). Stamps that are concrete are checked at once; traced
    ones (under ``jit``) when the compiled call runs, by a ``jax.debug.callback``, where the
    error surfaces as ``jax.errors.JaxRuntimeError`` carrying the same message. NaN stamps are
    not an error: they give NaN Δt at their step and the next (harmless at padded steps past
    ``lengths``, which ``rnn`` zeroes before the cell reads them).
    """
    check_array(xs, "xs")
    if xs.ndim < 2:
        raise ValueError(f"Expected xs of shape (*batch, T, D), got shape {tuple(xs.shape)}.")
    if not hasattr(times, "shape"):
        times = np.asarray(times)
    if tuple(times.shape) != tuple(xs.shape[:-1]):
        raise ValueError(
            f"Expected times with shape {tuple(xs.shape[:-1])} (xs's (*batch, T)), got shape {tuple(times.shape)}."
        )
    if not (jnp.issubdtype(times.dtype, jnp.floating) or jnp.issubdtype(times.dtype, jnp.integer)):
        raise ValueError(f"Expected real time stamps, got dtype {times.dtype}.")
    traced = is_traced(times) or is_traced(initial_time)
    xp = jnp if traced else np
    if not traced:
        times = np.asarray(times)
        if times.dtype.kind in "iu":  # exact integer differences, then a float for the cast
            times = times.astype(np.float64)
    steps = times[..., 1:] - times[..., :-1]
    if initial_time is None:
        first = xp.ones_like(times[..., :1])
    else:
        if not hasattr(initial_time, "shape"):
            initial_time = xp.asarray(initial_time, dtype=times.dtype)
        if initial_time.shape not in ((), tuple(xs.shape[:-2])):
            raise ValueError(
                f"Expected initial_time to be a number or of shape {tuple(xs.shape[:-2])} (xs's batch shape), "
                f"got shape {tuple(initial_time.shape)}."
            )
        # Explicit broadcast to the batch shape (no rank promotion), then a unit time axis.
        first = times[..., :1] - xp.broadcast_to(initial_time, times.shape[:-1])[..., None]
    dt = xp.concatenate([first, steps], axis=-1)
    if dt.size:
        if traced:
            jax.debug.callback(_check_monotone_on_host, jnp.nanmin(dt))
        else:  # fmin skips NaN (and gives NaN, no warning, when every Δt is NaN)
            _check_monotone_on_host(np.fmin.reduce(dt, axis=None))
    return jnp.concatenate([xs, jnp.asarray(dt, xs.dtype)[..., None]], axis=-1)


def _check_monotone_on_host(smallest: Any) -> None:
    # A Python number first: a comparison on the callback's jax.Array would launch a JAX
    # computation from a host callback (see recurrax._checks._check_range_on_host).
    smallest = np.asarray(smallest).item()
    if smallest < 0:  # False for NaN: NaN stamps are let through (see with_elapsed_time)
        raise ValueError(
            "Expected non-decreasing time stamps (every Δt ≥ 0, and times[..., 0] ≥ initial_time), "
            f"got a decrease: the smallest Δt is {smallest}."
        )
