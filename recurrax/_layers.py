"""Layers over the cells: a sequence layer, bidirectional layers, deep stacks, embeddings, heads.

Everything here runs time through ``unroll``; nothing writes its own loop. Params are
NamedTuples (pytrees); a layer's configuration that changes shapes (a bidirectional merge
mode) is static pytree metadata inside the params, like a cell's activation.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import types
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad as jax_ad

from recurrax import cells, initializers, parallel
from recurrax.kernels import _layer as kernels
from recurrax.cells import CellFamily
from recurrax._checks import check_array, check_lengths, check_positive_int, is_traced
from recurrax._rnn_params import RNNParams, _batch_shape, _check_rnn_params, rnn_initial_carry
from recurrax._unroll import _check_step_types, split_step, unroll, unroll_cell

Family = Union[str, CellFamily, types.ModuleType, Any]  # a name, a CellFamily, or a protocol object


# --------------------------------------------------------------------------- sequence layer


def init_rnn(
    key: jax.Array,
    cell: Family,
    input_size: int,
    hidden_size: int,
    *,
    learned_initial: bool = False,
    **cell_kwargs: Any,
) -> RNNParams:
    """Initialise a recurrent layer of a cell family: a registered name or any family object.

    ``cell`` is ``"elman"``, ``"lstm"``, ``"gru"``, ``"reservoir"``, any name given with
    ``register_cell``, or a family object itself (a module or any object with ``init``,
    ``initial_carry`` and ``step``; see ``recurrax.cells``). The family is checked against the
    protocol here, on abstract values, so a broken cell fails now with its name in the message.
    ``learned_initial=True`` adds a trainable initial state (the family's ``initial_carry``,
    zeros for the built-ins) that every sequence starts from; ``cell_kwargs`` go to the
    family's ``init`` (e.g. ``peephole=True``).

    >>> params = init_rnn(jax.random.key(0), "lstm", 3, 8, learned_initial=True)
    >>> params.initial.h.shape
    (8,)
    """
    family = cells.resolve_family(cell)
    cell_params = family.init(key, input_size, hidden_size, **cell_kwargs)
    cells.check_family(family, cell_params)
    initial = family.initial_carry(cell_params) if learned_initial else None
    return RNNParams(cell=cell_params, initial=initial, family=family)


_PROTOCOL_CHECKED: set = set()  # (family, params' structure, shapes and dtypes) already checked


def _check_protocol(params: RNNParams) -> None:
    """The cell protocol where a layer runs, not only in ``init_rnn``: ``RNNParams`` and
    ``as_family`` are public, so a layer may be built by hand. On abstract values, once per
    family and params shapes (``cells.check_family``: the same messages as ``init_rnn``)."""
    leaves, tree = jax.tree.flatten(params.cell)
    key = (params.family, tree, tuple((tuple(jnp.shape(leaf)), jnp.result_type(leaf)) for leaf in leaves))
    if key not in _PROTOCOL_CHECKED:
        cells.check_family(params.family, params.cell)
        _PROTOCOL_CHECKED.add(key)


# ``rnn`` uses the fused backward pass by default below this hidden size, for every family that
# splits but these (measured: see ``rnn``).
FUSED_BACKWARD_BELOW_HIDDEN = 1024
_PLAIN_AUTODIFF_BY_DEFAULT = (cells.gru.step,)


def rnn(
    params: RNNParams,
    xs: jax.Array,
    *,
    carry: Any = None,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: Union[int, bool] = 1,
    remat: Any = False,
    segment_length: Optional[int] = None,
    return_carries: bool = False,
    fused_backward: Optional[bool] = None,
    compute_dtype: Any = None,
    method: Any = "scan",
    initial_guess: Any = None,
    kernel: str = "auto",
):
    """Run one recurrent layer over ``xs`` ``(*batch, T, D)``.

    The carry starts at ``carry`` if given (shape ``(*batch, H)`` per field, never broadcast),
    else at the learned initial state, else at the family's ``initial_carry`` (zeros).

    ``lengths``, ``mask``, ``reverse``, ``time_major``, ``unroll``, ``remat``,
    ``segment_length`` and ``return_carries`` mean what they mean for ``unroll``, which runs
    the loop. ``unroll``'s ``resets``/``reset_carry`` (packed streams) and ``length`` (no
    inputs) are not layer options: call ``unroll`` with ``functools.partial(family.step,
    params.cell)`` for those.

    Gradients: ``fused_backward=True`` takes them from ``unroll_cell``'s fused backward pass
    (weight gradients as large matrix products after the reverse scan) wherever the cell allows
    it (a family with a products/pointwise split: Elman, LSTM, reset-after GRU, or a user
    family that declares one) and neither ``remat`` nor ``return_carries`` is asked for;
    ``False`` uses plain autodiff through the scan, which forward-mode differentiation
    (``jax.jvp``, ``jax.jacfwd``) needs. Both give the same values and gradients. The default
    ``None`` picks the fused pass for ``hidden_size < 1024`` except for the GRU: measured on
    XLA:CPU (``python -m experiments bench``), it was 20% faster at H=256 and no slower at H=64
    for the LSTM, while at H=1024 the per-step weight products already run near the GEMM rate
    and the fused pass, which recomputes the gates in its reverse scan, was 2–5% slower; the
    GRU's fused pass was never faster than plain autodiff (1.00–1.40× its time at B, T, D, H =
    64, 64, 1, 128 / 16, 1000, 32, 64 / 32, 256, 64, 256; LSTM 0.74–0.96×, Elman 0.82–1.11×,
    15 interleaved repeats, 2026-12-06), so the GRU's default is plain autodiff.

    ``compute_dtype`` (e.g. ``jnp.bfloat16``): mixed precision, every matrix product on operands
    in that dtype accumulated in the params' dtype, the state and gates in the params' dtype (see
    ``unroll_cell``); cells with a products/pointwise split only (not the reset-before GRU).
    Meant for accelerators with fast bfloat16 products: on XLA:CPU it was 1.3–1.6× slower
    forward than float32 (``python -m experiments bench``).

    ``method``: how the time loop is evaluated (``recurrax.parallel``): ``"scan"`` (default,
    ``lax.scan``), ``"associative"`` (exact, linear cells), ``"deer"``, ``"quasi_deer"``,
    ``"elk"`` (Newton over the whole trajectory, any cell, to a tolerance; gradients by implicit
    differentiation), or a ``recurrax.parallel.Method`` with options. ``initial_guess`` warm-starts
    the Newton methods from carries in the ``return_carries`` layout. The parallel methods take
    lengths, mask, reverse and time_major; ``unroll``, ``remat``, ``segment_length``,
    ``fused_backward`` and ``compute_dtype`` belong to the scan and are refused with them.

    ``kernel``: ``"onednn"`` runs the layer through oneDNN's fused RNN primitive, forward and
    backward (``recurrax.kernels``: float32 Elman with tanh, relu or sigmoid, LSTM and GRU
    layers on the CPU, where the kernel is built), and raises a ``ValueError`` with the reason
    where it cannot; ``"scan"`` always scans; ``"auto"`` (default) takes oneDNN where it was
    measured faster than the scan: LSTM and GRU forward from H = 256, their gradient from
    H = 1024, the scan everywhere else (the rule, its figures and the table of fallbacks are in
    ``recurrax.kernels._layer``). All give the same values and gradients (to float32
    rounding). Forward-mode autodiff cannot pass the kernel's or the fused pass's ``custom_vjp``:
    under ``jax.jvp`` or ``jax.jacfwd``, or inside ``forward_mode()`` (for ``jax.linearize``;
    Hessian-free uses it), the layer runs the scan with plain autodiff at the defaults, and an
    explicit ``kernel="onednn"`` or ``fused_backward=True`` raises a ``ValueError`` naming
    ``kernel="scan", fused_backward=False``. (``rnn`` sees the tangents only where it is traced
    under the ``jvp``: a ``jax.jvp`` around a function jitted on its own sees JAX's
    ``TypeError``; trace that function in ``forward_mode()``.)

    Returns:
      ``(final_carry, hs)`` with ``hs`` of shape ``(*batch, T, H)`` (zero at masked steps), plus
      the per-step carries with ``return_carries=True``.

    >>> params = init_rnn(jax.random.key(0), "gru", 3, 4)
    >>> carry, hs = rnn(params, jnp.ones((2, 6, 3)), lengths=jnp.array([6, 3]))
    >>> hs.shape
    (2, 6, 4)
    """
    _check_rnn_params(params, "rnn")
    _check_protocol(params)
    kernel = kernels.check_kernel(kernel)
    method = parallel.as_method(method)
    if method.name != "scan":
        if kernel == "onednn":
            raise ValueError(f"kernel='onednn' runs the layer step by step; method={method.name!r} solves it in "
                             "parallel over time: pass one of them.")
        _check_scan_options(method, unroll=unroll, remat=remat, segment_length=segment_length,
                            fused_backward=fused_backward, compute_dtype=compute_dtype)
        solution = parallel.solve(params, xs, method=method, carry=carry, lengths=lengths, mask=mask,
                                  reverse=reverse, time_major=time_major, initial_guess=initial_guess)
        if return_carries:
            return solution.final_carry, solution.outputs, solution.carries
        return solution.final_carry, solution.outputs
    if initial_guess is not None:
        raise ValueError(f"initial_guess warm-starts a Newton method; got method={method.name!r}.")
    if carry is None:
        carry = rnn_initial_carry(params, _batch_shape(xs, time_major))
    options = dict(lengths=lengths, mask=mask, reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
                   segment_length=segment_length, return_carries=return_carries, compute_dtype=compute_dtype)
    if _FORWARD_MODE.get() or _has_jvp_tracer((params.cell, xs, carry)):
        if kernel == "onednn" or fused_backward:
            chosen = "kernel='onednn'" if kernel == "onednn" else "fused_backward=True"
            raise ValueError(
                f"Forward-mode autodiff (jax.jvp, jax.jacfwd, jax.linearize) cannot pass {chosen}, whose gradient "
                "is a custom VJP: pass kernel='scan', fused_backward=False (or leave both at their defaults)."
            )
        kernel, fused_backward = "scan", False
    return _sequential(params, xs, carry, kernel=kernel, fused_backward=fused_backward, **options)


# ``forward_mode()``'s switch; read while a layer is traced.
_FORWARD_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("recurrax_forward_mode", default=False)


@contextlib.contextmanager
def forward_mode():
    """Trace recurrax's layers on the path forward-mode autodiff can enter, inside this context.

    The oneDNN kernel's and the fused backward pass's gradients are ``custom_vjp`` rules, which
    ``jax.jvp``, ``jax.jacfwd`` and ``jax.linearize`` cannot push tangents through. ``rnn`` sees
    ``jax.jvp``'s and ``jax.jacfwd``'s tracers in its inputs and switches to the scan with plain
    autodiff by itself; ``jax.linearize`` (and ``grad``) trace alike, so a function to be
    linearised and then *evaluated* forward is traced in this context (``HessianFree`` does).
    Same values either way; only the speed of the layer changes.

    >>> params = init_rnn(jax.random.key(0), "lstm", 2, 3)
    >>> with forward_mode():
    ...     ys, jvp = jax.linearize(lambda x: rnn(params, x)[1], jnp.ones((1, 4, 2)))
    >>> jvp(jnp.ones((1, 4, 2))).shape
    (1, 4, 3)
    """
    token = _FORWARD_MODE.set(True)
    try:
        yield
    finally:
        _FORWARD_MODE.reset(token)


def _has_jvp_tracer(tree) -> bool:
    """Whether ``jax.jvp`` / ``jax.jacfwd`` traces any leaf, also beneath ``vmap``'s tracers."""
    for leaf in jax.tree.leaves(tree):
        while isinstance(leaf, jax.core.Tracer):
            if isinstance(leaf, jax_ad.JVPTracer):
                return True
            leaf = getattr(leaf, "val", None)  # a vmap tracer wraps the value it batches
    return False


def _sequential(params: RNNParams, xs, carry, *, kernel, lengths, mask, reverse, time_major, unroll, remat,
                segment_length, return_carries, fused_backward, compute_dtype):
    """``rnn`` with ``method="scan"``: the oneDNN kernel where chosen and able, else ``lax.scan``."""
    if kernel != "scan":
        reason = kernels.unsupported(
            params, xs, carry, lengths=lengths, mask=mask, time_major=time_major,
            scan_options=_chosen_scan_options(unroll=unroll, remat=remat, segment_length=segment_length,
                                              return_carries=return_carries, fused_backward=fused_backward,
                                              compute_dtype=compute_dtype),
        )
        if reason is None and kernel == "auto":
            reason = kernels.slower_here(params)
            if reason is not None:  # the scan, silently: "auto" chose it
                kernel = "scan"
        if reason is None:
            lengths = _check_kernel_call(params, xs, carry, lengths, time_major)
            layout = dict(reverse=reverse, time_major=time_major)

            def on_kernel(cell, xs, carry, lengths):
                return kernels.run(params._replace(cell=cell), xs, carry, lengths=lengths, **layout)

            if kernel == "onednn" or kernels.trains_on_kernel(params):  # oneDNN's forward and backward
                return on_kernel(params.cell, xs, carry, lengths)

            def on_scan(cell, xs, carry, lengths):
                return _sequential(params._replace(cell=cell), xs, carry, kernel="scan", lengths=lengths, mask=None,
                                   unroll=1, remat=False, segment_length=None, return_carries=False,
                                   fused_backward=None, compute_dtype=None, **layout)

            # "auto" below the training threshold: oneDNN's forward, the scan's gradient
            # (see kernels.slower_here)
            return kernels.with_gradient_of(on_kernel, on_scan)(params.cell, xs, carry, lengths)
        elif kernel == "onednn":
            raise ValueError(f"kernel='onednn' cannot run this call: {reason}. Use kernel='auto' (the scan where "
                             "the kernel cannot run) or kernel='scan'.")
    family = params.family
    options = dict(lengths=lengths, mask=mask, reverse=reverse, time_major=time_major, unroll=unroll)
    splits = family.has_pointwise_split(params.cell)
    if fused_backward is None:
        fused_backward = (splits and family.output_size(params.cell) < FUSED_BACKWARD_BELOW_HIDDEN
                          and family.step not in _PLAIN_AUTODIFF_BY_DEFAULT)
    if fused_backward and splits and remat is False and not return_carries:
        if segment_length is not None:
            raise ValueError(f"segment_length is only for remat='sqrt', got remat={remat!r}.")
        return unroll_cell(params.cell, carry, xs, cell=family, compute_dtype=compute_dtype, **options)
    if compute_dtype is None:
        step = functools.partial(family.step, params.cell)
    else:
        step = split_step(params.cell, compute_dtype, cell=family)
    return _unroll_fn(step, carry, xs, remat=remat, segment_length=segment_length,
                      return_carries=return_carries, **options)


def _check_kernel_call(params: RNNParams, xs, carry, lengths, time_major: bool):
    """The scan's static checks for a call the kernel runs (same messages); the checked lengths."""
    batch_shape = _batch_shape(xs, time_major)
    x = jax.ShapeDtypeStruct(batch_shape + (xs.shape[-1],), xs.dtype)
    _check_step_types(functools.partial(params.family.step, params.cell), carry, x)
    time = xs.shape[0] if time_major else xs.shape[-2]
    return None if lengths is None else check_lengths(lengths, batch_shape, time)


# ``rnn``'s options that configure the sequential scan, at their defaults.
_SCAN_DEFAULTS = dict(unroll=1, remat=False, segment_length=None, return_carries=False, fused_backward=None,
                      compute_dtype=None)


def _chosen_scan_options(**options) -> list[str]:
    """The names of the scan's options set away from their defaults (``unroll=True`` included)."""
    return [name for name, value in options.items()
            if not (value is _SCAN_DEFAULTS[name] or (type(value) is int and value == _SCAN_DEFAULTS[name]))]


def _check_scan_options(method, **options) -> None:
    chosen = [f"{name}={value!r}" for name, value in options.items() if value is not _SCAN_DEFAULTS[name]
              and value != _SCAN_DEFAULTS[name]]
    if chosen:
        raise ValueError(f"{', '.join(chosen)} configure the sequential scan; method={method.name!r} does not "
                         "use them: drop them, or use method='scan'.")


_unroll_fn = unroll  # ``rnn`` and friends take an ``unroll=`` factor that shadows the function.


# --------------------------------------------------------------------------- bidirectional


@dataclasses.dataclass(frozen=True)
class Merge:
    """How a bidirectional layer combines its two directions: ``concat``, ``sum`` or ``mean``."""

    name: str

    def __post_init__(self):
        if self.name not in ("concat", "sum", "mean"):
            raise ValueError(f"Expected merge in ['concat', 'mean', 'sum'], got {self.name!r}.")

    def __call__(self, forward: jax.Array, backward: jax.Array) -> jax.Array:
        if self.name == "concat":
            return jnp.concatenate([forward, backward], axis=-1)
        if self.name == "sum":
            return forward + backward
        return (forward + backward) / 2

    def output_size(self, hidden_size: int) -> int:
        return 2 * hidden_size if self.name == "concat" else hidden_size


jax.tree_util.register_static(Merge)


class BidirectionalParams(NamedTuple):
    """A forward and a backward layer over the same inputs, merged per step."""

    forward: RNNParams
    backward: RNNParams
    merge: Merge  # static pytree metadata


def init_bidirectional(
    key: jax.Array,
    cell: Family,
    input_size: int,
    hidden_size: int,
    *,
    merge: str = "concat",
    learned_initial: bool = False,
    **cell_kwargs: Any,
) -> BidirectionalParams:
    """Initialise a bidirectional layer (two independent layers, one key each).

    >>> params = init_bidirectional(jax.random.key(0), "lstm", 3, 4, merge="sum")
    >>> params.merge.output_size(4)
    4
    """
    k_f, k_b = jax.random.split(key)
    make = functools.partial(
        init_rnn, cell=cell, input_size=input_size, hidden_size=hidden_size,
        learned_initial=learned_initial, **cell_kwargs,
    )
    return BidirectionalParams(forward=make(k_f), backward=make(k_b), merge=Merge(merge))


def bidirectional(
    params: BidirectionalParams,
    xs: jax.Array,
    *,
    carry: Any = None,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    time_major: bool = False,
    unroll: Union[int, bool] = 1,
    remat: Any = False,
    segment_length: Optional[int] = None,
    fused_backward: Optional[bool] = None,
    compute_dtype: Any = None,
    method: Any = "scan",
    kernel: str = "auto",
):
    """Bidirectional layer (Schuster & Paliwal 1997): ``y_t = merge(h→_t, h←_t)``.

    The backward direction starts at each sequence's own last valid step (see ``unroll``), so
    padded batches give the same valid outputs as the sequences run one by one. The options mean
    what they mean for ``rnn``, direction by direction (each direction its own kernel call or
    scan: oneDNN's bidirectional primitive took longer than its two directions one after the
    other, 153 ms against 2 × 59 ms for an LSTM at B, T, D, H = 32, 256, 64, 256).

    Args:
      carry: ``(forward_carry, backward_carry)`` or ``None`` (learned or zero initial states).

    Returns:
      ``((forward_final, backward_final), ys)``; ``backward_final`` is the backward state after
      step 0. ``ys`` is ``(*batch, T, 2H)`` for concat, ``(*batch, T, H)`` for sum and mean.
    """
    finals, (fwd, bwd) = _bidirectional_directions(
        params, xs, carry=carry, lengths=lengths, mask=mask, time_major=time_major, unroll=unroll, remat=remat,
        segment_length=segment_length, fused_backward=fused_backward, compute_dtype=compute_dtype, method=method,
        kernel=kernel,
    )
    return finals, params.merge(fwd, bwd)


def _bidirectional_directions(params: BidirectionalParams, xs: jax.Array, *, carry: Any, **options: Any):
    """``bidirectional`` before the merge: ``((fwd_final, bwd_final), (fwd_ys, bwd_ys))``."""
    if not isinstance(params, BidirectionalParams):
        raise ValueError(f"bidirectional expects BidirectionalParams, got {type(params).__name__}.")
    if carry is None:
        carry = (None, None)
    elif not (isinstance(carry, tuple) and len(carry) == 2):
        raise ValueError(f"Expected carry as a (forward, backward) pair, got {type(carry).__name__}.")
    fwd_final, fwd = rnn(params.forward, xs, carry=carry[0], **options)
    bwd_final, bwd = rnn(params.backward, xs, carry=carry[1], reverse=True, **options)
    return (fwd_final, bwd_final), (fwd, bwd)


# --------------------------------------------------------------------------- deep stacks


class StackParams(NamedTuple):
    """A deep RNN: layers applied in order, each an ``RNNParams`` or ``BidirectionalParams``."""

    layers: tuple  # of RNNParams | BidirectionalParams


def _per_layer(value: Any, num_layers: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f"Expected {name} for each of the {num_layers} layers, got {len(value)}.")
        return list(value)
    return [value] * num_layers


def _check_layer(layer: Any, fn: str) -> None:
    if not isinstance(layer, (RNNParams, BidirectionalParams)):
        raise ValueError(f"{fn} expects RNNParams or BidirectionalParams, got {type(layer).__name__}.")


def layer_output_size(layer: Union[RNNParams, BidirectionalParams]) -> int:
    """Feature size of a layer's outputs."""
    _check_layer(layer, "layer_output_size")
    if isinstance(layer, BidirectionalParams):
        return layer.merge.output_size(_family_size(layer.forward, "output"))
    return _family_size(layer, "output")


def layer_input_size(layer: Union[RNNParams, BidirectionalParams]) -> int:
    """Feature size a layer expects."""
    _check_layer(layer, "layer_input_size")
    if isinstance(layer, BidirectionalParams):
        return _family_size(layer.forward, "input")
    return _family_size(layer, "input")


def _family_size(layer: RNNParams, which: str) -> int:
    _check_rnn_params(layer, f"layer_{which}_size")
    size = layer.family.input_size if which == "input" else layer.family.output_size
    return size(layer.cell)


def init_stack(
    key: jax.Array,
    input_size: int,
    hidden_sizes: Sequence[int],
    *,
    cell: Union[Family, Sequence[Family]] = "lstm",
    bidirectional: Union[bool, Sequence[bool]] = False,
    merge: str = "concat",
    learned_initial: bool = False,
    cell_kwargs: Union[dict, Sequence[dict], None] = None,
) -> StackParams:
    """Initialise a deep RNN with ``len(hidden_sizes)`` layers.

    Args:
      key: PRNG key, split once per layer.
      input_size: D of the first layer.
      hidden_sizes: H per layer.
      cell: one family for every layer, or one per layer (e.g. ``["gru", "lstm"]``).
      bidirectional: for every layer, or per layer.
      merge: how bidirectional layers combine directions (sets the next layer's input size).
      learned_initial: trainable initial states in every layer.
      cell_kwargs: options for the families' ``init``, one dict for all layers or one per layer.

    >>> params = init_stack(jax.random.key(0), 3, [8, 8], cell=["gru", "lstm"], bidirectional=True)
    >>> [layer_output_size(layer) for layer in params.layers]
    [16, 16]
    """
    if isinstance(hidden_sizes, int) or len(hidden_sizes) == 0:
        raise ValueError(f"Expected a non-empty sequence of hidden sizes, got {hidden_sizes!r}.")
    num_layers = len(hidden_sizes)
    families = _per_layer(cell, num_layers, "cell")
    bidis = _per_layer(bidirectional, num_layers, "bidirectional")
    options = _per_layer({} if cell_kwargs is None else cell_kwargs, num_layers, "cell_kwargs")
    keys = jax.random.split(key, num_layers)
    layers, size = [], input_size
    for k, family, hidden, bidi, opts in zip(keys, families, hidden_sizes, bidis, options):
        hidden = check_positive_int(hidden, "hidden size")
        if bidi:
            layer = init_bidirectional(
                k, family, size, hidden, merge=merge, learned_initial=learned_initial, **opts
            )
        else:
            layer = init_rnn(k, family, size, hidden, learned_initial=learned_initial, **opts)
        layers.append(layer)
        size = layer_output_size(layer)
    return StackParams(layers=tuple(layers))


def _check_residual(params: StackParams) -> None:
    for index, layer in enumerate(params.layers[1:], start=1):
        if layer_input_size(layer) != layer_output_size(layer):
            raise ValueError(
                f"Residual connections need equal input and output sizes in layers 1..; layer "
                f"{index} maps {layer_input_size(layer)} features to {layer_output_size(layer)}."
            )


def dropout(key: jax.Array, xs: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, xs.shape)
    return jnp.where(keep, xs / (1.0 - rate), jnp.zeros_like(xs)).astype(xs.dtype)


def stack(
    params: StackParams,
    xs: jax.Array,
    *,
    carries: Optional[Sequence[Any]] = None,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    residual: bool = False,
    dropout_rate: float = 0.0,
    key: Optional[jax.Array] = None,
    time_major: bool = False,
    unroll: Union[int, bool] = 1,
    remat: Any = False,
    segment_length: Optional[int] = None,
    fused_backward: Optional[bool] = None,
    compute_dtype: Any = None,
    method: Any = "scan",
    kernel: str = "auto",
):
    """Run a deep RNN: ``s^(l)_t = cell_l(s^(l)_{t-1}, s^(l-1)_t)``, ``s^(0) = x`` (Graves 2013).

    Each layer runs over the whole sequence before the next (one scan or kernel call per direction and layer).

    Args:
      carries: one initial carry per layer (a pair for bidirectional layers; ``None`` entries
        use the learned or zero state), or ``None`` for all.
      residual: add each layer's input to its output for layers 1.. (Wu et al. 2016); those
        layers need equal input and output sizes. The first layer changes the feature size and
        gets no residual.
      dropout_rate: dropout on the outputs of every layer but the last, a fresh mask per
        element and step (as PyTorch's ``nn.LSTM(dropout=...)``); needs ``key``. Off by default,
        and without effect on a one-layer stack (there is no gap between layers). The key is
        split once into one key per gap.

    Returns:
      ``(final_carries, ys)``: a tuple with each layer's final carry, and the top layer's
      outputs ``(*batch, T, H_top)`` (zero at masked steps).
    """
    finals, hs, _ = _run_stack(
        params, xs, carries=carries, residual=residual, dropout_rate=dropout_rate, key=key,
        lengths=lengths, mask=mask, time_major=time_major, unroll=unroll, remat=remat,
        segment_length=segment_length, fused_backward=fused_backward, compute_dtype=compute_dtype, method=method,
        kernel=kernel,
    )
    return finals, hs


def _run_stack(params: StackParams, xs: jax.Array, *, carries: Optional[Sequence[Any]], residual: bool,
               dropout_rate: float, key: Optional[jax.Array], **options: Any):
    """``stack``, also returning the top layer's own outputs (before residual), per direction:
    ``ys`` for a unidirectional top layer, ``(forward_ys, backward_ys)`` for a bidirectional one."""
    if not isinstance(params, StackParams):
        raise ValueError(f"stack expects StackParams, got {type(params).__name__}.")
    num_layers = len(params.layers)
    if carries is None:
        carries = (None,) * num_layers
    elif len(carries) != num_layers:
        raise ValueError(f"Expected one initial carry per layer ({num_layers}), got {len(carries)}.")
    if residual:
        _check_residual(params)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"Expected dropout_rate in [0, 1), got {dropout_rate!r}.")
    use_dropout = dropout_rate > 0.0 and num_layers > 1
    if use_dropout and key is None:
        raise ValueError("dropout_rate > 0 needs a PRNG key: pass key=jax.random.key(...).")
    keys = jax.random.split(key, num_layers - 1) if use_dropout else [None] * (num_layers - 1)

    finals, hs = [], xs
    for index, (layer, carry) in enumerate(zip(params.layers, carries)):
        if isinstance(layer, BidirectionalParams):
            final, own = _bidirectional_directions(layer, hs, carry=carry, **options)
            out = layer.merge(*own)
        else:
            _check_layer(layer, "stack")
            final, own = rnn(layer, hs, carry=carry, **options)
            out = own
        if residual and index > 0:
            out = out + hs
        if use_dropout and index < num_layers - 1:
            out = dropout(keys[index], out, dropout_rate)
        finals.append(final)
        hs = out
    return tuple(finals), hs, own


def stack_initial_carries(params: StackParams, batch_shape: tuple[int, ...] = ()) -> tuple:
    """Each layer's starting carry (learned or zeros) for a unidirectional stack."""
    return tuple(rnn_initial_carry(layer, batch_shape) for layer in _unidirectional(params).layers)


def _unidirectional(params: StackParams) -> StackParams:
    if not isinstance(params, StackParams):
        raise ValueError(f"Expected StackParams, got {type(params).__name__}.")
    for index, layer in enumerate(params.layers):
        if isinstance(layer, BidirectionalParams):
            raise ValueError(
                f"Stepping a stack one time step at a time needs unidirectional layers; "
                f"layer {index} is bidirectional."
            )
    return params


def stack_step(
    params: StackParams, carries: Sequence[Any], x: jax.Array, *, residual: bool = False
) -> tuple[tuple, jax.Array]:
    """One time step of a unidirectional deep stack: a step function like a cell's.

    ``stack_step(params, carries, x) -> (carries, y)`` composes the layers' ``step`` functions,
    so a whole stack can drive autoregressive generation; ``stack`` over a sequence gives the
    same outputs.
    """
    _unidirectional(params)
    if residual:
        _check_residual(params)
    if len(carries) != len(params.layers):
        raise ValueError(f"Expected one carry per layer ({len(params.layers)}), got {len(carries)}.")
    new_carries, h = [], x
    for index, (layer, carry) in enumerate(zip(params.layers, carries)):
        carry, out = layer.family.step(layer.cell, carry, h)
        h = out + h if residual and index > 0 else out
        new_carries.append(carry)
    return tuple(new_carries), h


# --------------------------------------------------------------------------- embeddings and heads


class EmbeddingParams(NamedTuple):
    """A learned lookup table."""

    table: jax.Array  # (vocab_size, features)


def init_embedding(key: jax.Array, vocab_size: int, features: int, *, dtype=jnp.float32) -> EmbeddingParams:
    """Embedding table with N(0, 1) entries (as ``flax.linen.Embed`` / ``torch.nn.Embedding``)."""
    vocab_size = check_positive_int(vocab_size, "vocab_size")
    features = check_positive_int(features, "features")
    return EmbeddingParams(table=jax.random.normal(key, (vocab_size, features), dtype))


def _check_ids(ids: Any, num_classes: int, what: str) -> jax.Array:
    ids = jnp.asarray(check_array(ids, "ids"))
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"Expected integer token ids, got dtype {ids.dtype}.")
    if not is_traced(ids) and ids.size:
        # NumPy, not jnp: under jit, jnp.min of constant ids (closed over) would be traced.
        low, high = int(np.min(np.asarray(ids))), int(np.max(np.asarray(ids)))
        if low < 0 or high >= num_classes:
            raise ValueError(f"Expected token ids in [0, {num_classes}) ({what}), got ids in [{low}, {high}].")
    return ids


def embed(params: EmbeddingParams, ids: jax.Array) -> jax.Array:
    """Look up ``ids`` (any integer shape) → ``(*ids.shape, features)``.

    Out-of-range ids raise when the ids are concrete; under ``jit`` they give NaN rows
    (``jnp.take``'s fill mode), never another token's vector.

    >>> params = init_embedding(jax.random.key(0), 5, 2)
    >>> embed(params, jnp.array([[0, 4]])).shape
    (1, 2, 2)
    """
    if not isinstance(params, EmbeddingParams):
        raise ValueError(f"embed expects EmbeddingParams, got {type(params).__name__}.")
    ids = _check_ids(ids, params.table.shape[0], "the vocabulary size")
    # jnp.take wraps negative ids numpy-style (-1 -> the last row); send them out of range instead.
    ids = jnp.where(ids < 0, jnp.iinfo(ids.dtype).max, ids)
    return jnp.take(params.table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def one_hot(ids: jax.Array, num_classes: int, *, dtype=jnp.float32) -> jax.Array:
    """One-hot encode integer ``ids`` → ``(*ids.shape, num_classes)``.

    Out-of-range ids raise when the ids are concrete; under ``jit`` they give all-zero rows
    (``jax.nn.one_hot``), never another class.

    >>> one_hot(jnp.array([2, 0]), 3).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    ids = _check_ids(ids, num_classes, "num_classes")
    return jax.nn.one_hot(ids, num_classes, dtype=dtype)


class DenseParams(NamedTuple):
    """An affine output head ``y = x @ w + b``."""

    w: jax.Array  # (in_features, out_features)
    b: jax.Array  # (out_features,)


def init_dense(
    key: jax.Array, in_features: int, out_features: int, *, init: Any = "lecun_normal", dtype=jnp.float32
) -> DenseParams:
    """Dense head with a Lecun-normal kernel (default) and zero bias."""
    in_features = check_positive_int(in_features, "in_features")
    out_features = check_positive_int(out_features, "out_features")
    w = initializers.get(init)(key, (in_features, out_features), dtype)
    return DenseParams(w=w, b=jnp.zeros((out_features,), dtype))


def dense(params: DenseParams, x: jax.Array) -> jax.Array:
    """``x @ w + b`` for ``x`` of shape ``(..., in_features)``."""
    if not isinstance(params, DenseParams):
        raise ValueError(f"dense expects DenseParams, got {type(params).__name__}.")
    check_array(x, "x")
    if x.ndim < 1 or x.shape[-1] != params.w.shape[0]:
        raise ValueError(
            f"Expected x with last dimension {params.w.shape[0]} (the head's in_features), "
            f"got shape {tuple(x.shape)}."
        )
    y = x @ params.w
    return y + jax.lax.broadcast_to_rank(params.b, y.ndim)  # explicit: strict rank promotion
