"""The mitigations study (issue 17) runs end to end at its quick config and reports every cell."""

import json

import jax
import numpy as np
import pytest

from experiments import EXPERIMENTS, _cli, mitigations


@pytest.fixture(autouse=True)
def standard_promotion():
    # optax raises floats to integer step counts, which the suite's strict promotion forbids.
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_mitigations_quick_study_reports_every_method_task_and_length(tmp_path):
    assert EXPERIMENTS["mitigations"] == "experiments.mitigations"
    config = mitigations.QUICK
    results = mitigations.run(config, tmp_path)
    rows = {(r["method"], r["task"], r["T"]): r for r in results["rows"]}
    assert set(rows) == {(m, t, n) for m in config.methods for t in config.tasks for n in config.lengths}
    for (method, _, _), row in rows.items():
        if method in ("hf_structural", "hf") and row["status"] != "ok":
            assert row["success_rate"] is None and row["status"].startswith("not run")
            continue
        assert row["status"] == "ok" and len(row["runs"]) == config.seeds
        assert row["success_rate"] == np.mean([run["solved"] for run in row["runs"]])
        assert row["seconds"] > 0
        for run in row["runs"]:
            assert 0.0 <= run["error_rate"] <= 1.0 and run["steps"] <= config.steps
    verdicts = {e["verdict"] for e in results["expectations"]}
    assert verdicts == {"not measured at this size"}   # T = 20 and 20 updates show no effect, never "missed"
    assert (tmp_path / "mitigations.png").stat().st_size > 10_000
    assert "| problem | T |" in (tmp_path / "results.md").read_text()


def test_every_method_has_the_common_signature():
    # method(config, problem, T, seed) -> result dict; the HF pair is marked in one place.
    assert set(mitigations.METHODS) == set(mitigations.LABELS)
    result = mitigations.METHODS["adam"](mitigations.QUICK, "addition", 20, 0)
    assert {"solved", "error_rate", "steps"} <= set(result)
    json.dumps(result)  # results.json must be able to hold it


def test_momentum_schedule_and_sparse_initialisation():
    config = mitigations.QUICK
    # Sutskever et al. (2013): mu_t = min(1 - 2^(-1 - log2(floor(t / 250) + 1)), mu_max).
    steps = (0, 249, 250, 500, 750, 10**6)
    expected = [min(1 - 2.0 ** (-1 - np.log2(t // 250 + 1)), 0.99) for t in steps]
    assert expected[:5] == pytest.approx([0.5, 0.5, 0.75, 1 - 2 ** (-1 - np.log2(3)), 0.875])
    schedule = mitigations.momentum_schedule(mitigations.Config(momentum_max=0.99))
    assert [float(schedule(t)) for t in steps] == pytest.approx(expected, rel=1e-6)
    big = mitigations.Config(hidden_size=40)
    params = mitigations._init_tanh(big, jax.random.key(0), 3, 1, sparse=True)
    w_h = np.asarray(params["rnn"].cell.w_h)
    assert ((w_h != 0).sum(0) == big.momentum_connections).all()  # 15 incoming weights per unit
    assert np.max(np.abs(np.linalg.eigvals(w_h))) == pytest.approx(big.momentum_spectral_radius, rel=1e-4)
    assert config.momentum_spectral_radius == 1.1


def test_cli_rejects_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="Expected methods among"):
        mitigations.run(_cli.parse_overrides(mitigations.QUICK, ["--methods", "sgd"]), tmp_path)


def test_valid_steps_cover_each_sequence_up_to_its_scored_step():
    from recurrax import tasks

    task = tasks.pathological("addition", jax.random.key(0), 16, 30)
    valid = np.asarray(mitigations._valid_steps(task.teaching))
    ends = np.asarray(task.teaching).argmax(1) + 1
    np.testing.assert_array_equal(valid, np.arange(33)[None] < ends[:, None])
    # Past the end, the inputs are zero padding.
    assert (np.asarray(task.xs)[~valid] == 0).all()
