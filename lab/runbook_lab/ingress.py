"""The lab's ingress controller: a host-based HTTP reverse proxy driven by the cluster's Ingress objects.

Stands in for ingress-nginx (class ``nginx``) in front of the lab cluster. It lists and watches Ingresses and
Services in the Kubernetes stand-in (official client, through a kubeconfig) and routes each request by Host
header and path to the backend Service port -> that Service's targetPort on 127.0.0.1, the lab's stand-in
for the pod network (the Nexus emulator's connectors listen on 127.0.0.1:<connector port>).

Behaviour held to ingress-nginx (kubernetes.github.io/ingress-nginx: user guide "TLS/HTTPS", "Annotations",
"Ingress path matching"; the controller's nginx.tmpl for the proxy headers):
- Ingresses of our class: ``spec.ingressClassName`` or the ``kubernetes.io/ingress.class`` annotation equal to
  the class; Ingresses without a class are taken too (the lab's class acts as the cluster default).
- host rules: exact host, then ``*.domain`` (one label), then rules without host; paths of every Ingress for a
  host are merged; the longest matching path wins, Exact before Prefix; Prefix matches whole path elements;
  ImplementationSpecific is a plain prefix (nginx ``location``).
- no match -> 404 from the default backend (the nginx 404 page).
- a host listed under the Ingress's ``tls`` is redirected to https with 308 unless the Ingress has
  ``nginx.ingress.kubernetes.io/ssl-redirect: "false"``; ``force-ssl-redirect: "true"`` redirects always.
  This proxy serves plain HTTP only (no TLS termination).
- request bodies above ``proxy-body-size`` (default 1m, "0" = unlimited) -> 413, judged on Content-Length.
- ``proxy-read-timeout`` (default 60 s) -> 504 when the backend is silent longer; unreachable backend -> 502;
  unknown Service or a port that cannot be resolved to a number -> 503.
- upstream request headers: the client's, minus hop-by-hop ones, with Host kept and X-Real-IP,
X-Forwarded-For,
  X-Forwarded-Host (the Host header, with its port), X-Forwarded-Port (this proxy's port), X-Forwarded-Proto,
  X-Forwarded-Scheme and X-Scheme set, so Nexus builds its Bearer token realm on the ingress host.
- responses pass through with their headers (WWW-Authenticate, Docker-Content-Digest, ...), minus hop-by-hop
  ones and the backend's Date/Server (nginx sends its own); bodies stream, never buffered.

Lab-only: ``GET /_lab/healthz`` (any host) answers 200 once Ingresses and Services are synced, 503 before;
``GET /_lab/routes`` lists the route table. Not reproduced: TLS termination, canary/rewrite/auth annotations,
endpoints/pod readiness, the default SSL certificate.

CLI: ``python -m runbook_lab.ingress --port 18080 --kubeconfig PATH [--host 127.0.0.1] [--class nginx]``.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runbook_lab.httpbase import LabHandler, LabHTTPServer, run_until_signal, serve_in_thread

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
}
NGINX = "nginx.ingress.kubernetes.io/"
DEFAULT_BODY_SIZE = "1m"
DEFAULT_READ_TIMEOUT_S = 60.0
CHUNK = 1 << 16


def nginx_page(status: int, reason: str) -> str:
    """The error page nginx answers with."""
    title = f"{status} {reason}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def parse_size(text: str) -> int | None:
    """nginx size syntax (``0`` = unlimited, k/m/g suffixes); None for unlimited."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text or "")
    if not m:
        return parse_size(DEFAULT_BODY_SIZE)
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return None if n == 0 else n


@dataclass
class Route:
    namespace: str
    ingress: str
    host: str | None  # the rule's host (None: rule without host)
    path: str
    path_type: str
    service: str
    port: int | str  # Service port number or name
    annotations: dict[str, str]
    tls: bool  # the request host is listed under this Ingress's tls

    def row(self) -> dict[str, Any]:
        return {
            "ingress": f"{self.namespace}/{self.ingress}",
            "host": self.host or "*",
            "path": self.path,
            "pathType": self.path_type,
            "service": self.service,
            "port": self.port,
            "tls": self.tls,
        }


def _host_rank(rule_host: str | None, host: str) -> int | None:
    """0 exact, 1 wildcard, 2 no host; None: no match."""
    if not rule_host:
        return 2
    rule_host = rule_host.lower()
    if rule_host == host:
        return 0
    if (
        rule_host.startswith("*.")
        and host.endswith(rule_host[1:])
        and host.count(".") == rule_host.count(".")
    ):
        return 1
    return None


def _path_match(path_type: str, rule_path: str, path: str) -> bool:
    if path_type == "Exact":
        return path == rule_path
    if path_type == "Prefix":
        if rule_path in ("", "/"):
            return True
        want = [p for p in rule_path.split("/") if p]
        have = [p for p in path.split("/") if p]
        return have[: len(want)] == want
    return path.startswith(rule_path or "/")  # ImplementationSpecific: an nginx location prefix


class RouteTable:
    """Ingresses and Services of the cluster, kept current by the watcher."""

    def __init__(self, ingress_class: str = "nginx"):
        self.ingress_class = ingress_class
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"Ingress": {}, "Service": {}}
        self._lock = threading.Lock()
        self.synced = {"Ingress": threading.Event(), "Service": threading.Event()}

    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._objects[kind] = {_key(o): o for o in items}
        self.synced[kind].set()

    def event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if event_type == "DELETED":
                self._objects[kind].pop(_key(obj), None)
            elif event_type in ("ADDED", "MODIFIED"):
                self._objects[kind][_key(obj)] = obj

    def is_synced(self) -> bool:
        return all(e.is_set() for e in self.synced.values())

    def _ours(self, ing: dict[str, Any]) -> bool:
        cls = (ing.get("spec") or {}).get("ingressClassName") or (
            (ing.get("metadata") or {}).get("annotations") or {}
        ).get("kubernetes.io/ingress.class")
        return cls is None or cls == self.ingress_class

    def routes(self, host: str | None = None) -> list[Route]:
        """Every path rule of our Ingresses (for ``host``: only the rules of its best matching host rank)."""
        with self._lock:
            ingresses = list(self._objects["Ingress"].values())
        out: list[tuple[int, Route]] = []
        for ing in ingresses:
            if not self._ours(ing):
                continue
            meta, spec = ing.get("metadata") or {}, ing.get("spec") or {}
            tls_hosts = {h.lower() for t in spec.get("tls") or [] for h in t.get("hosts") or []}
            for rule in spec.get("rules") or []:
                rank = 0 if host is None else _host_rank(rule.get("host"), host)
                if rank is None:
                    continue
                for p in (rule.get("http") or {}).get("paths") or []:
                    svc = ((p.get("backend") or {}).get("service")) or {}
                    port = svc.get("port") or {}
                    out.append(
                        (
                            rank,
                            Route(
                                meta.get("namespace", "default"),
                                meta.get("name", ""),
                                rule.get("host"),
                                p.get("path") or "/",
                                p.get("pathType") or "ImplementationSpecific",
                                svc.get("name", ""),
                                port.get("number") or port.get("name") or 0,
                                meta.get("annotations") or {},
                                host is not None and host in tls_hosts,
                            ),
                        )
                    )
        if host is None or not out:
            return [r for _, r in out]
        best = min(rank for rank, _ in out)
        return [r for rank, r in out if rank == best]

    def match(self, host: str, path: str) -> Route | None:
        candidates = [r for r in self.routes(host) if _path_match(r.path_type, r.path, path)]
        if not candidates:
            return None
        return max(candidates, key=lambda r: (len(r.path), r.path_type == "Exact"))

    def target_port(self, route: Route) -> int | None:
        """The Service port's targetPort (a number) for the route, or None when it cannot be resolved."""
        with self._lock:
            svc = self._objects["Service"].get((route.namespace, route.service))
        if svc is None:
            return None
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("port") == route.port or (p.get("name") and p.get("name") == route.port):
                target = p.get("targetPort", p.get("port"))
                return target if isinstance(target, int) else None  # a named pod port needs the pod
        return None


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", "default"), meta.get("name", "")


class Watcher:
    """List, then watch from the list's resourceVersion; relist on any error or expiry (an informer)."""

    def __init__(self, kubeconfig: Path, table: RouteTable, watch_timeout_s: int = 30):
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.table = table
        self.timeout = watch_timeout_s
        net, core = client.NetworkingV1Api(self.api), client.CoreV1Api(self.api)
        self.lists = {
            "Ingress": net.list_ingress_for_all_namespaces,
            "Service": core.list_service_for_all_namespaces,
        }
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Watcher:
        for kind in self.lists:
            t = threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        # A watch blocked on a quiet stream ends by its server-side timeout (<= 5 s) or when the API server
        # closes it; the threads are daemons, so stop does not wait for that.
        self._stop.set()
        for t in self._threads:
            t.join(timeout=0.1)
        self.api.close()

    def _run(self, kind: str) -> None:
        from kubernetes import watch

        list_fn = self.lists[kind]
        while not self._stop.is_set():
            try:
                data = json.loads(list_fn(_preload_content=False, _request_timeout=10).data)
                self.table.replace(kind, data.get("items") or [])
                rv = (data.get("metadata") or {}).get("resourceVersion")
                while not self._stop.is_set():
                    w = watch.Watch()
                    for ev in w.stream(
                        list_fn,
                        resource_version=rv,
                        timeout_seconds=min(self.timeout, 5),
                        allow_watch_bookmarks=True,
                        deserialize=False,
                        _request_timeout=self.timeout + 10,
                    ):
                        obj = ev.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if ev.get("type") != "BOOKMARK":
                            self.table.event(kind, ev.get("type", ""), obj)
                        if self._stop.is_set():
                            w.stop()
                            break
            except Exception:  # noqa: BLE001 - API down, 410 Gone, broken stream: relist after a pause
                self._stop.wait(0.5)


class IngressHTTPServer(LabHTTPServer):
    def __init__(self, address: tuple[str, int], proxy: IngressProxy):
        self.proxy = proxy
        super().__init__(address, IngressHandler)


class IngressHandler(LabHandler):
    server_version = "nginx"

    def version_string(self) -> str:
        return self.server_version

    @property
    def proxy(self) -> IngressProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.url_path == "/_lab/healthz":
            synced = self.proxy.table.is_synced()
            self.reply_json(
                200 if synced else 503, {"synced": synced, "routes": len(self.proxy.table.routes())}
            )
            return
        if self.url_path == "/_lab/routes":
            self.reply_json(200, [r.row() for r in self.proxy.table.routes()], indent=1)
            return
        self._proxy()

    def do_HEAD(self) -> None:  # noqa: N802
        self._proxy()

    def do_POST(self) -> None:  # noqa: N802
        self._proxy()

    def do_PUT(self) -> None:  # noqa: N802
        self._proxy()

    def do_PATCH(self) -> None:  # noqa: N802
        self._proxy()

    def do_DELETE(self) -> None:  # noqa: N802
        self._proxy()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._proxy()

    # -- routing -------------------------------------------------------------------------------------
    def _host(self) -> tuple[str, str]:
        raw = (self.headers.get("Host") or "").strip()
        host = raw.lower()
        if host.startswith("["):
            host = host.split("]", 1)[0] + "]"
        else:
            host = host.rsplit(":", 1)[0] if ":" in host else host
        return raw, host

    def _error(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # the unread body would corrupt the next request
            headers = {**(headers or {}), "Connection": "close"}
        self.reply(status, nginx_page(status, reason), "text/html", headers)

    def _proxy(self) -> None:
        raw_host, host = self._host()
        route = self.proxy.table.match(host, self.url_path)
        if route is None:
            self._error(404, "Not Found")
            return
        ann = route.annotations
        redirect = ann.get(NGINX + "force-ssl-redirect") == "true" or (
            route.tls and ann.get(NGINX + "ssl-redirect", "true") != "false"
        )
        if redirect:
            self._error(308, "Permanent Redirect", {"Location": f"https://{host}{self.path}"})
            return
        limit = parse_size(ann.get(NGINX + "proxy-body-size", DEFAULT_BODY_SIZE))
        length = self.headers.get("Content-Length")
        if limit is not None and length and length.isdigit() and int(length) > limit:
            self._error(413, "Request Entity Too Large")
            return
        port = self.proxy.table.target_port(route)
        if port is None:
            self._error(503, "Service Temporarily Unavailable")
            return
        try:
            read_timeout = float(ann.get(NGINX + "proxy-read-timeout", DEFAULT_READ_TIMEOUT_S))
        except ValueError:
            read_timeout = DEFAULT_READ_TIMEOUT_S
        self._forward(raw_host, port, read_timeout)

    # -- forwarding ----------------------------------------------------------------------------------
    def _upstream_headers(self, raw_host: str) -> list[tuple[str, str]]:
        connection_tokens = {t.strip().lower() for t in (self.headers.get("Connection") or "").split(",")}
        headers = [
            (k, v)
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP
            and k.lower() not in connection_tokens
            and not k.lower().startswith("x-forwarded-")
            and k.lower() not in ("x-real-ip", "x-scheme")
        ]
        client_ip = self.client_address[0]
        headers += [
            ("X-Real-IP", client_ip),
            ("X-Forwarded-For", client_ip),
            ("X-Forwarded-Host", raw_host),
            ("X-Forwarded-Port", str(self.proxy.port)),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Scheme", "http"),
            ("X-Scheme", "http"),
        ]
        return headers

    def _body(self) -> Iterator[bytes] | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":

            def chunked() -> Iterator[bytes]:
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()

            return chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None

        def fixed() -> Iterator[bytes]:
            left = length
            while left:
                part = self.rfile.read(min(CHUNK, left))
                if not part:
                    return
                left -= len(part)
                yield part

        return fixed()

    def _forward(self, raw_host: str, port: int, read_timeout: float) -> None:
        url = f"http://{self.proxy.backend_host}:{port}{self.path}"
        body = self._body()
        timeout = httpx.Timeout(connect=5.0, read=read_timeout, write=read_timeout, pool=5.0)
        request = httpx.Request(
            self.command,
            url,
            headers=self._upstream_headers(raw_host),
            content=body,
            extensions={"timeout": timeout.as_dict()},
        )
        try:
            resp = self.proxy.http.send(request, stream=True)
        except httpx.TimeoutException:
            self._error(504, "Gateway Time-out")
            return
        except httpx.HTTPError:
            self._error(502, "Bad Gateway")
            return
        try:
            self._relay(resp)
        finally:
            resp.close()

    def _relay(self, resp: httpx.Response) -> None:
        self.send_response(resp.status_code, resp.reason_phrase or None)
        length = resp.headers.get("content-length")
        for key, value in resp.headers.multi_items():
            if key.lower() not in HOP_BY_HOP and key.lower() not in ("date", "server"):
                self.send_header(key, value)
        no_body = self.command == "HEAD" or resp.status_code in (204, 304) or 100 <= resp.status_code < 200
        chunked = not no_body and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is None:
            self.send_header("Content-Length", "0")
        self.end_headers()
        if no_body:
            return
        try:
            for part in resp.iter_raw(CHUNK):
                if not part:
                    continue
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except httpx.HTTPError:
            self.close_connection = True  # the backend broke off mid-body: the client sees a short read


class IngressProxy:
    """The proxy and its watcher. ``port=0`` picks an ephemeral port (tests)."""

    def __init__(
        self,
        kubeconfig: Path | str,
        port: int = 0,
        host: str = "127.0.0.1",
        ingress_class: str = "nginx",
        backend_host: str = "127.0.0.1",
    ):
        self.kubeconfig = Path(kubeconfig)
        self.host, self.requested_port = host, port
        self.backend_host = backend_host
        self.table = RouteTable(ingress_class)
        self.http = httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=32))
        self.server: IngressHTTPServer | None = None
        self.watcher: Watcher | None = None

    def bind(self) -> IngressHTTPServer:
        if self.server is None:
            self.server = IngressHTTPServer((self.host, self.requested_port), self)
        return self.server

    @property
    def port(self) -> int:
        return self.bind().server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start_watching(self) -> IngressProxy:
        self.watcher = Watcher(self.kubeconfig, self.table).start()
        return self

    def start(self) -> IngressProxy:
        serve_in_thread(self.bind())
        return self.start_watching()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.table.is_synced():
                return True
            time.sleep(0.05)
        return False

    def wait_for_host(self, host: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.table.routes(host.lower()):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.close()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.http.close()

    def __enter__(self) -> IngressProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runbook_lab.ingress",
        description="The lab's ingress controller (routes Ingress hosts to 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument(
        "--class", dest="ingress_class", default="nginx", help="IngressClass served (default nginx)"
    )
    args = parser.parse_args(argv)
    proxy = IngressProxy(args.kubeconfig, args.port, args.host, args.ingress_class)
    try:
        server = proxy.bind()
    except OSError as exc:
        proxy.http.close()
        if exc.errno == errno.EADDRINUSE:
            print(f"ingress: port {args.port} on {args.host} is already in use", file=sys.stderr)
        else:
            print(f"ingress: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    proxy.start_watching()
    print(
        f"ingress listening on {proxy.url} (class {args.ingress_class}, kubeconfig {args.kubeconfig})",
        flush=True,
    )
    run_until_signal([server], on_stop=proxy.close)
    return 0


if __name__ == "__main__":
    sys.exit(main())
