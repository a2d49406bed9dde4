"""Shared test configuration: JAX in strict mode, fixed PRNG keys, the cell cases.

Strict promotion makes any implicit rank broadcast (``(B, H) + (H,)``) or implicit dtype promotion
(``int32`` with ``int64``, ``bfloat16`` with ``float32``) an error, so the suite catches the silent
broadcasting the design forbids.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

from cell_cases import CASES, CellCase  # noqa: E402  (after the config, on purpose)


@pytest.fixture
def key():
    """A fixed PRNG key; tests split it, never reuse it for two tensors."""
    return jax.random.key(0)


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request) -> CellCase:
    """Every cell configuration of the common suite."""
    return request.param
