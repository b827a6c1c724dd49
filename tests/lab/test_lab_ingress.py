"""The lab ingress controller: routing from Ingress objects in the Kubernetes stand-in, ingress-nginx's
answers
(404 default backend, 308 to https, 413, 502/503), forwarded headers, streaming, keep-alive, and its CLI."""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lab.ingress import IngressProxy, RouteTable, parse_size
from runbook_lab.kube import KubeStandIn, write_kubeconfig
from tests.support.labkit import free_port

BIG = 8 * 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


class Backend(LabHandler):
    """Stands for a Nexus connector: echoes what it received, serves big bodies, takes uploads."""

    server_version = "backend"

    def do_GET(self) -> None:  # noqa: N802
        if self.url_path == "/big":  # chunked, no Content-Length
            self.send_response(200)
            self.send_header("Docker-Content-Digest", DIGEST)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = pattern(BIG)
            for i in range(0, BIG, 1 << 20):
                part = data[i : i + (1 << 20)]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.url_path == "/fixed":
            self.reply(200, pattern(1000), "application/octet-stream", {"Docker-Content-Digest": DIGEST})
            return
        self.reply_json(
            401,
            {"path": self.path, "headers": dict(self.headers.items())},
            {
                "WWW-Authenticate": 'Bearer realm="http://x/v2/token",service="x"',
                "Docker-Distribution-API-Version": "registry/2.0",
            },
        )

    def do_HEAD(self) -> None:  # noqa: N802
        self.reply(200, pattern(1000), "application/octet-stream", {"Docker-Content-Digest": DIGEST})

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_body()
        self.reply_json(201, {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    server = LabHTTPServer(("127.0.0.1", 0), Backend)
    serve_in_thread(server)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def cluster(tmp_path) -> Iterator[tuple[KubeStandIn, IngressProxy]]:
    kube = KubeStandIn().start()
    proxy = IngressProxy(write_kubeconfig(tmp_path / "kubeconfig", kube.url)).start()
    assert proxy.wait_synced()
    yield kube, proxy
    proxy.stop()
    kube.stop()


def service(name: str, target: int | str, port: int = 80, namespace: str = "apps") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": target}], "selector": {"app": name}},
    }


def ingress(
    name: str,
    host: str | None,
    svc: str,
    port: int | str = 80,
    path: str = "/",
    path_type: str = "Prefix",
    annotations: dict | None = None,
    tls: bool = False,
    cls: str | None = "nginx",
    namespace: str = "apps",
) -> dict:
    rule: dict = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": path_type,
                    "backend": {
                        "service": {
                            "name": svc,
                            "port": {"number": port} if isinstance(port, int) else {"name": port},
                        }
                    },
                }
            ]
        }
    }
    if host:
        rule["host"] = host
    spec: dict = {"rules": [rule]}
    if cls:
        spec["ingressClassName"] = cls
    if tls and host:
        spec["tls"] = [{"hosts": [host]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }


def seed(kube: KubeStandIn, *objects: dict) -> None:
    namespaces = {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}
    for ns in namespaces:
        if kube.get("v1", "Namespace", ns) is None:
            kube.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for obj in objects:
        kube.put(obj)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def get(proxy: IngressProxy, host: str, path: str = "/v2/", **kw) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{proxy.port}{path}", headers={"Host": host}, timeout=30, **kw)


def routed(proxy: IngressProxy, host: str, path: str = "/") -> Callable[[], bool]:
    return lambda: proxy.table.match(host, path) is not None


# -- routing table (no HTTP) ---------------------------------------------------------------------------
def test_route_table_follows_ingress_path_matching() -> None:
    table = RouteTable("nginx")
    table.replace("Service", [service("a", 1), service("b", 2), service("c", 3), service("named", "http")])
    table.replace(
        "Ingress",
        [
            ingress("root", "reg.example.com", "a"),
            ingress("api", "reg.example.com", "b", path="/v2", path_type="Prefix"),
            ingress("exact", "reg.example.com", "c", path="/v2/token", path_type="Exact"),
            ingress("wild", "*.example.com", "c"),
            ingress("nohost", None, "b"),
            ingress("other-class", "alb.other.test", "a", cls="alb"),
            ingress(
                "legacy-class",
                "legacy.example.com",
                "a",
                cls=None,
                annotations={"kubernetes.io/ingress.class": "nginx"},
            ),
            ingress("named-port", "named.example.com", "named"),
        ],
    )

    def service_of(host: str, path: str) -> str | None:
        return (table.match(host, path) or type("R", (), {"service": None})).service

    assert service_of("reg.example.com", "/") == "a"
    assert service_of("reg.example.com", "/v2/") == "b"  # longest prefix
    assert service_of("reg.example.com", "/v2") == "b"
    assert service_of("reg.example.com", "/v2x") == "a"  # Prefix matches whole path elements only
    assert service_of("reg.example.com", "/v2/token") == "c"  # Exact beats Prefix
    assert service_of("x.example.com", "/") == "c"  # wildcard: one label
    assert service_of("a.b.example.com", "/") == "b"  # not the wildcard: the rule without host
    assert service_of("alb.other.test", "/") == "b"  # other class ignored: falls to the host-less rule
    assert service_of("legacy.example.com", "/") == "a"  # class by annotation
    route = table.match("reg.example.com", "/v2/")
    assert table.target_port(route) == 2
    assert table.target_port(table.match("named.example.com", "/")) is None  # named pod port needs the pod


def test_nginx_sizes() -> None:
    assert parse_size("0") is None
    assert parse_size("1m") == 1024 * 1024 and parse_size("8k") == 8192 and parse_size("2G") == 2 * 1024**3
    assert parse_size("nonsense") == 1024 * 1024  # ingress-nginx falls back to the default


# -- the proxy over HTTP -------------------------------------------------------------------------------
def test_unknown_host_gets_the_default_backend_404(cluster) -> None:
    _, proxy = cluster
    resp = get(proxy, "nowhere.example.com")
    assert resp.status_code == 404 and "404 Not Found" in resp.text and "nginx" in resp.text
    health = httpx.get(f"{proxy.url}/_lab/healthz")
    assert health.status_code == 200 and health.json()["synced"] is True


def test_forwarded_headers_passthrough_and_keepalive(cluster, backend) -> None:
    kube, proxy = cluster
    seed(kube, service("echo", backend), ingress("echo", "echo.lab.internal", "echo"))
    assert until(routed(proxy, "echo.lab.internal"))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    seen = []
    for _ in range(2):  # the second request goes over the same connection
        conn.request(
            "GET",
            "/v2/?x=1",
            headers={"Host": f"echo.lab.internal:{proxy.port}", "X-Forwarded-Host": "spoofed.example.com"},
        )
        resp = conn.getresponse()
        body = json.loads(resp.read())
        seen.append(conn.sock.getsockname())
        assert resp.status == 401
        assert resp.getheader("WWW-Authenticate") == 'Bearer realm="http://x/v2/token",service="x"'
        assert resp.getheader("Docker-Distribution-API-Version") == "registry/2.0"
        assert resp.getheader("Server") == "nginx"
    conn.close()
    assert seen[0] == seen[1], "keep-alive"
    got = {k.lower(): v for k, v in body["headers"].items()}
    assert body["path"] == "/v2/?x=1"
    assert got["host"] == f"echo.lab.internal:{proxy.port}"
    assert got["x-forwarded-host"] == f"echo.lab.internal:{proxy.port}"  # ours, not the client's
    assert got["x-forwarded-port"] == str(proxy.port)
    assert got["x-forwarded-proto"] == "http" and got["x-real-ip"] == "127.0.0.1"


def test_bodies_stream_both_ways(cluster, backend) -> None:
    kube, proxy = cluster
    seed(
        kube,
        service("blobs", backend),
        ingress(
            "blobs",
            "blobs.lab.internal",
            "blobs",
            annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        ),
    )
    assert until(routed(proxy, "blobs.lab.internal"))
    h = hashlib.sha256()
    size = 0
    with httpx.stream("GET", f"{proxy.url}/big", headers={"Host": "blobs.lab.internal"}, timeout=30) as resp:
        assert resp.status_code == 200 and resp.headers["docker-content-digest"] == DIGEST
        assert resp.headers.get("transfer-encoding") == "chunked"
        for part in resp.iter_raw():
            h.update(part)
            size += len(part)
    assert size == BIG and h.hexdigest() == hashlib.sha256(pattern(BIG)).hexdigest()
    head = httpx.head(f"{proxy.url}/fixed", headers={"Host": "blobs.lab.internal"})
    assert head.status_code == 200 and head.headers["content-length"] == "1000" and head.content == b""
    upload = pattern(3 * 1024 * 1024)
    resp = httpx.post(
        f"{proxy.url}/upload", headers={"Host": "blobs.lab.internal"}, content=upload, timeout=30
    )
    assert resp.status_code == 201
    assert resp.json() == {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
    chunked = httpx.post(
        f"{proxy.url}/upload",
        headers={"Host": "blobs.lab.internal"},
        content=iter([upload[:100], upload[100:]]),
        timeout=30,
    )
    assert chunked.json()["size"] == len(upload)


def test_body_size_default_is_1m(cluster, backend) -> None:
    kube, proxy = cluster
    seed(kube, service("small", backend), ingress("small", "small.lab.internal", "small"))
    assert until(routed(proxy, "small.lab.internal"))
    resp = httpx.post(f"{proxy.url}/upload", headers={"Host": "small.lab.internal"}, content=pattern(2 << 20))
    assert resp.status_code == 413 and "Request Entity Too Large" in resp.text
    assert (
        httpx.post(
            f"{proxy.url}/upload", headers={"Host": "small.lab.internal"}, content=pattern(1000)
        ).status_code
        == 201
    )


def test_tls_hosts_redirect_to_https_unless_switched_off(cluster, backend) -> None:
    kube, proxy = cluster
    seed(
        kube,
        service("secure", backend),
        ingress("secure", "secure.lab.internal", "secure", tls=True),
        ingress(
            "plain",
            "plain.lab.internal",
            "secure",
            tls=True,
            annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
        ),
    )
    assert until(routed(proxy, "secure.lab.internal")) and until(routed(proxy, "plain.lab.internal"))
    resp = get(proxy, "secure.lab.internal", "/v2/?a=b")
    assert resp.status_code == 308 and resp.headers["location"] == "https://secure.lab.internal/v2/?a=b"
    assert get(proxy, "plain.lab.internal").status_code == 401


def test_missing_service_and_dead_backend(cluster) -> None:
    kube, proxy = cluster
    dead = free_port()
    seed(
        kube,
        service("dead", dead),
        ingress("ghost", "ghost.lab.internal", "no-such-service"),
        ingress("dead", "dead.lab.internal", "dead"),
    )
    assert until(routed(proxy, "ghost.lab.internal")) and until(routed(proxy, "dead.lab.internal"))
    assert get(proxy, "ghost.lab.internal").status_code == 503
    assert get(proxy, "dead.lab.internal").status_code == 502


def test_changes_in_the_cluster_are_followed(cluster, backend) -> None:
    kube, proxy = cluster
    seed(kube, service("moving", free_port()), ingress("moving", "moving.lab.internal", "moving"))
    assert until(routed(proxy, "moving.lab.internal"))
    assert get(proxy, "moving.lab.internal").status_code == 502
    kube.put(service("moving", backend))  # the Service now points at a live port
    assert until(lambda: get(proxy, "moving.lab.internal").status_code == 401)
    kube.delete("networking.k8s.io/v1", "Ingress", "moving", "apps")
    assert until(lambda: not routed(proxy, "moving.lab.internal")())
    assert get(proxy, "moving.lab.internal").status_code == 404


# -- CLI -----------------------------------------------------------------------------------------------
def test_cli_serves_until_sigterm_and_refuses_a_taken_port(tmp_path) -> None:
    kube = KubeStandIn().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    port = free_port()
    argv = [sys.executable, "-m", "runbook_lab.ingress", "--port", str(port), "--kubeconfig", str(kubeconfig)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert until(lambda: _health(port) == 200, timeout=30), (
            proc.stderr.read() if proc.poll() is not None else ""
        )
        taken = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and "already in use" in taken.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "ingress listening on http://127.0.0.1:" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kube.stop()


def _health(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_lab/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None
