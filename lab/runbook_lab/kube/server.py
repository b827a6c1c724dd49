"""HTTP front of the Kubernetes API stand-in: routing, query options, watch streaming, request log.

Paths served: /version, /api, /api/v1, /apis, /apis/<group>[/<version>], /healthz|/livez|/readyz, and the
resource paths /api/v1/... and /apis/<group>/<version>/... ([namespaces/<ns>/]<plural>[/<name>[/<sub>]], plus
the legacy /watch/ prefix). There is no authentication or authorization: any bearer token is accepted.
Unknown URLs get the apiserver's answers: a generic NotFound Status inside known API prefixes, plain
"404 page not found" elsewhere; a method without a route is a generic 405 MethodNotAllowed Status.
/openapi/v3 is a minimal document (see openapi.py); /openapi/v2 answers 404.
"""

from __future__ import annotations

import contextlib
import json
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..faults import Faults
from ..faults import serve as serve_with_faults
from ..httpbase import LabHandler, LabHTTPServer, serve_in_thread
from . import discovery, openapi
from .errors import STALE_OBJECT, ApiError, bad_request, generic, internal, unsupported_media_type
from .resources import ResourceType
from .selectors import parse_field_selector, parse_label_selector
from .store import Context, DeleteOptions, Store
from .tables import to_table, wants_table

DEFAULT_WATCH_TIMEOUT = 1800  # the apiserver picks a random 30-60 min when timeoutSeconds is absent


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    content_type: str
    status: int


@dataclass
class Route:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str
    watch: bool


class KubeHTTPServer(LabHTTPServer):
    def __init__(self, address: tuple[str, int], standin: KubeStandIn) -> None:
        self.standin = standin
        super().__init__(address, KubeHandler)


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise bad_request(f"invalid boolean value: {value!r}")


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f"invalid value for {name}: {value!r}") from exc


def _fault_answer(handler: KubeHandler, status: int) -> None:
    """An injected failure in the apiserver's own Status shape (k8s.io/apimachinery errors.go)."""
    if status == 409:
        err = ApiError(
            409, "Conflict", f"Operation cannot be fulfilled on {handler.url_path}: {STALE_OBJECT}", {}
        )
    elif status == 503:
        err = ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request", {})
    else:
        err = ApiError(status, "InternalError", f"Internal error occurred: injected fault {status}", {})
    handler._send_json(err.code, err.status())


class KubeHandler(LabHandler):
    server: KubeHTTPServer
    server_version = "kube-apiserver-lab"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.server.standin.store

    def _record(self, status: int) -> None:
        split = urlsplit(self.path)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        self.server.standin._log(RequestRecord(self.command, split.path, split.query, ctype, status))

    def _send_json(self, status: int, body: Any, warnings: list[str] | None = None) -> None:
        headers = {"Cache-Control": "no-cache, private"}
        data = json.dumps(body, separators=(",", ":")).encode()
        self._record(status)  # before the answer leaves, so a client that got it also finds it in the log
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        for w in warnings or []:
            self.send_header("Warning", "299 - " + json.dumps(w))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: int, text: str) -> None:
        self._record(status)
        self.reply(status, text, "text/plain; charset=utf-8")

    def _dispatch(self, method: str) -> None:
        serve_with_faults(self.server.standin.faults, self, lambda: self._serve(method), _fault_answer)

    def _serve(self, method: str) -> None:
        body = b""
        try:
            body = self.read_body()
            self._route(method, body)
        except ApiError as err:
            self._send_json(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a stand-in bug must still answer like a server: 500 Status
            traceback.print_exc()
            err = internal(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                self._send_json(err.code, err.status())

    def _route(self, method: str, body: bytes) -> None:
        path = self.url_path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        registry = self.store.registry
        if path in ("/healthz", "/livez", "/readyz"):
            return self._send_text(200, "ok")
        if path == "/version":
            return self._send_json(200, self.server.standin.version_info)
        if path == "/openapi/v3":
            return self._send_json(200, openapi.index(registry))
        if path.startswith("/openapi/v3/"):
            gv = parts[2:]
            doc = None
            if len(gv) == 2 and gv[0] == "api":
                doc = openapi.group_version_document(registry, "", gv[1])
            elif len(gv) == 3 and gv[0] == "apis":
                doc = openapi.group_version_document(registry, gv[1], gv[2])
            if doc is None:
                return self._send_text(404, "404 page not found\n")
            return self._send_json(200, doc)
        if not parts or parts[0] not in ("api", "apis"):
            return self._send_text(404, "404 page not found\n")
        if parts[0] == "api":
            if len(parts) == 1:
                host, port = self.server.server_address[:2]
                return self._send_json(200, discovery.api_versions(f"{host}:{port}"))
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return self._send_json(200, discovery.api_group_list(registry))
            if len(parts) == 2:
                doc = discovery.api_group(registry, parts[1])
                if doc is None:
                    return self._send_text(404, "404 page not found\n")
                return self._send_json(200, doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            doc = discovery.api_resource_list(registry, group, version)
            if doc is None:
                return self._send_text(404, "404 page not found\n")
            return self._send_json(200, doc)
        if group not in registry.groups() or version not in registry.groups()[group]:
            return self._send_text(404, "404 page not found\n")
        route = self._resolve(group, version, rest)
        self._serve_resource(method, route, body)

    def _resolve(self, group: str, version: str, rest: list[str]) -> Route:
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise generic(404)
        rt = self.store.registry.by_plural(group, version, rest[0])
        if rt is None or (namespace is not None and not rt.namespaced):
            raise generic(404)
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise generic(404)
        if rt.namespaced and namespace is None and name is not None:
            raise generic(404)
        return Route(rt, version, namespace, name, sub, watch)

    def _context(self) -> Context:
        dry = self.query.get("dryRun", [])
        if any(d != "All" for d in dry):
            raise bad_request(f'dryRun: Unsupported value: {dry!r}: supported values: "All"')
        validation = self.q("fieldValidation") or "Warn"
        if validation not in ("Ignore", "Warn", "Strict"):
            raise bad_request(
                f'fieldValidation: Unsupported value: "{validation}": supported values: '
                '"Ignore", "Strict", "Warn"'
            )
        return Context(
            dry_run=bool(dry),
            field_manager=self.q("fieldManager") or None,
            user_agent=self.headers.get("User-Agent", ""),
            field_validation=validation,
        )

    def _json_body(self, body: bytes) -> Any:
        """Decode a request body by Content-Type. Protobuf is not implemented: like a server without that
        serializer, answer 415 naming the accepted types (client-go then falls back to JSON)."""
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ctype in ("application/yaml", "application/apply-patch+yaml"):
            try:
                return yaml.safe_load(body or b"null")
            except yaml.YAMLError as exc:
                raise bad_request(f"error converting YAML to JSON: {exc}") from exc
        if ctype not in ("application/json", "*/*", ""):
            raise unsupported_media_type(["application/json", "application/yaml"])
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    # -- verbs -------------------------------------------------------------------------------------
    def _serve_resource(self, method: str, r: Route, body: bytes) -> None:
        rt, store = r.rt, self.store
        is_collection = r.name is None
        if r.watch or (method == "GET" and is_collection and _bool(self.q("watch"))):
            if method != "GET":
                raise generic(405)
            if not is_collection:
                # /watch/.../name is the legacy single-object watch: a field selector on the name
                return self._watch(r, extra_field=f"metadata.name={r.name}")
            return self._watch(r)
        if r.subresource == "binding":
            if method != "POST":
                raise generic(405)
            ctx = self._context()
            result = store.bind(rt, r.namespace or "", r.name or "", self._json_body(body), ctx)
            return self._send_json(201, result)
        if r.subresource == "finalize":
            if method != "PUT":
                raise generic(405)
            return self._finalize_namespace(r, body)
        if is_collection:
            if method == "GET":
                return self._list(r)
            if method == "POST":
                if rt.namespaced and r.namespace is None:
                    raise generic(405)
                ctx = self._context()
                obj = store.create(rt, r.version, r.namespace, self._json_body(body), ctx)
                return self._send_json(201, obj, ctx.warnings)
            if method == "DELETE":
                options, ctx = self._delete_options(body), self._context()
                ctx.dry_run = ctx.dry_run or options.dry_run
                labels = parse_label_selector(self.q("labelSelector"))
                fields = parse_field_selector(self.q("fieldSelector"))
                rt.check_field_selector([f.field for f in fields])
                result = store.delete_collection(rt, r.version, r.namespace, labels, fields, options, ctx)
                return self._send_json(200, result)
            raise generic(405)
        assert r.name is not None
        if method == "GET":
            return self._send_json(200, self._maybe_table(r, store.get(rt, r.version, r.namespace, r.name)))
        if r.subresource == "status" and method not in ("PUT", "PATCH"):
            raise generic(405)
        if method == "PUT":
            ctx = self._context()
            obj, created = store.update(
                rt, r.version, r.namespace, r.name, self._json_body(body), ctx, r.subresource
            )
            return self._send_json(201 if created else 200, obj, ctx.warnings)
        if method == "PATCH":
            ctx = self._context()
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            obj, created = store.patch(
                rt, r.version, r.namespace, r.name, ctype, body, ctx, r.subresource, _bool(self.q("force"))
            )
            return self._send_json(201 if created else 200, obj, ctx.warnings)
        if method == "DELETE":
            options, ctx = self._delete_options(body), self._context()
            ctx.dry_run = ctx.dry_run or options.dry_run
            return self._send_json(200, store.delete(rt, r.version, r.namespace, r.name, options, ctx))
        raise generic(405)

    def _delete_options(self, body: bytes) -> DeleteOptions:
        raw = self._json_body(body) if body.strip() else {}
        if not isinstance(raw, dict):
            raise bad_request("the body of a delete must be a DeleteOptions object")
        grace = _int(self.q("gracePeriodSeconds"), "gracePeriodSeconds")
        if grace is None and raw.get("gracePeriodSeconds") is not None:
            grace = int(raw["gracePeriodSeconds"])
        return DeleteOptions(
            grace_period_seconds=grace,
            preconditions=raw.get("preconditions") or {},
            propagation_policy=self.q("propagationPolicy") or raw.get("propagationPolicy"),
            dry_run="All" in (raw.get("dryRun") or []),
        )

    def _finalize_namespace(self, r: Route, body: bytes) -> None:
        """PUT namespaces/<name>/finalize: only spec.finalizers change (the namespace controller's last
        step)."""
        ctx = self._context()
        store = self.store
        with store._write():
            current = store.get(r.rt, r.version, None, r.name or "")
            incoming = self._json_body(body)
            if not isinstance(incoming, dict):
                raise bad_request("the body must be a Namespace")
            current.setdefault("spec", {})["finalizers"] = (incoming.get("spec") or {}).get(
                "finalizers"
            ) or []
            obj, _ = store.update(r.rt, r.version, None, r.name or "", current, ctx)
            store._finish_namespace_if_empty(r.name or "")
        self._send_json(200, obj)

    def _maybe_table(self, r: Route, obj: dict[str, Any]) -> dict[str, Any]:
        if wants_table(self.headers.get("Accept", "")):
            return to_table(r.rt, r.version, [obj], obj["metadata"].get("resourceVersion", ""), None)
        return obj

    def _list(self, r: Route) -> None:
        rt = r.rt
        labels = parse_label_selector(self.q("labelSelector"))
        fields = parse_field_selector(self.q("fieldSelector"))
        rt.check_field_selector([f.field for f in fields])
        limit = _int(self.q("limit"), "limit") or 0
        items, rv, token, remaining = self.store.list(
            rt, r.version, r.namespace, labels, fields, limit, self.q("continue")
        )
        if wants_table(self.headers.get("Accept", "")):
            return self._send_json(200, to_table(rt, r.version, items, rv, token))
        if rt.builtin:
            # typed lists are encoded without each item's apiVersion/kind (a long-standing apiserver quirk)
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        self._send_json(
            200,
            {"kind": rt.list_kind, "apiVersion": rt.api_version(r.version), "metadata": meta, "items": items},
        )

    def _watch(self, r: Route, extra_field: str | None = None) -> None:
        rt = r.rt
        labels = parse_label_selector(self.q("labelSelector"))
        selector = ",".join(s for s in (self.q("fieldSelector"), extra_field) if s)
        fields = parse_field_selector(selector)
        rt.check_field_selector([f.field for f in fields])
        timeout = _int(self.q("timeoutSeconds"), "timeoutSeconds")
        standin = self.server.standin
        events = self.store.watch(
            rt,
            r.version,
            r.namespace,
            labels,
            fields,
            self.q("resourceVersion"),
            float(timeout if timeout is not None else DEFAULT_WATCH_TIMEOUT),
            standin._stopping,
            initial_events_end=_bool(self.q("sendInitialEvents")) or False,
        )
        first = next(events, None)  # resolve errors (bad resourceVersion) before the 200 goes out
        self._record(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        as_table = wants_table(
            self.headers.get("Accept", "")
        )  # kubectl get -w: each event carries a Table row
        try:
            if first is not None:
                self._chunk(self._table_event(r, first) if as_table else first)
                for event in events:
                    self._chunk(self._table_event(r, event) if as_table else event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            events.close()

    def _table_event(self, r: Route, event: dict[str, Any]) -> dict[str, Any]:
        obj = event["object"]
        if event["type"] in ("ERROR", "BOOKMARK"):
            return event
        return {
            "type": event["type"],
            "object": to_table(r.rt, r.version, [obj], obj["metadata"].get("resourceVersion", ""), None),
        }

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class KubeStandIn:
    """The Kubernetes API stand-in: start()/stop() an HTTP server over a Store, plus in-process helpers.

    `state_file` keeps objects across restarts (atomic JSON writes); None keeps them in memory only.
    `crds` names the set of Karpenter CRDs installed on a fresh state (see profiles.PROFILES).
    """

    def __init__(
        self,
        state_file: Path | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        crds: str = "all",
        version_info: dict[str, str] | None = None,
    ) -> None:
        self.store = Store(state_file, crds)
        self.host, self.port = host, port
        self.version_info = dict(version_info or discovery.DEFAULT_VERSION)
        self._server: KubeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Bounded: a lab runs for days with controllers polling; tests read the recent tail.
        self._requests: deque[RequestRecord] = deque(maxlen=20000)
        self._requests_lock = threading.Lock()
        self.faults = Faults()  # lab-only: /_lab/faults (runbook_lab.faults)

    # -- lifecycle ---------------------------------------------------------------------------------
    def bind(self) -> KubeHTTPServer:
        """Bind the listening socket (raises OSError when the port is taken) without serving yet."""
        if self._server is None:
            self._server = KubeHTTPServer((self.host, self.port), self)
            self.port = self._server.server_address[1]
        return self._server

    def start(self) -> KubeStandIn:
        server = self.bind()
        self._thread = serve_in_thread(server)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KubeStandIn is not started")
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._stopping.set()
        self.store.close()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(timeout=5)
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubeStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request log -------------------------------------------------------------------------------
    def _log(self, record: RequestRecord) -> None:
        with self._requests_lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # -- in-process API (no HTTP) ------------------------------------------------------------------
    def _type(self, api_version: str, kind: str) -> tuple[ResourceType, str]:
        found = self.store.registry.by_api_version_kind(api_version, kind)
        if found is None:
            raise KeyError(f"{api_version} {kind} is not served")
        return found

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed an object (create or replace, status kept as given), validated like an API write."""
        return self.store.seed(obj)

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        rt, version = self._type(api_version, kind)
        try:
            return self.store.get(rt, version, namespace, name)
        except ApiError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rt, version = self._type(api_version, kind)
        items, _, _, _ = self.store.list(
            rt, version, namespace, parse_label_selector(label_selector), parse_field_selector(field_selector)
        )
        return items

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Delete with API semantics (finalizers, graceful pods); raises ApiError (e.g. 404)."""
        rt, version = self._type(api_version, kind)
        return self.store.delete(
            rt, version, namespace, name, DeleteOptions(grace_period_seconds), Context(field_manager="lab")
        )

    def on_change(self, callback: Any) -> Any:
        """Call callback(event_type, obj) after every committed change (ADDED/MODIFIED/DELETED), in the thread
        that made the change, after the store lock is released. Returns a function that unsubscribes."""
        return self.store.add_hook(callback)
