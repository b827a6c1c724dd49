"""Pull-time comparison from the runbook host: each image, direct and through the mirror, repeated.

Per image, in this order: ``repetitions`` direct pulls from the upstream, then ``repetitions`` pulls through
the mirror. Before the first mirror pull the components API is asked whether Nexus already holds the image,
and the sample is labelled accordingly (see samples.py): a run only shows a cold sample when the cache
really was cold. Each sample uses a fresh client — new connections, new token — so both routes pay the same
setup; within a pull, connections are reused and blobs download in parallel up to the bound.

Direct pulls from Docker Hub count against its rate limit (one pull per image per repetition). When the
headroom check says fewer than ``verification.ratelimit_reserve`` pulls would remain afterwards, the direct
Docker Hub samples are skipped and a note says so: a verification run must not cause the 429s it is meant
to prevent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import ImageRef, RegistryClient
from runbook_lib.registry.pull import PullResult, pull
from runbook_lib.secrets import SecretResolver
from runbook_lib.verify import endpoints, samples
from runbook_lib.verify.mirrorproof import NexusContent
from runbook_lib.verify.ratelimit import Headroom, anonymous


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


def docker_hub_budget_note(params: RunbookParams, found: list[Headroom] | None, planned: int) -> str | None:
    """A reason to skip direct Docker Hub pulls, or None when the budget allows them."""
    h = anonymous(found or [])
    if h is None or h.unlimited or h.remaining is None:
        return None
    reserve = params.verification.ratelimit_reserve
    if h.remaining - planned < reserve:
        return (
            f"direct Docker Hub pulls skipped: {h.remaining} pulls left for {h.source or 'this host'}, "
            f"{planned} planned, reserve {reserve} (verification.ratelimit_reserve)"
        )
    return None


def compare(
    params: RunbookParams,
    secret: SecretResolver,
    content: NexusContent,
    headroom: list[Headroom] | None = None,
    pull_one: Callable[..., PullResult] = pull,
) -> HostComparison:
    v = params.verification
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    credentials = endpoints.mirror_credentials(params, secret)
    refs = [(text, ImageRef.parse(text)) for text in v.images]
    hub_images = sum(1 for _, ref in refs if ref.registry == "docker.io")
    skip_hub = docker_hub_budget_note(params, headroom, hub_images * v.repetitions)
    if skip_hub and hub_images:
        notes.append(skip_hub)

    def measure(client: RegistryClient, ref: ImageRef) -> PullResult:
        with client:
            return pull_one(client, ref.repository, ref.reference, v.platform, v.max_parallel_layers)

    for text, ref in refs:
        up: Upstream | None = endpoints.upstream_for(params, ref)
        if up is None:
            notes.append(f"{text}: no upstream in the parameters mirrors {ref.registry}; not measured")
            continue
        if not (skip_hub and up.registry == "docker.io"):
            for rep in range(1, v.repetitions + 1):
                result = measure(endpoints.direct_client(params, up, v.pull_timeout_s), ref)
                rows.append(sample_row(result, text, "direct", samples.DIRECT, rep))
        cached = content.is_cached(up, ref)
        warmed = False  # warm only after a pull through the mirror succeeded in this run
        for rep in range(1, v.repetitions + 1):
            label = samples.MIRROR_WARM if warmed else samples.first_mirror_label(cached)
            result = measure(endpoints.mirror_client(params, up, credentials, v.pull_timeout_s), ref)
            rows.append(sample_row(result, text, "mirror", label, rep))
            warmed = warmed or result.ok
    return HostComparison(samples.frame(rows), notes)
