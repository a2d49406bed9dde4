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


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_executables():
    """Clear jax's caches after each test module.

    Every compiled XLA:CPU executable keeps memory mappings of its code alive. A whole-suite run
    compiles thousands of them, and without this the process approached the kernel's limit of
    mappings (``vm.max_map_count``, 65530 here) where compilation segfaulted. Modules share no
    jitted functions, so nothing is compiled twice within a module.
    """
    yield
    jax.clear_caches()
