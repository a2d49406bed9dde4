"""Griffe extension for the API reference: the docstrings' plain-text habits, read as Markdown.

The docstrings hold their examples as bare doctests (``>>> ...`` lines and the expected output,
up to the next blank line), outside any ``Examples:`` section: Markdown would read the prompts
as nested block quotes. This fences each such run of lines as ```` ```pycon ````, at its own
indentation, before mkdocstrings parses the docstring. A paragraph that introduces an indented
block with reStructuredText's ``::`` ends with ``:`` instead (the indented block is already a
code block in Markdown). ``tests/test_docs.py`` still runs the examples with ``doctest``; the
docstrings themselves are not changed.

Registered in ``mkdocs.yml`` under the python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_PROMPT = re.compile(r"^(?P<indent>[ \t]*)>>>(?: |$)")
_LITERAL_MARKER = re.compile(r"(?<=[^\s:])::$", re.MULTILINE)


def literal_markers(text: str) -> str:
    """``text`` with reStructuredText's ``para::`` (before an indented block) as ``para:``."""
    return _LITERAL_MARKER.sub(":", text)


def fence_doctests(text: str) -> str:
    """``text`` with every run of doctest lines (a ``>>>`` line up to a blank line) fenced."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _PROMPT.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        if out and out[-1].strip():
            out.append("")  # a fence must not continue a paragraph
        out += [f"{indent}```pycon", *(indent + line for line in block), f"{indent}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctests (and drop the ``::`` markers) of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(literal_markers(obj.docstring.value))
