"""The emulated Nexus's security behaviour: authentication, permissions, realms, anonymous, privileges, roles,
users, and the general REST behaviours (error shapes, content types, binding)."""

from __future__ import annotations

from pathlib import Path

import httpx

from runbook_lab.images import build_image
from runbook_lab.nexus import hosted
from tests.support.lab_nexus import (
    Nexus,
    create_proxies,
    create_puller,
    example,
    group_body,
    proxy_body,
    running_nexus,
)


# ----------------------------------------------------------------------------------- authentication
def test_no_credentials_on_a_protected_endpoint_is_403_with_an_empty_body(nexus: Nexus) -> None:
    r = nexus.client().get("/v1/security/users")
    assert (r.status_code, r.content) == (403, b"")
    assert "WWW-Authenticate" not in r.headers
    assert r.headers["X-Siesta-FaultId"]


def test_wrong_credentials_are_401_with_the_basic_challenge_even_on_public_paths(nexus: Nexus) -> None:
    for path in ("/v1/security/users", "/v1/status", "/v1/nothing-here"):
        r = nexus.client(("admin", "wrong")).get(path)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'BASIC realm="Sonatype Nexus Repository Manager"'
        assert r.content == b""


def test_authenticated_user_without_permission_gets_403(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]}))
    create_puller(admin)
    puller = nexus.client(("puller", "pull-secret"))
    for method, path in (
        ("GET", "/v1/security/users"),
        ("GET", "/v1/security/realms/active"),
        ("GET", "/v1/blobstores"),
        ("GET", "/v1/system/eula"),
        ("DELETE", "/v1/repositories/docker-hub"),
    ):
        r = puller.request(method, path)
        assert (r.status_code, r.content) == (403, b""), path


def test_every_response_names_the_server_by_version_and_edition(tmp_path: Path) -> None:
    for version, edition, header in (
        ("3.94.0-01", None, "Nexus/3.94.0-01 (COMMUNITY)"),
        ("3.76.1-01", None, "Nexus/3.76.1-01 (OSS)"),
        ("3.80.0-06", "PRO", "Nexus/3.80.0-06 (PRO)"),
    ):
        with running_nexus(tmp_path / version, version=version, edition=edition) as nx:
            for r in (
                nx.client().get("/v1/status"),
                nx.client().get("/v1/security/users"),
                nx.client(("admin", "bad")).get("/v1/status"),
            ):
                assert r.headers["Server"] == header


# ------------------------------------------------------------------------------- general behaviour
def test_unknown_path_404_wrong_method_405_wrong_content_type_415_all_empty(nexus: Nexus) -> None:
    admin = nexus.admin()
    assert (admin.get("/v1/nope").status_code, admin.get("/v1/nope").content) == (404, b"")
    r = admin.delete("/v1/status")
    assert (r.status_code, r.content) == (405, b"")
    r = admin.post("/v1/repositories/docker/proxy", content=b"{}")  # no Content-Type at all
    assert (r.status_code, r.content) == (415, b"")
    assert r.headers["X-Siesta-FaultId"]


def test_malformed_json_is_a_single_could_not_process_object(nexus: Nexus) -> None:
    r = nexus.admin().post(
        "/v1/security/roles", content=b'{"id": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["id"] == "*"
    assert r.json()["message"].startswith("Could not process the input: ")


def test_wrong_json_type_names_every_field_on_the_path(nexus: Nexus) -> None:
    body = proxy_body()
    body["storage"]["strictContentTypeValidation"] = "maybe"
    r = nexus.admin().post("/v1/repositories/docker/proxy", json=body)
    assert r.status_code == 400
    assert [e["id"] for e in r.json()] == ["storage", "strictContentTypeValidation"]
    assert 'only "true" or "false" recognized' in r.json()[0]["message"]


def test_unknown_properties_are_ignored_and_scalars_coerce(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body(format="docker", type="proxy", url="ignored", somethingNew={"x": 1})
    body["negativeCache"]["timeToLive"] = "60"
    assert admin.post("/v1/repositories/docker/proxy", json=body).status_code == 201
    doc = admin.get("/v1/repositories/docker/proxy/docker-hub").json()
    assert doc["negativeCache"]["timeToLive"] == 60
    assert "somethingNew" not in doc


def test_java_enums_are_case_insensitive(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    r = admin.post(
        "/v1/security/privileges/repository-view",
        json={"name": "p", "actions": ["read", "Browse"], "format": "docker", "repository": "docker-hub"},
    )
    assert r.status_code == 201
    assert admin.get("/v1/security/privileges/p").json()["actions"] == ["READ", "BROWSE"]
    user = {**example("POST /v1/security/users"), "status": "ACTIVE", "roles": ["nx-anonymous"]}
    assert admin.post("/v1/security/users", json=user).json()["status"] == "active"
    r = admin.post("/v1/security/users", json={**user, "userId": "x", "status": "sleeping"})
    assert r.status_code == 400 and r.json()[0]["id"] == "status"


# -------------------------------------------------------------------------------------- realms
def test_realms_put_replaces_the_ordered_list(nexus: Nexus) -> None:
    admin = nexus.admin()
    assert admin.get("/v1/security/realms/active").json() == ["NexusAuthenticatingRealm"]
    order = ["DockerToken", "NexusAuthenticatingRealm", "NpmToken"]
    assert admin.put("/v1/security/realms/active", json=order).status_code == 204
    assert admin.get("/v1/security/realms/active").json() == order
    assert nexus.state.realm_active("DockerToken")
    assert admin.put("/v1/security/realms/active", json=["NexusAuthenticatingRealm"]).status_code == 204
    assert not nexus.state.realm_active("DockerToken")


def test_realms_put_rejects_unknown_ids_and_the_hidden_authorizing_realm(nexus: Nexus) -> None:
    admin = nexus.admin()
    for ids, bad in (
        (["NexusAuthenticatingRealm", "Nope"], "Nope"),
        (["NexusAuthenticatingRealm", "NexusAuthorizingRealm"], "NexusAuthorizingRealm"),
    ):
        r = admin.put("/v1/security/realms/active", json=ids)
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("text/plain")
        assert f"Unknown realmIds: [{bad}]" in r.text
    assert admin.get("/v1/security/realms/active").json() == ["NexusAuthenticatingRealm"]
    assert "NexusAuthorizingRealm" not in [r["id"] for r in admin.get("/v1/security/realms/available").json()]


def test_before_3_60_the_authorizing_realm_is_listed_and_accepted(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d", version="3.59.0-01") as nx:
        admin = nx.admin()
        assert admin.get("/v1/security/realms/active").json() == [
            "NexusAuthenticatingRealm",
            "NexusAuthorizingRealm",
        ]
        ids = ["NexusAuthenticatingRealm", "NexusAuthorizingRealm", "DockerToken"]
        assert admin.put("/v1/security/realms/active", json=ids).status_code == 204


def test_dropping_the_local_authenticating_realm_breaks_basic_auth(nexus: Nexus) -> None:
    admin = nexus.admin()
    assert admin.put("/v1/security/realms/active", json=["DockerToken"]).status_code == 204
    assert admin.get("/v1/security/realms/active").status_code == 401
    assert not nexus.state.authenticate("admin", nexus.admin_password)


# ----------------------------------------------------------------------------------- anonymous
def test_anonymous_put_returns_the_settings_with_defaults_for_absent_fields(nexus: Nexus) -> None:
    admin = nexus.admin()
    r = admin.put("/v1/security/anonymous", json={"enabled": True})
    assert (r.status_code, r.json()) == (
        200,
        {"enabled": True, "userId": "anonymous", "realmName": "NexusAuthorizingRealm"},
    )
    r = admin.put("/v1/security/anonymous", json={})
    assert r.json()["enabled"] is False
    assert not nexus.state.anonymous_enabled()
    r = admin.put("/v1/security/anonymous", json={"enabled": True, "realmName": "DockerToken"})
    assert (r.status_code, r.json()) == (400, [{"id": "realmName", "message": "Realm does not exist"}])


def test_anonymous_access_decides_what_unauthenticated_callers_see(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    anon = nexus.client()
    assert [r["name"] for r in anon.get("/v1/repositories").json()] == ["docker-hub"]
    assert anon.get("/v1/repositories/docker-hub").status_code == 200
    assert nexus.state.can(None, "docker-hub", "read")
    admin.put("/v1/security/anonymous", json={"enabled": False})
    assert anon.get("/v1/repositories").json() == []
    assert anon.get("/v1/repositories/docker-hub").status_code == 403
    assert not nexus.state.can(None, "docker-hub", "read")


# ------------------------------------------------------------------------------- permission model
def test_repository_view_privileges_grant_exactly_their_repository(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub", "gcr.io")
    admin.post(
        "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub", "gcr-io"]})
    )
    create_puller(admin)
    admin.put("/v1/security/anonymous", json={"enabled": False})
    state = nexus.state
    assert state.can("puller", "docker-group", "read")
    assert not state.can("puller", "docker-group", "browse")
    assert not state.can("puller", "docker-hub", "read")  # a group grant does not reach its members
    assert state.can("admin", "docker-hub", "read")  # nx-admin -> nx-all -> nexus:*
    # a '*' repository privilege reaches every repository of the format
    admin.post(
        "/v1/security/privileges/repository-view",
        json={"name": "all-docker-browse", "actions": ["BROWSE"], "format": "docker", "repository": "*"},
    )
    admin.put(
        "/v1/security/roles/docker-pull",
        json={**example("POST /v1/security/roles"), "privileges": ["docker-group-read", "all-docker-browse"]},
    )
    assert state.can("puller", "gcr-io", "browse") and not state.can("puller", "gcr-io", "read")
    # nested roles count too
    admin.post("/v1/security/roles", json={"id": "outer", "name": "outer", "roles": ["docker-pull"]})
    user = {**example("POST /v1/security/users"), "userId": "nested", "roles": ["outer"]}
    assert admin.post("/v1/security/users", json=user).status_code == 200
    assert state.can("nested", "docker-group", "read")


def test_built_in_privileges_exist_per_repository_and_are_read_only(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    names = {p["name"] for p in admin.get("/v1/security/privileges").json()}
    for action in ("browse", "read", "edit", "add", "delete", "*"):
        assert f"nx-repository-view-docker-docker-hub-{action}" in names
    assert {"nx-all", "nx-repository-view-*-*-read", "nx-repository-view-*-*-browse"} <= names
    builtin = admin.get("/v1/security/privileges/nx-repository-view-docker-docker-hub-read").json()
    assert builtin["readOnly"] is True and builtin["actions"] == ["READ"]
    r = admin.delete("/v1/security/privileges/nx-repository-view-docker-docker-hub-read")
    assert r.status_code == 400
    assert r.json()["message"] == (
        "\"Privilege 'nx-repository-view-docker-docker-hub-read' is internal and "
        'cannot be modified or deleted."'
    )
    assert admin.delete("/v1/repositories/docker-hub").status_code == 204
    assert admin.get("/v1/security/privileges/nx-repository-view-docker-docker-hub-read").status_code == 404


# ----------------------------------------------------------------------------------- privileges
def test_repository_view_privilege_rules(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    base = {
        "name": "p1",
        "description": None,
        "actions": ["READ"],
        "format": "docker",
        "repository": "docker-hub",
    }
    r = admin.post("/v1/security/privileges/repository-view", json={**base, "actions": ["READ", "RUN"]})
    assert r.json() == {
        "id": "*",
        "message": "\"Privilege of type 'repository-view' cannot use action(s) of type 'RUN'.\"",
    }
    r = admin.post("/v1/security/privileges/repository-view", json={**base, "repository": "nope"})
    assert r.json()["message"] == "\"Invalid repository 'nope' supplied.\""
    r = admin.post("/v1/security/privileges/repository-view", json={**base, "format": "maven2"})
    assert r.json()["message"] == "\"Invalid format 'maven2' supplied for repository 'docker-hub'.\""
    r = admin.post("/v1/security/privileges/repository-view", json={**base, "name": "", "actions": []})
    assert r.status_code == 400 and ("PARAMETER actions", "must not be empty") in [
        (e["id"], e["message"]) for e in r.json()
    ]
    assert admin.post("/v1/security/privileges/repository-view", json=base).status_code == 201
    assert admin.get("/v1/security/privileges/p1").json()["description"] == ""
    r = admin.post("/v1/security/privileges/repository-view", json=base)
    assert r.json()["message"] == "\"Privilege 'p1' already exists, use a unique name.\""
    r = admin.put("/v1/security/privileges/repository-view/p2", json=base)
    assert (r.status_code, r.json()["message"]) == (
        409,
        "\"The privilege name 'p1' does not match the name used in the path 'p2'.\"",
    )
    r = admin.put("/v1/security/privileges/repository-view/p1", json={**base, "actions": ["ALL"]})
    assert r.status_code == 204
    assert admin.get("/v1/security/privileges/p1").json()["actions"] == ["ALL"]
    assert admin.delete("/v1/security/privileges/p1").status_code == 204
    r = admin.get("/v1/security/privileges/p1")
    assert (r.status_code, r.json()) == (404, {"id": "*", "message": "\"Privilege 'p1' not found.\""})


# ---------------------------------------------------------------------------------------- roles
def test_role_rules(nexus: Nexus) -> None:
    admin = nexus.admin()
    r = admin.post("/v1/security/roles", json={"id": "r1", "name": "r1", "privileges": ["missing"]})
    assert r.json()["message"] == "\"Privilege 'missing' contained in role 'r1' not found.\""
    r = admin.post("/v1/security/roles", json={"id": "r1", "name": "r1", "roles": ["ghost"]})
    assert r.json()["message"] == "\"Role 'ghost' contained in role 'r1' not found.\""
    r = admin.post("/v1/security/roles", json={"id": "", "name": "r1"})
    assert (r.status_code, r.json()) == (400, [{"id": "PARAMETER id", "message": "must not be empty"}])
    r = admin.post("/v1/security/roles", json={"id": "r1", "name": "r1", "privileges": ["nx-search-read"]})
    assert r.status_code == 200
    assert (
        admin.post("/v1/security/roles", json={"id": "r2", "name": "r2", "roles": ["r1"]}).status_code == 200
    )
    r = admin.put("/v1/security/roles/r1", json={"id": "r1", "name": "r1", "roles": ["r2"]})
    assert r.status_code == 400 and "cannot contain itself" in r.json()["message"]
    r = admin.put("/v1/security/roles/r1", json={"id": "rX", "name": "r1"})
    assert (r.status_code, r.json()["message"]) == (
        409,
        "\"The Role id 'rX' does not match the id used in the path 'r1'.\"",
    )
    assert admin.put("/v1/security/roles/r1", json={"id": "r1", "name": "renamed"}).status_code == 204
    assert admin.get("/v1/security/roles/r1").json()["name"] == "renamed"
    assert [r["id"] for r in admin.get("/v1/security/roles").json()] == [
        "nx-admin",
        "nx-anonymous",
        "r1",
        "r2",
    ]
    r = admin.get("/v1/security/roles", params={"source": "LDAP"})
    assert (r.status_code, r.json()["message"]) == (400, "\"Source 'LDAP' not found.\"")
    assert admin.delete("/v1/security/roles/r1").status_code == 204
    assert admin.get("/v1/security/roles/r2").json()["roles"] == []
    assert admin.get("/v1/security/roles/r1").json() == {"id": "*", "message": "\"Role 'r1' not found.\""}


# ---------------------------------------------------------------------------------------- users
def test_user_search_by_user_id_is_a_case_insensitive_prefix_match(nexus: Nexus) -> None:
    admin = nexus.admin()
    for uid in ("puller", "Puller-2", "pull"):
        user = {**example("POST /v1/security/users"), "userId": uid, "roles": ["nx-anonymous"]}
        assert admin.post("/v1/security/users", json=user).status_code == 200
    found = admin.get("/v1/security/users", params={"userId": "PULL", "source": "default"}).json()
    assert sorted(u["userId"] for u in found) == ["Puller-2", "pull", "puller"]
    assert admin.get("/v1/security/users", params={"userId": "nobody"}).json() == []
    assert admin.get("/v1/security/users", params={"source": "LDAP"}).json() == []


def test_creating_an_existing_user_is_a_500_text_plain(nexus: Nexus) -> None:
    admin = nexus.admin()
    user = {**example("POST /v1/security/users"), "roles": ["nx-anonymous"]}
    assert admin.post("/v1/security/users", json=user).status_code == 200
    r = admin.post("/v1/security/users", json=user)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith(f"ERROR: (ID {r.headers['X-Siesta-FaultId']}) ")
    assert r.text.endswith("DuplicateUserException: User puller already exists.")


def test_user_create_and_update_rules(nexus: Nexus) -> None:
    admin = nexus.admin()
    user = {**example("POST /v1/security/users"), "roles": ["missing"]}
    r = admin.post("/v1/security/users", json=user)
    assert r.json() == [{"id": "roles", "message": "Unable to locate roleId: missing"}]
    r = admin.post("/v1/security/users", json={**user, "roles": ["nx-anonymous"], "password": "   "})
    assert r.json() == {"id": "*", "message": '"A non-empty password is required."'}
    r = admin.post("/v1/security/users", json={**user, "emailAddress": "not-an-email", "roles": []})
    assert sorted((e["id"], e["message"]) for e in r.json()) == [
        ("PARAMETER emailAddress", "must be a well-formed email address"),
        ("PARAMETER roles", "must not be empty"),
    ]
    assert admin.post("/v1/security/users", json={**user, "roles": ["nx-anonymous"]}).status_code == 200
    update = example("PUT /v1/security/users/puller")
    r = admin.put("/v1/security/users/other", json=update)
    assert r.json() == {"id": "*", "message": '"The path\'s userId does not match the body"'}
    r = admin.put("/v1/security/users/ghost", json={**update, "userId": "ghost"})
    assert (r.status_code, r.json()["message"]) == (404, "\"User 'ghost' not found.\"")
    r = admin.put("/v1/security/users/puller", json={**update, "roles": ["nx-admin"], "status": "locked"})
    assert r.status_code == 204
    got = admin.get("/v1/security/users", params={"userId": "puller"}).json()[0]
    assert (got["roles"], got["status"]) == (["nx-admin"], "locked")
    assert not nexus.state.authenticate("puller", "change-me")  # locked users do not authenticate
    assert admin.delete("/v1/security/users/puller").status_code == 204
    assert admin.delete("/v1/security/users/puller").status_code == 404


def test_change_password_takes_text_plain_and_never_echoes(nexus: Nexus) -> None:
    admin = nexus.admin()
    user = {**example("POST /v1/security/users"), "roles": ["nx-anonymous"]}
    admin.post("/v1/security/users", json=user)
    path = "/v1/security/users/puller/change-password"
    assert admin.put(path, json="n3w-secret").status_code == 415
    r = admin.put(path, content=b"  ", headers={"Content-Type": "text/plain"})
    assert r.json() == {"id": "*", "message": '"Password must be supplied."'}
    r = admin.put(
        "/v1/security/users/ghost/change-password", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 404
    r = admin.put(path, content=b"n3w-secret", headers={"Content-Type": "text/plain; charset=UTF-8"})
    assert (r.status_code, r.content) == (204, b"")
    assert nexus.state.authenticate("puller", "n3w-secret")
    assert not nexus.state.authenticate("puller", "change-me")
    assert "n3w-secret" not in admin.get("/v1/security/users").text


# ------------------------------------------------------------------ shared Nexus: hosted, built-ins
def hosted_body(name: str = "team-private", **changes: object) -> dict:
    """A docker hosted repository (openapi DockerHostedRepositoryApiRequest): a private image store."""
    body = {
        "name": name,
        "online": True,
        "storage": {
            "blobStoreName": "default",
            "strictContentTypeValidation": True,
            "writePolicy": "allow_once",
        },
        "docker": {"v1Enabled": False, "forceBasicAuth": False},
    }
    body.update(changes)
    return body


def test_docker_hosted_create_get_update_follow_the_published_api(nexus: Nexus, reference_dir: Path) -> None:
    from tests.support.nexus_openapi import validate_body

    spec = str(reference_dir / "nexus" / "openapi-subset-3.94.0.json")
    admin = nexus.admin()
    body = hosted_body()
    validate_body(spec, "POST", "/v1/repositories/docker/hosted", body)
    assert admin.post("/v1/repositories/docker/hosted", json=body).status_code == 201
    doc = admin.get("/v1/repositories/docker/hosted/team-private").json()
    assert (doc["format"], doc["type"], doc["storage"]["writePolicy"]) == ("docker", "hosted", "ALLOW_ONCE")
    assert doc["url"].endswith("/repository/team-private")
    assert admin.get("/v1/repositories/docker/proxy/team-private").status_code == 404  # typed by type
    r = admin.post(
        "/v1/repositories/docker/hosted", json=hosted_body("other", storage={"blobStoreName": "default"})
    )
    assert r.status_code == 400 and "PARAMETER writePolicy" in [e["id"] for e in r.json()]
    update = hosted_body(storage={**body["storage"], "writePolicy": "DENY"})
    assert admin.put("/v1/repositories/docker/hosted/team-private", json=update).status_code == 204
    assert admin.get("/v1/repositories/docker/hosted/team-private").json()["storage"]["writePolicy"] == "DENY"
    names = {p["name"] for p in admin.get("/v1/security/privileges").json()}
    assert "nx-repository-view-docker-team-private-read" in names  # built-ins exist for hosted ones too


def test_built_in_roles_are_read_only(nexus: Nexus) -> None:
    admin = nexus.admin()
    roles = {r["id"]: r for r in admin.get("/v1/security/roles").json()}
    assert roles["nx-anonymous"]["readOnly"] is True and roles["nx-admin"]["readOnly"] is True
    assert "nx-repository-view-*-*-read" in roles["nx-anonymous"]["privileges"]
    r = admin.put(
        "/v1/security/roles/nx-anonymous", json={"id": "nx-anonymous", "name": "x", "privileges": []}
    )
    assert r.status_code == 400 and "read only" in r.json()["message"]
    assert admin.delete("/v1/security/roles/nx-anonymous").status_code == 400
    assert "nx-repository-view-*-*-read" in admin.get("/v1/security/roles/nx-anonymous").json()["privileges"]
    assert admin.post("/v1/security/roles", json={"id": "own", "name": "own"}).json()["readOnly"] is False


def test_the_anonymous_users_roles_decide_which_repositories_anonymous_reads(tmp_path: Path) -> None:
    """nx-anonymous reads every repository, a private hosted one included; a role of our own on the
    anonymous user in its place reads only what it names (at the docker endpoint and in the REST API)."""
    with running_nexus(tmp_path / "d", connectors=True) as nx:
        admin = nx.admin()
        create_proxies(admin, "Docker Hub")
        assert admin.post("/v1/repositories/docker/hosted", json=hosted_body()).status_code == 201
        admin.put("/v1/security/realms/active", json=["NexusAuthenticatingRealm", "DockerToken"])
        eula = admin.get("/v1/system/eula").json()
        admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": eula["disclaimer"]})
        anon = httpx.Client(base_url=nx.url, timeout=10)

        image = build_image({"etc/secret": b"team only\n"})
        hosted.store_image(nx.emulator.connectors.cache_dir, "team-private", "team/app", "1", image)

        def anonymous_manifest(repo: str, name: str = "team/app", ref: str = "1") -> int:
            token = anon.get(f"/repository/{repo}/v2/token").json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            return anon.get(f"/repository/{repo}/v2/{name}/manifests/{ref}", headers=headers).status_code

        assert anonymous_manifest("team-private") == 200  # the hosted image, by tag and by digest
        assert anonymous_manifest("team-private", ref=image.digest) == 200
        assert anonymous_manifest("team-private", ref="2") == 404
        assert nx.client().get("/v1/repositories/team-private").status_code == 200
        admin.post(
            "/v1/security/roles",
            json={
                "id": "mirrors-only",
                "name": "mirrors-only",
                "privileges": [
                    "nx-repository-view-docker-docker-hub-read",
                    "nx-repository-view-docker-docker-hub-browse",
                ],
            },
        )
        user = admin.get("/v1/security/users", params={"userId": "anonymous"}).json()[0]
        assert (
            admin.put("/v1/security/users/anonymous", json={**user, "roles": ["mirrors-only"]}).status_code
            == 204
        )
        assert anonymous_manifest("team-private") == 401  # the challenge: not readable anonymously
        assert nx.client().get("/v1/repositories/team-private").status_code == 403
        assert [r["name"] for r in nx.client().get("/v1/repositories").json()] == ["docker-hub"]
        assert nx.state.can(None, "docker-hub", "read") and not nx.state.can(None, "team-private", "read")
        anon.close()
        assert admin.delete("/v1/repositories/team-private").status_code == 204
        assert hosted.manifest(nx.emulator.connectors.cache_dir, "team-private", "team/app", "1") is None
