"""Stages 1-2 against the lab's Nexus emulator, Docker Hub front and a real distribution registry.

Covers the acceptance points of issue #4 that need no containerd: apply creates, a rerun writes nothing,
plan mode only reads, every body sent is valid against the published API, the access model is proven,
and a failing write reports what was and was not applied.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runbook_lib import params as params_mod
from runbook_lib.nexus import proof, repositories, security, session
from runbook_lib.nexus.client import NexusClient
from runbook_lib.plan import StageFailed, apply_and_confirm
from runbook_lib.secrets import REDACTOR, resolve
from tests.nexus_openapi import validate_body

REPO = Path(__file__).resolve().parent.parent
WRITES = ("POST", "PUT", "DELETE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[str]:
    from runbook_lib.lab.dockerhub import DockerHub
    from runbook_lib.lab.images import seed_lab_images
    from runbook_lib.lab.registries import start_registry, stop_process

    tmp = tmp_path_factory.mktemp("upstream")
    reg = start_registry("docker.io", tmp / "reg", 0, tmp / "reg.log")
    hub = DockerHub(reg.url).start()
    try:
        seed_lab_images({"docker.io": reg.url, "quay.io": reg.url}, tmp / "img", image_mb=1, multilayer_mb=4)
        yield hub.url
    finally:
        hub.stop()
        stop_process(reg)


class Lab:
    def __init__(self, tmp: Path, hub_url: str, mode: str):
        from runbook_lib.lab.nexus.emulator import NexusEmulator

        self.log = tmp / "requests.jsonl"
        self.emulator = NexusEmulator(tmp / "nexus", port=0, version="3.94.0-01", edition="COMMUNITY",
                                      request_log=self.log).start()
        hub_port, quay_port = free_port(), free_port()
        data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
        data["nexus"].update(url=self.emulator.url, admin_password="env:TEST_NEXUS_ADMIN",
                             initial_password_file=str(tmp / "nexus" / "admin.password"))
        data["upstreams"] = [
            {"name": "docker-hub", "registry": "docker.io", "remote_url": hub_url, "group": "docker",
             "connector_port": hub_port, "mirror_url": f"http://127.0.0.1:{hub_port}"},
            {"name": "quay-io", "registry": "quay.io", "remote_url": hub_url, "connector_port": quay_port},
        ]
        data["security"] = {"mode": mode, "pull_password": "env:TEST_PULL_PASSWORD"}
        data["verification"]["images"] = ["docker.io/library/demo:1"]
        self.params = params_mod.parse(data, "test", REPO / "parameters")
        self.records: dict[str, list] = {}

    def secret(self, ref: str, user: str | None = None) -> str:
        return resolve(ref, None, user)

    def record(self, key: str, value) -> None:
        self.records.setdefault(key, []).append(value)

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def run_stages(self, apply: bool) -> tuple[dict, dict]:
        login = session.admin_login(self.params, self.secret)
        repos = repositories.build_plan(self.params, login.client, apply, self.secret)
        apply_and_confirm(repos, lambda: repositories.build_plan(self.params, login.client, False, self.secret),
                          self.record)
        sec = security.build_plan(self.params, login, apply, self.secret)
        apply_and_confirm(sec, lambda: security.build_plan(
            self.params, session.admin_login(self.params, self.secret), False, self.secret), self.record)
        return repos.counts(), sec.counts()


@pytest.fixture
def lab_factory(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    labs = []

    def make(mode: str) -> Lab:
        lab = Lab(tmp_path / mode, upstream, mode)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.emulator.stop()
    REDACTOR.clear()


@pytest.mark.parametrize("mode", ["anonymous", "authenticated"])
def test_apply_then_rerun_writes_nothing(lab_factory, mode, shared_dir) -> None:
    lab = lab_factory(mode)
    repos, sec = lab.run_stages(apply=True)
    assert repos == {"create": 3, "update": 0, "delete": 0, "unchanged": 0}  # 2 proxies + the docker group
    assert sec["update"] >= 2 and sec["create"] >= 1  # admin password, realms (+ EULA, security objects)
    first = [r for r in lab.requests() if r["method"] in WRITES]

    repos2, sec2 = lab.run_stages(apply=True)
    assert repos2["create"] == repos2["update"] == 0 and sec2["create"] == sec2["update"] == 0
    second = [r for r in lab.requests() if r["method"] in WRITES]
    assert second == first, "the rerun sent writes"

    # Every body the runbook sent is valid against the published API (OpenAPI 3.94).
    spec = str(shared_dir / "reference" / "nexus" / "openapi-subset-3.94.0.json")
    for r in first:
        body = r.get("body")
        validate_body(spec, r["method"], r["path"], body if body != "***" else "masked-text-password")

    client = NexusClient(lab.params.nexus.url, "admin", "managed-admin-secret")
    assert client.realms_active() == ["NexusAuthenticatingRealm", "DockerToken"]
    assert client.anonymous()["enabled"] is (mode == "anonymous")
    proxy = client.docker_repository("proxy", "quay-io")
    assert proxy["docker"]["httpPort"] == lab.params.upstream("quay.io").connector_port
    group = client.docker_repository("group", "docker")
    assert group["group"]["memberNames"] == ["docker-hub"]
    assert group["docker"]["forceBasicAuth"] is False
    assert not (Path(lab.params.nexus.initial_password_file)).exists(), "bootstrap removes admin.password"

    checks = proof.prove(lab.params, lab.secret)
    assert checks and all(c.ok for c in checks), [c.record() for c in checks]
    whos = {c.who for c in checks}
    assert whos == ({"anonymous"} if mode == "anonymous" else
                    {"anonymous", "user docker-pull", "user docker-pull with a wrong password"})


def test_plan_mode_sends_only_gets(lab_factory) -> None:
    lab = lab_factory("authenticated")
    repos, sec = lab.run_stages(apply=False)
    assert repos["create"] == 3 and sec["create"] >= 3
    methods = {r["method"] for r in lab.requests()}
    assert methods == {"GET"}, methods


def test_failed_write_says_what_was_and_was_not_applied(lab_factory) -> None:
    lab = lab_factory("anonymous")
    login = session.admin_login(lab.params, lab.secret)
    # Someone else's repository already holds the docker group's connector port.
    taken = lab.params.upstream("docker.io").connector_port
    blocker = repositories.proxy_document(lab.params, lab.params.upstream("quay.io"), None)
    blocker.update(name="someone-elses", docker={**blocker["docker"], "httpPort": taken})
    login.client.create_docker_repository("proxy", blocker)

    plan = repositories.build_plan(lab.params, login.client, True, lab.secret)
    with pytest.raises(StageFailed) as err:
        apply_and_confirm(plan, lambda: plan, lab.record)
    failure = lab.records["failure"][0]
    assert failure["step"] == "create docker group docker"
    assert failure["applied"] == ["create docker proxy docker-hub", "create docker proxy quay-io"]
    assert failure["not_applied"] == ["create docker group docker"]
    assert "already in use" in str(err.value)

    # After the operator frees the port, a rerun converges and redoes nothing that was applied.
    login.client.delete_repository("someone-elses")
    plan = repositories.build_plan(lab.params, login.client, True, lab.secret)
    assert plan.counts() == {"create": 1, "update": 0, "delete": 0, "unchanged": 2}


def test_drifted_setting_is_updated(lab_factory) -> None:
    lab = lab_factory("anonymous")
    lab.run_stages(apply=True)
    client = NexusClient(lab.params.nexus.url, "admin", "managed-admin-secret")
    doc = client.docker_repository("proxy", "docker-hub")
    doc["proxy"]["metadataMaxAge"] = 5
    client.update_docker_repository("proxy", doc)
    plan = repositories.build_plan(lab.params, client, True, lab.secret)
    change = next(c for c in plan.changes if c.name == "docker-hub")
    assert change.action == "update" and change.diff == {"proxy.metadataMaxAge": [5, 1440]}
    apply_and_confirm(plan, lambda: repositories.build_plan(lab.params, client, False, lab.secret), lab.record)
    assert client.docker_repository("proxy", "docker-hub")["proxy"]["metadataMaxAge"] == 1440


def test_eula_refused_without_consent(lab_factory) -> None:
    lab = lab_factory("anonymous")
    lab.params.nexus.accept_eula = False
    login = session.admin_login(lab.params, lab.secret)
    with pytest.raises(StageFailed, match="accept_eula"):
        security.build_plan(lab.params, login, True, lab.secret)
