"""Pull-time comparison from the runbook host: each image, direct and through the mirror, repeated.

Per image: ``repetitions`` direct pulls from the upstream and ``repetitions`` pulls through the mirror.
Before the first mirror pull of an image the components API is asked whether Nexus already holds it, and
the sample is labelled accordingly (see samples.py): a run only shows a cold sample when the cache really
was cold. An image's mirror pulls run in order (cold, then warm), so a warm sample always comes after the
cold one. Each sample uses a fresh client — new connections, new token — so both routes pay the same
setup; within a pull, connections are reused and blobs download in parallel up to the bound.

Up to ``verification.concurrency`` pulls run at once across images and routes (1 = one at a time, in the
order above): each direct sample is one unit of work, an image's mirror samples another. The result's rows
are sorted (image order of the parameters, direct before mirror, repetition), so reports and history do
not depend on which pull finished first.

Direct pulls from Docker Hub count against its rate limit (one pull per image per repetition). They are
admitted against the headroom before any pull starts: at most ``remaining - verification.ratelimit_reserve``
of them are made (repetition 1 of every image first, so as many images as possible get a direct sample),
the rest are skipped with a note. Admission is decided up front, so pulls in flight are counted and
concurrency cannot overspend: a verification run must not cause the 429s it is meant to prevent. A 429
seen anyway (another client spent the budget meanwhile) stops the remaining direct Docker Hub pulls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from runbook_lib import progress
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import ImageRef, RegistryClient
from runbook_lib.registry.pull import PullResult, pull
from runbook_lib.secrets import SecretResolver
from runbook_lib.verify import endpoints, samples
from runbook_lib.verify.mirrorproof import NexusContent
from runbook_lib.verify.ratelimit import Headroom, anonymous

DOCKER_HUB = "docker.io"
_PATH_ORDER = {"direct": 0, "mirror": 1}


@dataclass
class HostComparison:
    samples: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        return samples.summarize(self.samples)

    def speedups(self) -> dict[str, float | None]:
        return samples.speedups(self.samples)

    def set_speedup(self) -> float | None:
        return samples.set_speedup(self.samples)


def sample_row(
    result: PullResult, image: str, path: str, label: str, rep: int, **extra: Any
) -> dict[str, Any]:
    return {
        "scope": "host",
        "pool": None,
        "node": None,
        "image": image,
        "pulled": result.image,
        "path": path,
        "label": label,
        "rep": rep,
        "ok": result.ok,
        "seconds": result.total_s,
        "time_to_manifest_s": result.time_to_manifest_s,
        "bytes": result.bytes,
        "MBps": None if result.throughput_bps is None else result.throughput_bps / 1e6,
        "status": result.status,
        "code": result.code,
        "error": result.error,
        "endpoint": result.endpoint,
        "node_cache": None,
        "served_by": path if result.ok else None,
        "eligible": True,
        **extra,
    }


def docker_hub_allowance(params: RunbookParams, found: list[Headroom] | None) -> int | None:
    """Direct Docker Hub pulls this run may make (remaining - reserve, at least 0); None: no limit known."""
    h = anonymous(found or [])
    if h is None or h.unlimited or h.remaining is None:
        return None
    return max(h.remaining - params.verification.ratelimit_reserve, 0)


def docker_hub_budget_note(params: RunbookParams, found: list[Headroom] | None, planned: int) -> str | None:
    """Why some (or all) of `planned` direct Docker Hub pulls are skipped; None when the budget allows all."""
    allowed = docker_hub_allowance(params, found)
    if allowed is None or planned <= allowed:
        return None
    h = anonymous(found or [])
    assert h is not None  # an allowance comes from the anonymous headroom
    return (
        f"direct Docker Hub pulls skipped: {planned - allowed} of {planned} planned ({allowed} admitted): "
        f"{h.remaining} pulls left for {h.source or 'this host'}, "
        f"reserve {params.verification.ratelimit_reserve} (verification.ratelimit_reserve)"
    )


@dataclass(frozen=True)
class _Image:
    index: int  # position in verification.images: the rows' sort key
    text: str
    ref: ImageRef
    up: Upstream

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.ref.registry, self.ref.repository, self.ref.reference)


def compare(
    params: RunbookParams,
    secret: SecretResolver,
    content: NexusContent,
    headroom: list[Headroom] | None = None,
    pull_one: Callable[..., PullResult] = pull,
) -> HostComparison:
    v = params.verification
    notes: list[str] = []
    credentials = endpoints.mirror_credentials(params, secret)
    images: list[_Image] = []
    for index, text in enumerate(v.images):
        ref = ImageRef.parse(text)
        up = endpoints.upstream_for(params, ref)
        if up is None:
            notes.append(f"{text}: no upstream in the parameters mirrors {ref.registry}; not measured")
            continue
        images.append(_Image(index, text, ref, up))

    # Admission of direct Docker Hub pulls, decided before any pull starts (repetition-major order).
    reps = range(1, v.repetitions + 1)
    hub_direct = [(img.index, rep) for rep in reps for img in images if img.up.registry == DOCKER_HUB]
    allowed = docker_hub_allowance(params, headroom)
    admitted = set(hub_direct if allowed is None else hub_direct[:allowed])
    skip_note = docker_hub_budget_note(params, headroom, len(hub_direct))
    if skip_note:
        notes.append(skip_note)
    refused = threading.Event()  # Docker Hub answered 429 to a direct pull: make no more of them
    cache_lock = threading.Lock()  # one components query at a time (the Nexus client is shared)
    rows: list[dict[str, Any]] = []
    rows_lock = threading.Lock()

    def measure(client: RegistryClient, ref: ImageRef) -> PullResult:
        with client:
            return pull_one(client, ref.repository, ref.reference, v.platform, v.max_parallel_layers)

    planned = sum(1 for img in images for rep in reps if img.up.registry != DOCKER_HUB) + len(admitted)
    bar = progress.tracker(
        "host pulls per image and route", planned + len(images) * len(reps), "pull", "host pull (s) by label"
    )

    def keep(row: dict[str, Any], img: _Image) -> None:
        with rows_lock:  # also serialises the bar's updates from the pool's threads
            rows.append({**row, "_index": img.index})
            bar.advance(f"{img.text} {row['label']}", value=row["seconds"], series=row["label"])

    def direct(img: _Image, rep: int) -> None:
        hub = img.up.registry == DOCKER_HUB
        if hub and ((img.index, rep) not in admitted or refused.is_set()):
            return
        result = measure(endpoints.direct_client(params, img.up, v.pull_timeout_s), img.ref)
        if hub and result.status == 429:
            refused.set()
        keep(sample_row(result, img.text, "direct", samples.DIRECT, rep), img)

    def through_mirror(occurrences: list[_Image]) -> None:
        # One image's mirror samples in order; a name listed twice is measured again after the first.
        for img in occurrences:
            with cache_lock:
                cached = content.is_cached(img.up, img.ref)
            warmed = False  # warm only after a pull through the mirror succeeded in this run
            for rep in reps:
                label = samples.MIRROR_WARM if warmed else samples.first_mirror_label(cached)
                result = measure(
                    endpoints.mirror_client(params, img.up, credentials, v.pull_timeout_s), img.ref
                )
                keep(sample_row(result, img.text, "mirror", label, rep), img)
                warmed = warmed or result.ok

    # Units of work in the serial order: an image's direct samples, then its mirror samples.
    work: list[Callable[[], None]] = []
    chains: dict[tuple[str, str, str], list[_Image]] = {}
    for img in images:
        work += [lambda img=img, rep=rep: direct(img, rep) for rep in reps]
        if img.key not in chains:
            chains[img.key] = []
            work.append(lambda chain=chains[img.key]: through_mirror(chain))
        chains[img.key].append(img)
    if v.concurrency == 1:
        for unit in work:
            unit()
    else:
        with ThreadPoolExecutor(max_workers=v.concurrency, thread_name_prefix="hostpull") as pool:
            futures = [pool.submit(unit) for unit in work]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    bar.update(len(rows), total=len(rows))  # after a 429 fewer pulls were made than planned
    if refused.is_set():
        notes.append(
            "Docker Hub answered 429 to a direct pull (another client spent the budget meanwhile): "
            "the remaining direct Docker Hub pulls were not made"
        )
    rows.sort(key=lambda r: (r["_index"], _PATH_ORDER[r["path"]], r["rep"]))
    return HostComparison(samples.frame([{k: x for k, x in r.items() if k != "_index"} for r in rows]), notes)
