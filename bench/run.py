"""`make bench`: run the benchmarks, write bench/results.json and bench/results.md, regenerate the
README's Performance section. Run from the repository root (`.venv/bin/python -m bench.run`)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from bench import node_bench, pull_bench, stage_bench, verify_bench
from bench.common import REPO, Figure, load_average, machine, with_load
from bench.readme import RESULTS, table, update_readme

SUITE_TIME = REPO / "bench" / "suite_time.json"  # {"seconds": N, "date": ...}: the lead's last full run

NOT_MEASURED: dict[str, str] = {}


def suite_figure() -> Figure | None:
    if not SUITE_TIME.exists():
        NOT_MEASURED["whole test suite (2 cores)"] = "the lead fills bench/suite_time.json"
        return None
    data = json.loads(SUITE_TIME.read_text())
    s = float(data["seconds"])
    return Figure(
        "whole test suite (make test, 2 cores)",
        "s",
        s,
        1200.0,
        "the 20-minute budget (s)",
        "value < 1200 s",
        s < 1200,
        ratio=round(s / 1200, 3),
        explanation=f"reported by the lead's run of {data.get('date', 'unknown date')}, not run by the bench",
    )


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="eks-mirror-bench-"))
    load_start = load_average()
    figures: list[Figure] = []
    figures += with_load(lambda: pull_bench.measure(work / "pull"))
    figures += with_load(lambda: stage_bench.measure(work / "stages"))
    figures += with_load(lambda: verify_bench.measure(work / "verify"))
    figures += with_load(lambda: node_bench.measure(work / "node"))
    suite = suite_figure()
    if suite is not None:
        figures.append(suite)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**machine(), "load_before": load_start, "load_after": load_average()},
        "note": "figures taken with a 1-minute load average above 1.0 are provisional (a shared machine)",
        "figures": [f.to_json() for f in figures],
        "not_measured": NOT_MEASURED,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    (REPO / "bench" / "results.md").write_text("# Benchmark results\n\n" + table(results))
    readme = REPO / "README.md"
    readme.write_text(update_readme(readme, results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
