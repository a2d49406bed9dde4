"""``unroll``: the one time loop of the library, a ``lax.scan`` with every sequence option."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from recurrax import cells
from recurrax._checks import check_array, check_lengths

StepFn = Callable[[Any, Any], tuple[Any, Any]]


def sequence_mask(
    lengths: jax.Array, time: int, *, time_major: bool = False
) -> jax.Array:
    """Boolean mask of valid steps for right-padded sequences: ``mask[..., t] = t < lengths``.

    Args:
      lengths: integer array of shape ``batch``.
      time: T, the padded length.
      time_major: return ``(T, *batch)`` instead of ``(*batch, T)``.

    >>> sequence_mask(jnp.array([1, 3]), 3).tolist()
    [[True, False, False], [True, True, True]]
    """
    lengths = check_lengths(lengths, tuple(np.shape(lengths)), time)
    return _mask_from_lengths(lengths, time, time_major)


def _mask_from_lengths(lengths: jax.Array, time: int, time_major: bool) -> jax.Array:
    # Explicit dtype and rank, so this also runs under strict promotion (int32 lengths with x64).
    steps = jnp.arange(time)
    lengths = lengths.astype(steps.dtype)
    if time_major:
        return steps.reshape((time,) + (1,) * lengths.ndim) < lengths[None]
    return steps.reshape((1,) * lengths.ndim + (time,)) < lengths[..., None]


def _broadcast_mask(m: jax.Array, leaf: jax.Array, what: str) -> jax.Array:
    """Reshape a step mask ``batch`` to broadcast against ``leaf`` of shape ``(*batch, *rest)``."""
    if tuple(leaf.shape[: m.ndim]) != tuple(m.shape):
        raise ValueError(
            f"Expected every {what} leaf to start with the batch shape {tuple(m.shape)}, "
            f"got shape {tuple(leaf.shape)}."
        )
    return m.reshape(m.shape + (1,) * (leaf.ndim - m.ndim))


def unroll(
    step_fn: StepFn,
    carry: Any,
    xs: Optional[jax.Array],
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: Union[int, bool] = 1,
    remat: Union[bool, str, Callable[..., bool]] = False,
    return_carries: bool = False,
    length: Optional[int] = None,
    segment_length: Optional[int] = None,
    resets: Optional[jax.Array] = None,
    reset_carry: Any = None,
):
    """Run ``step_fn(carry, x_t) -> (carry, y_t)`` over the time axis of ``xs`` with ``lax.scan``.

    Layout: ``xs`` is ``(*batch, T, D)`` (time at axis -2; ``(T, D)`` is the unbatched case), or
    ``(T, *batch, D)`` with ``time_major=True``. Outputs come back in the same layout, the time
    axis right after the batch axes.

    Variable lengths: right-padded sequences with ``lengths`` (integers of shape ``batch``, each in
    ``[0, T]``; checked eagerly, or by a runtime callback under ``jit``) or a boolean ``mask`` of
    shape ``xs.shape[:-1]`` (any pattern of valid steps). At a masked step the carry is frozen
    (``jnp.where``) and the output is zero, so the final carry is each sequence's carry at its own
    last valid step, and valid outputs never depend on padding. The inputs at masked steps are
    replaced by zeros before the step sees them, so padding that holds NaN or inf cannot reach
    the gradients either (a zero cotangent times a NaN product would still be NaN).

    ``reverse=True`` scans from the last step to the first. With right padding this is
    length-aware for free: the steps ``t >= length`` come first and are masked, so each sequence's
    state starts changing at its own last valid step. Outputs stay aligned with the inputs.

    Args:
      step_fn: ``(carry, x_t) -> (carry, y_t)``, e.g. ``functools.partial(lstm.step, params)``.
      carry: initial carry; with a mask its leaves must be ``(*batch, ...)``, never broadcast.
      xs: inputs, or ``None`` to run ``length`` steps without inputs (``x_t`` is then ``None``,
        outputs are time-major, and lengths/mask are not available).
      lengths, mask: at most one of them.
      reverse: scan from T-1 down to 0.
      time_major: layout of ``xs`` and of the outputs.
      unroll: ``lax.scan``'s unroll factor (``True`` unrolls fully).
      remat: memory-bounded BPTT. ``True`` rematerialises each step in the backward pass
        (only the carries are stored), or a ``jax.checkpoint`` policy such as
        ``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``. ``"sqrt"`` checkpoints
        segments of ``segment_length`` steps (default ``ceil(√T)``): the forward pass keeps only
        the carries at segment boundaries, and the backward pass recomputes one segment at a
        time, so about ``T/S + S`` carries plus one segment's residuals are alive (Chen et al.
        2016; Gruslys et al. 2016). T need not divide by S: the last segment is padded with
        masked steps, which leave the carry unchanged. Gradients equal plain BPTT's.
      segment_length: S for ``remat="sqrt"``.
      resets: booleans shaped like the mask (``(*batch, T)``, or ``(T, *batch)`` with
        ``time_major``) marking steps that start a new sequence: the carry entering such a step
        is replaced by ``reset_carry`` (so no state, and no gradient, crosses the boundary).
        Several sequences can be packed into one row, or a stream continued across calls.
        A reset only acts at a valid step (a masked step keeps the carry as it was). Resets are
        in scan order: with ``reverse=True`` they mark each sequence's last step, where the
        backward scan enters it.
      reset_carry: the carry to restart from (leaves broadcast to the carry's shapes); default
        the initial ``carry``.
      return_carries: also return the carry after every step, stacked along time.
      length: number of steps when ``xs`` is ``None``.

    Returns:
      ``(final_carry, ys)``, or ``(final_carry, ys, carries)`` with ``return_carries=True``;
      ``ys`` and ``carries`` have the time axis placed as ``xs``'s.

    >>> import functools, jax, jax.numpy as jnp
    >>> from recurrax import gru
    >>> params = gru.init(jax.random.key(0), 3, 4)
    >>> xs = jnp.ones((2, 5, 3))                                   # (batch, time, features)
    >>> carry, ys = unroll(functools.partial(gru.step, params), gru.initial_carry(params, (2,)),
    ...                    xs, lengths=jnp.array([5, 2]))
    >>> ys.shape, bool((ys[1, 2:] == 0).all())
    ((2, 5, 4), True)
    """
    if xs is None:
        if length is None or length <= 0:
            raise ValueError(f"Expected a positive length when xs is None, got length={length!r}.")
        if lengths is not None or mask is not None:
            raise ValueError("lengths and mask need xs; got xs=None.")
        if not time_major:
            raise ValueError("With xs=None there are no batch axes to place time after: pass time_major=True.")
        time, batch_shape, xs_t, mask_t = length, None, None, None
    else:
        if length is not None:
            raise ValueError("length is only for xs=None; the time axis of xs gives the length.")
        time, batch_shape, xs_t, mask_t = _prepare(xs, lengths, mask, time_major)
        _check_step_types(step_fn, carry, xs_t[0])
    if resets is None:
        if reset_carry is not None:
            raise ValueError("reset_carry is only used with resets; got resets=None.")
        step_with_resets = step_fn
    else:
        if xs is None:
            raise ValueError("resets need xs (they are per step of its time axis); got xs=None.")
        resets_t = valid_steps(None, resets, batch_shape, time, time_major=time_major, name="resets")
        if not time_major:
            resets_t = jnp.moveaxis(resets_t, -1, 0)
        restart = _restart_carry(carry if reset_carry is None else reset_carry, carry)
        xs_t = (xs_t, resets_t)

        def step_with_resets(c, inputs):
            x_t, r_t = inputs
            c = jax.tree.map(lambda s, c: jnp.where(_broadcast_mask(r_t, c, "carry"), s, c), restart, c)
            return step_fn(c, x_t)

    def body(c, inputs):
        x_t, m_t = inputs
        new_c, y = _freeze(m_t, *step_with_resets(c, x_t), c)
        return new_c, ((y, new_c) if return_carries else y)

    if remat == "sqrt":
        final, outs = _segmented_scan(body, carry, xs_t, mask_t, time, batch_shape, reverse, unroll, segment_length)
        return _finish(final, outs, batch_shape, time_major, return_carries)
    if segment_length is not None:
        raise ValueError(f"segment_length is only for remat='sqrt', got remat={remat!r}.")
    if remat is True:
        body = jax.checkpoint(body, prevent_cse=False)
    elif callable(remat):
        body = jax.checkpoint(body, policy=remat, prevent_cse=False)
    elif remat is not False:
        raise ValueError(f"Expected remat to be a bool, 'sqrt' or a jax.checkpoint policy, got {remat!r}.")

    final, outs = jax.lax.scan(
        body, carry, (xs_t, mask_t), length=time, reverse=reverse, unroll=unroll
    )
    return _finish(final, outs, batch_shape, time_major, return_carries)


def _restart_carry(reset_carry, carry):
    """``reset_carry`` broadcast to the carry's leaf shapes, with a clear error when it cannot be."""
    if jax.tree.structure(reset_carry) != jax.tree.structure(carry):
        raise ValueError(
            f"Expected reset_carry with the carry's structure {jax.tree.structure(carry)}, "
            f"got {jax.tree.structure(reset_carry)}."
        )

    def broadcast(s, c):
        try:
            return jnp.broadcast_to(s, jnp.shape(c)).astype(jnp.result_type(c))
        except ValueError:
            raise ValueError(
                f"Expected reset_carry leaves that broadcast to the carry's {tuple(jnp.shape(c))}, "
                f"got shape {tuple(jnp.shape(s))}."
            ) from None

    return jax.tree.map(broadcast, reset_carry, carry)


def _finish(final, outs, batch_shape, time_major, return_carries):
    if not time_major:
        outs = _batch_major(outs, batch_shape)
    if return_carries:
        ys, carries = outs
        return final, ys, carries
    return final, outs


def _segmented_scan(body, carry, xs_t, mask_t, time, batch_shape, reverse, unroll, segment_length):
    """``lax.scan(body)`` as an outer scan over checkpointed segments of S steps (√T remat)."""
    if xs_t is None:
        raise ValueError("remat='sqrt' needs xs (the segments are cut along its time axis).")
    size = math.isqrt(time - 1) + 1 if segment_length is None else segment_length
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"Expected segment_length to be a positive integer, got {segment_length!r}.")
    num_segments = -(-time // size)
    pad = num_segments * size - time
    if pad:
        # Padded steps are masked: the carry passes through them unchanged, in either direction.
        if mask_t is None:
            mask_t = jnp.ones((time,) + batch_shape, bool)
        mask_t = jnp.concatenate([mask_t, jnp.zeros((pad,) + batch_shape, bool)])
        xs_t = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]), xs_t)

    def segments(a):
        return jax.tree.map(lambda a: a.reshape((num_segments, size) + a.shape[1:]), a)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def segment(c, inputs):
        return jax.lax.scan(body, c, inputs, reverse=reverse, unroll=unroll)

    final, outs = jax.lax.scan(segment, carry, (segments(xs_t), segments(mask_t)), reverse=reverse)
    outs = jax.tree.map(lambda v: v.reshape((num_segments * size,) + v.shape[2:])[:time], outs)
    return final, outs


def unroll_cell(
    params: Any,
    carry: Any,
    xs: jax.Array,
    *,
    cell: Any,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: Union[int, bool] = 1,
    compute_dtype: Any = None,
):
    """``unroll`` of a cell given by its params, with a hand-fused backward pass.

    ``cell`` is the family of ``params`` (a registered name such as ``"lstm"``, or a family
    object). Same forward computation, layout and masking semantics as
    ``unroll(functools.partial(family.step, params), carry, xs, ...)``. The difference is the
    gradient: for cells whose step is ``pointwise(params, carry, x @ w_x, h @ w_h)`` (Elman,
    LSTM, reset-after GRU, or a user family declaring ``pointwise``; see ``recurrax.cells``) a
    ``jax.custom_vjp`` runs a reverse
    scan that only does what must be sequential, per step

        δz_t = vjp of pointwise at step t,   δh_{t-1} += δz^h_t @ w_hᵀ,

    and afterwards computes the weight gradients as two large matrix products over all steps
    and sequences, ``δw_x = Σ_t x_tᵀ δz^x_t`` and ``δw_h = Σ_t h_{t-1}ᵀ δz^h_t`` (the cuDNN
    scheme, Appleyard et al. 2016), instead of accumulating small per-step products in the scan.
    Stored per step: the carry before the step and the two products (their sum, for cells
    that only read the sum).

    ``compute_dtype`` (e.g. ``jnp.bfloat16``): mixed precision. Every matrix product, forward
    and backward, takes its operands in that dtype and accumulates in the carry's dtype
    (``preferred_element_type``); the carry, the gates and the weight gradients stay in the
    params' dtype. ``None``: everything in the params' dtype.

    Limitation: a ``custom_vjp`` function supports reverse mode only; for forward-mode
    derivatives (``jax.jvp``, ``jax.jacfwd``) use ``unroll`` with the cell's ``step``.
    """
    family = cells.resolve_family(cell)
    if not family.has_pointwise_split(params):
        raise ValueError(
            f"unroll_cell needs a cell whose step splits into products and a pointwise part; "
            f"{family.name} with {type(params).__name__} here does not (e.g. a reset-before GRU or a "
            "reservoir): use unroll with its step."
        )
    time, batch_shape, xs_t, mask_t = _prepare(xs, lengths, mask, time_major)
    _check_step_types(functools.partial(family.step, params), carry, xs_t[0])  # static checks, no FLOPs
    final, ys = _fused_scan(family, params, carry, xs_t, mask_t, reverse, unroll,
                            _check_compute_dtype(compute_dtype))
    return final, (ys if time_major else _batch_major(ys, batch_shape))


def _check_compute_dtype(compute_dtype: Any) -> Any:
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise ValueError(f"Expected compute_dtype to be a floating dtype or None, got {compute_dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"Expected compute_dtype to be a floating dtype or None, got {dtype}.")
    return dtype


def _matmul(compute_dtype: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``a @ b``; with a ``compute_dtype``, on operands cast to it, accumulated in ``a``'s dtype."""
    if compute_dtype is None:
        return jnp.matmul
    return lambda a, b: jnp.matmul(a.astype(compute_dtype), b.astype(compute_dtype), preferred_element_type=a.dtype)


def _outer_sum(a: jax.Array, b: jax.Array, compute_dtype: Any) -> jax.Array:
    """``Σ a_t ⊗ b_t`` over time and batch: ``(T, *batch, F)``, ``(T, *batch, G) -> (F, G)``.

    One contraction over every leading axis rather than a product of ``(T·batch, F)`` rows: a
    batch split over devices (``make_train_step(mesh=...)``) stays split, each device sums its
    own rows and XLA adds one all-reduce, where merging time and batch into rows made it gather
    the whole batch's activations on every device.
    """
    lead = tuple(range(a.ndim - 1))
    if compute_dtype is None:
        return jnp.tensordot(a, b, axes=(lead, lead))
    return jnp.tensordot(a.astype(compute_dtype), b.astype(compute_dtype), axes=(lead, lead),
                         preferred_element_type=a.dtype)


def _cast(w: jax.Array, compute_dtype: Any) -> jax.Array:
    """A kernel in ``compute_dtype``, cast once outside the scan rather than at every step."""
    return w if compute_dtype is None else w.astype(compute_dtype)


def split_step(params: Any, compute_dtype: Any = None, *, cell: Any) -> StepFn:
    """The cell's step as ``pointwise(params, c, *products(c, x))``: ``step``'s values, products in
    ``compute_dtype`` (the plain-autodiff counterpart of ``unroll_cell``'s mixed precision)."""
    family = cells.resolve_family(cell)
    if not family.has_pointwise_split(params):
        raise ValueError(
            f"Mixed precision needs a cell whose step splits into products and a pointwise part; "
            f"{family.name} with {type(params).__name__} here does not (e.g. a reset-before GRU or a reservoir)."
        )
    products, pointwise = _pointwise_on_products(family, params, _check_compute_dtype(compute_dtype))

    def step(c, x):
        jax.eval_shape(family.step, params, c, x)  # the cell's own static checks, no FLOPs
        return pointwise(params, c, *products(c, x))

    return step


def _pointwise_on_products(family, params, compute_dtype=None):
    """The family's pointwise part as a function of the stored products.

    Families whose pointwise part reads the products only through ``zx + zh`` (``SUMS_PRODUCTS``:
    Elman, LSTM) store and differentiate the one sum; the reset-after GRU needs ``zx`` and ``zh``
    apart (``r ⊙ zh_n``). Returns ``(products(c, x), pointwise(rest, c, *products))``; the
    products are formed in ``compute_dtype`` (see ``unroll_cell``).
    """
    missing = [name for name in ("w_x", "w_h") if not hasattr(params, name)]
    if missing:
        raise ValueError(
            f"Cell {family.name!r} declares pointwise, so the fused backward pass computes x @ params.w_x "
            f"and carry.h @ params.w_h itself: its params need fields w_x and w_h; "
            f"{type(params).__name__} has no {', '.join(missing)}."
        )
    matmul = _matmul(compute_dtype)

    def h_of(c):
        if not hasattr(c, "h"):
            raise ValueError(
                f"Cell {family.name!r} declares pointwise, so the fused backward pass computes "
                f"carry.h @ params.w_h itself: its carry needs a field h; {type(c).__name__} has none."
            )
        return c.h

    if family.sums_products:
        # One product [x, h] @ [w_x; w_h] per step instead of two (the stacked kernel is built
        # once, outside the scan): measured on XLA:CPU, 10% faster forward at H=256, 8% at H=64,
        # equal at H=1024. zh = 0 is a constant that XLA folds away: x + broadcast(0) -> x.
        w = _cast(jnp.concatenate([params.w_x, params.w_h], axis=0), compute_dtype)
        return (
            lambda c, x: (matmul(jnp.concatenate([x, h_of(c)], axis=-1), w),),
            lambda rest, c, z: family.pointwise(rest, c, z, jnp.zeros_like(z)),
        )
    w_x, w_h = _cast(params.w_x, compute_dtype), _cast(params.w_h, compute_dtype)
    return (lambda c, x: (matmul(x, w_x), matmul(h_of(c), w_h))), family.pointwise


def _fused_forward(family, params, carry, xs_t, mask_t, reverse, unroll, compute_dtype, save):
    products, pointwise = _pointwise_on_products(family, params, compute_dtype)

    def body(c, inputs):
        x, m = inputs
        z = products(c, x)
        new_c, y = _freeze(m, *pointwise(params, c, *z), c)
        return new_c, (y, (c, z) if save else None)

    final, (ys, saved) = jax.lax.scan(body, carry, (xs_t, mask_t), reverse=reverse, unroll=unroll)
    return (final, ys), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5, 6, 7))
def _fused_scan(family, params, carry, xs_t, mask_t, reverse, unroll, compute_dtype):
    return _fused_forward(family, params, carry, xs_t, mask_t, reverse, unroll, compute_dtype, save=False)[0]


def _fused_scan_fwd(family, params, carry, xs_t, mask_t, reverse, unroll, compute_dtype):
    out, saved = _fused_forward(family, params, carry, xs_t, mask_t, reverse, unroll, compute_dtype, save=True)
    return out, (params, xs_t, mask_t, saved)


def _fused_scan_bwd(family, reverse, unroll, compute_dtype, residuals, cotangents):
    params, xs_t, mask_t, (prev, products) = residuals
    d_final, d_ys = cotangents
    _, pointwise = _pointwise_on_products(family, params, compute_dtype)
    matmul = _matmul(compute_dtype)
    rest = params._replace(w_x=None, w_h=None)  # what pointwise differentiates
    w_h_t = _cast(params.w_h.T, compute_dtype)  # transposed once, outside the loop

    def body(d_c, inputs):
        c, z, m, dy = inputs
        _, vjp = jax.vjp(lambda r, c, *z: _freeze(m, *pointwise(r, c, *z), c), rest, c, *z)
        d_rest, d_prev, *d_z = vjp((d_c, dy))
        d_prev = d_prev._replace(h=d_prev.h + matmul(d_z[-1], w_h_t))
        return d_prev, (d_rest, d_z)

    d_carry, (d_rest, d_z) = jax.lax.scan(
        body, d_final, (prev, products, mask_t, d_ys), reverse=not reverse, unroll=unroll
    )
    d_zx, d_zh = d_z[0], d_z[-1]  # the same array when the products are summed
    d_params = jax.tree.map(lambda g: g.sum(0), d_rest)._replace(
        w_x=_outer_sum(xs_t, d_zx, compute_dtype), w_h=_outer_sum(prev.h, d_zh, compute_dtype)
    )
    return d_params, d_carry, matmul(d_zx, params.w_x.T), None


_fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)


def _prepare(xs, lengths, mask, time_major):
    """Validate ``xs`` and its lengths/mask; return ``(T, batch_shape, xs_t, mask_t)`` time-major."""
    check_array(xs, "xs")
    if xs.ndim < 2:
        raise ValueError(
            "Expected xs of rank >= 2 with shape (*batch, time, features) "
            f"(or (time, *batch, features) with time_major=True), got shape {tuple(xs.shape)}."
        )
    if time_major:
        time, batch_shape, xs_t = xs.shape[0], tuple(xs.shape[1:-1]), xs
    else:
        time, batch_shape, xs_t = xs.shape[-2], tuple(xs.shape[:-2]), jnp.moveaxis(xs, -2, 0)
    if time == 0:
        raise ValueError(f"Expected a non-empty time axis, got xs of shape {tuple(xs.shape)} with 0 steps.")
    mask_t = _time_major_mask(lengths, mask, xs, time, batch_shape, time_major)
    if mask_t is not None:
        # Zero the padding before any step reads it: the step's products with NaN/inf garbage
        # would otherwise meet the mask's zero cotangent in the backward pass (0 · NaN = NaN).
        xs_t = jnp.where(mask_t[..., None], xs_t, jnp.zeros((), xs_t.dtype))
    return time, batch_shape, xs_t, mask_t


def _dtype_message(carry_dtype, x_dtype, new_dtype=None) -> str:
    if new_dtype is not None and new_dtype != x_dtype:  # not xs's promotion: the step's own cast
        return (
            f"The step changed the carry's dtype: {carry_dtype} in, {new_dtype} out; a step must "
            f"return its carry in the dtypes it received (xs are {x_dtype})."
        )
    turned = "" if new_dtype is None else f", which the step turned into {new_dtype}"
    return (
        f"Expected xs in the carry's dtype {carry_dtype}, got {x_dtype}{turned}: cast xs to {carry_dtype} "
        f"(xs.astype(jnp.{carry_dtype})), or the params and carry to {x_dtype}."
    )


def _check_step_types(step_fn: StepFn, carry: Any, x: jax.Array) -> None:
    """The step returns a carry of the structure, shapes and dtypes it received (on abstract values).

    ``lax.scan`` would refuse otherwise, with a message that names neither the carry nor the
    cause; the commonest cause is float64 inputs into float32 params (with ``jax_enable_x64``).
    """
    carry_dtypes = {jnp.result_type(leaf) for leaf in jax.tree.leaves(carry)}
    try:
        new_carry, _ = jax.eval_shape(step_fn, carry, x)
    except jax.dtypes.TypePromotionError as error:  # strict promotion: the step cannot mix them
        if x.dtype in carry_dtypes or len(carry_dtypes) != 1:
            raise
        raise ValueError(_dtype_message(carry_dtypes.pop(), x.dtype) + f" ({error})") from None
    if jax.tree.structure(new_carry) != jax.tree.structure(carry):
        raise ValueError(
            f"Expected the step to return a carry of the structure it received, {jax.tree.structure(carry)}, "
            f"got {jax.tree.structure(new_carry)}."
        )
    for before, after in zip(jax.tree.leaves(carry), jax.tree.leaves(new_carry)):
        before_dtype, before_shape = jnp.result_type(before), jnp.shape(before)
        if after.dtype != before_dtype:
            raise ValueError(_dtype_message(before_dtype, x.dtype, after.dtype))
        if tuple(after.shape) != tuple(before_shape):
            raise ValueError(
                f"The step turned a carry leaf of shape {tuple(before_shape)} into {tuple(after.shape)}: "
                "a step must keep the carry's shapes (is the carry's batch shape xs's?)."
            )


def _batch_major(outs, batch_shape):
    """Move the leading time axis of every output leaf to just after the batch axes."""
    return jax.tree.map(lambda v: jnp.moveaxis(v, 0, len(batch_shape)), outs)


def _freeze(m_t, new_c, y, old_c):
    """Masked step: keep the old carry and output zeros where ``m_t`` (shape batch) is False."""
    if m_t is None:
        return new_c, y
    new_c = jax.tree.map(lambda n, o: jnp.where(_broadcast_mask(m_t, n, "carry"), n, o), new_c, old_c)
    y = jax.tree.map(lambda v: jnp.where(_broadcast_mask(m_t, v, "output"), v, jnp.zeros_like(v)), y)
    return new_c, y


def valid_steps(
    lengths: Optional[jax.Array],
    mask: Optional[jax.Array],
    batch_shape: tuple[int, ...],
    time: int,
    *,
    time_major: bool,
    source: str = "xs",
    name: str = "mask",
) -> Optional[jax.Array]:
    """The validated mask of valid steps from ``lengths`` or ``mask`` (at most one), or ``None``.

    The mask is ``(*batch, T)``, or ``(T, *batch)`` with ``time_major``, in and out; ``source``
    names the array whose per-step shape it must have and ``name`` the flags (for the error
    message; ``unroll`` also validates its ``resets`` here).
    """
    if lengths is not None and mask is not None:
        raise ValueError("Pass lengths or mask, not both.")
    if lengths is not None:
        return _mask_from_lengths(check_lengths(lengths, batch_shape, time), time, time_major)
    if mask is None:
        return None
    check_array(mask, name)
    expected = (time,) + tuple(batch_shape) if time_major else tuple(batch_shape) + (time,)
    if tuple(mask.shape) != expected:
        layout = "(time, *batch)" if time_major else "(*batch, time)"
        raise ValueError(
            f"Expected {name} with shape {expected} {layout}, i.e. {source}.shape[:-1], "
            f"got shape {tuple(mask.shape)}."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"Expected a boolean {name}, got dtype {mask.dtype}.")
    return mask


def _time_major_mask(lengths, mask, xs, time, batch_shape, time_major) -> Optional[jax.Array]:
    """The validity mask as ``(T, *batch)`` booleans, or ``None`` when every step is valid."""
    mask = valid_steps(lengths, mask, batch_shape, time, time_major=time_major)
    return mask if mask is None or time_major else jnp.moveaxis(mask, -1, 0)
