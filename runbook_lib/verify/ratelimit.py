"""Docker Hub pull rate limit: how much headroom is left, and what happens when it runs out.

How to read it (docker/docs content/manuals/docker-hub/usage/pulls.md):
1. a token from the token service named in the registry's 401 challenge (``auth.docker.io/token``), for
   ``repository:ratelimitpreview/test:pull`` — anonymous, or with Basic credentials to see an account's limit;
2. ``HEAD /v2/ratelimitpreview/test/manifests/latest``: a HEAD is not a pull, it costs nothing;
3. ``ratelimit-limit: 100;w=21600`` and ``ratelimit-remaining: 76;w=21600`` — read the window from ``w=``
   rather than assuming 6 h — and ``docker-ratelimit-source`` (the IPv4 address or IPv6 /64 being charged).
   No rate-limit headers at all means unlimited (a paid account, or a partner IP).

Limits are charged per source address: what counts for nodes is what their NAT egress address sees, which
the runbook host only shares when it sits behind the same NAT.

The demonstration burns the budget on purpose: manifest GETs until Docker Hub answers 429, then a direct
pull (refused) and a pull through the warm mirror (served from Nexus's cache). It is off by default.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from runbook_lib import progress as live
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import RegistryClient, RegistryError
from runbook_lib.registry.pull import PullResult, pull
from runbook_lib.secrets import REDACTOR, SecretResolver
from runbook_lib.verify import endpoints

PREVIEW_REPOSITORY = "ratelimitpreview/test"
PREVIEW_TAG = "latest"
_HEADER = re.compile(r"^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?")


def parse_ratelimit(value: str | None) -> tuple[int, int | None] | None:
    """'100;w=21600' -> (100, 21600); '100' -> (100, None); absent or unreadable -> None."""
    if not value:
        return None
    m = _HEADER.match(value)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


@dataclass
class Headroom:
    who: str  # "anonymous" or "user NAME"
    checked_from: str
    limit: int | None = None
    remaining: int | None = None
    window_s: int | None = None
    source: str | None = None  # docker-ratelimit-source
    unlimited: bool = False
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_headers(cls, who: str, checked_from: str, status: int, headers: dict[str, str]) -> Headroom:
        lower = {k.lower(): v for k, v in headers.items()}
        limit = parse_ratelimit(lower.get("ratelimit-limit"))
        remaining = parse_ratelimit(lower.get("ratelimit-remaining"))
        found = cls(who, checked_from, status=status, source=lower.get("docker-ratelimit-source"))
        if limit is None and remaining is None:
            found.unlimited = status == 200  # no headers on a good answer: no limit applies
            return found
        found.limit = limit[0] if limit else None
        found.remaining = remaining[0] if remaining else None
        found.window_s = (limit[1] if limit else None) or (remaining[1] if remaining else None)
        return found


def docker_hub(params: RunbookParams) -> Upstream | None:
    try:
        return params.upstream("docker.io")
    except KeyError:
        return None


def check(client: RegistryClient, who: str, checked_from: str) -> Headroom:
    """HEAD the preview manifest through `client` (token flow included) and read the headers."""
    try:
        m = client.manifest(PREVIEW_REPOSITORY, PREVIEW_TAG, method="HEAD")
    except RegistryError as err:  # the token service refused (wrong credentials: 401)
        return Headroom(who, checked_from, status=err.status, error=str(err))
    except httpx.HTTPError as err:
        return Headroom(who, checked_from, error=REDACTOR.scrub(f"{type(err).__name__}: {err}"))
    found = Headroom.from_headers(who, checked_from, m.status, m.headers)
    if m.status not in (200, 429):  # 429 still carries the headers (remaining 0)
        found.error = f"HEAD {PREVIEW_REPOSITORY}:{PREVIEW_TAG} answered {m.status}"
    return found


def headroom(
    params: RunbookParams, secret: SecretResolver, source_address: str | None = None
) -> list[Headroom]:
    """Anonymous headroom, and the account's when the docker.io upstream has credentials (what Nexus uses)."""
    up = docker_hub(params)
    if up is None:
        return []
    where = "runbook host" + (f" (from {source_address})" if source_address else "")
    timeout = params.verification.pull_timeout_s
    with endpoints.direct_client(params, up, timeout, source_address) as client:
        found = [check(client, "anonymous", where)]
    if up.credentials:
        password = secret(up.credentials.password, up.credentials.username)
        with RegistryClient(
            up.remote_url,
            up.credentials.username,
            password,
            timeout=timeout,
            transport=endpoints.transport(params, source_address),
        ) as client:
            found.append(check(client, f"user {up.credentials.username}", where))
    return found


def anonymous(found: list[Headroom]) -> Headroom | None:
    return next((h for h in found if h.who == "anonymous"), None)


def table(found: list[Headroom]):
    import pandas as pd

    rows = []
    for h in found:
        window = f"{h.window_s / 3600:g} h" if h.window_s else ""
        rows.append(
            {
                "who": h.who,
                "from": h.checked_from,
                "limit": "unlimited" if h.unlimited else h.limit,
                "remaining": h.remaining,
                "window": window,
                "charged source": h.source,
                "answer": h.error or h.status,
            }
        )
    return pd.DataFrame(rows)


# -- demonstration -------------------------------------------------------------------------------------
@dataclass
class Demonstration:
    image: str
    source_address: str | None
    skipped: str | None = None
    before: Headroom | None = None
    manifest_gets: int = 0
    first_refusal_after: int | None = None  # GETs that were served before the first 429
    warm_up: PullResult | None = None
    direct: PullResult | None = None
    mirror: PullResult | None = None

    @property
    def shown(self) -> bool:
        """Docker Hub refused the direct pull with 429 while the warm mirror served the same image."""
        return bool(self.direct and self.direct.status == 429 and self.mirror and self.mirror.ok)

    def record(self) -> dict[str, Any]:
        def pull_record(p: PullResult | None) -> dict[str, Any] | None:
            return (
                None
                if p is None
                else {"ok": p.ok, "status": p.status, "code": p.code, "seconds": p.total_s, "error": p.error}
            )

        return {
            "image": self.image,
            "source_address": self.source_address,
            "skipped": self.skipped,
            "before": self.before.record() if self.before else None,
            "manifest_gets": self.manifest_gets,
            "first_refusal_after": self.first_refusal_after,
            "direct": pull_record(self.direct),
            "mirror": pull_record(self.mirror),
            "shown": self.shown,
        }

    def table(self):
        import pandas as pd

        if self.skipped:
            return pd.DataFrame([{"step": "demonstration", "result": self.skipped}])
        before = self.before
        rows = [
            {"step": "1. warm the mirror (pull through it)", "result": _outcome(self.warm_up)},
            {
                "step": "2. Docker Hub headroom before",
                "result": "unlimited"
                if before and before.unlimited
                else f"{before.remaining} of {before.limit} left"
                if before
                else "unknown",
            },
            {
                "step": f"3. direct manifest GETs until refused ({self.manifest_gets} sent)",
                "result": f"429 after {self.first_refusal_after} served"
                if self.first_refusal_after is not None
                else "never refused",
            },
            {"step": "4. direct pull", "result": _outcome(self.direct)},
            {"step": "5. pull through the warm mirror", "result": _outcome(self.mirror)},
        ]
        return pd.DataFrame(rows)


def _outcome(p: PullResult | None) -> str:
    if p is None:
        return "not run"
    if p.ok:
        return f"ok in {p.total_s:.2f} s"
    return f"failed: {p.status or ''} {p.code or ''} {p.error or ''}".strip()


def demonstrate(params: RunbookParams, secret: SecretResolver, max_requests: int = 1000) -> Demonstration:
    """Exhaust the direct budget (from verification.demo_source_address), then pull direct and via the
    mirror."""
    v = params.verification
    up = docker_hub(params)
    image = f"docker.io/{PREVIEW_REPOSITORY}:{PREVIEW_TAG}"
    demo = Demonstration(image, v.demo_source_address)
    if not v.demonstrate_rate_limit:
        demo.skipped = "off (verification.demonstrate_rate_limit: false) — it burns real Docker Hub quota"
        return demo
    if up is None:
        demo.skipped = "no docker.io upstream in the parameters"
        return demo
    src, timeout = v.demo_source_address, v.pull_timeout_s
    credentials = endpoints.mirror_credentials(params, secret)
    with endpoints.mirror_client(params, up, credentials, timeout, src) as mirror:
        demo.warm_up = pull(mirror, PREVIEW_REPOSITORY, PREVIEW_TAG, v.platform, v.max_parallel_layers)
    with endpoints.direct_client(params, up, timeout, src) as direct:
        demo.before = check(direct, "anonymous", "runbook host" + (f" (from {src})" if src else ""))
        if demo.before.unlimited:
            demo.skipped = "Docker Hub sent no rate-limit headers: this source is not limited"
            return demo
        budget = min(max_requests, (demo.before.remaining or 0) + 5)
        bar = live.tracker("rate-limit demonstration", budget, "GET", "direct manifest GETs (s) until 429")
        for _ in range(budget):
            demo.manifest_gets += 1
            sent, n = time.perf_counter(), demo.manifest_gets
            status = direct.manifest(PREVIEW_REPOSITORY, PREVIEW_TAG).status
            served = "429 refused" if status == 429 else "served"
            bar.advance(f"GET {n}: {status}", value=time.perf_counter() - sent, series=served)
            if status == 429:
                demo.first_refusal_after = n - 1
                bar.update(n, total=n, label=f"429 after {n - 1} served")  # the budget was not all needed
                break
        demo.direct = pull(direct, PREVIEW_REPOSITORY, PREVIEW_TAG, v.platform, v.max_parallel_layers)
    with endpoints.mirror_client(params, up, credentials, timeout, src) as mirror:
        demo.mirror = pull(mirror, PREVIEW_REPOSITORY, PREVIEW_TAG, v.platform, v.max_parallel_layers)
    return demo
