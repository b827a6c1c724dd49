"""Test kit: a Nexus-emulator lab (emulator + Docker Hub front + real distribution registry).

Shared by the stage tests and the real-containerd tests; not a test module itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from runbook_lab import registries
from runbook_lib import params as params_mod
from runbook_lib.secrets import REDACTOR, resolve
from runbook_lib.stages import nexus_repos, nexus_security

REPO = Path(__file__).resolve().parents[2]

# Outside CI a missing docker-registry skips (with the install hint); under CI it must be there.
needs_registry = pytest.mark.skipif(
    not Path(registries.REGISTRY_BINARY).exists() and not os.environ.get("CI"),
    reason=f"{registries.REGISTRY_BINARY} missing ({registries.INSTALL_HINT})",
)
WRITES = ("POST", "PUT", "DELETE")


def free_port() -> int:
    """A port for a service started later (runbook_lab.processes.unused_port: outside the ephemeral range,
    where a client connection could take it first)."""
    from runbook_lab.processes import unused_port

    return unused_port()


@dataclass
class Upstream:
    url: str  # the Docker Hub front (what Nexus proxies and what a direct pull uses)
    hub: object  # runbook_lab.dockerhub.DockerHub
    registry_url: str


def upstream_fixture(tmp_path_factory) -> Iterator[Upstream]:
    """A real distribution registry seeded with the lab images, behind the Docker Hub front."""
    from runbook_lab.dockerhub import DockerHub
    from runbook_lab.images import seed_lab_images
    from runbook_lab.registries import start_registry, stop_process

    tmp = tmp_path_factory.mktemp("upstream")
    reg = start_registry("docker.io", tmp / "reg", 0, tmp / "reg.log")
    hub = DockerHub(reg.url).start()
    try:
        seed_lab_images({"docker.io": reg.url, "quay.io": reg.url}, tmp / "img", image_mb=1, multilayer_mb=4)
        yield Upstream(hub.url, hub, reg.url)
    finally:
        hub.stop()  # idempotent: a test may have stopped it to take the upstream down
        stop_process(reg)


class Lab:
    def __init__(self, tmp: Path, hub_url: str, mode: str):
        from runbook_lab.nexus.emulator import NexusEmulator

        self.log = tmp / "requests.jsonl"
        self.emulator = NexusEmulator(
            tmp / "nexus", port=0, version="3.94.0-01", edition="COMMUNITY", request_log=self.log
        ).start()
        hub_port, quay_port = free_port(), free_port()
        data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
        data["nexus"].update(
            url=self.emulator.url,
            admin_password="env:TEST_NEXUS_ADMIN",
            initial_password_file=str(tmp / "nexus" / "admin.password"),
        )
        data["upstreams"] = [
            {
                "name": "docker-hub",
                "registry": "docker.io",
                "remote_url": hub_url,
                "group": "docker",
                "connector_port": hub_port,
                "mirror_url": f"http://127.0.0.1:{hub_port}",
            },
            {"name": "quay-io", "registry": "quay.io", "remote_url": hub_url, "connector_port": quay_port},
        ]
        data["security"] = {"mode": mode, "pull_password": "env:TEST_PULL_PASSWORD"}
        data["verification"]["images"] = ["docker.io/library/demo:1"]
        self.params = params_mod.parse(data, "test", REPO / "parameters")
        self.records: dict[str, list] = {}
        # What a stage needs of the notebook's context (runbook_lib.notebook.StageContext).
        self.apply = False
        self.api_client = None
        self.run_dir = tmp

    def secret(self, ref: str, user: str | None = None) -> str:
        return resolve(ref, None, user)

    resolve = secret

    def record(self, key: str, value) -> None:
        self.records.setdefault(key, []).append(value)

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def run_stages(self, apply: bool) -> tuple[dict, dict]:
        """Stages 1 and 2 as their notebooks run them, up to the apply; the counts of each plan."""
        self.apply = apply
        counts = []
        for stage in (nexus_repos, nexus_security):
            state = stage.read(self)
            plan = stage.plan(self, state)
            stage.show(self, state, plan)
            stage.apply(self, state, plan)
            counts.append(plan.counts())
        return counts[0], counts[1]


def labs_fixture(tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A fixture body: `make(mode, name=None)` starts a Lab (its own emulator, the shared upstream) with the
    admin and pull passwords its parameters name; every Lab made is stopped afterwards."""
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    made: list[Lab] = []

    def make(mode: str, name: str | None = None) -> Lab:
        lab = Lab(tmp_path / (name or mode), upstream.url, mode)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.emulator.stop()
    REDACTOR.clear()


def lab_params_file(tmp: Path) -> Path:
    """parameters/lab.yaml with its folder, kubeconfig and outputs under `tmp` and small images: what
    `runbook lab up --params` gets in the lab CLI tests (the lab's own ports: run them in the netns)."""
    data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
    lab_dir = tmp / "lab"
    data["lab"].update(dir=str(lab_dir), image_mb=2, multilayer_mb=4)
    data["nexus"]["initial_password_file"] = str(lab_dir / "nexus" / "data" / "admin.password")
    data["kubernetes"]["kubeconfig"] = str(lab_dir / "kubeconfig")
    data["outputs"]["dir"] = str(tmp / "outputs")
    path = tmp / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def lab_ports(params_path: Path) -> list[int]:
    """Every port `runbook lab up` listens on for this parameters file."""
    data = yaml.safe_load(params_path.read_text())
    lab = data["lab"]
    ports = [r["port"] for r in lab["registries"].values()]
    ports += [
        lab["dockerhub"]["port"],
        lab["dockerhub"]["token_port"],
        lab["kube_port"],
        lab["moto_port"],
        18081,
        lab.get("ingress_port", 18080),
        lab.get("karpenter_health_port", 18090),
    ]
    ports += [u["connector_port"] for u in data["upstreams"]]
    return ports
