"""Shared test configuration: JAX in strict mode, fixed PRNG keys, the cell cases.

Strict promotion makes any implicit rank broadcast (``(B, H) + (H,)``) or implicit dtype promotion
(``int32`` with ``int64``, ``bfloat16`` with ``float32``) an error, so the suite catches the silent
broadcasting the design forbids.

Compiled executables are shared through JAX's persistent compilation cache in a directory made
for this session (every xdist worker uses the same one, and it is deleted at the end): the suite is
mostly XLA compilation, and many tests compile the same programs (the same eager ops, the same
``unroll`` over the same shapes) in other modules, after ``jax.clear_caches``, or in the other
worker. A hit loads the same executable a miss would build, so no result changes; set
``RECURRAX_TEST_COMPILATION_CACHE=0`` to compile everything afresh.
"""

import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

_CACHE_ENV = "RECURRAX_TEST_COMPILATION_CACHE_DIR"  # set by the controller, inherited by workers
_OWNS_CACHE = False
if os.environ.get("RECURRAX_TEST_COMPILATION_CACHE", "1") != "0":
    if not os.environ.get(_CACHE_ENV):
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="recurrax-test-jax-cache-")
        _OWNS_CACHE = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache every program
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # of any size


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


def pytest_unconfigure(config):
    """The process that made the session's cache directory removes it."""
    if _OWNS_CACHE:
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)
