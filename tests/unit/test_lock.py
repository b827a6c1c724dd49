"""One writer per target (issue #11 part 4): runbook_lib.lock and its use by `runbook run --apply`.

Real processes contend: the holder is a runner in a subprocess whose stage notebook waits for a file, the
contender is the real CLI. Kills are real SIGKILLs; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import nbformat
import pytest

from runbook_lib import lock
from runbook_lib.lock import EXIT_LOCKED, LockHeld
from tests.support.offline_params import offline_params_yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = "Lock-Test-s3cret-Value!"

PARAMS_YAML = offline_params_yaml("locktest", "RUNBOOK_LOCK_TEST_SECRET")

PARAMETERS_CELL = 'params_file = ""\napply = False\nrun_dir = ""\nstage = ""'
# The holder's stage: tell the test the kernel's pid, then wait for the test to let it finish.
WAIT_CELL = """\
import os, pathlib, time
here = pathlib.Path(params_file).parent
(here / "kernel.pid.tmp").write_text(str(os.getpid()))
(here / "kernel.pid.tmp").rename(here / "kernel.pid")
deadline = time.monotonic() + 300
while not (here / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""

HOLDER = """\
import sys
from pathlib import Path
from runbook_lib import runner
params, out, nbs, apply = sys.argv[1:5]
result = runner.run(Path(params), ["preflight"], apply == "apply", Path(out), None, notebooks_dir=Path(nbs),
                    notice=lambda line: print("note:", line, flush=True))
sys.exit(result.exit_code)
"""


def notebooks(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    params_cell = nbformat.v4.new_code_cell(PARAMETERS_CELL)
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "00_preflight.ipynb")
    return folder


@pytest.fixture
def target(tmp_path: Path) -> dict:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_YAML)
    env = {k: v for k, v in os.environ.items() if k != lock.ENV_LOCK_DIR}
    env["RUNBOOK_LOCK_TEST_SECRET"] = SECRET
    env["PYTHONPATH"] = str(REPO)
    return {
        "params": params,
        "out": tmp_path / "runs",
        "env": env,
        "wait_nbs": notebooks(tmp_path / "wait", WAIT_CELL),
        "quick_nbs": notebooks(tmp_path / "quick", "print('done')"),
        "lock_file": tmp_path / "runs" / ".locks" / "locktest.lock",
    }


def start_holder(t: dict) -> tuple[subprocess.Popen, int]:
    """A runner applying the target in a subprocess, stopped inside its stage; returns it and its kernel
    pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(t["params"]), str(t["out"]), str(t["wait_nbs"]), "apply"],
        env=t["env"],
        cwd=t["params"].parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = t["params"].parent / "kernel.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=10) if proc.poll() is not None else ("", "")
            proc.kill()
            pytest.fail(f"the holder never reached its stage (rc {proc.returncode}): {out}\n{err}")
        time.sleep(0.05)
    return proc, int(pid_file.read_text())


def cli_apply(t: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runbook_lib.cli",
            "run",
            "preflight",
            "--params",
            str(t["params"]),
            "--apply",
        ],
        env=t["env"],
        cwd=t["params"].parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_folders(t: dict) -> list[Path]:
    return sorted(p for p in t["out"].glob("*-locktest") if p.is_dir())


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} did not exit")


def secret_forms() -> list[str]:
    raw = SECRET.encode()
    return [
        SECRET,
        base64.b64encode(raw).decode().rstrip("="),
        urllib.parse.quote(SECRET, safe=""),
        json.dumps(SECRET)[1:-1],
        raw.hex(),
        base64.b64encode(b"admin:" + raw).decode().rstrip("="),
    ]


def test_second_apply_is_refused_at_once_and_the_lock_file_holds_no_secret(target) -> None:
    t = target
    holder, kernel_pid = start_holder(t)
    try:
        folders = run_folders(t)
        assert len(folders) == 1

        text = t["lock_file"].read_text()
        info = json.loads(text)
        assert info["pid"] == holder.pid and info["mode"] == "apply" and info["target"] == "locktest"
        assert info["run_dir"] == str(folders[0])
        assert set(info) == {"pid", "host", "user", "started", "target", "mode", "run_dir", "params_file"}
        for form in secret_forms():
            assert form not in text

        second = cli_apply(t)
        assert second.returncode == EXIT_LOCKED, second.stderr
        assert "target 'locktest' is being applied by another run" in second.stderr
        assert f"pid {holder.pid}" in second.stderr and str(folders[0]) in second.stderr
        assert "Nothing was executed" in second.stderr and "Traceback" not in second.stderr
        assert run_folders(t) == folders, "the refused run created a run folder"
        for form in secret_forms():
            assert form not in second.stderr + second.stdout

        # a plan-only run takes no lock: it runs beside the apply and says the apply is running
        plan = subprocess.run(
            [sys.executable, "-c", HOLDER, str(t["params"]), str(t["out"]), str(t["quick_nbs"]), "plan"],
            env=t["env"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plan.returncode == 0, plan.stderr
        assert f"an apply of target 'locktest' is running (pid {holder.pid}" in plan.stdout
    finally:
        (t["params"].parent / "release").write_text("")
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert t["lock_file"].read_text() == "", "a released lock keeps its holder's details"
    wait_gone(kernel_pid)
    after = cli_apply(t)  # free again: runs (the real preflight fails on the unreachable endpoints)
    assert after.returncode in (0, 1), after.stderr
    assert "took over" not in after.stderr


def test_a_killed_run_leaves_a_lock_that_is_taken_over(target) -> None:
    t = target
    holder, kernel_pid = start_holder(t)
    os.kill(kernel_pid, signal.SIGSTOP)  # a kernel still at work after its runner is killed
    try:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait(timeout=30)
        while_kernel_lives = cli_apply(t)
        assert while_kernel_lives.returncode == EXIT_LOCKED, while_kernel_lives.stderr
        assert "Its runner has exited but a process it started" in while_kernel_lives.stderr
    finally:
        os.kill(kernel_pid, signal.SIGCONT)
    wait_gone(kernel_pid)  # ipykernel exits by itself once its parent is gone

    first_run = run_folders(t)[0]
    again = subprocess.run(
        [sys.executable, "-c", HOLDER, str(t["params"]), str(t["out"]), str(t["quick_nbs"]), "apply"],
        env=t["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert f"took over the lock of target 'locktest' left by a run that did not finish (pid {holder.pid}" in (
        again.stdout
    )
    assert str(first_run) in again.stdout
    newest = run_folders(t)[-1]
    assert newest != first_run
    assert f"pid {holder.pid}" in (newest / "run.log").read_text()
    assert t["lock_file"].read_text() == ""


# ------------------------------------------------------------------------------- the module alone


def test_acquire_release_and_contention_in_one_process(tmp_path: Path) -> None:
    first = lock.acquire("a", tmp_path, run_dir="/runs/1")
    assert first.stale is None
    with pytest.raises(LockHeld) as refused:
        lock.acquire("a", tmp_path)
    assert refused.value.holder is not None and refused.value.holder.run_dir == "/runs/1"
    assert lock.holder("a", tmp_path).pid == os.getpid()
    assert lock.holder("b", tmp_path) is None  # one lock per target
    with lock.acquire("b", tmp_path):
        pass
    first.release()
    assert lock.holder("a", tmp_path) is None
    with lock.acquire("a", tmp_path) as second:
        assert second.stale is None  # released cleanly: nothing to take over


def test_a_sigkilled_holder_is_stale(tmp_path: Path) -> None:
    code = (
        "import sys, time; from runbook_lib import lock; "
        f"lock.acquire('t', {str(tmp_path)!r}, run_dir='/runs/x'); print('held', flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld):
            lock.acquire("t", tmp_path)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with lock.acquire("t", tmp_path) as taken:
        assert taken.stale is not None and taken.stale.pid == proc.pid and taken.stale.run_dir == "/runs/x"
        assert taken.stale.alive() is False


def test_lock_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(lock.ENV_LOCK_DIR, raising=False)
    assert lock.lock_dir(tmp_path / "runs") == tmp_path / "runs" / ".locks"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert lock.lock_dir("s3://bucket/runs") == tmp_path / "state" / "eks-mirror-runbook" / "locks"
    monkeypatch.setenv(lock.ENV_LOCK_DIR, str(tmp_path / "common-locks"))
    assert lock.lock_dir(tmp_path / "runs") == tmp_path / "common-locks"
    assert lock.lock_path("../x", tmp_path).parent == tmp_path
