"""Runnable studies and benchmarks: ``python -m experiments NAME [--quick | --preset P] [--key value ...]``.

Each experiment is a module with a frozen-dataclass ``Config`` (the defaults), a ``QUICK``
config small enough for the test suite, and ``run(config, out_dir) -> dict`` that writes
``out_dir/results.json`` (and figures) and returns the results. A module may also name larger
configs in ``PRESETS`` (``--preset NAME``, e.g. a run at a paper's scale). Experiments use only
the public API of ``recurrax``.
"""

EXPERIMENTS = {
    "tour": "experiments.tour",
    "demo": "experiments.demo",
    "bench": "experiments.bench",
    "truncated_vs_full": "experiments.truncated_vs_full",
    "vanishing": "experiments.vanishing",
    "clipping": "experiments.clipping",
    "long_range": "experiments.long_range",
    "hello": "experiments.hello",
    "esn": "experiments.esn",
    "char_lm": "experiments.char_lm",
    "seq2seq": "experiments.seq2seq",
    "ntm": "experiments.ntm",
    "mitigations": "experiments.mitigations",
    "parallel_in_time": "experiments.parallel_in_time",
    "modern": "experiments.modern",
    "modern_speed": "experiments.modern_speed",
    "cpu_levers": "experiments.cpu_levers",
}
