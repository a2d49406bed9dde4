"""The package's shape: no import cycles between recurrax's modules."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "recurrax"


def _modules() -> dict:
    modules = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _import_graph(modules: dict) -> dict:
    """Module -> the recurrax modules it imports, at top level or inside functions.

    ``from package import submodule`` depends on the submodule; ``recurrax`` itself (whose
    ``__init__`` re-exports the public API) is left out.
    """
    def owner(name):
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recurrax"):
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                deps.update(submodules)
                if len(submodules) < len(node.names):
                    deps.add(owner(node.module))
            elif isinstance(node, ast.Import):
                deps.update(owner(a.name) for a in node.names if a.name.startswith("recurrax"))
        graph[name] = deps - {name, "recurrax"}
    return graph


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    # _layers -> parallel -> parallel._layer -> _layers was one (through a function-level import).
    graph = _import_graph(_modules())
    assert "recurrax.parallel" in graph["recurrax._layers"] and "recurrax.parallel._layer" in graph["recurrax.parallel"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Where each capability lives (../shared/DESIGN.md, "Keeping the house legible") and the short
# public path it keeps.
SUBPACKAGE_MODULES = {
    "recurrax.training": ["_train", "_losses", "_checkpoint", "_tbptt", "_sharding", "hessian_free"],
    "recurrax.analysis": ["gradient_flow", "truncation", "tasks", "_bptt_reference"],
    "recurrax.seq2seq": ["_model", "vocab", "attention", "decoding", "char_lm"],
    "recurrax.reservoirs": ["esn", "timeseries"],
}
SHORT_PATHS = {
    "recurrax.hessian_free": "recurrax.training.hessian_free",
    "recurrax.gradient_flow": "recurrax.analysis.gradient_flow",
    "recurrax.truncation": "recurrax.analysis.truncation",
    "recurrax.tasks": "recurrax.analysis.tasks",
    "recurrax.vocab": "recurrax.seq2seq.vocab",
    "recurrax.attention": "recurrax.seq2seq.attention",
    "recurrax.decoding": "recurrax.seq2seq.decoding",
    "recurrax.char_lm": "recurrax.seq2seq.char_lm",
    "recurrax.esn": "recurrax.reservoirs.esn",
    "recurrax.timeseries": "recurrax.reservoirs.timeseries",
    "recurrax.lstm": "recurrax.cells.lstm",
}


def test_the_tree_groups_modules_by_capability():
    modules = _modules()
    for package, names in SUBPACKAGE_MODULES.items():
        for name in names:
            assert f"{package}.{name}" in modules, f"{package}.{name} missing from the tree"
    flat = sorted(p.name for p in ROOT.glob("*.py"))
    assert flat == ["__init__.py", "_activations.py", "_checks.py", "_layers.py", "_rnn_params.py",
                    "_topologies.py", "_unroll.py", "initializers.py", "nnx.py"], flat


def test_the_short_public_paths_name_the_same_modules():
    import importlib

    for short, long in SHORT_PATHS.items():
        assert importlib.import_module(short) is importlib.import_module(long), short
    from recurrax.esn import fit as short_fit
    from recurrax.reservoirs.esn import fit

    assert short_fit is fit
    import recurrax

    assert recurrax.seq2seq.init_seq2seq is importlib.import_module("recurrax.seq2seq._model").init_seq2seq
    assert recurrax.fit is recurrax.training.fit and recurrax.hessian_free is recurrax.training.hessian_free


def test_every_entry_of_the_slow_tier_names_a_test():
    """A renamed or removed test must leave tests/slow_tests.txt too (else its entry marks nothing)."""
    from select_slow import listed

    defined = {}
    for test_id in listed():
        file, _, function = test_id.partition("::")
        function = function.split("[")[0]
        if file not in defined:
            tree = ast.parse((ROOT.parent / file).read_text(encoding="utf-8"))
            defined[file] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert function in defined[file], f"tests/slow_tests.txt lists {test_id}, which {file} no longer defines"
