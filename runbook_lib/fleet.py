"""`runbook fleet run`: the same stages for many targets, a bounded number at a time.

Each target runs as its own ``runbook run`` process (what one Argo pod per target does centrally:
deploy/argo): its own secrets, notebook kernels, lock and run folder, so one target failing, hanging on a
slow endpoint or dying cannot touch the others. Every target takes its lock (runbook_lib/lock.py, the one
single runs take) for the whole of its run, plan-only runs too: two fleets never run one target at once,
and an ``--apply`` by hand is refused while a fleet runs that target (a plan by hand is only told).

Exit codes (README "Fleets"): 0 every target ok; 1 at least one target failed (a stage failed, its record
could not be written, or it could not start); 2 invalid options or parameter files (nothing executed);
3 no target failed but at least one was refused by its lock (another run holds it; nothing executed
for that target).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib import params as params_mod
from runbook_lib.audit.destinations import DESTINATIONS, is_remote, join
from runbook_lib.audit.redact_io import RedactedOutput
from runbook_lib.lock import EXIT_LOCKED
from runbook_lib.params import ParamsError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
MAX_PARALLEL = 64
PARAM_SUFFIXES = (".yaml", ".yml")
FLEETS = "fleets"  # the summaries' folder inside the output folder


class FleetError(Exception):
    """Invalid fleet input: one line per problem, each naming the option or file and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Target:
    name: str
    params_file: Path
    output: str  # where its run folders go: --output-dir or its own outputs.dir


@dataclass
class TargetResult:
    target: str
    params_file: str
    status: str  # ok | failed | locked | error
    exit_code: int
    run: str | None = None  # the run folder's location
    run_status: str | None = None
    stages: dict[str, str] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    reason: str | None = None


def check_parallel(value: int) -> int:
    if not 1 <= value <= MAX_PARALLEL:
        raise FleetError([f"--parallel: must be between 1 and {MAX_PARALLEL}"])
    return value


def discover(params_dir: Path) -> list[Path]:
    """The parameter files directly in the folder (*.yaml, *.yml), by name."""
    if not params_dir.is_dir():
        raise FleetError([f"--params-dir: {params_dir} is not a folder"])
    files = sorted(p for p in params_dir.iterdir() if p.is_file() and p.suffix in PARAM_SUFFIXES)
    if not files:
        raise FleetError([f"--params-dir: no parameter files (*.yaml, *.yml) in {params_dir}"])
    return files


def load_targets(files: list[Path], output_dir: str | None) -> list[Target]:
    """Every file valid and every target named once (two files of one target would only meet its lock)."""
    from runbook_lib.runner import output_location

    problems: list[str] = []
    targets: list[Target] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            p = params_mod.load(path)
        except ParamsError as err:
            problems.extend(err.lines())
            continue
        if p.target in seen:
            problems.append(f"{path}: target: {p.target!r} is also the target of {seen[p.target].name}")
            continue
        seen[p.target] = path
        targets.append(Target(p.target, path.resolve(), output_location(output_dir, p)))
    if problems:
        raise FleetError(problems)
    return targets


def target_command(
    target: Target, stages: list[str], apply: bool, output_dir: str | None, note: str | None, result: Path
) -> list[str]:
    cmd = [sys.executable, "-m", "runbook_lib.cli", "run", *stages, "--params", str(target.params_file)]
    cmd += ["--hold-lock", "--result-json", str(result)]
    if apply:
        cmd.append("--apply")
    if output_dir:
        cmd += ["--output-dir", output_dir]
    if note:
        cmd += ["--note", note]
    return cmd


def _status(code: int) -> str:
    return {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_LOCKED: "locked"}.get(code, "error")


def read_result(
    target: Target, code: int, result_file: Path, last_line: str, duration_s: float
) -> TargetResult:
    """What one target's process left: its result file (run folder, record), else its last output line."""
    out = TargetResult(
        target.name, str(target.params_file), _status(code), code, duration_s=round(duration_s, 3)
    )
    try:
        data = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    record = data.get("record") or {}
    out.run = data.get("location")
    out.run_status = record.get("status")
    for stage in record.get("stages", []):
        out.stages[str(stage.get("name"))] = str(stage.get("status"))
        for kind, n in (stage.get("changes") or {}).items():
            out.changes[kind] = out.changes.get(kind, 0) + int(n)
        failure = stage.get("failure") or {}
        if stage.get("status") == "failed" and out.reason is None:
            out.reason = f"{stage.get('name')}: {failure.get('reason') or 'failed'}"
    if out.reason is None and code != EXIT_OK:
        out.reason = data.get("error") or last_line or f"exit code {code}"
    return out


def run_target(
    target: Target,
    stages: list[str],
    apply: bool,
    output_dir: str | None,
    note: str | None,
    emit: Callable[[str], None],
) -> TargetResult:
    """One ``runbook run`` process; its output lines go to ``emit`` prefixed with the target."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="runbook-fleet-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = target_command(target, stages, apply, output_dir, note, result_file)
        last = ""
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as err:
            return TargetResult(target.name, str(target.params_file), "error", -1, reason=str(err))
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.strip():
                last = line.strip()
            emit(f"[{target.name}] {line}")
        code = proc.wait()
        return read_result(target, code, result_file, last, time.monotonic() - started)


@dataclass
class FleetSummary:
    fleet_id: str
    started: str
    ended: str
    mode: str
    stages: list[str]
    parallel: int
    exit_code: int
    targets: list[TargetResult]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "targets": [asdict(t) for t in self.targets]}


def fleet_exit_code(results: list[TargetResult]) -> int:
    if any(r.status not in ("ok", "locked") for r in results):
        return EXIT_FAILED
    if any(r.status == "locked" for r in results):
        return EXIT_LOCKED
    return EXIT_OK


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_fleet(
    targets: list[Target],
    stages: list[str],
    *,
    apply: bool = False,
    output_dir: str | None = None,
    note: str | None = None,
    parallel: int = 4,
    emit: Callable[[str], None] = print,
) -> FleetSummary:
    """Run every target, ``parallel`` at a time; the summary lists them in the order given."""
    started = dt.datetime.now(dt.UTC)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:  # whole lines, never two targets' output within one
            emit(line)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="fleet") as pool:
        futures = [pool.submit(run_target, t, stages, apply, output_dir, note, say) for t in targets]
        results = [f.result() for f in futures]
    ended = dt.datetime.now(dt.UTC)
    return FleetSummary(
        fleet_id=f"{started.strftime('%Y%m%dT%H%M%SZ')}-fleet",
        started=_iso(started),
        ended=_iso(ended),
        mode="apply" if apply else "plan",
        stages=stages,
        parallel=parallel,
        exit_code=fleet_exit_code(results),
        targets=results,
    )


def summary_table(summary: FleetSummary) -> str:
    rows = [("target", "status", "exit", "duration", "stages", "changes", "run")]
    for r in summary.targets:
        changes = ", ".join(f"{n} {k}" for k, n in sorted(r.changes.items()) if n) or "-"
        stages = " ".join(f"{s}:{st}" for s, st in r.stages.items()) or "-"
        rows.append(
            (r.target, r.status, str(r.exit_code), f"{r.duration_s:.1f} s", stages, changes, r.run or "-")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in summary.targets:
        if r.reason and r.status != "ok":
            lines.append(f"  {r.target}: {r.reason}")
    counts = {
        s: sum(1 for r in summary.targets if r.status == s) for s in ("ok", "failed", "locked", "error")
    }
    lines.append(
        f"fleet {summary.fleet_id}: {len(summary.targets)} target(s), "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f"; exit {summary.exit_code}"
    )
    return "\n".join(lines)


def summary_location(summary_file: str | None, output_dir: str | None, fleet_id: str) -> str:
    """``--summary FILE``; else ``<--output-dir>/fleets/<fleet id>.json``; else ``outputs/fleets/`` where
    the command runs (as `runbook report` does)."""
    if summary_file:
        return summary_file if is_remote(summary_file) else str(Path(summary_file).resolve())
    base = output_dir if output_dir else str(Path("outputs").resolve())
    base = base.rstrip("/") if is_remote(base) else str(Path(base).resolve())
    return join(base, FLEETS, f"{fleet_id}.json")


def write_summary(summary: FleetSummary, location: str) -> str:
    folder = location.rsplit("/", 1)[0]
    DESTINATIONS.handler_for(folder).makedirs(folder)
    RedactedOutput().write_json(location, summary.to_json())
    return location


def refresh_indexes(targets: list[Target]) -> list[str]:
    """Rebuild the index of every output folder the fleet wrote to (its runs finished in any order)."""
    from runbook_lib.audit.report import report

    problems = []
    for output in sorted({t.output for t in targets}):
        try:
            report(output)
        except Exception as err:  # noqa: BLE001 - the index is a convenience; run.json is the record
            problems.append(f"could not update the run index in {output}: {type(err).__name__}: {err}")
    return problems
