"""The form each stage notebook opens with in JupyterLab: pick a parameters file, see the plan, apply.

One call in every stage notebook, right after the ``parameters`` cell::

    form = interactive.form(stage, params_file, apply)

Interactively it shows, with ipywidgets: the parameters file (the files in ``parameters/`` or any path),
the target's summary or its validation errors, the per-run options of ``runbook run`` (output folder,
note), the stage's plan, and an **Apply** button that asks for the target's name before it writes.

Headless it is a no-op (returns None, creates no widget, prints nothing), so a papermill run records
exactly what it recorded before the form existed. The signal is the execute request itself: JupyterLab
(and Notebook 7) send each cell with ``metadata.cellId``; nbclient, which papermill drives, sends none.
A papermill-injected parameters cell (``# Parameters`` first, papermill's python translator) in the
kernel's history is a second, independent signal: the notebook is being run by papermill.

Applying never takes a second code path: the confirmed Apply is ``runbook run STAGE --apply`` with the
chosen file (runner.run): this stage notebook executed by papermill, through the stage module's read,
plan, show, apply, checks and enforce, under the target's lock, with the same run record (run.json)
and report. The plan shown before it is the stage module's read, plan and show in plan mode. While it
runs, the stage's long steps show live under the form (progress.FeedMirror).

Nothing secret reaches a widget: secret fields show only their reference; plans mask values; every
message the kernel sends (widget state included) passes the redactor (runbook_lib.notebook).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib import params as params_mod
from runbook_lib.params import ParamsError

PAPERMILL_MARK = "# Parameters"  # first line of the cell papermill injects (its python translator)
PARAMS_ENV = "RUNBOOK_PARAMS"  # set by `runbook notebook --params FILE`: the form's first choice


# ----------------------------------------------------------------------------------- headless or not
def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def request_metadata(shell: Any) -> dict[str, Any]:
    """The metadata of the execute request running now ({} outside a kernel)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return {}
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # ipykernel < 6.x: get_parent() takes no channel
        parent = kernel.get_parent()
    return dict((parent or {}).get("metadata") or {})


def papermill_ran(history: Iterable[str]) -> bool:
    """Whether a cell papermill injects ran in this kernel."""
    return any(str(src).lstrip().startswith(PAPERMILL_MARK + "\n") for src in history)


def is_interactive(shell: Any = None) -> bool:
    """True only in a kernel whose frontend runs cells and renders widgets (JupyterLab, Notebook 7)."""
    shell = shell if shell is not None else _shell()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    if "cellId" not in request_metadata(shell):
        return False  # nbclient/papermill, jupyter console, a bare kernel client
    return not papermill_ran(shell.user_ns.get("In", []))


# ------------------------------------------------------------------------------ parameters, checked
@dataclass
class Validation:
    """What the form shows about one parameters file: never a secret value (references only)."""

    path: Path
    ok: bool
    target: str | None = None
    summary: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # "field: reference"
    output_dir: str = ""

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"{self.path}: {len(self.problems)} problem(s)", *self.problems]
        out = [f"{self.path}: ok — {self.summary}"]
        out += [f"warning {w}" for w in self.warnings]
        out += [f"secret {s} (resolved at run time)" for s in self.secrets]
        return out


def validate(path: str | Path) -> Validation:
    """Load and check a parameters file, as `runbook params check` does."""
    p = Path(path).expanduser()
    if not str(path).strip():
        return Validation(p, False, problems=["params_file: choose a parameters file"])
    if not p.is_file():
        return Validation(p, False, problems=[f"params_file: no such file: {p}"])
    try:
        params = params_mod.load(p)
    except ParamsError as err:
        return Validation(p.resolve(), False, problems=list(err.lines()))
    return Validation(
        p.resolve(),
        True,
        target=params.target,
        summary=params_mod.summary(params),
        warnings=[f"{where}: {why}" for where, why in params_mod.advisories(params)],
        secrets=[f"{where}: {ref}" for where, ref in params.secret_refs()],
        output_dir=str(params.path(params.outputs.dir)),
    )


def parameter_files(params_file: str, cwd: Path | None = None) -> list[str]:
    """The choices: RUNBOOK_PARAMS, the notebook's own params_file, and the YAML files beside them
    and in a ``parameters/`` folder here or up to two folders above (a checkout's)."""
    here = Path(cwd or Path.cwd()).resolve()
    first = [os.environ.get(PARAMS_ENV, ""), params_file]
    chosen = [(here / f).resolve() for f in first if f and (here / f).is_file()]
    # a checkout's parameters/ from runbook_lib/notebooks (two up), or beside the notebooks
    folders = {c.parent for c in chosen} | {d / "parameters" for d in (here, *list(here.parents)[:2])}
    found = sorted(
        f.resolve() for d in folders if d.is_dir() for f in d.iterdir() if f.suffix in (".yaml", ".yml")
    )
    return list(dict.fromkeys(str(f) for f in [*chosen, *found]))


def first_choice(choices: list[str], params_file: str) -> str:
    """RUNBOOK_PARAMS, else the first valid file of the choices (the notebook's own comes first)."""
    if os.environ.get(PARAMS_ENV):
        return os.environ[PARAMS_ENV]
    return next((c for c in choices if validate(c).ok), choices[0] if choices else params_file)


def confirmed(typed: str, target: str | None) -> bool:
    """Apply only when the target's name was typed exactly."""
    return bool(target) and typed.strip() == target


# --------------------------------------------------------------------------------------- the form
class _QuietContext:
    """A StageContext whose records stay in the kernel: the plan preview is no run and records nothing
    in the notebook (the confirmed apply records, through the runner)."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def record(self, key: str, value: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def stage_module(stage: str) -> Any:
    import importlib

    from runbook_lib.stages import MODULES

    return importlib.import_module(f"runbook_lib.stages.{MODULES[stage]}")


def preview(stage: str, params_file: Path) -> Any:
    """The stage's read, plan and show in plan mode: what the table of a plan-only run shows."""
    from runbook_lib import notebook

    ctx = _QuietContext(notebook.setup(stage, str(params_file), False, ""))
    module = stage_module(stage)
    state = module.read(ctx)
    plan = module.plan(ctx, state)
    return module.show(ctx, state, plan)


def apply_stage(
    stage: str,
    params_file: Path,
    output_dir: str,
    note: str,
    log: Callable[[str], None],
    show: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """`runbook run STAGE --apply` with this file: the same notebook, steps, lock and run record. With
    ``show``, the stage's long steps (rollout, pulls, rate-limit demonstration) are shown live: ``show``
    gets a bar (and chart) per step, mirrored from the stage kernel's progress feed."""
    import tempfile

    from runbook_lib import progress, runner

    with contextlib.ExitStack() as stack:
        if show is not None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="runbook-progress-"))
            feed = Path(folder) / "feed.jsonl"
            stack.enter_context(_environ(progress.FEED_ENV, str(feed)))  # the stage kernel inherits it
            stack.enter_context(progress.FeedMirror(feed, show))
        result = runner.run(
            params_file,
            [stage],
            apply=True,
            output_dir=Path(output_dir) if output_dir else None,
            note=f"JupyterLab form: {note}" if note else "JupyterLab form",  # the record says how
            progress=lambda event: log(runner.format_progress(event)),
            notice=lambda line: log(f"note: {line}"),
        )
    return {"run_dir": str(result.run_dir), **result.record}


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def result_lines(record: dict[str, Any]) -> list[str]:
    stage = record["stages"][0]
    results = stage.get("results") or {}
    lines = [f"run {record['status']}: {record['run_dir']}"]
    lines.append("applied: " + (", ".join(results.get("applied") or []) or "nothing"))
    lines.append("not applied: " + (", ".join(results.get("not_applied") or []) or "nothing"))
    if stage.get("failure"):
        lines.append(f"failed step: {stage['failure'].get('step')}; reason: {stage['failure'].get('reason')}")
    return lines


class Form:
    """The widgets and what their buttons do. ``apply_stage`` and ``preview`` are the only actions."""

    def __init__(self, stage: str, params_file: str, apply: bool) -> None:
        import ipywidgets as w

        self.stage = stage
        self.validation: Validation | None = None
        self.shell = _shell()
        choices = parameter_files(params_file)
        start = first_choice(choices, params_file)
        self.file = w.Combobox(
            value=str(Path(start).resolve()) if start else "",
            options=choices,
            ensure_option=False,
            continuous_update=False,  # on Enter or leaving the field, not on every key
            placeholder="a parameters YAML file",
            description="parameters",
            layout=w.Layout(width="90%"),
        )
        self.output_dir = w.Text(description="output dir", layout=w.Layout(width="90%"))
        self.note = w.Text(description="note", placeholder="for the run record, e.g. a change ticket")
        self.about = w.Output()
        self.plan_out = w.Output()
        self.plan_button = w.Button(description="Show plan", icon="table")
        self.apply_button = w.Button(description="Apply…", button_style="warning", disabled=True)
        self.confirm = w.Text(description="target", placeholder="type the target's name to apply")
        self.confirm_button = w.Button(description="Confirm apply", button_style="danger", disabled=True)
        self.confirm_box = w.HBox([self.confirm, self.confirm_button], layout=w.Layout(display="none"))
        self.live = w.VBox()  # the applying stage's progress bars (progress.FeedMirror), as they come
        self.result_out = w.Output()
        mode = "apply = True: the cells below write" if apply else "apply = False: the cells below only plan"
        header = w.HTML(
            f"<b>{stage}</b>: choose the parameters, review the plan, then Apply (asks for the target's "
            f"name). Parameters cell: {mode}."
        )
        for widget, name in (
            (self.file, "params"),
            (self.about, "about"),
            (self.plan_out, "plan"),
            (self.apply_button, "apply"),
            (self.confirm, "confirm"),
            (self.confirm_button, "confirm-button"),
            (self.live, "live"),
            (self.result_out, "result"),
        ):
            widget.add_class(f"runbook-{name}")  # stable names for people's CSS and the browser tests
        self.file.observe(lambda change: self.choose(change["new"]), names="value")
        self.plan_button.on_click(lambda _: self.show_plan())
        self.apply_button.on_click(lambda _: self.ask())
        self.confirm.observe(lambda change: self._match(change["new"]), names="value")
        self.confirm_button.on_click(lambda _: self.run_apply())
        self.widget = w.VBox(
            [
                header,
                self.file,
                self.about,
                w.HBox([self.output_dir, self.note]),
                w.HBox([self.plan_button, self.apply_button]),
                self.plan_out,
                self.confirm_box,
                self.live,
                self.result_out,
            ]
        )
        self.choose(self.file.value)

    # -- the steps a person takes, in order
    def choose(self, path: str) -> Validation:
        """A file was picked or typed: validate it and, when valid, show its plan."""
        self.validation = v = validate(path)
        self.about.clear_output()
        self.plan_out.clear_output()
        self.result_out.clear_output()
        self.confirm_box.layout.display = "none"
        with self.about:
            print("\n".join(v.lines()))
        self.apply_button.disabled = not v.ok
        if v.ok:
            self.output_dir.placeholder = v.output_dir
            if self.shell is not None:  # the cells below use the chosen file, as papermill would set it
                self.shell.user_ns["params_file"] = str(v.path)
            self.show_plan()
        return v

    def show_plan(self) -> None:
        v = self.validation
        if v is None or not v.ok:
            return
        self.plan_out.clear_output()
        with self.plan_out:
            from IPython.display import display

            try:
                table = preview(self.stage, v.path)
            except Exception as err:  # noqa: BLE001 - any read error is shown, not raised into the UI
                print(f"cannot plan {self.stage}: {type(err).__name__}: {err}")
                self.apply_button.disabled = True
                return
            if table is not None:
                display(table)

    def ask(self) -> None:
        self.confirm.value = ""
        self.confirm_box.layout.display = "flex"

    def _match(self, typed: str) -> None:
        self.confirm_button.disabled = not confirmed(typed, self.validation and self.validation.target)

    def run_apply(self) -> dict[str, Any] | None:
        v = self.validation
        if v is None or not v.ok or not confirmed(self.confirm.value, v.target):
            return None
        self.confirm_button.disabled = True
        self.confirm_box.layout.display = "none"
        self.result_out.clear_output()
        self.live.children = ()
        with self.result_out:
            print(f"applying {self.stage} to {v.target} (runbook run {self.stage} --apply) ...", flush=True)
            try:
                record = apply_stage(
                    self.stage,
                    v.path,
                    self.output_dir.value.strip(),
                    self.note.value.strip(),
                    print,
                    show=self.show_live,
                )
            except Exception as err:  # noqa: BLE001 - a lock held, a store error: said, not raised
                print(f"not applied: {type(err).__name__}: {err}")
                return None
            print("\n".join(result_lines(record)))
            from IPython.display import display

            display(checks_frame(record["stages"][0].get("checks") or []))
        self.show_plan()  # after a good apply: every row unchanged
        return record

    def show_live(self, box: Any) -> None:
        """A bar of the applying stage, under the form (called from the feed mirror's thread)."""
        self.live.children = (*self.live.children, box)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def checks_frame(checks: list[dict[str, Any]]) -> Any:
    from runbook_lib.display import table

    return table(checks)


def form(stage: str, params_file: str, apply: bool) -> Form | None:
    """The stage's form in JupyterLab; None (and nothing at all) under papermill or without a frontend."""
    if not is_interactive():
        return None
    from IPython.display import display

    from runbook_lib.notebook import install_scrubbers

    install_scrubbers()  # before the first widget message leaves the kernel
    f = Form(stage, params_file, apply)
    display(f.widget)
    return f


# ---------------------------------------------------------------------- `runbook notebook` launcher
KERNEL_NAME = "python3"  # the notebooks' kernelspec: here, always this interpreter


def working_copy(shipped: Path, folder: Path) -> Path:
    """``folder`` with a copy of every shipped stage notebook it does not have yet (none overwritten)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for nb in sorted(shipped.glob("*.ipynb")):
        if not (folder / nb.name).exists():
            shutil.copyfile(nb, folder / nb.name)
    return folder.resolve()


def course_copy(lab_params: Any, folder: Path | None) -> Path:
    """``folder`` (default: the lab folder's ``course/``) with copies of the lab package's course notebooks
    and, in ``stages/``, of the stage notebooks the course links to; none overwritten. The course ships with
    the lab (runbook_lab/course), which the runbook never imports: it is found as package data."""
    import importlib.util

    from runbook_lib.runner import default_notebooks_dir

    spec = importlib.util.find_spec("runbook_lab")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the lab package is not installed")
    shipped = Path(next(iter(spec.submodule_search_locations))) / "course"
    folder = folder or Path(lab_params.path(lab_params.lab.dir)) / "course"
    working_copy(default_notebooks_dir(), folder / "stages")
    return working_copy(shipped, folder)


def kernelspec(folder: Path, params_file: Path | None) -> Path:
    """A ``python3`` kernelspec for this interpreter, first on JUPYTER_PATH: a python3 kernelspec of
    another Python (the user's or the system's) cannot take the notebooks' kernel."""
    import json
    import sys

    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    kernel: dict[str, Any] = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (eks-mirror-runbook)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    if params_file is not None:
        kernel["env"] = {PARAMS_ENV: str(params_file)}
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1))
    return spec


def lab_command(notebooks: Path, port: int, token: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebooks}",
        f"--IdentityProvider.token={token}",
        "--LabApp.extension_manager=readonly",  # no extension index queried from a runbook host
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI and containers run as root
    ]


def wait_for_port(port: int, proc: Any, timeout_s: float = 90.0) -> bool:
    """Until JupyterLab listens on 127.0.0.1:port (False: it exited or never listened)."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def launch(notebooks: Path, port: int, params_file: Path | None, out: Callable[[str], None]) -> int:
    """Start JupyterLab on the notebooks (loopback), print the URL, run until it stops or Ctrl-C."""
    import secrets
    import signal
    import subprocess
    import tempfile

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="runbook-jupyter-") as tmp:
        kernelspec(Path(tmp), params_file)
        env = dict(os.environ)
        env["JUPYTER_PATH"] = os.pathsep.join(p for p in (tmp, env.get("JUPYTER_PATH", "")) if p)
        if params_file is not None:
            env[PARAMS_ENV] = str(params_file)
        proc = subprocess.Popen(lab_command(notebooks, port, token), env=env)
        signal.signal(signal.SIGTERM, _interrupt)  # a stopped `runbook notebook` stops its JupyterLab
        try:
            if not wait_for_port(port, proc):
                out(f"JupyterLab did not start on 127.0.0.1:{port}")
                proc.terminate()
                proc.wait(30)
                return 1
            out(f"JupyterLab: http://127.0.0.1:{port}/lab?token={token}")
            out(f"  notebooks: {notebooks}" + (f"; parameters: {params_file}" if params_file else ""))
            out("  stop it with Ctrl-C")
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(30)
            return 0
