"""Docker connectors of the Nexus 3 emulator: the Docker Registry HTTP API v2 as Nexus serves it.

Where it is served (Nexus docs "Docker Repository Connectors", help.sonatype.com):
- on a repository's own connector port (`docker.httpPort`) at `/v2/...`; Nexus starts a Jetty connector as
  soon as the port is set (nexus-public#565) and logs a bind failure without stopping;
- on the main port at `/repository/<name>/v2/...` (NP NexusRequestCustomizer; the main server calls
  `serve_path`).

Per request: identify the caller (v2auth), check read permission on the addressed repository, then answer
from a proxy's pull-through cache (dockercache) or, for a group, from its members in `memberNames` order,
first answer wins (NP GroupHandler.getFirst). Only GET and HEAD are served on proxies and groups.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from runbook_lab.httpbase import LabHandler, LabHTTPServer, serve_in_thread
from runbook_lab.nexus import hosted
from runbook_lab.nexus.dockercache import (
    COUNTER_FIELDS,
    DIGEST_RE,
    IMAGE_NAME_RE,
    TAG_RE,
    CachedBlob,
    LiveBlob,
    Manifest,
    ProxyCache,
    RepoCounters,
)
from runbook_lab.nexus.v2auth import (
    API_VERSION_HEADERS,
    BASIC_CHALLENGE,
    UNAUTHORIZED_MESSAGE,
    Caller,
    TokenStore,
    challenge,
    identify,
    may_read,
    parse_authorization,
    registry_errors,
    token_realm,
)

log = logging.getLogger(__name__)

_CONTENT_RE = re.compile(r"^/v2/(?P<image>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_UPLOAD_RE = re.compile(r"^/v2/.+/blobs/uploads(/.*)?$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
TOKENS_FILE = "@docker-tokens.json"  # `@` cannot start a repository name, so no clash with cache dirs


class DockerState(Protocol):
    """The part of NexusState (lab/runbook_lab/nexus/state.py) the connectors read."""

    version: str
    edition: str

    def docker_repos(self) -> list[dict[str, Any]]: ...
    def repo_config(self, name: str) -> dict[str, Any] | None: ...
    def authenticate(self, user: str, password: str) -> bool: ...
    def anonymous_enabled(self) -> bool: ...
    def realm_active(self, realm_id: str) -> bool: ...
    def can(self, user_id: str | None, repo: str, action: str) -> bool: ...
    def eula_blocks_access(self) -> bool: ...
    def record_component(self, repo: str, name: str, version: str, assets: list[dict[str, Any]]) -> None: ...


class _ConnectorServer(LabHTTPServer):
    """One repository's connector. Tracks open connections so stopping it also drops keep-alive ones,
    as stopping a Jetty connector does."""

    def __init__(self, address: tuple[str, int], manager: ConnectorManager, repo_name: str) -> None:
        self.manager = manager
        self.repo_name = repo_name
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _ConnectorHandler)

    def get_request(self):  # type: ignore[override]
        conn, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(conn)
        return conn, addr

    def shutdown_request(self, request):  # type: ignore[override]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _ConnectorHandler(LabHandler):
    server: _ConnectorServer

    def version_string(self) -> str:
        return self.server.manager.server_header

    def _route(self) -> None:
        self.server.manager._dispatch(self, self.server.repo_name, self.url_path, mount="")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _route


class ConnectorManager:
    """Connector listeners and registry request handling for every docker repository of a NexusState."""

    def __init__(
        self,
        state: DockerState,
        cache_dir: Path,
        host: str = "127.0.0.1",
        *,
        base_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.cache_dir = Path(cache_dir)
        self.host = host
        self.base_url = base_url.rstrip("/") if base_url else None  # for component downloadUrls
        self.tokens = TokenStore(self.cache_dir / TOKENS_FILE)
        self.server_header = f"Nexus/{state.version} ({state.edition})"
        self._clock = clock
        self._lock = threading.RLock()
        self._listeners: dict[str, _ConnectorServer] = {}
        self._bind_failures: dict[str, str] = {}
        self._caches: dict[str, ProxyCache] = {}
        self._counters: dict[str, RepoCounters] = {}
        self._recorded: set[tuple[str, str, str, str]] = set()
        self._user_agent = (
            f"Nexus/{state.version} ({state.edition}; {platform.system()}; {platform.release()}; "
            f"{platform.machine()}; Python {platform.python_version()})"
        )

    # -- listeners ----------------------------------------------------------------------------------
    def sync(self) -> None:
        """Make the listeners match the docker repositories' `docker.httpPort` values."""
        with self._lock:
            repos = {r["name"]: r for r in self.state.docker_repos()}
            wanted: dict[str, int] = {}
            for name, repo in repos.items():
                port = (repo.get("docker") or {}).get("httpPort")
                if port:
                    wanted[name] = int(port)
            for name, server in list(self._listeners.items()):
                if wanted.get(name) != server.server_address[1]:
                    server.stop()
                    del self._listeners[name]
                    log.info("Stopped docker connector of repository %s", name)
            for name in list(self._bind_failures):
                if name not in wanted:
                    del self._bind_failures[name]
            for name, port in wanted.items():
                if name not in self._listeners:
                    self._start_listener(name, port)
            hosted.forget(self.cache_dir, {n for n, r in repos.items() if r.get("type") == "hosted"})
            for name in list(self._caches):
                if repos.get(name, {}).get("type") != "proxy":
                    # Nexus deletes a repository's content with the repository.
                    self._caches.pop(name).close()
                    shutil.rmtree(self.cache_dir / name, ignore_errors=True)

    def _start_listener(self, name: str, port: int) -> None:
        try:
            server = _ConnectorServer((self.host, port), self, name)
        except OSError as exc:
            # What Nexus logs when Jetty cannot bind a connector; the repository stays, no connector.
            log.error(
                "FAILED ServerConnector{HTTP/1.1, (http/1.1)}{%s:%d} for repository %s: "
                "java.net.BindException: %s",
                self.host,
                port,
                name,
                exc.strerror or exc,
            )
            self._bind_failures[name] = f"{self.host}:{port}: {exc.strerror or exc}"
            return
        serve_in_thread(server)
        self._listeners[name] = server
        self._bind_failures.pop(name, None)
        log.info("Started docker connector of repository %s on %s:%d", name, self.host, port)

    def ports(self) -> dict[str, int]:
        """Repository -> port of each running connector."""
        with self._lock:
            return {name: s.server_address[1] for name, s in self._listeners.items()}

    def bind_failures(self) -> dict[str, str]:
        """Repository -> reason, for connectors that could not bind (retried on the next sync)."""
        with self._lock:
            return dict(self._bind_failures)

    def close(self) -> None:
        with self._lock:
            for server in self._listeners.values():
                server.stop()
            self._listeners.clear()
            for cache in self._caches.values():
                cache.close()
            self._caches.clear()

    # -- stats ------------------------------------------------------------------------------------
    def counters(self, repo: str) -> RepoCounters:
        with self._lock:
            return self._counters.setdefault(repo, RepoCounters())

    def stats(self) -> dict[str, dict[str, int]]:
        """Per repository: requests, manifest_requests, blob_requests, cache_hits, cache_misses,
        upstream_requests, upstream_bytes, bytes_served. A request answered through a group counts at
        the group and at the member that served it; cache and upstream counts also at the member."""
        names = {r["name"] for r in self.state.docker_repos()}
        with self._lock:
            names |= set(self._counters)
        return {
            n: self._counters[n].snapshot() if n in self._counters else dict.fromkeys(COUNTER_FIELDS, 0)
            for n in sorted(names)
        }

    # -- request entry points ---------------------------------------------------------------------------
    def serve_path(self, handler: LabHandler, repo_name: str, subpath: str) -> None:
        """`/repository/<repo_name>/v2/...` on Nexus's main port; `subpath` starts with "/v2"."""
        self._dispatch(handler, repo_name, subpath.split("?", 1)[0], mount=f"/repository/{repo_name}")

    def _dispatch(self, handler: LabHandler, repo_name: str, path: str, mount: str) -> None:
        try:
            _Exchange(self, handler, repo_name, path, mount).run()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        except Exception:
            log.exception("repository %s: %s %s failed", repo_name, handler.command, path)
            handler.close_connection = True

    # -- content lookup -------------------------------------------------------------------------
    def _cache(self, repo: str, config: dict[str, Any]) -> ProxyCache:
        with self._lock:
            cache = self._caches.get(repo)
            if cache is None:
                cache = ProxyCache(
                    repo, self.cache_dir / repo, self.counters(repo), self._user_agent, self._clock
                )
                self._caches[repo] = cache
        cache.configure(config)
        return cache

    def _members(self, config: dict[str, Any], seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
        members = []
        for member in (config.get("group") or {}).get("memberNames") or []:
            if member in seen:
                continue  # already dispatched (nested groups): NP GroupHandler skips it
            seen.add(member)
            member_config = self.state.repo_config(member)
            if (
                member_config
                and member_config.get("format", "docker") == "docker"
                and member_config.get("online", True)
            ):
                members.append((member, member_config))
        return members

    def find_manifest(
        self, repo: str, config: dict[str, Any], image: str, ref: str, seen: set[str] | None = None
    ) -> tuple[Manifest, str] | None:
        seen = seen if seen is not None else {repo}
        if config.get("type") == "hosted":
            stored = hosted.manifest(self.cache_dir, repo, image, ref)
            return (stored, repo) if stored else None
        if config.get("type") == "proxy":
            found = self._cache(repo, config).manifest(image, ref)
            return (found, repo) if found else None
        if config.get("type") == "group":
            for member, member_config in self._members(config, seen):
                hit = self.find_manifest(member, member_config, image, ref, seen)
                if hit:
                    return hit
        return None

    def find_blob(
        self, repo: str, config: dict[str, Any], image: str, digest: str, seen: set[str] | None = None
    ) -> tuple[CachedBlob | LiveBlob, str] | None:
        seen = seen if seen is not None else {repo}
        if config.get("type") == "hosted":
            kept = hosted.blob(self.cache_dir, repo, image, digest)
            return (kept, repo) if kept else None
        if config.get("type") == "proxy":
            found = self._cache(repo, config).blob(image, digest)
            return (found, repo) if found else None
        if config.get("type") == "group":
            for member, member_config in self._members(config, seen):
                hit = self.find_blob(member, member_config, image, digest, seen)
                if hit:
                    return hit
        return None

    def _record(self, repo: str, image: str, tag: str, manifest: Manifest, base: str) -> None:
        key = (repo, image, tag, manifest.digest)
        with self._lock:
            if key in self._recorded:
                return
            self._recorded.add(key)
        path = f"v2/{image}/manifests/{tag}"
        asset = {
            "path": path,
            "downloadUrl": f"{base}/repository/{repo}/{path}",
            "contentType": manifest.media_type,
            "checksum": {
                "sha1": hashlib.sha1(manifest.body).hexdigest(),
                "sha256": manifest.digest.split(":", 1)[1],
            },
        }
        try:
            self.state.record_component(repo, image, tag, [asset])
        except Exception:  # a bookkeeping failure must not fail the pull
            log.exception("recording component %s:%s in %s failed", image, tag, repo)
            with self._lock:
                self._recorded.discard(key)


class _Exchange:
    """One registry request against one repository."""

    def __init__(
        self, manager: ConnectorManager, handler: LabHandler, repo: str, path: str, mount: str
    ) -> None:
        self.m = manager
        self.state = manager.state
        self.h = handler
        self.repo = repo
        self.path = path
        self.mount = mount
        self.config: dict[str, Any] = {}

    # -- replies ----------------------------------------------------------------------------------
    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.h.reply_json(status, registry_errors(code, message), {**API_VERSION_HEADERS, **(headers or {})})

    def unauthorized(self, challenge_value: str | None = None) -> None:
        if challenge_value is None:
            fallback = f"{self.m.host}:{self.h.server.server_address[1]}"
            realm = token_realm(self.h.headers, self.mount, fallback)
            challenge_value = challenge(self.state, self.config, realm)
        self.error(401, "UNAUTHORIZED", UNAUTHORIZED_MESSAGE, {"WWW-Authenticate": challenge_value})

    def discard_body(self) -> None:
        """Read and drop a request body we refuse, so the keep-alive connection stays in sync."""
        if self.h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.h.read_body()
            return
        remaining = int(self.h.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.h.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)

    # -- flow -----------------------------------------------------------------------------------
    def run(self) -> None:
        config = self.state.repo_config(self.repo)
        if not config or config.get("format", "docker") != "docker":
            self.discard_body()
            self.h.reply(404)
            return
        self.config = config
        counters = self.m.counters(self.repo)
        counters.add("requests")
        method = self.h.command
        if self.path in ("/v2/token", "/v2/token/"):
            self.discard_body()
            self.token(method)
            return
        if not (self.path == "/v2" or self.path.startswith("/v2/")):
            self.discard_body()
            self.h.reply(404)
            return
        caller = identify(self.state, self.m.tokens, self.h.headers.get("Authorization"))
        if caller is None:
            self.discard_body()
            self.unauthorized()
            return
        if self.path in ("/v2", "/v2/"):
            self.discard_body()
            self.ping(caller)
            return
        content = _CONTENT_RE.match(self.path)
        if not content or _UPLOAD_RE.match(self.path):
            self.discard_body()
            self.other(caller, method)
            return
        kind = content.group("kind")
        counters.add("manifest_requests" if kind == "manifests" else "blob_requests")
        if not self.authorize(caller):
            self.discard_body()
            return
        if method not in ("GET", "HEAD"):
            self.discard_body()
            self.error(405, "UNSUPPORTED", "The operation is unsupported.")
            return
        if not config.get("online", True):
            self.h.reply(503)  # Nexus answers 503 for an offline repository [inferred]
            return
        image, ref = content.group("image"), unquote(content.group("ref"))
        if not IMAGE_NAME_RE.match(image):
            self.error(400, "NAME_INVALID", "invalid repository name")
        elif kind == "manifests":
            self.manifest(image, ref)
        else:
            self.blob(image, ref)

    def authorize(self, caller: Caller) -> bool:
        if not may_read(self.state, caller, self.repo, self.config):
            if caller.anonymous:
                self.unauthorized()
            else:
                # An authenticated user without read gets DENIED rather than a new challenge [inferred].
                self.error(403, "DENIED", UNAUTHORIZED_MESSAGE)
            return False
        if self.state.eula_blocks_access():
            # CE 3.77+ blocks repository access until the EULA is accepted (sonatype/nexus-public#892);
            # the exact status Nexus uses is not documented [inferred].
            log.warning("repository %s: access refused, Community Edition EULA not accepted", self.repo)
            self.error(403, "DENIED", UNAUTHORIZED_MESSAGE)
            return False
        return True

    def ping(self, caller: Caller) -> None:
        # Nexus challenges an unauthenticated /v2/ even when anonymous pull is allowed (nexus-public#651);
        # an anonymous *token* is accepted while anonymous access is enabled.
        if caller.credentials == "none" or (caller.anonymous and not self.state.anonymous_enabled()):
            self.unauthorized()
            return
        if self.state.eula_blocks_access():
            self.error(403, "DENIED", UNAUTHORIZED_MESSAGE)
            return
        self.h.reply_json(200, {}, dict(API_VERSION_HEADERS))

    def token(self, method: str) -> None:
        if method not in ("GET", "HEAD"):
            # containerd tries an OAuth POST first and falls back to GET on 405 (remotes/docker/auth).
            self.error(405, "UNSUPPORTED", "The operation is unsupported.")
            return
        parsed = parse_authorization(self.h.headers.get("Authorization"))
        user_id: str | None
        if parsed is None:
            if not self.state.anonymous_enabled():
                self.unauthorized(BASIC_CHALLENGE)
                return
            user_id = None
        elif parsed[0] == "basic" and self.state.authenticate(parsed[1], parsed[2]):
            user_id = parsed[1]
        elif parsed[0] == "bearer" and self.m.tokens.lookup(parsed[1])[0]:
            user_id = self.m.tokens.lookup(parsed[1])[1]
        else:
            self.unauthorized(BASIC_CHALLENGE)
            return
        if self.state.eula_blocks_access():
            self.error(403, "DENIED", UNAUTHORIZED_MESSAGE)
            return
        self.h.reply_json(200, {"token": self.m.tokens.issue(user_id)}, dict(API_VERSION_HEADERS))

    def other(self, caller: Caller, method: str) -> None:
        if not self.authorize(caller):
            return
        if _UPLOAD_RE.match(self.path) or method not in ("GET", "HEAD"):
            # proxies and groups take no pushes (group lookup is GET/HEAD only:
            # sonatype/nexus-public GroupHandler.java)
            self.error(405, "UNSUPPORTED", "The operation is unsupported.")
            return
        # _catalog and tags/list are not emulated.
        self.h.reply(404)

    # -- content ----------------------------------------------------------------------------------
    def _count_served(self, serving: str, kind: str, cache_hit: bool) -> list[RepoCounters]:
        targets = [self.m.counters(self.repo)]
        if serving != self.repo:
            member = self.m.counters(serving)
            member.add("requests")
            member.add(kind)
            targets.append(member)
            targets[0].add("cache_hits" if cache_hit else "cache_misses")
        return targets

    def _base_url(self) -> str:
        return self.m.base_url or f"http://{self.h.headers.get('Host') or self.m.host}"

    def manifest(self, image: str, ref: str) -> None:
        if not (DIGEST_RE.match(ref) or TAG_RE.match(ref)):
            self.error(400, "MANIFEST_INVALID", "manifest invalid")
            return
        found = self.m.find_manifest(self.repo, self.config, image, ref)
        if found is None:
            if self.config.get("type") == "group":
                self.m.counters(self.repo).add("cache_misses")
            self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        manifest, serving = found
        targets = self._count_served(serving, "manifest_requests", manifest.cache_hit)
        if not DIGEST_RE.match(ref):
            self.m._record(serving, image, ref, manifest, self._base_url())
        headers = {
            **API_VERSION_HEADERS,
            "Docker-Content-Digest": manifest.digest,
            "ETag": f'"{manifest.digest}"',
        }
        self.h.reply(200, manifest.body, manifest.media_type, headers)
        if self.h.command == "GET":
            for c in targets:
                c.add("bytes_served", len(manifest.body))

    def blob(self, image: str, digest: str) -> None:
        if not DIGEST_RE.match(digest):
            self.error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            return
        found = self.m.find_blob(self.repo, self.config, image, digest)
        if found is None:
            if self.config.get("type") == "group":
                self.m.counters(self.repo).add("cache_misses")
            self.error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return
        source, serving = found
        try:
            self._send_blob(source, serving, digest)
        finally:
            source.close()  # a LiveBlob must give back its fetch lock whatever happened

    def _send_blob(self, source: CachedBlob | LiveBlob, serving: str, digest: str) -> None:
        targets = self._count_served(serving, "blob_requests", source.cache_hit)
        if isinstance(source, LiveBlob) and self.h.command == "HEAD":
            materialized = source.materialize()
            if materialized is None:
                self.error(404, "BLOB_UNKNOWN", "blob unknown to registry")
                return
            source = materialized

        def write(chunk: bytes) -> None:
            self.h.wfile.write(chunk)
            for c in targets:
                c.add("bytes_served", len(chunk))

        headers = {
            **API_VERSION_HEADERS,
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
        }
        if isinstance(source, LiveBlob):
            self._send_headers(200, {**headers, "Content-Length": str(source.size)})
            if not source.send(write):
                self.h.close_connection = True  # truncated body: the client must not accept it
            return
        start, end, status = 0, source.size - 1, 200
        wanted = _RANGE_RE.match(self.h.headers.get("Range", "").strip())
        if wanted and source.size:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), source.size - 1) if wanted.group(2) else source.size - 1
            if start > end:
                self.error(
                    416,
                    "BLOB_UNKNOWN",
                    "requested range not satisfiable",
                    {"Content-Range": f"bytes */{source.size}"},
                )
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{source.size}"
        headers["Accept-Ranges"] = "bytes"
        self._send_headers(status, {**headers, "Content-Length": str(end - start + 1 if source.size else 0)})
        if self.h.command == "GET" and source.size:
            source.send(write, start, end)

    def _send_headers(self, status: int, headers: dict[str, str]) -> None:
        self.h.send_response(status)
        for k, v in headers.items():
            self.h.send_header(k, v)
        self.h.end_headers()
