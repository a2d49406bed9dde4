"""Write ``tests/slow_tests.txt``, the slow tier, from the durations of a whole-suite run.

Usage (from the repository root, on a quiet 2-core machine, with a cold compilation cache)::

    python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider --durations=0 -m "" > durations.log
    python tests/select_slow.py durations.log [--threshold SECONDS]
    python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider --durations=0 -m "not slow" > fast.log
    python tests/select_slow.py fast.log --add [--threshold SECONDS]

A test case whose setup + call + teardown took at least the threshold (3 s by default) joins the
slow tier. The second pass (``--add``, on a run of the fast tier alone) adds the cases that became
slow once the others left: compilation shared between tests moves to the next test that needs it.
Tests whose cost sits in a module-scoped fixture (the tour's run, the multi-device workers, the
site's build) are marked in their own modules instead. The tiers decide only which command runs
a test, never what it checks: the README's test command runs the fast tier (``-m "not slow"``),
``.ci/run`` runs both.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re

LIST = pathlib.Path(__file__).resolve().parent / "slow_tests.txt"
HEADER = """\
# The slow tier: test cases whose setup + call + teardown took at least the threshold of the pass
# that listed them, in cold runs on 2 cores: 3 s over the whole suite, then over the fast tier
# alone 4 s (on a loaded machine) and 6 s (in a clean-clone run of .ci/run); the modern cells'
# tests (issue 29) at 1 s, over their own files and their cases of the common suite, so that the
# fast tier keeps its 8 minutes; the modern study's and the chunked associative scan's tests
# (issue 29, second part) at 3 s, over a run of their own files; then 6 s again over a clean-clone
# run of the fast tier (2026-12-07, 499 s: the machine read slower than at the 396 s run); the
# new Hessian-free options' and paper-scale mitigations' tests (issue 30) at 3 s, over a run of
# their own cases while two background study processes loaded the machine; then 6 s, and 4 s,
# over a clean-clone run of the fast tier (2026-12-07, 511 s cold, and 494 s after the 6 s pass);
# the extension of kept HF runs (issue 30) at 3 s, over its own run beside the two study processes.
# the committed paper-scale runs' check and the held-inputs measure (issue 30) at 3 s, over their own run beside the two study processes.
# conftest.py marks
# them `slow`; the README's test command runs the rest (-m "not slow"), .ci/run runs both tiers.
# Tests whose cost sits in a shared fixture are marked in their modules instead (test_tour.py
# and test_sharding.py whole, test_site.py's builds and pages): a list would move that cost to
# the next test. Regenerate with tests/select_slow.py (its docstring gives the commands);
# test_layout.py checks that every entry names a test.
# seconds  test
"""


def listed() -> dict[str, float]:
    """The slow tier as listed: test id -> the seconds it was measured at."""
    entries = {}
    for line in LIST.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            seconds, test = line.split(None, 1)
            entries[test.strip()] = float(seconds)
    return entries


def durations(log: pathlib.Path) -> dict[str, float]:
    """Seconds per test case (setup + call + teardown) from ``pytest --durations=0`` output."""
    per_test: dict[str, float] = collections.defaultdict(float)
    for line in log.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([0-9.]+)s (?:call|setup|teardown)\s+(\S.*?)\s*$", line)
        if match:
            per_test[match.group(2)] += float(match.group(1))
    return dict(per_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=pathlib.Path)
    parser.add_argument("--threshold", type=float, default=3.0)
    parser.add_argument("--add", action="store_true", help="add to the list instead of replacing it")
    args = parser.parse_args()
    per_test = durations(args.log)
    slow = {t: s for t, s in per_test.items() if s >= args.threshold}
    if args.add:
        slow = {**slow, **listed()}  # a listed test keeps the time it was listed with
    LIST.write_text(HEADER + "".join(f"{s:7.1f}  {t}\n" for t, s in sorted(slow.items())), encoding="utf-8")
    total = sum(per_test.values())
    left = sum(s for t, s in per_test.items() if t not in slow)
    print(f"{len(slow)} cases listed; of this log's {total:.0f} s, {left:.0f} s of worker time stay in the fast tier")


if __name__ == "__main__":
    main()
