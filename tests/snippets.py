"""Run user-facing code (README and docs blocks, notebook cells) as a reader would."""

from __future__ import annotations

import re

import jax


def exec_in_order(sources: list[str], label: str) -> dict:
    """Exec ``sources`` in order in one namespace; an error names the block that raised it.

    Runs under JAX's default promotion rules, as a reader's fresh interpreter would (the suite's
    strict mode would also reject optax's own arithmetic).
    """
    namespace: dict = {"__name__": f"__{label}__"}
    for index, source in enumerate(sources, start=1):
        # dont_inherit: not this file's `from __future__ import annotations`, as in a fresh interpreter.
        code = compile(source, f"{label}[block {index}]", "exec", dont_inherit=True)
        try:
            with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
                exec(code, namespace)
        except Exception as error:
            error.add_note(f"(raised by {label}, block {index})")
            raise
    return namespace


# A fenced block at any indentation: its fence (``` or ~~~, three or more), info string and body.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def fences(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of a Markdown page, in order, bodies dedented.

    The language is the info string's first word (``python`` in ```` ```python title="x" ````),
    or its first class in attribute form (```` ```{.python} ````); ``""`` when there is none.
    """
    blocks = []
    for match in _FENCE.finditer(text):
        info = match["info"].strip()
        language = re.match(r"\{?\s*\.?([\w+-]*)", info)[1] if info else ""
        indent = match["indent"]
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in match["body"].splitlines(keepends=True))
        blocks.append((language, body))
    return blocks
