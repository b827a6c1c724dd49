"""Docker Registry HTTP API v2 client (httpx): auth challenges, manifests, verified blob streams.

Auth follows the distribution token spec: a 401 on ``/v2/...`` carries ``WWW-Authenticate: Bearer
realm=...,service=...[,scope=...]`` (fetch a token from the realm, with Basic credentials when we have
them) or ``Basic realm=...`` (send Basic). Tokens are cached per scope. Nexus answers ``/v2/`` with a
Bearer challenge even when anonymous pulls are allowed, so the flow is always followed.

One client is one endpoint with one connection pool (keep-alive), safe to share between threads: the
pull engine (``pull.py``) downloads several blobs at once through it, and a 401 seen by several threads
at the same time leads to one token request, not one per thread.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from runbook_lib import net
from runbook_lib.secrets import REDACTOR

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(REDACTOR.scrub(message))
        self.status = status
        self.code = code


class DigestMismatch(RegistryError):
    pass


@dataclass
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str | None) -> Challenge | None:
        if not header:
            return None
        scheme, _, rest = header.partition(" ")
        return cls(scheme.lower(), {k.lower(): v for k, v in _PARAM.findall(rest)})


@dataclass
class ImageRef:
    registry: str
    repository: str
    reference: str  # tag or digest

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        """docker.io/library/nginx:1.27 → (docker.io, library/nginx, 1.27); also name@sha256:…"""
        name, digest = (ref.split("@", 1) + [""])[:2]
        first, _, rest = name.partition("/")
        if not rest or ("." not in first and ":" not in first and first != "localhost"):
            registry, path = "docker.io", name
        else:
            registry, path = first, rest
        tag = ""
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if registry == "docker.io" and "/" not in path:
            path = f"library/{path}"  # Docker Hub's implicit namespace
        return cls(registry, path, digest or tag or "latest")

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


@dataclass
class ManifestResponse:
    status: int
    digest: str | None
    media_type: str | None
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class RegistryClient:
    """One registry endpoint (base URL may carry a path, e.g. Nexus's /repository/<name>)."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 8,
    ):
        self.base_url = base_url.rstrip("/")
        self.credentials = (username, password) if username is not None and password is not None else None
        # Redirects are followed: registries send blob GETs to storage (S3, CDN) with 307.
        self.http = httpx.Client(
            verify=net.ssl_context(),
            timeout=timeout,
            transport=transport,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._auth_lock = threading.Lock()
        self.token_requests = 0  # how many times the realm was asked (token caching shows here)

    def close(self) -> None:
        self.http.close()
        for token in self._tokens.values():
            REDACTOR.release(token)
        self._tokens.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ----------------------------------------------------------------------------------
    def _auth_headers(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self.credentials:
            user, password = self.credentials
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def _authenticate(self, challenge: Challenge | None, scope: str, sent: dict[str, str]) -> bool:
        """React to a 401 challenge to a request sent with `sent` auth headers; True if a retry may
        succeed."""
        if challenge is None:
            return False
        with self._auth_lock:
            if self._auth_headers(scope) != sent:
                return True  # another thread changed the credentials meanwhile: retry with those
            return self._answer(challenge, scope)

    def _answer(self, challenge: Challenge, scope: str) -> bool:
        if challenge.scheme == "basic":
            if not self.credentials or self._basic:
                return False
            self._basic = True
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return False
        query = {"service": challenge.params.get("service")}
        wanted = challenge.params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        self.token_requests += 1
        resp = self.http.get(
            challenge.params["realm"], params={k: v for k, v in query.items() if v}, auth=auth
        )
        if resp.status_code != 200:
            raise RegistryError(
                f"token request to {challenge.params['realm']} answered {resp.status_code}",
                resp.status_code,
                _error_code(resp),
            )
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError("token response without a token")
        if scope in self._tokens and self._tokens[scope] == token:
            return False
        REDACTOR.hold(token)  # released with the client (close), or when this scope's token is replaced
        if scope in self._tokens:
            REDACTOR.release(self._tokens[scope])
        self._tokens[scope] = token
        return True

    def request(
        self,
        method: str,
        path: str,
        scope: str = "",
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        for _ in range(3):
            sent = self._auth_headers(scope)
            req = self.http.build_request(method, url, headers={**(headers or {}), **sent})
            resp = self.http.send(req, stream=stream)
            if resp.status_code != 401:
                return resp
            if stream:
                resp.close()
            if not self._authenticate(Challenge.parse(resp.headers.get("www-authenticate")), scope, sent):
                if stream:
                    resp.read()
                return resp
        return resp

    def ping(self) -> httpx.Response:
        """GET /v2/ after following the challenge: 200 means these credentials (or anonymous) are accepted."""
        return self.request("GET", "/v2/")

    # -- manifests -----------------------------------------------------------------------------
    def manifest(
        self, repository: str, reference: str, method: str = "GET", accept: tuple[str, ...] = MANIFEST_TYPES
    ) -> ManifestResponse:
        resp = self.request(
            method,
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull",
            {"Accept": ", ".join(accept)},
        )
        return ManifestResponse(
            resp.status_code,
            resp.headers.get("docker-content-digest"),
            resp.headers.get("content-type"),
            resp.content if method == "GET" else b"",
            dict(resp.headers),
        )

    def resolve_platform(
        self, repository: str, reference: str, platform: str = "linux/amd64"
    ) -> ManifestResponse:
        """The image manifest for one platform (an index or manifest list is followed).

        Every manifest's bytes are checked against the digest that names it (the reference when it is a
        digest, the index entry for a child, else the Docker-Content-Digest header): DigestMismatch if not.
        """
        m = self.manifest(repository, reference)
        if m.status != 200:
            raise RegistryError(
                f"manifest {repository}:{reference} answered {m.status}", m.status, _code_of(m.body)
            )
        verify_manifest(m, reference if reference.startswith("sha256:") else m.digest)
        if m.media_type not in INDEX_TYPES:
            return m
        entry = select_platform(m.json().get("manifests", []), platform)
        if entry is None:
            raise RegistryError(f"{repository}:{reference} has no image for {platform}")
        child = self.manifest(repository, entry["digest"])
        if child.status != 200:
            raise RegistryError(
                f"manifest {entry['digest']} answered {child.status}", child.status, _code_of(child.body)
            )
        verify_manifest(child, entry["digest"])
        return child

    # -- blobs ---------------------------------------------------------------------------------
    def stream_blob(self, repository: str, digest: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Yield a blob's bytes, verifying its sha256 at the end (raises DigestMismatch)."""
        algo, _, want = digest.partition(":")
        if algo != "sha256":
            raise RegistryError(f"unsupported digest algorithm {algo}")
        h = hashlib.sha256()
        resp = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull", stream=True
        )
        try:
            if resp.status_code != 200:
                resp.read()
                raise RegistryError(
                    f"blob {digest} answered {resp.status_code}", resp.status_code, _error_code(resp)
                )
            for part in resp.iter_bytes(chunk):
                h.update(part)
                yield part
        finally:
            resp.close()
        if h.hexdigest() != want:
            raise DigestMismatch(f"blob {digest} arrived with sha256 {h.hexdigest()}")


def platform_matches(p: dict[str, Any], platform: str) -> bool:
    """'linux/arm64/v8' against an index entry's platform; no variant asked means any variant."""
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    return (
        p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant") == variant)
    )


def select_platform(entries: list[dict[str, Any]], platform: str) -> dict[str, Any] | None:
    """The index entry for `platform` (containerd's platform matcher, minus its arm variant fallbacks)."""
    return next((e for e in entries if platform_matches(e.get("platform") or {}, platform)), None)


def verify_manifest(m: ManifestResponse, expected: str | None) -> None:
    """Raise DigestMismatch when a manifest's bytes do not hash to the digest that names it."""
    if not expected or not expected.startswith("sha256:") or not m.body:
        return
    got = "sha256:" + hashlib.sha256(m.body).hexdigest()
    if got != expected:
        raise DigestMismatch(f"manifest {expected} arrived with {got}")


def _code_of(body: bytes) -> str | None:
    try:
        import json

        errors = json.loads(body).get("errors") or []
        return errors[0].get("code") if errors else None
    except Exception:
        return None


def _error_code(resp: httpx.Response) -> str | None:
    try:
        errors = resp.json().get("errors") or []
        return errors[0].get("code") if errors else None
    except Exception:
        return None
