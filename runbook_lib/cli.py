"""`runbook`: the command line for scheduled and scripted use.

    runbook params check FILE            validate a parameters file (no network)
    runbook params schema                print the JSON Schema of parameters files
    runbook run [STAGE ...] --params F   execute stage notebooks (plan only unless --apply)
    runbook report [--output-dir DIR]    write DIR/index.html listing the runs
    runbook lab up|down|status           the built-in lab

Exit codes: 0 ok, 1 a stage (or lab component) failed, or `run` could not write or push its metrics
(--metrics-file, --pushgateway; the run is recorded all the same), 2 invalid input (nothing executed),
3 `run --apply` refused because another apply holds the target's lock (nothing executed; see
runbook_lib/lock.py: a lock left by a killed run is taken over, plan-only runs take none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runbook_lib import params as params_mod
from runbook_lib.lock import EXIT_LOCKED, LockHeld
from runbook_lib.params import STAGES, ParamsError

DEFAULT_LAB_PARAMS = Path("parameters/lab.yaml")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------------------- params
def cmd_params_check(args: argparse.Namespace) -> int:
    try:
        p = params_mod.load(args.file)
    except ParamsError as err:
        for line in err.lines():
            print(line)
        print(f"{len(err.problems)} problem(s) in {args.file}")
        return 2
    print(f"{args.file}: ok — {params_mod.summary(p)}")
    for path, reason in params_mod.advisories(p):  # valid, but worth knowing before a run (exit 0)
        print(f"  warning {path}: {reason}")
    for path, ref in p.secret_refs():
        print(f"  secret {path}: {ref.scheme} reference (resolved at run time)")
    return 0


def cmd_params_schema(args: argparse.Namespace) -> int:
    print(json.dumps(params_mod.json_schema(), indent=2))
    return 0


# ------------------------------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace) -> int:
    stages = args.stages or list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        _err(f"unknown stage(s): {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
        return 2
    from runbook_lib.audit import metrics as metrics_mod

    try:
        metrics = metrics_mod.MetricsOutput(
            file=metrics_mod.check_metrics_file(args.metrics_file) if args.metrics_file else None,
            pushgateway=metrics_mod.check_pushgateway(args.pushgateway) if args.pushgateway else None,
            job=args.pushgateway_job,
        )
        if args.pushgateway and not args.pushgateway_job:
            raise metrics_mod.MetricsOptionError("--pushgateway-job", "must not be empty")
    except metrics_mod.MetricsOptionError as err:
        _err(f"{err}; nothing was executed")
        return 2
    try:
        params_mod.load(args.params)
    except ParamsError as err:
        for line in err.lines():
            _err(line)
        _err("invalid parameters: nothing was executed")
        return 2
    from runbook_lib import runner

    def progress(event: runner.ProgressEvent) -> None:
        print(runner.format_progress(event), flush=True)

    try:
        result = runner.run(
            Path(args.params).resolve(),
            stages,
            apply=args.apply,
            output_dir=Path(args.output_dir).resolve() if args.output_dir else None,
            note=args.note,
            progress=progress,
            notice=lambda line: _err(f"note: {line}"),
            metrics=metrics if metrics.file or metrics.pushgateway else None,
        )
    except FileNotFoundError as err:
        _err(f"cannot run: {err}")
        return 2
    except LockHeld as err:
        _err(f"runbook run --apply refused: {err}")
        return EXIT_LOCKED
    status = "ok" if result.exit_code == 0 else "FAILED"
    print(f"run {status}: {result.run_dir}")
    print(f"  record: {result.run_dir / 'run.json'}")
    print(f"  report: {result.run_dir.parent / 'index.html'}")
    for line in metrics.errors:
        _err(line)
    return result.exit_code or (1 if metrics.errors else 0)


def cmd_report(args: argparse.Namespace) -> int:
    from runbook_lib import runner

    # the folder `runbook run` writes to by default, as seen from where the command runs (a checkout's
    # root for `make demo`); never a path inside the installed package
    out = Path(args.output_dir or "outputs")
    index = runner.report(out.resolve())
    print(f"report: {index}")
    return 0


# ------------------------------------------------------------------------------------------ lab
def _lab_params(args: argparse.Namespace) -> tuple[params_mod.RunbookParams, Path]:
    path = Path(args.params)
    p = params_mod.load(path)
    if p.lab is None:
        raise ParamsError(str(path), [("lab", "this parameters file has no lab section")])
    return p, path.resolve()


LAB_NOT_INSTALLED = (
    "the built-in lab is not installed (it is a separate package, never a dependency of the "
    "runbook): from a checkout, `make demo` or `pip install ./lab` installs it"
)


def cmd_lab(args: argparse.Namespace) -> int:
    try:
        from runbook_lab import orchestrator
    except ModuleNotFoundError as err:
        if err.name != "runbook_lab":
            raise
        _err(f"lab {args.action}: {LAB_NOT_INSTALLED}")
        return 2

    try:
        p, path = _lab_params(args)
    except ParamsError as err:
        for line in err.lines():
            _err(line)
        return 2
    lab_dir = Path(args.dir).resolve() if args.dir else p.path(p.lab.dir)
    lab = orchestrator.Lab(p, lab_dir, path)
    try:
        if args.action == "up":
            lab.up(progress=lambda msg: print(msg, flush=True))
            print(lab.status_table())
        elif args.action == "down":
            stopped = lab.down()
            print(
                f"lab down: stopped {len(stopped)} process(es)"
                + (f": {', '.join(stopped)}" if stopped else "")
            )
        else:
            # Exit 0 only when every component is up; 1 names on stderr what is down or not answering.
            rows = lab.status_rows()
            print(lab.status_table(rows))
            not_up = [f"{r['component']} ({r['state']})" for r in rows if r["state"] != "up"]
            if not_up:
                _err(f"lab status: not all components up: {', '.join(not_up)}")
                return 1
    except orchestrator.LabError as err:
        _err(f"lab {args.action}: {err}")
        return 1
    return 0


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="runbook", description="EKS registry mirror runbook (Nexus 3 + Karpenter)"
    )
    sub = ap.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("params", help="validate parameters or print their schema")
    psub = pp.add_subparsers(dest="params_command", required=True)
    pc = psub.add_parser("check", help="validate a parameters file (no network)")
    pc.add_argument("file")
    pc.set_defaults(func=cmd_params_check)
    ps = psub.add_parser("schema", help="print the JSON Schema")
    ps.set_defaults(func=cmd_params_schema)

    rp = sub.add_parser("run", help="execute stage notebooks and save the audit record")
    rp.add_argument("stages", nargs="*", metavar="STAGE", help=f"default: all of {', '.join(STAGES)}")
    rp.add_argument("--params", required=True, help="parameters YAML file")
    rp.add_argument("--apply", action="store_true", help="write changes (default: plan only, reads only)")
    rp.add_argument("--output-dir", help="where run folders go (default: outputs.dir of the parameters)")
    rp.add_argument("--note", help="free text for the audit record, e.g. a change ticket")
    rp.add_argument(
        "--metrics-file",
        metavar="FILE",
        help="write the run's metrics (Prometheus text format, docs/metrics.md) to FILE atomically, failed "
        "runs too; for node-exporter's textfile collector the name must end in .prom (the collector reads "
        "only *.prom), e.g. /var/lib/node_exporter/textfile/runbook-{target}.prom ({target}: the target)",
    )
    rp.add_argument(
        "--pushgateway",
        metavar="URL",
        help="also PUT the metrics to a Prometheus Pushgateway, to the group "
        "URL/metrics/job/JOB/instance/TARGET/stages/STAGES",
    )
    rp.add_argument("--pushgateway-job", default="runbook", metavar="JOB", help="job name (default: runbook)")
    rp.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="write an index.html of the runs in an output folder")
    rep.add_argument("--output-dir")
    rep.set_defaults(func=cmd_report)

    lp = sub.add_parser("lab", help="the built-in lab of real parts and stand-ins")
    lp.add_argument("action", choices=["up", "down", "status"])
    lp.add_argument("--params", default=str(DEFAULT_LAB_PARAMS), help="lab parameters (ports live there)")
    lp.add_argument("--dir", help="lab state folder (default: lab.dir of the parameters)")
    lp.set_defaults(func=cmd_lab)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
