"""docker-registry (CNCF distribution 2.8.2) processes for the lab: config, start/stop, clear errors.

Real registry processes on loopback, ephemeral ports (port 0, read back from the registry's log).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from runbook_lab import registries
from runbook_lab.images import build_image, push
from runbook_lab.registries import (
    RegistryError,
    registry_config,
    start_registry,
    stop_process,
    wait_ready,
)
from tests.support.labkit import needs_registry


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_config_is_filesystem_storage_with_delete_and_access_log(tmp_path: Path) -> None:
    cfg = yaml.safe_load(registry_config(tmp_path / "data", 5000))
    assert cfg["version"] == 0.1
    assert cfg["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert cfg["storage"]["delete"]["enabled"] is True
    assert cfg["log"]["accesslog"]["disabled"] is False
    assert cfg["http"]["addr"] == "127.0.0.1:5000"
    assert "proxy" not in cfg and "auth" not in cfg


def test_config_for_a_pull_through_cache_and_basic_auth(tmp_path: Path) -> None:
    cfg = yaml.safe_load(
        registry_config(
            tmp_path,
            5001,
            host="127.0.0.2",
            proxy_remote="http://127.0.0.1:5000",
            service="mirror",
            htpasswd=tmp_path / "htpasswd",
        )
    )
    assert cfg["proxy"] == {"remoteurl": "http://127.0.0.1:5000"}
    assert cfg["http"]["addr"] == "127.0.0.2:5001"
    assert cfg["log"]["fields"]["service"] == "mirror"
    assert cfg["auth"]["htpasswd"]["path"] == str(tmp_path / "htpasswd")


@needs_registry
def test_start_on_an_ephemeral_port_then_stop_leaves_no_process(tmp_path: Path) -> None:
    proc = start_registry("up", tmp_path / "up", 0, tmp_path / "up.log")
    try:
        assert proc.port > 0
        r = httpx.get(proc.url + "/v2/")
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        assert (tmp_path / "up" / "config.yml").exists()
    finally:
        stop_process(proc)
    assert proc.returncode is not None
    assert _gone(proc.pid)
    assert '"GET /v2/ HTTP/1.1" 200' in (tmp_path / "up.log").read_text()  # access log is on
    with pytest.raises(httpx.ConnectError):
        httpx.get(proc.url + "/v2/")


@needs_registry
def test_stop_process_by_pid(tmp_path: Path) -> None:
    proc = start_registry("up", tmp_path / "up", 0, tmp_path / "up.log")
    try:
        stop_process(proc.pid, timeout=10)
        assert _gone(proc.pid)
    finally:
        stop_process(proc)


@needs_registry
def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RegistryError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_registry("up", tmp_path / "up", port, tmp_path / "up.log")
    assert not (tmp_path / "up.log").exists()  # nothing was started


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registries, "REGISTRY_BINARY", str(tmp_path / "no-such-registry"))
    with pytest.raises(
        RegistryError, match="install the Debian package docker-registry; `make test`/`make demo`"
    ):
        start_registry("up", tmp_path / "up", 0, tmp_path / "up.log")


def test_wait_ready_times_out_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}/v2/ not ready"):
            wait_ready(f"http://127.0.0.1:{port}", timeout=0.3)


@needs_registry
def test_proxy_with_unreachable_upstream_fails_with_the_registry_log(tmp_path: Path) -> None:
    # distribution's proxy mode GETs remoteurl/v2/ at startup and panics if it cannot (seen with 2.8.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        with pytest.raises(RegistryError, match="exited with 2.*panic"):
            start_registry(
                "mirror", tmp_path / "m", 0, tmp_path / "m.log", proxy_remote=f"http://127.0.0.1:{dead}"
            )


@needs_registry
def test_pull_through_cache_fetches_from_its_upstream(tmp_path: Path) -> None:
    up = start_registry("up", tmp_path / "up", 0, tmp_path / "up.log")
    try:
        mirror = start_registry(
            "mirror", tmp_path / "mirror", 0, tmp_path / "mirror.log", proxy_remote=up.url
        )
        try:
            image = build_image({"hello.txt": b"through the cache\n"})
            push(image, up.url, "library/cached", "1")
            r = httpx.get(
                f"{mirror.url}/v2/library/cached/manifests/{image.digest}",
                headers={"Accept": image.media_type},
            )
            assert r.status_code == 200 and r.content == image.manifest
            layer = image.blobs[1]
            assert httpx.get(f"{mirror.url}/v2/library/cached/blobs/{layer.digest}").content == layer.data
            # the mirror's own upstream requests carry Go's net/http user agent
            assert "Go-http-client/1.1" in (tmp_path / "up.log").read_text()
        finally:
            stop_process(mirror)
    finally:
        stop_process(up)


@needs_registry
def test_basic_auth_registry_and_push_answers_the_basic_challenge(tmp_path: Path) -> None:
    crypt = pytest.importorskip(
        "crypt", reason="bcrypt htpasswd entries are made with the stdlib crypt module"
    )
    entry = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not entry or not entry.startswith("$2"):
        pytest.skip("libcrypt here cannot make bcrypt hashes")
    (tmp_path / "htpasswd").write_text(f"lab:{entry}\n")
    proc = start_registry("private", tmp_path / "p", 0, tmp_path / "p.log", htpasswd=tmp_path / "htpasswd")
    try:
        r = httpx.get(proc.url + "/v2/")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
        image = build_image({"private.txt": b"needs a login\n"})
        with pytest.raises(Exception, match="401"):
            push(image, proc.url, "team/private", "1")
        assert push(image, proc.url, "team/private", "1", auth=("lab", "s3cret")) == image.digest
        r = httpx.get(
            f"{proc.url}/v2/team/private/manifests/1",
            auth=("lab", "s3cret"),
            headers={"Accept": image.media_type},
        )
        assert r.headers["Docker-Content-Digest"] == image.digest
    finally:
        stop_process(proc)


def test_stop_process_escalates_to_sigkill() -> None:
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert stop_process(proc, timeout=0.3) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
