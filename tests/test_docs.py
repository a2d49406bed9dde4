"""Every public name is documented, and every docstring example runs and prints what it says."""

import doctest
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import recurrax

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(recurrax.__path__, prefix="recurrax.")
)


@pytest.mark.parametrize("name", recurrax.__all__)
def test_public_name_has_docstring(name):
    obj = getattr(recurrax, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc.strip()) > 20, f"recurrax.{name} needs a docstring"


@pytest.mark.parametrize("module_name", ["recurrax"] + MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        result = doctest.testmod(module, extraglobs={"jax": jax, "jnp": jnp}, verbose=False)
    assert result.failed == 0


def test_examples_exist_for_the_core_api():
    with_examples = [n for n in recurrax.__all__ if ">>>" in (inspect.getdoc(getattr(recurrax, n)) or "")]
    for name in ("unroll", "rnn", "init_stack", "sequence_mask", "teaching_mask", "embed", "one_hot"):
        assert name in with_examples
