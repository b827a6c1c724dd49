"""The pull engine against real registries: the lab's distribution registry behind the Docker Hub front.

Images are the lab seed set at test sizes (big:lab 1 MiB, layers:lab 4 x 1 MiB). Nothing here asserts
a duration: figures are checked for consistency (bytes, blob counts, digests), not speed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from runbook_lib.registry.client import DigestMismatch, RegistryClient, RegistryError, select_platform
from runbook_lib.registry.pull import image_blobs, pull
from tests.support.labkit import upstream_fixture

upstream = pytest.fixture(scope="module")(upstream_fixture)


def index_entries(url: str, repository: str, reference: str) -> list[dict]:
    with RegistryClient(url) as reg:
        return reg.manifest(repository, reference).json()["manifests"]


def expected_bytes(url: str, repository: str, manifest_digest: str) -> int:
    with RegistryClient(url) as reg:
        m = reg.manifest(repository, manifest_digest)
    return len(m.body) + sum(d["size"] for d in image_blobs(m.json()))


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8"])
def test_index_resolves_to_the_platform_and_every_byte_is_counted(upstream, platform) -> None:
    entry = select_platform(index_entries(upstream.url, "library/demo", "1"), platform)
    assert entry is not None
    with RegistryClient(upstream.url) as reg:
        result = pull(reg, "library/demo", "1", platform)
    assert result.ok, result.error
    assert result.manifest_digest == entry["digest"]
    assert result.blobs == 3  # config + base layer + one file layer
    assert result.bytes == expected_bytes(upstream.url, "library/demo", entry["digest"])
    assert result.time_to_manifest_s is not None and result.total_s >= result.time_to_manifest_s
    assert result.throughput_bps and result.throughput_bps > 0


def test_arm64_without_variant_matches_and_unknown_platform_fails_cleanly(upstream) -> None:
    with RegistryClient(upstream.url) as reg:
        any_variant = pull(reg, "library/demo", "1", "linux/arm64")
        missing = pull(reg, "library/demo", "1", "windows/amd64")
    assert any_variant.ok
    assert not missing.ok and "no image for windows/amd64" in missing.error


def test_token_is_fetched_once_per_scope_and_reused(upstream) -> None:
    with RegistryClient(upstream.url) as reg:
        first = pull(reg, "library/layers", "lab", max_parallel=4)
        second = pull(reg, "library/layers", "lab", max_parallel=4)
        assert first.ok and second.ok
        assert first.blobs == 6  # config + a file layer + 4 random layers
        assert reg.token_requests == 1  # 2 manifests + 10 blob GETs, one token (Docker Hub front)


@pytest.mark.parametrize("bound", [1, 2])
def test_concurrent_layer_downloads_stay_within_the_bound(upstream, bound) -> None:
    hub = upstream.hub
    saved = hub.config
    hub.config = saved.updated({"throttle_bytes_per_s": 4_000_000})  # 1 MiB layers take ~0.25 s each
    try:
        with RegistryClient(upstream.url) as reg:
            result = pull(reg, "library/layers", "lab", max_parallel=bound)
    finally:
        hub.config = saved
    assert result.ok, result.error
    assert result.peak_parallel == bound  # 6 blobs, 4 of them slow: the bound is reached and never exceeded


def test_rate_limited_manifest_is_a_failed_result_with_the_registry_code(upstream) -> None:
    hub = upstream.hub
    saved = hub.config
    hub.ledger.reset()
    hub.config = saved.updated({"limit": 1})
    try:
        with RegistryClient(upstream.url) as reg:
            assert pull(reg, "library/busybox", "lab").ok
            refused = pull(reg, "library/busybox", "lab")
    finally:
        hub.config = saved
        hub.ledger.reset()
    assert not refused.ok
    assert (refused.status, refused.code) == (429, "TOOMANYREQUESTS")


def test_unreachable_endpoint_is_a_failed_result(tmp_path) -> None:
    with RegistryClient("http://127.0.0.1:9", timeout=2) as reg:  # discard port: nothing listens
        result = pull(reg, "library/demo", "1")
    assert not result.ok and "ConnectError" in result.error


# -- a registry of our own, to corrupt its storage ------------------------------------------------------
@pytest.fixture
def own_registry(tmp_path):
    from runbook_lab.images import build_image, push
    from runbook_lab.registries import start_registry, stop_process

    reg = start_registry("corrupt.test", tmp_path / "reg", 0, tmp_path / "reg.log")
    try:
        image = build_image({"etc/a.txt": b"a" * 4096}, [{"etc/b.txt": b"b" * 4096}])
        push(image, reg.url, "lab/corrupt", "1")
        yield reg, image
    finally:
        stop_process(reg)


def blob_file(root: Path, digest: str) -> Path:
    hex_ = digest.split(":", 1)[1]
    return root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def test_a_blob_whose_bytes_do_not_match_its_digest_fails_the_pull(own_registry) -> None:
    reg, image = own_registry
    layer = json.loads(image.manifest)["layers"][-1]
    path = blob_file(reg.root, layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content: only the hash can tell
    path.write_bytes(bytes(data))
    with RegistryClient(reg.url) as client:
        result = pull(client, "lab/corrupt", "1")
        with pytest.raises(DigestMismatch):
            b"".join(client.stream_blob("lab/corrupt", layer["digest"]))
    assert not result.ok
    assert "arrived with sha256" in result.error and layer["digest"] in result.error


def test_a_manifest_whose_bytes_do_not_match_the_digest_is_refused(own_registry) -> None:
    reg, image = own_registry
    digest = image.digest
    path = blob_file(reg.root, digest)
    doc = json.loads(path.read_bytes())
    doc["annotations"] = {"tampered": "yes"}
    path.write_bytes(json.dumps(doc).encode())
    with RegistryClient(reg.url) as client:
        result = pull(client, "lab/corrupt", digest)
    assert not result.ok
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() in result.error


def test_registry_error_keeps_status_and_code(upstream) -> None:
    with RegistryClient(upstream.url) as reg:
        result = pull(reg, "library/does-not-exist", "1")
    assert not result.ok and result.status in (401, 404)
    assert isinstance(RegistryError("x", 404).status, int)
    assert httpx.URL(result.endpoint) == httpx.URL(upstream.url)


def test_connections_are_reused_within_a_pull(upstream) -> None:
    opened: list[str] = []

    def count(event: str, info: dict) -> None:  # httpcore's trace hook: one connect per new connection
        if event == "connection.connect_tcp.complete":
            opened.append(event)

    with RegistryClient(upstream.url) as reg:
        reg.http.event_hooks["request"] = [lambda request: request.extensions.__setitem__("trace", count)]
        result = pull(reg, "library/layers", "lab", max_parallel=2)
    assert result.ok and result.blobs == 6
    # token service + registry: 9 requests (token, manifest, 6 blobs, + the first 401) over at most 3
    # connections
    assert 2 <= len(opened) <= 3
