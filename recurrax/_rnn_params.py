"""A recurrent layer's params and what reads them alone: below the layers and the parallel methods.

``recurrax._layers`` (``rnn``) and ``recurrax.parallel`` (``solve``) both run an ``RNNParams``;
what both need lives here, so neither imports the other's module for it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from recurrax import cells
from recurrax._checks import check_array, check_batch_shape
from recurrax.cells import CellFamily


class RNNParams(NamedTuple):
    """One recurrent layer: a cell's params, optionally a learned initial state, and its family."""

    cell: Any  # the family's params, e.g. LSTMParams
    initial: Optional[Any]  # the cell's carry, unbatched; None: the family's initial_carry
    family: CellFamily  # static pytree metadata: which step runs ``cell``


def _check_rnn_params(params: Any, fn: str) -> None:
    if not isinstance(params, RNNParams):
        raise ValueError(f"{fn} expects RNNParams (a layer, from init_rnn), got {type(params).__name__}.")
    if not isinstance(params.family, cells.CellFamily):
        raise ValueError(
            f"{fn} expects RNNParams whose family is a CellFamily (recurrax.cells.as_family), "
            f"got {type(params.family).__name__}."
        )


def rnn_initial_carry(params: RNNParams, batch_shape: tuple[int, ...] = ()) -> Any:
    """A layer's starting carry for a batch: the learned state broadcast, or the family's own.

    (A cell's carry from cell params alone is ``family.initial_carry``, e.g.
    ``recurrax.lstm.initial_carry``.)
    """
    _check_rnn_params(params, "rnn_initial_carry")
    batch_shape = check_batch_shape(batch_shape)
    if params.initial is None:
        return params.family.initial_carry(params.cell, batch_shape)
    return jax.tree.map(lambda v: jnp.broadcast_to(v, batch_shape + jnp.shape(v)), params.initial)


def _batch_shape(xs: jax.Array, time_major: bool) -> tuple[int, ...]:
    check_array(xs, "xs")
    if xs.ndim < 2:
        raise ValueError(
            "Expected xs of rank >= 2 with shape (*batch, time, features), "
            f"got shape {tuple(xs.shape)}."
        )
    return tuple(xs.shape[1:-1]) if time_major else tuple(xs.shape[:-2])
