"""The parallel-in-time study runs end to end at its quick config and writes complete results."""

import json
import math

from experiments import EXPERIMENTS, _cli, parallel_in_time


def test_parallel_in_time_quick_study_writes_speedups_deviations_model_and_training(tmp_path):
    assert EXPERIMENTS["parallel_in_time"] == "experiments.parallel_in_time"
    assert _cli.main(["parallel_in_time", "--quick", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    config, results = saved["config"], saved["results"]
    assert config["methods"] == list(parallel_in_time.QUICK.methods)

    rows = [row for row in results["rows"] if not row.get("skipped")]
    assert {row["method"] for row in rows} == set(parallel_in_time.QUICK.methods)
    for row in rows:
        assert {row["H"], row["T"], row["B"]} <= {2, 30, 16}
        for mode in parallel_in_time.MODES:
            for key in ("scan_s", "method_s", "speedup"):
                assert math.isfinite(row[mode][key]) and row[mode][key] > 0, (row["method"], mode, key)
        assert row["converged"] is True
        assert row["output_deviation"] < 1e-4
        assert row["gradient_deviation_relative"] < 1e-4
        assert row["passes"] == (1 if row["method"] == "associative" else row["iterations"] + 1)
        if row["method"] != "associative":
            assert 1 <= row["iterations"] <= 30 and row["residual"] <= 1e-5
        predicted = row["predicted"]
        assert math.isfinite(predicted["speedup"]) and predicted["speedup"] > 0
        assert predicted["sequential_s"] == row["T"] * results["model"]["launch_latency_s"]

    training = results["training"]
    curves = [run["losses"] for run in training["runs"].values()]
    assert len(curves) == 2 and all(len(c) == parallel_in_time.QUICK.train_steps for c in curves)
    assert training["max_abs_loss_difference"] < 1e-4
    assert all(run["wall_s"] > 0 for run in training["runs"].values())
    for name in ("results.md", "parallel_in_time_speedup.png", "parallel_in_time_training.png"):
        assert (tmp_path / name).stat().st_size > 0
