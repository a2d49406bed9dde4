"""Flax NNX modules: thin shells over the pure functions.

Each module stores the *same* NamedTuple params as the pure API, every array leaf wrapped in
``nnx.Param`` (static metadata such as an activation stays as it is), and its ``__call__`` calls
the pure function on the unwrapped params. No math lives here, so ``module(...)`` equals the pure
function on ``module.pure_params`` exactly.

Every module is built either from sizes and ``rngs`` or, with ``params=...``, around existing
pure params (e.g. to train with NNX what was initialised or loaded with the pure API).

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from recurrax.nnx import StackedRNN
>>> model = StackedRNN(3, [8, 8], cell="gru", rngs=nnx.Rngs(0))
>>> carries, ys = model(jnp.ones((2, 5, 3)), lengths=jnp.array([5, 3]))
>>> ys.shape
(2, 5, 8)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from flax import nnx

from recurrax import _layers, cells


def _wrap(params: Any) -> Any:
    """Wrap every array leaf of a params pytree in ``nnx.Param``."""
    return jax.tree.map(nnx.Param, params)


def _unwrap(params: Any) -> Any:
    """The pure params pytree behind ``_wrap``."""
    return jax.tree.map(lambda v: v[...], params, is_leaf=lambda v: isinstance(v, nnx.Variable))


class _Shell(nnx.Module):
    """Holds pure params as ``nnx.Param`` leaves in their NamedTuple structure."""

    def _store(self, params: Any) -> None:
        self.params = nnx.data(_wrap(params))

    @property
    def pure_params(self) -> Any:
        """The params as the pure functions take them."""
        return _unwrap(self.params)


class Cell(_Shell):
    """A cell of any family as a module: ``__call__(carry, x)`` is the family's ``step``.

    ``cell`` is a registered name (``"lstm"``) or any family object (see ``recurrax.cells``);
    the subclasses below fix it to a built-in family.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> cell = Cell("gru", 3, 4, rngs=nnx.Rngs(0))
    >>> carry, y = cell(cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 4)
    """

    cell: Any = None  # subclasses fix the family here

    def __init__(self, *args: Any, rngs: Optional[nnx.Rngs] = None, params: Any = None, **cell_kwargs: Any):
        if type(self).cell is None:
            if not args:
                raise ValueError("Cell needs the cell family first: Cell('lstm', input_size, hidden_size, ...).")
            family, args = args[0], args[1:]
        else:
            family = type(self).cell
        self.family = cells.resolve_family(family)
        if params is None:
            if rngs is None:
                raise ValueError(f"{type(self).__name__} needs rngs=nnx.Rngs(...) or params=...")
            if len(args) != 2:
                raise ValueError(f"{type(self).__name__} needs input_size and hidden_size, got {len(args)} sizes.")
            params = self.family.init(rngs.params(), *args, **cell_kwargs)
        try:
            cells.check_family(self.family, params)
        except ValueError as error:
            raise ValueError(f"{type(self).__name__} expects {self.family.name} params: {error}") from None
        self._store(params)

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Any:
        """The family's initial carry for ``batch_shape``."""
        return self.family.initial_carry(self.pure_params, batch_shape)

    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step: ``(carry, x) -> (carry, y)``, as the family's ``step``."""
        return self.family.step(self.pure_params, carry, x)


class ElmanCell(Cell):
    """Elman cell module; see ``recurrax.elman`` for the equations and options."""

    cell = "elman"


class LSTMCell(Cell):
    """LSTM cell module; see ``recurrax.lstm`` for the equations and options."""

    cell = "lstm"


class GRUCell(Cell):
    """GRU cell module; see ``recurrax.gru`` for the equations and options."""

    cell = "gru"


class RNN(_Shell):
    """A recurrent layer over sequences; ``__call__`` is ``recurrax.rnn``.

    Args (when not given ``params``): ``cell`` (a registered name or any family object),
    ``input_size``, ``hidden_size``, ``learned_initial`` and the family's ``init`` options.
    """

    def __init__(self, cell: Any = "lstm", input_size: int = 0, hidden_size: int = 0, *,
                 rngs: Optional[nnx.Rngs] = None, params: Optional[_layers.RNNParams] = None,
                 learned_initial: bool = False, **cell_kwargs: Any):
        if params is None:
            if rngs is None:
                raise ValueError("RNN needs rngs=nnx.Rngs(...) or params=...")
            params = _layers.init_rnn(rngs.params(), cell, input_size, hidden_size,
                                      learned_initial=learned_initial, **cell_kwargs)
        self._store(params)

    def __call__(self, xs: jax.Array, **options: Any):
        return _layers.rnn(self.pure_params, xs, **options)


class Bidirectional(_Shell):
    """A bidirectional layer; ``__call__`` is ``recurrax.bidirectional``."""

    def __init__(self, cell: Any = "lstm", input_size: int = 0, hidden_size: int = 0, *,
                 merge: str = "concat", rngs: Optional[nnx.Rngs] = None,
                 params: Optional[_layers.BidirectionalParams] = None,
                 learned_initial: bool = False, **cell_kwargs: Any):
        if params is None:
            if rngs is None:
                raise ValueError("Bidirectional needs rngs=nnx.Rngs(...) or params=...")
            params = _layers.init_bidirectional(rngs.params(), cell, input_size, hidden_size, merge=merge,
                                                learned_initial=learned_initial, **cell_kwargs)
        self._store(params)

    def __call__(self, xs: jax.Array, **options: Any):
        return _layers.bidirectional(self.pure_params, xs, **options)


class StackedRNN(_Shell):
    """A deep (optionally bidirectional, residual) RNN; ``__call__`` is ``recurrax.stack``.

    ``residual`` and ``dropout_rate`` are fixed at construction. Dropout is applied only when
    ``__call__`` receives a ``key`` (training); without one the stack is deterministic.
    """

    def __init__(self, input_size: int = 0, hidden_sizes: Sequence[int] = (), *, cell: Any = "lstm",
                 bidirectional: Any = False, merge: str = "concat", learned_initial: bool = False,
                 residual: bool = False, dropout_rate: float = 0.0, cell_kwargs: Any = None,
                 rngs: Optional[nnx.Rngs] = None, params: Optional[_layers.StackParams] = None):
        if params is None:
            if rngs is None:
                raise ValueError("StackedRNN needs rngs=nnx.Rngs(...) or params=...")
            params = _layers.init_stack(rngs.params(), input_size, hidden_sizes, cell=cell,
                                        bidirectional=bidirectional, merge=merge,
                                        learned_initial=learned_initial, cell_kwargs=cell_kwargs)
        self._store(params)
        self.residual = residual
        self.dropout_rate = dropout_rate

    def __call__(self, xs: jax.Array, *, key: Optional[jax.Array] = None, **options: Any):
        rate = self.dropout_rate if key is not None else 0.0
        return _layers.stack(self.pure_params, xs, residual=self.residual, dropout_rate=rate,
                             key=key, **options)
