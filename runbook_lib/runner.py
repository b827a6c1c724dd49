"""Run the stage notebooks with papermill and leave an audit record of the run.

The job reads top to bottom as ``run()``; each step is a small function that can be tested alone:

    load_params -> lock.acquire (apply only: one writer per target) -> register_param_secrets
    -> create_run_dir
    -> for each stage: execute_stage (papermill, saves through the redact:// handler) -> read_stage
       (stop at the first failed stage; the rest are skipped)
    -> annotate_and_render (banner cell, HTML) -> write_run_record (run.json)
    -> metrics (optional: Prometheus textfile, Pushgateway) -> report (index.html)

An ``s3://`` output location is written through a local staging folder (``destinations.StagedOutput``):
the history store is downloaded first, the run folder uploaded after every stage and at the end, the
history merged back, then the index is rebuilt from S3.

Nothing secret is passed to a notebook: the parameters are the parameters file's path, the mode, the
run folder and the stage id. The runner resolves the file's secret references too, only so that its
redactor knows the values and scrubs them from every file it writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook_lib import lock as lock_mod
from runbook_lib import params as params_mod
from runbook_lib.audit.banner import add_banner, banner_markdown, change_summary
from runbook_lib.audit.destinations import DESTINATIONS, DestinationError, StagedOutput, is_remote, join
from runbook_lib.audit.html import warm_up as html_warm_up
from runbook_lib.audit.record import StageRecords, collect_records
from runbook_lib.audit.redact_io import (
    RedactedOutput,
    install_papermill_handler,
    redacted_location,
    register_secret,
)
from runbook_lib.audit.report import RUN_JSON
from runbook_lib.audit.report import report as write_report
from runbook_lib.audit.saves import ENGINE as SAVES_ENGINE
from runbook_lib.audit.saves import register_engine
from runbook_lib.notebook import register_initial_password, resolve_context
from runbook_lib.params import STAGES, ParamsError, RunbookParams
from runbook_lib.secrets import resolve as resolve_ref

if TYPE_CHECKING:
    from runbook_lib.audit.metrics import MetricsOutput

__all__ = [
    "STAGE_NOTEBOOKS",
    "ParamsError",
    "ProgressEvent",
    "RunResult",
    "StageOutcome",
    "default_notebooks_dir",
    "execute_stage",
    "format_progress",
    "report",
    "run",
]

STAGE_NOTEBOOKS: dict[str, str] = {
    "preflight": "00_preflight.ipynb",
    "nexus-repos": "01_nexus_repositories.ipynb",
    "nexus-security": "02_nexus_security.ipynb",
    "helm": "03_helm.ipynb",
    "karpenter": "04_karpenter.ipynb",
    "verify": "05_verification.ipynb",
}
DEFAULT_CELL_TIMEOUT_S = 3600.0  # at least rollout_timeout_s + 10 min, see run()
KERNEL_START_TIMEOUT_S = 60
RUN_LOG = "run.log"

report = write_report

# --------------------------------------------------------------------------------------- data types


@dataclass
class ProgressEvent:
    """Sent to the progress callback when a stage starts (phase "start") and ends (phase "end")."""

    index: int  # 1-based position among the requested stages
    total: int
    stage: str
    phase: str  # start | end
    status: str | None = None  # ok | failed | skipped (phase "end")
    duration_s: float | None = None
    changes: dict[str, int] | None = None
    reason: str | None = None


def format_progress(event: ProgressEvent) -> str:
    """``[2/6] nexus-repos ... ok (3.2 s, 2 create, 0 update, 5 unchanged)``"""
    head = f"[{event.index}/{event.total}] {event.stage} ..."
    if event.phase == "start":
        return head
    if event.status == "skipped":
        return f"{head} skipped"
    changes = event.changes or {}
    detail = f"{event.duration_s or 0:.1f} s, " + ", ".join(
        f"{changes.get(k, 0)} {k}" for k in ("create", "update", "unchanged")
    )
    if changes.get("delete"):
        detail += f", {changes['delete']} delete"
    line = f"{head} {event.status} ({detail})"
    if event.status == "failed" and event.reason:
        line += f": {event.reason}"
    return line


@dataclass
class StageOutcome:
    name: str
    status: str  # ok | failed | skipped
    notebook: str | None = None  # file name inside the run folder
    html: str | None = None
    started: str | None = None
    ended: str | None = None
    duration_s: float = 0.0
    records: StageRecords = field(default_factory=StageRecords)
    failure: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "started": self.started,
            "ended": self.ended,
            "notebook": self.notebook,
            "html": self.html,
            "changes": self.records.change_counts(),
            "results": self.records.results,
            "checks": self.records.checks,
            "flags": self.records.flags,
            "failure": self.failure,
        }


@dataclass
class RunResult:
    exit_code: int  # 0 every stage ok, 1 a stage failed (or the record could not be uploaded)
    run_dir: Path  # the local run folder (for a remote output: its staging copy, gone once uploaded)
    record: dict[str, Any]
    location: str = ""  # where the run folder is: run_dir, or its s3:// location
    errors: list[str] = field(default_factory=list)  # uploads that failed (the staging copy is kept)


# ---------------------------------------------------------------------------------------- the steps


def default_notebooks_dir() -> Path:
    """The stage notebooks shipped inside the package (runbook_lib/notebooks), in a checkout or a wheel."""
    return Path(__file__).resolve().parent / "notebooks"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def select_stages(stages: Iterable[str] | None) -> list[str]:
    """The requested stages in pipeline order; unknown ids are an error."""
    if stages is None:
        return list(STAGES)
    wanted = list(stages)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def stage_notebook_paths(stages: list[str], notebooks_dir: Path) -> dict[str, Path]:
    paths = {s: notebooks_dir / STAGE_NOTEBOOKS[s] for s in stages}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"stage notebook(s) not found: {', '.join(missing)}")
    return paths


def load_params(params_file: Path) -> RunbookParams:
    return params_mod.load(params_file)  # raises ParamsError


def output_location(output_dir: str | Path | None, params: RunbookParams) -> str:
    """Where run folders go: ``--output-dir`` or ``outputs.dir``; a local path resolved, an s3:// URL
    kept as written (without a trailing '/')."""
    if output_dir is not None:
        text = str(output_dir)
        return text.rstrip("/") if is_remote(text) else str(Path(text).resolve())
    if is_remote(params.outputs.dir):
        return params.outputs.dir.rstrip("/")
    return str(params.path(params.outputs.dir))


def param_secret_users(params: RunbookParams) -> dict[str, str | None]:
    """The user each secret belongs to (for the base64(user:password) form), by field path."""
    users: dict[str, str | None] = {"nexus.admin_password": params.nexus.admin_user}
    for i, up in enumerate(params.upstreams):
        if up.credentials:
            users[f"upstreams[{i}].credentials.password"] = up.credentials.username
    users["security.pull_password"] = params.security.user
    return users


def register_param_secrets(params: RunbookParams) -> list[str]:
    """Resolve every secret reference here too and register the values with the redactor.

    Failures are not errors here: the stage that needs a secret reports why it could not get it.
    Returns the field paths that resolved.
    """
    users = param_secret_users(params)
    resolved = []
    for field_path, ref in params.secret_refs():
        try:
            value = resolve_ref(ref, resolve_context(params, ref), user=users.get(field_path))
        except Exception:  # noqa: BLE001 - any store error; the notebook reports it readably
            continue
        register_secret(value, users.get(field_path))
        resolved.append(field_path)
    register_initial_password(params)
    return resolved


def create_run_dir(
    output_dir: str | Path,
    target: str,
    started: dt.datetime,
    taken: Callable[[str], bool] | None = None,
) -> tuple[str, str]:
    """``DIR/<YYYYmmddTHHMMSSZ>-<target>/``; a suffix keeps two runs in one second apart. ``taken`` tells
    whether a run id is used elsewhere too (the remote location a staging folder is uploaded to)."""
    location = str(output_dir)
    handler = DESTINATIONS.handler_for(location)
    handler.makedirs(location)
    base = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{target}"
    run_id, n = base, 1
    while handler.exists(join(location, run_id)) or (taken is not None and taken(run_id)):
        n += 1
        run_id = f"{base}-{n}"
    run_dir = join(location, run_id)
    handler.makedirs(run_dir)
    return run_id, run_dir


def stage_file(stage: str, suffix: str) -> str:
    return f"{STAGES.index(stage):02d}_{stage}{suffix}"


def stage_parameters(stage: str, params_file: Path, apply: bool, run_dir: str) -> dict[str, Any]:
    """The four values of every stage notebook's ``parameters`` cell. Never a secret."""
    return {"params_file": str(params_file), "apply": bool(apply), "run_dir": str(run_dir), "stage": stage}


# Descriptors every kernel started by this process inherits: the held target lock during an apply.
_KERNEL_PASS_FDS: tuple[int, ...] = ()


def ipc_kernel_manager_class() -> type | None:
    """A kernel manager using IPC sockets: no ``running over TCP without encryption`` warning on every
    kernel (ipykernel 7; checked with this lock). None falls back to nbclient's default."""
    try:
        from jupyter_client.manager import AsyncKernelManager
        from traitlets import CaselessStrEnum
    except ImportError:
        return None

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            # the kernel inherits the target lock's descriptor: the lock lasts while the kernel does
            if _KERNEL_PASS_FDS:
                kw.setdefault("pass_fds", _KERNEL_PASS_FDS)
            await super()._async_launch_kernel(kernel_cmd, **kw)

    return IPCKernelManager


@dataclass
class Execution:
    """What papermill left behind for one stage."""

    nb: Any  # the saved (scrubbed) notebook, or None if nothing was saved
    error: BaseException | None
    started: dt.datetime
    ended: dt.datetime
    cell_timeout_s: float


class _LogLines(logging.Handler):
    """Sends papermill's and nbclient's warnings ("Kernel died while waiting for execute reply",
    "Passed unknown parameter") to the run log instead of the operator's terminal."""

    def __init__(self, log: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._log(f"  papermill {record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _papermill_warnings_to(log: Callable[[str], None] | None) -> Iterator[None]:
    if log is None:
        yield
        return
    logger = logging.getLogger("papermill")
    handler = _LogLines(log)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def execute_stage(
    input_path: Path,
    output_location: str,
    parameters: dict[str, Any],
    cwd: Path,
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> Execution:
    """Execute one notebook; every save goes through the redacting handler. Never raises for a failing
    notebook (cell error, timeout, dead kernel): the error is returned with what was saved. With
    ``log``, papermill's warnings go there instead of the terminal."""
    import nbformat
    import papermill

    install_papermill_handler()
    register_engine()
    engine_kwargs: dict[str, Any] = {
        "shutdown_kernel": "immediate",  # a graceful shutdown sometimes waits 2.5 s here
        # widget values would land in metadata (nbclient docs/client.rst, "Widget state")
        "store_widget_state": False,
        "interrupt_on_timeout": True,  # a timeout becomes a recorded cell failure
        "execution_timeout": cell_timeout_s,
    }
    km_class = ipc_kernel_manager_class()
    if km_class is not None:
        engine_kwargs["kernel_manager_class"] = km_class
    # papermill str.format()s paths with the parameters: keep braces literal.
    out_path = redacted_location(output_location).replace("{", "{{").replace("}", "}}")
    started = utc_now()
    error: BaseException | None = None
    try:
        with _papermill_warnings_to(log):
            papermill.execute_notebook(
                str(input_path).replace("{", "{{").replace("}", "}}"),
                out_path,
                parameters=parameters,
                kernel_name="python3",
                engine_name=SAVES_ENGINE,  # saves coalesced between cells (audit/saves.py)
                request_save_on_cell_execute=True,
                log_output=False,
                progress_bar=False,
                start_timeout=KERNEL_START_TIMEOUT_S,
                cwd=str(cwd),
                **engine_kwargs,
            )
    except Exception as err:  # noqa: BLE001 - PapermillExecutionError, DeadKernelError, start failures
        error = err
    ended = utc_now()
    handler = DESTINATIONS.handler_for(output_location)
    nb = None
    if handler.exists(output_location):
        try:
            nb = nbformat.reads(handler.read_text(output_location), as_version=4)
        except Exception as err:  # noqa: BLE001 - a half-written notebook must not hide the stage result
            error = error or err
    return Execution(nb=nb, error=error, started=started, ended=ended, cell_timeout_s=cell_timeout_s)


def _cell_step(cell: Any) -> str:
    lines = [ln.strip() for ln in str(cell.get("source", "")).splitlines()]
    first = next((ln for ln in lines if ln and not ln.startswith("#")), "")
    count = cell.get("execution_count")
    label = f"cell [{count}]" if count else "cell"
    if len(first) > 72:
        first = first[:71] + "…"
    return f"{label}: {first}" if first else label


def failed_cell(nb: Any) -> Any:
    """The cell papermill marked failed; else the last cell that started (the kernel died in it:
    papermill then marks it completed, without an execution count)."""
    if nb is None:
        return None
    code = [c for c in nb.cells if c.get("cell_type") == "code"]
    for cell in code:
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "failed":
            return cell
    started = [c for c in code if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def error_reason(error: BaseException | None, execution: Execution) -> str | None:
    if error is None:
        return None
    name = type(error).__name__
    ename = getattr(error, "ename", None)
    if ename is not None:  # PapermillExecutionError: the kernel's exception
        evalue = getattr(error, "evalue", "")
        if ename == "KeyboardInterrupt":
            return (
                f"interrupted (KeyboardInterrupt): the cell ran past the {execution.cell_timeout_s:g} s "
                "cell timeout, or the kernel was interrupted"
            )
        return f"{ename}: {evalue}" if evalue else ename
    if name == "DeadKernelError":
        return f"the kernel died ({error}); outputs up to that point were saved"
    if name == "CellTimeoutError":
        return f"the cell timed out after {execution.cell_timeout_s:g} s"
    text = str(error).strip().splitlines()
    return f"{name}: {text[0]}" if text else name


def read_stage(stage: str, execution: Execution, notebook_name: str | None) -> StageOutcome:
    """Turn papermill's result and the notebook's records into the stage's outcome."""
    records = collect_records(execution.nb) if execution.nb is not None else StageRecords()
    reason = error_reason(execution.error, execution)
    failed = execution.error is not None or records.failure is not None
    failure = None
    if failed:
        recorded = dict(records.failure or {})
        cell = failed_cell(execution.nb) if execution.error is not None else None
        failure = {
            **recorded,
            "step": recorded.get("step")
            or (_cell_step(cell) if cell is not None else None)
            or "notebook start",
            "reason": reason or recorded.get("reason") or "the notebook recorded a failure",
            "applied": list(recorded.get("applied") or []),
            "not_applied": list(recorded.get("not_applied") or []),
        }
        if cell is not None and recorded.get("step"):
            failure.setdefault("cell", _cell_step(cell))
    return StageOutcome(
        name=stage,
        status="failed" if failed else "ok",
        notebook=notebook_name if execution.nb is not None else None,
        started=iso(execution.started),
        ended=iso(execution.ended),
        duration_s=(execution.ended - execution.started).total_seconds(),
        records=records,
        failure=failure,
    )


def runbook_commit() -> str:
    """The git commit of the runbook code, or "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if len(top) != 2 or Path(top[0]).resolve() != root:
        return "unknown"
    return top[1]


def runbook_version() -> str:
    """The installed distribution's version: what identifies the code in a wheel, where no git commit is."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eks-mirror-runbook")
    except PackageNotFoundError:
        return "unknown"


def runbook_modified() -> bool | None:
    """Whether the code or notebooks differ from the commit (None when unknown)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "runbook_lib"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_record(
    run_id: str,
    params: RunbookParams,
    params_file: Path,
    apply: bool,
    note: str | None,
    started: dt.datetime,
    ended: dt.datetime | None,
    outcomes: list[StageOutcome],
    commit: str,
    modified: bool | None,
) -> dict[str, Any]:
    done = ended is not None
    failed = any(o.status == "failed" for o in outcomes)
    return {
        "run_id": run_id,
        "target": params.target,
        "user": operator(),
        "host": socket.gethostname(),
        "started": iso(started),
        "ended": iso(ended) if ended else None,
        "runbook_commit": commit,
        "runbook_modified": modified,
        "runbook_version": runbook_version(),
        "params_file": str(params_file),
        "params_sha256": params_mod.digest(params_file),
        "mode": "apply" if apply else "plan",
        "status": ("failed" if failed else "ok") if done else "running",
        "note": note,
        "stages": [o.to_json() for o in outcomes],
    }


def annotate_and_render(run_dir: str, record: dict[str, Any], stage: dict[str, Any]) -> str | None:
    """Put the banner on the saved notebook and write its HTML report; returns the HTML file name."""
    import nbformat

    from runbook_lib.audit.html import render_html

    if not stage.get("notebook"):
        return None
    location = join(run_dir, stage["notebook"])
    out = RedactedOutput()
    nb = nbformat.reads(out.read_text(location), as_version=4)
    nb = add_banner(nb, banner_markdown(record, stage))
    nb.metadata["runbook"] = {
        "run_id": record["run_id"],
        "stage": stage["name"],
        "status": stage["status"],
        "mode": record["mode"],
    }
    out.write_notebook(location, nb)
    html_name = stage["notebook"].rsplit(".", 1)[0] + ".html"
    out.write_text(join(run_dir, html_name), render_html(nb, title=f"{record['run_id']} {stage['name']}"))
    return html_name


class RunLog:
    """run.log in the run folder, rewritten (scrubbed) on every line so it is current after a crash."""

    def __init__(self, run_dir: str) -> None:
        self.location = join(run_dir, RUN_LOG)
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(f"{iso(utc_now())} {line}")
        RedactedOutput().write_text(self.location, "\n".join(self.lines) + "\n")


# ------------------------------------------------------------------------------------------ the job


def run(
    params_file: Path,
    stages: list[str] | None,
    apply: bool,
    output_dir: str | Path | None,
    note: str | None,
    notebooks_dir: Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    *,
    cell_timeout_s: float | None = None,
    notice: Callable[[str], None] | None = None,
    metrics: MetricsOutput | None = None,
    hold_lock: bool = False,
) -> RunResult:
    """Run the stages in order and write the run folder. Raises ParamsError (invalid parameters),
    ValueError (unknown stage), FileNotFoundError (missing notebook) or lock.LockHeld (an apply of the
    same target is running) before executing anything. ``notice`` gets lines for the operator (a lock
    taken over from a killed run, an apply running while this plan reads). ``metrics`` gets the final
    record (failed runs too) for the Prometheus textfile / Pushgateway (audit/metrics.py). ``hold_lock``
    takes the target's lock for a plan-only run too (a fleet does: two fleets never run one target at
    once). An s3:// output that does not answer raises DestinationError, before anything is executed."""
    params_file = Path(params_file).resolve()
    params = load_params(params_file)
    selected = select_stages(stages)
    notebooks = stage_notebook_paths(
        selected, Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    )
    out_dir = output_location(output_dir, params)
    staged = StagedOutput(out_dir) if is_remote(out_dir) else None
    if staged is not None:
        try:
            staged.check()
        except DestinationError:
            staged.cleanup()
            raise
    tell = notice or (lambda line: None)
    notes: list[str] = []
    locks_at = lock_mod.lock_dir(out_dir)
    target_lock = None
    if apply or hold_lock:  # before anything is resolved or sent
        try:
            target_lock = lock_mod.acquire(
                params.target, locks_at, mode="apply" if apply else "plan", params_file=str(params_file)
            )
        except BaseException:
            if staged is not None:
                staged.cleanup()
            raise
        if target_lock.stale is not None:
            notes.append(
                f"took over the lock of target {params.target!r} left by a run that did not finish "
                f"({target_lock.stale.describe()}): check that run's record"
            )
    else:
        busy = lock_mod.holder(params.target, locks_at)
        if busy is not None and busy.mode == "plan":
            notes.append(f"a fleet run of target {params.target!r} holds its lock ({busy.describe()})")
        elif busy is not None:
            notes.append(
                f"an apply of target {params.target!r} is running ({busy.describe()}): this plan reads "
                "the state while it changes"
            )
    for line in notes:
        tell(line)
    global _KERNEL_PASS_FDS
    _KERNEL_PASS_FDS = (target_lock.fileno(),) if target_lock else ()
    try:
        return _run_locked(
            params_file,
            params,
            selected,
            notebooks,
            apply,
            out_dir,
            note,
            progress,
            cell_timeout_s,
            target_lock,
            notes,
            metrics,
            staged,
        )
    finally:
        _KERNEL_PASS_FDS = ()
        if target_lock is not None:
            target_lock.release()


def _run_locked(
    params_file: Path,
    params: RunbookParams,
    selected: list[str],
    notebooks: dict[str, Path],
    apply: bool,
    out_dir: str,
    note: str | None,
    progress: Callable[[ProgressEvent], None] | None,
    cell_timeout_s: float | None,
    target_lock: lock_mod.TargetLock | None,
    notes: list[str],
    metrics: MetricsOutput | None = None,
    staged: StagedOutput | None = None,
) -> RunResult:
    html_warm_up()
    register_param_secrets(params)
    if cell_timeout_s is None:  # a cell may wait for a whole Karpenter node rollout
        cell_timeout_s = max(DEFAULT_CELL_TIMEOUT_S, params.karpenter.rollout_timeout_s + 600.0)
    commit = runbook_commit()
    modified = runbook_modified() if commit != "unknown" else None

    started = utc_now()
    if staged is not None:
        staged.pull_history()  # before the verify stage appends to it
        run_id, run_dir = create_run_dir(staged.root, params.target, started, staged.run_exists)
    else:
        run_id, run_dir = create_run_dir(out_dir, params.target, started)
    log = RunLog(run_dir)
    mode = "apply" if apply else "plan"
    log(f"run {run_id}: {mode} of {', '.join(selected)} with {params_file} by {operator()}")
    if target_lock is not None:
        target_lock.update(run_dir=str(run_dir))
        log(f"holding the lock of target {params.target!r}: {target_lock.path}")
    for line in notes:
        log(line)
    if staged is not None:
        log(f"output {staged.remote}/{run_id}, written through {run_dir}")
    notify = progress or (lambda event: None)
    outcomes: list[StageOutcome] = []

    def save_record(ended: dt.datetime | None) -> dict[str, Any]:
        record = run_record(
            run_id, params, params_file, apply, note, started, ended, outcomes, commit, modified
        )
        RedactedOutput().write_json(join(run_dir, RUN_JSON), record)
        if staged is not None and ended is None:  # the final upload is _finish's
            _upload(staged, run_id, log, errors=None)
        return record

    save_record(None)
    failed = False
    try:
        for i, stage in enumerate(selected, start=1):
            if failed:
                outcomes.append(StageOutcome(name=stage, status="skipped"))
                event = ProgressEvent(i, len(selected), stage, "end", status="skipped")
            else:
                notify(ProgressEvent(i, len(selected), stage, "start"))
                name = stage_file(stage, ".ipynb")
                execution = execute_stage(
                    notebooks[stage],
                    join(run_dir, name),
                    stage_parameters(stage, params_file, apply, run_dir),
                    Path(run_dir),
                    cell_timeout_s,
                    log,
                )
                outcome = read_stage(stage, execution, name)
                outcomes.append(outcome)
                failed = outcome.status == "failed"
                event = ProgressEvent(
                    i,
                    len(selected),
                    stage,
                    "end",
                    status=outcome.status,
                    duration_s=outcome.duration_s,
                    changes=outcome.records.change_counts(),
                    reason=(outcome.failure or {}).get("reason"),
                )
            log(format_progress(event))
            if failed and outcomes[-1].status == "failed":
                failure = outcomes[-1].failure or {}
                log(f"  failed step: {failure.get('step')}; reason: {failure.get('reason')}")
            notify(event)
            save_record(None)
    except KeyboardInterrupt:
        log("interrupted by the operator; the current stage is recorded as failed")
        current = selected[len(outcomes)] if len(outcomes) < len(selected) else None
        if current:
            outcomes.append(
                StageOutcome(
                    name=current,
                    status="failed",
                    notebook=stage_file(current, ".ipynb"),
                    failure={
                        "step": "unknown",
                        "reason": "interrupted by the operator",
                        "applied": [],
                        "not_applied": [],
                    },
                )
            )
            outcomes.extend(StageOutcome(name=s, status="skipped") for s in selected[len(outcomes) :])
        _finish(out_dir, run_dir, outcomes, save_record, log, metrics, staged)
        raise

    errors: list[str] = []
    record = _finish(out_dir, run_dir, outcomes, save_record, log, metrics, staged, errors)
    failed = record["status"] == "failed" or bool(errors)
    location = f"{staged.remote}/{run_id}" if staged is not None else str(run_dir)
    return RunResult(
        exit_code=1 if failed else 0, run_dir=Path(run_dir), record=record, location=location, errors=errors
    )


def _upload(staged: StagedOutput, run_id: str, log: Callable[[str], None], errors: list[str] | None) -> None:
    """Upload the run folder; during the run a failure is logged and retried at the next save, at the end
    (``errors`` given) it is the run's error and the staging copy is kept."""
    try:
        for name in staged.push_run(run_id):
            line = f"not uploaded: {name} holds a registered secret"
            log(line)
            if errors is not None:
                errors.append(line)
    except Exception as err:  # noqa: BLE001 - boto3 and network errors alike
        line = f"could not upload the run folder to {staged.remote}: {type(err).__name__}: {err}"
        log(line)
        if errors is not None:
            errors.append(line)


def _finish(
    out_dir: str,
    run_dir: str,
    outcomes: list[StageOutcome],
    save_record: Callable[[dt.datetime | None], dict[str, Any]],
    log: Callable[[str], None],
    metrics: MetricsOutput | None = None,
    staged: StagedOutput | None = None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """Banners and HTML for every saved notebook, then the final run.json, the metrics, the upload of a
    staged run folder and its history, and the index."""
    record = save_record(utc_now())
    handler = DESTINATIONS.handler_for(run_dir)
    for outcome, stage in zip(outcomes, record["stages"], strict=True):
        if not outcome.notebook or not handler.exists(join(run_dir, outcome.notebook)):
            outcome.notebook = None
            continue
        try:
            outcome.html = annotate_and_render(run_dir, record, stage)
        except Exception as err:  # noqa: BLE001 - a report that cannot render must not lose run.json
            log(f"  could not render {stage['notebook']}: {type(err).__name__}: {err}")
    record = save_record(utc_now())
    log(f"run {record['run_id']}: {record['status']} ({_summary(outcomes)})")
    if metrics is not None:  # after the final record, failed runs too: that is when alerting needs them
        metrics.publish(record, log)
    if staged is not None:
        errors = errors if errors is not None else []
        before = len(errors)
        _upload(staged, record["run_id"], log, errors)
        try:
            staged.push_history()
        except Exception as err:  # noqa: BLE001 - boto3, network and SQLite errors alike
            errors.append(f"could not merge the history into {staged.remote}: {type(err).__name__}: {err}")
        if len(errors) > before:
            errors.append(f"the run folder is kept at {run_dir}")
            for line in errors[before:]:
                log(line)
    try:
        write_report(out_dir)
    except Exception as err:  # noqa: BLE001 - the index is a convenience; run.json is the record
        log(f"  could not update the run index: {type(err).__name__}: {err}")
        if staged is not None and errors is not None:  # run.log is uploaded already: say it here
            errors.append(
                f"could not update the run index in {out_dir} ({type(err).__name__}): rerun "
                f"`runbook report --output-dir {out_dir}`"
            )
    if staged is not None and errors is not None and not any("is kept at" in e for e in errors):
        staged.cleanup()
    return record


def _summary(outcomes: list[StageOutcome]) -> str:
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("ok", "failed", "skipped")}
    total: dict[str, int] = {}
    for o in outcomes:
        for k, v in o.records.change_counts().items():
            total[k] = total.get(k, 0) + v
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; changes: {change_summary(total)}"
