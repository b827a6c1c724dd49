"""The Docker Hub stand-in: challenge + token flow, rate-limit headers and counting, 429, lab controls.

A real docker-registry is the backend; the stand-in runs in-process on ephemeral ports. Time-based
behaviour (window expiry, throttle, latency) runs on an injected clock, so nothing here is timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runbook_lab import registries
from runbook_lab.dockerhub import (
    AUTHENTICATED_LIMIT_MESSAGE,
    DockerHub,
    HubConfig,
    PullLedger,
    Throttle,
    account_id,
    source_for_ip,
)
from runbook_lab.images import MEDIA_TYPES, RegistryPushError, build_image, build_index, push
from runbook_lab.registries import start_registry, stop_process

REPO = Path(__file__).resolve().parents[2]
needs_registry = pytest.mark.skipif(
    not Path(registries.REGISTRY_BINARY).exists() and not os.environ.get("CI"),
    reason=f"{registries.REGISTRY_BINARY} missing ({registries.INSTALL_HINT})",
)
ACCEPT = ", ".join(MEDIA_TYPES[m][k] for m in ("oci", "docker") for k in ("index", "manifest"))
ANONYMOUS_429 = {
    "errors": [
        {
            "code": "TOOMANYREQUESTS",
            "message": (
                "You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"
            ),
        }
    ]
}


class FakeTime:
    """A clock that only moves when something sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    """A docker.io stand-in registry with a multi-arch image, a single image with a 1 MiB layer, and the
    probe repo."""
    if not Path(registries.REGISTRY_BINARY).exists() and not os.environ.get("CI"):
        pytest.skip(f"{registries.REGISTRY_BINARY} missing ({registries.INSTALL_HINT})")
    root = tmp_path_factory.mktemp("hub-backend")
    proc = start_registry("docker.io", root / "reg", 0, root / "registry.log")
    demo = build_index(
        [build_image({"arch": b"amd64\n"}), build_image({"arch": b"arm64\n"}, platform="linux/arm64/v8")]
    )
    single = build_image({"etc/single": b"1\n"}, workdir=root, random_layer_bytes=[1 << 20], seed="single")
    push(demo, proc.url, "library/demo", "1")
    push(single, proc.url, "library/single", "1")
    push(build_image({"test.txt": b"rate limit preview\n"}), proc.url, "ratelimitpreview/test", "latest")
    proc.images = {"demo": demo, "single": single}  # type: ignore[attr-defined]
    yield proc
    stop_process(proc)


@pytest.fixture
def hub(backend):
    with DockerHub(backend.url, config=HubConfig(limit=5, auth_limit=7), user=("alice", "wonderland")) as h:
        yield h


def token(hub: DockerHub, repo: str, actions: str = "pull", auth: tuple[str, str] | None = None) -> str:
    r = httpx.get(
        hub.token_url,
        params={"service": "registry.docker.io", "scope": f"repository:{repo}:{actions}"},
        auth=auth,
    )
    assert r.status_code == 200, r.text
    return r.json()["token"]


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "Accept": ACCEPT}


def remaining(resp: httpx.Response) -> int:
    return int(resp.headers["ratelimit-remaining"].split(";")[0])


# -- challenge and tokens ----------------------------------------------------------------------
@needs_registry
def test_v2_ping_without_a_token_is_challenged(hub: DockerHub) -> None:
    r = httpx.get(hub.url + "/v2/")
    assert r.status_code == 401
    assert (
        r.headers["www-authenticate"]
        == f'Bearer realm="http://127.0.0.1:{hub.token_port}/token",service="registry.docker.io"'
    )
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.json() == {
        "errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]
    }
    ok = httpx.get(hub.url + "/v2/", headers=bearer(token(hub, "library/demo")))
    assert ok.status_code == 200 and ok.json() == {}


@needs_registry
def test_repository_challenge_names_the_scope(hub: DockerHub, backend) -> None:
    r = httpx.get(hub.url + "/v2/library/demo/manifests/1")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].endswith(',scope="repository:library/demo:pull"')
    assert r.json() == {
        "errors": [
            {
                "code": "UNAUTHORIZED",
                "message": "authentication required",
                "detail": [{"Type": "repository", "Class": "", "Name": "library/demo", "Action": "pull"}],
            }
        ]
    }
    blob = httpx.get(hub.url + f"/v2/library/demo/blobs/{backend.images['demo'].children[0].blobs[1].digest}")
    assert blob.status_code == 401  # blobs need a token too


@needs_registry
def test_anonymous_token_response_shape(hub: DockerHub) -> None:
    r = httpx.get(
        hub.token_url,
        params={"service": "registry.docker.io", "scope": "repository:ratelimitpreview/test:pull"},
    )
    body = r.json()
    assert r.status_code == 200 and set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])


@needs_registry
def test_token_for_another_repository_is_insufficient_scope(hub: DockerHub) -> None:
    r = httpx.get(hub.url + "/v2/library/single/manifests/1", headers=bearer(token(hub, "library/demo")))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].endswith(
        ',scope="repository:library/single:pull",error="insufficient_scope"'
    )
    forged = token(hub, "library/single")[:-4] + "AAAA"
    assert httpx.get(hub.url + "/v2/library/single/manifests/1", headers=bearer(forged)).status_code == 401


@needs_registry
def test_wrong_password_is_refused_at_the_token_service(hub: DockerHub) -> None:
    r = httpx.get(
        hub.token_url,
        params={"service": "registry.docker.io", "scope": "repository:library/demo:pull"},
        auth=("alice", "wrong"),
    )
    assert r.status_code == 401 and r.json() == {"details": "incorrect username or password"}


# -- rate limiting -----------------------------------------------------------------------------
@needs_registry
def test_manifest_get_counts_head_and_blobs_do_not(hub: DockerHub, backend) -> None:
    h = bearer(token(hub, "library/single"))
    single = backend.images["single"]
    with httpx.Client(base_url=hub.url, headers=h) as c:
        head = c.head("/v2/library/single/manifests/1")
        assert head.status_code == 200 and head.headers["docker-content-digest"] == single.digest
        assert head.headers["ratelimit-limit"] == "5;w=21600"
        assert head.headers["ratelimit-remaining"] == "5;w=21600"
        assert head.headers["docker-ratelimit-source"] == "127.0.0.1"
        assert remaining(c.head("/v2/library/single/manifests/1")) == 5
        get = c.get("/v2/library/single/manifests/1")
        assert get.status_code == 200 and get.content == single.manifest and remaining(get) == 4
        layer = single.blobs[1]
        blob = c.get(f"/v2/library/single/blobs/{layer.digest}")
        assert (
            blob.status_code == 200
            and len(blob.content) == layer.size
            and "ratelimit-remaining" not in blob.headers
        )
        assert remaining(c.head("/v2/library/single/manifests/1")) == 4
    state = httpx.get(hub.url + "/_lab/state").json()
    assert state["sources"]["127.0.0.1"] == {
        "authenticated": False,
        "used": 1,
        "limit": 5,
        "remaining": 4,
        "window_s": 21600,
    }
    assert state["counters"]["manifest_head"] == 3 and state["counters"]["manifest_get"] == 1
    assert state["counters"]["blob_get"] == 1


@needs_registry
def test_multi_arch_pull_counts_per_platform_not_the_index(hub: DockerHub, backend) -> None:
    h = bearer(token(hub, "library/demo"))
    demo = backend.images["demo"]
    with httpx.Client(base_url=hub.url, headers=h) as c:
        index = c.get("/v2/library/demo/manifests/1")
        assert index.headers["content-type"] == MEDIA_TYPES["oci"]["index"] and remaining(index) == 5
        for n, child in enumerate(demo.children, start=1):
            r = c.get(f"/v2/library/demo/manifests/{child.digest}")
            assert r.status_code == 200 and remaining(r) == 5 - n
        missing = c.get("/v2/library/demo/manifests/no-such-tag")
        assert missing.status_code == 404 and remaining(missing) == 3  # a failed GET is not a pull


@needs_registry
def test_over_the_budget_a_manifest_get_gets_429(hub: DockerHub, backend) -> None:
    assert httpx.put(hub.url + "/_lab/config", json={"limit": 2}).json()["limit"] == 2
    h = bearer(token(hub, "library/single"))
    with httpx.Client(base_url=hub.url, headers=h) as c:
        assert [c.get("/v2/library/single/manifests/1").status_code for _ in range(2)] == [200, 200]
        r = c.get("/v2/library/single/manifests/1")
        assert r.status_code == 429
        assert r.json() == ANONYMOUS_429
        assert r.headers["ratelimit-remaining"] == "0;w=21600" and r.headers["ratelimit-limit"] == "2;w=21600"
        assert r.headers["docker-ratelimit-source"] == "127.0.0.1"
        by_digest = c.get(f"/v2/library/single/manifests/{backend.images['single'].digest}")
        assert by_digest.status_code == 429
        head = c.head("/v2/library/single/manifests/1")
        assert head.status_code == 200 and remaining(head) == 0  # version checks still work
        assert (
            c.get(f"/v2/library/single/blobs/{backend.images['single'].blobs[0].digest}").status_code == 200
        )
    assert httpx.get(hub.url + "/_lab/state").json()["counters"]["too_many_requests"] == 2


@needs_registry
def test_reset_restores_the_budget(hub: DockerHub) -> None:
    httpx.put(hub.url + "/_lab/config", json={"limit": 1})
    with httpx.Client(base_url=hub.url, headers=bearer(token(hub, "library/single"))) as c:
        assert c.get("/v2/library/single/manifests/1").status_code == 200
        assert c.get("/v2/library/single/manifests/1").status_code == 429
        state = httpx.post(hub.url + "/_lab/ratelimit/reset").json()
        assert state["sources"] == {}
        r = c.get("/v2/library/single/manifests/1")
        assert r.status_code == 200 and remaining(r) == 0


@needs_registry
def test_authenticated_pulls_are_charged_to_the_account(hub: DockerHub) -> None:
    alice = account_id("alice")
    user_h = bearer(token(hub, "library/single", auth=("alice", "wonderland")))
    anon_h = bearer(token(hub, "library/single"))
    with httpx.Client(base_url=hub.url) as c:
        r = c.get("/v2/library/single/manifests/1", headers=user_h)
        assert r.headers["docker-ratelimit-source"] == alice
        assert r.headers["ratelimit-limit"] == "7;w=21600" and remaining(r) == 6
        anon = c.head("/v2/library/single/manifests/1", headers=anon_h)
        assert anon.headers["docker-ratelimit-source"] == "127.0.0.1" and remaining(anon) == 5
        httpx.put(hub.url + "/_lab/config", json={"auth_limit": 1})
        over = c.get("/v2/library/single/manifests/1", headers=user_h)
        assert over.status_code == 429
        assert over.json()["errors"][0] == {"code": "TOOMANYREQUESTS", "message": AUTHENTICATED_LIMIT_MESSAGE}
        assert c.get("/v2/library/single/manifests/1", headers=anon_h).status_code == 200
    sources = httpx.get(hub.url + "/_lab/state").json()["sources"]
    assert sources[alice]["authenticated"] is True and sources[alice]["used"] == 1
    assert sources["127.0.0.1"]["used"] == 1


@needs_registry
def test_unlimited_sends_no_ratelimit_headers(hub: DockerHub) -> None:
    httpx.put(hub.url + "/_lab/config", json={"limit": None})
    with httpx.Client(base_url=hub.url, headers=bearer(token(hub, "library/single"))) as c:
        for _ in range(7):
            r = c.get("/v2/library/single/manifests/1")
            assert r.status_code == 200
        assert not any(k.startswith("ratelimit") or k == "docker-ratelimit-source" for k in r.headers)


@needs_registry
def test_anonymous_cannot_push_the_lab_user_can(hub: DockerHub, tmp_path: Path) -> None:
    image = build_image({"pushed-through-hub": b"1\n"}, workdir=tmp_path, random_layer_bytes=[300_000])
    with pytest.raises(RegistryPushError, match="HTTP 401"):
        push(image, hub.url, "alice/app", "1")
    assert push(image, hub.url, "alice/app", "1", auth=("alice", "wonderland")) == image.digest
    # the upload's Location pointed back at the stand-in, and the backend now has it
    r = httpx.get(f"{hub.backend_url}/v2/alice/app/manifests/1", headers={"Accept": ACCEPT})
    assert r.headers["Docker-Content-Digest"] == image.digest
    pulled = httpx.get(
        f"{hub.url}/v2/alice/app/blobs/{image.blobs[2].digest}", headers=bearer(token(hub, "alice/app"))
    )
    assert pulled.status_code == 200 and len(pulled.content) == image.blobs[2].size


@needs_registry
def test_backend_down_is_503_and_not_a_pull(backend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        with DockerHub(dead, config=HubConfig(limit=3)) as h:
            r = httpx.get(
                h.url + "/v2/library/single/manifests/1", headers=bearer(token(h, "library/single"))
            )
            assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert h.ledger.used("127.0.0.1", 21600) == 0


@needs_registry
def test_config_endpoint_validates(hub: DockerHub) -> None:
    assert httpx.put(hub.url + "/_lab/config", json={"limits": 3}).status_code == 400
    assert httpx.put(hub.url + "/_lab/config", json={"limit": -1}).status_code == 400
    assert httpx.put(hub.url + "/_lab/config", json={"throttle_bytes_per_s": 0}).status_code == 400
    r = httpx.put(
        hub.url + "/_lab/config", json={"throttle_bytes_per_s": 1000, "latency_ms": 20, "window_s": 3600}
    )
    assert r.status_code == 200
    assert r.json() == {
        "limit": 5,
        "auth_limit": 7,
        "window_s": 3600,
        "throttle_bytes_per_s": 1000,
        "latency_ms": 20,
    }
    assert httpx.get(hub.url + "/_lab/nothing").status_code == 404


# -- time: window, throttle, latency (injected clock) ------------------------------------------
def test_ledger_window_slides() -> None:
    t = FakeTime()
    ledger = PullLedger(t.clock)
    assert ledger.try_take("1.2.3.4", 2, 100) and ledger.try_take("1.2.3.4", 2, 100)
    assert not ledger.try_take("1.2.3.4", 2, 100)
    assert ledger.try_take("5.6.7.8", 2, 100)  # per source
    t.sleep(99)
    assert ledger.remaining("1.2.3.4", 2, 100) == 0
    t.sleep(1)  # the first pulls are now a full window old
    assert ledger.remaining("1.2.3.4", 2, 100) == 2
    ledger.try_take("1.2.3.4", 2, 100)
    ledger.give_back("1.2.3.4")
    assert ledger.used("1.2.3.4", 100) == 0


def test_throttle_schedule_keeps_the_average_rate() -> None:
    t = FakeTime()
    throttle = Throttle(128 * 1024, t.clock, t.sleep)
    for _ in range(10):
        throttle.pace(64 * 1024)
    assert t.sleeps == [pytest.approx(0.5)] * 10  # each 64 KiB chunk is half a second at 128 KiB/s
    slow = FakeTime()
    behind = Throttle(1000, slow.clock, slow.sleep)
    slow.now += 5  # the sender was slower than the rate: nothing to wait for
    assert behind.pace(1000) == 0.0 and slow.sleeps == []
    assert behind.pace(9000) == pytest.approx(5.0)


@needs_registry
def test_throttle_paces_forwarded_bodies(backend) -> None:
    t = FakeTime()
    rate = 256 * 1024
    layer = backend.images["single"].blobs[-1]  # the 1 MiB random layer
    assert layer.size > 1 << 20
    with DockerHub(
        backend.url, config=HubConfig(throttle_bytes_per_s=rate), clock=t.clock, sleep=t.sleep
    ) as h:
        r = httpx.get(
            f"{h.url}/v2/library/single/blobs/{layer.digest}", headers=bearer(token(h, "library/single"))
        )
        assert r.status_code == 200 and len(r.content) == layer.size
    # the fake clock only advances by the throttle's sleeps, so they add up to size / rate exactly
    assert sum(t.sleeps) == pytest.approx(layer.size / rate)
    assert len(t.sleeps) > 1  # paced in chunks, not one wait at the end


@needs_registry
def test_latency_is_added_to_every_request(backend) -> None:
    t = FakeTime()
    with DockerHub(backend.url, config=HubConfig(latency_ms=250), clock=t.clock, sleep=t.sleep) as h:
        tok = token(h, "library/single")
        httpx.get(h.url + "/v2/")
        httpx.head(h.url + "/v2/library/single/manifests/1", headers=bearer(tok))
        httpx.get(h.url + "/_lab/state")  # control endpoints are not delayed
    assert t.sleeps == [0.25, 0.25, 0.25]  # token, /v2/, manifest HEAD


def test_rate_limit_source_is_the_ipv4_address_or_the_ipv6_slash_64() -> None:
    assert source_for_ip("10.1.2.3") == "10.1.2.3"
    assert source_for_ip("2001:41d0:801:2000:1:2:3:4") == "2001:41d0:801:2000::"
    assert source_for_ip("::ffff:10.0.0.1") == "10.0.0.1"


# -- command line ------------------------------------------------------------------------------
def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runbook_lab.dockerhub",
            "--port",
            "0",
            "--token-port",
            "0",
            "--backend",
            "http://127.0.0.1:9",
            "--limit",
            "3",
            "--user",
            "bob:pw",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"dockerhub: registry (\S+) token (\S+) backend http://127.0.0.1:9$", line.strip())
        assert m, line
        registry_url, token_url = m.groups()
        r = httpx.get(registry_url + "/v2/")
        assert r.status_code == 401 and f'realm="{token_url}"' in r.headers["www-authenticate"]
        state = httpx.get(registry_url + "/_lab/state").json()
        assert state["config"]["limit"] == 3 and state["user"] == account_id("bob")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_cli_port_taken_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "runbook_lab.dockerhub",
                "--port",
                str(port),
                "--token-port",
                "0",
                "--backend",
                "http://127.0.0.1:9",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert "address already in use" in result.stderr and str(port) in result.stderr


def test_state_lists_config_and_counters_in_json() -> None:
    with DockerHub("http://127.0.0.1:9", config=HubConfig(limit=None)) as h:
        state = json.loads(httpx.get(h.url + "/_lab/state").text)
        assert state["realm"] == h.token_url
    assert state["config"]["limit"] is None and state["service"] == "registry.docker.io"


# -- a real client: containerd pulls docker.io images through the stand-in ---------------------
@pytest.mark.netns
def test_containerd_pulls_through_the_token_flow_and_is_rate_limited(backend, tmp_path_factory) -> None:
    from runbook_lab.containerd import PrivateContainerd

    base = tmp_path_factory.mktemp("hubctd")  # short: unix socket paths are limited to 108 bytes
    with DockerHub(backend.url, config=HubConfig(limit=1)) as h:
        hosts = base / "certs.d" / "docker.io" / "hosts.toml"
        hosts.parent.mkdir(parents=True)
        hosts.write_text(f'server = "{h.url}"\n\n[host."{h.url}"]\n  capabilities = ["pull", "resolve"]\n')
        with PrivateContainerd(base / "ctd", base / "daemon-certs.d") as ctd:
            pulled = ctd.ctr_pull("docker.io/library/demo:1", hosts_dir=base / "certs.d")
            assert pulled.ok, pulled.stderr  # includes unpack: the layers' diff_ids check out
            state = h.state()
            assert state["counters"]["tokens_issued"] >= 1 and state["counters"]["unauthorized"] >= 1
            # index + the amd64 manifest were fetched; only the platform manifest is a pull
            assert state["counters"]["manifest_get"] == 2 and state["sources"]["127.0.0.1"]["used"] == 1
            ctd.remove_all_images()
            again = ctd.ctr_pull("docker.io/library/demo:1", hosts_dir=base / "certs.d")
            assert not again.ok
            assert "429 Too Many Requests" in again.stderr
            assert "toomanyrequests: You have reached your unauthenticated pull rate limit" in again.stderr


@pytest.mark.netns
def test_containerd_with_credentials_is_charged_to_the_account(backend, tmp_path_factory) -> None:
    from runbook_lab.containerd import PrivateContainerd

    base = tmp_path_factory.mktemp("hubctdu")
    with DockerHub(backend.url, config=HubConfig(limit=0, auth_limit=5), user=("alice", "wonderland")) as h:
        hosts = base / "certs.d" / "docker.io" / "hosts.toml"
        hosts.parent.mkdir(parents=True)
        hosts.write_text(f'server = "{h.url}"\n\n[host."{h.url}"]\n  capabilities = ["pull", "resolve"]\n')
        with PrivateContainerd(base / "ctd", base / "daemon-certs.d") as ctd:
            denied = ctd.ctr_pull(
                "docker.io/library/single:1", hosts_dir=base / "certs.d", extra_args=["--user", "alice:nope"]
            )
            assert not denied.ok and "401" in denied.stderr
            pulled = ctd.ctr_pull(
                "docker.io/library/single:1",
                hosts_dir=base / "certs.d",
                extra_args=["--user", "alice:wonderland"],
            )
            assert pulled.ok, pulled.stderr
    state = h.state()
    assert state["sources"] == {
        account_id("alice"): {"authenticated": True, "used": 1, "limit": 5, "remaining": 4, "window_s": 21600}
    }
    # with a secret, containerd asks for its token with the OAuth2 password grant (POST /token)
    assert state["counters"]["tokens_issued_oauth"] >= 1
