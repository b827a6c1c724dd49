"""Real containerd 1.6 + real CNCF distribution registries: does hosts.toml mirroring do what we rely on?

Layout per module: an upstream registry, a pull-through mirror (`proxy.remoteurl` = upstream) and a
private containerd whose CRI `config_path` is a certs.d directory of ours. The image is named
`docker.io/library/demo:1`, and every hosts.toml names the upstream as `server`, so nothing here needs
Docker Hub; when a case falls back to the default host it fails inside the private network namespace.

A successful pull proves nothing about the mirror (a failing mirror falls back to the server): each case
asserts on the registries'
access logs, by user agent (`containerd/...` for containerd, Go-http-client for the mirror's own
upstream fetches) and by the `?ns=` parameter containerd adds for mirrors.
"""

from __future__ import annotations

import os
import re
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from runbook_lab import cri as cri_codec
from runbook_lab.containerd import (
    INSTALL_HINT,
    ContainerdNotInstalled,
    PrivateContainerd,
    mounts_under,
    parse_plugins,
)
from runbook_lab.cri import CRIError, CRIImage, CRIImageClient
from runbook_lab.images import build_image, push
from runbook_lab.netns import can_unshare, in_private_netns, network_interfaces, run_in_private_netns
from runbook_lab.registries import RegistryProcess, start_registry, stop_process

IMAGE = "docker.io/library/demo:1"
REPO, TAG = "library/demo", "1"

# -- protobuf codec and parsers: no real parts needed ---------------------------------------------


def test_varint_and_string_encoding_match_protobuf_documentation() -> None:
    # protobuf.dev/programming-guides/encoding: 150 -> 96 01, 300 -> ac 02,
    # field 1 string "testing" -> 0a 07 74 65 73 74 69 6e 67
    assert cri_codec.encode_varint(1) == b"\x01"
    assert cri_codec.encode_varint(150) == b"\x96\x01"
    assert cri_codec.encode_varint(300) == b"\xac\x02"
    assert cri_codec.encode_string(1, "testing") == bytes.fromhex("0a0774657374696e67")
    assert cri_codec.encode_string(1, "") == b""  # proto3 leaves default values out
    assert cri_codec.decode_varint(b"\xac\x02\xff", 0) == (300, 2)
    big = 2**63 + 5
    assert cri_codec.decode_varint(cri_codec.encode_varint(big), 0) == (big, 10)


def test_pull_request_nests_image_spec_and_auth_config() -> None:
    plain = cri_codec.pull_image_request("demo:1")
    assert plain == b"\x0a\x08" + b"\x0a\x06demo:1"  # PullImageRequest.image(1){ ImageSpec.image(1) }
    with_auth = cri_codec.decode_fields(cri_codec.pull_image_request("demo:1", "alice", "s3cret"))
    assert sorted(with_auth) == [1, 2]
    auth = cri_codec.decode_fields(with_auth[2][0])  # type: ignore[arg-type]
    assert auth == {1: [b"alice"], 2: [b"s3cret"]}


def test_decoder_reads_image_and_skips_unknown_fields() -> None:
    image = (
        cri_codec.encode_string(1, "sha256:abc")
        + cri_codec.encode_string(2, "docker.io/library/demo:1")
        + cri_codec.encode_string(2, "docker.io/library/demo:latest")
        + cri_codec.encode_string(3, "docker.io/library/demo@sha256:def")
        + cri_codec.encode_varint_field(4, 2**33)
        + cri_codec.encode_varint_field(8, 1)  # pinned: not modelled, must be skipped
        + bytes([5 << 3 | 5])
        + b"\x00\x00\x00\x00"  # a fixed32 field
    )
    decoded = CRIImage.decode(image)
    assert decoded == CRIImage(
        id="sha256:abc",
        repo_tags=["docker.io/library/demo:1", "docker.io/library/demo:latest"],
        repo_digests=["docker.io/library/demo@sha256:def"],
        size=2**33,
    )


@pytest.mark.parametrize("broken", [b"\x0a\x05abc", b"\x80", b"\x0b", b"\x08"])
def test_decoder_rejects_truncated_or_invalid_input(broken: bytes) -> None:
    with pytest.raises(ValueError):
        cri_codec.decode_fields(broken)


def test_parse_plugins_reads_status_column() -> None:
    text = (
        "TYPE                            ID                       PLATFORMS      STATUS\n"
        "io.containerd.snapshotter.v1    devmapper                linux/amd64    error\n"
        "io.containerd.grpc.v1           cri                      linux/amd64    ok\n"
        "io.containerd.grpc.v1           version                  -              ok\n"
    )
    rows = parse_plugins(text)
    assert [(r.name, r.platforms, r.status) for r in rows] == [
        ("io.containerd.snapshotter.v1.devmapper", "linux/amd64", "error"),
        ("io.containerd.grpc.v1.cri", "linux/amd64", "ok"),
        ("io.containerd.grpc.v1.version", "-", "ok"),
    ]


def test_missing_binaries_give_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    daemon = PrivateContainerd(tmp_path / "ctd", tmp_path / "certs.d")
    with pytest.raises(ContainerdNotInstalled, match=re.escape(INSTALL_HINT)):
        daemon.start()
    assert not daemon.running


def test_config_keeps_everything_inside_workdir(tmp_path: Path) -> None:
    daemon = PrivateContainerd(tmp_path / "ctd", tmp_path / "certs.d", debug=False)
    config = tomllib.loads(daemon.write_config().read_text())
    assert config["version"] == 2
    plugins = config["plugins"]
    cri = plugins["io.containerd.grpc.v1.cri"]
    paths = [
        config["root"],
        config["state"],
        config["grpc"]["address"],
        config["ttrpc"]["address"],
        plugins["io.containerd.internal.v1.opt"]["path"],
        cri["cni"]["bin_dir"],
        cri["cni"]["conf_dir"],
    ]
    assert all(Path(p).is_relative_to(tmp_path / "ctd") for p in paths), paths
    assert cri["registry"] == {"config_path": str(tmp_path / "certs.d")}
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    assert config["debug"]["level"] == "info"


def test_mounts_under(tmp_path: Path) -> None:
    assert Path("/") in mounts_under(Path("/"))
    assert mounts_under(tmp_path) == []


# -- network namespaces -------------------------------------------------------------------------------

needs_unshare = pytest.mark.skipif(not can_unshare(), reason="needs root with `unshare --net` and `ip`")


@needs_unshare
def test_run_in_private_netns_has_only_loopback_and_it_is_up() -> None:
    done = run_in_private_netns(["ip", "-o", "link", "show"], timeout=20)
    assert done.returncode == 0, done.stderr
    links = done.stdout.strip().splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0], links
    probe = (
        "from runbook_lab.netns import in_private_netns, network_interfaces as n; "
        "print(in_private_netns(), n())"
    )
    done = run_in_private_netns(
        [sys.executable, "-c", probe], timeout=30, cwd=Path(__file__).resolve().parents[2]
    )
    assert done.stdout.split("\n")[0] == "True ['lo']", done.stderr


def test_in_private_netns_agrees_with_the_kernel_interface_list() -> None:
    with open("/proc/self/net/dev", encoding="utf-8") as dev:
        names = sorted(line.split(":")[0].strip() for line in dev.readlines()[2:])
    assert network_interfaces() == names
    assert in_private_netns() == (names == ["lo"])


# -- real registries: runbook_lab.registries runs them, the access log is read here -------------

ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) \S+ "[^"]*" "(?P<agent>[^"]*)"'
)


@dataclass(frozen=True)
class Access:
    method: str
    target: str
    status: int
    agent: str

    @property
    def by_containerd(self) -> bool:
        return self.agent.startswith("containerd/")


class Registry:
    """A Debian `docker-registry serve` process whose access log the tests read; stopped by PID."""

    def __init__(self, name: str, workdir: Path, remote_url: str | None = None) -> None:
        self.name = name
        self.root = workdir / name
        self.log_path = workdir / f"{name}.log"
        self.remote_url = remote_url
        self.port = 0
        self.proc: RegistryProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_registry(self.name, self.root, 0, self.log_path, proxy_remote=self.remote_url)
        self.port = self.proc.port

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def mark(self) -> int:
        return self.log_path.stat().st_size

    def accesses_since(self, mark: int) -> list[Access]:
        """Access-log entries after `mark`, once a sentinel request sent now has been logged.

        The registry writes a line after the response is done, so a client can finish before its last
        line is in the log; the sentinel comes after every earlier request and is waited for.
        """
        sentinel = f"/v2/?sync={uuid.uuid4().hex}"
        httpx.get(self.url + sentinel, headers={"User-Agent": "lab-sync"}, timeout=5)
        deadline = time.monotonic() + 5
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(mark)
                text = log.read().decode(errors="replace")
            if sentinel in text or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        found = [ACCESS_LINE.search(line) for line in text.splitlines() if not line.startswith("time=")]
        return [
            Access(m["method"], m["target"], int(m["status"]), m["agent"])
            for m in found
            if m and m["agent"] != "lab-sync"
        ]


def push_demo_image(registry_url: str, repository: str, tag: str) -> str:
    """A two-layer linux/amd64 image (two layers: unpacking also stacks an overlay parent snapshot)."""
    image = build_image({"hello.txt": b"hello from the lab\n"}, [{"etc/demo.conf": b"answer=42\n"}])
    return push(image, registry_url, repository, tag)


def hosts_toml(server: str, mirror: str | None) -> str:
    # an empty [host] table when there is no mirror: containerd 1.6 ignores a file without any
    # host table ("invalid `host` tree", containerd#10027, fixed in 1.7 by #10028)
    body = f'server = "{server}"\n\n'
    if mirror:
        return body + f'[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    return body + "[host]\n"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class Lab:
    upstream: Registry
    mirror: Registry
    containerd: PrivateContainerd
    cri: CRIImageClient
    certs_dir: Path
    digest: str

    def daemon_hosts(self, namespace: str = "docker.io") -> Path:
        return self.certs_dir / namespace / "hosts.toml"

    def marks(self) -> tuple[int, int, int]:
        return self.upstream.mark(), self.mirror.mark(), self.containerd.log_offset()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not in_private_netns():  # belt and braces: cases below fall back to docker.io on purpose
        pytest.fail("these cases must run inside a private network namespace (only `lo`)")
    base = tmp_path_factory.mktemp("ctdlab")  # short path: unix socket paths are limited to 108 bytes
    started: list[Registry | PrivateContainerd] = []
    clients: list[CRIImageClient] = []
    try:
        upstream = Registry("upstream", base)
        upstream.start()
        started.append(upstream)
        # the proxy registry GETs remoteurl/v2/ at startup and panics if that fails: upstream first
        mirror = Registry("mirror", base, remote_url=upstream.url)
        mirror.start()
        started.append(mirror)
        digest = push_demo_image(upstream.url, REPO, TAG)
        certs_dir = base / "certs.d"
        daemon = PrivateContainerd(base / "ctd", certs_dir)
        daemon.start()
        started.append(daemon)
        client = CRIImageClient(str(daemon.socket), timeout=60)
        clients.append(client)
        yield Lab(upstream, mirror, daemon, client, certs_dir, digest)
    finally:
        for client in clients:
            client.close()
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def clean(lab: Lab) -> Lab:
    """Every case starts cold: no images in either namespace and an empty certs.d."""
    lab.containerd.remove_all_images()
    for hosts in lab.certs_dir.glob("*/hosts.toml"):
        hosts.unlink()
    return lab


def assert_via_mirror(lab: Lab, up_mark: int, mirror_mark: int, namespace: str = "docker.io") -> None:
    to_mirror = [a for a in lab.mirror.accesses_since(mirror_mark) if a.by_containerd]
    ns = "ns=" + namespace.replace(":", "%3A")
    assert any(
        a.method == "HEAD" and a.target.startswith(f"/v2/{REPO}/manifests/{TAG}?") for a in to_mirror
    ), to_mirror
    assert any(a.method == "GET" and "/blobs/sha256:" in a.target for a in to_mirror), to_mirror
    assert all(ns in a.target for a in to_mirror), to_mirror
    upstream = lab.upstream.accesses_since(up_mark)
    assert not [a for a in upstream if a.by_containerd], "containerd bypassed the mirror"
    assert any(a.agent.startswith("Go-http-client/") for a in upstream), "the mirror never asked the upstream"


# -- (a)-(e) -------------------------------------------------------------------------------------------


@pytest.mark.netns
def test_ctr_pull_with_hosts_dir_goes_through_the_mirror(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    hosts_dir = tmp_path / "certs.d"
    write_atomically(hosts_dir / "docker.io" / "hosts.toml", hosts_toml(lab.upstream.url, lab.mirror.url))
    up, mi, _ = lab.marks()
    pulled = lab.containerd.ctr_pull(IMAGE, hosts_dir=hosts_dir, timeout=60)
    assert pulled.ok, pulled.stderr
    assert_via_mirror(lab, up, mi)
    assert IMAGE in lab.containerd.image_names("default")


@pytest.mark.netns
def test_ctr_pull_without_hosts_dir_ignores_certs_d(clean: Lab, tmp_path: Path) -> None:
    # containerd#12550: checking a node with plain `ctr images pull` tests nothing
    lab = clean
    namespace = lab.upstream.url.removeprefix("http://")
    write_atomically(lab.daemon_hosts(namespace), hosts_toml(lab.upstream.url, lab.mirror.url))
    up, mi, _ = lab.marks()
    pulled = lab.containerd.ctr_pull(f"{namespace}/{REPO}:{TAG}", extra_args=["--plain-http"], timeout=60)
    assert pulled.ok, pulled.stderr
    assert not [a for a in lab.mirror.accesses_since(mi) if a.by_containerd]
    assert [a for a in lab.upstream.accesses_since(up) if a.by_containerd]


@pytest.mark.netns
def test_cri_pull_uses_the_daemon_config_path(clean: Lab) -> None:
    lab = clean
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, lab.mirror.url))
    up, mi, log = lab.marks()
    image_ref, seconds = lab.cri.pull("demo:1")  # what kubelet sends for `image: demo:1`
    assert seconds > 0
    assert_via_mirror(lab, up, mi)
    # the daemon log escapes the quotes inside msg="..."
    assert r"normalized image ref: \"docker.io/library/demo:1\"" in lab.containerd.log_since(log)

    status = lab.cri.status("demo:1")
    assert status is not None and status.id == image_ref and image_ref.startswith("sha256:")
    assert IMAGE in status.repo_tags
    assert f"docker.io/{REPO}@{lab.digest}" in status.repo_digests
    assert status.size > 0
    assert image_ref in [i.id for i in lab.cri.list()]

    lab.cri.remove("demo:1")
    assert lab.cri.status("demo:1") is None
    lab.cri.remove("demo:1")  # idempotent per the CRI contract


@pytest.mark.netns
def test_cri_pull_accepts_credentials(clean: Lab) -> None:
    # the registries have no auth, so containerd never sends them; this proves the AuthConfig encoding
    # is accepted by the real server (a malformed message fails with INTERNAL/UNKNOWN before any pull)
    lab = clean
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, lab.mirror.url))
    image_ref, _ = lab.cri.pull(IMAGE, username="lab-user", password="lab-password")
    assert image_ref.startswith("sha256:")


@pytest.mark.netns
def test_cri_errors_carry_grpc_code_and_details(clean: Lab) -> None:
    lab = clean
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, lab.mirror.url))
    with pytest.raises(CRIError) as raised:
        lab.cri.pull("docker.io/library/demo:no-such-tag")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "demo:no-such-tag" in raised.value.details and "not found" in raised.value.details
    with pytest.raises(CRIError) as raised:
        lab.cri.pull("Not A Reference")
    assert raised.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNKNOWN)
    assert raised.value.details


@pytest.mark.netns
def test_mirror_down_falls_back_to_server_without_hanging(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    # a mirror of its own that ran and was stopped: its port now refuses connections
    gone = Registry("mirror-gone", tmp_path, remote_url=lab.upstream.url)
    gone.start()
    gone.stop()
    hosts_dir = tmp_path / "certs.d"
    write_atomically(hosts_dir / "docker.io" / "hosts.toml", hosts_toml(lab.upstream.url, gone.url))
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, gone.url))
    up, _, _ = lab.marks()
    # a hang would surface as ContainerdError / DEADLINE_EXCEEDED from these timeouts
    pulled = lab.containerd.ctr_pull(IMAGE, hosts_dir=hosts_dir, timeout=60)
    assert pulled.ok, pulled.stderr
    assert "trying next host" in pulled.stderr
    assert f"127.0.0.1:{gone.port}: connect: connection refused" in pulled.stderr
    lab.cri.pull("demo:1")
    to_upstream = [a for a in lab.upstream.accesses_since(up) if a.by_containerd]
    assert sum(a.target.startswith(f"/v2/{REPO}/manifests/{TAG}") for a in to_upstream) == 2, to_upstream
    # server differs from the namespace (docker.io), so even the server gets ?ns=
    assert all("ns=docker.io" in a.target for a in to_upstream), to_upstream


@pytest.mark.netns
def test_duplicated_table_hosts_toml_is_ignored(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    block = hosts_toml(lab.upstream.url, lab.mirror.url)
    doubled = block + "\n" + block  # what appending the same block twice (`tee -a`) produces
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(doubled)  # a generator can catch this before a node ever sees the file

    # CRI: containerd logs the parse error, ignores the whole file and falls back to the default host
    # registry-1.docker.io, which is unreachable in this namespace (on a real node: a quiet Docker Hub pull)
    write_atomically(lab.daemon_hosts(), doubled)
    up, mi, log = lab.marks()
    with pytest.raises(CRIError) as raised:
        lab.cri.pull("demo:1")
    assert "registry-1.docker.io" in raised.value.details
    assert "network is unreachable" in raised.value.details
    daemon_log = lab.containerd.log_since(log)
    assert "failed to decode hosts.toml" in daemon_log and "duplicated tables" in daemon_log
    assert not [a for a in lab.mirror.accesses_since(mi) if a.by_containerd]
    assert not [a for a in lab.upstream.accesses_since(up) if a.by_containerd]

    # ctr with a registry whose server is reachable: the pull "works", the mirror is silently skipped
    namespace = lab.upstream.url.removeprefix("http://")
    hosts_dir = tmp_path / "certs.d"
    write_atomically(hosts_dir / namespace / "hosts.toml", doubled)
    up, mi, _ = lab.marks()
    pulled = lab.containerd.ctr_pull(
        f"{namespace}/{REPO}:{TAG}", hosts_dir=hosts_dir, extra_args=["--plain-http"]
    )
    assert pulled.ok, pulled.stderr
    assert "failed to decode hosts.toml" in pulled.stderr
    assert not [a for a in lab.mirror.accesses_since(mi) if a.by_containerd]
    assert [a for a in lab.upstream.accesses_since(up) if a.by_containerd]


@pytest.mark.netns
def test_hosts_toml_edits_apply_without_restarting_containerd(clean: Lab) -> None:
    lab = clean
    pid = lab.containerd.pid

    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, None))  # direct, no mirror
    up, mi, _ = lab.marks()
    lab.cri.pull("demo:1")
    assert not [a for a in lab.mirror.accesses_since(mi) if a.by_containerd]
    assert [a for a in lab.upstream.accesses_since(up) if a.by_containerd]

    lab.containerd.remove_all_images()
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, lab.mirror.url))  # mirror added live
    up, mi, _ = lab.marks()
    lab.cri.pull("demo:1")
    assert_via_mirror(lab, up, mi)
    assert lab.containerd.pid == pid and lab.containerd.running


# -- daemon housekeeping -----------------------------------------------------------------------------


@pytest.mark.netns
def test_remove_all_images_makes_the_next_pull_cold(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    hosts_dir = tmp_path / "certs.d"
    write_atomically(hosts_dir / "docker.io" / "hosts.toml", hosts_toml(lab.upstream.url, lab.mirror.url))
    write_atomically(lab.daemon_hosts(), hosts_toml(lab.upstream.url, lab.mirror.url))
    assert lab.containerd.ctr_pull(IMAGE, hosts_dir=hosts_dir).ok
    lab.cri.pull("demo:1")  # the same blobs, now also referenced from the k8s.io namespace
    assert lab.containerd.content_digests("default") and lab.containerd.content_digests("k8s.io")

    lab.containerd.remove_all_images()
    assert lab.containerd.image_names("default") == [] and lab.containerd.image_names("k8s.io") == []
    assert lab.containerd.content_digests("default") == [] and lab.containerd.content_digests("k8s.io") == []
    _, mi, _ = lab.marks()
    assert lab.containerd.ctr_pull(IMAGE, hosts_dir=hosts_dir).ok
    blob_gets = [a for a in lab.mirror.accesses_since(mi) if a.by_containerd and "/blobs/" in a.target]
    assert len(blob_gets) == 3  # config + two layers fetched again


@pytest.mark.netns
def test_cri_plugin_not_loading_is_detected(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> None:
    # legacy registry.mirrors next to config_path unloads CRI (pkg/cri/config/config.go); containerd itself
    # keeps running
    legacy = {
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "registry": {"mirrors": {"docker.io": {"endpoint": [lab.mirror.url]}}}
            }
        }
    }
    base = tmp_path_factory.mktemp("ctdbad")
    daemon = PrivateContainerd(base / "ctd", base / "certs.d", extra_config=legacy)
    try:
        daemon.start()
        assert lab.containerd.cri_loaded()
        assert not daemon.cri_loaded()
        assert daemon.plugin_status("io.containerd.grpc.v1.cri") not in (None, "ok")
        assert "`mirrors` cannot be set when `config_path` is provided" in daemon.log_text()
        with CRIImageClient(str(daemon.socket), timeout=10) as client, pytest.raises(CRIError) as raised:
            client.list()
        assert raised.value.code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        daemon.stop()


@pytest.mark.netns
def test_stop_leaves_no_process_and_no_mounts(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("ctdstop")
    hosts_dir = base / "certs.d"
    write_atomically(hosts_dir / "docker.io" / "hosts.toml", hosts_toml(lab.upstream.url, None))
    daemon = PrivateContainerd(base / "ctd", hosts_dir)
    try:
        daemon.start()
        pid = daemon.pid
        assert pid is not None
        assert daemon.ctr_pull(IMAGE, hosts_dir=hosts_dir).ok  # unpacking mounts snapshots temporarily
    finally:
        daemon.stop()
    assert not daemon.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert mounts_under(base) == []
    assert not daemon.socket.exists()


def test_deep_workdir_gets_a_short_socket_folder(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 4)
    ctd = PrivateContainerd(deep / "ctd", deep / "certs.d")
    assert len(str(ctd.socket)) + len(".ttrpc") <= 108
    assert ctd.socket.parent != ctd.workdir
    assert PrivateContainerd(deep / "ctd", deep / "certs.d").socket == ctd.socket  # stable per workdir
    assert PrivateContainerd(deep / "other", deep / "certs.d").socket != ctd.socket
    assert ctd.config()["grpc"]["address"] == str(ctd.socket)
