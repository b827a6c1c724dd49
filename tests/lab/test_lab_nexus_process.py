"""The emulated Nexus as a process (`python -m runbook_lab.nexus`) and its wiring to the connector half."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runbook_lab.nexus.emulator import connector_manager_class
from runbook_lab.processes import unused_port
from tests.support import lab_nexus as support

REPO = Path(__file__).resolve().parents[2]
group_body = support.group_body
proxy_body = support.proxy_body
running_nexus = support.running_nexus

needs_connectors = pytest.mark.skipif(
    connector_manager_class() is None, reason="lab/runbook_lab/nexus/connector.py is not there yet"
)


def _run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runbook_lab.nexus", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_exits_2_with_a_clear_message_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _run(["--data-dir", str(tmp_path / "d"), "--port", str(busy.getsockname()[1])])
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 2
    assert "port already in use" in err


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port = unused_port()
    log = tmp_path / "requests.jsonl"
    proc = _run(
        [
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            str(port),
            "--version",
            "3.80.0-06",
            "--edition",
            "COMMUNITY",
            "--request-log",
            str(log),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/service/rest/v1/status/writable", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert status is not None and status.status_code == 200, proc.stderr.read() if proc.poll() else ""
        assert status.headers["Server"] == "Nexus/3.80.0-06 (COMMUNITY)"
        password = (tmp_path / "d" / "admin.password").read_text()
        r = httpx.get(
            f"http://127.0.0.1:{port}/service/rest/v1/security/realms/active", auth=("admin", password)
        )
        assert r.json() == ["NexusAuthenticatingRealm"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert [json.loads(line)["path"] for line in log.read_text().splitlines()] == [
        "/service/rest/v1/status/writable",
        "/service/rest/v1/security/realms/active",
    ]


def test_without_connectors_docker_paths_are_404_and_counters_empty(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        assert httpx.get(nx.url + "/repository/docker-hub/v2/").status_code == 404
        r = httpx.get(nx.url + "/_lab/counters")
        assert (r.status_code, r.json()) == (200, {})
        page = httpx.get(nx.url + "/not-nexus")
        assert page.status_code == 404 and page.headers["content-type"] == "text/html"


@needs_connectors
def test_connectors_follow_repository_changes_and_serve_the_main_port(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d", connectors=True) as nx:
        admin = nx.admin()
        assert admin.post("/v1/repositories/docker/proxy", json=proxy_body()).status_code == 201
        via_main = httpx.get(nx.url + "/repository/docker-hub/v2/")
        assert via_main.status_code == 401  # the registry API answers, challenging the anonymous client
        assert via_main.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        assert "docker-hub" in httpx.get(nx.url + "/_lab/counters").json()

        port = unused_port()
        body = group_body(group={"memberNames": ["docker-hub"]})
        body["docker"]["httpPort"] = port
        assert admin.post("/v1/repositories/docker/group", json=body).status_code == 201
        ping = httpx.get(f"http://127.0.0.1:{port}/v2/")
        assert ping.status_code == 401 and ping.headers["Docker-Distribution-Api-Version"] == "registry/2.0"

        assert admin.delete("/v1/repositories/docker-group").status_code == 204
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/v2/")
