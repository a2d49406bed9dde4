"""Every notebook in notebooks/ runs top to bottom.

The code cells of each ``notebooks/*.ipynb`` are executed in order in one namespace, in this
process (parsed with ``json``: no Jupyter kernel needed). Notebooks end with asserts (e.g. the
trained loss is below the initial loss), so a notebook that runs but stops teaching fails.

They run under JAX's default promotion rules, as in a reader's fresh kernel, not under the strict
rules ``conftest.py`` sets for the library's own tests: user-side code and third-party libraries
(optax's Adam computes ``decay ** count`` with an int32 count) need not be strict-clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from snippets import exec_in_order

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def code_cells(path: Path) -> list[str]:
    """Sources of the notebook's code cells, in order."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook.get("nbformat") == 4, f"{path.name}: expected nbformat 4"
    sources = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell["source"]
        sources.append(source if isinstance(source, str) else "".join(source))
    return sources


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells"
    for index, source in enumerate(cells, start=1):
        if any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()):
            pytest.fail(f"{path.name} code cell {index} uses IPython magics or shell escapes")
    exec_in_order(cells, path.name)
