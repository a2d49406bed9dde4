"""The echo-state-network study runs end to end at its quick config."""

import numpy as np

from experiments import EXPERIMENTS, esn


def test_esn_quick_study_reports_accuracy_sweep_forecast_and_timing(tmp_path):
    assert EXPERIMENTS["esn"] == "experiments.esn"
    results = esn.run(esn.QUICK, tmp_path)
    x_readout = results["accuracy"]["recurrax readout x"]
    assert len(x_readout["rmse"]["values"]) == esn.QUICK.num_seeds
    # 30 units on 479 steps: a one-step forecast far better than repeating the last value.
    assert x_readout["rmse"]["median"] < 0.03 and x_readout["r2"]["median"] > 0.99
    sweep = results["sweep"]
    grid = np.asarray(sweep["errors"])
    assert grid.shape == (
        esn.QUICK.sweep_keys,
        len(esn.QUICK.sweep_radii),
        len(esn.QUICK.sweep_leaks),
        len(esn.QUICK.sweep_ridges),
    )
    assert sweep["best"]["rmse"] == np.float64(grid.mean(0).min())
    assert len(results["free_running"]["generated"]) == esn.QUICK.generate_steps
    rows = {row["impl"]: row for row in results["timing"]["rows"]}
    assert any(name.startswith("recurrax (circulant") for name in rows)
    for row in rows.values():
        assert row["fit_run_s"] > 0 and row["rmse"] < 0.05
    for name in ("results.md", "esn_sweep.png", "esn_forecast.png"):
        assert (tmp_path / name).stat().st_size > 0
