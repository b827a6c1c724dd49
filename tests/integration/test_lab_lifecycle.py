"""Lab lifecycle (issue #11 part 1): `lab up` after `lab down` comes back ready with fresh nodes, a second
`lab up` is a no-op, a component killed with SIGKILL shows as down and the next `lab up` restarts it and only
it, and a `lab up` that fails stops what it started and names what it left running.

One lab (the lab's real ports, inside the private network namespace of `make test`) serves every test of the
module; each test starts with `lab up`, itself idempotent, so a test finds the lab up whatever ran before it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import yaml

from runbook_lab import orchestrator
from runbook_lab.orchestrator import pid_alive, port_free
from runbook_lib import params as params_mod
from runbook_lib.cli import main
from tests.support.labkit import lab_params_file, lab_ports

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.netns

_LAB = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())["lab"]
COMPONENTS = [
    *(f"registry {host}" for host in _LAB["registries"]),
    "dockerhub",
    "nexus",
    "kube",
    "ingress",
    "moto",
    "karpenter",
]


class LabUnderTest:
    def __init__(self, params_path: Path) -> None:
        self.params_path = params_path
        self.params = params_mod.load(params_path)
        self.dir = Path(self.params.lab.dir)
        self.lab = orchestrator.Lab(self.params, self.dir, params_path)

    def names(self) -> list[str]:
        """The components in the order `lab up` starts them."""
        return [c.name for c in self.lab.components()]

    def cli(self, action: str) -> int:
        return main(["lab", action, "--params", str(self.params_path)])

    def pids(self) -> dict[str, int]:
        state = json.loads((self.dir / "state.json").read_text())
        return {name: rec["pid"] for name, rec in state["components"].items()}

    def states(self) -> dict[str, str]:
        return {r["component"]: r["state"] for r in self.lab.status_rows()}

    def readyz(self) -> int:
        return httpx.get(f"http://127.0.0.1:{self.params.lab.karpenter_health_port}/readyz").status_code

    def live_instances(self) -> set[str]:
        ec2 = boto3.client(
            "ec2",
            endpoint_url=self.params.aws.endpoint_url,
            region_name=self.params.aws.region,
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
        )
        reservations = ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        return {i["InstanceId"] for r in reservations for i in r["Instances"]}

    def nodes(self) -> dict[str, dict]:
        """Node name -> {provider, ready} from the lab's API."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.dir / "kubeconfig"))
        try:
            items = json.loads(client.CoreV1Api(api).list_node(_preload_content=False).data)["items"]
        finally:
            api.close()
        return {
            n["metadata"]["name"]: {
                "provider": n["spec"].get("providerID", ""),
                "ready": any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
                ),
            }
            for n in items
        }

    def assert_ready_with_live_nodes(self) -> set[str]:
        """Karpenter ready, every NodePool's nodes Ready, each Node backed by an instance moto runs."""
        assert self.readyz() == 200
        nodes = self.nodes()
        assert len(nodes) == sum(self.params.lab.node_pools.values()), nodes
        assert all(n["ready"] for n in nodes.values()), nodes
        providers = {n["provider"].rsplit("/", 1)[-1] for n in nodes.values()}
        assert providers <= self.live_instances(), "a Node whose instance does not exist"
        return providers


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"pid {pid} still runs"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[LabUnderTest]:
    under_test = LabUnderTest(lab_params_file(tmp_path_factory.mktemp("lifecycle")))
    try:
        assert under_test.cli("up") == 0
        yield under_test
    finally:
        under_test.cli("down")


def test_down_then_up_comes_back_ready_with_fresh_nodes(lab, capsys) -> None:
    assert lab.cli("up") == 0
    before = lab.assert_ready_with_live_nodes()
    pids = lab.pids()
    assert lab.cli("down") == 0
    assert not [n for n, p in pids.items() if pid_alive(p)], "lab down left processes behind"
    assert all(port_free(p) for p in lab_ports(lab.params_path))
    assert lab.cli("status") == 1
    assert set(lab.states().values()) == {"down"}

    # moto starts empty: the old NodeClaims' instances are gone, Karpenter garbage-collects them and launches
    # new ones, and `lab up` returns once they are Ready.
    capsys.readouterr()
    assert lab.cli("up") == 0
    assert "already running" not in capsys.readouterr().out
    after = lab.assert_ready_with_live_nodes()
    assert not after & before, "the nodes are not fresh"
    assert lab.cli("status") == 0


def test_second_up_is_a_no_op(lab, capsys) -> None:
    assert lab.cli("up") == 0
    pids = lab.pids()
    capsys.readouterr()
    assert lab.cli("up") == 0
    out = capsys.readouterr().out
    assert f"all {len(COMPONENTS)} components already up; nothing started" in out
    assert "up on port" not in out and "seeding" not in out
    assert lab.pids() == pids
    assert all(pid_alive(p) for p in pids.values())


@pytest.mark.parametrize("name", COMPONENTS)
def test_sigkill_shows_down_and_up_restarts_only_it(lab, capsys, name) -> None:
    assert lab.cli("up") == 0
    pids = lab.pids()
    assert set(pids) == set(COMPONENTS)
    nodes_before = lab.assert_ready_with_live_nodes()

    os.kill(pids[name], signal.SIGKILL)
    wait_gone(pids[name])
    states = lab.states()
    assert states[name] == "down"
    # the others keep running (some may not answer while what they depend on is down)
    assert all(state != "down" for other, state in states.items() if other != name), states
    capsys.readouterr()
    assert lab.cli("status") == 1
    assert f"{name} (down)" in capsys.readouterr().err

    assert lab.cli("up") == 0
    out = capsys.readouterr().out
    restarted = [line.split(":")[0].strip() for line in out.splitlines() if ": up on port" in line]
    assert restarted == [name]
    after = lab.pids()
    assert after[name] != pids[name] and pid_alive(after[name])
    assert {n: p for n, p in after.items() if n != name} == {n: p for n, p in pids.items() if n != name}
    assert lab.cli("status") == 0
    assert set(lab.states().values()) == {"up"}
    nodes_after = lab.assert_ready_with_live_nodes()
    if name == "moto":  # an empty account again: the instances are gone, so the nodes were replaced
        assert not nodes_after & nodes_before
    elif name == "karpenter":  # the instances still run: the same nodes booted again, like a reboot
        assert nodes_after == nodes_before


def test_failed_up_stops_what_it_started_and_names_what_it_left_running(lab, capsys) -> None:
    assert lab.cli("up") == 0
    pids = lab.pids()
    kube_state = lab.dir / "kube" / "state.json"
    saved = kube_state.read_bytes()
    os.kill(pids["kube"], signal.SIGKILL)
    wait_gone(pids["kube"])
    try:
        kube_state.write_text("{ not json")  # the restarted API stand-in cannot load its state and exits
        capsys.readouterr()
        assert lab.cli("up") == 1
        err = capsys.readouterr().err
        assert "kube exited during start" in err
        assert "stopped what this `lab up` had started: kube;" in err
        others = [n for n in lab.names() if n != "kube"]
        assert f"left running (already running before): {', '.join(others)}" in err
        assert "kube" not in lab.pids()
        assert lab.pids() == {n: pids[n] for n in others}
        assert all(pid_alive(pids[n]) for n in others)
        assert port_free(lab.params.lab.kube_port)
    finally:
        kube_state.write_bytes(saved)
    assert lab.cli("up") == 0
    assert lab.cli("status") == 0


def _forced_failure(monkeypatch, component: str) -> None:
    """Make one component fail: kube exits at start (its state file is not JSON); karpenter runs but never
    answers /readyz (a process listening on nothing), the failure of the issue."""
    if component == "kube":
        return
    components = orchestrator.Lab.components

    def patched(self):
        comps = components(self)
        for c in comps:
            if c.name == component:
                c.argv = [sys.executable, "-c", "import time; time.sleep(600)"]
                c.ready_timeout = 3.0
        return comps

    monkeypatch.setattr(orchestrator.Lab, "components", patched)


@pytest.mark.parametrize("component", ["kube", "karpenter"])
def test_failed_up_in_a_fresh_folder_leaves_nothing_running(
    lab, tmp_path, capsys, monkeypatch, component
) -> None:
    lab.cli("down")  # the lab's ports are needed; the module's lab comes back with the next test's `lab up`
    fresh = LabUnderTest(lab_params_file(tmp_path))
    if component == "kube":
        (fresh.dir / "kube").mkdir(parents=True)
        (fresh.dir / "kube" / "state.json").write_text("{ not json")
    _forced_failure(monkeypatch, component)
    pids: dict[str, int] = {}
    try:
        with pytest.raises(orchestrator.LabError) as failure:
            fresh.lab.up(timeout=1.0)
        message = str(failure.value)
        started = fresh.names()[: fresh.names().index(component) + 1]
        assert f"stopped what this `lab up` had started: {', '.join(started)};" in message
        assert "nothing of the lab is left running" in message
        assert fresh.pids() == {}
        assert all(port_free(p) for p in lab_ports(fresh.params_path)), "a port still listens"
        if component == "kube":  # the same through the CLI: exit 1, the list on stderr
            capsys.readouterr()
            assert fresh.cli("up") == 1
            err = capsys.readouterr().err
            assert err.startswith("lab up: kube exited during start")
            assert "nothing of the lab is left running" in err
            assert fresh.pids() == {}
    finally:
        pids = fresh.pids() if (fresh.dir / "state.json").exists() else {}
        fresh.cli("down")
    assert not pids
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_lab_process(int(p), fresh.dir)]


def _is_lab_process(pid: int, lab_dir: Path) -> bool:
    """A process of this lab folder: its working folder is the lab folder (orchestrator sets cwd)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == lab_dir
    except OSError:
        return False
