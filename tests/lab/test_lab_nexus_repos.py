"""The emulated Nexus's repository resources: the pitfalls the runbook must survive
(tests/data/reference/nexus/)."""

from __future__ import annotations

from pathlib import Path

from tests.support.lab_nexus import (
    Nexus,
    create_proxies,
    create_puller,
    group_body,
    proxy_body,
    running_nexus,
    schema_errors,
)


def _message(text: str) -> dict[str, str]:
    return {"id": "*", "message": f'"{text}"'}


def test_get_never_returns_upstream_secrets_and_writes_explicit_nulls(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body()
    body["httpClient"]["authentication"] = {
        "type": "bearerToken",
        "bearerToken": "tok-123",
        "password": "pw-456",
    }
    body["dockerProxy"].pop("cacheForeignLayers")
    assert admin.post("/v1/repositories/docker/proxy", json=body).status_code == 201
    for text in (
        admin.get("/v1/repositories/docker/proxy/docker-hub").text,
        admin.get("/v1/repositorySettings").text,
    ):
        assert "tok-123" not in text and "pw-456" not in text
        assert '"password"' not in text and '"bearerToken" :' not in text
    doc = admin.get("/v1/repositories/docker/proxy/docker-hub").json()
    assert doc["httpClient"]["authentication"] == {
        "type": "bearerToken",
        "username": None,
        "ntlmHost": None,
        "ntlmDomain": None,
    }
    assert doc["dockerProxy"]["cacheForeignLayers"] is None  # echoed as sent (absent -> explicit null)
    assert doc["docker"]["httpPort"] is None and "httpPort" in doc["docker"]
    stored = nexus.state.repo_config("docker-hub")
    assert stored["httpClient"]["authentication"]["bearerToken"] == "tok-123"


def test_update_is_a_full_put_answered_204_and_secrets_must_be_resent(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body()
    body["httpClient"]["authentication"] = {"type": "username", "username": "u", "password": "p1"}
    admin.post("/v1/repositories/docker/proxy", json=body)
    round_trip = admin.get("/v1/repositories/docker/proxy/docker-hub").json()
    round_trip["proxy"]["metadataMaxAge"] = 60
    r = admin.put("/v1/repositories/docker/proxy/docker-hub", json=round_trip)
    assert (r.status_code, r.content) == (204, b"")
    assert admin.get("/v1/repositories/docker/proxy/docker-hub").json()["proxy"]["metadataMaxAge"] == 60
    # the GET document carried no password, so the stored one is gone: that is why clients re-send it
    assert nexus.state.repo_config("docker-hub")["httpClient"]["authentication"]["password"] is None


def test_update_errors(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    r = admin.put("/v1/repositories/docker/proxy/other", json=proxy_body())
    assert (r.status_code, r.json()) == (400, _message("Renaming a repository is not supported"))
    r = admin.put("/v1/repositories/docker/proxy/ghost", json=proxy_body(name="ghost"))
    assert (r.status_code, r.content) == (404, b"")
    changed = proxy_body()
    changed["storage"]["blobStoreName"] = "elsewhere"
    r = admin.put("/v1/repositories/docker/proxy/docker-hub", json=changed)
    assert (r.status_code, r.json()) == (400, _message("Blob store not found"))
    r = admin.post("/v1/repositories/docker/proxy", json={**changed, "name": "new-one"})
    assert (r.status_code, r.json()) == (400, _message("Blob store not found"))


def test_blob_store_cannot_change_on_put(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    with nexus.state.edit() as data:  # a second blob store, as if created through the UI
        data["blobStores"]["second"] = {"name": "second", "type": "File", "path": "second"}
    changed = proxy_body()
    changed["storage"]["blobStoreName"] = "second"
    r = admin.put("/v1/repositories/docker/proxy/docker-hub", json=changed)
    assert (r.status_code, r.json()) == (
        400,
        _message("You cannot change a repository’s blob store through the API"),
    )
    assert [b["name"] for b in admin.get("/v1/blobstores").json()] == ["default", "second"]


def test_names_are_unique_ignoring_case_and_lookups_ignore_case(tmp_path: Path) -> None:
    with running_nexus(tmp_path / "d", version="3.88.0-01") as nx:  # before the lowercase rule
        admin = nx.admin()
        assert admin.post("/v1/repositories/docker/proxy", json=proxy_body(name="Hub")).status_code == 201
        r = admin.post("/v1/repositories/docker/proxy", json=proxy_body(name="hub"))
        assert (r.status_code, r.json()) == (400, _message("Repository has created already!"))
        assert admin.get("/v1/repositories/docker/proxy/HUB").json()["name"] == "Hub"


def test_docker_names_must_be_lowercase_from_3_89(tmp_path: Path) -> None:
    for version, status in (("3.88.0-01", 201), ("3.89.0-09", 400)):
        with running_nexus(tmp_path / version, version=version) as nx:
            r = nx.admin().post("/v1/repositories/docker/proxy", json=proxy_body(name="Docker-Hub"))
            assert r.status_code == status


def test_name_pattern_and_required_blocks(nexus: Nexus) -> None:
    r = nexus.admin().post("/v1/repositories/docker/proxy", json=proxy_body(name="_hub", docker=None))
    assert r.status_code == 400
    assert (
        "PARAMETER name",
        "Only letters, digits, underscores(_), hyphens(-), and dots(.) are allowed and may "
        "not start with underscore or dot.",
    ) in [(e["id"], e["message"]) for e in r.json()]
    assert ("PARAMETER docker", "must not be null") in [(e["id"], e["message"]) for e in r.json()]


def test_empty_index_url_is_rejected_null_is_fine(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body("gcr.io")
    body["dockerProxy"]["indexUrl"] = ""
    r = admin.post("/v1/repositories/docker/proxy", json=body)
    assert (r.status_code, r.json()) == (
        400,
        [{"id": "FIELD indexUrl", "message": "URL should be in the format 'http://www.example.com'"}],
    )
    body["dockerProxy"]["indexUrl"] = None
    assert admin.post("/v1/repositories/docker/proxy", json=body).status_code == 201


def test_missing_index_type_and_bad_connection_timeout(nexus: Nexus) -> None:
    body = proxy_body()
    del body["dockerProxy"]["indexType"]
    body["httpClient"]["connection"] = {"timeout": 0, "retries": 11}
    r = nexus.admin().post("/v1/repositories/docker/proxy", json=body)
    assert sorted((e["id"], e["message"]) for e in r.json()) == [
        ("PARAMETER indexType", "must not be empty"),
        ("PARAMETER retries", "must be less than or equal to 10"),
        ("PARAMETER timeout", "must be greater than or equal to 1"),
    ]


def test_group_members_must_exist_and_the_list_must_not_be_empty(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    r = admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": []}))
    assert r.json() == [{"id": "PARAMETER memberNames", "message": "must not be empty"}]
    r = admin.post(
        "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub", "nope"]})
    )
    assert (r.status_code, r.json()) == (
        400,
        [{"id": "HelperBean.memberNames", "message": "Member repository does not exist: nope"}],
    )
    r = admin.post(
        "/v1/repositories/docker/group",
        json=group_body(group={"memberNames": ["docker-hub"], "writableMember": "docker-hub"}),
    )
    assert r.json()[0]["message"].startswith("Deploying to groups is a PRO-licensed feature.")
    assert (
        admin.post(
            "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]})
        ).status_code
        == 201
    )


def test_typed_get_answers_404_for_another_type(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    r = admin.get("/v1/repositories/docker/group/docker-hub")
    assert (r.status_code, r.json()) == (404, _message("Repository not found"))


def test_delete_is_204_then_404_and_leaves_no_dangling_group_member(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub", "gcr.io")
    admin.post(
        "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub", "gcr-io"]})
    )
    assert admin.delete("/v1/repositories/docker-hub").status_code == 204
    r = admin.delete("/v1/repositories/docker-hub")
    assert (r.status_code, r.content) == (404, b"")
    assert admin.get("/v1/repositories/docker/group/docker-group").json()["group"]["memberNames"] == [
        "gcr-io"
    ]


def test_generic_get_by_name_needs_view_permission_on_it_or_a_containing_group(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub", "gcr.io")
    admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]}))
    create_puller(admin)
    admin.put("/v1/security/anonymous", json={"enabled": False})
    puller = nexus.client(("puller", "pull-secret"))
    got = puller.get("/v1/repositories/docker-hub")
    assert got.status_code == 200 and schema_errors(got.json(), "RepositoryXO") == []
    assert (
        puller.get("/v1/repositories/gcr-io").status_code,
        puller.get("/v1/repositories/gcr-io").content,
    ) == (403, b"")
    assert puller.get("/v1/repositories/ghost").status_code == 404
    assert [r["name"] for r in puller.get("/v1/repositories").json()] == []  # READ is not BROWSE
    assert puller.get("/v1/repositorySettings").json() == []  # no admin read on anything


def test_repository_admin_permission_is_checked_after_validation(nexus: Nexus) -> None:
    admin = nexus.admin()
    create_proxies(admin, "Docker Hub")
    admin.post("/v1/repositories/docker/group", json=group_body(group={"memberNames": ["docker-hub"]}))
    create_puller(admin)
    puller = nexus.client(("puller", "pull-secret"))
    assert puller.post("/v1/repositories/docker/proxy", json={"name": "x"}).status_code == 400
    r = puller.post("/v1/repositories/docker/proxy", json=proxy_body("quay.io"))
    assert (r.status_code, r.content) == (403, b"")
    r = nexus.client().post("/v1/repositories/docker/proxy", json=proxy_body("quay.io"))
    assert (r.status_code, r.content) == (403, b"")  # unauthenticated: refused before anything else


def test_a_connector_port_serves_one_repository(nexus: Nexus) -> None:
    admin = nexus.admin()
    body = proxy_body()
    body["docker"]["httpPort"] = 18082
    assert admin.post("/v1/repositories/docker/proxy", json=body).status_code == 201
    other = proxy_body("gcr.io")
    other["docker"]["httpPort"] = 18082
    r = admin.post("/v1/repositories/docker/proxy", json=other)
    assert r.status_code == 400 and "18082" in r.json()["message"]
    assert admin.put("/v1/repositories/docker/proxy/docker-hub", json=body).status_code == 204  # its own port


def test_path_enabled_exists_from_3_83(tmp_path: Path) -> None:
    for version, present in (("3.82.0-08", False), ("3.83.0-01", True)):
        with running_nexus(tmp_path / version, version=version) as nx:
            admin = nx.admin()
            admin.post("/v1/repositories/docker/proxy", json=proxy_body())
            doc = admin.get("/v1/repositories/docker/proxy/docker-hub").json()
            assert ("pathEnabled" in doc["docker"]) is present
