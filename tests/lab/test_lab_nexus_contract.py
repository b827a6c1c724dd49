"""The emulated Nexus against tests/data/reference/nexus/contract.json: its examples, schemas and endpoint
table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from runbook_lab.nexus.rest_system import EULA_DISCLAIMER
from tests.support.lab_nexus import (
    CONTRACT,
    UPSTREAM_EXAMPLES,
    Nexus,
    create_proxies,
    create_puller,
    example,
    group_body,
    proxy_body,
    running_nexus,
    schema_errors,
    shape_errors,
)


@pytest.mark.parametrize("upstream", UPSTREAM_EXAMPLES)
def test_proxy_examples_create_201_and_read_back_as_documented(nexus: Nexus, upstream: str) -> None:
    admin = nexus.admin()
    body = proxy_body(upstream)
    r = admin.post("/v1/repositories/docker/proxy", json=body)
    assert (r.status_code, r.content) == (201, b"")
    got = admin.get(f"/v1/repositories/docker/proxy/{body['name']}")
    assert got.status_code == 200
    doc = got.json()
    assert schema_errors(doc, "DockerProxyApiRepository") == []
    assert (doc["format"], doc["type"]) == ("docker", "proxy")
    assert doc["url"] == f"{nexus.url}/repository/{body['name']}"
    for block in ("storage", "proxy", "negativeCache"):
        assert {k: doc[block][k] for k in body[block]} == body[block]
    assert {k: doc["dockerProxy"].get(k) for k in body["dockerProxy"]} == body["dockerProxy"]
    assert doc["docker"] == {
        "v1Enabled": False,
        "forceBasicAuth": False,
        "httpPort": None,
        "httpsPort": None,
        "subdomain": None,
        "pathEnabled": None,
    }


def test_upstream_credentials_example_is_stored_but_never_returned(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body()
    body["httpClient"] = example("POST /v1/repositories/docker/proxy (with upstream credentials)")[
        "httpClient"
    ]
    assert admin.post("/v1/repositories/docker/proxy", json=body).status_code == 201
    got = admin.get("/v1/repositories/docker/proxy/docker-hub")
    assert schema_errors(got.json(), "DockerProxyApiRepository") == []
    assert got.json()["httpClient"]["authentication"] == {
        "type": "username",
        "username": "dockerhub-user",
        "ntlmHost": None,
        "ntlmDomain": None,
    }
    assert "secret" not in got.text
    assert nexus.state.repo_config("docker-hub")["httpClient"]["authentication"]["password"] == "secret"


def test_group_example_matches_the_illustrative_get(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin)
    assert admin.post("/v1/repositories/docker/group", json=group_body()).status_code == 201
    doc = admin.get("/v1/repositories/docker/group/docker-group").json()
    assert schema_errors(doc, "DockerGroupApiRepository") == []
    illustrative = example("GET /v1/repositories/docker/group/docker-group (200, illustrative)")
    assert set(doc) == set(illustrative)
    assert doc["group"]["memberNames"] == group_body()["group"]["memberNames"]
    assert set(doc["docker"]) == set(illustrative["docker"])


def test_repository_list_matches_the_illustrative_shape(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin)
    admin.post("/v1/repositories/docker/group", json=group_body())
    items = admin.get("/v1/repositories").json()
    for item in items:
        assert schema_errors(item, "RepositoryXO") == []
    by_name = {i["name"]: i for i in items}
    for want in example("GET /v1/repositories (200, illustrative)"):
        got = by_name[want["name"]]
        assert {k: got[k] for k in ("format", "type", "attributes")} == {
            k: want[k] for k in ("format", "type", "attributes")
        }
        assert got["url"] == f"{nexus.url}/repository/{want['name']}"


def test_realm_examples(nexus: Nexus) -> None:
    admin = nexus.admin()
    available = admin.get("/v1/security/realms/available").json()
    for realm in available:
        assert schema_errors(realm, "RealmApiXO") == []
    for want in example("GET /v1/security/realms/available (illustrative subset)"):
        assert want in available
    names = [r["name"] for r in available]
    assert names == sorted(names, key=str.lower)
    put = example("PUT /v1/security/realms/active")
    assert admin.put("/v1/security/realms/active", json=put).status_code == 204
    assert admin.get("/v1/security/realms/active").json() == put


def test_anonymous_example_put_answers_200_with_the_settings(nexus: Nexus) -> None:
    body = example("PUT /v1/security/anonymous")
    r = nexus.admin().put("/v1/security/anonymous", json=body)
    assert (r.status_code, r.json()) == (200, body)
    assert schema_errors(r.json(), "AnonymousAccessSettingsXO") == []


def test_security_examples_round_trip_exactly(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin)
    admin.post("/v1/repositories/docker/group", json=group_body())
    r = admin.post(
        "/v1/security/privileges/repository-view",
        json=example("POST /v1/security/privileges/repository-view"),
    )
    assert (r.status_code, r.content) == (201, b"")
    got = admin.get("/v1/security/privileges/docker-group-read").json()
    assert got == example("GET /v1/security/privileges/docker-group-read (200)")
    assert schema_errors(got, "ApiPrivilegeRepositoryView") == []

    r = admin.post("/v1/security/roles", json=example("POST /v1/security/roles"))
    assert (r.status_code, r.json()) == (200, example("POST /v1/security/roles (200 response)"))
    assert schema_errors(r.json(), "RoleXOResponse") == []

    r = admin.post("/v1/security/users", json=example("POST /v1/security/users"))
    assert (r.status_code, r.json()) == (200, example("POST /v1/security/users (200 response)"))
    assert schema_errors(r.json(), "ApiUser") == []
    r = admin.put("/v1/security/users/puller", json=example("PUT /v1/security/users/puller"))
    assert (r.status_code, r.content) == (204, b"")


def test_search_example_shape(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    nexus.state.record_component(
        "docker-hub", "library/alpine", "3.20", [{"path": "v2/library/alpine/manifests/3.20"}]
    )
    page = admin.get(
        "/v1/search", params={"repository": "docker-hub", "format": "docker", "name": "library/alpine"}
    ).json()
    assert schema_errors(page, "PageComponentXO") == []
    want = example(
        "GET /v1/search?repository=docker-hub&format=docker&name=library/alpine "
        "(200, illustrative, inferred naming)"
    )
    assert [
        {k: i[k] for k in ("repository", "format", "group", "name", "version")} for i in page["items"]
    ] == [{k: i[k] for k in ("repository", "format", "group", "name", "version")} for i in want["items"]]
    assert page["continuationToken"] is None


# ---------------------------------------------------------------------------------------- errors
def test_bean_validation_example(nexus: Nexus) -> None:
    body = proxy_body()
    body["storage"]["blobStoreName"] = ""
    r = nexus.admin().post("/v1/repositories/docker/proxy", json=body)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert shape_errors(r.json(), "validationList") == []
    assert r.json() == example("error 400 bean validation")


def test_lowercase_example(nexus: Nexus) -> None:
    r = nexus.admin().post("/v1/repositories/docker/proxy", json=proxy_body(name="Docker-Hub"))
    assert (r.status_code, r.json()) == (400, example("error 400 docker lowercase (3.89+)"))


def test_repository_not_found_example(nexus: Nexus) -> None:
    r = nexus.admin().get("/v1/repositories/docker/proxy/nope")
    assert (r.status_code, r.json()) == (404, example("error 404 repository (3.49+)"))
    assert shape_errors(r.json(), "messageObject") == []
    assert r.headers["X-Siesta-FaultId"]


def test_duplicate_role_example_in_both_eras(tmp_path: Path) -> None:
    for version, key in (
        ("3.94.0-01", "error 400 duplicate role (3.49+)"),
        ("3.48.0-01", "error 400 duplicate role (<=3.48)"),
    ):
        with running_nexus(tmp_path / version, version=version) as nx:
            admin = nx.admin()
            role = example("POST /v1/security/roles")
            role["privileges"] = []
            assert admin.post("/v1/security/roles", json=role).status_code == 200
            r = admin.post("/v1/security/roles", json=role)
            assert r.status_code == 400
            want = example(key)
            if isinstance(want, str):
                assert r.text == want and shape_errors(r.json(), "legacyJsonString") == []
            else:
                assert r.json() == want


# -------------------------------------------------------------------------------- endpoint table
def _eula(admin: httpx.Client) -> httpx.Response:
    return admin.post("/v1/system/eula", json={"accepted": True, "disclaimer": EULA_DISCLAIMER})


RECIPES: dict[str, Callable[[Nexus, httpx.Client], httpx.Response]] = {
    "repo.docker.proxy.create": lambda n, a: a.post(
        "/v1/repositories/docker/proxy", json=proxy_body("quay.io")
    ),
    "repo.docker.proxy.get": lambda n, a: a.get("/v1/repositories/docker/proxy/docker-hub"),
    "repo.docker.proxy.update": lambda n, a: a.put(
        "/v1/repositories/docker/proxy/docker-hub", json=proxy_body()
    ),
    "repo.docker.group.create": lambda n, a: a.post(
        "/v1/repositories/docker/group", json=group_body(name="g2", group={"memberNames": ["docker-hub"]})
    ),
    "repo.docker.group.get": lambda n, a: a.get("/v1/repositories/docker/group/docker-group"),
    "repo.docker.group.update": lambda n, a: a.put(
        "/v1/repositories/docker/group/docker-group", json=group_body(group={"memberNames": ["docker-hub"]})
    ),
    "repo.list": lambda n, a: a.get("/v1/repositories"),
    "repo.get": lambda n, a: a.get("/v1/repositories/docker-hub"),
    "repo.settings.list": lambda n, a: a.get("/v1/repositorySettings"),
    "repo.delete": lambda n, a: a.delete("/v1/repositories/gcr-io"),
    "realms.available": lambda n, a: a.get("/v1/security/realms/available"),
    "realms.active.get": lambda n, a: a.get("/v1/security/realms/active"),
    "realms.active.put": lambda n, a: a.put("/v1/security/realms/active", json=["NexusAuthenticatingRealm"]),
    "anonymous.get": lambda n, a: a.get("/v1/security/anonymous"),
    "anonymous.put": lambda n, a: a.put("/v1/security/anonymous", json=example("PUT /v1/security/anonymous")),
    "privileges.list": lambda n, a: a.get("/v1/security/privileges"),
    "privileges.get": lambda n, a: a.get("/v1/security/privileges/docker-group-read"),
    "privileges.delete": lambda n, a: a.delete("/v1/security/privileges/docker-group-read"),
    "privileges.repositoryView.create": lambda n, a: a.post(
        "/v1/security/privileges/repository-view",
        json={"name": "hub-browse", "actions": ["BROWSE"], "format": "docker", "repository": "docker-hub"},
    ),
    "privileges.repositoryView.update": lambda n, a: a.put(
        "/v1/security/privileges/repository-view/docker-group-read",
        json={**example("POST /v1/security/privileges/repository-view"), "actions": ["READ", "BROWSE"]},
    ),
    "roles.list": lambda n, a: a.get("/v1/security/roles"),
    "roles.create": lambda n, a: a.post("/v1/security/roles", json={"id": "r2", "name": "r2"}),
    "roles.get": lambda n, a: a.get("/v1/security/roles/docker-pull", params={"source": "default"}),
    "roles.update": lambda n, a: a.put(
        "/v1/security/roles/docker-pull", json=example("POST /v1/security/roles")
    ),
    "roles.delete": lambda n, a: a.delete("/v1/security/roles/docker-pull"),
    "users.list": lambda n, a: a.get("/v1/security/users", params={"userId": "pull", "source": "default"}),
    "users.create": lambda n, a: a.post(
        "/v1/security/users", json={**example("POST /v1/security/users"), "userId": "second"}
    ),
    "users.update": lambda n, a: a.put(
        "/v1/security/users/puller", json=example("PUT /v1/security/users/puller")
    ),
    "users.delete": lambda n, a: a.delete("/v1/security/users/puller"),
    "users.changePassword": lambda n, a: a.put(
        "/v1/security/users/puller/change-password", content="n3w", headers={"Content-Type": "text/plain"}
    ),
    "status.read": lambda n, a: httpx.get(n.rest + "/v1/status"),
    "status.writable": lambda n, a: httpx.get(n.rest + "/v1/status/writable"),
    "status.check": lambda n, a: a.get("/v1/status/check"),
    "components.list": lambda n, a: a.get("/v1/components", params={"repository": "docker-hub"}),
    "search.components": lambda n, a: a.get("/v1/search", params={"format": "docker"}),
    "blobstores.list": lambda n, a: a.get("/v1/blobstores"),
    "eula.get": lambda n, a: a.get("/v1/system/eula"),
    "eula.accept": lambda n, a: _eula(a),
}


def _resolve(schema: object) -> str | None:
    if isinstance(schema, str) and schema.startswith("#/schemas/"):
        return schema.split("/")[-1].split()[0]  # e.g. "#/schemas/X (for type repository-view)"
    return None


def test_every_endpoint_in_the_table_has_a_recipe() -> None:
    assert {e["id"] for e in CONTRACT["endpoints"]} == set(RECIPES)


@pytest.mark.parametrize("endpoint", CONTRACT["endpoints"], ids=lambda e: e["id"])
def test_documented_success_status_and_schema(nexus: Nexus, endpoint: dict) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub", "gcr.io")
    assert (
        admin.post(
            "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub", "gcr-io"]})
        ).status_code
        == 201
    )
    create_puller(admin)
    nexus.state.record_component(
        "docker-hub", "library/alpine", "3.20", [{"path": "v2/library/alpine/manifests/3.20"}]
    )
    r = RECIPES[endpoint["id"]](nexus, admin)
    assert r.status_code == endpoint["success"]["status"], r.text
    assert r.headers["Server"] == "Nexus/3.94.0-01 (COMMUNITY)"
    if endpoint["success"].get("body", "absent") in (None, "empty"):
        assert r.content == b""
    name = _resolve(endpoint["success"].get("schema"))
    if name:
        assert schema_errors(r.json(), name) == []
    elif isinstance(endpoint["success"].get("schema"), dict):
        validator_input = {**endpoint["success"]["schema"], "schemas": CONTRACT["schemas"]}
        import jsonschema

        errors = list(jsonschema.Draft202012Validator(validator_input).iter_errors(r.json()))
        assert errors == []


@pytest.mark.parametrize(
    "endpoint",
    [
        e
        for e in CONTRACT["endpoints"]
        if e["method"] in ("POST", "PUT") and e.get("requestContentType", "").startswith("application/json")
    ],
    ids=lambda e: e["id"],
)
def test_json_resources_refuse_other_content_types_with_415(nexus: Nexus, endpoint: dict) -> None:
    path = (
        endpoint["path"]
        .replace("/service/rest", "")
        .replace("{repositoryName}", "x")
        .replace("{privilegeName}", "x")
        .replace("{id}", "x")
        .replace("{userId}", "x")
    )
    r = nexus.admin().request(
        endpoint["method"], path, content=json.dumps({}), headers={"Content-Type": "text/plain"}
    )
    assert (r.status_code, r.content) == (415, b"")
