"""The run's figures: what goes into run.json ``results``, the history store and the threshold checks.

Also the Nexus Community Edition usage forecast. Facts: Community Edition
(3.77+) is capped per instance; from 3.87 the caps are **100,000 requests per day** (a rolling 24 h) and
**40,000 components**, with a 10-day grace warning (sonatype/nexus-public#883, #814); failed requests,
401s included, count too (#736) — and every docker pull starts with a 401 and a token request. The
separate 20,000 requests/day figure in the status page is the embedded-database recommendation, not the
cap (#581, #591). Caps are parameters (``verification.ce_requests_per_day``, ``ce_components``).
Sonatype's public pages: help.sonatype.com/en/usage-center.html ("Usage limitations for Community Edition",
named in #1057), help.sonatype.com/en/usage-metrics.html#request-metrics (the rolling day, #814) and the
3.87.0 release notes (the 40,000 / 100,000 adjustment, #883).

A forecast at or above the requests cap is flagged (``Usage.over_requests_cap``, a table row, run.json):
over the cap a Community Edition instance warns, then blocks new components after the grace period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from runbook_lib.params import RunbookParams
from runbook_lib.verify import samples
from runbook_lib.verify.hostpull import HostComparison
from runbook_lib.verify.mirrorproof import Counters, NexusContent, Proof
from runbook_lib.verify.nodepull import BYPASSED, FALLBACK, NodeComparison
from runbook_lib.verify.ratelimit import Headroom, anonymous


def _clean(value: Any) -> Any:
    """NaN -> None, numpy scalars -> float, recursively (run.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return None if f != f else round(f, 4)


def _medians_by_image(df: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    if df.empty:
        return {}
    return {image: samples.medians(group) for image, group in df.groupby("image", sort=False)}


Medians = dict[str, dict[str, float | None]]  # image -> sample label (direct, mirror-cold ...) -> seconds


@dataclass(frozen=True)
class HostFigures:
    """Pulls from the runbook host."""

    medians_s: Medians
    speedup: dict[str, float | None]  # image -> median direct / median warm mirror
    set_speedup: float | None  # over the whole image set
    failed: int
    samples: int
    notes: list[str]


@dataclass(frozen=True)
class NodeFigures:
    """Pulls on the nodes of each NodePool (kubelet events)."""

    measured: bool
    pools: dict[str, list[str]]  # NodePool -> Ready nodes used
    medians_s: dict[str, Medians]  # NodePool -> image -> label -> seconds
    speedup: dict[str, float | None]
    speedup_by_pool: dict[str, dict[str, float | None]]
    set_speedup: float | None
    failed: int
    samples: int
    notes: list[str]


@dataclass(frozen=True)
class BypassedPull:
    pool: str
    node: str
    image: str
    served_by: str


@dataclass(frozen=True)
class RateLimitFigures:
    checks: list[dict[str, Any]]  # Headroom records
    anonymous_remaining: int | None  # None: unknown or unlimited
    anonymous_limit: int | None
    window_s: int | None
    source: str | None
    unlimited: bool


@dataclass(frozen=True)
class Figures:
    """The run's figures: read by the thresholds, the charts and the history; ``record()`` is run.json's."""

    host: HostFigures
    node: NodeFigures
    bypassed: int
    bypassed_pulls: list[BypassedPull]
    ratelimit: RateLimitFigures
    proof: dict[str, Any] | None  # Proof.record()

    def path(self, scope: str) -> HostFigures | NodeFigures:
        return self.node if scope == "node" else self.host

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Figures:
        return cls(
            host=HostFigures(**d["host"]),
            node=NodeFigures(**d["node"]),
            bypassed=d["bypassed"],
            bypassed_pulls=[BypassedPull(**b) for b in d["bypassed_pulls"]],
            ratelimit=RateLimitFigures(**d["ratelimit"]),
            proof=d["proof"],
        )


def figures(
    params: RunbookParams,
    host: HostComparison,
    node: NodeComparison,
    proof: Proof | None,
    headroom: list[Headroom],
) -> Figures:
    n = node.samples
    node_medians = (
        {pool: _medians_by_image(group) for pool, group in n.groupby("pool", sort=False)}
        if not n.empty
        else {}
    )
    anon = anonymous(headroom)
    record = _clean(
        {
            "host": {
                "medians_s": _medians_by_image(host.samples),
                "speedup": host.speedups(),
                "set_speedup": host.set_speedup(),
                "failed": int((~host.samples["ok"]).sum()) if not host.samples.empty else 0,
                "samples": len(host.samples),
                "notes": host.notes,
            },
            "node": {
                "measured": node.measured,
                "pools": node.pools,
                "medians_s": node_medians,
                "speedup": node.speedups(),
                "speedup_by_pool": node.speedups_by_pool(),
                "set_speedup": node.set_speedup(),
                "failed": int((~n["ok"]).sum()) if not n.empty else 0,
                "samples": len(n),
                "notes": node.notes,
            },
            "bypassed": node.bypassed,
            "bypassed_pulls": [
                {"pool": r.pool, "node": r.node, "image": r.pulled, "served_by": r.served_by}
                for r in node.bypass_rows().itertuples()
            ]
            if not n.empty
            else [],
            "ratelimit": {
                "checks": [h.record() for h in headroom],
                "anonymous_remaining": None if anon is None or anon.unlimited else anon.remaining,
                "anonymous_limit": None if anon is None else anon.limit,
                "window_s": None if anon is None else anon.window_s,
                "source": None if anon is None else anon.source,
                "unlimited": bool(anon and anon.unlimited),
            },
            "proof": proof.record() if proof else None,
        }
    )
    return Figures.from_record(record)


def headline(fig: Figures) -> dict[str, Any]:
    """The speed-up that counts: the node path when it was measured, else the runbook host's."""
    node_set = fig.node.set_speedup
    return {
        "speedup_scope": "node" if node_set is not None else "host",
        "set_speedup": node_set if node_set is not None else fig.host.set_speedup,
    }


def results(fig: Figures, use: Usage | None, demo: Any = None) -> dict[str, Any]:
    """run.json ``results`` of the stage: the figures, the headline speed-up, usage and the demonstration."""
    return _clean(
        {
            **fig.record(),
            **headline(fig),
            "usage": use.record() if use else None,
            "rate_limit_demonstration": demo.record() if demo is not None else None,
        }
    )


# -- Community Edition usage ---------------------------------------------------------------------------
@dataclass
class Usage:
    requests_cap: int
    components_cap: int
    counters: str
    requests_counted: int | None  # the source's own figure (lab: since start; Nexus gauge: its window)
    requests_moved: int | None  # during this run's mirror pulls
    mirror_pulls: int
    requests_per_pull: float | None
    expected_pulls_per_day: int | None
    forecast_requests_per_day: float | None
    components: int | None
    components_complete: bool
    components_per_day: float | None  # growth, from the history store
    days_to_component_cap: float | None
    edition: str | None = None  # nexus.expect_edition; unknown is treated as Community Edition

    @property
    def caps_apply(self) -> bool:
        # Pro has no caps; OSS (before 3.77) had only the embedded-database recommendation, no cap
        return self.edition not in ("PRO", "OSS")

    @property
    def over_requests_cap(self) -> bool | None:
        """Does the forecast reach the requests cap? None without a forecast (or on Pro: no cap)."""
        if self.forecast_requests_per_day is None or not self.caps_apply:
            return None
        return self.forecast_requests_per_day >= self.requests_cap

    def warnings(self) -> list[str]:
        """What the forecast flags, in words (empty when nothing is near a cap)."""
        out = []
        if self.over_requests_cap:
            out.append(
                f"forecast {self.forecast_requests_per_day:,.0f} requests/day "
                f"({self.requests_per_pull:,.1f} per pull x {self.expected_pulls_per_day:,} pulls/day) "
                f"reaches the Community Edition cap of {self.requests_cap:,}/day: plan a Pro licence, or "
                "fewer pulls (a warm node image cache)"
            )
        if self.caps_apply and self.days_to_component_cap is not None and self.days_to_component_cap < 30:
            out.append(
                f"the component count reaches the Community Edition cap of {self.components_cap:,} in "
                f"{self.days_to_component_cap:,.0f} days: shorten the cleanup policy's retention"
            )
        return out

    def record(self) -> dict[str, Any]:
        return _clean(
            {**asdict(self), "over_requests_cap": self.over_requests_cap, "warnings": self.warnings()}
        )

    def table(self) -> pd.DataFrame:
        def fmt(v: Any) -> Any:
            return "unknown" if v is None else (f"{v:,.1f}" if isinstance(v, float) else v)

        rows = [
            ("requests counted by " + self.counters, fmt(self.requests_counted)),
            ("requests the mirror counted during this run's pulls", fmt(self.requests_moved)),
            ("pulls through the mirror in this run", self.mirror_pulls),
            ("requests per pull (token, ping, manifests, blobs, 401s)", fmt(self.requests_per_pull)),
            (
                "expected pulls per day (verification.expected_pulls_per_day)",
                fmt(self.expected_pulls_per_day),
            ),
            ("forecast requests per day", fmt(self.forecast_requests_per_day)),
            (
                "cap: requests per day",
                f"{self.requests_cap:,}" if self.caps_apply else f"none ({self.edition})",
            ),
            (
                "forecast against the requests cap",
                "unknown"
                if self.over_requests_cap is None
                else "AT OR OVER the cap"
                if self.over_requests_cap
                else "below the cap",
            ),
            (
                "components in the proxy repositories" + ("" if self.components_complete else " (at least)"),
                fmt(self.components),
            ),
            ("component growth per day (history of at least a day)", fmt(self.components_per_day)),
            ("days until the component cap", fmt(self.days_to_component_cap)),
            ("cap: components", f"{self.components_cap:,}"),
        ]
        return pd.DataFrame(rows, columns=["figure", "value"])


def mirror_pulls(host: HostComparison, node: NodeComparison) -> int:
    h, n = host.samples, node.samples
    count = int((h["path"].eq("mirror") & h["ok"]).sum()) if not h.empty else 0
    if not n.empty:
        count += int((n["path"].eq("mirror") & n["ok"] & ~n["served_by"].isin([BYPASSED, FALLBACK])).sum())
    return count


MIN_TREND_DAYS = 1.0  # a slope over minutes extrapolates noise: growth needs a day of history


def growth_per_day(history: pd.DataFrame, column: str) -> float | None:
    """Least-squares slope of a metric over time, per day; None until the points span MIN_TREND_DAYS."""
    if history.empty or column not in history:
        return None
    pts = history[["at", column]].dropna()
    if len(pts) < 2:
        return None
    days = (pts["at"] - pts["at"].min()).dt.total_seconds() / 86400.0
    if days.max() - days.min() < MIN_TREND_DAYS:
        return None
    x, y = days.astype(float), pts[column].astype(float)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def usage(
    params: RunbookParams,
    content: NexusContent,
    after: Counters | None,
    proof: Proof | None,
    host: HostComparison,
    node: NodeComparison,
    history: pd.DataFrame | None = None,
) -> Usage:
    v = params.verification
    pulls = mirror_pulls(host, node)
    moved = proof.requests_moved if proof else None
    per_pull = moved / pulls if moved is not None and pulls else None
    forecast = (
        per_pull * v.expected_pulls_per_day if per_pull is not None and v.expected_pulls_per_day else None
    )
    components, complete = None, True
    if after is not None and after.components_total is not None:
        components = after.components_total
    else:
        counted = content.component_count(sorted({u.name for u in params.upstreams}))
        if counted is not None:
            components, complete = counted
    points = history if history is not None and not history.empty else pd.DataFrame(columns=["at"])
    if components is not None:  # this run's count is the newest point of the trend
        now = pd.DataFrame({"at": [pd.Timestamp.now(tz="UTC")], "nexus.components": [float(components)]})
        points = pd.concat([points, now], ignore_index=True) if not points.empty else now
    growth = growth_per_day(points, "nexus.components")
    days = None
    if components is not None and growth and growth > 0:
        days = max(v.ce_components - components, 0) / growth
    return Usage(
        v.ce_requests_per_day,
        v.ce_components,
        after.source if after else "no counters",
        after.requests_total if after else None,
        moved,
        pulls,
        per_pull,
        v.expected_pulls_per_day,
        forecast,
        components,
        complete,
        growth,
        days,
        params.nexus.expect_edition,
    )


# -- history rows ----------------------------------------------------------------------------------------
def history_rows(host: HostComparison, node: NodeComparison) -> list[dict[str, Any]]:
    rows = []
    for scope, df, by in (
        ("host", host.samples, ("image", "label")),
        ("node", node.samples, ("pool", "image", "label")),
    ):
        if df.empty:
            continue
        for r in samples.summarize(df, by).to_dict("records"):
            rows.append(
                {
                    "scope": scope,
                    "pool": r.get("pool") or "",
                    "image": r["image"],
                    "label": r["label"],
                    "median_s": None if pd.isna(r["median_s"]) else float(r["median_s"]),
                    "n": int(r["n"]),
                }
            )
    return rows


def history_metrics(fig: Figures, use: Usage | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "host.set_speedup": fig.host.set_speedup,
        "node.set_speedup": fig.node.set_speedup,
        "bypassed": fig.bypassed,
        "ratelimit.remaining": fig.ratelimit.anonymous_remaining,
    }
    if use is not None:
        out.update(
            {
                "nexus.requests": use.requests_counted,
                "nexus.components": use.components,
                "nexus.requests_per_pull": use.requests_per_pull,
            }
        )
    return out


def run_id(run_dir: Any) -> str:
    """The runner's run folder name (unique per run); a timestamp when the notebook runs by hand."""
    from pathlib import Path

    folder = Path(run_dir)
    if (folder / "run.json").exists() or folder.name[:8].isdigit():
        return folder.name
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-manual"
