"""Shared test configuration: JAX in strict mode, fixed PRNG keys, the cell cases.

Strict promotion makes any implicit rank broadcast (``(B, H) + (H,)``) or implicit dtype promotion
(``int32`` with ``int64``, ``bfloat16`` with ``float32``) an error, so the suite catches the silent
broadcasting the design forbids.

Compiled executables persist in JAX's compilation cache under ``.pytest_cache`` (pytest's own
cache directory, shared by every xdist worker and kept between runs; ``pytest --cache-clear``
empties it). The suite is mostly XLA compilation: many tests compile the same programs (the same
eager ops, the same ``unroll`` over the same shapes) in other modules, after ``jax.clear_caches``
or in the other worker, and a second run compiles only what changed since the first. A hit
loads the executable a miss would build (the key covers the program, the compile options and
jaxlib's version), so no result changes. ``RECURRAX_TEST_COMPILATION_CACHE=0`` compiles
everything afresh. Subprocesses the tests start (the studies' command lines, multi-process
training) inherit the cache through ``JAX_*`` environment variables. With
``-p no:cacheprovider`` the cache lives in a directory for this run only.
"""

import os
import shutil
import tempfile

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


_TEMPORARY_CACHE_ENV = "RECURRAX_TEST_TEMPORARY_CACHE_DIR"  # set by the controller, inherited by workers


def pytest_configure(config):
    """Point JAX's persistent compilation cache at ``.pytest_cache`` (see the module docstring)."""
    if os.environ.get("RECURRAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    if getattr(config, "cache", None) is not None:
        directory = str(config.cache.mkdir("jax-compilation-cache"))
    else:  # no cacheprovider: one directory for this run, made by the controller, removed at its end
        if not os.environ.get(_TEMPORARY_CACHE_ENV):
            os.environ[_TEMPORARY_CACHE_ENV] = tempfile.mkdtemp(prefix="recurrax-test-jax-cache-")
            config._recurrax_owns_cache = True
        directory = os.environ[_TEMPORARY_CACHE_ENV]
    settings = {
        "jax_compilation_cache_dir": directory,
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # cache every program
        "jax_persistent_cache_min_entry_size_bytes": -1,  # of any size
    }
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)  # for the studies and workers the tests start as subprocesses


def pytest_unconfigure(config):
    """The process that made a run-only cache directory removes it."""
    if getattr(config, "_recurrax_owns_cache", False):
        shutil.rmtree(os.environ.pop(_TEMPORARY_CACHE_ENV), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier (``tests/slow_tests.txt``) ``slow``: ``-m "not slow"`` leaves it out."""
    from select_slow import listed

    slow = listed()
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
