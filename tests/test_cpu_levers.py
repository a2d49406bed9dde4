"""The CPU-levers study runs at its quick config, and every variant it times computes what
``recurrax.rnn`` / ``recurrax.bidirectional`` compute (values and gradients)."""

from experiments import EXPERIMENTS, cpu_levers


def test_cpu_levers_quick_times_every_variant_and_each_equals_the_reference(tmp_path):
    assert EXPERIMENTS["cpu_levers"] == "experiments.cpu_levers"
    results = cpu_levers.run(cpu_levers.QUICK, tmp_path)
    assert [(r["m"], r["k"], r["n"]) for r in results["gemm"]] == [(2, 11, 32), (2, 8, 32), (64, 64, 64)]
    variants = {r["variant"]: r for r in results["forward"]}
    assert set(variants) == {"recurrax.rnn", *cpu_levers.VARIANTS}
    for name, row in variants.items():
        assert row["median_ms"] > 0
        if "diagnostic" not in name:  # the diagnostics compute something else, on purpose
            assert row["max_abs_deviation"] < 1e-5, name
    assert sorted({(r["unroll"], r["mode"]) for r in results["unroll"]}) == sorted(
        (u, m) for u in (1, 2, 4, 8) for m in ("forward", "forward+backward"))
    assert all(r["max_abs_deviation"] < 1e-5 for r in results["unroll"])
    assert {r["impl"] for r in results["directions"]} == {"two scans (recurrax.bidirectional)", "one vmap-ed scan"}
    assert all(r["max_abs_deviation"] < 1e-5 for r in results["directions"])
    assert "XLA / torch" in (tmp_path / "results.md").read_text()
