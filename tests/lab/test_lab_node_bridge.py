"""Port bridge (runbook_lab.bridge): a private network namespace reaches the bridged lab ports, and only
those.

The lab side runs in this process (the test's namespace plays the lab); the node side runs as
`python -m runbook_lab.bridge node ...` in a fresh `unshare --net` namespace, probed with nsenter + curl.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from runbook_lab.bridge import BridgeError, LabSide, socket_path
from tests.lab.test_lab_node_veth import PAYLOAD, _Handler  # the same test service on both paths
from tests.support.lab_node import short_dir

pytestmark = pytest.mark.netns


def _server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def bridged() -> Iterator[tuple]:
    """Three lab ports: `up` (bridged, served), `hidden` (served, not bridged), `down` (bridged, nothing
    there)."""
    up, hidden = _server(), _server()
    down = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    down_port = down.server_address[1]
    down.server_close()
    ports = [up.server_address[1], down_port]
    with short_dir("lb") as base:
        lab = LabSide(base / "br", ports).start()
        node = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--",
                "sh",
                "-c",
                'ip link set lo up && exec "$@"',
                "sh",
                sys.executable,
                "-m",
                "runbook_lab.bridge",
                "node",
                str(base / "br"),
                *map(str, ports),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert node.stdout is not None
            assert "node side up" in node.stdout.readline()
            yield node.pid, up.server_address[1], hidden.server_address[1], down_port, lab, base
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(10)
            lab.stop()
            up.shutdown()
            hidden.shutdown()


def curl(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "--", "curl", "-sS", "-m", "5", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_only_bridged_ports_are_reachable_from_the_namespace(bridged) -> None:
    pid, up, hidden, down, _, _ = bridged
    assert curl(pid, f"http://127.0.0.1:{up}/").stdout == f"port {up}"
    refused = curl(pid, f"http://127.0.0.1:{hidden}/")
    assert refused.returncode == 7 and "Couldn't connect" in refused.stderr  # served in the lab, not bridged
    unreachable = curl(pid, "http://192.0.2.1/")
    assert unreachable.returncode == 7
    # a bridged port whose lab service is down: the connection is reset at once, never a reply
    reset = curl(pid, f"http://127.0.0.1:{down}/")
    assert reset.returncode in (52, 56) and reset.stdout == "", reset


def test_large_bodies_cross_the_bridge_intact(bridged) -> None:
    pid, up, *_ = bridged
    done = subprocess.run(
        [
            "nsenter",
            "-t",
            str(pid),
            "-n",
            "--",
            "sh",
            "-c",
            f"curl -sS http://127.0.0.1:{up}/big | sha256sum",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split()[0] == hashlib.sha256(PAYLOAD).hexdigest()


def test_stopping_the_lab_side_cuts_the_bridge_and_removes_its_sockets(bridged) -> None:
    pid, up, _, _, lab, base = bridged
    assert socket_path(base / "br", up).exists()
    lab.stop()
    assert not socket_path(base / "br", up).exists()
    after = curl(pid, f"http://127.0.0.1:{up}/")
    assert after.returncode != 0 and after.stdout == ""


def test_socket_paths_must_fit_a_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(BridgeError):
        socket_path(tmp_path / ("x" * 120), 15000)


def test_node_side_cli_exits_cleanly_on_sigterm() -> None:
    with short_dir("lb") as base:
        proc = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--",
                sys.executable,
                "-m",
                "runbook_lab.bridge",
                "node",
                str(base / "br"),
                "15000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        out = proc.stdout
        assert out is not None
        assert "node side up" in out.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
