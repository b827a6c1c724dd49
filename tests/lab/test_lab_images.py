"""Synthetic images: digests and diff_ids are right and stable; push/pull through a real docker-registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from pathlib import Path

import httpx
import pytest

from runbook_lab.images import (
    MEDIA_TYPES,
    Blob,
    Image,
    PushStats,
    RegistryPushError,
    build_image,
    build_index,
    push,
    random_layer,
    seed_lab_images,
)
from runbook_lab.registries import start_registry, stop_process
from tests.support.labkit import needs_registry

ACCEPT = ", ".join(MEDIA_TYPES[m][k] for m in ("oci", "docker") for k in ("index", "manifest"))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def streamed_digests(blob: Blob) -> tuple[str, str]:
    """(sha256 of the gzip bytes, sha256 of the gunzipped tar), streaming, as containerd computes them."""
    outer, inner = hashlib.sha256(), hashlib.sha256()
    inflate = zlib.decompressobj(31)
    for chunk in blob.chunks():
        outer.update(chunk)
        inner.update(inflate.decompress(chunk))
    inner.update(inflate.flush())
    return "sha256:" + outer.hexdigest(), "sha256:" + inner.hexdigest()


def untar(gz: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """Members of a gzip tar in archive order: name -> (info, content for regular files)."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(gz))) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def config_of(image: Image) -> dict:
    return json.loads(image.blobs[0].read())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("registry")
    proc = start_registry("upstream", root / "reg", 0, root / "registry.log")
    yield proc
    stop_process(proc)


# -- building ----------------------------------------------------------------------------------
def test_file_layers_are_stable_and_their_diff_ids_are_the_uncompressed_tar() -> None:
    files, upper = {"hello.txt": b"hi\n"}, {"etc/demo/demo.conf": b"answer=42\n"}
    first, again = build_image(files, [upper]), build_image(dict(files), [dict(upper)])
    assert first.digest == again.digest and first.manifest == again.manifest
    layers = first.blobs[1:]
    assert config_of(first)["rootfs"] == {"type": "layers", "diff_ids": [b.diff_id for b in layers]}
    for blob in layers:
        raw = gzip.decompress(blob.read())
        assert blob.digest == sha(blob.read()) and blob.size == len(blob.read())
        assert blob.diff_id == sha(raw)
    members = untar(layers[1].read())
    assert list(members) == ["etc", "etc/demo", "etc/demo/demo.conf"]  # parents first, sorted
    assert {m.mtime for m, _ in members.values()} == {0} and {m.uid for m, _ in members.values()} == {0}
    assert members["etc/demo/demo.conf"][1] == b"answer=42\n"
    assert build_image({"hello.txt": b"hi!\n"}, [upper]).digest != first.digest


def test_manifest_and_config_describe_blobs_and_platform() -> None:
    image = build_image(
        {"bin/tool": b"#!/bin/sh\n"},
        platform="linux/arm64/v8",
        container_config={"Cmd": ["tool"], "ExposedPorts": {"80/tcp": {}}},
    )
    manifest = json.loads(image.manifest)
    assert image.digest == sha(image.manifest)
    assert manifest["mediaType"] == image.media_type == MEDIA_TYPES["oci"]["manifest"]
    config_blob, *layers = image.blobs
    assert manifest["config"] == {
        "mediaType": MEDIA_TYPES["oci"]["config"],
        "digest": config_blob.digest,
        "size": config_blob.size,
    }
    assert [d["digest"] for d in manifest["layers"]] == [b.digest for b in layers]
    config = config_of(image)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["config"]["Cmd"] == ["tool"] and config["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert len(config["history"]) == len(layers)
    assert untar(layers[0].read())["bin/tool"][0].mode == 0o755


def test_docker_media_types() -> None:
    image = build_image({"a": b"1"}, media="docker")
    index = build_index([image], media="docker")
    assert json.loads(image.manifest)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert image.blobs[0].media_type == "application/vnd.docker.container.image.v1+json"
    assert image.blobs[1].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert index.media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    with pytest.raises(ValueError, match="media"):
        build_image({"a": b"1"}, media="podman")  # type: ignore[arg-type]


def test_random_layers_stream_to_disk_and_a_seed_makes_them_reproducible(tmp_path: Path) -> None:
    size = 3 * (1 << 20) + 123
    image = build_image(workdir=tmp_path, random_layer_bytes=[size, 1000], seed="s1")
    big = image.blobs[1]
    assert big.data is None and big.path is not None and big.path.stat().st_size == big.size
    assert streamed_digests(big) == (big.digest, big.diff_id)
    with tarfile.open(big.path) as tar:
        assert [(m.name, m.size) for m in tar.getmembers()] == [("payload-0.bin", size)]
    mtime = big.path.stat().st_mtime_ns
    again = build_image(workdir=tmp_path, random_layer_bytes=[size, 1000], seed="s1")
    assert again.digest == image.digest
    assert again.blobs[1].path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert build_image(workdir=tmp_path, random_layer_bytes=[size, 1000], seed="s2").digest != image.digest
    unseeded = [random_layer(4096, tmp_path) for _ in range(2)]
    assert unseeded[0].digest != unseeded[1].digest


def test_random_layers_need_a_workdir() -> None:
    with pytest.raises(ValueError, match="workdir"):
        build_image(random_layer_bytes=[10])


def test_index_lists_each_platform() -> None:
    amd, arm = build_image({"arch": b"amd64"}), build_image({"arch": b"arm64"}, platform="linux/arm64/v8")
    index = build_index([amd, arm])
    body = json.loads(index.manifest)
    assert index.digest == sha(index.manifest) and body["mediaType"] == MEDIA_TYPES["oci"]["index"]
    assert [(m["digest"], m["size"], m["platform"]) for m in body["manifests"]] == [
        (amd.digest, amd.size, {"os": "linux", "architecture": "amd64"}),
        (arm.digest, arm.size, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ]
    assert {b.digest for b in index.all_blobs()} == {b.digest for b in amd.blobs + arm.blobs}
    with pytest.raises(ValueError):
        build_index([index])
    with pytest.raises(ValueError, match="os/arch"):
        build_image({"a": b"1"}, platform="amd64")


# -- pushing to a real registry ------------------------------------------------------------------
@needs_registry
def test_push_then_pull_back_by_digest(registry, tmp_path: Path) -> None:
    image = build_image({"etc/x": b"x\n"}, workdir=tmp_path, random_layer_bytes=[2 << 20])
    stats = PushStats()
    assert push(image, registry.url, "lab/pushed", "v1", stats=stats) == image.digest
    assert sorted(stats.uploaded) == sorted(b.digest for b in image.blobs) and stats.skipped == []
    with httpx.Client(base_url=registry.url) as c:
        r = c.get(f"/v2/lab/pushed/manifests/{image.digest}", headers={"Accept": ACCEPT})
        assert r.status_code == 200 and sha(r.content) == image.digest
        assert r.headers["Docker-Content-Digest"] == image.digest
        assert r.headers["Content-Type"] == image.media_type
        tagged = c.get("/v2/lab/pushed/manifests/v1", headers={"Accept": ACCEPT})
        assert tagged.headers["Docker-Content-Digest"] == image.digest
        for desc in [json.loads(r.content)["config"], *json.loads(r.content)["layers"]]:
            blob = c.get(f"/v2/lab/pushed/blobs/{desc['digest']}")
            assert (
                blob.status_code == 200
                and sha(blob.content) == desc["digest"]
                and len(blob.content) == desc["size"]
            )


@needs_registry
def test_second_push_skips_blobs_the_registry_has(registry) -> None:
    image = build_image({"a.txt": b"a\n"}, [{"b.txt": b"b\n"}])
    push(image, registry.url, "lab/twice", "1")
    stats = PushStats()
    push(image, registry.url, "lab/twice", "2", stats=stats)
    assert stats.uploaded == [] and sorted(stats.skipped) == sorted(b.digest for b in image.blobs)
    assert stats.manifests == [image.digest]


@needs_registry
def test_pushed_index_resolves_per_platform(registry) -> None:
    amd = build_image({"arch.txt": b"amd64\n"}, platform="linux/amd64")
    arm = build_image({"arch.txt": b"arm64\n"}, platform="linux/arm64/v8")
    index = build_index([amd, arm])
    stats = PushStats()
    push(index, registry.url, "lab/multi", "1", stats=stats)
    assert stats.manifests == [amd.digest, arm.digest, index.digest]  # children by digest, then the tag
    with httpx.Client(base_url=registry.url) as c:
        top = c.get("/v2/lab/multi/manifests/1", headers={"Accept": ACCEPT})
        assert top.headers["Content-Type"] == MEDIA_TYPES["oci"]["index"] and sha(top.content) == index.digest
        wanted = {"os": "linux", "architecture": "arm64", "variant": "v8"}
        entry = next(m for m in top.json()["manifests"] if m["platform"] == wanted)
        child = c.get(f"/v2/lab/multi/manifests/{entry['digest']}", headers={"Accept": ACCEPT}).json()
        config = c.get(f"/v2/lab/multi/blobs/{child['config']['digest']}").json()
        assert (config["architecture"], config["variant"]) == ("arm64", "v8")
        layer = c.get(f"/v2/lab/multi/blobs/{child['layers'][0]['digest']}").content
        assert untar(layer)["arch.txt"][1] == b"arm64\n"


@needs_registry
def test_push_reports_registry_errors(registry) -> None:
    image = build_image({"a": b"1"}, [{"b": b"2"}])
    missing_layers = Image(image.manifest, image.media_type, image.digest, blobs=image.blobs[:1])
    with pytest.raises(RegistryPushError, match="PUT manifest 1: HTTP 400 .*MANIFEST_BLOB_UNKNOWN"):
        push(missing_layers, registry.url, "lab/broken", "1")


@needs_registry
def test_seeding_is_idempotent(tmp_path: Path) -> None:
    procs = {
        host: start_registry(host, tmp_path / host, 0, tmp_path / f"{host}.log")
        for host in ("docker.io", "quay.io", "registry.k8s.io")
    }
    try:
        urls = {host: p.url for host, p in procs.items()}
        first_stats, second_stats = PushStats(), PushStats()
        first = seed_lab_images(urls, tmp_path / "work", image_mb=2, multilayer_mb=2, stats=first_stats)
        assert set(first) == {
            "docker.io/library/demo:1",
            "docker.io/library/big:lab",
            "docker.io/library/layers:lab",
            "docker.io/library/nginx:lab",
            "docker.io/library/busybox:lab",
            "docker.io/ratelimitpreview/test:latest",
            "quay.io/lab/tool:1",
            "registry.k8s.io/pause:3.9",
        }
        assert first_stats.uploaded
        log_size = (tmp_path / "docker.io.log").stat().st_size
        second = seed_lab_images(urls, tmp_path / "work", image_mb=2, multilayer_mb=2, stats=second_stats)
        assert second == first
        assert second_stats.uploaded == [] and second_stats.skipped
        new_log = (tmp_path / "docker.io.log").read_text()[log_size:]
        assert "POST /v2/" not in new_log and "HEAD /v2/library/big/blobs/" in new_log
        with httpx.Client() as c:
            for ref, digest in first.items():
                host, rest = ref.split("/", 1)
                repo, tag = rest.rsplit(":", 1)
                r = c.head(f"{urls[host]}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
                assert r.headers["Docker-Content-Digest"] == digest, ref
            layers = c.get(
                f"{urls['docker.io']}/v2/library/layers/manifests/lab", headers={"Accept": ACCEPT}
            ).json()
            assert len(layers["layers"]) == 5  # a small file layer + 4 random layers
            assert sum(d["size"] for d in layers["layers"][1:]) > 2 << 20  # random data does not compress
    finally:
        for p in procs.values():
            stop_process(p)
