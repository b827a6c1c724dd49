"""`runbook`: the command line for scheduled and scripted use.

    runbook params check FILE            validate a parameters file (no network)
    runbook params schema                print the JSON Schema of parameters files
    runbook run [STAGE ...] --params F   execute stage notebooks (plan only unless --apply)
    runbook report [--output-dir DIR]    write DIR/index.html listing the runs (DIR may be s3://BUCKET/PREFIX)
    runbook fleet run --params-dir DIR   the same stages for every parameters file in DIR, N at a time
    runbook lab up|down|status           the built-in lab
    runbook lab break|fix FAULT          put a real-cluster fault into the lab, take it out (`lab faults`)
    runbook notebook [--params F] [--lab] JupyterLab on the stage notebooks (loopback), with the form
    runbook notebook --course            the onboarding course on the lab (`lab up` first)

Exit codes: 0 ok, 1 a stage (or lab component) failed, or `run` could not write or push its metrics
(--metrics-file, --pushgateway; the run is recorded all the same), 2 invalid input (nothing executed),
3 `run --apply` refused because another apply holds the target's lock (nothing executed; see
runbook_lib/lock.py: a lock left by a killed run is taken over, plan-only runs take none unless
--hold-lock). `fleet run`: 0 every target ok, 1 a target failed, 2 invalid input, 3 a target refused by
its lock and none failed (runbook_lib/fleet.py).
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
def check_output_dir(value: str | None, option: str = "--output-dir") -> str | None:
    """A local folder as given, or a valid s3:// URL; raises ValueError naming the option (never the value:
    a pasted URL may carry something secret)."""
    if value is None or "://" not in value or value.startswith("file://"):
        return value
    from runbook_lib.audit.destinations import parse_s3_url

    if not value.startswith("s3://"):
        raise ValueError(
            f"{option}: a remote output is s3://BUCKET[/PREFIX]; other schemes are not supported"
        )
    try:
        return parse_s3_url(value).url
    except ValueError as err:
        raise ValueError(f"{option}: {err}") from None


def _local_or_remote(value: str | None) -> str | None:
    if value is None or "://" in value and not value.startswith("file://"):
        return value
    return str(Path(value.removeprefix("file://")).resolve())


def _write_result(path: str | None, **data: object) -> None:
    """--result-json: what `fleet run` reads back from each target's run (never a secret: the record is
    the scrubbed run.json)."""
    if not path:
        return
    from runbook_lib.audit.redact_io import RedactedOutput

    RedactedOutput().write_json(str(Path(path).resolve()), data)


def cmd_run(args: argparse.Namespace) -> int:
    stages = args.stages or list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        _err(f"unknown stage(s): {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
        _write_result(args.result_json, exit_code=2, error="unknown stage")
        return 2
    try:
        output_dir = _local_or_remote(check_output_dir(args.output_dir))
    except ValueError as err:
        _err(f"{err}; nothing was executed")
        _write_result(args.result_json, exit_code=2, error=str(err))
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
        _write_result(args.result_json, exit_code=2, error=str(err))
        return 2
    try:
        params_mod.load(args.params)
    except ParamsError as err:
        for line in err.lines():
            _err(line)
        _err("invalid parameters: nothing was executed")
        _write_result(args.result_json, exit_code=2, error="invalid parameters")
        return 2
    from runbook_lib import runner
    from runbook_lib.audit.destinations import DestinationError

    def progress(event: runner.ProgressEvent) -> None:
        print(runner.format_progress(event), flush=True)

    try:
        result = runner.run(
            Path(args.params).resolve(),
            stages,
            apply=args.apply,
            output_dir=output_dir,
            note=args.note,
            progress=progress,
            notice=lambda line: _err(f"note: {line}"),
            metrics=metrics if metrics.file or metrics.pushgateway else None,
            hold_lock=args.hold_lock,
        )
    except FileNotFoundError as err:
        _err(f"cannot run: {err}")
        _write_result(args.result_json, exit_code=2, error=f"cannot run: {err}")
        return 2
    except DestinationError as err:
        _err(f"cannot write to the output location: {err}; nothing was executed")
        _write_result(args.result_json, exit_code=2, error=f"output location: {err}")
        return 2
    except LockHeld as err:
        _err(f"runbook run{' --apply' if args.apply else ''} refused: {err}")
        _write_result(args.result_json, exit_code=EXIT_LOCKED, error=f"refused by the lock: {err}")
        return EXIT_LOCKED
    status = "ok" if result.exit_code == 0 else "FAILED"
    location = result.location or str(result.run_dir)
    parent = location.rsplit("/", 1)[0]
    print(f"run {status}: {location}")
    print(f"  record: {location}/run.json")
    print(f"  report: {parent}/index.html")
    for line in result.errors + metrics.errors:
        _err(line)
    code = result.exit_code or (1 if metrics.errors else 0)
    _write_result(args.result_json, exit_code=code, location=location, record=result.record)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from runbook_lib import runner

    # the folder `runbook run` writes to by default, as seen from where the command runs (a checkout's
    # root for `make demo`); never a path inside the installed package
    try:
        remote = check_output_dir(args.output_dir)
    except ValueError as err:
        _err(f"{err}; nothing was read")
        return 2
    if remote and "://" in remote and not remote.startswith("file://"):
        try:
            index = runner.report(remote)
        except Exception as err:  # noqa: BLE001 - boto3 and network errors: say which, no traceback
            _err(f"report: could not build the index in {remote}: {type(err).__name__}: {err}")
            return 1
        print(f"report: {index}")
        return 0
    out = Path(args.output_dir or "outputs")
    index = runner.report(out.resolve())
    print(f"report: {index}")
    return 0


# ---------------------------------------------------------------------------------------- fleet
def cmd_fleet_run(args: argparse.Namespace) -> int:
    from runbook_lib import fleet

    stages = args.stages or list(STAGES)
    problems = [
        f"STAGE: unknown stage {s!r}; stages are: {', '.join(STAGES)}" for s in stages if s not in STAGES
    ]
    try:
        fleet.check_parallel(args.parallel)
    except fleet.FleetError as err:
        problems.extend(err.problems)
    output_dir = None
    try:
        output_dir = _local_or_remote(check_output_dir(args.output_dir))
        check_output_dir(args.summary, "--summary")
    except ValueError as err:
        problems.append(str(err))
    targets = []
    if not problems:
        try:
            targets = fleet.load_targets(fleet.discover(Path(args.params_dir)), output_dir)
        except fleet.FleetError as err:
            problems.extend(err.problems)
    if problems:
        for line in problems:
            _err(line)
        _err("invalid fleet input: nothing was executed")
        return 2
    print(f"fleet: {len(targets)} target(s), {args.parallel} at a time: {', '.join(t.name for t in targets)}")
    summary = fleet.run_fleet(
        targets,
        [s for s in STAGES if s in stages],
        apply=args.apply,
        output_dir=output_dir,
        note=args.note,
        parallel=args.parallel,
        emit=lambda line: print(line, flush=True),
    )
    print(fleet.summary_table(summary))
    code = summary.exit_code
    for line in fleet.refresh_indexes(targets):
        _err(line)
    location = fleet.summary_location(args.summary, output_dir, summary.fleet_id)
    try:
        print(f"summary: {fleet.write_summary(summary, location)}")
    except Exception as err:  # noqa: BLE001 - local or S3 errors alike: the table above still stands
        _err(f"could not write the fleet summary to {location}: {type(err).__name__}: {err}")
        code = code or 1
    return code


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

    if args.action in ("break", "fix", "faults"):
        from runbook_lab import breakage

        if args.action == "faults" or getattr(args, "list", False):
            print(breakage.table())
            return 0
        if not args.fault or args.fault not in breakage.BY_NAME:
            _err(f"lab {args.action}: " + (breakage.unknown(args.fault) if args.fault else "name a fault"))
            _err(breakage.table())
            return 2
    elif getattr(args, "fault", None):
        _err(f"lab {args.action}: takes no fault name (got {args.fault!r}); `lab break|fix FAULT` does")
        return 2
    try:
        p, path = _lab_params(args)
    except ParamsError as err:
        for line in err.lines():
            _err(line)
        return 2
    lab_dir = Path(args.dir).resolve() if args.dir else p.path(p.lab.dir)
    lab = orchestrator.Lab(p, lab_dir, path)
    if args.action in ("break", "fix"):
        return _lab_fault(args, lab)
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


def _lab_fault(args: argparse.Namespace, lab: object) -> int:
    """`lab break|fix FAULT` (runbook_lab.breakage): 0 done or nothing to do, 1 failed, 2 not for this lab."""
    from runbook_lab import breakage, orchestrator

    breaker = breakage.Breaker(lab, lambda msg: print(msg, flush=True))
    try:
        act = breaker.break_fault if args.action == "break" else breaker.fix_fault
        print(act(args.fault))
    except breakage.FaultError as err:
        _err(f"lab {args.action} {args.fault}: {err}")
        return 2 if err.bad_input else 1
    except orchestrator.LabError as err:
        _err(f"lab {args.action} {args.fault}: {err}")
        return 1
    return 0


# ------------------------------------------------------------------------------------- notebook
def cmd_notebook(args: argparse.Namespace) -> int:
    """JupyterLab on the stage notebooks with this interpreter's kernel; `--lab`: `lab up` first."""
    import importlib.util

    if not 0 < args.port < 65536:
        _err(f"--port: {args.port} is not a TCP port (1-65535); nothing was started")
        return 2
    params_file = None
    args.lab = args.lab or args.course  # the course runs on the lab: `lab up` first, as with --lab
    if args.params or args.lab:
        path = Path(args.params or DEFAULT_LAB_PARAMS)
        try:
            p = params_mod.load(path)
            if args.lab and p.lab is None:
                flag = "--course" if args.course else "--lab"
                raise ParamsError(str(path), [("lab", f"{flag} needs a parameters file with a lab section")])
        except ParamsError as err:
            for line in err.lines():
                _err(line)
            _err("invalid parameters: nothing was started")
            return 2
        params_file = path.resolve()
    if importlib.util.find_spec("jupyterlab") is None:
        _err("JupyterLab is not installed in this environment (it is a dependency: pip install -e .)")
        return 2
    if args.lab:
        if importlib.util.find_spec("runbook_lab") is None:
            _err(f"notebook {'--course' if args.course else '--lab'}: {LAB_NOT_INSTALLED}")
            return 2
        rc = cmd_lab(argparse.Namespace(action="up", params=str(params_file), dir=None))
        if rc:
            return rc
    from runbook_lib import interactive
    from runbook_lib.runner import default_notebooks_dir

    notebooks = default_notebooks_dir()
    if args.course:  # copies of the lab's course, its stage notebooks beside it in stages/
        notebooks = interactive.course_copy(p, Path(args.dir) if args.dir else None)
    elif args.dir:  # work on copies: saved outputs never land in the shipped notebooks
        notebooks = interactive.working_copy(notebooks, Path(args.dir))
    return interactive.launch(notebooks, args.port, params_file, lambda m: print(m, flush=True))


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
    rp.add_argument(
        "--hold-lock",
        action="store_true",
        help="hold the target's lock for a plan-only run too, as `fleet run` does (refused, exit 3, while "
        "another run holds it)",
    )
    rp.add_argument("--result-json", help=argparse.SUPPRESS)  # for `fleet run`: exit code, location, record
    rp.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="write an index.html of the runs in an output folder")
    rep.add_argument("--output-dir", help="a local folder (default: ./outputs) or s3://BUCKET[/PREFIX]")
    rep.set_defaults(func=cmd_report)

    fp = sub.add_parser("fleet", help="run the same stages for many targets")
    fsub = fp.add_subparsers(dest="fleet_command", required=True)
    fr = fsub.add_parser("run", help="one run per parameters file in a folder, N at a time")
    fr.add_argument("stages", nargs="*", metavar="STAGE", help=f"default: all of {', '.join(STAGES)}")
    fr.add_argument(
        "--params-dir", required=True, help="folder of parameter files (*.yaml, *.yml), one per target"
    )
    fr.add_argument("--parallel", type=int, default=4, help="targets run at once (default: 4)")
    fr.add_argument("--apply", action="store_true", help="write changes (default: plan only, reads only)")
    fr.add_argument(
        "--output-dir", help="where every target's run folders go (default: each file's outputs.dir)"
    )
    fr.add_argument("--note", help="free text for every target's audit record")
    fr.add_argument(
        "--summary",
        metavar="FILE",
        help="the fleet summary JSON (default: OUTPUT_DIR/fleets/<UTC time>-fleet.json or ./outputs/fleets/)",
    )
    fr.set_defaults(func=cmd_fleet_run)

    lp = sub.add_parser("lab", help="the built-in lab of real parts and stand-ins")
    lp.add_argument("action", choices=["up", "down", "status", "break", "fix", "faults"])
    lp.add_argument("fault", nargs="?", help="break/fix: the fault (`runbook lab faults` lists them)")
    lp.add_argument("--list", action="store_true", help="break/fix: list the faults (as `lab faults`)")
    lp.add_argument("--params", default=str(DEFAULT_LAB_PARAMS), help="lab parameters (ports live there)")
    lp.add_argument("--dir", help="lab state folder (default: lab.dir of the parameters)")
    lp.set_defaults(func=cmd_lab)

    nbp = sub.add_parser("notebook", help="JupyterLab on the stage notebooks (loopback), printing the URL")
    nbp.add_argument("--params", help="the parameters file the forms start with (default: the notebooks')")
    nbp.add_argument(
        "--lab", action="store_true", help="`runbook lab up` first (default parameters/lab.yaml)"
    )
    nbp.add_argument("--port", type=int, default=8888, help="loopback port (default: 8888)")
    nbp.add_argument("--dir", help="serve copies of the stage notebooks in DIR (copied when missing)")
    nbp.add_argument(
        "--course",
        action="store_true",
        help="the onboarding course on the lab (needs the lab package): `lab up` first, copies of the course "
        "in DIR (default: LAB_DIR/course) with the stage notebooks in DIR/stages",
    )
    nbp.set_defaults(func=cmd_notebook)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
