"""Stages 1-2 against the lab's Nexus emulator, Docker Hub front and a real distribution registry.

Covers the acceptance points of issue #4 that need no containerd: apply creates, a rerun writes nothing,
plan mode only reads, every body sent is valid against the published API, the access model is proven,
and a failing write reports what was and was not applied.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.nexus import proof, repositories, security, session
from runbook_lib.nexus.client import NexusClient
from runbook_lib.plan import StageFailed, apply_and_confirm
from runbook_lib.stages import nexus_repos
from tests.support.labkit import WRITES, labs_fixture, upstream_fixture
from tests.support.nexus_openapi import validate_body

upstream = pytest.fixture(scope="module")(upstream_fixture)


lab_factory = pytest.fixture(labs_fixture)


@pytest.mark.parametrize("mode", ["anonymous", "authenticated"])
def test_apply_then_rerun_writes_nothing(lab_factory, mode, reference_dir) -> None:
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
    spec = str(reference_dir / "nexus" / "openapi-subset-3.94.0.json")
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
    whos = {c.name.split(": ", 1)[1].rsplit(" ", 2)[0] for c in checks}  # "<endpoint>: <who> <expect>"
    assert whos == (
        {"anonymous"}
        if mode == "anonymous"
        else {"anonymous", "user docker-pull", "user docker-pull with a wrong password"}
    )


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
    apply_and_confirm(
        plan, lambda: repositories.build_plan(lab.params, client, False, lab.secret), lab.record
    )
    assert client.docker_repository("proxy", "docker-hub")["proxy"]["metadataMaxAge"] == 1440


def test_eula_refused_without_consent(lab_factory) -> None:
    lab = lab_factory("anonymous")
    lab.params.nexus.accept_eula = False
    login = session.admin_login(lab.params, lab.secret)
    with pytest.raises(StageFailed, match="accept_eula"):
        security.build_plan(lab.params, login, True, lab.secret)


def test_repository_checks_follow_the_plan_and_the_server(lab_factory) -> None:
    """Stage 1's checks: skipped for what a plan-mode run would create; after the apply every endpoint
    repository answers /v2/; a repository removed behind the runbook's back fails the stage."""
    lab = lab_factory("anonymous")
    state = nexus_repos.read(lab)
    plan = nexus_repos.plan(lab, state)
    checks = nexus_repos.checks(lab, state, plan)
    assert {c.status for c in checks} == {"skipped"}
    nexus_repos.enforce(lab, checks)  # skipped checks do not fail

    lab.run_stages(apply=True)  # stage 2 replaced the admin password: log in again
    state = nexus_repos.read(lab)
    plan = nexus_repos.plan(lab, state)
    checks = nexus_repos.checks(lab, state, plan)
    assert [c.name for c in checks] == [
        "repository docker serves the registry API",
        "repository quay-io serves the registry API",
    ]
    assert all(c.ok and c.status == "ok" for c in checks), [c.record() for c in checks]

    state.login.client.delete_repository("quay-io")
    checks = nexus_repos.checks(lab, state, plan)  # the plan said nothing was left to create
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == ["repository quay-io serves the registry API"]
    assert "answered 404" in failed[0].detail
    with pytest.raises(StageFailed, match="a repository does not serve docker clients"):
        nexus_repos.enforce(lab, checks)
    assert lab.records["failure"][-1]["step"] == "repository checks"


def test_credentials_taken_out_of_the_parameters_are_dropped_from_the_proxy(lab_factory, monkeypatch) -> None:
    """Removing upstreams[].credentials is a change: the plan says update and the proxy stops
    authenticating upstream (it used to stay 'unchanged' with the old credentials)."""
    from runbook_lib.params import Credentials

    monkeypatch.setenv("TEST_HUB_PASSWORD", "hub-secret")
    lab = lab_factory("anonymous")
    hub = lab.params.upstream("docker.io")
    hub.credentials = Credentials(username="hubuser", password="env:TEST_HUB_PASSWORD")
    lab.run_stages(apply=True)
    client = NexusClient(lab.params.nexus.url, "admin", "managed-admin-secret")
    assert (
        client.docker_repository("proxy", "docker-hub")["httpClient"]["authentication"]["username"]
        == "hubuser"
    )

    hub.credentials = None
    plan = repositories.build_plan(lab.params, client, True, lab.secret)
    change = next(c for c in plan.changes if c.name == "docker-hub")
    assert change.action == "update" and "httpClient.authentication" in change.diff
    apply_and_confirm(
        plan, lambda: repositories.build_plan(lab.params, client, False, lab.secret), lab.record
    )
    assert not (client.docker_repository("proxy", "docker-hub")["httpClient"].get("authentication"))
    again = repositories.build_plan(lab.params, client, True, lab.secret)
    assert not again.pending
