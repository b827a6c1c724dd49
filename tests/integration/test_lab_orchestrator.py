"""`runbook lab up|status|down` and preflight against the running lab (issues #2 and #3 acceptance).

Runs with the lab's real ports inside the private network namespace of `make test`, so it cannot collide
with a lab a developer has running.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from runbook_lab.orchestrator import pid_alive, port_free
from runbook_lib.cli import main
from tests.support.labkit import lab_params_file as lab_params
from tests.support.labkit import lab_ports as all_ports

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.netns


def writes(lab_dir: Path) -> list[dict]:
    log = lab_dir / "nexus" / "requests.jsonl"
    return [
        r for r in map(json.loads, log.read_text().splitlines()) if r["method"] in ("POST", "PUT", "DELETE")
    ]


def latest_run(tmp_path: Path) -> dict:
    return json.loads(sorted((tmp_path / "outputs").glob("*-lab/run.json"))[-1].read_text())


def test_lab_up_stages_down(tmp_path, capsys) -> None:
    params_path = lab_params(tmp_path)
    state_file = tmp_path / "lab" / "state.json"
    try:
        assert main(["lab", "up", "--params", str(params_path)]) == 0
        state = json.loads(state_file.read_text())
        pids = {name: rec["pid"] for name, rec in state["components"].items()}
        assert {"nexus", "kube", "moto", "dockerhub", "registry docker.io"} <= set(pids)
        assert all(pid_alive(p) for p in pids.values())

        # Idempotent: a second `up` starts nothing and reports what runs.
        capsys.readouterr()
        assert main(["lab", "up", "--params", str(params_path)]) == 0
        assert "already running" in capsys.readouterr().out
        assert {n: r["pid"] for n, r in json.loads(state_file.read_text())["components"].items()} == pids
        assert main(["lab", "status", "--params", str(params_path)]) == 0

        assert main(["run", "preflight", "--params", str(params_path)]) == 0
        runs = sorted((tmp_path / "outputs").glob("*-lab/run.json"))
        record = json.loads(runs[-1].read_text())
        assert record["status"] == "ok" and record["stages"][0]["name"] == "preflight"
        endpoints = record["stages"][0]["results"]["endpoints"]
        assert endpoints["nexus"]["version"] == "3.94.0-01 (COMMUNITY)"
        assert endpoints["kubernetes"]["ok"] and endpoints["aws"]["ok"]
        assert (runs[-1].parent / "00_preflight.html").exists()

        # Stages 1-3 through the CLI: creates first, then a rerun that writes nothing at all.
        stages = ["run", "nexus-repos", "nexus-security", "helm", "--params", str(params_path), "--apply"]
        assert main(stages) == 0
        first = latest_run(tmp_path)
        assert first["stages"][0]["changes"]["create"] == 5  # 4 proxies + the docker group
        assert first["stages"][1]["changes"]["update"] >= 2  # admin password, realms
        assert first["stages"][2]["changes"]["create"] >= 2  # docker Service(s) and Ingress(es)
        assert all(c["ok"] for c in first["stages"][2]["checks"])  # /v2/ answers through the ingress hosts
        written = writes(tmp_path / "lab")
        assert main(stages) == 0
        second = latest_run(tmp_path)
        for stage in second["stages"]:
            assert stage["changes"]["create"] == stage["changes"]["update"] == 0, stage
        assert writes(tmp_path / "lab") == written, "the rerun sent writes to Nexus"

        # Nexus down: preflight fails, exit 1, and the record names the check.
        import os
        import signal

        os.kill(pids["nexus"], signal.SIGTERM)
        assert main(["run", "preflight", "--params", str(params_path)]) == 1
        failed = latest_run(tmp_path)
        assert failed["status"] == "failed" and failed["stages"][0]["results"]["failed"] == ["nexus"]
        assert "nexus" in failed["stages"][0]["failure"]["message"]
    finally:
        assert main(["lab", "down", "--params", str(params_path)]) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.1)
    assert not [n for n, p in pids.items() if pid_alive(p)], "lab down left processes behind"
    assert all(port_free(p) for p in all_ports(params_path)), "lab down left a port listening"
    assert main(["lab", "status", "--params", str(params_path)]) == 1


def test_port_taken_is_a_clear_error_and_nothing_starts(tmp_path, capsys) -> None:
    params_path = lab_params(tmp_path)
    blocker = socket.socket()
    # as servers do (and the lab's own port check): TIME_WAIT left by an earlier lab on this port must not
    # stop the test from taking it
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 16443))
    blocker.listen()
    try:
        assert main(["lab", "up", "--params", str(params_path)]) == 1
        err = capsys.readouterr().err
        assert "16443 (kube)" in err and "already in use" in err
        state_file = tmp_path / "lab" / "state.json"
        assert not state_file.exists() or not json.loads(state_file.read_text())["components"]
    finally:
        blocker.close()
