"""Stage 2 on a Nexus that serves others too (issue #12 part 4): a private docker hosted repository sits
beside the mirrors, on the lab's Nexus emulator with the Docker Hub front and a real distribution registry.

Anonymous mode must leave the hosted repository's anonymous read as it was (readable only if it was before,
and then the plan says so) while the mirrors pull anonymously; authenticated mode switches anonymous
access off for other consumers only when security.anonymous_access says so. A rerun writes nothing.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from runbook_lab.images import build_image
from runbook_lab.nexus import hosted as hosted_store
from runbook_lib.nexus import access, proof, session
from runbook_lib.nexus.client import NexusClient
from runbook_lib.plan import Plan, StageFailed
from runbook_lib.stages import nexus_security
from tests.support.labkit import WRITES, Lab, free_port, labs_fixture, upstream_fixture

upstream = pytest.fixture(scope="module")(upstream_fixture)
HOSTED = "team-private"
PRIVATE = ("team/app", "1")  # the image someone else keeps in the hosted repository


@pytest.fixture
def lab_factory(tmp_path, upstream, monkeypatch):
    made = labs_fixture(tmp_path, upstream, monkeypatch)
    new_lab = next(made)
    serial = itertools.count()

    def make(
        mode: str, anonymous_enabled: bool = True, hosted_port: int | None = None, **security: str
    ) -> Lab:
        """A lab whose Nexus already holds someone else's private hosted repository."""
        lab = new_lab(mode, f"{mode}-{next(serial)}")
        for key, value in security.items():
            setattr(lab.params.security, key, value)
        admin = session.admin_login(lab.params, lab.secret).client
        hosted = {
            "name": HOSTED,
            "online": True,
            "storage": {
                "blobStoreName": "default",
                "strictContentTypeValidation": True,
                "writePolicy": "ALLOW",
            },
            "docker": {"v1Enabled": False, "forceBasicAuth": False},
        }
        if hosted_port:
            hosted["docker"]["httpPort"] = hosted_port  # its own connector, as a team would have it
        lab.hosted_port = hosted_port
        admin.request("POST", "/v1/repositories/docker/hosted", "hosted", json_body=hosted)
        cache = lab.emulator.connectors.cache_dir
        hosted_store.store_image(
            cache, HOSTED, PRIVATE[0], PRIVATE[1], build_image({"etc/team": b"private\n"})
        )
        if not anonymous_enabled:
            admin.set_anonymous({**admin.anonymous(), "enabled": False})
        return lab

    yield make
    next(made, None)


def admin(lab: Lab) -> NexusClient:
    return NexusClient(lab.params.nexus.url, "admin", "managed-admin-secret")


def anonymous_reads(lab: Lab, repo: str) -> bool:
    """An anonymous docker client gets the image's manifest on Nexus's main port (200), or the 401
    challenge; no token at all while anonymous access is off."""
    name, tag = PRIVATE if repo == HOSTED else ("library/demo", "1")
    base = f"{lab.params.nexus.url}/repository/{repo}/v2"
    with httpx.Client(timeout=10) as http:
        token = http.get(f"{base}/token")
        if token.status_code != 200:
            return False
        headers = {"Authorization": f"Bearer {token.json()['token']}"}
        got = http.get(f"{base}/{name}/manifests/{tag}", headers=headers).status_code
    assert got in (200, 401), got
    return got == 200


def security_plan(lab: Lab) -> Plan:
    """Stage 2's plan, plan-only: every request it sent is a GET."""
    lab.apply = False
    state = nexus_security.read(lab)
    plan = nexus_security.plan(lab, state)
    assert {method for method, _, _ in state.login.client.requests} == {"GET"}, "the plan wrote"
    return plan


def read_change(plan: Plan, name: str):
    return next(c for c in plan.changes if c.kind == "anonymous read" and c.name == name)


def writes(lab: Lab) -> list[dict]:
    return [r for r in lab.requests() if r["method"] in WRITES]


def apply_twice(lab: Lab) -> None:
    """Stages 1 and 2 with --apply, then again: the rerun sends no write."""
    lab.run_stages(apply=True)
    first = writes(lab)
    _, sec = lab.run_stages(apply=True)
    assert sec["create"] == sec["update"] == 0, sec
    assert writes(lab) == first, "the rerun sent writes"


def test_anonymous_mode_while_anonymous_is_off_exposes_only_the_mirrors(lab_factory) -> None:
    lab = lab_factory("anonymous", anonymous_enabled=False)
    plan = security_plan(lab)
    user = next(c for c in plan.changes if c.kind == "anonymous user")
    assert user.diff == {"roles": [["nx-anonymous"], ["eks-mirror-anonymous"]]}
    assert "nx-anonymous would expose other repositories" in user.note
    others = read_change(plan, "other repositories")
    assert others.action == "unchanged" and others.note == "none read anonymously"
    mirrors = read_change(plan, "mirror repositories")
    assert mirrors.action == "update"
    assert mirrors.diff["docker"] == ["no", "read (role eks-mirror-anonymous)"]

    apply_twice(lab)
    assert not anonymous_reads(lab, HOSTED)
    assert anonymous_reads(lab, "docker") and anonymous_reads(lab, "quay-io")
    checks = proof.prove(lab.params, lab.secret)
    assert checks and all(c.ok for c in checks), [c.record() for c in checks if not c.ok]
    role = admin(lab).role("eks-mirror-anonymous")
    assert role["privileges"] == [
        "nx-repository-view-docker-docker-browse",
        "nx-repository-view-docker-docker-read",
        "nx-repository-view-docker-quay-io-browse",
        "nx-repository-view-docker-quay-io-read",
    ]
    assert admin(lab).user("anonymous")["roles"] == ["eks-mirror-anonymous"]


def test_anonymous_mode_keeps_what_others_read_today_and_says_so(lab_factory) -> None:
    lab = lab_factory("anonymous")  # a fresh Nexus: anonymous on, nx-anonymous reads everything
    plan = security_plan(lab)
    others = read_change(plan, "other repositories")
    assert others.action == "unchanged"
    assert others.note == f"read anonymously: {HOSTED}, {access.LATER}"
    user = next(c for c in plan.changes if c.kind == "anonymous user")
    assert user.diff == {"roles": [["nx-anonymous"], ["eks-mirror-anonymous", "nx-anonymous"]]}

    apply_twice(lab)
    assert anonymous_reads(lab, HOSTED)  # it was readable before and the plan said so
    assert anonymous_reads(lab, "docker")
    plan = security_plan(lab)
    assert [c.label for c in plan.pending] == []


def test_authenticated_mode_will_not_switch_anonymous_off_for_others_unasked(lab_factory) -> None:
    lab = lab_factory("authenticated")
    with pytest.raises(StageFailed, match="security.anonymous_access") as err:
        security_plan(lab)
    assert f"read anonymously today: {HOSTED} by role nx-anonymous." in str(err.value)
    assert [r["path"] for r in writes(lab)] == ["/service/rest/v1/repositories/docker/hosted"]
    nexus = session.admin_login(lab.params, lab.secret).client
    assert nexus.anonymous()["enabled"] is True and nexus.user("anonymous")["roles"] == ["nx-anonymous"]


def test_authenticated_mode_off_switches_anonymous_off_and_the_plan_lists_who_loses(lab_factory) -> None:
    lab = lab_factory("authenticated", anonymous_access="off")
    plan = security_plan(lab)
    others = read_change(plan, "other repositories")
    assert others.action == "update" and others.diff[HOSTED] == ["read (role nx-anonymous)", "no"]
    assert f"lose anonymous read: {HOSTED}, {access.LATER}" in others.note

    apply_twice(lab)
    assert admin(lab).anonymous()["enabled"] is False
    assert not anonymous_reads(lab, HOSTED) and not anonymous_reads(lab, "docker")
    checks = proof.prove(lab.params, lab.secret)
    assert checks and all(c.ok for c in checks), [c.record() for c in checks if not c.ok]


def test_authenticated_mode_keep_refuses_while_a_role_still_reads_the_mirrors(lab_factory) -> None:
    lab = lab_factory("authenticated", anonymous_access="keep")
    with pytest.raises(StageFailed, match="still reads the mirrors") as err:
        security_plan(lab)
    assert "the anonymous user still reads the mirrors: docker by role nx-anonymous;" in str(err.value)
    assert "privileges.html" in str(err.value)


def test_authenticated_mode_keep_leaves_other_consumers_anonymous_read(lab_factory) -> None:
    """The operator gave the anonymous user a role for CI's repository only: anonymous stays on, CI keeps
    reading anonymously, the mirrors need the pull user."""
    lab = lab_factory("authenticated", anonymous_access="keep")
    nexus = session.admin_login(lab.params, lab.secret).client
    ci_role = {
        "id": "ci-anonymous",
        "name": "ci-anonymous",
        "privileges": [f"nx-repository-view-docker-{HOSTED}-read"],
    }
    nexus.create_role(ci_role)
    user = nexus.user("anonymous")
    nexus.update_user({**user, "roles": ["ci-anonymous"]})

    plan = security_plan(lab)
    assert read_change(plan, "other repositories").action == "unchanged"
    assert next(c for c in plan.changes if c.kind == "anonymous access").action == "unchanged"
    apply_twice(lab)
    assert admin(lab).anonymous()["enabled"] is True
    assert anonymous_reads(lab, HOSTED)
    assert not anonymous_reads(lab, "docker") and not anonymous_reads(lab, "quay-io")
    checks = proof.prove(lab.params, lab.secret)
    assert checks and all(c.ok for c in checks), [c.record() for c in checks if not c.ok]


# ------------------------------------------------------------- the read-set model and its parameters
def model(roles: dict, privileges: list[dict], repositories: list[tuple[str, str]]) -> access.SecurityModel:
    return access.SecurityModel(
        {rid: {"id": rid, **doc} for rid, doc in roles.items()},
        {p["name"]: p for p in privileges},
        repositories,
    )


REPOS = [("docker", "docker"), ("docker-hub", "docker"), ("maven-releases", "maven2"), (HOSTED, "docker")]


def test_read_sets_follow_nexus_grants() -> None:
    privileges = [
        {"type": "wildcard", "name": "everything-read", "pattern": "nexus:repository-view:*:*:read"},
        {
            "type": "repository-view",
            "name": "docker-all",
            "format": "docker",
            "repository": "*",
            "actions": ["ALL"],
        },
        {
            "type": "repository-view",
            "name": "group-read",
            "format": "docker",
            "repository": "docker",
            "actions": ["READ"],
        },
        {
            "type": "repository-view",
            "name": "maven-browse",
            "format": "maven2",
            "repository": "maven-releases",
            "actions": ["BROWSE"],
        },
        {
            "type": "repository-content-selector",
            "name": "cs",
            "format": "maven2",
            "repository": "maven-releases",
            "contentSelector": "team",
            "actions": ["READ"],
        },
        {"type": "application", "name": "nx-search-read", "domain": "search", "actions": ["READ"]},
    ]
    m = model(
        {
            "wide": {"privileges": ["everything-read"]},
            "docker-star": {"privileges": ["docker-all"]},
            "group": {"privileges": ["group-read", "maven-browse", "nx-search-read"]},
            "outer": {"privileges": [], "roles": ["group"]},
            "selector": {"privileges": ["cs"]},
        },
        privileges,
        REPOS,
    )
    assert m.reads("wide") == ["docker", "docker-hub", "maven-releases", HOSTED, access.LATER]
    assert m.reads("docker-star") == ["docker", "docker-hub", HOSTED, access.LATER]  # ALL implies read
    assert m.reads("outer") == [
        "docker"
    ]  # nested role; a group grant does not reach its members; browse is no read
    assert m.reads("selector") == ["maven-releases"]  # content selectors count as (partial) read
    assert m.reads("missing") == []
    on = access.ReadSet.of(m, True, ["outer", "selector"])
    assert on.by_repository == {"docker": ["outer"], "maven-releases": ["selector"]}
    assert on.describe("maven-releases") == "read (role selector)" and on.describe(HOSTED) == "no"
    assert access.ReadSet.of(m, False, ["wide"]).by_repository == {}  # the switch off: nobody reads


def test_security_parameters_name_the_field() -> None:
    from runbook_lib import params as params_mod

    base = {"mode": "authenticated", "pull_password": "env:X"}
    ok = params_mod.Security(**base, anonymous_access="keep")
    assert (ok.anonymous_access, ok.anonymous_role) == ("keep", "eks-mirror-anonymous")
    for security, field, words in (
        ({**base, "anonymous_access": "maybe"}, "anonymous_access", "'keep' or 'off'"),
        ({"mode": "anonymous", "anonymous_access": "off"}, "anonymous_access", "mode 'authenticated'"),
        ({"anonymous_role": "nx-anonymous"}, "anonymous_role", "a role of its own"),
    ):
        with pytest.raises(ValueError) as err:
            params_mod.Security(**security)
        assert field in str(err.value) and words in str(err.value)


# ----------------------------------------------------------------------------- with real containerd
@pytest.mark.netns
@pytest.mark.parametrize(
    ("mode", "anonymous_before", "security", "private_readable"),
    [
        ("anonymous", False, {}, False),  # dormant nx-anonymous comes off the anonymous user
        ("anonymous", True, {}, True),  # readable before, and the plan said so: it stays
        ("authenticated", True, {"anonymous_access": "off"}, False),
    ],
    ids=["anonymous-was-off", "anonymous-was-on", "authenticated-off"],
)
def test_real_containerd_without_credentials_after_stage_2(
    lab_factory, tmp_path, mode, anonymous_before, security, private_readable
) -> None:
    """A real containerd with no credentials: the hosted repository's image is pulled only where the
    plan kept it readable; in anonymous mode the mirrored image comes through the mirror."""
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lib.containerd.hosts import HostsToml, MirrorHost

    lab = lab_factory(mode, anonymous_enabled=anonymous_before, hosted_port=free_port(), **security)
    lab.run_stages(apply=True)
    others = read_change(security_plan(lab), "other repositories")
    assert (HOSTED in others.note) is private_readable, others.note
    certs = tmp_path / "certs"
    up = lab.params.upstream("docker.io")
    f = HostsToml("docker.io", up.remote_url, [MirrorHost(up.mirror_url)])
    (certs / f.relative_path).parent.mkdir(parents=True)
    (certs / f.relative_path).write_text(f.render())
    with PrivateContainerd(tmp_path / "ctd", certs) as ctd:
        ref = f"127.0.0.1:{lab.hosted_port}/{PRIVATE[0]}:{PRIVATE[1]}"
        private = ctd.ctr_pull(ref, extra_args=["--plain-http"])
        assert private.ok is private_readable, private
        if not private_readable:
            assert "401" in private.stderr or "unauthorized" in private.stderr.lower(), private.stderr
        if mode == "anonymous":
            before = httpx.get(f"{lab.params.nexus.url}/_lab/counters", timeout=5).json()["docker"]
            mirrored = ctd.ctr_pull("docker.io/library/demo:1", hosts_dir=certs)
            assert mirrored.ok, mirrored.stderr
            after = httpx.get(f"{lab.params.nexus.url}/_lab/counters", timeout=5).json()["docker"]
            assert after["manifest_requests"] > before["manifest_requests"]  # the mirror served it
            assert "trying next host" not in ctd.log_text()
