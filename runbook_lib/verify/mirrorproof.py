"""The Nexus side of the proof: is the image in the right proxy repository, and did the mirror see the pulls.

Content: ``GET /service/rest/v1/search?repository=<proxy>&format=docker&name=<image>&version=<tag>``. Docker
components are named by image path with namespace (``library/nginx``) and versioned by tag; search does not
expand groups, so the proxy is searched by name; search is index based and may lag a proxy pull by a moment
(sonatype/nexus-public SearchResource, index based), so presence after a pull is polled briefly.

Request counters — what moved while our pulls ran — come from one of two places:
- ``verification.counters_url``: per-repository counters as JSON ``{repo: {"requests": N, ...}}``. The lab's
  Nexus emulator serves them at ``/_lab/counters``; real Nexus has no such endpoint, so production leaves it
  unset. Per-repository counts make the bypass check exact.
- ``/service/metrics/data`` on Nexus (Dropwizard metrics JSON, needs ``nx-metrics-all``): the usage gauges
  ``nexus.analytics.content_request_count`` and ``nexus.analytics.component_total_count`` that the Community
  Edition usage page is built from (sonatype/nexus-public#772 and #1017, maintainers' answers). They are
  server-wide: other clients' requests move them too, so a delta proves little on a busy server, but no
  delta at all while a node pulled a mirrored name does show the pull went elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from runbook_lib import net
from runbook_lib.nexus.client import NexusClient, NexusError, NexusUnreachable
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import ImageRef
from runbook_lib.secrets import REDACTOR, SecretResolver
from runbook_lib.verify import endpoints

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


REQUEST_GAUGE = "nexus.analytics.content_request_count"
COMPONENT_GAUGE = "nexus.analytics.component_total_count"
MAX_COMPONENT_PAGES = 50  # counting through the components API costs requests too (they count on CE)


# -- content -------------------------------------------------------------------------------------------
class NexusContent:
    """Components of the proxy repositories, through the REST API as admin; None answers mean "unknown"."""

    def __init__(self, client: NexusClient | None, problem: str = "") -> None:
        self.client = client
        self.problem = problem

    @classmethod
    def connect(
        cls,
        params: RunbookParams,
        secret: SecretResolver,
        api_client: ApiClient | Callable[[], ApiClient] | None = None,
    ) -> NexusContent:
        """Admin login; `api_client` (a client, or a callable making one) is only needed to read the generated
        password from the Nexus pod, so a callable is not called otherwise."""
        from runbook_lib.nexus import session

        try:
            if callable(api_client):
                api_client = api_client() if params.nexus.initial_password_pod else None
            return cls(session.admin_login(params, secret, api_client).client)
        except Exception as err:  # noqa: BLE001 - NexusError, unreachable, secret or kubeconfig problems
            return cls(None, REDACTOR.scrub(f"cannot log in to Nexus: {type(err).__name__}: {err}"))

    @property
    def status(self) -> str:
        return (
            "Nexus REST API: connected as admin"
            if self.client
            else f"Nexus REST API unavailable: {self.problem}"
        )

    def find(self, up: Upstream, image: ImageRef) -> list[dict[str, Any]] | None:
        if self.client is None:
            return None
        try:
            items = self.client.search(
                repository=up.name, format="docker", name=image.repository, version=image.reference
            )
            return [
                c for c in items if c.get("name") == image.repository and c.get("version") == image.reference
            ]
        except (NexusError, NexusUnreachable) as err:
            self.problem = str(err)
            return None

    def is_cached(self, up: Upstream, image: ImageRef) -> bool | None:
        found = self.find(up, image)
        return None if found is None else bool(found)

    def wait_for(
        self,
        up: Upstream,
        image: ImageRef,
        timeout_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool | None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.is_cached(up, image)
            if found is not False or time.monotonic() >= deadline:
                return found
            sleep(0.5)

    def component_count(self, repositories: list[str]) -> tuple[int, bool] | None:
        """(count, complete) over the repositories; incomplete when the page cap was reached."""
        if self.client is None:
            return None
        total = 0
        try:
            for repo in repositories:
                query: dict[str, Any] = {"repository": repo}
                for _ in range(MAX_COMPONENT_PAGES):
                    page = self.client.get_json("/v1/components", f"components of {repo}", query)
                    total += len(page.get("items", []))
                    if not page.get("continuationToken"):
                        break
                    query["continuationToken"] = page["continuationToken"]
                else:
                    return total, False
        except (NexusError, NexusUnreachable) as err:
            self.problem = str(err)
            return None
        return total, True


# -- counters ------------------------------------------------------------------------------------------
@dataclass
class Counters:
    taken_at: float
    source: str
    per_repo: dict[str, dict[str, int]] | None = None
    requests_total: int | None = None  # requests the source has counted (all repositories)
    components_total: int | None = None
    problems: list[str] = field(default_factory=list)

    def requests(self, repo: str | None = None) -> int | None:
        if self.per_repo is not None and repo is not None:
            return int((self.per_repo.get(repo) or {}).get("requests", 0))
        return self.requests_total


class CounterSource:
    """Snapshots of request counters from the configured source(s); see the module docstring."""

    def __init__(self, params: RunbookParams, content: NexusContent) -> None:
        self.params = params
        self.content = content

    @property
    def per_repository(self) -> bool:
        return self.params.verification.counters_url is not None

    @property
    def description(self) -> str:
        v = self.params.verification
        if v.counters_url:
            return f"per-repository counters from {v.counters_url}"
        if v.nexus_metrics:
            return "Nexus usage gauges from /service/metrics/data (server-wide)"
        return "no request counters configured"

    def describe(self, snap: Counters) -> str:
        lines = [f"counters: {self.description}"]
        if snap.requests_total is not None:
            lines.append(f"  requests counted so far: {snap.requests_total:,}")
        if snap.components_total is not None:
            lines.append(f"  components (Nexus gauge): {snap.components_total:,}")
        lines += [f"  unavailable: {p}" for p in snap.problems]
        return "\n".join(lines)

    def snapshot(self) -> Counters:
        v = self.params.verification
        snap = Counters(time.time(), self.description)
        if v.counters_url:
            try:
                with net.client(self.params.resolve, timeout=10) as http:
                    resp = http.get(v.counters_url)
                resp.raise_for_status()
                snap.per_repo = {k: dict(c) for k, c in resp.json().items() if isinstance(c, dict)}
                snap.requests_total = sum(int(c.get("requests", 0)) for c in snap.per_repo.values())
            except (httpx.HTTPError, ValueError, AttributeError) as err:
                snap.problems.append(f"counters_url: {type(err).__name__}: {err}")
        if v.nexus_metrics and self.content.client is not None:
            gauges = self._gauges(snap)
            if gauges:
                if snap.requests_total is None and REQUEST_GAUGE in gauges:
                    snap.requests_total = int(gauges[REQUEST_GAUGE])
                if COMPONENT_GAUGE in gauges:
                    snap.components_total = int(gauges[COMPONENT_GAUGE])
        return snap

    def _gauges(self, snap: Counters) -> dict[str, float]:
        client = self.content.client
        assert client is not None
        try:
            resp = client.http.get(f"{self.params.nexus.url}/service/metrics/data")
        except httpx.HTTPError as err:
            snap.problems.append(f"metrics: {type(err).__name__}: {err}")
            return {}
        if resp.status_code != 200:
            snap.problems.append(f"metrics: /service/metrics/data answered {resp.status_code}")
            return {}
        try:
            gauges = resp.json().get("gauges") or {}
            return {
                k: float(g["value"])
                for k, g in gauges.items()
                if k in (REQUEST_GAUGE, COMPONENT_GAUGE) and isinstance(g, dict) and "value" in g
            }
        except (ValueError, TypeError, AttributeError) as err:
            snap.problems.append(f"metrics: unreadable JSON ({err})")
            return {}


def delta(before: Counters | None, after: Counters | None, repo: str | None) -> int | None:
    if before is None or after is None:
        return None
    a, b = after.requests(repo), before.requests(repo)
    return None if a is None or b is None else a - b


# -- proof ---------------------------------------------------------------------------------------------
@dataclass
class ImageProof:
    image: str
    repository: str  # the proxy that must hold it
    present: bool | None  # None: could not be asked
    detail: str

    def record(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "repository": self.repository,
            "present": self.present,
            "detail": self.detail,
        }


@dataclass
class Proof:
    images: list[ImageProof]
    counters: str
    requests_moved: int | None  # over the whole verification, for the endpoint repositories
    problems: list[str] = field(default_factory=list)

    def table(self):
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "image": p.image,
                    "proxy repository": p.repository,
                    "cached in Nexus": {True: "yes", False: "NO", None: "unknown"}[p.present],
                    "detail": p.detail,
                }
                for p in self.images
            ]
        )

    def record(self) -> dict[str, Any]:
        return {
            "images": [p.record() for p in self.images],
            "counters": self.counters,
            "requests_moved": self.requests_moved,
            "problems": self.problems,
        }


def prove(
    params: RunbookParams,
    content: NexusContent,
    source: CounterSource,
    before: Counters,
    after: Counters | None = None,
) -> Proof:
    """After the pulls: every mirrored image is in its proxy repository, and the counters moved."""
    after = after or source.snapshot()
    proofs: list[ImageProof] = []
    repos: set[str] = set()
    for text in params.verification.images:
        ref = ImageRef.parse(text)
        up = endpoints.upstream_for(params, ref)
        if up is None:
            proofs.append(ImageProof(text, "-", None, f"no upstream mirrors {ref.registry}"))
            continue
        repos.add(up.endpoint_repository)
        present = content.wait_for(up, ref)
        detail = {
            True: f"component {ref.repository}:{ref.reference} found by search",
            False: "not found by search: the mirror did not cache it",
            None: content.problem or "Nexus REST API unavailable",
        }[present]
        proofs.append(ImageProof(text, up.name, present, detail))
    moved: int | None = None
    if source.per_repository:
        parts = [delta(before, after, r) for r in sorted(repos)]
        moved = None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    else:
        moved = delta(before, after, None)
    return Proof(proofs, source.description, moved, before.problems + after.problems)
