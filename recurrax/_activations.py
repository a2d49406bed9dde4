"""Activation functions carried in params as static pytree metadata.

An ``Activation`` is registered with ``jax.tree_util.register_static``: it is part of the
pytree's structure, not a leaf, so ``jit``, ``grad``, optax and checkpointing never see it,
yet ``step(params, carry, x)`` can read which nonlinearity to apply from ``params`` alone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

_FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}

# gamma = sup |f'(x)|: the constant in the Bengio et al. (1994) / Pascanu et al. (2013) bound.
_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25, "identity": 1.0}


@dataclasses.dataclass(frozen=True)
class Activation:
    """A named elementwise nonlinearity, one of ``tanh``, ``relu``, ``sigmoid``, ``identity``.

    ``gamma`` is the supremum of ``|f'|`` (1 for tanh, relu and identity; 1/4 for sigmoid).

    >>> Activation("tanh")(jnp.zeros(2)).tolist()
    [0.0, 0.0]
    """

    name: str

    def __post_init__(self):
        if self.name not in _FUNCTIONS:
            raise ValueError(
                f"Expected activation in {sorted(_FUNCTIONS)}, got {self.name!r}."
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        return _FUNCTIONS[self.name](x)

    @property
    def gamma(self) -> float:
        return _GAMMA[self.name]


jax.tree_util.register_static(Activation)
