"""The cell protocol: what a recurrent cell family is, and how the library holds one.

A **cell family** is any object (a module, a class, a namespace) with three pure functions:

    init(key, input_size, hidden_size, **options) -> Params
    initial_carry(params, batch_shape=()) -> Carry          every leaf (*batch_shape, ...)
    step(params, carry, x) -> (carry, y)                    x (*batch, D) -> y (*batch, O)

``Params`` and ``Carry`` are pytrees (NamedTuples recommended: fields by name, never by
position). ``step`` is pure and is exactly ``lax.scan``'s order, so
``lax.scan(functools.partial(step, params), carry, xs)`` needs no adapter. It must return a
carry of the same structure, shapes and dtypes as it received, and one output vector per
sequence (rank of ``x``); ``check_family`` verifies this on abstract values (no FLOPs) when a
layer is initialised, so a broken cell fails with a ``ValueError`` naming it, not deep inside
``lax.scan``.

Optional attributes, each unlocking a tool:

- ``name``: the family's name in messages and in the registry (default: the object's
  ``__name__`` tail, e.g. ``"lstm"``).
- ``input_size(params) -> int`` and ``output_size(params) -> int``: D and O. Defaults:
  ``params.w_x.shape[0]``, and O read off ``step``'s output on abstract values.
- ``pointwise(params, carry, zx, zh) -> (carry, y)`` with ``step(params, carry, x) ==
  pointwise(params, carry, x @ params.w_x, carry.h @ params.w_h)``: the products/pointwise
  split behind the fused backward pass (``unroll_cell``: the weight gradients become two large
  GEMMs after the reverse scan). ``SUMS_PRODUCTS = True`` declares that ``pointwise`` reads
  ``zx`` and ``zh`` only through their sum (one ``[x, h] @ [w_x; w_h]`` product per step), and
  ``has_pointwise_split(params) -> bool`` that only some params of the family split (the GRU:
  reset-after only).
- ``linear_recurrence(params, x) -> (a, b)``: the cell is linear in its carry,
  ``carry' = a ⊙ carry + b`` leaf by leaf (``a`` and ``b`` pytrees of the carry's structure,
  broadcasting against it), functions of ``x`` only (minGRU, minLSTM,
  LRU). This is what an associative scan over time needs.
- ``to_linear(params, carry) -> state`` and ``from_linear(params, state) -> carry``: for a
  linear family whose recurrence is elementwise only in other coordinates than its carry's
  leaves. The LRU keeps its complex state as a real ``(re, im)`` pair (so ravelled carries stay
  real), and its recurrence is diagonal over the complex state ``re + i·im``: there
  ``linear_recurrence``'s ``a`` and ``b`` act on ``to_linear(params, carry)``, i.e.
  ``carry' = from_linear(params, a ⊙ to_linear(params, carry) + b)``. Default: the carry itself.
- ``output(params, carry, x) -> y``: for linear cells, the output from the new carry (so the
  outputs of a whole trajectory can be formed after a parallel scan of the carries).
- ``log_linear_recurrence(params, x) -> (log_a, log_b)``: a linear family whose ``a`` and
  ``b`` are positive gives their logarithms (computed stably, not as ``log(a)``), for the
  log-space associative scan (``recurrax.parallel.associative(log_space=True)``).
- ``jacobian_diagonal(params, carry, x) -> (new_carry, diag)``: the step's new carry and the
  diagonal of its Jacobian with respect to the carry (``diag`` a carry-shaped pytree:
  ``∂ new_leaf[i] / ∂ leaf[i]``), for quasi-DEER and ELK without forming the N×N Jacobian.
- ``recurrent_blocks(params) -> {name: (n, n) matrix}``: the square recurrent matrices whose
  spectra ``gradient_flow.recurrent_spectrum`` reports.

Carries with a field ``h`` that equals the step's output are what ``seq2seq`` decoders set from
the encoder's context; every other tool needs only the three functions.

The library keeps a family as a ``CellFamily``: an immutable, hashable record of those
functions (``as_family``), stored as static metadata in a layer's params, so a layer knows its
cell without any lookup by params type, and ``jit`` caches on it. Built-in and user families
take exactly the same path. ``register_cell`` also gives a family a string name, usable wherever
a family is (``init_rnn(key, "mycell", ...)``); the name registry is the only global state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

_REQUIRED = ("init", "initial_carry", "step")


def _default_input_size(params: Any) -> int:
    w_x = getattr(params, "w_x", None)
    if w_x is None or jnp.ndim(w_x) != 2:
        raise ValueError(
            f"Cannot tell the input size of {type(params).__name__}: give the cell family an "
            "input_size(params) function (the default reads params.w_x.shape[0])."
        )
    return int(jnp.shape(w_x)[0])


@dataclasses.dataclass(frozen=True)
class CellFamily:
    """A cell family as the library holds it: its functions, immutable and hashable.

    Build one with ``as_family`` (from a module or any object with the protocol's attributes).
    Equal families (same functions) compare and hash equal, so ``jit`` reuses compilations.
    Attributes not in the protocol (e.g. ``reservoir.recurrent_matrix``) stay reachable on
    ``source``, the object the family was built from.
    """

    name: str
    init: Callable[..., Any]
    initial_carry: Callable[..., Any]
    step: Callable[..., Any]
    input_size_fn: Optional[Callable[[Any], int]] = None
    output_size_fn: Optional[Callable[[Any], int]] = None
    pointwise: Optional[Callable[..., Any]] = None
    sums_products: bool = False
    split_fn: Optional[Callable[[Any], bool]] = None
    linear_recurrence: Optional[Callable[..., Any]] = None
    output: Optional[Callable[..., Any]] = None
    to_linear: Optional[Callable[..., Any]] = None
    from_linear: Optional[Callable[..., Any]] = None
    recurrent_blocks: Optional[Callable[[Any], dict]] = None
    log_linear_recurrence: Optional[Callable[..., Any]] = None
    jacobian_diagonal: Optional[Callable[..., Any]] = None
    source: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"CellFamily({self.name!r})"

    def input_size(self, params: Any) -> int:
        """D, the feature size ``step`` expects."""
        return (self.input_size_fn or _default_input_size)(params)

    def output_size(self, params: Any) -> int:
        """O, the feature size of ``step``'s output."""
        if self.output_size_fn is not None:
            return self.output_size_fn(params)
        x = jax.ShapeDtypeStruct((self.input_size(params),), _float_dtype(params))
        carry = jax.eval_shape(lambda p: self.initial_carry(p, ()), params)
        return int(jax.eval_shape(self.step, params, carry, x)[1].shape[-1])

    def has_pointwise_split(self, params: Any) -> bool:
        """Whether ``step`` is ``pointwise(params, carry, x @ w_x, h @ w_h)`` for these params."""
        if self.pointwise is None:
            return False
        return True if self.split_fn is None else bool(self.split_fn(params))

    @property
    def is_linear(self) -> bool:
        """Whether the family declares its recurrence linear in the carry."""
        return self.linear_recurrence is not None


jax.tree_util.register_static(CellFamily)


def _float_dtype(params: Any):
    leaves = [v for v in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(v), jnp.floating)]
    return jnp.result_type(leaves[0]) if leaves else jnp.float32


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return name
    name = getattr(obj, "__name__", None) or type(obj).__name__
    return name.rsplit(".", 1)[-1]


def as_family(obj: Any) -> CellFamily:
    """The ``CellFamily`` of ``obj``: a module or any object with ``init``, ``initial_carry``, ``step``.

    Raises ``ValueError`` naming the object and the missing function when ``obj`` does not
    follow the protocol.

    >>> from recurrax.cells import lstm
    >>> as_family(lstm)
    CellFamily('lstm')
    """
    if isinstance(obj, CellFamily):
        return obj
    name = _name_of(obj)
    missing = [attr for attr in _REQUIRED if not callable(getattr(obj, attr, None))]
    if missing:
        raise ValueError(
            f"Expected a cell family with init, initial_carry and step functions; {name!r} "
            f"({type(obj).__name__}) lacks {', '.join(missing)}. See recurrax.cells for the protocol."
        )
    pointwise = getattr(obj, "pointwise", None)
    return CellFamily(
        name=name,
        init=obj.init,
        initial_carry=obj.initial_carry,
        step=obj.step,
        input_size_fn=getattr(obj, "input_size", None),
        output_size_fn=getattr(obj, "output_size", None),
        pointwise=pointwise,
        sums_products=bool(getattr(obj, "SUMS_PRODUCTS", False)) and pointwise is not None,
        split_fn=getattr(obj, "has_pointwise_split", None),
        linear_recurrence=getattr(obj, "linear_recurrence", None),
        output=getattr(obj, "output", None),
        to_linear=getattr(obj, "to_linear", None),
        from_linear=getattr(obj, "from_linear", None),
        recurrent_blocks=getattr(obj, "recurrent_blocks", None),
        log_linear_recurrence=getattr(obj, "log_linear_recurrence", None),
        jacobian_diagonal=getattr(obj, "jacobian_diagonal", None),
        source=obj,
    )


def _describe(tree: Any) -> str:
    return str(jax.tree.map(lambda v: f"{jnp.dtype(v.dtype).name}{list(v.shape)}", tree))


def check_family(family: CellFamily, params: Any, batch_shape: tuple[int, ...] = (2,)) -> None:
    """Check that ``family`` follows the protocol on ``params``, on abstract values (no FLOPs).

    ``initial_carry(params, batch_shape)`` must give leaves ``(*batch_shape, ...)``, and ``step``
    on it and an input ``(*batch_shape, D)`` must return a carry of the same structure, shapes
    and dtypes and an output ``(*batch_shape, O)``. Raises ``ValueError`` naming the cell.
    """
    name = family.name
    try:
        carry = jax.eval_shape(lambda p: family.initial_carry(p, batch_shape), params)
    except ValueError:
        raise
    except Exception as error:  # a user's function failing on its own: say whose it was
        raise ValueError(f"Cell {name!r}: initial_carry(params, {batch_shape}) failed: {error}") from error
    for leaf in jax.tree.leaves(carry):
        if tuple(leaf.shape[: len(batch_shape)]) != tuple(batch_shape):
            raise ValueError(
                f"Cell {name!r}: expected initial_carry(params, {batch_shape}) to give leaves of shape "
                f"({', '.join(map(str, batch_shape))}, ...), got {_describe(carry)}."
            )
    x = jax.ShapeDtypeStruct(tuple(batch_shape) + (family.input_size(params),), _float_dtype(params))
    try:
        out = jax.eval_shape(family.step, params, carry, x)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"Cell {name!r}: step(params, carry, x of shape {x.shape}) failed: {error}") from error
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"Cell {name!r}: expected step to return a (carry, y) pair, got {type(out).__name__}.")
    new_carry, y = out
    if jax.tree.structure(new_carry) != jax.tree.structure(carry):
        raise ValueError(
            f"Cell {name!r}: expected step to return a carry of the structure it received, "
            f"{jax.tree.structure(carry)}, got {jax.tree.structure(new_carry)}."
        )
    for before, after in zip(jax.tree.leaves(carry), jax.tree.leaves(new_carry)):
        if before.shape != after.shape or before.dtype != after.dtype:
            raise ValueError(
                f"Cell {name!r}: expected step to return a carry with the shapes and dtypes it received, "
                f"{_describe(carry)}, got {_describe(new_carry)}."
            )
    if not hasattr(y, "shape") or tuple(y.shape[:-1]) != tuple(batch_shape) or len(y.shape) != len(batch_shape) + 1:
        raise ValueError(
            f"Cell {name!r}: expected step to return an output of shape ({', '.join(map(str, batch_shape))}, O) "
            f"for an input of shape {x.shape}, got {getattr(y, 'shape', type(y).__name__)}."
        )


_REGISTRY: dict[str, CellFamily] = {}


def register_cell(family: Any, name: Optional[str] = None, *, overwrite: bool = False) -> CellFamily:
    """Give a cell family a string name, usable wherever a family is (``init_rnn(key, name, ...)``).

    Returns the ``CellFamily``. A name already taken by another family raises ``ValueError``
    unless ``overwrite=True`` (re-registering the same family is a no-op).

    >>> import types, jax, jax.numpy as jnp
    >>> from typing import NamedTuple
    >>> class P(NamedTuple):
    ...     w_x: jax.Array
    ...     w_h: jax.Array
    >>> class C(NamedTuple):
    ...     h: jax.Array
    >>> def init(key, input_size, hidden_size):
    ...     kx, kh = jax.random.split(key)
    ...     return P(jax.random.normal(kx, (input_size, hidden_size)), 0.5 * jnp.eye(hidden_size))
    >>> def step(params, carry, x):
    ...     h = jnp.tanh(x @ params.w_x + carry.h @ params.w_h)
    ...     return C(h), h
    >>> mine = types.SimpleNamespace(name="doc_tanh", init=init, step=step,
    ...     initial_carry=lambda p, batch_shape=(): C(jnp.zeros(tuple(batch_shape) + p.w_h.shape[:1])))
    >>> register_cell(mine)
    CellFamily('doc_tanh')
    >>> unregister_cell("doc_tanh")
    """
    family = as_family(family)
    name = family.name if name is None else name
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a non-empty string name for the cell, got {name!r}.")
    if name != family.name:
        family = dataclasses.replace(family, name=name)
    existing = _REGISTRY.get(name)
    if existing is not None and existing != family and not overwrite:
        raise ValueError(
            f"A cell named {name!r} is already registered ({existing!r}); pass overwrite=True to replace it."
        )
    _REGISTRY[name] = family
    return family


def unregister_cell(name: str) -> None:
    """Remove a name from the registry (``KeyError``-free: a ``ValueError`` names the known cells)."""
    if name not in _REGISTRY:
        raise ValueError(f"Expected a registered cell name in {sorted(_REGISTRY)}, got {name!r}.")
    del _REGISTRY[name]


def registered_cells() -> dict[str, CellFamily]:
    """A copy of the name registry: ``{name: CellFamily}``, built-ins first."""
    return dict(_REGISTRY)


def resolve_family(cell: Any) -> CellFamily:
    """The ``CellFamily`` for a registered name (``"lstm"``), a ``CellFamily``, or a protocol object."""
    if isinstance(cell, str):
        if cell not in _REGISTRY:
            raise ValueError(f"Expected a cell family in {sorted(_REGISTRY)} or a family object, got {cell!r}.")
        return _REGISTRY[cell]
    if isinstance(cell, CellFamily):
        return cell
    if cell is None or isinstance(cell, (int, float, bool, tuple, list, dict)):
        raise ValueError(f"Expected a cell family (a name in {sorted(_REGISTRY)} or a family object), got {cell!r}.")
    return as_family(cell)
