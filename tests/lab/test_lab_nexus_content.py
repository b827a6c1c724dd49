"""Components, search and blob store figures of the emulated Nexus: pages, continuation tokens,
permissions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.lab_nexus import (
    Nexus,
    create_proxies,
    create_puller,
    group_body,
    running_nexus,
    schema_errors,
)


@pytest.fixture
def nexus(tmp_path: Path):
    with running_nexus(tmp_path / "data") as nx:
        admin = nx.admin()
        create_proxies(admin, "Docker Hub", "gcr.io")
        admin.post(
            "/v1/repositories/docker/group", json=group_body(group={"memberNames": ["gcr-io", "docker-hub"]})
        )
        yield nx


def _fill(nx: Nexus, repo: str, count: int, image: str = "library/img") -> None:
    for i in range(count):
        nx.state.record_component(
            repo, f"{image}{i:03d}", "1.0", [{"path": f"v2/{image}{i:03d}/manifests/1.0", "fileSize": 10}]
        )


def _walk(client, path: str, params: dict) -> list[tuple[int, str | None]]:
    pages, token = [], None
    while True:
        query = dict(params, **({"continuationToken": token} if token else {}))
        page = client.get(path, params=query).json()
        assert schema_errors(page, "PageComponentXO") == []
        pages.append((len(page["items"]), page["continuationToken"]))
        token = page["continuationToken"]
        if token is None:
            return pages


def test_components_page_by_100_with_continuation_tokens(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 205)
    pages = _walk(nexus.admin(), "/v1/components", {"repository": "docker-hub"})
    assert [n for n, _ in pages] == [100, 100, 5]
    assert all(t for _, t in pages[:-1]) and len({t for _, t in pages[:-1]}) == 2


def test_a_full_last_page_still_carries_a_token_then_an_empty_page_ends(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 100)
    assert [n for n, _ in _walk(nexus.admin(), "/v1/components", {"repository": "docker-hub"})] == [100, 0]


def test_recording_is_idempotent_and_merges_assets(nexus: Nexus) -> None:
    state = nexus.state
    state.record_component(
        "docker-hub", "library/alpine", "3.20", [{"path": "v2/library/alpine/manifests/3.20"}]
    )
    state.record_component(
        "docker-hub",
        "library/alpine",
        "3.20",
        [{"path": "v2/library/alpine/manifests/3.20", "contentType": "application/x"}],
    )
    state.record_component("docker-hub", "library/alpine", "3.20", [{"path": "v2/-/blobs/sha256:ab"}])
    items = nexus.admin().get("/v1/components", params={"repository": "docker-hub"}).json()["items"]
    assert len(items) == 1
    assert [a["path"] for a in items[0]["assets"]] == [
        "v2/library/alpine/manifests/3.20",
        "v2/-/blobs/sha256:ab",
    ]
    asset = items[0]["assets"][0]
    assert asset["contentType"] == "application/x" and asset["repository"] == "docker-hub"
    assert asset["downloadUrl"] == f"{nexus.url}/repository/docker-hub/v2/library/alpine/manifests/3.20"


def test_a_group_lists_its_members_content_in_member_order(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 2, "hub/")
    _fill(nexus, "gcr-io", 1, "gcr/")
    items = nexus.admin().get("/v1/components", params={"repository": "docker-group"}).json()["items"]
    assert [(i["repository"], i["name"]) for i in items] == [
        ("gcr-io", "gcr/000"),
        ("docker-hub", "hub/000"),
        ("docker-hub", "hub/001"),
    ]


def test_components_errors_are_status_only(nexus: Nexus) -> None:
    admin = nexus.admin()
    for params, status in (
        ({}, 422),
        ({"repository": "ghost"}, 404),
        ({"repository": "docker-hub", "continuationToken": "forged"}, 400),
    ):
        r = admin.get("/v1/components", params=params)
        assert (r.status_code, r.content) == (status, b"")
    create_puller(admin)
    admin.put("/v1/security/anonymous", json={"enabled": False})
    puller = nexus.client(("puller", "pull-secret"))
    assert puller.get("/v1/components", params={"repository": "docker-hub"}).status_code == 403
    assert puller.get("/v1/components", params={"repository": "docker-group"}).status_code == 200
    assert nexus.client().get("/v1/components", params={"repository": "docker-hub"}).status_code == 403


def test_search_pages_by_50_and_filters(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 120)
    _fill(nexus, "gcr-io", 3, "distroless/")
    admin = nexus.admin()
    assert [n for n, _ in _walk(admin, "/v1/search", {"repository": "docker-hub"})] == [50, 50, 20]
    names = [i["name"] for i in admin.get("/v1/search", params={"name": "distroless/*"}).json()["items"]]
    assert names == ["distroless/000", "distroless/001", "distroless/002"]
    by_docker = admin.get(
        "/v1/search", params={"docker.imageName": "library/img007", "docker.imageTag": "1.0"}
    )
    assert [(i["repository"], i["name"], i["version"]) for i in by_docker.json()["items"]] == [
        ("docker-hub", "library/img007", "1.0")
    ]
    assert admin.get("/v1/search", params={"repository": "docker-group"}).json()["items"] == []
    r = admin.get("/v1/search", params={"name": "*img"})
    assert (r.status_code, r.json()) == (400, [{"id": "*", "message": "Leading wildcards are prohibited"}])


def test_search_shows_only_what_the_caller_may_browse_or_read(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 2)
    admin = nexus.admin()
    create_puller(admin)
    assert len(nexus.client().get("/v1/search").json()["items"]) == 2  # nx-anonymous reads everything
    admin.put("/v1/security/anonymous", json={"enabled": False})
    assert nexus.client().get("/v1/search").json()["items"] == []
    assert nexus.client(("puller", "pull-secret")).get("/v1/search").json()["items"] == []  # group grant only


def test_blob_store_counts_follow_recorded_assets(nexus: Nexus) -> None:
    _fill(nexus, "docker-hub", 3)
    store = nexus.admin().get("/v1/blobstores").json()[0]
    assert (store["name"], store["type"], store["blobCount"], store["totalSizeInBytes"]) == (
        "default",
        "File",
        3,
        30,
    )
    assert store["availableSpaceInBytes"] > 0 and store["softQuota"] is None
