"""The documentation site builds strictly, and every Python block of its pages runs.

The site is ``mkdocs.yml`` + ``docs/`` (mkdocs-material, mkdocstrings for the API reference,
``docs/hooks.py`` for the notebooks). Two kinds of test:

- the build: ``python -m mkdocs build --strict`` into a temporary directory. Strict mode turns
  every warning into a failure: a broken link or anchor between pages (``validation:`` in
  ``mkdocs.yml``), a cross-reference autorefs cannot resolve, an object mkdocstrings cannot find
  or a docstring griffe cannot parse. The built site must hold the API pages (an anchor for every
  public name) and one page per notebook. A second, tiny build checks that strict mode does fail
  on a broken link, a broken anchor and a broken reference, so the first one means something.
- the pages: the fenced code blocks of each page of ``docs/`` run in order in one fresh
  namespace, page by page, the way ``tests/test_readme.py`` runs the README's (through
  ``snippets.exec_in_order``, under JAX's default promotion rules as in a reader's fresh
  interpreter). The notebook pages are generated at build time and not in ``docs/``: their code
  is the notebooks', which ``tests/test_notebooks.py`` runs.

Which blocks run (the marker): a block runs when its fence's language is ``python`` (with or
without attributes after it). A block that must not run (a shell command, a multi-host script,
a snippet with placeholders) is fenced ``text``, ``bash`` or ``pycon`` instead. Every fence must
name one of those languages, so a typo (``pyhton``, or no language at all) fails here instead of
silently skipping a block.

``docs/index.md`` repeats the README's two set-up commands; a test keeps them equal.

mkdocs is a test dependency (``pip install -e ".[dev]"``): without it these tests fail, they
never skip.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from snippets import exec_in_order, fences

# The builds (~10 s each) and the pages' blocks (~60 s cold) are in the slow tier (see
# tests/slow_tests.txt); the checks of the pages' text run in the fast tier.
slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted(DOCS.rglob("*.md"))

RUNNABLE = "python"
NOT_RUN = ("text", "bash", "pycon")

def python_blocks(text: str) -> list[str]:
    return [body for language, body in fences(text) if language == RUNNABLE]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


def _require_mkdocs() -> None:
    tooling = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    missing = [name for name in tooling if not _importable(name)]
    if missing:
        pytest.fail(f"{missing} not importable: the docs tooling is in the dev extra, "
                    f"pip install -e \".[dev]\"")


def _build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    _require_mkdocs()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2.0
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    completed = _build(CONFIG, site_dir)
    assert completed.returncode == 0, (
        f"mkdocs build --strict failed ({completed.returncode}):\n"
        f"{completed.stdout}\n{completed.stderr}"
    )
    return site_dir


def _anchors(site_dir: Path) -> dict[str, str]:
    """Every ``id`` of the built API pages, mapped to the page that holds it."""
    anchors = {}
    for page in (site_dir / "api").rglob("*.html"):
        for anchor in re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")):
            anchors.setdefault(html.unescape(anchor), str(page.relative_to(site_dir)))
    return anchors


@slow
def test_the_site_builds_strictly_with_the_api_and_the_notebooks(site):
    layers = (site / "api" / "recurrax" / "layers.html").read_text(encoding="utf-8")
    assert 'id="recurrax.rnn"' in layers and 'id="recurrax.init_stack"' in layers
    assert "Run one recurrent layer over" in layers  # rnn's docstring, rendered
    for notebook in NOTEBOOKS:
        page = site / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        text = page.read_text(encoding="utf-8")
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code_cells = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
        assert f"notebooks/{notebook.name}" in text  # the note naming its source
        assert text.count('<div class="highlight">') >= len(code_cells), notebook.name
    for guide in (DOCS / "guides").glob("*.md"):
        assert (site / "guides" / f"{guide.stem}.html").is_file()
    assert not (site / "hooks.py").exists(), "the build's own hooks are not site content"


@slow
def test_docstring_examples_render_as_code(site):
    unroll = (site / "api" / "recurrax" / "unroll.html").read_text(encoding="utf-8")
    assert "<blockquote>" not in unroll  # bare >>> lines would be nested block quotes
    assert '<span class="gp">&gt;&gt;&gt; </span>' in unroll


def _public_modules() -> list[types.ModuleType]:
    import recurrax

    found, todo = [], [recurrax]
    while todo:
        module = todo.pop()
        if module in found:
            continue
        found.append(module)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType) and value.__name__.startswith("recurrax"):
                todo.append(value)
    return found


def _public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, or else the public names the module defines itself (not what it imports)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__]


def _public_path(obj) -> str:
    """The module path of ``obj`` without its private parts (``recurrax.training._train``:
    ``recurrax.training``)."""
    parts = obj.__module__.split(".")
    return ".".join(part for part in parts if not part.startswith("_"))


@slow
def test_every_public_name_is_in_the_api_reference(site):
    anchors = _anchors(site)
    missing = []
    for module in _public_modules():
        if not (module.__name__ in anchors or module.__name__ == "recurrax"):
            missing.append(module.__name__)
        for name in _public_names(module):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                continue  # its own page, checked as a module
            candidates = {f"{module.__name__}.{name}"}
            if inspect.isclass(value) or inspect.isfunction(value):
                candidates |= {f"{_public_path(value)}.{name}", f"{value.__module__}.{name}"}
            if not candidates & set(anchors):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without an entry in the API reference: {missing}"


@slow
def test_strict_build_fails_on_broken_links_anchors_and_references(tmp_path):
    """The same ``strict`` and ``validation`` settings reject each kind of breakage by name."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Index\n\n## A heading\n\n[a page](missing-page.md), [an anchor](#no-such-heading), "
        "[a reference][recurrax.no_such_name], [fine](#a-heading).\n", encoding="utf-8")
    small = {
        "site_name": "broken", "docs_dir": str(docs), "strict": config["strict"],
        "validation": config["validation"], "theme": {"name": "mkdocs"},
        "markdown_extensions": ["toc"], "plugins": ["autorefs"],
    }
    small_config = tmp_path / "mkdocs.yml"
    small_config.write_text(yaml.safe_dump(small), encoding="utf-8")
    completed = _build(small_config, tmp_path / "site")
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    for broken in ("missing-page.md", "no-such-heading", "recurrax.no_such_name"):
        assert broken in output, f"{broken!r} not reported:\n{output}"


def test_every_fence_names_a_known_language():
    for page in PAGES:
        for language, body in fences(page.read_text(encoding="utf-8")):
            assert language in (RUNNABLE, *NOT_RUN), (
                f"{page.relative_to(ROOT)}: a fenced block in {language or 'no language'!r}; use "
                f"{RUNNABLE!r} (runs) or one of {NOT_RUN} (does not):\n{body[:200]}"
            )


def test_the_home_page_gives_the_readme_setup_commands():
    """``docs/index.md`` repeats the README's two set-up commands (which CI parses) verbatim."""
    def commands(path: Path) -> list[str]:
        return [body.strip() for language, body in fences(path.read_text(encoding="utf-8"))
                if language == "bash"]

    readme, home = commands(ROOT / "README.md"), commands(DOCS / "index.md")
    assert home == readme and len(readme) == 2, (home, readme)


def test_the_guides_have_code_that_runs():
    for page in ("getting-started", "cells", "masks", "training", "interop", "esn"):
        assert python_blocks((DOCS / "guides" / f"{page}.md").read_text(encoding="utf-8")), page


@slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p.read_text(encoding="utf-8"))],
    ids=lambda p: str(p.relative_to(DOCS)),
)
def test_page_code_runs(page: Path):
    import recurrax

    before = recurrax.registered_cells()
    try:
        exec_in_order(python_blocks(page.read_text(encoding="utf-8")), str(page.relative_to(ROOT)))
    finally:  # a page may register a cell of its own: leave the registry as other tests saw it
        for name in set(recurrax.registered_cells()) - set(before):
            recurrax.unregister_cell(name)
