"""The emulated Nexus's HTTP front: `/service/rest` (the REST API), `/repository/<name>/v2/...` (docker,
handed to the connector half) and the lab-only `/_lab/counters`.

Request handling follows the real filter/servlet order (sonatype/nexus-public: SiestaModule,
NexusBasicHttpAuthenticationFilter, AuthorizationExceptionMapper):
1. Basic credentials, when sent, are checked first: wrong ones get 401 with
   `WWW-Authenticate: BASIC realm="Sonatype Nexus Repository Manager"` on any path. Without credentials the
   request runs as the anonymous user when anonymous access is on, but is never "authenticated".
2. RESTEasy matching: unknown path 404, wrong method 405, wrong content type 415, all with empty bodies.
3. The resource: `@RequiresAuthentication` / `@RequiresPermissions` failures are 403 with an empty body
   (also for missing credentials); then binding, validation and the work itself.
Every response carries `Server: Nexus/<version> (<edition>)`; every Siesta-mapped error carries
`X-Siesta-FaultId`; JSON is written like Jackson's INDENT_OUTPUT.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from runbook_lab.faults import Faults
from runbook_lab.faults import serve as serve_with_faults
from runbook_lab.httpbase import LabHandler, LabHTTPServer
from runbook_lab.nexus import jackson
from runbook_lab.nexus.errors import (
    BASIC_REALM,
    ApiError,
    BadCredentials,
    FaultObject,
    MessageError,
    StatusOnly,
    Unexpected,
    ValidationFailed,
)
from runbook_lab.nexus.requestlog import RequestLog, loggable_body
from runbook_lab.nexus.state import NexusState
from runbook_lab.nexus.validation import Spec, bind_body

REST_PREFIX = "/service/rest"
VALIDATION_ERRORS_TYPE = "application/vnd.siesta-validation-errors-v1+json"
_REPOSITORY_V2 = re.compile(r"^/repository/([^/]+)(/v2(?:/.*)?)$")


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; str/bytes -> as is; None -> empty
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Route:
    method: str
    template: str
    func: Callable[[Call], Response]
    consumes: str | None = None  # "json" | "text"
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.pattern = re.compile(f"^{regex}$")


class Call:
    """One REST request as a resource sees it."""

    def __init__(
        self, app: NexusApp, handler: LabHandler, params: dict[str, str], body: bytes, user: str | None
    ) -> None:
        self.app = app
        self.state: NexusState = app.state
        self.handler = handler
        self.params = params
        self.body = body
        self.user = user  # authenticated user id, None for anonymous/unauthenticated requests
        self.principal = user if user is not None else self.state.anonymous_principal()

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    @property
    def release(self):  # noqa: ANN201 - Release
        return self.state.release

    @property
    def base_url(self) -> str:
        host = self.handler.headers.get("Host") or "{}:{}".format(*self.handler.server.server_address[:2])
        return f"http://{host}"

    def q(self, name: str) -> str | None:
        return self.handler.q(name)

    def permitted(self, permission: str) -> bool:
        return self.principal is not None and self.state.permitted(self.principal, permission)

    def require_authentication(self) -> None:
        if not self.authenticated:
            raise StatusOnly(403)

    def require(self, permission: str, authenticated: bool = True) -> None:
        """`@RequiresAuthentication` (unless `authenticated` is False) and `@RequiresPermissions`."""
        if authenticated:
            self.require_authentication()
        if not self.permitted(permission):
            raise StatusOnly(403)

    def json(self) -> Any:
        """The parsed body; malformed JSON is JsonProcessingExceptionMapper's 400, an empty body is null."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise FaultObject(400, f"Could not process the input: {msg}") from None

    def bind(self, spec: Spec) -> Any:
        """Bind the body to `spec`; a missing body violates the resource's `@NotNull` parameter."""
        raw = self.json()
        if raw is None:
            raise ValidationFailed([("PARAMETER arg0", "must not be null")])
        return bind_body(raw, spec)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class NexusApp:
    """Routes requests to the REST resources, the connector half, and the lab counters."""

    def __init__(
        self, state: NexusState, routes: list[Route], request_log: RequestLog, connectors: Any | None = None
    ) -> None:
        self.state = state
        self.routes = routes
        self.request_log = request_log
        self.connectors = connectors
        self.faults = Faults()

    @property
    def server_header(self) -> str:
        return f"Nexus/{self.state.version} ({self.state.edition})"

    # -- entry --------------------------------------------------------------------------------
    def dispatch(self, handler: LabHandler) -> None:
        serve_with_faults(self.faults, handler, lambda: self._dispatch(handler), _fault_answer)

    def _dispatch(self, handler: LabHandler) -> None:
        path = handler.url_path
        if path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
            self.serve_rest(handler, path[len(REST_PREFIX) :])
            return
        m = _REPOSITORY_V2.match(path)
        if m:
            if self.connectors is None:
                handler.read_body()
                handler.reply(404)
            else:
                self.connectors.serve_path(handler, unquote(m[1]), m[2])
            return
        handler.read_body()
        if path == "/_lab/counters" and handler.command in ("GET", "HEAD"):
            # Lab-only endpoint, NOT part of Nexus: per-repository counters of the docker connectors.
            stats = self.connectors.stats() if self.connectors is not None else {}
            handler.reply_json(200, stats, indent=2)
            return
        # Nexus answers unknown servlet paths with an HTML error page (terraform-provider-nexus#304).
        page = (
            "<html><head><title>404 - Sonatype Nexus Repository</title></head><body><h1>Error 404</h1>"
            "<p>Not Found</p></body></html>"
        )
        handler.reply(404, page, "text/html")

    # -- REST ---------------------------------------------------------------------------------
    def serve_rest(self, handler: LabHandler, path: str) -> None:
        body = handler.read_body()
        secret_text = False
        user: str | None = None
        try:
            user = self._authenticate(handler)
            route, params = self._match(handler.command, path, handler.headers.get("Content-Type"))
            secret_text = route.consumes == "text"
            call = Call(self, handler, params, body, user)
            response = route.func(call)
        except ApiError as err:
            response = self.render_error(err, handler.headers.get("Accept", ""))
        except Exception as exc:  # an emulator bug: answer like Nexus's UnexpectedExceptionMapper
            response = self.render_error(Unexpected(f"python.{type(exc).__name__}", str(exc)), "")
        self._send(handler, response)
        self.request_log.append(
            method=handler.command,
            path=REST_PREFIX + path,
            query=handler.query,
            status=response.status,
            user=user,
            body=loggable_body(body, secret_text),
        )

    def _authenticate(self, handler: LabHandler) -> str | None:
        header = handler.headers.get("Authorization")
        if not header or header[:6].lower() != "basic ":
            return None  # the Basic filter only looks at Basic credentials
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise BadCredentials() from None
        if not self.state.authenticate(user, password):
            raise BadCredentials()
        return user

    def _match(self, method: str, path: str, content_type: str | None) -> tuple[Route, dict[str, str]]:
        wanted = "GET" if method == "HEAD" else method
        candidates = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        if not candidates:
            raise StatusOnly(404)
        for route, m in candidates:
            if route.method == wanted:
                _check_content_type(route, content_type)
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
        raise StatusOnly(405)

    def render_error(self, err: ApiError, accept: str) -> Response:
        fault = {"X-Siesta-FaultId": str(uuid.uuid4())}
        if isinstance(err, BadCredentials):
            return Response(401, headers={"WWW-Authenticate": BASIC_REALM})
        if isinstance(err, StatusOnly):
            return Response(err.status, headers=fault)
        if isinstance(err, ValidationFailed):
            ctype = VALIDATION_ERRORS_TYPE if VALIDATION_ERRORS_TYPE in accept else "application/json"
            return Response(err.status, [{"id": i, "message": m} for i, m in err.errors], ctype, fault)
        if isinstance(err, FaultObject):
            return Response(err.status, {"id": err.id, "message": err.message}, "application/json", fault)
        if isinstance(err, MessageError):
            if self.state.release.at_least("3.49"):
                return Response(err.status, {"id": "*", "message": err.message}, err.content_type, fault)
            return Response(
                err.status, err.message, err.content_type, fault
            )  # <=3.48: the bare quoted string
        if isinstance(err, Unexpected):
            text = f"ERROR: (ID {fault['X-Siesta-FaultId']}) {err.java_class}: {err.message}"
            return Response(500, text, "text/plain", fault)
        return Response(err.status, headers=fault)

    def _send(self, handler: LabHandler, response: Response) -> None:
        body = response.body
        if isinstance(body, (dict, list)):
            data = jackson.dumps(body).encode()
            ctype = response.content_type or "application/json"
        elif isinstance(body, str):
            data, ctype = body.encode(), response.content_type or "application/json"
        else:
            data, ctype = body or b"", response.content_type
        headers = {"X-Content-Type-Options": "nosniff", **response.headers}
        handler.reply(response.status, data, ctype, headers)


def _fault_answer(handler: LabHandler, status: int) -> None:
    """An injected error as a proxy or servlet container in front of Nexus sends it: a short HTML page."""
    handler.reply(status, f"<html><body><h1>{status}</h1></body></html>", "text/html")


def _check_content_type(route: Route, content_type: str | None) -> None:
    """RESTEasy @Consumes: JSON resources take application/json, change-password text/plain; else 415."""
    if route.consumes is None:
        return
    media = (content_type or "").split(";")[0].strip().lower()
    wanted = "application/json" if route.consumes == "json" else "text/plain"
    if media != wanted:
        raise StatusOnly(415)


class NexusHandler(LabHandler):
    """stdlib handler; all methods go through NexusApp.dispatch."""

    server: NexusHTTPServer

    def version_string(self) -> str:
        return self.server.app.server_header

    def do_GET(self) -> None:
        self.server.app.dispatch(self)

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET


class NexusHTTPServer(LabHTTPServer):
    def __init__(self, address: tuple[str, int], app: NexusApp) -> None:
        self.app = app
        super().__init__(address, NexusHandler)
