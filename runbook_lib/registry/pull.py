"""The pull engine: what `docker pull` does on the wire, measured, without keeping any image data.

One pull = resolve the manifest for the platform (following an index or manifest list), then fetch the
config and every layer blob — several at once, up to a bound — through one client (one connection pool,
one token per scope). Every manifest and blob is checked against its sha256 digest and its declared size
while it streams; the bytes are then dropped, so a multi-GiB image needs no memory or disk.

Measured per pull: time to manifest (auth + manifest requests: what a registry's latency costs), total
time, bytes received, throughput, and the peak number of blobs in flight (to show the bound holds).
A failed pull is a result too (``ok`` False, the registry's status and error code), never an exception:
a verification run records what failed and goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from runbook_lib.registry.client import RegistryClient, RegistryError
from runbook_lib.secrets import REDACTOR

# Layers a registry may not serve (Windows base layers): containerd skips them too.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)


class PullAborted(Exception):
    """Another blob of the same pull failed; this download stopped early."""


@dataclass
class PullResult:
    image: str  # repository:reference as requested
    endpoint: str
    platform: str
    ok: bool
    manifest_digest: str | None = None
    time_to_manifest_s: float | None = None
    total_s: float | None = None
    bytes: int = 0
    blobs: int = 0
    peak_parallel: int = 0
    status: int | None = None  # registry status of the failing request (429, 404, ...)
    code: str | None = None  # registry error code (TOOMANYREQUESTS, MANIFEST_UNKNOWN, ...)
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # of the manifest response

    @property
    def throughput_bps(self) -> float | None:
        if not self.ok or not self.total_s:
            return None
        return self.bytes / self.total_s

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row.pop("headers")
        row["throughput_MBps"] = None if self.throughput_bps is None else self.throughput_bps / 1e6
        return row


class _InFlight:
    """Counts blobs being downloaded at once, keeping the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def image_blobs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Descriptors a pull must fetch: the config, then the layers (foreign layers excluded)."""
    blobs = [manifest["config"]] if manifest.get("config") else []
    blobs += [d for d in manifest.get("layers", []) if d.get("mediaType") not in FOREIGN_LAYER_TYPES]
    return blobs


def _fetch(
    client: RegistryClient, repository: str, desc: dict[str, Any], stop: threading.Event, in_flight: _InFlight
) -> int:
    """Stream one blob to nowhere; the digest is checked by stream_blob, the size here."""
    received = 0
    with in_flight:
        for part in client.stream_blob(repository, desc["digest"]):
            received += len(part)
            if stop.is_set():
                raise PullAborted(desc["digest"])
    size = desc.get("size")
    if isinstance(size, int) and size != received:
        raise RegistryError(f"blob {desc['digest']} is {received} bytes, the manifest says {size}")
    return received


def pull(
    client: RegistryClient,
    repository: str,
    reference: str,
    platform: str = "linux/amd64",
    max_parallel: int = 4,
    clock: Callable[[], float] = time.perf_counter,
) -> PullResult:
    """Pull one image through `client` and measure it. Never raises for registry or network failures."""
    result = PullResult(
        f"{repository}:{reference}" if not reference.startswith("sha256:") else f"{repository}@{reference}",
        client.base_url,
        platform,
        ok=False,
    )
    start = clock()
    stop = threading.Event()
    try:
        m = client.resolve_platform(repository, reference, platform)
        result.time_to_manifest_s = clock() - start
        result.manifest_digest = m.digest
        result.headers = m.headers
        result.bytes = len(m.body)
        blobs = image_blobs(m.json())
        in_flight = _InFlight()
        if blobs:
            with ThreadPoolExecutor(
                max_workers=max(1, min(max_parallel, len(blobs))), thread_name_prefix="blob"
            ) as pool:
                futures = [pool.submit(_fetch, client, repository, d, stop, in_flight) for d in blobs]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    stop.set()  # running downloads stop at their next chunk, queued ones are cancelled
                    for f in pending:
                        f.cancel()
                    raise failed.exception()  # type: ignore[misc]
                result.bytes += sum(f.result() for f in futures)
        result.blobs = len(blobs)
        result.peak_parallel = in_flight.peak
        result.total_s = clock() - start
        result.ok = True
    except RegistryError as err:
        result.status, result.code, result.error = err.status, err.code, str(err)
        result.total_s = clock() - start
    except (httpx.HTTPError, ValueError, KeyError) as err:  # network failure, or a manifest that is not JSON
        result.error = REDACTOR.scrub(f"{type(err).__name__}: {err}")
        result.total_s = clock() - start
    return result
