"""MkDocs hook: the notebooks in ``notebooks/`` become pages of the site, generated at build time.

Each ``notebooks/NAME.ipynb`` is turned into ``notebooks/NAME.md`` in the build (never written
to ``docs/``, so no committed copy can drift from the notebook): markdown cells as they are,
code cells as ```` ```python ```` blocks, and the outputs a notebook has stored (stream and
``text/plain`` outputs as ```` ```text ```` blocks, ``image/png`` as inline images). The
notebooks' TeX (``$…$``, ``$$…$$``) is shown as code, as the rest of the site writes equations,
so pages render offline without MathJax. Nothing is executed here: ``tests/test_notebooks.py``
runs the notebooks, and ``tests/test_site.py`` builds the site. Only the standard library is
needed (the notebooks are JSON, nbformat 4).

Registered in ``mkdocs.yml`` under ``hooks:``; the nav names the generated pages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

NOTEBOOK_DIR = "notebooks"  # next to mkdocs.yml; the pages keep the name under docs/


def _source(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _fence(language: str, text: str) -> str:
    text = text.rstrip("\n")
    fence = "```"
    while fence in text:  # a fence longer than any run of backticks inside
        fence += "`"
    return f"{fence}{language}\n{text}\n{fence}"


_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)  # fences and code spans: left alone
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$")


def _math_as_code(markdown: str) -> str:
    """``$$…$$`` as a ```` ```text ```` block and ``$…$`` as inline code, outside code."""
    parts = _CODE.split(markdown)
    for i in range(0, len(parts), 2):  # the even parts are outside code
        display = lambda m: f"\n\n{_fence('text', ' '.join(m[1].split()))}\n\n"  # noqa: E731
        text = _DISPLAY_MATH.sub(display, parts[i])
        parts[i] = _INLINE_MATH.sub(lambda m: f"`{m[1].strip()}`", text)
    return "".join(parts)


def _outputs(outputs: list[dict]) -> list[str]:
    parts = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            parts.append(_fence("text", _source(output.get("text", ""))))
        elif kind in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "image/png" in data:
                png = _source(data["image/png"]).replace("\n", "")
                parts.append(f"![output](data:image/png;base64,{png})")
            elif "text/plain" in data:
                parts.append(_fence("text", _source(data["text/plain"])))
        elif kind == "error":
            parts.append(_fence("text", "\n".join(output.get("traceback", []))))
    return parts


def notebook_to_markdown(path: Path) -> str:
    """The Markdown page of one notebook (nbformat 4)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    if notebook.get("nbformat") != 4:
        raise ValueError(f"{path}: expected nbformat 4, got {notebook.get('nbformat')}")
    parts = []
    for cell in notebook["cells"]:
        source = _source(cell.get("source", "")).strip("\n")
        if cell["cell_type"] == "markdown":
            parts.append(_math_as_code(source))
        elif cell["cell_type"] == "code":
            if source:
                parts.append(_fence("python", source))
            parts.extend(_outputs(cell.get("outputs", [])))
    note = (f"*Generated from `{NOTEBOOK_DIR}/{path.name}` when the site is built; the test "
            f"suite runs the notebook (`tests/test_notebooks.py`). Open it in Jupyter to run it "
            f"yourself.*")
    page = "\n\n".join([*parts[:1], note, *parts[1:]])
    return re.sub(r"\n{3,}", "\n\n", page) + "\n"


def _notebooks(config) -> list[Path]:
    return sorted((Path(config.config_file_path).parent / NOTEBOOK_DIR).glob("*.ipynb"))


def on_files(files: Files, config, **kwargs) -> Files:
    for path in _notebooks(config):
        files.append(File.generated(config, f"{NOTEBOOK_DIR}/{path.stem}.md",
                                    content=notebook_to_markdown(path)))
    return files


def on_serve(server, config, builder, **kwargs):
    server.watch(str(Path(config.config_file_path).parent / NOTEBOOK_DIR))
    return server
