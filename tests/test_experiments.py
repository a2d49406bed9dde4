"""The experiments run end to end at their quick configs, and the CLI parses and rejects options."""

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import recurrax

from experiments import EXPERIMENTS, _cli, bench, demo


@pytest.fixture(autouse=True)
def standard_promotion():
    # optax raises floats to integer step counts, which the suite's strict promotion forbids.
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_demo_quick_loss_falls(tmp_path):
    results = demo.run(demo.QUICK, tmp_path)
    # Untrained, the model spreads its probability: about log2(107) bits (103 symbols + 4 specials).
    assert abs(results["initial_validation_bits"] - np.log2(107)) < 0.3
    assert results["validation_bits"] < results["initial_validation_bits"] - 0.5
    assert results["unigram_entropy_bits"] == pytest.approx(4.689, abs=1e-3)
    assert all(sample.startswith(demo.QUICK.prompt) for sample in results["samples"].values())
    assert (tmp_path / "char_lm.png").stat().st_size > 10_000


def test_bench_quick_writes_rows_with_ratios(tmp_path):
    results = bench.run(bench.QUICK, tmp_path)
    rows = results["rows"]
    impls = {(row["cell"], row["impl"], row["mode"]) for row in rows}
    assert ("lstm", "flax.linen OptimizedLSTMCell", "forward+backward") in impls
    assert ("lstm", "recurrax bf16 products", "forward") in impls
    if bench.installed("equinox"):  # an optional anchor (the bench extra)
        assert ("gru", "equinox", "forward") in impls
    kernel_rows = {"recurrax kernel='scan'", "recurrax kernel='onednn'", "oneDNN primitive (C++)"}
    if recurrax.kernels.available():  # the default beside the options it chooses between
        for impl in kernel_rows:
            assert ("gru", impl, "forward+backward") in impls
    for row in rows:
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        ours = next(r for r in rows if r["cell"] == row["cell"] and r["impl"] == "recurrax"
                    and r["mode"] == row["mode"])
        assert row["ratio"] == pytest.approx(ours["median_ms"] / row["median_ms"])
    for entry in results["summary"]:  # the fastest anchor, never a recurrax variant or oneDNN alone
        group = [r for r in rows if r["cell"] == entry["cell"] and r["mode"] == entry["mode"]
                 and r["impl"] not in kernel_rows and not r["impl"].startswith("recurrax")]
        assert entry["fastest_anchor"] == min(group, key=lambda r: r["median_ms"])["impl"]
    assert {row["impl"] for row in results["stack"]} - {"recurrax kernel='scan'"} == {
        "recurrax", "flax.linen OptimizedLSTMCell"}
    remat = {row["policy"]: row for row in results["remat"]}
    assert remat["remat sqrt(T) segments"]["residual_ratio"] < remat["fused backward"]["residual_ratio"] < 1.0
    # 2 cells × 2 modes, and the stack's forward, forward+backward and training step.
    assert (tmp_path / "results.md").read_text().count("| recurrax |") == 7


def test_bench_longest_sequence_is_the_largest_that_fits():
    from experiments._measure import compiled_memory

    import recurrax

    params = recurrax.init_rnn(jax.random.key(0), "lstm", 4, 8)
    grad = jax.grad(lambda p, x: recurrax.rnn(p, x, fused_backward=False)[1].sum())
    # Plain BPTT stores every step, so memory grows with T: the budget of T = 64 admits 64, not 65.
    budget = compiled_memory(grad, params, jax.ShapeDtypeStruct((2, 64, 4), np.float32))
    assert bench.longest_sequence("plain autodiff", 2, 4, 8, budget) == 64


def test_bench_gradients_agree_with_flax_cell_math():
    # The benchmark compares like with like: recurrax's LSTM with flax.linen's parameters
    # transplanted gives flax.linen's outputs (both use gate order i, f, g, o).
    import flax.linen as nn
    import jax.numpy as jnp

    import recurrax

    hidden, features = 4, 3
    xs = jax.random.normal(jax.random.key(0), (2, 5, features))
    model = nn.RNN(nn.OptimizedLSTMCell(hidden))
    variables = model.init(jax.random.key(1), xs)
    cell = variables["params"]["cell"]
    w_x = jnp.concatenate([cell["ii"]["kernel"], cell["if"]["kernel"], cell["ig"]["kernel"], cell["io"]["kernel"]], 1)
    w_h = jnp.concatenate([cell["hi"]["kernel"], cell["hf"]["kernel"], cell["hg"]["kernel"], cell["ho"]["kernel"]], 1)
    b = jnp.concatenate([cell["hi"]["bias"], cell["hf"]["bias"], cell["hg"]["bias"], cell["ho"]["bias"]])
    params = recurrax.RNNParams(recurrax.LSTMParams(w_x, w_h, b, None), None, recurrax.as_family(recurrax.lstm))
    ours = recurrax.rnn(params, xs)[1]
    theirs = model.apply(variables, xs)
    assert jnp.allclose(ours, theirs, atol=1e-5)


def test_cli_lists_and_overrides():
    out = subprocess.run([sys.executable, "-m", "experiments"], capture_output=True, text=True, check=True)
    for name in EXPERIMENTS:
        assert name in out.stdout
    config = _cli.parse_overrides(bench.Config(), ["--shapes", "2x3x4x5,6x7x8x9", "--cells", "gru", "--repeats", "3"])
    assert config.shapes == ((2, 3, 4, 5), (6, 7, 8, 9))
    assert config.cells == ("gru",)
    assert config.repeats == 3
    assert dataclasses.replace(demo.Config(), steps=5) == _cli.parse_overrides(demo.Config(), ["--steps", "5"])


def test_the_tour_prints_commands_a_shell_parses_back():
    """Each command the tour prints (values with spaces, empty tuples) gives its config back."""
    import importlib
    import shlex

    from experiments import tour

    for entry in tour.ENTRIES:
        for quick, overrides in ((False, entry.tour), (True, entry.quick)):
            module = importlib.import_module(f"experiments.{entry.name}")
            base = module.QUICK if quick else module.Config()
            args = shlex.split(tour._overrides({"quick": quick, "overrides": overrides}))
            args = [a for a in args if a != "--quick"]
            assert _cli.parse_overrides(base, args) == dataclasses.replace(base, **overrides), entry.name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nope", "1"], "Unknown option --nope"),
        (["--steps"], "--steps needs a value"),
        (["steps", "3"], "Expected --key value pairs"),
    ],
)
def test_cli_rejects_bad_options(args, message):
    with pytest.raises(ValueError, match=message):
        _cli.parse_overrides(demo.Config(), args)


def test_cli_writes_results_json(tmp_path):
    out_dir = tmp_path / "demo"
    subprocess.run(
        [sys.executable, "-m", "experiments", "demo", "--quick", "--steps", "3", "--out", str(out_dir)],
        check=True, capture_output=True,
    )
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["config"]["steps"] == 3
    assert len(saved["results"]["history"]) >= 2


def test_truncated_vs_full_quick_separates_short_and_full(tmp_path):
    from experiments import truncated_vs_full

    results = truncated_vs_full.run(truncated_vs_full.QUICK, tmp_path)
    rows = results["settings"]
    assert list(rows) == ["k2=1", "k2=4", "full"]  # L/4, L and full BPTT for L = 4
    # k2 = 1 cannot reach the flagged step 4 steps back; full BPTT learns it.
    assert rows["full"]["final_accuracy"][0] > 0.7
    assert rows["k2=1"]["final_accuracy"][0] < 0.45
    assert rows["full"]["cosine_at_init"]["all"] == pytest.approx(1.0, abs=1e-6)
    assert rows["k2=1"]["cosine_at_init"]["lstm"] < rows["k2=4"]["cosine_at_init"]["lstm"] < 1.0
    # Truncation bounds the stored activations: memory grows with k2.
    memory = [rows[name]["temp_memory_bytes"] for name in ("k2=1", "k2=4", "full")]
    assert memory == sorted(memory) and memory[0] < memory[-1]
    assert (tmp_path / "truncated_vs_full.png").stat().st_size > 10_000


def test_vanishing_quick_checks_the_bound(tmp_path):
    from experiments import vanishing

    results = vanishing.run(vanishing.QUICK, tmp_path)
    for entry in results["elman"].values():
        assert entry["bound_respected"] and entry["decays_below_one"]
    tanh = results["elman"]["tanh"]["rows"]
    assert tanh[0]["fitted_rate"] < 0 < tanh[-1]["fitted_rate"]  # λ₁γ = 0.5 vanishes, 2 explodes
    assert tanh[0]["fitted_rate"] == pytest.approx(np.log(0.5), abs=0.05)  # small inputs: f' ≈ 1
    assert set(results["gated"]) == {"lstm init", "lstm trained", "gru init", "gru trained"}
    assert (tmp_path / "vanishing.png").stat().st_size > 10_000
    cost = results["cost"]["rows"]
    assert {name: row["carry_size"] for name, row in cost.items()} == {"elman": 16, "lstm": 16}
    assert all(np.isfinite(v) and v > 0 for row in cost.values() for v in row.values())
    assert "SVD ÷ lag_norms" in (tmp_path / "results.md").read_text()


def test_clipping_quick_no_clip_diverges_clip_stays_finite(tmp_path):
    from experiments import clipping

    runs = clipping.run(clipping.QUICK, tmp_path)["runs"]
    unclipped, clipped = runs["no clipping"], runs["clip 1"]
    assert "became" in unclipped["stopped"] and unclipped["steps_done"] < clipping.QUICK.steps
    assert unclipped["max_grad_norm"] > 1e6 * unclipped["grad_norm"][0]
    assert clipped["stopped"] is None and clipped["final_test_mse"] < 1 / 6
    assert (tmp_path / "clipping.png").stat().st_size > 10_000


def test_long_range_quick_runs_every_task_and_cell(tmp_path):
    from experiments import long_range

    rows = long_range.run(long_range.QUICK, tmp_path)["rows"]
    assert {(r["task"], r["cell"]) for r in rows} == {
        (t, c) for t in ("adding", "copy", "temporal_order")
        for c in ("tanh RNN", "IRNN", "LSTM", "GRU", "minGRU", "minLSTM", "IndRNN", "LRU")}
    copy_row = next(r for r in rows if r["task"] == "copy")
    assert copy_row["baseline"] == pytest.approx(10 * np.log(8) / (long_range.QUICK.copy_delay + 20))
    assert all(np.isfinite(r["metric"]) and r["stopped"] is None for r in rows)


def test_modern_quick_trains_each_form_on_every_task(tmp_path):
    from experiments import modern

    # One model of each form: the scan (LSTM), the mLSTM's chunkwise form, Hawk's block sequence.
    config = dataclasses.replace(modern.QUICK, models=("LSTM", "mLSTM", "Hawk"))
    result = modern.run(config, tmp_path)
    rows, summary = result["rows"], result["summary"]
    assert [(r["task"], r["model"]) for r in rows] == [(t, m) for t in modern.TASKS for m in config.models]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["memory_bytes"] > 0 and row["stopped"] is None
        assert abs(row["params"] - config.params) < 0.25 * config.params, row
    chance = {r["task"]: r["chance"] for r in rows}
    assert chance == pytest.approx({"selective_copying": 1 / 4, "induction_heads": 1 / 5, "adding": 0.0784,
                                    "temporal_order": 0.25})
    assert [r["accuracies"] for r in summary] == [[r["accuracy"]] for r in rows]
    two_seeds = modern.summarise([dict(rows[0], seed=0, accuracy=0.25), dict(rows[0], seed=1, accuracy=0.75)])
    assert two_seeds[0]["accuracies"] == [0.25, 0.75] and two_seeds[0]["mean_accuracy"] == 0.5
    text = (tmp_path / "results.md").read_text()
    assert "Seeds 0; 3 updates of 8" in text and "| adding | LSTM |" in text and "Hochreiter" in text
    assert (tmp_path / "modern.png").stat().st_size > 10_000


@pytest.mark.parametrize("model", ["mLSTM", "Hawk"])
def test_modern_parallel_forms_equal_the_scan_and_widths_match_the_budget(model, monkeypatch):
    from experiments import modern

    config = modern.QUICK
    width = modern.matched_width(model, 5, 3, config)

    def count(w):
        shapes = jax.eval_shape(lambda: modern._init(jax.random.key(0), model, 5, 3, w, config.embed_size))
        return modern.parameter_count(shapes)

    assert width == min(range(4, 65, 4), key=lambda w: abs(count(w) - config.params))  # brute force
    params = modern._init(jax.random.key(1), model, 5, 3, width, config.embed_size)
    xs = jax.random.normal(jax.random.key(2), (2, 20, 5))  # chunkwise: 20 steps in chunks of 64, padded
    parallel = modern._predict(model, params, xs)
    monkeypatch.setattr(modern, "FORMS", {})
    np.testing.assert_allclose(parallel, modern._predict(model, params, xs), atol=2e-5)


def test_hello_study_predicts_ello_and_writes_hello(tmp_path):
    from experiments import hello

    results = hello.run(hello.QUICK, tmp_path)
    assert results["predicted"] == "ello"  # fed "hell"
    assert results["sampled_from_first_char"] == "hello"
    assert min(results["probability_of_target"]) > 0.9
    assert results["final_bits_per_char"] < 0.1 < results["first_bits_per_char"]


def test_char_lm_validation_streams_cover_the_held_out_text():
    from experiments import char_lm

    ids = np.arange(10, 47, dtype=np.int32)  # 37 characters in 4 streams of at most 10
    rows, lengths = char_lm.streams(ids, 4)
    assert rows.shape == (4, 10) and lengths.tolist() == [10, 10, 10, 7]
    np.testing.assert_array_equal(np.concatenate([r[:n] for r, n in zip(np.asarray(rows), lengths.tolist())]), ids)
    with pytest.raises(ValueError, match="at least 2 characters per stream"):
        char_lm.streams(ids[:5], 4)


def test_seq2seq_quick_trains_with_and_without_attention(tmp_path):
    from experiments import seq2seq

    results = seq2seq.run(seq2seq.QUICK, tmp_path)
    rows = results["rows"]
    assert [(r["task"], r["attention"]) for r in rows] == [("dates", "none"), ("dates", "additive")]
    for row in rows:
        assert row["stopped"] is None and 0.0 <= row["exact_match"] <= 1.0
        assert sum(n for _, n in row["buckets"].values()) == seq2seq.QUICK.test_size
    assert (tmp_path / "attention.png").stat().st_size > 10_000


def test_seq2seq_split_and_exact_match():
    from experiments import seq2seq
    from recurrax.decoding import Decoded

    config = dataclasses.replace(seq2seq.QUICK, train_size=300, test_size=50)
    train, test = seq2seq.split(config, "reverse")
    assert len(test) == 50 and not {s for s, _ in train} & {s for s, _ in test}
    target, lengths = np.array([[5, 6, 0], [7, 0, 0], [5, 5, 5]]), np.array([2, 1, 3])
    decoded = Decoded(np.array([[5, 6, 2, 0], [7, 4, 2, 0], [5, 5, 5, 3]]), np.array([3, 3, 4]), np.zeros(3))
    # Right, then an extra token before <eos>, then no <eos> at all.
    assert seq2seq.exact_matches(decoded, target, lengths).tolist() == [True, False, False]
    buckets = seq2seq.length_buckets(np.array([1, 2, 3, 4, 7]), np.array([1, 1, 0, 1, 0], bool), 3)
    assert buckets == {"1-3": (2 / 3, 3), "4-6": (1.0, 1), "7-9": (0.0, 1)}
