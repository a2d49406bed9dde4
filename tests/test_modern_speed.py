"""``python -m experiments modern_speed --quick``: every parallel form is timed beside the
sequential scan of the same cell and agrees with it, a call too large for ``max_bytes`` is
reported, not run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from experiments import EXPERIMENTS, _cli, modern_speed


def test_quick_study_times_every_form_and_checks_it_against_the_scan(tmp_path):
    assert EXPERIMENTS["modern_speed"] == "experiments.modern_speed"
    assert _cli.main(["modern_speed", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    rows = results["rows"]
    forms = {(r["cell"], r["method"]) for r in rows}
    assert forms == {(c, m) for c, (_, methods) in modern_speed.CELLS.items() for m in methods}
    for r in rows:
        assert r["output_deviation"] < 1e-4 and r["gradient_deviation_relative"] < 1e-4, r
        for mode in modern_speed.MODES:
            assert r[mode]["seconds"] > 0 and r[mode]["bytes"] > 0
            if r["method"] == "scan":
                assert r[mode]["speedup_over_scan"] == 1.0
    assert set(results["crossover"]) == {f"{c}/{m}/{mode}" for c, m in forms if m != "scan"
                                         for mode in modern_speed.MODES}
    parts = results["ssm_breakdown"]["seconds"]
    assert set(parts) == {"form a and b", "associative scan of a and b", "whole associative form",
                          "sequential scan"} and min(parts.values()) > 0
    assert (tmp_path / "modern_speed.png").stat().st_size > 0 and "| mlstm | chunkwise |" in (
        tmp_path / "results.md").read_text()


def test_a_call_over_the_memory_bound_is_reported_not_run(tmp_path):
    config = dataclasses.replace(modern_speed.QUICK, cells=("mlstm",), lengths=(32,), repeats=1)
    rows = {r["method"]: r for r in modern_speed.run(config, tmp_path)["rows"]}
    scan_bytes = max(rows["scan"][mode]["bytes"] for mode in modern_speed.MODES)
    largest = max(rows, key=lambda m: rows[m]["forward+backward"]["bytes"])
    assert rows[largest]["forward+backward"]["bytes"] > scan_bytes  # the bound below separates them
    bounded = {r["method"]: r for r in modern_speed.run(
        dataclasses.replace(config, max_bytes=scan_bytes), tmp_path)["rows"]}
    assert bounded[largest]["skipped"] and bounded[largest]["bytes"] > scan_bytes
    assert "not run" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="sequential scan of mlstm at T = 32 needs"):
        modern_speed.run(dataclasses.replace(config, max_bytes=1), tmp_path)
