"""Command line of ``python -m experiments``: pick an experiment, override its config."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import sys
from typing import Any, Sequence

from experiments import EXPERIMENTS


def _parse_value(text: str, default: Any, name: str) -> Any:
    """Parse ``text`` as the type of the field's default value."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--{name} expects true or false, got {text!r}.")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        # Tuples of strings: "a,b"; tuples of int tuples (shapes): "32x256x64x256,16x1000x32x64".
        items = [item for item in text.split(",") if item]
        if default and isinstance(default[0], tuple):
            return tuple(tuple(int(v) for v in item.split("x")) for item in items)
        if default and isinstance(default[0], (int, float)):
            return tuple(type(default[0])(v) for v in items)
        return tuple(items)
    return text


def parse_overrides(config: Any, args: Sequence[str]) -> Any:
    """Apply ``--key value`` pairs to a frozen dataclass config, with clear errors."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    updates = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ValueError(f"Expected --key value pairs, got {arg!r}.")
        name = arg[2:].replace("-", "_")
        if name not in fields:
            raise ValueError(f"Unknown option --{name}; options: {', '.join('--' + n for n in fields)}.")
        try:
            text = next(it)
        except StopIteration:
            raise ValueError(f"--{name} needs a value.") from None
        updates[name] = _parse_value(text, getattr(config, name), name)
    return dataclasses.replace(config, **updates)


def list_experiments() -> str:
    lines = ["Experiments (python -m experiments NAME [--quick | --preset P] [--key value ...]):"]
    for name, module_name in EXPERIMENTS.items():
        doc = (importlib.import_module(module_name).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<20} {doc}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(list_experiments())
        return 0
    name, rest = argv[0], list(argv[1:])
    if name not in EXPERIMENTS:
        print(f"Unknown experiment {name!r}.\n{list_experiments()}", file=sys.stderr)
        return 2
    module = importlib.import_module(EXPERIMENTS[name])
    quick = "--quick" in rest
    if quick:
        rest.remove("--quick")
    base = module.QUICK if quick else module.Config()
    if "--preset" in rest:  # a named config of the module's PRESETS (e.g. a paper-scale run)
        index = rest.index("--preset")
        presets = getattr(module, "PRESETS", {})
        chosen = rest[index + 1] if index + 1 < len(rest) else None
        if quick or chosen not in presets:
            print(f"--preset expects one of {sorted(presets) or 'none (this experiment has no presets)'}"
                  f"{' and no --quick' if quick else ''}, got {chosen!r}.", file=sys.stderr)
            return 2
        base = presets[chosen]
        del rest[index : index + 2]
    out_dir = pathlib.Path("runs") / name
    if "--out" in rest:
        index = rest.index("--out")
        out_dir = pathlib.Path(rest[index + 1])
        del rest[index : index + 2]
    if "--help" in rest:
        print(module.__doc__)
        for f in dataclasses.fields(module.Config):
            print(f"  --{f.name} (default {getattr(module.Config(), f.name)!r})")
        for preset in getattr(module, "PRESETS", {}):
            print(f"  --preset {preset}")
        return 0
    try:
        config = parse_overrides(base, rest)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    results = module.run(config, out_dir)
    with open(out_dir / "results.json", "w") as f:
        json.dump({"config": dataclasses.asdict(config), "results": results}, f, indent=2)
    print(f"wrote {out_dir / 'results.json'}")
    return 0


