"""The README's example runs, and its set-up commands are the ones CI runs.

Every ```python block of README.md (its first example) is executed in order in one namespace, so
a renamed function or a changed shape breaks this test instead of a reader's first session. The
two ```bash blocks are the documented set-up commands; the test command's pytest invocation must
be what ``.ci/run`` runs, so the documented command is the tested one. The rest of what the
README used to hold (the quickstart, writing a cell, training, interop, the results) lives in
``docs/``, whose Python blocks ``tests/test_site.py`` runs the same way, page by page.

The example runs under JAX's default promotion rules, as in a reader's fresh interpreter, not
under the strict rules ``conftest.py`` sets for the library's own tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from snippets import exec_in_order, fences

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"

MAIN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m experiments tour"
)
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest -q -n auto'
    ' --dist loadfile -m "not slow"'
)

def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced code blocks tagged ``language``, in order."""
    return [body for lang, body in fences(text) if lang == language]


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_first_example_runs():
    blocks = fenced_blocks(_readme(), "python")
    assert blocks, "README.md has no ```python blocks"
    import recurrax

    before = recurrax.registered_cells()
    try:
        exec_in_order(blocks, "README.md")
    finally:  # an example may register a cell of its own: leave the registry as other tests saw it
        for name in set(recurrax.registered_cells()) - set(before):
            recurrax.unregister_cell(name)


def test_exactly_two_setup_commands():
    blocks = [body.strip() for body in fenced_blocks(_readme(), "bash")]
    assert blocks == [MAIN_COMMAND, TEST_COMMAND], blocks


def _pytest_part(command: str) -> list[str]:
    """The arguments after ``python -m pytest`` in the last ``&&`` segment of a command."""
    last = shlex.split(command.split("&&")[-1])
    assert last[1:3] == ["-m", "pytest"], f"Expected '<python> -m pytest ...', got {last}"
    return last[1:]


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's command (the fast tier), then the slow tier, with the same options."""
    readme_tests = fenced_blocks(_readme(), "bash")[1].strip()
    pytest_args = _pytest_part(readme_tests)  # ["-m", "pytest", "-q", "-n", "auto", ..., "-m", "not slow"]
    assert pytest_args[-2:] == ["-m", "not slow"], pytest_args
    script = CI_SCRIPT.read_text(encoding="utf-8")
    invocation = " ".join(pytest_args[:-2]) + ' -m "$marks"'
    assert re.search(rf"python\"?\s+{re.escape(invocation)}(\s|$)", script, re.MULTILINE), (
        f"{CI_SCRIPT} does not run '<python> {invocation}', the README's test command"
    )
    assert re.search(r'^run_tier fast "not slow"', script, re.MULTILINE), "CI must run the README's tier"
    assert re.search(r'^run_tier slow "slow"', script, re.MULTILINE), "CI must run the slow tier too"
    assert "pip install -e \".[dev]\"" in script, f"{CI_SCRIPT} does not install .[dev]"
    assert "set -euo pipefail" in script
    assert CI_SCRIPT.stat().st_mode & 0o111, f"{CI_SCRIPT} is not executable"
