"""The emulated Nexus's first start, persistence, request log and the state API the connector half uses."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from runbook_lab.nexus import NexusState
from runbook_lab.nexus.rest_system import EULA_DISCLAIMER
from tests.support.lab_nexus import (
    Nexus,
    create_proxies,
    create_puller,
    example,
    group_body,
    proxy_body,
    running_nexus,
)


def _admin_record(nx: Nexus) -> dict:
    return nx.admin().get("/v1/security/users", params={"userId": "admin"}).json()[0]


# ------------------------------------------------------------------------------------ first start
def test_first_start_writes_a_random_admin_password_with_status_changepassword(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        password = (tmp_path / "d" / "admin.password").read_text()
        assert str(uuid.UUID(password)) == password
        assert _admin_record(nx)["status"] == "changepassword"  # and it still authenticates
        assert nx.state.authenticate("admin", password)
        users = {u["userId"]: u for u in nx.admin().get("/v1/security/users").json()}
        assert (
            users["admin"]["roles"] == ["nx-admin"] and users["admin"]["emailAddress"] == "admin@example.org"
        )
        assert users["anonymous"]["roles"] == ["nx-anonymous"]
        assert nx.admin().get("/v1/security/anonymous").json()["enabled"] is True
        assert [b["name"] for b in nx.admin().get("/v1/blobstores").json()] == ["default"]


def test_change_password_of_admin_deletes_admin_password(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        old = nx.admin_password
        r = nx.admin().put(
            "/v1/security/users/admin/change-password",
            content=b"n3w-admin",
            headers={"Content-Type": "text/plain"},
        )
        assert r.status_code == 204
        assert not (tmp_path / "d" / "admin.password").exists()
        assert nx.client(("admin", old)).get("/v1/status").status_code == 401
        assert nx.client(("admin", "n3w-admin")).get("/v1/security/users").status_code == 200
        assert nx.state.authenticate("admin", "n3w-admin")
    with running_nexus(tmp_path / "d") as nx:  # a restart keeps it and writes no new file
        assert not (tmp_path / "d" / "admin.password").exists()
        assert nx.state.authenticate("admin", "n3w-admin")


def test_initial_password_env_wins_and_writes_no_file(tmp_path: Path) -> None:
    state = NexusState(tmp_path / "d", environ={"NEXUS_SECURITY_INITIAL_PASSWORD": "from-env"})
    assert state.authenticate("admin", "from-env")
    assert not (tmp_path / "d" / "admin.password").exists()
    with state.read() as data:
        assert data["users"]["admin"]["status"] == "active"


def test_existing_admin_password_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "admin.password").write_text("pre-seeded")
    state = NexusState(tmp_path / "d", environ={})
    assert state.authenticate("admin", "pre-seeded")
    assert (tmp_path / "d" / "admin.password").read_text() == "pre-seeded"


def test_random_password_disabled_falls_back_to_admin123(tmp_path: Path) -> None:
    state = NexusState(tmp_path / "d", environ={"NEXUS_SECURITY_RANDOMPASSWORD": "false"})
    assert state.authenticate("admin", "admin123")
    assert not (tmp_path / "d" / "admin.password").exists()


def test_before_3_76_the_env_var_is_ignored_and_admin_is_active(tmp_path: Path) -> None:
    state = NexusState(tmp_path / "d", version="3.70.1-02", environ={"NEXUS_SECURITY_INITIAL_PASSWORD": "x"})
    assert not state.authenticate("admin", "x")
    assert state.authenticate("admin", (tmp_path / "d" / "admin.password").read_text())
    with state.read() as data:
        assert data["users"]["admin"]["status"] == "active"


def test_passwords_are_not_stored_in_clear(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        create_proxies(nx.admin(), "Docker Hub")
        nx.admin().post(
            "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]})
        )
        create_puller(nx.admin(), password="very-secret-pull")
        text = (tmp_path / "d" / "nexus-state.json").read_text()
        assert "very-secret-pull" not in text and nx.admin_password not in text


# ------------------------------------------------------------------------------------ persistence
def test_configuration_survives_a_restart(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        admin = nx.admin()
        create_proxies(admin, "Docker Hub")
        admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]}))
        create_puller(admin)
        admin.put("/v1/security/realms/active", json=["NexusAuthenticatingRealm", "DockerToken"])
        admin.put("/v1/security/anonymous", json={"enabled": False})
        admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": EULA_DISCLAIMER})
        nx.state.record_component(
            "docker-hub", "library/alpine", "3.20", [{"path": "v2/library/alpine/manifests/3.20"}]
        )
        password = nx.admin_password
    with running_nexus(tmp_path / "d") as nx:
        assert nx.admin_password == password
        admin = nx.admin()
        assert [r["name"] for r in admin.get("/v1/repositories").json()] == ["docker-group", "docker-hub"]
        assert admin.get("/v1/security/realms/active").json() == ["NexusAuthenticatingRealm", "DockerToken"]
        assert admin.get("/v1/security/anonymous").json()["enabled"] is False
        assert admin.get("/v1/system/eula").json()["accepted"] is True
        assert nx.state.authenticate("puller", "pull-secret") and nx.state.can(
            "puller", "docker-group", "read"
        )
        comps = admin.get("/v1/components", params={"repository": "docker-hub"}).json()["items"]
        assert [(c["name"], c["version"]) for c in comps] == [("library/alpine", "3.20")]


def test_state_writes_are_atomic_files(tmp_path: Path) -> None:
    state = NexusState(tmp_path / "d", environ={})
    for i in range(20):
        state.record_component("nowhere", f"n{i}", "1", [])  # unknown repo: ignored, still a write
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["admin.password", "nexus-state.json"]
    json.loads((tmp_path / "d" / "nexus-state.json").read_text())


# ----------------------------------------------------------------------------------- request log
def test_request_log_records_every_rest_call_with_secrets_masked(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with running_nexus(tmp_path / "d", request_log=log) as nx:
        admin = nx.admin()
        body = proxy_body()
        body["httpClient"]["authentication"] = {
            "type": "username",
            "username": "u",
            "password": "UPSTREAM-PW",
            "bearerToken": "UPSTREAM-TOKEN",
        }
        admin.post("/v1/repositories/docker/proxy", json=body)
        admin.post(
            "/v1/security/users",
            json={**example("POST /v1/security/users"), "password": "USER-PW", "roles": ["nx-anonymous"]},
        )
        admin.put(
            "/v1/security/users/puller/change-password",
            content=b"CHANGED-PW",
            headers={"Content-Type": "text/plain"},
        )
        admin.get("/v1/security/users", params={"userId": "pull"})
        nx.client(("admin", "bad")).get("/v1/status")
    text = log.read_text()
    for secret in ("UPSTREAM-PW", "UPSTREAM-TOKEN", "USER-PW", "CHANGED-PW"):
        assert secret not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/service/rest/v1/repositories/docker/proxy", 201),
        ("POST", "/service/rest/v1/security/users", 200),
        ("PUT", "/service/rest/v1/security/users/puller/change-password", 204),
        ("GET", "/service/rest/v1/security/users", 200),
        ("GET", "/service/rest/v1/status", 401),
    ]
    auth = entries[0]["body"]["httpClient"]["authentication"]
    assert (auth["password"], auth["bearerToken"], auth["username"]) == ("***", "***", "u")
    assert entries[1]["body"]["password"] == "***" and entries[1]["body"]["userId"] == "puller"
    assert entries[2]["body"] == "***"
    assert entries[3]["query"] == {"userId": "pull"}
    assert entries[0]["user"] == "admin" and entries[4]["user"] is None
    assert all(e["time"] for e in entries)


# -------------------------------------------------------------------------------------- state API
def test_state_api_for_the_connector_half(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        admin = nx.admin()
        body = proxy_body()
        body["httpClient"]["authentication"] = {"type": "username", "username": "u", "password": "p"}
        body["docker"]["httpPort"] = 18090
        admin.post("/v1/repositories/docker/proxy", json=body)
        admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]}))
        state = nx.state
        assert (state.version, state.edition) == ("3.94.0-01", "COMMUNITY")
        assert state.data_dir == tmp_path / "d"
        docs = {d["name"]: d for d in state.docker_repos()}
        assert set(docs) == {"docker-hub", "docker-group"}
        assert docs["docker-hub"]["docker"]["httpPort"] == 18090
        assert (docs["docker-hub"]["format"], docs["docker-hub"]["type"]) == ("docker", "proxy")
        assert state.repo_config("docker-hub")["httpClient"]["authentication"]["password"] == "p"
        assert state.repo_config("ghost") is None
        state.repo_config("docker-hub")["online"] = False  # copies: callers cannot corrupt the state
        assert state.repo_config("docker-hub")["online"] is True
        assert state.authenticate("admin", nx.admin_password) and not state.authenticate("admin", "x")
        assert not state.authenticate("ghost", "x")
        assert state.anonymous_enabled()
        assert state.realm_active("NexusAuthenticatingRealm") and not state.realm_active("DockerToken")
        assert state.realm_active("NexusAuthorizingRealm")  # always installed from 3.60
        assert state.can(None, "docker-group", "read") and not state.can(None, "ghost", "read")


def test_subscribers_hear_repository_changes_only(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        calls: list[int] = []
        nx.state.subscribe(lambda: calls.append(1))
        admin = nx.admin()
        create_proxies(admin, "Docker Hub")
        assert len(calls) == 1
        admin.put("/v1/repositories/docker/proxy/docker-hub", json=proxy_body())
        admin.post("/v1/security/roles", json={"id": "r", "name": "r"})  # not a repository change
        admin.post("/v1/repositories/docker/proxy", json={"name": "x"})  # refused: nothing changed
        admin.delete("/v1/repositories/docker-hub")
        assert len(calls) == 3


def test_eula_blocks_access_until_accepted_on_community_3_77_and_later(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "ce") as nx:
        admin = nx.admin()
        assert nx.state.eula_blocks_access()
        got = admin.get("/v1/system/eula").json()
        assert got == {"accepted": False, "disclaimer": EULA_DISCLAIMER}
        assert "‘accepted:false’ to ‘accepted:true’" in got["disclaimer"]
        assert nx.client().get("/v1/system/eula").status_code == 403
        plain_quotes = EULA_DISCLAIMER.replace("‘", "'").replace("’", "'")
        r = admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": plain_quotes})
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/plain")
        assert r.text.endswith("java.lang.IllegalArgumentException: Invalid EULA disclaimer")
        r = admin.post("/v1/system/eula", json={"accepted": False, "disclaimer": EULA_DISCLAIMER})
        assert r.status_code == 500
        assert nx.state.eula_blocks_access()
        r = admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": EULA_DISCLAIMER})
        assert (r.status_code, r.content) == (204, b"")
        assert not nx.state.eula_blocks_access()
        assert (
            admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": EULA_DISCLAIMER}).status_code
            == 204
        )
    with running_nexus(tmp_path / "oss", version="3.76.1-01") as nx:
        assert not nx.state.eula_blocks_access()
        assert nx.admin().get("/v1/system/eula").status_code == 404
    with running_nexus(tmp_path / "pro", edition="PRO") as nx:
        assert not nx.state.eula_blocks_access()


def test_state_is_safe_under_concurrent_writers(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d") as nx:
        create_proxies(nx.admin(), "Docker Hub")

        def record(worker: int) -> None:
            for i in range(25):
                nx.state.record_component(
                    "docker-hub", f"img{worker}", str(i), [{"path": f"v2/{worker}/{i}"}]
                )

        threads = [threading.Thread(target=record, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with nx.state.read() as data:
            assert len(data["components"]["docker-hub"]) == 100
        reloaded = NexusState(tmp_path / "d", environ={})
        with reloaded.read() as data:
            assert len(data["components"]["docker-hub"]) == 100


@pytest.mark.parametrize("bad", ["3.x", "banana"])
def test_versions_must_parse(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        NexusState(tmp_path / "d", version=bad)
