"""The mitigations study (issue 17) runs end to end at its quick config and reports every cell; its
paper-scale pieces (issue 30): the authors' model and recipe, checkpointed runs that resume and
that several processes share, the report of kept runs."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import EXPERIMENTS, _cli, mitigations
import recurrax
from recurrax import tasks


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
    task = tasks.pathological("addition", jax.random.key(0), 16, 30)
    valid = np.asarray(mitigations._valid_steps(task.teaching))
    ends = np.asarray(task.teaching).argmax(1) + 1
    np.testing.assert_array_equal(valid, np.arange(33)[None] < ends[:, None])
    # Past the end, the inputs are zero padding.
    assert (np.asarray(task.xs)[~valid] == 0).all()


# --------------------------------------------------------------------------- the paper-scale preset (issue 30)

AUTHORS = dataclasses.replace(mitigations.QUICK, hf_recipe="authors", hf_batch_size=12, hf_curvature_batch_size=4,
                              hf_steps=4, hf_eval_every=2, hf_max_cg_iters=5, seeds=1)


def test_the_authors_initialisation_is_sparse_unscaled_and_their_forward_pass_is_ours():
    config = mitigations.Config(hidden_size=40)
    params = mitigations._init_authors(config, jax.random.key(0), 3, 2)
    w_h, w_x, w_o = (np.asarray(params[k]) for k in ("w_h", "w_x", "w_o"))
    assert ((w_h != 0).sum(0) == 15).all() and ((w_o != 0).sum(0) == 15).all()  # 15 incoming per unit
    assert ((w_x != 0).sum(0) == 3).all()  # fewer than 15 inputs: all connected
    # N(0, 1/15) entries (× 0.25 for the inputs), not rescaled to a spectral radius
    assert np.std(w_h[w_h != 0]) == pytest.approx(15**-0.5, rel=0.1)
    assert np.std(w_x[w_x != 0]) == pytest.approx(0.25 * 15**-0.5, rel=0.25)
    assert params["h0"].shape == (40,) and (np.asarray(params["h0"]) != 0).all()
    # h_t = tanh(h_{t−1} W_hh + x_t W_vh) from h_{−1} = h0, z_t = h_t W_ho: no biases (opt/m/rnn/rnn.py)
    xs = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 3)))
    h = np.broadcast_to(np.asarray(params["h0"], np.float64), (2, 40))
    expected = []
    for t in range(5):
        h = np.tanh(h @ w_h + xs[:, t] @ w_x)
        expected.append(h @ w_o)
    outputs = mitigations._outputs(mitigations._authors_layers(params), jnp.asarray(xs))
    np.testing.assert_allclose(outputs, np.stack(expected, 1), rtol=2e-5, atol=2e-6)


def test_the_authors_recipe_starts_from_their_damping_and_averages_over_scored_outputs():
    for name, lam in [("addition", 0.01), ("temporal_order", 0.08), ("random_permutation", 0.2),
                      ("memorization", 2.0)]:
        init, *_ = mitigations._hf_compiled(name, 20, AUTHORS, True)
        assert float(init(0).opt_state.damping) == pytest.approx(lam)  # 0.01 × num_outputs at T = 20
    task = tasks.pathological("memorization", jax.random.key(0), 6, 20)
    _, _, weights = mitigations._hf_batch(task, per_output=True)
    np.testing.assert_allclose(weights, 1 / 20)  # every step taught: the mean over the 20 outputs
    with pytest.raises(ValueError, match=r"hf_batch_size >= 3 × hf_curvature_batch_size = 12 .* got 8"):
        mitigations._hf_compiled("addition", 20, dataclasses.replace(AUTHORS, hf_batch_size=8), True)


def test_an_interrupted_hf_run_resumes_from_its_checkpoint_exactly(tmp_path):
    whole = mitigations._hessian_free(dataclasses.replace(AUTHORS, checkpoint_dir=str(tmp_path / "a")),
                                      "temporal_order", 20, 0, structural_damping=True)
    resumed = dataclasses.replace(AUTHORS, checkpoint_dir=str(tmp_path / "b"))
    first = mitigations._hessian_free(dataclasses.replace(resumed, hf_steps=2), "temporal_order", 20, 0,
                                      structural_damping=True)
    assert first["steps"] == 2 and len(first["losses"]) == 1
    again = mitigations._hessian_free(resumed, "temporal_order", 20, 0, structural_damping=True)
    assert whole["steps"] == again["steps"] == 4
    for field in ("losses", "damping", "cg_iterations", "error_rate"):
        assert again[field] == whole[field], field
    lines = (tmp_path / "b" / "hf_structural" / "temporal_order" / "T20" / "seed0" / "progress.jsonl").read_text()
    assert [json.loads(line)["steps"] for line in lines.splitlines()] == [2, 4]


def test_a_larger_hf_budget_extends_the_unsolved_runs_kept_exactly(tmp_path):
    whole = mitigations.run(dataclasses.replace(AUTHORS, methods=("hf_structural",)), tmp_path)["rows"][0]["runs"][0]
    config = dataclasses.replace(AUTHORS, methods=("hf_structural", "esn"), checkpoint_dir=str(tmp_path / "runs"))
    first = mitigations.run(dataclasses.replace(config, hf_steps=2), tmp_path)["rows"]
    assert first[0]["runs"][0]["steps"] == 2 and not first[0]["runs"][0]["solved"]
    assert mitigations.run(dataclasses.replace(config, report_only=True), tmp_path)["rows"] == first  # read back as kept
    rows = mitigations.run(config, tmp_path)["rows"]  # hf_steps 4: the run goes on from its checkpoint
    extended = rows[0]["runs"][0]
    assert extended["steps"] == whole["steps"] == 4
    for field in ("losses", "damping", "cg_iterations", "error_rate"):
        assert extended[field] == whole[field], field
    assert rows[1] == first[1]  # the ESN run is kept as it was, not rerun
    assert extended["stopped"] is None
    # a run that fit stopped at a non-finite step would stop there again: it is reported, not extended
    kept = tmp_path / "runs" / "hf_structural" / "temporal_order" / "T20" / "seed0" / "result.json"
    halted = {**first[0]["runs"][0], "stopped": "non-finite loss at step 3"}
    kept.write_text(json.dumps(halted))
    assert mitigations._run(config, "hf_structural", "temporal_order", 20, 0) == halted


def test_a_checkpoint_dir_keeps_its_runs_and_refuses_another_config(tmp_path, capsys):
    config = dataclasses.replace(AUTHORS, methods=("hf_structural", "esn"), checkpoint_dir=str(tmp_path / "runs"))
    first = mitigations.run(config, tmp_path)
    again = mitigations.run(config, tmp_path)  # read back, not rerun: the same numbers and seconds
    assert again["rows"] == first["rows"]
    # what the run holds, read from its kept checkpoint: each symbol's bit of the predicted class
    kept = first["rows"][0]["runs"][0]
    if kept["solved"]:
        assert first["held"] == []
    else:
        (held,) = first["held"]
        init, _, _, outputs, _ = mitigations._hf_compiled("temporal_order", 20, config, True)
        state = recurrax.restore_checkpoint(tmp_path / "runs/hf_structural/temporal_order/T20/seed0/checkpoints",
                                            init(mitigations._init_seed(config, 0)))
        test = mitigations._test_batch(config, "temporal_order", 20, 0)
        scored = np.asarray(test.teaching)
        predicted, label = np.asarray(outputs(state.params, test.xs))[scored].argmax(-1), np.asarray(test.targets)[scored]
        assert held["steps"] == kept["steps"] and held["error_rate"] == kept["error_rate"]
        assert held["bits_right"] == pytest.approx([np.mean(predicted // 2 == label // 2), np.mean(predicted % 2 == label % 2)])
    with pytest.raises(ValueError, match=r"settings of the runs kept in .*hf_max_cg_iters=5.*got hf_max_cg_iters=6"):
        mitigations.run(dataclasses.replace(config, hf_max_cg_iters=6), tmp_path)
    # report_only: the kept runs, nothing new (a second seed and plain HF were never run)
    report = dataclasses.replace(config, methods=("hf_structural", "hf"), seeds=2, report_only=True)
    (tmp_path / "report").mkdir()
    rows = {r["method"]: r for r in mitigations.run(report, tmp_path / "report")["rows"]}
    assert rows["hf_structural"]["status"] == "1 of 2 seeds"
    assert rows["hf_structural"]["runs"] == first["rows"][0]["runs"]
    assert rows["hf"]["success_rate"] is None and rows["hf"]["status"].startswith("not run")
    assert "1 of 2 seeds" in (tmp_path / "report" / "results.md").read_text()
    assert (tmp_path / "report" / "mitigations_grid.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "mitigations_hf_progress.png").stat().st_size > 10_000  # the HF run's curve
    assert _cli.main(["mitigations", "--preset", "huge"]) == 2
    assert "--preset expects one of ['paper']" in capsys.readouterr().err
    paper = mitigations.PRESETS["paper"]
    assert (paper.hf_recipe, paper.hidden_size, paper.hf_max_cg_iters, paper.seeds) == ("authors", 100, 300, 3)
    assert set(paper.hf_tasks) == set(tasks.PATHOLOGICAL) and paper.hf_structural_damping == 0.0075


def test_the_committed_paper_runs_are_the_presets_and_resume_from_their_checkpoints(tmp_path):
    """The paper-scale runs kept in the checkout (issue 30: more machine-hours than a machine is
    kept, so they are committed) were run with the preset's settings, so ``--preset paper``
    resumes them rather than refusing them; each run's records end at its latest checkpoint
    (none lost on resuming), and that checkpoint restores into the run's state."""
    root = pathlib.Path(__file__).resolve().parents[1] / mitigations.PAPER.checkpoint_dir
    config = dataclasses.replace(mitigations.PAPER, checkpoint_dir=str(root), report_only=True, lengths=(100, 200))
    rows = mitigations.run(config, tmp_path)["rows"]  # raises if config.json holds other settings
    assert sum(len(row["runs"]) for row in rows) == len(list(root.glob("*/*/T*/seed*/result.json")))
    directories = sorted(root.glob("hf*/*/T*/seed*"))
    assert directories
    for directory in directories:
        method, name, length, seed = directory.parts[-4:]
        length, seed = int(length.removeprefix("T")), int(seed.removeprefix("seed"))
        steps = [r["steps"] for r in mitigations._progress_records(directory)]
        assert steps == list(range(config.hf_eval_every, steps[-1] + 1, config.hf_eval_every)), directory
        assert recurrax.checkpoint_steps(directory / "checkpoints")[-1] == steps[-1], directory
        init = mitigations._hf_compiled(name, length, config, method == "hf_structural")[0]
        fresh = init(mitigations._init_seed(config, seed))
        state = recurrax.restore_checkpoint(directory / "checkpoints", fresh)
        assert int(state.step) == steps[-1]
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))
        if (directory / "result.json").exists():  # a first budget's result, or the run's end
            assert json.loads((directory / "result.json").read_text())["steps"] in steps


def test_what_a_network_holds_is_read_from_its_hidden_states_and_outputs():
    # two operands: a hidden state that holds one of them (and noise) decodes it, not the other
    task = tasks.pathological("multiplication", jax.random.key(3), 400, 30)
    xs = np.asarray(task.xs)
    a, b = np.array([row[row[:, 1] == 1, 0] for row in xs]).T  # the marked values, by a loop over sequences
    noise = np.random.default_rng(0).normal(size=a.shape)
    for index, held in enumerate((a, b)):
        hs = np.zeros(xs.shape[:2] + (2,), np.float32)
        hs[..., 0], hs[..., 1] = held[:, None], noise[:, None]
        r2 = mitigations._held_inputs("multiplication", hs, np.zeros(xs.shape[:2] + (1,)), task)["operand_r2"]
        assert r2[index] > 0.999 and r2[1 - index] < 0.05
    hs[..., 0] = (a * b)[:, None]  # the product itself
    assert mitigations._held_inputs("multiplication", hs, hs[..., :1], task)["target_r2"] > 0.999
    # 3-bit temporal order: a class with the first symbol's bit right and the other two wrong
    task = tasks.pathological("temporal_order_3bit", jax.random.key(4), 200, 30)
    wrong = np.asarray(jax.nn.one_hot(np.asarray(task.targets) ^ 0b011, 8))
    held = mitigations._held_inputs("temporal_order_3bit", None, wrong, task)
    assert held == {"bits_right": [1.0, 0.0, 0.0]}
    # memorisation: every recalled symbol right but the third
    task = tasks.pathological("memorization", jax.random.key(5), 50, 30)
    targets = np.asarray(task.targets).copy()
    targets[:, -3] = 1 - targets[:, -3]
    held = mitigations._held_inputs("memorization", None, np.asarray(jax.nn.one_hot(targets, 3)), task)
    assert held == {"recalled_right": [1.0, 1.0, 0.0, 1.0, 1.0]}
    assert mitigations._held_inputs("random_permutation", None, None, None) == {}


def test_the_learning_rate_decays_by_a_cosine_to_its_final_fraction():
    schedule = mitigations._learning_rate(mitigations.Config(lr_final_fraction=0.1, steps=100), 2.0)
    # 2 · (0.1 + 0.9 · ½ (1 + cos(π t / 100)))
    for t in (0, 25, 50, 100, 150):
        expected = 2.0 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t, 100) / 100)))
        assert float(schedule(t)) == pytest.approx(expected, rel=1e-6)
    assert mitigations._learning_rate(mitigations.Config(), 2.0) == 2.0  # the default: constant


@pytest.mark.parametrize("solved, verdict", [(5, "met"), (4, "missed")])
def test_the_paper_claim_counts_problems_solved_by_hf_with_structural_damping(solved, verdict):
    names = list(tasks.PATHOLOGICAL)
    rows = [{"method": "hf_structural", "task": n, "T": 100, "success_rate": 2 / 3 if i < solved else 1 / 3}
            for i, n in enumerate(names)]
    rows += [{"method": "lstm_adam", "task": n, "T": 100, "success_rate": 1.0} for n in names]
    config = dataclasses.replace(mitigations.PAPER, methods=("hf_structural", "lstm_adam"))
    checks = {e["expectation"]: e for e in mitigations._expectations(config, rows)}
    claim = checks["HF with structural damping solves at least 5 of the 7 problems at T = 100 (most seeds)"]
    assert claim["verdict"] == verdict and claim["numbers"].startswith(f"{solved} of 7 run")
    assert checks["LSTM + Adam solves temporal order and addition at T = 100 (most seeds)"]["verdict"] == "met"


def test_processes_sharing_a_checkpoint_dir_leave_each_others_runs_alone(tmp_path):
    import subprocess

    config = dataclasses.replace(AUTHORS, methods=("esn",), checkpoint_dir=str(tmp_path / "runs"))
    run = tmp_path / "runs" / "esn" / "temporal_order" / "T20" / "seed0"
    run.mkdir(parents=True)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run / "running.pid").write_text(str(holder.pid))  # a live process holds seed 0
        row = mitigations.run(config, tmp_path)["rows"][0]
        assert row["status"] == "not run: another process holds its runs" and row["success_rate"] is None
        assert not (run / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # its holder gone, the claim is stale: the run is taken over, done and released
    row = mitigations.run(config, tmp_path)["rows"][0]
    assert row["status"] == "ok" and (run / "result.json").exists() and not (run / "running.pid").exists()


def test_bad_recipe_and_a_report_without_runs_raise(tmp_path):
    with pytest.raises(ValueError, match=r"hf_recipe 'recurrax' or 'authors', got 'martens'"):
        mitigations._hf_compiled("addition", 20, dataclasses.replace(AUTHORS, hf_recipe="martens"), True)
    with pytest.raises(ValueError, match=r"checkpoint_dir with report_only=True .* got none"):
        mitigations.run(dataclasses.replace(AUTHORS, report_only=True), tmp_path)
