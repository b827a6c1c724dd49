"""Nexus docker connectors: registry API, auth matrix, pull-through cache, groups, counters.

A real CNCF distribution registry (Debian docker-registry) is the upstream; images are built and pushed
with runbook_lab.images. Pure loopback HTTP, so no netns marker.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lab.images import Image, build_image, build_index, push
from runbook_lab.nexus.connector import ConnectorManager
from runbook_lab.nexus.state import NexusState
from runbook_lab.processes import unused_port
from runbook_lab.registries import REGISTRY_BINARY, RegistryProcess, start_registry, stop_process

pytestmark = pytest.mark.skipif(not Path(REGISTRY_BINARY).exists(), reason=f"needs {REGISTRY_BINARY}")

UNAUTHORIZED_BODY = {
    "errors": [
        {
            "code": "UNAUTHORIZED",
            "message": "access to the requested resource is not authorized",
            "detail": None,
        }
    ]
}
ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


# ---------------------------------------------------------------------------------------------
# the real NexusState, configured through its document the way its REST half leaves it


class Nexus:
    def __init__(self, data_dir: Path) -> None:
        self.state = NexusState(
            data_dir,
            version="3.80.0-06",
            edition="COMMUNITY",
            environ={"NEXUS_SECURITY_INITIAL_PASSWORD": "admin123"},
        )
        with self.state.edit() as data:
            data["realms"] = ["NexusAuthenticatingRealm", "DockerToken"]
            data["eulaAccepted"] = True
        self.add_user("puller", "pull-pw", {"*"})
        self.add_user("outsider", "out-pw", set())

    def put_repo(self, doc: dict[str, Any]) -> None:
        with self.state.edit(repositories_changed=True) as data:
            data["repositories"][doc["name"]] = copy.deepcopy(doc)

    def change_repo(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        with self.state.edit(repositories_changed=True) as data:
            change(data["repositories"][name])

    def delete_repo(self, name: str) -> None:
        with self.state.edit(repositories_changed=True) as data:
            del data["repositories"][name]

    def set_anonymous(self, enabled: bool) -> None:
        with self.state.edit() as data:
            data["anonymous"]["enabled"] = enabled

    def drop_realm(self, realm_id: str) -> None:
        with self.state.edit() as data:
            data["realms"].remove(realm_id)

    def set_eula(self, accepted: bool) -> None:
        with self.state.edit() as data:
            data["eulaAccepted"] = accepted

    def grant(self, user_id: str, repos: set[str]) -> None:
        """Give `user_id` (or "anonymous") read on exactly `repos` ("*" = every repository)."""
        privileges = (
            ["nx-repository-view-*-*-read"]
            if "*" in repos
            else [f"nx-repository-view-docker-{r}-read" for r in sorted(repos)]
        )
        role = f"test-{user_id}"
        with self.state.edit() as data:
            data["roles"][role] = {
                "id": role,
                "name": role,
                "description": "",
                "privileges": privileges,
                "roles": [],
            }
            data["users"][user_id]["roles"] = [role]

    def add_user(self, user_id: str, password: str, repos: set[str]) -> None:
        with self.state.edit() as data:
            data["users"][user_id] = {
                "userId": user_id,
                "firstName": user_id,
                "lastName": "Test",
                "emailAddress": f"{user_id}@example.org",
                "status": "active",
                "roles": [],
                "password": "",
            }
        self.state.set_password(user_id, password)
        self.grant(user_id, repos)

    def components(self) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
        with self.state.read() as data:
            return [
                (repo, c["name"], c["version"], copy.deepcopy(c["assets"]))
                for repo, items in data["components"].items()
                for c in items
            ]


def proxy_doc(
    name: str,
    remote: str,
    port: int | None = None,
    *,
    force_basic: bool = False,
    metadata_max_age: int = 1440,
    negative: tuple[bool, int] = (True, 1440),
    blocked: bool = False,
    auth: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "format": "docker",
        "type": "proxy",
        "online": True,
        "storage": {"blobStoreName": "default", "strictContentTypeValidation": True},
        "proxy": {"remoteUrl": remote, "contentMaxAge": 1440, "metadataMaxAge": metadata_max_age},
        "negativeCache": {"enabled": negative[0], "timeToLive": negative[1]},
        "httpClient": {"blocked": blocked, "autoBlock": True, "connection": None, "authentication": auth},
        "docker": {
            "v1Enabled": False,
            "forceBasicAuth": force_basic,
            "httpPort": port,
            "httpsPort": None,
            "subdomain": None,
            "pathEnabled": None,
        },
        "dockerProxy": {"indexType": "REGISTRY", "indexUrl": None},
    }


def group_doc(
    name: str, members: list[str], port: int | None = None, *, force_basic: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "format": "docker",
        "type": "group",
        "online": True,
        "storage": {"blobStoreName": "default", "strictContentTypeValidation": True},
        "group": {"memberNames": members, "writableMember": None},
        "docker": {
            "v1Enabled": False,
            "forceBasicAuth": force_basic,
            "httpPort": port,
            "httpsPort": None,
            "subdomain": None,
            "pathEnabled": None,
        },
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---------------------------------------------------------------------------------------------
# fixtures


def _start_upstream(root: Path, name: str) -> RegistryProcess:
    return start_registry(name, root, 0, root / "registry.log")


def small_image(text: str) -> Image:
    return build_image({"hello.txt": text.encode()}, [{"etc/demo.conf": b"answer=42\n"}])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A shared upstream holding library/demo:1 (multi-arch index) and library/plain:1. Read-only."""
    root = tmp_path_factory.mktemp("upstream")
    proc = _start_upstream(root, "upstream")
    index = build_index(
        [small_image("amd64"), build_image({"hello.txt": b"arm64"}, platform="linux/arm64/v8")]
    )
    plain = small_image("plain")
    push(index, proc.url, "library/demo", "1")
    push(plain, proc.url, "library/plain", "1")
    try:
        yield {"proc": proc, "url": proc.url, "index": index, "plain": plain}
    finally:
        stop_process(proc)


@pytest.fixture
def own_upstream(tmp_path: Path) -> Iterator[RegistryProcess]:
    """An upstream this test may stop, refill or corrupt."""
    proc = _start_upstream(tmp_path / "own-upstream", "own-upstream")
    try:
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture
def nexus(tmp_path: Path) -> Nexus:
    return Nexus(tmp_path / "nexus-data")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_manager(tmp_path: Path, nexus: Nexus, clock: Clock) -> Iterator[Callable[..., ConnectorManager]]:
    made: list[ConnectorManager] = []

    def make(cache_dir: Path | None = None) -> ConnectorManager:
        manager = ConnectorManager(nexus.state, cache_dir or tmp_path / "cache", clock=clock)
        made.append(manager)
        manager.sync()
        return manager

    yield make
    for m in made:
        m.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def connector(nexus: Nexus, doc: dict[str, Any]) -> str:
    """Add a repository with a fresh connector port; returns its base URL."""
    port = unused_port()
    doc["docker"]["httpPort"] = port
    nexus.put_repo(doc)
    return f"http://127.0.0.1:{port}"


def anonymous_token(client: httpx.Client, base: str) -> dict[str, str]:
    r = client.get(f"{base}/v2/token", params={"service": f"{base}/v2/token", "scope": "repository:x:pull"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def get_manifest(
    client: httpx.Client,
    base: str,
    image: str,
    ref: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> httpx.Response:
    return client.request(
        method, f"{base}/v2/{image}/manifests/{ref}", headers={"Accept": ACCEPT, **(headers or {})}
    )


def pull(client: httpx.Client, base: str, image: str, tag: str, headers: dict[str, str] | None = None) -> str:
    """A full pull of every platform: manifests and blobs, each checked against its digest."""
    r = get_manifest(client, base, image, tag, headers)
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(r.content).hexdigest()
    doc = r.json()
    manifests = [doc]
    for child in doc.get("manifests", []):
        c = get_manifest(client, base, image, child["digest"], headers)
        assert c.status_code == 200 and c.headers["Docker-Content-Digest"] == child["digest"]
        manifests.append(c.json())
    for m in manifests:
        for desc in [m["config"], *m["layers"]] if "config" in m else []:
            b = client.get(f"{base}/v2/{image}/blobs/{desc['digest']}", headers=headers)
            assert b.status_code == 200
            assert "sha256:" + hashlib.sha256(b.content).hexdigest() == desc["digest"]
    return r.headers["Docker-Content-Digest"]


def upstream_log_count(proc: RegistryProcess, needle: str, expected: int) -> int:
    """Lines of the upstream's access log containing `needle`. The registry writes a line just after it
    finishes a response, so wait (briefly) until `expected` lines are there, then report the real count."""
    deadline = time.monotonic() + 5
    while True:
        count = sum(needle in line for line in proc.log_path.read_text().splitlines())
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# ping, challenge and token


def test_ping_challenges_with_bearer_even_when_anonymous_pull_is_allowed(
    nexus, make_manager, client, upstream
):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    r = client.get(f"{base}/v2/")
    assert r.status_code == 401
    assert r.json() == UNAUTHORIZED_BODY
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    realm = f"{base}/v2/token"
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="{realm}"'
    assert r.headers["Server"] == "Nexus/3.80.0-06 (COMMUNITY)"

    token = anonymous_token(client, base)
    assert token["Authorization"].startswith("Bearer DockerToken.")
    ok = client.get(f"{base}/v2/", headers=token)
    assert (ok.status_code, ok.json(), ok.headers["Docker-Distribution-Api-Version"]) == (
        200,
        {},
        "registry/2.0",
    )
    assert client.get(f"{base}/v2/", headers=basic("puller", "pull-pw")).status_code == 200


def test_realm_is_built_from_forwarded_headers(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    r = client.get(
        f"{base}/v2/",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "nexus.example.org",
            "X-Forwarded-Port": "8443",
        },
    )
    realm = "https://nexus.example.org:8443/v2/token"
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="{realm}"'


@pytest.mark.parametrize("force_basic,realm_active", [(True, True), (False, False)])
def test_ping_challenges_basic_without_bearer_mode(
    nexus, make_manager, client, upstream, force_basic, realm_active
):
    if not realm_active:
        nexus.drop_realm("DockerToken")
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"], force_basic=force_basic))
    make_manager()
    r = client.get(f"{base}/v2/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'BASIC realm="Sonatype Nexus Repository Manager"'
    assert r.json() == UNAUTHORIZED_BODY
    assert client.get(f"{base}/v2/", headers=basic("puller", "pull-pw")).status_code == 200
    assert client.get(f"{base}/v2/", headers=basic("puller", "wrong")).status_code == 401


def test_token_endpoint(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    url = f"{base}/v2/token"
    params = {
        "account": "puller",
        "client_id": "docker",
        "offline_token": "true",
        "service": url,
        "scope": "repository:library/demo:pull",
    }
    first = client.get(url, params=params, headers=basic("puller", "pull-pw"))
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json"
    token = first.json()["token"]
    assert token.startswith("DockerToken.")
    # one token per user, as Nexus keeps it in the user's API-key store
    assert client.get(url, params=params, headers=basic("puller", "pull-pw")).json()["token"] == token
    assert client.get(url, headers=basic("admin", "admin123")).json()["token"] != token
    assert client.get(url, params=params, headers=basic("puller", "nope")).status_code == 401
    # containerd tries an OAuth POST first and falls back to GET on 405
    assert client.post(url, data={"grant_type": "password"}).status_code == 405

    bearer = {"Authorization": f"Bearer {token}"}
    assert get_manifest(client, base, "library/demo", "1", bearer).status_code == 200
    bogus = {"Authorization": "Bearer DockerToken.00000000-0000-0000-0000-000000000000"}
    assert get_manifest(client, base, "library/demo", "1", bogus).status_code == 401

    nexus.set_anonymous(False)
    r = client.get(url)
    assert r.status_code == 401 and r.json() == UNAUTHORIZED_BODY

    nexus.drop_realm("DockerToken")  # tokens mean nothing without the Docker Bearer Token Realm
    assert get_manifest(client, base, "library/demo", "1", bearer).status_code == 401


# ---------------------------------------------------------------------------------------------
# authorization matrix


@pytest.mark.parametrize(
    "anonymous,force_basic,realm,anon_read",
    [
        (True, False, True, True),
        (False, False, True, True),
        (True, True, True, True),
        (True, False, False, True),
        (True, False, True, False),
    ],
)
def test_anonymous_pull_needs_all_four_conditions(
    nexus, make_manager, client, upstream, anonymous, force_basic, realm, anon_read
):
    nexus.set_anonymous(anonymous)
    if not realm:
        nexus.drop_realm("DockerToken")
    if not anon_read:
        nexus.grant("anonymous", set())
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"], force_basic=force_basic))
    make_manager()
    allowed = anonymous and not force_basic and realm and anon_read
    plain = get_manifest(client, base, "library/plain", "1")
    if allowed:
        assert plain.status_code == 200
        assert (
            get_manifest(client, base, "library/plain", "1", anonymous_token(client, base)).status_code == 200
        )
    else:
        assert plain.status_code == 401
        assert plain.json() == UNAUTHORIZED_BODY
        bearer_mode = not force_basic and realm
        assert plain.headers["WWW-Authenticate"].startswith(
            "Bearer realm=" if bearer_mode else "BASIC realm="
        )
        if anonymous:  # an anonymous token is handed out, but it does not open the repository
            assert (
                get_manifest(client, base, "library/plain", "1", anonymous_token(client, base)).status_code
                == 401
            )
    # a user with read always gets in with Basic credentials
    assert get_manifest(client, base, "library/plain", "1", basic("puller", "pull-pw")).status_code == 200


def test_users_wrong_password_and_missing_privilege(nexus, make_manager, client, upstream):
    nexus.set_anonymous(False)
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    assert pull(client, base, "library/demo", "1", basic("puller", "pull-pw")) == upstream["index"].digest
    wrong = get_manifest(client, base, "library/demo", "1", basic("puller", "bad"))
    assert wrong.status_code == 401 and wrong.json() == UNAUTHORIZED_BODY
    denied = get_manifest(client, base, "library/demo", "1", basic("outsider", "out-pw"))
    assert denied.status_code == 403
    assert denied.json()["errors"][0]["code"] == "DENIED"
    nexus.grant("outsider", {"docker-proxy"})
    assert get_manifest(client, base, "library/demo", "1", basic("outsider", "out-pw")).status_code == 200


def test_unaccepted_eula_blocks_access(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    nexus.set_eula(False)
    r = get_manifest(client, base, "library/plain", "1", basic("admin", "admin123"))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    nexus.set_eula(True)
    assert get_manifest(client, base, "library/plain", "1", basic("admin", "admin123")).status_code == 200


def test_only_get_and_head_on_proxies_and_groups(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    gbase = connector(nexus, group_doc("docker-group", ["docker-proxy"]))
    make_manager()
    admin = basic("admin", "admin123")
    for b in (base, gbase):
        r = client.put(f"{b}/v2/library/x/manifests/1", content=b"{}", headers=admin)
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
        assert client.post(f"{b}/v2/library/x/blobs/uploads/", headers=admin).status_code == 405
        assert client.delete(f"{b}/v2/library/plain/manifests/1", headers=admin).status_code == 405
        # the connection stays usable after refusing a request with a body
        assert get_manifest(client, b, "library/plain", "1", admin).status_code == 200


# ---------------------------------------------------------------------------------------------
# manifests and blobs


def test_manifest_headers_head_and_ns_query(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    index = upstream["index"]
    r = client.get(f"{base}/v2/library/demo/manifests/1?ns=docker.io", headers={"Accept": ACCEPT})
    assert r.status_code == 200
    assert r.content == index.manifest
    assert r.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert r.headers["Docker-Content-Digest"] == index.digest
    assert int(r.headers["Content-Length"]) == len(index.manifest)
    h = client.head(f"{base}/v2/library/demo/manifests/1?ns=docker.io", headers={"Accept": ACCEPT})
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Docker-Content-Digest"] == index.digest
    assert int(h.headers["Content-Length"]) == len(index.manifest)
    child = index.children[0]
    c = client.get(
        f"{base}/v2/library/demo/manifests/{child.digest}?ns=docker.io", headers={"Accept": ACCEPT}
    )
    assert (
        c.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
        and c.content == child.manifest
    )
    layer = child.blobs[-1]
    b = client.get(f"{base}/v2/library/demo/blobs/{layer.digest}?ns=docker.io")
    assert b.content == layer.read() and b.headers["Docker-Content-Digest"] == layer.digest
    rng = client.get(f"{base}/v2/library/demo/blobs/{layer.digest}", headers={"Range": "bytes=10-19"})
    assert rng.status_code == 206 and rng.content == layer.read()[10:20]

    missing = get_manifest(client, base, "library/demo", "nope")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    absent_blob = client.get(f"{base}/v2/library/demo/blobs/sha256:{'0' * 64}")
    assert absent_blob.status_code == 404 and absent_blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"

    recorded = [c for c in nexus.components() if c[1:3] == ("library/demo", "1")]
    assert len(recorded) == 1  # recorded once, although the tag was served twice
    repo, _, _, assets = recorded[0]
    assert repo == "docker-proxy"
    assert assets[0]["path"] == "v2/library/demo/manifests/1"
    assert assets[0]["downloadUrl"].endswith("/repository/docker-proxy/v2/library/demo/manifests/1")
    assert "sha256:" + assets[0]["checksum"]["sha256"] == index.digest
    assert assets[0]["contentType"] == "application/vnd.oci.image.index.v1+json"


def test_pull_through_survives_upstream_outage_and_restart(
    nexus, make_manager, client, own_upstream, tmp_path, clock
):
    image = small_image("outage")
    push(image, own_upstream.url, "library/outage", "1")
    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url, metadata_max_age=1))
    first = make_manager()
    assert pull(client, base, "library/outage", "1") == image.digest
    cold = first.stats()["docker-proxy"]
    assert cold["cache_misses"] == 4 and cold["cache_hits"] == 0  # manifest + config + 2 layers

    stop_process(own_upstream)
    clock.advance(3600)  # the tag is now stale; revalidation fails, the cached copy is served
    assert pull(client, base, "library/outage", "1") == image.digest
    first.close()

    # a restarted emulator with the same cache dir still serves everything (cache is on disk)
    second = make_manager(tmp_path / "cache")
    assert pull(client, base, "library/outage", "1") == image.digest
    warm = second.stats()["docker-proxy"]
    assert warm["cache_hits"] == 4 and warm["upstream_bytes"] == 0
    assert get_manifest(client, base, "library/outage", "never-pulled").status_code == 404


def test_tag_revalidation_follows_metadata_max_age(nexus, make_manager, client, own_upstream, clock):
    v1, v2 = small_image("v1"), small_image("v2")
    push(v1, own_upstream.url, "library/app", "latest")
    push(v1, own_upstream.url, "library/app", "pinned")
    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url, metadata_max_age=10))
    never = connector(nexus, proxy_doc("never-expire", own_upstream.url, metadata_max_age=-1))
    manager = make_manager()
    assert get_manifest(client, base, "library/app", "latest").headers["Docker-Content-Digest"] == v1.digest
    assert get_manifest(client, never, "library/app", "latest").headers["Docker-Content-Digest"] == v1.digest
    push(v2, own_upstream.url, "library/app", "latest")

    clock.advance(9 * 60)
    before = manager.stats()["docker-proxy"]["upstream_requests"]
    assert get_manifest(client, base, "library/app", "latest").headers["Docker-Content-Digest"] == v1.digest
    assert manager.stats()["docker-proxy"]["upstream_requests"] == before  # fresh: upstream not asked

    clock.advance(2 * 60)
    assert get_manifest(client, base, "library/app", "latest").headers["Docker-Content-Digest"] == v2.digest
    assert manager.stats()["docker-proxy"]["upstream_requests"] > before
    # digest-addressed content is immutable: never revalidated, however old
    clock.advance(10**6)
    digest_before = manager.stats()["docker-proxy"]["upstream_requests"]
    assert get_manifest(client, base, "library/app", v1.digest).status_code == 200
    assert client.get(f"{base}/v2/library/app/blobs/{v1.blobs[0].digest}").status_code == 200
    assert client.get(f"{base}/v2/library/app/blobs/{v1.blobs[0].digest}").status_code == 200
    assert manager.stats()["docker-proxy"]["upstream_requests"] == digest_before + 1  # the one cold blob
    # metadataMaxAge -1: the tag is never revalidated
    assert get_manifest(client, never, "library/app", "latest").headers["Docker-Content-Digest"] == v1.digest
    # an unchanged stale tag is revalidated with a HEAD and counts as a cache hit
    hits = manager.stats()["docker-proxy"]["cache_hits"]
    assert get_manifest(client, base, "library/app", "pinned").status_code == 200  # cold
    clock.advance(11 * 60)
    assert get_manifest(client, base, "library/app", "pinned").headers["Docker-Content-Digest"] == v1.digest
    assert manager.stats()["docker-proxy"]["cache_hits"] == hits + 1
    assert upstream_log_count(own_upstream, '"HEAD /v2/library/app/manifests/pinned', 1) == 1
    assert upstream_log_count(own_upstream, '"GET /v2/library/app/manifests/pinned', 1) == 1


def test_negative_cache(nexus, make_manager, client, own_upstream, clock):
    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url, negative=(True, 5)))
    off = connector(nexus, proxy_doc("no-negative", own_upstream.url, negative=(False, 5)))
    manager = make_manager()
    assert get_manifest(client, base, "library/late", "1").status_code == 404
    assert get_manifest(client, off, "library/late", "1").status_code == 404
    asked = manager.stats()["docker-proxy"]["upstream_requests"]
    image = small_image("late")
    push(image, own_upstream.url, "library/late", "1")

    r = get_manifest(client, base, "library/late", "1")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert manager.stats()["docker-proxy"]["upstream_requests"] == asked  # answered from the negative cache
    assert get_manifest(client, off, "library/late", "1").status_code == 200

    clock.advance(5 * 60 + 1)
    assert pull(client, base, "library/late", "1") == image.digest

    # reconfiguring the repository drops the negative cache, as Nexus does
    assert get_manifest(client, base, "library/later", "1").status_code == 404
    push(image, own_upstream.url, "library/later", "1")
    nexus.change_repo("docker-proxy", lambda doc: doc["negativeCache"].update(timeToLive=6))
    assert get_manifest(client, base, "library/later", "1").status_code == 200


def test_blocked_remote_is_never_contacted(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    manager = make_manager()
    pull(client, base, "library/plain", "1")
    nexus.change_repo("docker-proxy", lambda doc: doc["httpClient"].update(blocked=True))
    asked = manager.stats()["docker-proxy"]["upstream_requests"]
    assert pull(client, base, "library/plain", "1") == upstream["plain"].digest
    assert get_manifest(client, base, "library/demo", "1").status_code == 404
    assert manager.stats()["docker-proxy"]["upstream_requests"] == asked


def test_corrupt_upstream_blob_is_rejected_and_not_cached(nexus, make_manager, client, own_upstream):
    image = small_image("corrupt")
    push(image, own_upstream.url, "library/corrupt", "1")
    layer = image.blobs[-1]
    hexd = layer.digest.split(":")[1]
    data_file = own_upstream.root / "data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same length, different bytes
    data_file.write_bytes(bytes(raw))

    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url))
    manager = make_manager()
    url = f"{base}/v2/library/corrupt/blobs/{layer.digest}"
    for _ in range(2):  # rejected each time, so each attempt goes upstream again
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)
    assert not list((manager.cache_dir / "docker-proxy").glob(f"blobs/**/{hexd}"))
    assert upstream_log_count(own_upstream, f"GET /v2/library/corrupt/blobs/{layer.digest}", 2) == 2
    assert client.head(url).status_code == 404
    # untouched blobs of the same image still come through
    config = image.blobs[0]
    assert client.get(f"{base}/v2/library/corrupt/blobs/{config.digest}").content == config.read()


def test_parallel_cold_blobs_one_upstream_get_each(nexus, make_manager, client, own_upstream, tmp_path):
    image = build_image(
        {"x": b"y"}, workdir=tmp_path / "build", random_layer_bytes=[3 << 20, 2 << 20], seed="par"
    )
    push(image, own_upstream.url, "library/par", "1")
    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url))
    manager = make_manager()
    blobs = image.blobs * 4  # every blob requested 4 times at once

    def fetch(blob) -> bool:
        with httpx.Client(timeout=60) as c:
            r = c.get(f"{base}/v2/library/par/blobs/{blob.digest}")
            return r.status_code == 200 and "sha256:" + hashlib.sha256(r.content).hexdigest() == blob.digest

    with ThreadPoolExecutor(max_workers=len(blobs)) as pool:
        assert all(pool.map(fetch, blobs))
    for blob in image.blobs:
        assert upstream_log_count(own_upstream, f"GET /v2/library/par/blobs/{blob.digest}", 1) == 1
    stats = manager.stats()["docker-proxy"]
    total = sum(b.size for b in image.blobs)
    assert stats["blob_requests"] == len(blobs)
    assert stats["cache_misses"] == len(image.blobs) and stats["cache_hits"] == len(blobs) - len(image.blobs)
    assert stats["upstream_bytes"] == total and stats["bytes_served"] == 4 * total


def test_client_leaving_mid_blob_still_completes_the_cache(nexus, make_manager, own_upstream, tmp_path):
    image = build_image({"x": b"y"}, workdir=tmp_path / "build", random_layer_bytes=[6 << 20], seed="leave")
    push(image, own_upstream.url, "library/leave", "1")
    base = connector(nexus, proxy_doc("docker-proxy", own_upstream.url))
    manager = make_manager()
    layer = image.blobs[-1]
    url = f"{base}/v2/library/leave/blobs/{layer.digest}"
    with httpx.Client(timeout=30) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        next(r.iter_raw(64 * 1024))  # take a little, then hang up
    cached = manager.cache_dir / "docker-proxy" / "blobs" / "sha256" / layer.digest[7:9] / layer.digest[7:]
    deadline = time.monotonic() + 30
    while not cached.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with httpx.Client(timeout=30) as c:  # the fetch lock was given back: this does not hang
        r = c.get(url)
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == layer.digest
    assert upstream_log_count(own_upstream, f"GET /v2/library/leave/blobs/{layer.digest}", 1) == 1
    assert manager.stats()["docker-proxy"]["cache_hits"] == 1


def test_tokens_survive_a_restart(nexus, make_manager, client, upstream, tmp_path):
    nexus.set_anonymous(False)
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    first = make_manager()
    token = client.get(f"{base}/v2/token", headers=basic("puller", "pull-pw")).json()["token"]
    first.close()
    make_manager(tmp_path / "cache")
    bearer = {"Authorization": f"Bearer {token}"}
    assert get_manifest(client, base, "library/plain", "1", bearer).status_code == 200
    assert client.get(f"{base}/v2/token", headers=basic("puller", "pull-pw")).json()["token"] == token
    assert (tmp_path / "cache" / "@docker-tokens.json").stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------
# groups


def test_group_tries_members_in_order(nexus, make_manager, client, own_upstream, tmp_path):
    second = _start_upstream(tmp_path / "second", "second")
    try:
        a, b, only_b = small_image("from-a"), small_image("from-b"), small_image("only-b")
        push(a, own_upstream.url, "library/both", "1")
        push(b, second.url, "library/both", "1")
        push(only_b, second.url, "library/solo", "1")
        nexus.put_repo(proxy_doc("proxy-a", own_upstream.url))
        nexus.put_repo(proxy_doc("proxy-b", second.url))
        ab = connector(nexus, group_doc("group-ab", ["proxy-a", "proxy-b"]))
        ba = connector(nexus, group_doc("group-ba", ["proxy-b", "proxy-a"]))
        manager = make_manager()
        assert pull(client, ab, "library/both", "1") == a.digest
        assert pull(client, ba, "library/both", "1") == b.digest
        assert pull(client, ab, "library/solo", "1") == only_b.digest
        assert get_manifest(client, ab, "library/none", "1").status_code == 404
        assert client.put(f"{ab}/v2/library/both/manifests/1", content=b"{}").status_code == 405

        stats = manager.stats()
        group = stats["group-ab"]
        # two pulls of 1 manifest + 3 blobs, one 404 and the refused PUT
        assert group["manifest_requests"] == 4 and group["blob_requests"] == 6
        assert group["bytes_served"] == sum(x.size for x in (a, only_b)) + sum(
            blob.size for img in (a, only_b) for blob in img.blobs
        )
        # all images share the etc/demo.conf layer. proxy-a cached it for `both`, and as the first member
        # of group-ab it also serves it for `solo` (blobs are per repository, not per image: v2/-/blobs)
        assert group["cache_misses"] == 8 and group["cache_hits"] == 1
        assert stats["proxy-a"]["manifest_requests"] == 1 and stats["proxy-a"]["blob_requests"] == 4
        assert stats["proxy-b"]["manifest_requests"] == 2 and stats["proxy-b"]["blob_requests"] == 5
        # components are recorded at the proxy that holds them
        assert ("proxy-b", "library/solo", "1") in [c[:3] for c in nexus.components()]
    finally:
        stop_process(second)


def test_group_permission_is_checked_at_the_group(nexus, make_manager, client, upstream):
    nexus.set_anonymous(False)
    nexus.put_repo(proxy_doc("docker-proxy", upstream["url"]))
    gbase = connector(nexus, group_doc("docker-group", ["docker-proxy"]))
    make_manager()
    nexus.grant("outsider", {"docker-group"})
    assert pull(client, gbase, "library/plain", "1", basic("outsider", "out-pw")) == upstream["plain"].digest
    nexus.grant("outsider", {"docker-proxy"})
    assert get_manifest(client, gbase, "library/plain", "1", basic("outsider", "out-pw")).status_code == 403


# ---------------------------------------------------------------------------------------------
# upstream that wants credentials: another emulated Nexus


def test_upstream_bearer_and_basic_challenges_are_answered(nexus, make_manager, client, upstream):
    nexus.set_anonymous(False)
    inner_token = connector(nexus, proxy_doc("inner-token", upstream["url"]))
    inner_basic = connector(nexus, proxy_doc("inner-basic", upstream["url"], force_basic=True))
    creds = {"type": "username", "username": "puller", "password": "pull-pw"}
    bad = {"type": "username", "username": "puller", "password": "wrong"}
    # clients reach the outer proxies anonymously; the inner ones need a user
    nexus.set_anonymous(True)
    nexus.grant("anonymous", {"outer-token", "outer-basic", "outer-anon", "outer-bad"})
    outer_token = connector(nexus, proxy_doc("outer-token", inner_token, auth=creds))
    outer_basic = connector(nexus, proxy_doc("outer-basic", inner_basic, auth=creds))
    outer_anon = connector(nexus, proxy_doc("outer-anon", inner_token))
    outer_bad = connector(nexus, proxy_doc("outer-bad", inner_token, auth=bad))
    manager = make_manager()
    assert pull(client, outer_token, "library/demo", "1") == upstream["index"].digest
    assert pull(client, outer_basic, "library/demo", "1") == upstream["index"].digest
    # the anonymous token the inner Nexus hands out does not grant read there
    assert get_manifest(client, outer_anon, "library/demo", "1").status_code == 404
    assert get_manifest(client, outer_bad, "library/demo", "1").status_code == 404
    # 8 content requests (3 manifests, 5 blobs). Bearer: one 401 and one token request, the token is
    # reused for the rest. Basic: one 401, then credentials are sent pre-emptively.
    stats = manager.stats()
    assert stats["outer-token"]["upstream_requests"] == 8 + 2
    assert stats["outer-basic"]["upstream_requests"] == 8 + 1


# ---------------------------------------------------------------------------------------------
# main port path access, listeners, counters


class _MainHandler(LabHandler):
    manager: ConnectorManager

    def _route(self) -> None:
        parts = self.url_path.split("/", 3)  # "", "repository", name, rest
        if len(parts) == 4 and parts[1] == "repository" and ("/" + parts[3]).startswith("/v2"):
            self.manager.serve_path(self, parts[2], "/" + parts[3])
        else:
            self.reply(404)

    do_GET = do_HEAD = do_PUT = do_POST = _route


def test_path_access_on_the_main_port(nexus, make_manager, client, upstream):
    nexus.put_repo(proxy_doc("docker-proxy", upstream["url"]))  # no connector port
    nexus.set_anonymous(False)
    manager = make_manager()
    assert manager.ports() == {}
    handler = type("H", (_MainHandler,), {"manager": manager})
    server = LabHTTPServer(("127.0.0.1", 0), handler)
    serve_in_thread(server)
    try:
        main = f"http://127.0.0.1:{server.server_address[1]}"
        base = f"{main}/repository/docker-proxy"
        r = client.get(f"{base}/v2/")
        realm = f"{base}/v2/token"
        assert (
            r.status_code == 401
            and r.headers["WWW-Authenticate"] == f'Bearer realm="{realm}",service="{realm}"'
        )
        token = client.get(realm, headers=basic("puller", "pull-pw")).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert pull(client, base, "library/demo", "1", bearer) == upstream["index"].digest
        r = client.get(
            f"{base}/v2/library/demo/manifests/1?ns=docker.io", headers={**bearer, "Accept": ACCEPT}
        )
        assert r.headers["Docker-Content-Digest"] == upstream["index"].digest
        assert client.get(f"{main}/repository/missing/v2/", headers=bearer).status_code == 404
        assert manager.stats()["docker-proxy"]["manifest_requests"] == 4
    finally:
        server.shutdown()
        server.server_close()


def test_sync_starts_moves_and_stops_listeners(nexus, make_manager, client, upstream, caplog):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy_port = taken.getsockname()[1]
    try:
        base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
        nexus.put_repo(proxy_doc("blocked-port", upstream["url"], port=busy_port))
        with caplog.at_level(logging.ERROR, logger="runbook_lab.nexus.connector"):
            manager = make_manager()
        assert "BindException" in caplog.text and str(busy_port) in caplog.text
        assert "blocked-port" in manager.bind_failures()
        assert set(manager.ports()) == {"docker-proxy"}
        assert client.get(f"{base}/v2/").status_code == 401
    finally:
        taken.close()
    manager.sync()  # the port is free now: retried
    assert manager.ports()["blocked-port"] == busy_port and manager.bind_failures() == {}
    assert client.get(f"http://127.0.0.1:{busy_port}/v2/").status_code == 401

    new_port = unused_port()
    nexus.change_repo("docker-proxy", lambda doc: doc["docker"].update(httpPort=new_port))
    manager.sync()
    assert manager.ports()["docker-proxy"] == new_port
    assert client.get(f"http://127.0.0.1:{new_port}/v2/").status_code == 401
    with pytest.raises(httpx.TransportError):
        client.get(f"{base}/v2/")

    pull(client, f"http://127.0.0.1:{new_port}", "library/plain", "1")
    assert (manager.cache_dir / "docker-proxy").is_dir()
    nexus.delete_repo("docker-proxy")
    manager.sync()
    assert "docker-proxy" not in manager.ports()
    assert not (manager.cache_dir / "docker-proxy").exists()  # content goes with the repository


def test_counters_per_repository(nexus, make_manager, client, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    manager = make_manager()
    plain = upstream["plain"]
    pull(client, base, "library/plain", "1")
    pull(client, base, "library/plain", "1")
    client.get(f"{base}/v2/")
    stats = manager.stats()["docker-proxy"]
    size = plain.size + sum(b.size for b in plain.blobs)
    blobs = len(plain.blobs)
    assert stats == {
        "requests": 2 * (1 + blobs) + 1,
        "manifest_requests": 2,
        "blob_requests": 2 * blobs,
        "cache_hits": 1 + blobs,
        "cache_misses": 1 + blobs,
        "upstream_requests": 1 + blobs,
        "upstream_bytes": size,
        "bytes_served": 2 * size,
    }


def test_keep_alive_connection_is_reused(nexus, make_manager, upstream):
    base = connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    make_manager()
    peers = set()
    with httpx.Client(timeout=30) as c:
        for _ in range(5):
            r = c.get(f"{base}/v2/library/plain/manifests/1", headers={"Accept": ACCEPT})
            assert r.status_code == 200
            peers.add(r.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(peers) == 1


def test_stats_list_every_docker_repository(nexus, make_manager, upstream):
    connector(nexus, proxy_doc("docker-proxy", upstream["url"]))
    nexus.put_repo(group_doc("docker-group", ["docker-proxy"]))
    manager = make_manager()
    stats = json.loads(json.dumps(manager.stats()))
    assert set(stats) == {"docker-proxy", "docker-group"}
    assert all(v == 0 for counters in stats.values() for v in counters.values())
