"""The stage notebooks' form (runbook_lib.interactive) and `runbook notebook`, without a browser.

The browser session itself is tests/integration/test_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

from runbook_lib import cli, interactive
from runbook_lib.runner import STAGE_NOTEBOOKS, default_notebooks_dir
from tests.support.labkit import free_port

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "parameters" / "lab.yaml"
FIXTURES = REPO / "tests" / "fixtures" / "notebooks"


# ---------------------------------------------------------------------------- the notebooks' cell
@pytest.mark.parametrize("stage", list(STAGE_NOTEBOOKS))
def test_the_form_cell_follows_the_parameters_cell(stage: str) -> None:
    nb = nbformat.read(default_notebooks_dir() / STAGE_NOTEBOOKS[stage], as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nb.cells[i + 1]
    assert cell.cell_type == "code"
    assert "form = interactive.form(stage, params_file, apply)" in cell.source
    assert sum("interactive.form" in c.source for c in nb.cells) == 1


# ------------------------------------------------------------------------- headless or interactive
@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(REPO))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _execute(kc, code: str, metadata: dict | None = None) -> str:
    """One execute request, as JupyterLab (with metadata.cellId) or nbclient (without) sends it."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
    content |= {"allow_stdin": False, "stop_on_error": True}
    msg = kc.session.msg("execute_request", content, metadata=metadata or {})
    kc.shell_channel.send(msg)
    out = []
    while True:
        reply = kc.get_iopub_msg(timeout=60)
        if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if reply["msg_type"] == "stream":
            out.append(reply["content"]["text"])
        elif reply["msg_type"] == "error":
            out.append("\n".join(reply["content"]["traceback"]))
        elif reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
            return "".join(out).strip()


def test_a_kernel_is_interactive_only_for_a_frontend_that_sends_cell_ids(kernel) -> None:
    _execute(kernel, "from runbook_lib import interactive")
    assert _execute(kernel, "print(interactive.is_interactive())") == "False"  # nbclient, papermill
    assert _execute(kernel, "print(interactive.is_interactive())", {"cellId": "c1"}) == "True"  # JupyterLab


def test_a_papermill_injected_cell_makes_the_kernel_headless(kernel) -> None:
    _execute(kernel, "from runbook_lib import interactive")
    assert _execute(kernel, "print(interactive.is_interactive())", {"cellId": "c1"}) == "True"
    _execute(kernel, '# Parameters\nparams_file = "x.yaml"\n', {"cellId": "c2"})
    assert _execute(kernel, "print(interactive.is_interactive())", {"cellId": "c3"}) == "False"


def test_outside_a_kernel_there_is_no_form() -> None:
    assert interactive.is_interactive() is False
    assert interactive.form("nexus-repos", str(LAB), False) is None


def test_under_papermill_the_form_cell_leaves_no_output_and_no_widget_state(tmp_path: Path) -> None:
    """nbclient with widget state stored (the runner turns it off): still nothing, since none was made."""
    import papermill

    shipped = nbformat.read(default_notebooks_dir() / STAGE_NOTEBOOKS["nexus-repos"], as_version=4)
    i = next(i for i, c in enumerate(shipped.cells) if "parameters" in c.metadata.get("tags", []))
    shipped.cells = shipped.cells[i : i + 2] + [nbformat.v4.new_code_cell("print(form is None)")]
    nbformat.write(shipped, tmp_path / "in.ipynb")
    papermill.execute_notebook(
        str(tmp_path / "in.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={"params_file": str(LAB)},
        kernel_name="python3",
        progress_bar=False,
        store_widget_state=True,
        cwd=str(tmp_path),
    )
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    form_cell = next(c for c in out.cells if "interactive.form" in c.source)
    assert form_cell.outputs == []
    assert out.cells[-1].outputs[0]["text"] == "True\n"
    assert "widgets" not in out.metadata


# ------------------------------------------------------------------------------ what the form shows
def test_a_valid_file_shows_its_target_and_only_secret_references() -> None:
    v = interactive.validate(LAB)
    assert v.ok and v.target == "lab"
    lines = "\n".join(v.lines())
    assert "target lab" in lines
    assert "secret nexus.admin_password: aws-sm:lab/nexus-admin#password (resolved at run time)" in lines
    assert v.output_dir.endswith("outputs")


def test_a_broken_file_names_each_field_inline(tmp_path: Path) -> None:
    data = yaml.safe_load(LAB.read_text())
    data["nexus"]["admin_password"] = "plain-value-not-a-reference"
    data["surprise"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    v = interactive.validate(broken)
    assert not v.ok and v.target is None
    text = "\n".join(v.lines())
    assert "surprise" in text and "nexus.admin_password" in text
    assert "plain-value-not-a-reference" not in text  # a value where a reference belongs is not echoed
    assert interactive.validate(tmp_path / "missing.yaml").problems == [
        f"params_file: no such file: {tmp_path / 'missing.yaml'}"
    ]
    assert not interactive.validate("").ok


def test_the_choices_are_the_checkouts_parameters_files(monkeypatch) -> None:
    monkeypatch.delenv(interactive.PARAMS_ENV, raising=False)
    choices = interactive.parameter_files("../parameters/lab.yaml", cwd=default_notebooks_dir())
    assert str(LAB) in choices and str(REPO / "parameters" / "eks-example.yaml") in choices
    monkeypatch.setenv(interactive.PARAMS_ENV, str(REPO / "parameters" / "eks-example.yaml"))
    assert interactive.parameter_files("", cwd=REPO)[0] == str(REPO / "parameters" / "eks-example.yaml")


def test_apply_needs_the_targets_exact_name() -> None:
    assert interactive.confirmed("lab", "lab") and interactive.confirmed(" lab ", "lab")
    assert not interactive.confirmed("la", "lab") and not interactive.confirmed("LAB", "lab")
    assert not interactive.confirmed("", None)


def test_the_form_applies_nothing_until_the_name_is_typed(tmp_path: Path, monkeypatch) -> None:
    """The form's own widgets, outside a frontend: a broken file disables Apply; without the typed
    name the confirm button stays disabled and run_apply starts no run."""
    runs = []
    record = {
        "status": "ok",
        "run_dir": "r",
        "stages": [{"results": {"applied": ["create x"]}, "checks": []}],
    }
    monkeypatch.setattr(interactive, "apply_stage", lambda *a, **k: runs.append(a) or record)
    monkeypatch.setattr(interactive, "preview", lambda *a: None)  # no target to read here
    broken = tmp_path / "broken.yaml"
    broken.write_text("target: x\n")
    monkeypatch.setenv(interactive.PARAMS_ENV, str(broken))  # the form starts on it, as with --params
    f = interactive.Form("nexus-repos", str(broken), False)
    assert f.validation is not None and not f.validation.ok and f.apply_button.disabled
    f.validation = interactive.validate(LAB)  # as if the file were chosen, without reading the lab
    f.ask()
    f.confirm.value = "la"
    assert f.confirm_button.disabled and f.run_apply() is None
    f.confirm.value = "lab"
    assert not f.confirm_button.disabled
    assert runs == []  # nothing ran before the name matched
    assert f.run_apply() is record
    assert [r[0] for r in runs] == ["nexus-repos"] and runs[0][1] == LAB.resolve()


def test_the_forms_apply_shows_the_stages_progress_live(tmp_path: Path, monkeypatch) -> None:
    """The form's Apply runs the stage headless (runner.run, a papermill kernel of its own); the stage's
    tracker feeds the form, whose mirror shows the same bar and chart, and the feed goes away after."""
    import shutil

    from runbook_lib import progress, runner
    from tests.support.offline_params import offline_params_yaml

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(FIXTURES / "progress_steps.ipynb", folder / STAGE_NOTEBOOKS["verify"])
    monkeypatch.setattr(runner, "default_notebooks_dir", lambda: folder)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(offline_params_yaml("fixture", "RUNBOOK_TEST_UNSET_PASSWORD"))
    mirrors: list[progress.FeedMirror] = []
    real_mirror = progress.FeedMirror

    def mirror(*args, **kwargs) -> progress.FeedMirror:
        mirrors.append(real_mirror(*args, **kwargs))
        return mirrors[-1]

    monkeypatch.setattr(progress, "FeedMirror", mirror)
    shown: list = []
    record = interactive.apply_stage("verify", params_file, "", "", lambda line: None, show=shown.append)
    assert record["status"] == "ok" and record["stages"][0]["results"] == {"pulls": 3}
    [m] = mirrors
    [bar] = m.trackers.values()
    assert shown == [bar.widgets.box]  # one box per tracker, handed to the form once
    assert bar.widgets.counts.value == "3/3 pulls" and bar.widgets.bar.value == 3
    assert bar.widgets.latest.value == "image-2 via mirror"
    assert bar.series() == {"direct": [0.5], "mirror": [0.25, 0.5 / 3]}
    assert 'data-samples="3"' in bar.widgets.chart.value
    assert progress.FEED_ENV not in os.environ and not m.path.exists()  # the feed went with the run


# ---------------------------------------------------------------------------- `runbook notebook`
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--params", "/nonexistent/p.yaml"], "nothing was started"),
        (["--port", "0"], "--port"),
        (["--lab", "--params", str(REPO / "parameters" / "eks-example.yaml")], "lab"),
    ],
)
def test_bad_input_exits_2_before_anything_starts(argv, message, monkeypatch, capsys) -> None:
    started = []
    monkeypatch.setattr(interactive, "launch", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(cli, "cmd_lab", lambda args: started.append(args) or 0)
    assert cli.main(["notebook", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert started == []


def test_working_copy_copies_the_notebooks_once(tmp_path: Path) -> None:
    folder = interactive.working_copy(default_notebooks_dir(), tmp_path / "nb")
    assert sorted(p.name for p in folder.glob("*.ipynb")) == sorted(STAGE_NOTEBOOKS.values())
    mine = folder / STAGE_NOTEBOOKS["helm"]
    mine.write_text("{}")
    interactive.working_copy(default_notebooks_dir(), folder)
    assert mine.read_text() == "{}"  # a person's work is never overwritten


def test_runbook_notebook_serves_the_notebooks_with_this_interpreters_kernel(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.cli", "notebook", "--params", str(LAB)]
        + ["--port", str(port), "--dir", str(tmp_path / "nb")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        line = proc.stdout.readline()
        match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\S+)", line)
        assert match, line
        token = match.group(1)

        def get(path: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=30) as r:
                return json.load(r)

        spec = get("/api/kernelspecs")["kernelspecs"]["python3"]["spec"]
        assert spec["argv"][0] == sys.executable
        assert spec["env"] == {interactive.PARAMS_ENV: str(LAB)}
        names = {c["name"] for c in get("/api/contents")["content"]}
        assert set(STAGE_NOTEBOOKS.values()) <= names
    finally:
        proc.terminate()
        proc.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # JupyterLab went with it: the port is free again
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    else:
        pytest.fail(f"JupyterLab still listens on {port} after runbook notebook stopped")


@pytest.mark.parametrize("lab_rc", [0, 1])
def test_lab_comes_up_first_and_a_failed_lab_starts_no_jupyterlab(lab_rc: int, monkeypatch, tmp_path) -> None:
    """`--lab`: `runbook lab up` with the same parameters, then JupyterLab with them; a lab that fails
    to come up ends the command with its code (the lab and JupyterLab themselves: test_lab_lifecycle.py
    and test_runbook_notebook_serves_the_notebooks_with_this_interpreters_kernel)."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        cli, "cmd_lab", lambda args: calls.append(("lab", args.action, args.params)) or lab_rc
    )
    monkeypatch.setattr(
        interactive, "launch", lambda nb, port, params, out: calls.append(("jupyter", params)) or 0
    )
    assert cli.main(["notebook", "--lab", "--params", str(LAB), "--dir", str(tmp_path)]) == lab_rc
    expected = [("lab", "up", str(LAB))] + ([("jupyter", LAB)] if lab_rc == 0 else [])
    assert calls == expected
