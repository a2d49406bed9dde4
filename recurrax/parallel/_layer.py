"""Evaluation methods for a layer's time loop, and ``solve``: a layer's sequence by one of them."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from recurrax._rnn_params import _batch_shape, _check_rnn_params, rnn_initial_carry
from recurrax._unroll import _check_step_types, _prepare
from recurrax.parallel._newton import Problem, default_tolerance, solve_trajectory
from recurrax.parallel._scans import linear_scan, log_linear_scan

METHODS = ("scan", "associative", "deer", "quasi_deer", "elk")
_NEWTON = {"deer": "full", "quasi_deer": "diagonal", "elk": "diagonal"}


@dataclasses.dataclass(frozen=True)
class Method:
    """How a layer evaluates its time loop (hashable: ``jit`` and the layer treat it as static).

    - ``"scan"``: ``lax.scan``, T dependent steps (the default; every cell).
    - ``"associative"``: one associative scan, exact, for cells that declare
      ``linear_recurrence``: minGRU, minLSTM, LRU, RG-LRU, selective SSM, mLSTM. ``log_space=True``
      runs it on logarithms (cells that declare ``log_linear_recurrence``: minGRU/minLSTM in
      their log-space form).
      ``chunk_size=L`` runs it within chunks of L steps and a ``lax.scan`` across them: the
      same result, with each chunk's ``(L, B, state)`` gates and states formed, scanned and read
      out while they are in cache, never the whole ``(T, B, state)`` at once (the form for
      large states, e.g. the selective SSM's ``(E, N)`` per example, on a CPU).
    - ``"deer"``, ``"quasi_deer"``, ``"elk"``: Newton's method over the whole trajectory (any
      cell; see ``recurrax.parallel._newton``), each iteration one associative scan, until the
      residual is at most ``tol`` (default 1e-5 in float32, 1e-10 in float64) or
      ``max_iterations`` (default 100; DEER and quasi-DEER are exact after T) are spent; then
      the sequential scan, with a warning. ``damping`` is ELK's λ (default 0.01).
    """

    name: str = "scan"
    log_space: bool = False
    chunk_size: Optional[int] = None
    tol: Optional[float] = None
    max_iterations: Optional[int] = None
    damping: float = 0.0

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"Expected a method in {METHODS}, got {self.name!r}.")
        if self.log_space and self.name != "associative":
            raise ValueError(f"log_space is an option of method='associative', got method={self.name!r}.")
        if self.chunk_size is not None and (self.name != "associative" or isinstance(self.chunk_size, bool)
                                            or not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(
                f"Expected chunk_size None or a positive integer, with method='associative'; got "
                f"chunk_size={self.chunk_size!r}, method={self.name!r}."
            )
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValueError(f"Expected a positive tol, got {self.tol!r}.")
        if self.max_iterations is not None and not (
                isinstance(self.max_iterations, int) and self.max_iterations > 0):
            raise ValueError(f"Expected a positive integer max_iterations, got {self.max_iterations!r}.")
        if not (isinstance(self.damping, (int, float)) and self.damping >= 0):
            raise ValueError(f"Expected a damping >= 0, got {self.damping!r}.")
        if (self.damping > 0) != (self.name == "elk"):
            raise ValueError(f"damping > 0 is method='elk' (damping={self.damping!r}, method={self.name!r}).")


def associative(*, log_space: bool = False, chunk_size: Optional[int] = None) -> Method:
    """The exact associative scan of a linear recurrence (optionally in log space; optionally
    within chunks of ``chunk_size`` steps, a sequential scan across chunks)."""
    return Method("associative", log_space=log_space, chunk_size=chunk_size)


def deer(*, tol: Optional[float] = None, max_iterations: Optional[int] = None) -> Method:
    """DEER (Lim et al. 2024): Newton with dense Jacobians, O(T·N³) per iteration."""
    return Method("deer", tol=tol, max_iterations=max_iterations)


def quasi_deer(*, tol: Optional[float] = None, max_iterations: Optional[int] = None) -> Method:
    """quasi-DEER (Gonzalez et al. 2024): the Jacobians' diagonals only, O(T·N) per iteration."""
    return Method("quasi_deer", tol=tol, max_iterations=max_iterations)


def elk(damping: float = 0.01, *, tol: Optional[float] = None, max_iterations: Optional[int] = None) -> Method:
    """ELK (Gonzalez et al. 2024), quasi form: diagonal Jacobians with Levenberg–Marquardt damping."""
    return Method("elk", tol=tol, max_iterations=max_iterations, damping=damping)


def as_method(method: Union[str, Method]) -> Method:
    """A ``Method`` from itself or its name (``"elk"`` with its default damping)."""
    if isinstance(method, Method):
        return method
    if method == "elk":
        return elk()
    if isinstance(method, str):
        return Method(method)
    raise ValueError(f"Expected method as one of {METHODS} or a recurrax.parallel.Method, got {method!r}.")


def methods_for(family) -> tuple[str, ...]:
    """The methods a cell family can use."""
    linear = ("associative",) if family.linear_recurrence is not None else ()
    return ("scan",) + linear + ("deer", "quasi_deer", "elk")


class Solution(NamedTuple):
    """A layer's sequence evaluated by ``solve``.

    ``final_carry`` and ``outputs`` ``(*batch, T, O)`` as ``rnn`` returns them, ``carries`` the
    carry after every step (``rnn``'s ``return_carries`` layout; a warm start for the next
    solve), ``iterations`` the Newton iterations used (0 for the exact methods), ``residual``
    ``‖s − f(s)‖∞ / max(‖s‖∞, ‖f(s)‖∞)`` at the end (0 for the exact methods) and ``converged``
    whether it met ``tol`` (when it did not, the carries and outputs are the sequential scan's).
    """

    final_carry: Any
    outputs: jax.Array
    carries: Any
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class _Flat:
    """Ravel a carry ``(B, ...)`` per leaf into ``(B, N)`` and back (one floating dtype)."""

    def __init__(self, carry: Any, batch_ndim: int, method: str):
        leaves, self.treedef = jax.tree.flatten(carry)
        dtypes = {jnp.result_type(leaf) for leaf in leaves}
        if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
            raise ValueError(
                f"method={method!r} needs a carry whose leaves share one real floating dtype, got "
                f"{sorted(str(d) for d in dtypes)}."
            )
        self.shapes = [tuple(leaf.shape[batch_ndim:]) for leaf in leaves]
        self.sizes = [math.prod(shape) for shape in self.shapes]

    def ravel(self, carry: Any, lead: tuple[int, ...]) -> jax.Array:
        leaves = jax.tree.leaves(carry)
        return jnp.concatenate([leaf.reshape(lead + (-1,)) for leaf in leaves], axis=-1)

    def unravel(self, flat: jax.Array) -> Any:
        lead = flat.shape[:-1]
        parts = jnp.split(flat, list(itertools.accumulate(self.sizes))[:-1], axis=-1)
        return jax.tree.unflatten(self.treedef, [p.reshape(lead + s) for p, s in zip(parts, self.shapes)])


def _masked(m, new, old):
    return jax.tree.map(lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (n.ndim - m.ndim)), n, o), new, old)


def _newton_problem(family, flat: _Flat, method: Method, dtype, time: int) -> Problem:
    def step(params, s, x, m):
        new, _ = family.step(params, flat.unravel(s), x)
        return jnp.where(m, flat.ravel(new, ()), s)

    diagonal = None
    if family.jacobian_diagonal is not None:
        def diagonal(params, s, x, m):
            new, diag = family.jacobian_diagonal(params, flat.unravel(s), x)
            return (jnp.where(m, flat.ravel(new, ()), s),
                    jnp.where(m, flat.ravel(diag, ()), jnp.ones_like(s)))

    tol = default_tolerance(dtype) if method.tol is None else float(method.tol)
    max_iterations = 100 if method.max_iterations is None else method.max_iterations
    return Problem(step, diagonal, method.name, _NEWTON[method.name], float(method.damping), tol, max_iterations)


def _outputs_from_steps(family, params, previous, xs, mask):
    """``y_t = step(params, carry_{t−1}, x_t)[1]`` at all steps in one batched pass (0 where masked)."""
    ys = jax.vmap(lambda c, x: family.step(params, c, x)[1])(previous, xs)
    return jnp.where(mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim)), ys, jnp.zeros((), ys.dtype))


def _associative(family, params, carry, xs, mask, log_space):
    """Carries ``(T, B, ...)`` of a linear family by one associative scan."""
    to_linear = family.to_linear or (lambda p, c: c)
    from_linear = family.from_linear or (lambda p, s: s)
    h0 = to_linear(params, carry)
    if log_space:
        if family.log_linear_recurrence is None:
            raise ValueError(
                f"Cell {family.name!r} has no log-space recurrence (log_linear_recurrence): use "
                "associative(log_space=False), or the cell's log-space form (e.g. init(..., log_space=True))."
            )
        log_a, log_b = family.log_linear_recurrence(params, xs)
        log_a = _masked(mask, log_a, jax.tree.map(jnp.zeros_like, log_a))
        log_b = _masked(mask, log_b, jax.tree.map(lambda v: jnp.full_like(v, jnp.finfo(v.dtype).min / 4), log_b))
        states = jax.tree.map(log_linear_scan, log_a, log_b, h0)
    else:
        a, b = family.linear_recurrence(params, xs)
        a = jax.tree.map(lambda v, s: jnp.broadcast_to(v, jnp.broadcast_shapes(v.shape, s.shape)), a, b)
        a = _masked(mask, a, jax.tree.map(jnp.ones_like, a))
        b = _masked(mask, b, jax.tree.map(jnp.zeros_like, b))
        states = linear_scan(a, b, h0)
    return from_linear(params, states)


def _outputs(family, params, carry, carries, xs, mask, method: Method):
    """Outputs ``(T, B, O)`` of the carries ``(T, B, ...)`` reached from ``carry`` (0 where masked)."""
    if method.name == "associative" and family.output is not None:
        ys = family.output(params, carries, xs)
        return jnp.where(mask[..., None], ys, jnp.zeros((), ys.dtype))
    previous = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]], axis=0), carry, carries)
    return _outputs_from_steps(family, params, previous, xs, mask)


def _chunked_associative(family, params, carry, xs, mask, method: Method):
    """Carries and outputs ``(T, B, ...)``: an associative scan within each chunk of
    ``method.chunk_size`` steps, from the carry the chunk before it ends in (``lax.scan``). A T
    that the chunk size does not divide is padded with masked steps, which leave the state as
    it is, and their outputs are dropped."""
    time, size = xs.shape[0], method.chunk_size
    chunks = -(-time // size)
    pad = chunks * size - time
    xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
    mask = jnp.concatenate([mask, jnp.zeros((pad,) + mask.shape[1:], bool)])

    def chunk(c, inputs):
        x, m = inputs
        carries = _associative(family, params, c, x, m, method.log_space)
        return jax.tree.map(lambda v: v[-1], carries), (carries, _outputs(family, params, c, carries, x, m, method))

    split = lambda v: v.reshape((chunks, size) + v.shape[1:])
    _, (carries, ys) = jax.lax.scan(chunk, carry, (split(xs), split(mask)))
    merge = lambda v: v.reshape((chunks * size,) + v.shape[2:])[:time]
    return jax.tree.map(merge, carries), merge(ys)


def solve(params, xs: jax.Array, *, method: Union[str, Method], carry: Any = None,
          lengths: Optional[jax.Array] = None, mask: Optional[jax.Array] = None, reverse: bool = False,
          time_major: bool = False, initial_guess: Any = None) -> Solution:
    """Evaluate one recurrent layer (``RNNParams``) over ``xs`` with a parallel-in-time ``method``.

    Same inputs and semantics as ``rnn`` (lengths or mask, ``reverse``, ``time_major``, any
    number of batch axes, learned/zero/given initial carry), plus ``initial_guess``: the carries
    of a previous solve (``Solution.carries``) to warm-start Newton's method. Returns a
    ``Solution`` with the iterations used and the final residual.
    """
    _check_rnn_params(params, "solve")
    method = as_method(method)
    family, cell = params.family, params.cell
    if method.name not in methods_for(family):
        raise ValueError(
            f"Cell {family.name!r} cannot use method={method.name!r}: it declares no linear recurrence "
            f"(linear_recurrence). Methods it can use: {', '.join(methods_for(family))}."
        )
    if carry is None:
        carry = rnn_initial_carry(params, _batch_shape(xs, time_major))
    time, batch_shape, xs_t, mask_t = _prepare(xs, lengths, mask, time_major)
    _check_step_types(functools.partial(family.step, cell), carry, xs_t[0])
    if mask_t is None:
        mask_t = jnp.ones((time,) + batch_shape, bool)
    batch = math.prod(batch_shape)
    xs_f = xs_t.reshape((time, batch, xs_t.shape[-1]))
    mask_f = mask_t.reshape((time, batch))
    carry_f = jax.tree.map(lambda leaf: leaf.reshape((batch,) + leaf.shape[len(batch_shape):]), carry)
    if reverse:
        xs_f, mask_f = xs_f[::-1], mask_f[::-1]
    dtype = jax.tree.leaves(carry)[0].dtype

    if method.name == "scan":
        raise ValueError("method='scan' is rnn's own loop: call rnn(...), or pick a parallel method.")
    if method.name == "associative" and method.chunk_size is not None:
        carries, ys = _chunked_associative(family, cell, carry_f, xs_f, mask_f, method)
        zero = jnp.zeros((), dtype)
        iterations, residual, converged = jnp.zeros((), jnp.int32), zero, jnp.array(True)
    elif method.name == "associative":
        carries = _associative(family, cell, carry_f, xs_f, mask_f, method.log_space)
        ys = _outputs(family, cell, carry_f, carries, xs_f, mask_f, method)
        zero = jnp.zeros((), dtype)
        iterations, residual, converged = jnp.zeros((), jnp.int32), zero, jnp.array(True)
    else:
        flat = _Flat(carry_f, 1, method.name)
        problem = _newton_problem(family, flat, method, dtype, time)
        guess = None
        if initial_guess is not None:
            guess = _guess_states(initial_guess, flat, time, batch, batch_shape, time_major, reverse, carry)
        states, (iterations, residual, converged) = solve_trajectory(
            problem, cell, flat.ravel(carry_f, (batch,)), xs_f, mask_f, guess)
        carries = flat.unravel(states)
        ys = _outputs(family, cell, carry_f, carries, xs_f, mask_f, method)
    final = jax.tree.map(lambda cs: cs[-1], carries)
    if reverse:
        carries, ys = jax.tree.map(lambda v: v[::-1], (carries, ys))

    def unflatten(v, time_first):   # (T, B, ...) -> rnn's layout
        v = v.reshape((time,) + batch_shape + v.shape[2:])
        return v if time_major or not time_first else jnp.moveaxis(v, 0, len(batch_shape))

    final = jax.tree.map(lambda v: v.reshape(batch_shape + v.shape[1:]), final)
    carries = jax.tree.map(lambda v: unflatten(v, True), carries)
    return Solution(final, unflatten(ys, True), carries, iterations, residual, converged)


def _guess_states(guess, flat: _Flat, time, batch, batch_shape, time_major, reverse, carry):
    """A warm start given as carries in ``rnn``'s ``return_carries`` layout, as ``(T, B, N)``."""
    if jax.tree.structure(guess) != jax.tree.structure(carry):
        raise ValueError(
            f"Expected initial_guess with the carry's structure {jax.tree.structure(carry)}, "
            f"got {jax.tree.structure(guess)}."
        )

    def to_time_batch(g, c):
        expected = ((time,) + tuple(c.shape)) if time_major else (
            tuple(batch_shape) + (time,) + tuple(c.shape[len(batch_shape):]))
        if tuple(jnp.shape(g)) != expected:
            raise ValueError(
                f"Expected initial_guess leaves of shape {expected} (the carries rnn returns with "
                f"return_carries=True), got {tuple(jnp.shape(g))}."
            )
        g = g if time_major else jnp.moveaxis(g, len(batch_shape), 0)
        return g.reshape((time, batch) + g.shape[1 + len(batch_shape):]).astype(c.dtype)

    states = flat.ravel(jax.tree.map(to_time_batch, guess, carry), (time, batch))
    return states[::-1] if reverse else states
