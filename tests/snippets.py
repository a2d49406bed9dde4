"""Run user-facing code (README blocks, notebook cells) as a reader would."""

from __future__ import annotations

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
