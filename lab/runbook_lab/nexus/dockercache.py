"""Pull-through cache of one Nexus docker proxy repository: upstream client and on-disk content.

Nexus behaviour followed here (nexus-repo-api-client spec/openapi.yaml `ProxyAttributes`; Nexus docs "Proxy
Repository"):
- `proxy.metadataMaxAge` (minutes, -1 = never) bounds how long a tag -> digest answer is trusted; a
  manifest or blob addressed by digest is immutable and never revalidated.
- A stale item is revalidated upstream; when the upstream is down, errors, or no longer has it, the stale
  copy is served (NP ProxyFacetSupport.doGet: a failed or empty fetch keeps the cached content).
- `negativeCache` remembers upstream 404s for `timeToLive` minutes (NP NegativeCacheFacet; in memory).
- `httpClient.blocked` means the upstream is never contacted; cached content is still served.
- `httpClient.authentication` (type `username`) answers the upstream's own challenge: a Bearer challenge
  is followed to its realm with `service` and `scope=repository:<name>:pull`, a Basic one is answered
  directly (Docker token authentication spec).
- Nexus stores docker blobs per repository at `v2/-/blobs/<digest>`, i.e. shared by all image names of the
  repository, and manifests per image name; the layout below mirrors that.

Unlike the CNCF distribution proxy (distribution/distribution registry/proxy, which fetches a cold blob
twice: once streamed to the client, once by its storeLocal goroutine), a cold blob is fetched from the
upstream once: the bytes are streamed to the client while they are hashed and written to a temp file that
is renamed into place only when the sha256 matches. The final chunk is held back until the digest is
verified, so a client never receives a complete body for a corrupt blob.

On-disk layout under `root` (survives restarts):
    blobs/sha256/<2 hex>/<hex>             blob bytes
    names/<image>/@manifests/<hex>         manifest bytes exactly as received
    names/<image>/@manifests/<hex>.type    its media type
    names/<image>/@tags/<tag>.json         {"digest", "mediaType", "fetchedAt"}
    tmp/                                   partial downloads
`@` cannot occur in an image name, so these never clash with name components.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's limit for manifest bodies
CHUNK = 256 * 1024

# Nexus "HTTP request settings" defaults: 20 s timeout, 2 retries [inferred from the Nexus help pages].
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_RETRIES = 2

# Distribution reference grammar (distribution/reference/regexp.go), path components and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
IMAGE_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")

COUNTER_FIELDS = (
    "requests",
    "manifest_requests",
    "blob_requests",
    "cache_hits",
    "cache_misses",
    "upstream_requests",
    "upstream_bytes",
    "bytes_served",
)


class RepoCounters:
    """Thread-safe per-repository counters (see ConnectorManager.stats)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTER_FIELDS, 0)

    def add(self, field: str, amount: int = 1) -> None:
        with self._lock:
            self._values[field] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class UpstreamUnavailable(Exception):
    """The upstream could not give a usable answer (down, 5xx, refused auth, corrupt content)."""


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes
    cache_hit: bool


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(content_type: str | None, body: bytes) -> str:
    mt = (content_type or "").split(";")[0].strip()
    if mt in MANIFEST_MEDIA_TYPES or mt.startswith("application/vnd."):
        return mt
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared:
        return declared
    return mt or "application/octet-stream"


# --------------------------------------------------------------------------------------------------
# blobs handed to the connector


class CachedBlob:
    """A verified blob on disk, streamed in chunks (never read whole)."""

    cache_hit = True

    def __init__(self, path: Path, digest: str, cache_hit: bool = True) -> None:
        self.path = path
        self.digest = digest
        self.size = path.stat().st_size
        self.cache_hit = cache_hit

    def send(self, write: Callable[[bytes], None], start: int = 0, end: int | None = None) -> None:
        remaining = (self.size if end is None else end + 1) - start
        with self.path.open("rb") as f:
            f.seek(start)
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    break
                write(chunk)
                remaining -= len(chunk)

    def close(self) -> None:
        pass


class LiveBlob:
    """A cold blob: upstream bytes are teed to the client and to a temp file, verified, then cached.

    Holds the per-digest fetch lock of its cache until closed, so concurrent requests for the same cold
    blob wait and are then served from disk (one upstream GET per cold blob).
    """

    cache_hit = False

    def __init__(
        self,
        response: httpx.Response,
        digest: str,
        size: int,
        final_path: Path,
        tmp_dir: Path,
        counters: RepoCounters,
        release: Callable[[], None],
    ) -> None:
        self.digest = digest
        self.size = size
        self._response = response
        self._final_path = final_path
        self._tmp_dir = tmp_dir
        self._counters = counters
        self._release: Callable[[], None] | None = release
        self.verified = False

    def send(self, write: Callable[[bytes], None]) -> bool:
        """Stream to `write`; True when the blob verified and was cached. On False the caller must drop
        the client connection: the last chunk was withheld, so the client sees a truncated body."""
        client_ok = True

        def to_client(chunk: bytes) -> None:
            nonlocal client_ok
            if client_ok:
                try:
                    write(chunk)
                except OSError:
                    client_ok = False  # keep downloading: the next request is then served from disk

        try:
            self.verified = self._download(to_client)
            return self.verified
        finally:
            self.close()

    def materialize(self) -> CachedBlob | None:
        """Download into the cache without a client (HEAD on a cold blob)."""
        try:
            self.verified = self._download(None)
        finally:
            self.close()
        return CachedBlob(self._final_path, self.digest, cache_hit=False) if self.verified else None

    def _download(self, to_client: Callable[[bytes], None] | None) -> bool:
        hasher = hashlib.sha256()
        received = 0
        held: bytes | None = None
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._response.iter_bytes(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    self._counters.add("upstream_bytes", len(chunk))
                    if to_client is not None:
                        if held is not None:
                            to_client(held)
                        held = chunk
        except httpx.HTTPError as exc:
            log.warning("upstream blob %s broke off after %d bytes: %s", self.digest, received, exc)
            tmp.unlink(missing_ok=True)
            return False
        actual = "sha256:" + hasher.hexdigest()
        if actual != self.digest or (self.size >= 0 and received != self.size):
            log.warning(
                "upstream blob %s failed verification (got %s, %d of %d bytes); not cached",
                self.digest,
                actual,
                received,
                self.size,
            )
            tmp.unlink(missing_ok=True)
            return False
        self._final_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self._final_path)
        if to_client is not None and held is not None:
            to_client(held)
        return True

    def close(self) -> None:
        self._response.close()
        if self._release is not None:
            release, self._release = self._release, None
            release()


BlobSource = CachedBlob | LiveBlob


# --------------------------------------------------------------------------------------------------
# upstream HTTP with the registry token dance


def _challenge_params(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


class UpstreamSession:
    """httpx client for one proxy repository's `proxy.remoteUrl`, answering the upstream's challenges."""

    def __init__(self, config: dict[str, Any], user_agent: str, counters: RepoCounters) -> None:
        self.base = str((config.get("proxy") or {}).get("remoteUrl") or "").rstrip("/")
        http_client = config.get("httpClient") or {}
        connection = http_client.get("connection") or {}
        auth = http_client.get("authentication") or {}
        self._username: str | None = None
        self._password = ""
        self._static_bearer: str | None = None
        if (auth.get("type") or "").lower() == "username" and auth.get("username"):
            self._username = str(auth["username"])
            self._password = str(auth.get("password") or "")
        elif (auth.get("type") or "").lower() == "bearertoken" and auth.get("bearerToken"):
            self._static_bearer = str(auth["bearerToken"])
        timeout = float(connection.get("timeout") or DEFAULT_TIMEOUT_S)
        retries = connection.get("retries")
        self._retries = DEFAULT_RETRIES if retries is None else int(retries)
        suffix = connection.get("userAgentSuffix")
        self._counters = counters
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=True,  # httpx drops Authorization on cross-origin redirects (e.g. to S3)
            headers={"User-Agent": f"{user_agent} {suffix}".strip() if suffix else user_agent},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (Authorization value, expiry)
        self._basic_challenged = False

    def close(self) -> None:
        self._client.close()

    def open(
        self, method: str, path: str, image: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send and return a streamed response (caller closes it). Raises UpstreamUnavailable."""
        scope = f"repository:{image}:pull"
        url = self.base + path
        resp = self._send(method, url, {**(headers or {}), **self._auth_for(scope)})
        if resp.status_code == 401:
            header = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            authorization = self._answer(header, scope)
            if authorization is None:
                raise UpstreamUnavailable(f"{method} {url}: 401 and no way to answer {header!r}")
            resp = self._send(method, url, {**(headers or {}), "Authorization": authorization})
        return resp

    def _auth_for(self, scope: str) -> dict[str, str]:
        if self._static_bearer:
            return {"Authorization": f"Bearer {self._static_bearer}"}
        with self._lock:
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic():
                return {"Authorization": cached[0]}
            if self._basic_challenged and self._username:
                return {"Authorization": self._basic()}
        return {}

    def _basic(self) -> str:
        raw = f"{self._username or ''}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _answer(self, header: str, scope: str) -> str | None:
        scheme, params = _challenge_params(header)
        if scheme == "basic":
            if not self._username:
                return None
            with self._lock:
                self._basic_challenged = True
            return self._basic()
        if scheme != "bearer" or not params.get("realm"):
            return None
        query = {
            k: v
            for k, v in (("service", params.get("service")), ("scope", params.get("scope") or scope))
            if v
        }
        headers = {"Authorization": self._basic()} if self._username else {}
        try:
            resp = self._send("GET", params["realm"], headers, params=query)
        except UpstreamUnavailable:
            return None
        try:
            body = resp.read()
        except httpx.HTTPError:
            return None
        finally:
            resp.close()
        if resp.status_code != 200:
            log.warning("upstream token endpoint %s answered %d", params["realm"], resp.status_code)
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        token = doc.get("token") or doc.get("access_token")
        if not token:
            return None
        expires_in = int(doc.get("expires_in") or 60)
        value = f"Bearer {token}"
        with self._lock:
            self._tokens[scope] = (value, time.monotonic() + max(expires_in - 5, 1))
        return value

    def _send(
        self, method: str, url: str, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> httpx.Response:
        last: Exception | None = None
        for _ in range(self._retries + 1):
            self._counters.add("upstream_requests")
            try:
                request = self._client.build_request(method, url, headers=headers, params=params)
                return self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                last = exc  # connection-level: retried, as Nexus retries (httpClient.connection.retries)
            except (httpx.HTTPError, ValueError, RuntimeError) as exc:  # bad remoteUrl, closed client
                raise UpstreamUnavailable(f"{method} {url}: {exc}") from exc
        raise UpstreamUnavailable(f"{method} {url}: {last}")


# --------------------------------------------------------------------------------------------------
# the cache


class ProxyCache:
    """On-disk pull-through cache for one docker proxy repository."""

    def __init__(
        self,
        repo: str,
        root: Path,
        counters: RepoCounters,
        user_agent: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.root = root
        self.counters = counters
        self._user_agent = user_agent
        self._clock = clock
        self._config: dict[str, Any] = {}
        self._session: UpstreamSession | None = None
        self._retired: list[UpstreamSession] = []
        self._negative: dict[tuple[str, str, str], float] = {}
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}

    # -- configuration ----------------------------------------------------------------------------
    def configure(self, config: dict[str, Any]) -> None:
        relevant = {k: config.get(k) for k in ("proxy", "httpClient", "negativeCache")}
        with self._guard:
            if relevant == self._config:
                return
            # Nexus drops the negative cache when the repository is reconfigured.
            self._config = relevant
            self._negative.clear()
            if self._session is not None:
                self._retired.append(self._session)  # may still be streaming; closed in close()
            self._session = UpstreamSession(config, self._user_agent, self.counters)

    def close(self) -> None:
        with self._guard:
            sessions = [s for s in (self._session, *self._retired) if s is not None]
            self._session, self._retired = None, []
        for s in sessions:
            s.close()

    def _upstream(self) -> UpstreamSession | None:
        if ((self._config.get("httpClient") or {}).get("blocked")) or self._session is None:
            return None
        return self._session

    def _lock_for(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    # -- negative cache -----------------------------------------------------------------------------
    def _negative_hit(self, key: tuple[str, str, str]) -> bool:
        with self._guard:
            expiry = self._negative.get(key)
            if expiry is None:
                return False
            if self._clock() < expiry:
                return True
            del self._negative[key]
            return False

    def _remember_missing(self, key: tuple[str, str, str]) -> None:
        neg = self._config.get("negativeCache") or {}
        if not neg.get("enabled"):
            return
        ttl_minutes = neg.get("timeToLive")
        ttl_minutes = 1440 if ttl_minutes is None else int(ttl_minutes)
        with self._guard:
            self._negative[key] = self._clock() + ttl_minutes * 60

    # -- layout ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "blobs" / "sha256" / hexd[:2] / hexd

    def _manifest_path(self, image: str, digest: str) -> Path:
        return self.root / "names" / image / "@manifests" / digest.split(":", 1)[1]

    def _tag_path(self, image: str, tag: str) -> Path:
        return self.root / "names" / image / "@tags" / f"{tag}.json"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _load_manifest(self, image: str, digest: str) -> Manifest | None:
        path = self._manifest_path(image, digest)
        try:
            body = path.read_bytes()
            media_type = path.with_name(path.name + ".type").read_text().strip()
        except FileNotFoundError:
            return None
        return Manifest(digest, media_type, body, cache_hit=True)

    def _store_manifest(self, image: str, manifest: Manifest) -> None:
        path = self._manifest_path(image, manifest.digest)
        self._write_atomic(path.with_name(path.name + ".type"), manifest.media_type.encode())
        self._write_atomic(path, manifest.body)

    def _load_tag(self, image: str, tag: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._tag_path(image, tag).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _store_tag(self, image: str, tag: str, manifest: Manifest) -> None:
        entry = {"digest": manifest.digest, "mediaType": manifest.media_type, "fetchedAt": self._clock()}
        self._write_atomic(self._tag_path(image, tag), json.dumps(entry).encode())

    def _tag_stale(self, entry: dict[str, Any]) -> bool:
        max_age = (self._config.get("proxy") or {}).get("metadataMaxAge")
        max_age = 1440 if max_age is None else int(max_age)
        if max_age < 0:
            return False
        return self._clock() - float(entry.get("fetchedAt") or 0) >= max_age * 60

    # -- manifests ------------------------------------------------------------------------------
    def manifest(self, image: str, reference: str) -> Manifest | None:
        """The manifest for a tag or digest, or None when neither the cache nor the upstream has it."""
        if DIGEST_RE.match(reference):
            return self._manifest_by_digest(image, reference)
        return self._manifest_by_tag(image, reference)

    def _manifest_by_digest(self, image: str, digest: str) -> Manifest | None:
        found = self._load_manifest(image, digest)
        if found:
            self.counters.add("cache_hits")
            return found
        key = ("manifest", image, digest)
        with self._lock_for(key):
            found = self._load_manifest(image, digest)
            if found:
                self.counters.add("cache_hits")
                return found
            self.counters.add("cache_misses")
            upstream = self._upstream()
            if upstream is None or self._negative_hit(key):
                return None
            try:
                fetched = self._fetch_manifest(upstream, image, digest)
            except UpstreamUnavailable as exc:
                log.warning("%s: manifest %s@%s: %s", self.repo, image, digest, exc)
                return None
            if fetched is None:
                self._remember_missing(key)
                return None
            if fetched.digest != digest:
                log.warning(
                    "%s: upstream manifest %s@%s hashes to %s; rejected",
                    self.repo,
                    image,
                    digest,
                    fetched.digest,
                )
                return None
            self._store_manifest(image, fetched)
            return fetched

    def _manifest_by_tag(self, image: str, tag: str) -> Manifest | None:
        key = ("manifest", image, tag)
        with self._lock_for(key):
            entry = self._load_tag(image, tag)
            cached = self._load_manifest(image, entry["digest"]) if entry else None
            if cached and entry and not self._tag_stale(entry):
                self.counters.add("cache_hits")
                return cached
            upstream = self._upstream()
            if upstream is None or (cached is None and self._negative_hit(key)):
                return self._stale_or_miss(cached)
            try:
                if cached is not None:
                    status, current = self._head_digest(upstream, image, tag)
                    if status == 404:
                        return self._stale_or_miss(cached)  # gone upstream: Nexus keeps serving its copy
                    if current == cached.digest:
                        self._store_tag(image, tag, cached)  # revalidated: trust it for another max age
                        self.counters.add("cache_hits")
                        return cached
                fetched = self._fetch_manifest(upstream, image, tag)
            except UpstreamUnavailable as exc:
                log.warning("%s: manifest %s:%s: %s", self.repo, image, tag, exc)
                return self._stale_or_miss(cached)
            if fetched is None:
                if cached is None:
                    self._remember_missing(key)
                return self._stale_or_miss(cached)
            self._store_manifest(image, fetched)
            self._store_tag(image, tag, fetched)
            self.counters.add("cache_misses")
            return fetched

    def _stale_or_miss(self, cached: Manifest | None) -> Manifest | None:
        self.counters.add("cache_hits" if cached else "cache_misses")
        return cached

    def _head_digest(self, upstream: UpstreamSession, image: str, tag: str) -> tuple[int, str | None]:
        """(status, digest) of an upstream HEAD on a tag; digest None if not said (then a GET decides)."""
        resp = upstream.open("HEAD", f"/v2/{image}/manifests/{tag}", image, {"Accept": MANIFEST_ACCEPT})
        try:
            if resp.status_code not in (200, 404):
                raise UpstreamUnavailable(f"HEAD manifest {image}:{tag}: HTTP {resp.status_code}")
            return resp.status_code, resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()

    def _fetch_manifest(self, upstream: UpstreamSession, image: str, reference: str) -> Manifest | None:
        resp = upstream.open("GET", f"/v2/{image}/manifests/{reference}", image, {"Accept": MANIFEST_ACCEPT})
        try:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise UpstreamUnavailable(f"GET manifest {image}:{reference}: HTTP {resp.status_code}")
            body = bytearray()
            try:
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_MANIFEST_BYTES:
                        raise UpstreamUnavailable(
                            f"manifest {image}:{reference} exceeds {MAX_MANIFEST_BYTES} bytes"
                        )
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"GET manifest {image}:{reference}: {exc}") from exc
        finally:
            resp.close()
        self.counters.add("upstream_bytes", len(body))
        data = bytes(body)
        digest = sha256_digest(data)
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest and claimed.startswith("sha256:"):
            raise UpstreamUnavailable(
                f"manifest {image}:{reference} body hashes to {digest}, upstream says {claimed}"
            )
        return Manifest(digest, media_type_of(resp.headers.get("Content-Type"), data), data, cache_hit=False)

    # -- blobs ----------------------------------------------------------------------------------
    def cached_blob(self, digest: str) -> CachedBlob | None:
        path = self.blob_path(digest)
        return CachedBlob(path, digest) if path.is_file() else None

    def blob(self, image: str, digest: str) -> BlobSource | None:
        """A cached blob, a live upstream stream being cached, or None when nobody has it."""
        found = self.cached_blob(digest)
        if found:
            self.counters.add("cache_hits")
            return found
        key = ("blob", "-", digest)
        lock = self._lock_for(key)
        lock.acquire()
        handed_over = False
        try:
            found = self.cached_blob(digest)
            if found:
                self.counters.add("cache_hits")
                return found
            self.counters.add("cache_misses")
            upstream = self._upstream()
            if upstream is None or self._negative_hit(("blob", image, digest)):
                return None
            try:
                resp = upstream.open(
                    "GET", f"/v2/{image}/blobs/{digest}", image, {"Accept-Encoding": "identity"}
                )
            except UpstreamUnavailable as exc:
                log.warning("%s: blob %s: %s", self.repo, digest, exc)
                return None
            if resp.status_code != 200:
                resp.close()
                if resp.status_code == 404:
                    self._remember_missing(("blob", image, digest))
                else:
                    log.warning("%s: blob %s: upstream HTTP %d", self.repo, digest, resp.status_code)
                return None
            length = resp.headers.get("Content-Length")
            live = LiveBlob(
                resp,
                digest,
                int(length) if length and length.isdigit() else -1,
                self.blob_path(digest),
                self.root / "tmp",
                self.counters,
                lock.release,
            )
            handed_over = True
            if live.size < 0:  # no length to promise the client: fetch first, then serve from disk
                return live.materialize()
            return live
        finally:
            if not handed_over:
                lock.release()
