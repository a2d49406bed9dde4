"""The cell configurations every common test runs over.

Each case initialises its cell and then overwrites every bias (and the peephole weights, and the
GRU's ``b_hn``) with nonzero random values, so a test fails if any of them is ignored, applied to
the wrong gate, or applied in the wrong place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import recurrax

INPUT_SIZE = 3  # D; distinct from H so that a transposed kernel cannot go unnoticed
HIDDEN_SIZE = 4  # H


@dataclasses.dataclass(frozen=True)
class CellCase:
    id: str
    family: str  # "elman" | "lstm" | "gru"
    kwargs: tuple = ()  # init options as (name, value) pairs

    @property
    def module(self):
        return getattr(recurrax, self.family)

    @property
    def num_gates(self) -> int:
        return {"elman": 1, "lstm": 4, "gru": 3}[self.family]

    def init(self, key, input_size: int = INPUT_SIZE, hidden_size: int = HIDDEN_SIZE, dtype=jnp.float32) -> Any:
        """Params with every bias-like tensor random and nonzero."""
        k_init, k_b, k_extra = jax.random.split(key, 3)
        params = self.module.init(k_init, input_size, hidden_size, dtype=dtype, **dict(self.kwargs))
        params = params._replace(b=0.5 * jax.random.normal(k_b, params.b.shape, dtype))
        if self.family == "lstm" and params.w_peep is not None:
            params = params._replace(w_peep=0.5 * jax.random.normal(k_extra, params.w_peep.shape, dtype))
        if self.family == "gru" and params.b_hn is not None:
            params = params._replace(b_hn=0.5 * jax.random.normal(k_extra, params.b_hn.shape, dtype))
        return params

    def random_carry(self, key, params: Any, batch_shape: tuple = ()) -> Any:
        """A nonzero carry, each field ``(*batch_shape, H)`` in the params' dtype."""
        zeros = self.module.initial_carry(params, batch_shape)
        keys = jax.random.split(key, len(zeros))
        return type(zeros)(*[0.5 * jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, zeros)])


CASES = [
    CellCase("elman-tanh", "elman", (("activation", "tanh"),)),
    CellCase("elman-relu", "elman", (("activation", "relu"),)),
    CellCase("elman-sigmoid", "elman", (("activation", "sigmoid"),)),
    CellCase("lstm", "lstm"),
    CellCase("lstm-peephole", "lstm", (("peephole", True),)),
    CellCase("gru-reset-after", "gru", (("reset_after", True),)),
    CellCase("gru-reset-before", "gru", (("reset_after", False),)),
]

CASES_BY_ID = {case.id: case for case in CASES}


def layer_params(case_id: str, key, input_size: int, hidden_size: int, learned_initial: bool = False):
    """An ``RNNParams`` of the given case, with a random learned initial state if asked."""
    k_cell, k_init = jax.random.split(key)
    case = CASES_BY_ID[case_id]
    cell = case.init(k_cell, input_size, hidden_size)
    initial = case.random_carry(k_init, cell) if learned_initial else None
    return recurrax.RNNParams(cell=cell, initial=initial)


def bidirectional_params(case_id: str, key, input_size: int, hidden_size: int, merge: str):
    """A ``BidirectionalParams`` of two independent layers of the given case."""
    k_f, k_b = jax.random.split(key)
    return recurrax.BidirectionalParams(layer_params(case_id, k_f, input_size, hidden_size),
                                        layer_params(case_id, k_b, input_size, hidden_size),
                                        recurrax.Merge(merge))
