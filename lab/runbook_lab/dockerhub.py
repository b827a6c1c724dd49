"""Docker Hub stand-in: registry-1.docker.io behaviour in front of the lab's docker.io registry.

Two listeners, like the real service:
* the registry port (registry-1.docker.io): every /v2/ request needs a Bearer token, and manifest
  responses carry Docker Hub's pull rate-limit headers; over the limit a manifest GET gets 429;
* the token port (auth.docker.io): `GET /token?service=registry.docker.io&scope=repository:<name>:pull`,
  anonymous or with HTTP Basic credentials of the one configured lab user.

Requests with a valid token are forwarded to the backend (a plain distribution registry) with httpx,
streamed both ways; an optional bandwidth throttle and per-request latency stand in for internet
distance. Lab control endpoints live under /_lab/ on the registry port (clearly not Docker Hub):
GET /_lab/state, POST /_lab/ratelimit/reset, PUT /_lab/config.

Behaviour and its sources:
* Limits: anonymous 100 pulls / 6 h per IPv4 address or IPv6 /64, authenticated (Personal) 200 / 6 h
  (docker/docs content/manuals/docker-hub/usage/pulls.md).
* A pull is a manifest GET; HEAD (version check) does not count; "a pull for a multi-arch image will
  count as one pull for each different architecture", so the GET of an index / manifest list is not
  counted by itself, only the per-platform manifest GETs (same page). Blobs are not counted.
* Headers, lower-case as served: `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 0;w=21600`,
  `docker-ratelimit-source: <IPv4 | IPv6 /64 | account id>` (docker/docs pulls.md; docker/hub-feedback#2464).
  No rate-limit headers at all means unlimited (docker/docs pulls.md), which is what limit=None gives.
* 401 challenge and body: `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
  scope="repository:library/busybox:pull"` and `{"errors":[{"code":"UNAUTHORIZED","message":
  "authentication required","detail":[{"Type":"repository","Class":"","Name":...,"Action":"pull"}]}]}`
  (pulp/pulp_container#1139); on /v2/ itself `"detail":null` (decentralized-identity/universal-registrar#61);
  a token without the needed scope gets `error="insufficient_scope"` (bazelbuild/rules_docker#31).
* 429 body `{"errors":[{"code":"TOOMANYREQUESTS","message":...}]}` (apache/incubator-kie#5081). Message
  as served since 2025 to anonymous clients: "You have reached your unauthenticated pull rate limit.
  https://www.docker.com/increase-rate-limit" (lambdaclass/ethrex#2633, docker/hub-feedback#2464,
  hystax/optscale#845). For authenticated clients the long-standing text "You have reached your pull
  rate limit. You may increase the limit by authenticating and upgrading:
  https://www.docker.com/increase-rate-limit" is used (the registry serves `increase-rate-limit`; the
  docs page prints `increase-rate-limits`). The exact current authenticated wording was not found.
* Token response `{"token","access_token","expires_in":300,"issued_at"}`; wrong credentials give 401
  `{"details":"incorrect username or password"}` (what docker prints as "unauthorized: incorrect
  username or password"). Tokens here are HS256 JWTs signed per process; real ones are RS256 JWTs.
  Clients treat them as opaque.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import dataclasses
import errno
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx

from runbook_lab.httpbase import LabHandler, LabHTTPServer, run_until_signal, serve_in_thread

SERVICE = "registry.docker.io"
TOKEN_TTL_S = 300
# The lab account (name:password) when not given with --user; `runbook lab up` sets it.
USER_ENV = "RUNBOOK_LAB_DOCKERHUB_USER"
ANONYMOUS_LIMIT_MESSAGE = (
    "You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"
)
AUTHENTICATED_LIMIT_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating "
    "and upgrading: https://www.docker.com/increase-rate-limit"
)
INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
BODY_CHUNK = 64 * 1024
_REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")


# -- configuration -----------------------------------------------------------------------------
@dataclasses.dataclass
class HubConfig:
    """Run-time knobs. A limit of None means unlimited (no rate-limit headers, like a paid account)."""

    limit: int | None = 100
    auth_limit: int | None = 200
    window_s: int = 21600
    throttle_bytes_per_s: int | None = None
    latency_ms: float = 0.0

    def updated(self, changes: dict[str, Any]) -> HubConfig:
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}; known: {sorted(fields)}")
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        for name in ("limit", "auth_limit", "throttle_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or null, got {value!r}")
        if self.throttle_bytes_per_s == 0:
            raise ValueError("throttle_bytes_per_s must be positive (null turns the throttle off)")
        if not isinstance(self.window_s, int) or self.window_s <= 0:
            raise ValueError(f"window_s must be a positive integer, got {self.window_s!r}")
        if not isinstance(self.latency_ms, int | float) or self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms!r}")


# -- pull accounting ---------------------------------------------------------------------------
class PullLedger:
    """Counted pulls per rate-limit source in a sliding window (timestamps from an injectable clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._pulls: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, source: str, window_s: float) -> collections.deque[float]:
        pulls = self._pulls.setdefault(source, collections.deque())
        cutoff = self._clock() - window_s
        while pulls and pulls[0] <= cutoff:
            pulls.popleft()
        return pulls

    def used(self, source: str, window_s: float) -> int:
        with self._lock:
            return len(self._prune(source, window_s))

    def remaining(self, source: str, limit: int, window_s: float) -> int:
        return max(limit - self.used(source, window_s), 0)

    def try_take(self, source: str, limit: int, window_s: float) -> bool:
        """Record one pull if the budget allows it; False means the client is over its limit."""
        with self._lock:
            pulls = self._prune(source, window_s)
            if len(pulls) >= limit:
                return False
            pulls.append(self._clock())
            return True

    def give_back(self, source: str) -> None:
        """Undo the latest try_take (the GET turned out not to be a counted pull)."""
        with self._lock:
            pulls = self._pulls.get(source)
            if pulls:
                pulls.pop()

    def reset(self, source: str | None = None) -> None:
        with self._lock:
            if source is None:
                self._pulls.clear()
            else:
                self._pulls.pop(source, None)

    def sources(self) -> list[str]:
        with self._lock:
            return sorted(self._pulls)


# -- bandwidth ---------------------------------------------------------------------------------
class Throttle:
    """Paces one response body to `rate` bytes/s.

    After each chunk is written, sleep for as long as the stream is ahead of schedule
    (bytes sent / rate versus time since the start), so the average rate never exceeds `rate`.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self.sent = 0

    def pace(self, nbytes: int) -> float:
        self.sent += nbytes
        ahead = self.sent / self.rate - (self._clock() - self._start)
        if ahead > 0:
            self._sleep(ahead)
            return ahead
        return 0.0


# -- tokens ------------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_scopes(values: list[str]) -> list[dict[str, Any]]:
    """['repository:library/nginx:pull,push'] -> [{'type': 'repository', 'name': ..., 'actions': [...]}]"""
    out = []
    for value in values:
        for scope in value.split():
            typ, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if typ and name and actions:
                out.append({"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]})
    return out


@dataclasses.dataclass
class TokenClaims:
    subject: str  # "" for anonymous, else the account id
    access: list[dict[str, Any]]

    @property
    def authenticated(self) -> bool:
        return bool(self.subject)

    def allows(self, repository: str, action: str) -> bool:
        return any(
            a.get("type") == "repository" and a.get("name") == repository and action in a.get("actions", [])
            for a in self.access
        )


class TokenIssuer:
    """auth.docker.io-shaped bearer tokens: JWTs with an `access` claim, HMAC-signed with a per-process
    key."""

    def __init__(
        self, service: str = SERVICE, ttl_s: int = TOKEN_TTL_S, wall_clock: Callable[[], float] = time.time
    ):
        self.service = service
        self.ttl_s = ttl_s
        self._wall_clock = wall_clock
        self._key = secrets.token_bytes(32)

    def issue(self, subject: str, access: list[dict[str, Any]], audience: str) -> dict[str, Any]:
        now = int(self._wall_clock())
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "iss": "auth.docker.io",
            "sub": subject,
            "aud": audience,
            "exp": now + self.ttl_s,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(12),
            "access": access,
        }
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        token = (
            signing_input
            + "."
            + _b64url(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())
        )
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.ttl_s, "issued_at": issued_at}

    def verify(self, token: str) -> TokenClaims | None:
        try:
            signing_input, _, signature = token.rpartition(".")
            expected = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64url(signature)):
                return None
            claims = json.loads(_unb64url(signing_input.split(".")[1]))
        except (ValueError, IndexError, binascii.Error):
            return None
        if claims.get("aud") != self.service or claims.get("exp", 0) <= self._wall_clock():
            return None
        return TokenClaims(claims.get("sub", ""), claims.get("access", []))


def account_id(username: str) -> str:
    """A stable account id for the lab user (Docker Hub reports a UUID-style id, not the name)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://hub.docker.com/u/{username}"))


def source_for_ip(ip: str) -> str:
    """Anonymous pulls are charged per IPv4 address or per IPv6 /64 (shown as its network address)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)
    return str(addr)


def _error_body(code: str, message: str, detail: Any = dataclasses.MISSING) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not dataclasses.MISSING:
        error["detail"] = detail
    return {"errors": [error]}


# -- the stand-in ------------------------------------------------------------------------------
class DockerHub:
    """Registry + token service. `start()` binds both ports (0 = ephemeral) and serves in threads."""

    def __init__(
        self,
        backend_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_port: int = 0,
        config: HubConfig | None = None,
        user: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.backend_url = backend_url.rstrip("/")
        self.host = host
        self._ports = (port, token_port)
        self.config = config or HubConfig()
        self.config.validate()
        self.user = user
        self.clock = clock
        self.sleep = sleep
        self.ledger = PullLedger(clock)
        self.tokens = TokenIssuer()
        self.counters: collections.Counter[str] = collections.Counter()
        self._counter_lock = threading.Lock()
        self.backend: httpx.Client | None = None
        self.registry_server: LabHTTPServer | None = None
        self.token_server: LabHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._bound = False

    # -- life cycle --------------------------------------------------------------------------
    def bind(self) -> None:
        """Open both listeners; raises OSError (EADDRINUSE) if a port is taken."""
        registry = LabHTTPServer((self.host, self._ports[0]), _RegistryHandler)
        try:
            token = LabHTTPServer((self.host, self._ports[1]), _TokenHandler)
        except OSError:
            registry.server_close()
            raise
        registry.hub = token.hub = self  # type: ignore[attr-defined]
        self.registry_server, self.token_server = registry, token
        self._ports = (registry.server_address[1], token.server_address[1])
        self._bound = True
        self.backend = httpx.Client(
            timeout=httpx.Timeout(300.0, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def start(self) -> DockerHub:
        if self.registry_server is None:
            self.bind()
        assert self.registry_server and self.token_server
        self._threads = [serve_in_thread(self.registry_server), serve_in_thread(self.token_server)]
        return self

    def stop(self) -> None:
        servers = [s for s in (self.registry_server, self.token_server) if s is not None]
        if self._threads:
            # shutdown() waits up to one poll interval; stop both listeners at once
            stoppers = [threading.Thread(target=s.shutdown) for s in servers]
            for t in stoppers:
                t.start()
            for t in stoppers:
                t.join()
        for s in servers:
            s.server_close()
        self._threads = []
        self.registry_server = self.token_server = None
        self.close_backend()

    def close_backend(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> DockerHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The registry port (stays known after stop(), for reports)."""
        assert self._bound, "not bound yet: call start()"
        return self._ports[0]

    @property
    def token_port(self) -> int:
        assert self._bound, "not bound yet: call start()"
        return self._ports[1]

    def _base(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self._base(self.port)

    @property
    def token_url(self) -> str:
        return self._base(self.token_port) + "/token"

    # -- accounting ----------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] += n

    def limit_for(self, claims: TokenClaims) -> int | None:
        return self.config.auth_limit if claims.authenticated else self.config.limit

    def ratelimit_headers(self, source: str, limit: int | None) -> dict[str, str]:
        if limit is None:
            return {}
        w = self.config.window_s
        remaining = self.ledger.remaining(source, limit, w)
        return {
            "ratelimit-limit": f"{limit};w={w}",
            "ratelimit-remaining": f"{remaining};w={w}",
            "docker-ratelimit-source": source,
        }

    def state(self) -> dict[str, Any]:
        cfg = self.config
        sources = {}
        for source in self.ledger.sources():
            authenticated = not _looks_like_ip(source)
            limit = cfg.auth_limit if authenticated else cfg.limit
            used = self.ledger.used(source, cfg.window_s)
            sources[source] = {
                "authenticated": authenticated,
                "used": used,
                "limit": limit,
                "remaining": None if limit is None else max(limit - used, 0),
                "window_s": cfg.window_s,
            }
        with self._counter_lock:
            counters = dict(self.counters)
        return {
            "config": dataclasses.asdict(cfg),
            "counters": counters,
            "sources": sources,
            "backend": self.backend_url,
            "realm": self.token_url,
            "service": SERVICE,
            "user": account_id(self.user[0]) if self.user else None,
        }


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class _HubHandler(LabHandler):
    server_version = "lab-dockerhub"

    @property
    def hub(self) -> DockerHub:
        return self.server.hub  # type: ignore[attr-defined]

    def _add_latency(self) -> None:
        latency = self.hub.config.latency_ms
        if latency > 0:
            self.hub.sleep(latency / 1000.0)

    def _has_unread_body(self) -> bool:
        return (
            bool(int(self.headers.get("Content-Length") or 0))
            or self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        )

    def _json_error(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        if self._has_unread_body():
            self.close_connection = True  # the body is not read; the connection cannot be reused
        all_headers = {"Docker-Distribution-Api-Version": "registry/2.0", **(headers or {})}
        self.reply(status, json.dumps(body, separators=(",", ":")), "application/json", all_headers)


class _TokenHandler(_HubHandler):
    """auth.docker.io: GET /token (and the OAuth2 POST /token password grant)."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._add_latency()
        if self.url_path != "/token":
            self.reply_json(404, {"details": "not found"})
            return
        subject = self._authenticate(self.headers.get("Authorization"))
        if subject is None:
            return
        service = self.q("service") or ""
        self._issue(subject, parse_scopes(self.query.get("scope", [])), service, oauth=False)

    def do_POST(self) -> None:  # noqa: N802
        self._add_latency()
        if self.url_path != "/token":
            self.reply_json(404, {"details": "not found"})
            return
        form = {k: v[0] for k, v in parse_qs(self.read_body().decode(errors="replace")).items()}
        if form.get("grant_type") != "password":
            self.reply_json(400, {"error": "unsupported_grant_type"})
            return
        basic = (
            "Basic "
            + base64.b64encode(f"{form.get('username', '')}:{form.get('password', '')}".encode()).decode()
        )
        subject = self._authenticate(basic)
        if subject is None:
            return
        self._issue(subject, parse_scopes([form.get("scope", "")]), form.get("service", ""), oauth=True)

    def _authenticate(self, header: str | None) -> str | None:
        """'' for anonymous, the account id for the lab user; None after replying 401."""
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name, password = "", ""
            user = self.hub.user
            if user and hmac.compare_digest(name, user[0]) and hmac.compare_digest(password, user[1]):
                return account_id(name)
        self.hub.count("token_denied")
        self.reply_json(401, {"details": "incorrect username or password"})
        return None

    def _issue(self, subject: str, requested: list[dict[str, Any]], service: str, oauth: bool) -> None:
        granted = []
        for scope in requested:
            if scope["type"] != "repository":
                continue  # registry:catalog:* and the like are not granted on Docker Hub
            allowed = (
                {"pull", "push"} if subject else {"pull"}
            )  # lab user may push anywhere; anonymous only pulls
            actions = [a for a in scope["actions"] if a in allowed]
            if actions:
                granted.append({"type": "repository", "name": scope["name"], "actions": actions})
        body = self.hub.tokens.issue(subject, granted, service)
        self.hub.count("tokens_issued")
        if oauth:
            self.hub.count("tokens_issued_oauth")
            scope_text = " ".join(f"repository:{g['name']}:{','.join(g['actions'])}" for g in granted)
            body = {
                "access_token": body["access_token"],
                "scope": scope_text,
                "expires_in": body["expires_in"],
                "issued_at": body["issued_at"],
            }
        self.reply_json(200, body)


class _RegistryHandler(_HubHandler):
    """registry-1.docker.io in front of the backend registry, plus /_lab/ control endpoints."""

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        try:
            if self.url_path.startswith("/_lab/"):
                self._control()
                return
            self._add_latency()
            self._registry()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-response

    # -- Docker Hub ----------------------------------------------------------------------------
    def _claims(self) -> TokenClaims | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self.hub.tokens.verify(token.strip())

    def _challenge(self, scope: str | None = None, insufficient: bool = False) -> str:
        value = f'Bearer realm="{self.hub.token_url}",service="{SERVICE}"'
        if scope:
            value += f',scope="{scope}"'
        if insufficient:
            value += ',error="insufficient_scope"'
        return value

    def _registry(self) -> None:
        hub = self.hub
        claims = self._claims()
        path = self.url_path
        match = _REPO_PATH.match(path)
        if match is None:
            if claims is None:
                hub.count("unauthorized")
                self._json_error(
                    401,
                    _error_body("UNAUTHORIZED", "authentication required", None),
                    {"WWW-Authenticate": self._challenge()},
                )
                return
            self._forward(None)
            return

        name, kind = match.group("name"), match.group("kind")
        action = "pull" if self.command in ("GET", "HEAD") else "push"
        source = claims.subject if claims and claims.authenticated else source_for_ip(self.client_address[0])
        if claims is None or not claims.allows(name, action):
            actions = ["pull"] if action == "pull" else ["pull", "push"]
            detail = [{"Type": "repository", "Class": "", "Name": name, "Action": a} for a in actions]
            hub.count("unauthorized")
            self._json_error(
                401,
                _error_body("UNAUTHORIZED", "authentication required", detail),
                {
                    "WWW-Authenticate": self._challenge(
                        f"repository:{name}:{','.join(actions)}", claims is not None
                    ),
                    "docker-ratelimit-source": source,
                },
            )
            return

        if kind != "manifests" or self.command not in ("GET", "HEAD"):
            if kind == "blobs" and self.command in ("GET", "HEAD"):
                hub.count(f"blob_{self.command.lower()}")
            self._forward(None)
            return

        limit = hub.limit_for(claims)
        window = hub.config.window_s
        if self.command == "HEAD":
            hub.count("manifest_head")
            self._forward(lambda _resp: hub.ratelimit_headers(source, limit))
            return

        hub.count("manifest_get")
        if limit is not None and not hub.ledger.try_take(source, limit, window):
            hub.count("too_many_requests")
            message = AUTHENTICATED_LIMIT_MESSAGE if claims.authenticated else ANONYMOUS_LIMIT_MESSAGE
            self._json_error(
                429, _error_body("TOOMANYREQUESTS", message), hub.ratelimit_headers(source, limit)
            )
            return

        def settle(resp: httpx.Response) -> dict[str, str]:
            media_type = resp.headers.get("content-type", "").split(";")[0].strip()
            counted = resp.status_code == 200 and media_type not in INDEX_MEDIA_TYPES
            if limit is not None and not counted:
                hub.ledger.give_back(source)
            if counted:
                hub.count("pulls_counted")
            return hub.ratelimit_headers(source, limit)

        self._forward(
            settle, on_failure=(lambda: hub.ledger.give_back(source)) if limit is not None else None
        )

    # -- forwarding ----------------------------------------------------------------------------
    def _request_body(self) -> Iterator[bytes] | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        return self._sized_body(length)

    def _sized_body(self, length: int) -> Iterator[bytes]:
        left = length
        while left:
            chunk = self.rfile.read(min(left, BODY_CHUNK))
            if not chunk:
                raise ConnectionResetError("client closed the connection mid-body")
            left -= len(chunk)
            yield chunk

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._sized_body(size)
            self.rfile.readline()

    def _forward(
        self,
        extra_headers: Callable[[httpx.Response], dict[str, str]] | None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        hub = self.hub
        backend = hub.backend
        assert backend is not None, "DockerHub is not started"
        headers = [
            (k, v)
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"
        ]
        # Host stays the client's, so upload Locations the backend builds point back at this proxy
        request = backend.build_request(
            self.command, hub.backend_url + self.path, headers=headers, content=self._request_body()
        )
        try:
            resp = backend.send(request, stream=True)
        except httpx.TransportError as e:
            if on_failure:
                on_failure()
            hub.count("backend_errors")
            self.close_connection = True
            self._json_error(503, _error_body("UNAVAILABLE", "service unavailable", str(e)))
            return
        try:
            extra = extra_headers(resp) if extra_headers else {}
            self.send_response(resp.status_code)
            length = resp.headers.get("content-length")
            for key, value in resp.headers.multi_items():
                if key.lower() not in HOP_BY_HOP and key.lower() not in ("date", "server"):
                    self.send_header(key, value)
            for key, value in extra.items():
                self.send_header(key, value)
            no_body = (
                self.command == "HEAD" or resp.status_code in (204, 304) or 100 <= resp.status_code < 200
            )
            chunked = not no_body and length is None
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not no_body:
                self._stream_body(resp, chunked)
        finally:
            resp.close()

    def _stream_body(self, resp: httpx.Response, chunked: bool) -> None:
        hub = self.hub
        rate = hub.config.throttle_bytes_per_s
        throttle = Throttle(rate, hub.clock, hub.sleep) if rate else None
        sent = 0
        try:
            for chunk in resp.iter_raw(BODY_CHUNK):
                if not chunk:
                    continue
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                sent += len(chunk)
                if throttle:
                    throttle.pace(len(chunk))
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except httpx.TransportError:
            self.close_connection = True  # backend broke mid-body; the client sees a short read
        finally:
            hub.count("bytes_sent", sent)

    # -- lab control ---------------------------------------------------------------------------
    def _control(self) -> None:
        hub = self.hub
        path, method = self.url_path, self.command
        if path == "/_lab/state" and method == "GET":
            self.reply_json(200, hub.state(), indent=1)
        elif path == "/_lab/ratelimit/reset" and method == "POST":
            body = self.read_body()
            try:
                source = json.loads(body).get("source") if body.strip() else None
            except (ValueError, AttributeError):
                self.reply_json(400, {"error": 'body must be a JSON object like {"source": "127.0.0.1"}'})
                return
            hub.ledger.reset(source)
            self.reply_json(200, hub.state(), indent=1)
        elif path == "/_lab/config" and method == "PUT":
            try:
                changes = json.loads(self.read_body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                hub.config = hub.config.updated(changes)
            except (ValueError, TypeError) as e:
                self.reply_json(400, {"error": str(e)})
                return
            self.reply_json(200, dataclasses.asdict(hub.config))
        else:
            self.read_body()
            self.reply_json(
                404,
                {
                    "error": f"no lab endpoint {method} {path}",
                    "endpoints": ["GET /_lab/state", "POST /_lab/ratelimit/reset", "PUT /_lab/config"],
                },
            )


# -- command line ------------------------------------------------------------------------------
def _optional_limit(text: str) -> int | None:
    value = int(text)
    return None if value < 0 else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runbook_lab.dockerhub",
        description="Docker Hub stand-in (registry + token service) for the lab.",
    )
    p.add_argument(
        "--port", type=int, required=True, help="registry port (registry-1.docker.io); 0 = any free port"
    )
    p.add_argument("--token-port", type=int, required=True, help="token service port (auth.docker.io)")
    p.add_argument(
        "--backend", required=True, help="URL of the docker.io stand-in registry, e.g. http://127.0.0.1:15001"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--limit",
        type=_optional_limit,
        default=100,
        help="anonymous pulls per window per source (default 100; negative = unlimited, no headers)",
    )
    p.add_argument(
        "--auth-limit",
        type=_optional_limit,
        default=200,
        help="authenticated pulls per window per account (default 200; negative = unlimited)",
    )
    p.add_argument(
        "--window", type=int, default=21600, help="rate-limit window in seconds (default 21600 = 6 h)"
    )
    p.add_argument(
        "--throttle-bytes-per-s", type=int, default=None, help="cap each response body at this rate"
    )
    p.add_argument("--latency-ms", type=float, default=0.0, help="added delay per request")
    p.add_argument(
        "--user",
        # `lab up` passes it in the environment: argv is readable by every local user (ps, /proc)
        default=os.environ.get(USER_ENV) or None,
        help=f"lab account as name:password (Basic auth at the token service; default: env {USER_ENV})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    user = None
    if args.user:
        name, sep, password = args.user.partition(":")
        if not sep or not name:
            print("dockerhub: --user must look like name:password", file=sys.stderr)
            return 2
        user = (name, password)
    try:
        config = HubConfig(
            limit=args.limit,
            auth_limit=args.auth_limit,
            window_s=args.window,
            throttle_bytes_per_s=args.throttle_bytes_per_s or None,
            latency_ms=args.latency_ms,
        )
        hub = DockerHub(
            args.backend, host=args.host, port=args.port, token_port=args.token_port, config=config, user=user
        )
    except ValueError as e:
        print(f"dockerhub: {e}", file=sys.stderr)
        return 2
    try:
        hub.bind()
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(
                f"dockerhub: cannot listen on {args.host} port {args.port} or {args.token_port}: "
                "address already in use",
                file=sys.stderr,
            )
            return 2
        raise
    print(f"dockerhub: registry {hub.url} token {hub.token_url} backend {hub.backend_url}", flush=True)
    assert hub.registry_server and hub.token_server
    run_until_signal([hub.registry_server, hub.token_server], on_stop=hub.close_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
