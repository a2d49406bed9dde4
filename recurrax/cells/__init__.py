"""Cell families and dispatch by params type.

A family is a module with ``init``, ``initial_carry``, ``step`` and its two NamedTuples. The
registry below maps a params type back to its family, so layers can run any cell from its
params alone (``family_of(params).step``), and a family can be named by string where a user
configures a stack (``"lstm"``).
"""

from __future__ import annotations

import types
from typing import Any, Union

from recurrax.cells import elman, gru, lstm, reservoir

FAMILIES: dict[str, types.ModuleType] = {
    "elman": elman, "lstm": lstm, "gru": gru, "reservoir": reservoir,
}
_BY_PARAMS_TYPE = {
    elman.ElmanParams: elman,
    lstm.LSTMParams: lstm,
    gru.GRUParams: gru,
    reservoir.ReservoirParams: reservoir,
}
CARRY_TYPES = (elman.ElmanCarry, lstm.LSTMCarry, gru.GRUCarry, reservoir.ReservoirCarry)


def resolve_family(family: Union[str, types.ModuleType]) -> types.ModuleType:
    """A family given by name (``"elman"``, ``"lstm"``, ``"gru"``, ``"reservoir"``) or module."""
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(f"Expected a cell family in {sorted(FAMILIES)}, got {family!r}.")
        return FAMILIES[family]
    if family not in FAMILIES.values():
        raise ValueError(f"Expected a cell family in {sorted(FAMILIES)}, got {family!r}.")
    return family


def family_of(params: Any) -> types.ModuleType:
    """The family module whose ``step`` takes these params.

    >>> import jax
    >>> family_of(lstm.init(jax.random.key(0), 2, 3)).__name__
    'recurrax.cells.lstm'
    """
    try:
        return _BY_PARAMS_TYPE[type(params)]
    except KeyError:
        names = ", ".join(t.__name__ for t in _BY_PARAMS_TYPE)
        raise ValueError(f"Expected cell params ({names}), got {type(params).__name__}.") from None


def input_size(params: Any) -> int:
    """D, the feature size a cell's ``step`` expects."""
    family_of(params)
    return params.w_x.shape[0]


def hidden_size(params: Any) -> int:
    """H, the size of the cell's output ``h``."""
    family_of(params)
    return params.w_h.shape[0]


def has_pointwise_split(params: Any) -> bool:
    """Whether ``step`` is ``pointwise(params, carry, x @ w_x, h @ w_h)`` for these params.

    True for Elman, LSTM and reset-after GRU; false for the reset-before GRU, whose candidate
    product ``(r ⊙ h) @ U_h`` depends on a gate, and for reservoirs (their ``W`` is stored as
    ``W``, or sparse, not as an ``h @ w_h`` kernel). Only cells with the split get the fused
    backward pass of ``unroll_cell``.
    """
    family = family_of(params)
    if family is reservoir:
        return False
    return family is not gru or params.b_hn is not None
