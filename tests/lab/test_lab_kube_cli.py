"""`python -m runbook_lab.kube` as the lab starts it: serves, writes a kubeconfig, keeps state across a
restart, stops on SIGTERM, and exits 2 with a clear message when its port is taken."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runbook_lab.kube", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _server_url(kubeconfig: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if kubeconfig.exists():
            url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
            try:
                if httpx.get(f"{url}/version", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            pytest.fail(f"stand-in exited early: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail("stand-in did not come up")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def procs() -> list[subprocess.Popen[str]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serves_until_sigterm_and_keeps_state(tmp_path: Path, procs: list) -> None:
    state, kubeconfig = tmp_path / "kube" / "state.json", tmp_path / "kubeconfig"
    args = ["--port", "0", "--state-file", str(state), "--kubeconfig", str(kubeconfig)]
    proc = _start(args)
    procs.append(proc)
    url = _server_url(kubeconfig, proc)
    assert (kubeconfig.stat().st_mode & 0o777) == 0o600
    r = httpx.post(
        f"{url}/api/v1/namespaces/default/configmaps",
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "1"}},
    )
    assert r.status_code == 201
    assert _stop(proc) == 0

    kubeconfig.unlink()
    proc = _start(args)
    procs.append(proc)
    url = _server_url(kubeconfig, proc)
    assert httpx.get(f"{url}/api/v1/namespaces/default/configmaps/kept").json()["data"] == {"a": "1"}
    names = [n["metadata"]["name"] for n in httpx.get(f"{url}/api/v1/namespaces").json()["items"]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    assert _stop(proc) == 0


def test_port_in_use_exits_2_with_a_message(procs: list) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(["--port", str(port)])
        procs.append(proc)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err
