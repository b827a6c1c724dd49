"""Checks that decide whether a verification run passes — the contract for scheduled runs.

Always checked: the mirror served every pull through it (runbook host and nodes), Nexus holds each image in
the right proxy repository, node pulls of mirrored names did not bypass the mirror (unless
``thresholds.allow_bypass``), the node path was measured when ``verification.node_pull`` is on, and the
rate-limit demonstration showed what it should when it ran. From ``verification.thresholds``: minimum warm
speed-up, maximum warm pull time, minimum Docker Hub pulls remaining.

A failed check fails the stage: ``enforce`` records the failure and raises StageFailed, so ``runbook run``
exits 1 and run.json says why. Direct pulls that failed are not failures of the mirror; they show up in the
tables, and a speed-up that could not be measured because of them fails the speed-up check.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.params import RunbookParams
from runbook_lib.plan import Check
from runbook_lib.verify import nodepull
from runbook_lib.verify.hostpull import HostComparison
from runbook_lib.verify.nodepull import NodeComparison
from runbook_lib.verify.ratelimit import Demonstration
from runbook_lib.verify.report import Figures


def _failed_mirror_pulls(df: pd.DataFrame) -> list[str]:
    if df.empty:
        return []
    bad = df[df["path"].eq("mirror") & ~df["ok"]]
    return [
        f"{r.pool + '/' + r.node + ': ' if r.node else ''}{r.pulled}: {r.error}" for r in bad.itertuples()
    ]


def evaluate(
    params: RunbookParams,
    fig: Figures,
    host: HostComparison,
    node: NodeComparison,
    demo: Demonstration | None = None,
) -> list[Check]:
    t = params.verification.thresholds
    checks: list[Check] = []

    bypassed = fig.bypassed
    if bypassed:
        listed = [f"{b.pool}/{b.node} {b.image}: {b.served_by}" for b in fig.bypassed_pulls]
        where = "; ".join(listed[:5]) + (f" (+{len(listed) - 5} more)" if len(listed) > 5 else "")
        detail = f"{bypassed} node pull(s) of mirrored names bypassed the mirror ({where})"
        detail += " — tolerated (thresholds.allow_bypass)" if t.allow_bypass else ""
    else:
        detail = "every node pull of a mirrored name reached the mirror" if node.measured else "no node pulls"
    checks.append(Check("no node pull bypassed the mirror", bypassed == 0 or t.allow_bypass, detail))

    failed = _failed_mirror_pulls(host.samples) + _failed_mirror_pulls(node.samples)
    detail = "; ".join(failed[:5]) + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else "")
    if params.security.mode == "authenticated" and any("answered 401" in f for f in failed):
        # The runbook pulls with the credential the nodes were given: a 401 means Nexus no longer takes it.
        detail += (
            f" — Nexus refuses the pull credential of {params.security.user} (security.pull_password, "
            "the one the nodes use): changed in Nexus only, every node pulls around the mirror "
            "(docs/rotation.md)"
        )
    checks.append(Check("pulls through the mirror succeeded", not failed, detail or "all succeeded"))

    proof = fig.proof or {"images": []}
    missing = [p for p in proof["images"] if p["present"] is not True and p["repository"] != "-"]
    checks.append(
        Check(
            "Nexus holds every image in its proxy repository",
            not missing,
            "; ".join(f"{p['image']} in {p['repository']}: {p['detail']}" for p in missing)
            or f"{len(proof['images'])} image(s) found",
        )
    )

    if params.verification.node_pull:
        why = [n for n in node.notes if n.startswith(("NodePool", "cannot list")) or nodepull.NO_KUBELET in n]
        checks.append(
            Check(
                "node path measured",
                node.measured,
                "pull Pods ran on " + ", ".join(f"{p}: {len(n)} node(s)" for p, n in node.pools.items())
                if node.measured
                else "; ".join(why) or "no node could be used",
            )
        )

    scope = "node" if fig.node.set_speedup is not None else "host"
    speed = fig.path(scope).set_speedup
    if t.min_warm_speedup is not None:
        checks.append(
            Check(
                f"warm-mirror speed-up ≥ {t.min_warm_speedup:g}× ({scope} path)",
                speed is not None and speed >= t.min_warm_speedup,
                f"{speed:.2f}× over the image set"
                if speed is not None
                else "not measured (no image has both direct and warm-mirror samples)",
            )
        )

    if t.max_warm_pull_s is not None:
        warm = {img: m.get("warm") for img, m in _warm_medians(fig, scope).items()}
        slow = {img: s for img, s in warm.items() if s is not None and s > t.max_warm_pull_s}
        measured = [s for s in warm.values() if s is not None]
        checks.append(
            Check(
                f"warm pulls within {t.max_warm_pull_s:g} s ({scope} path)",
                bool(measured) and not slow,
                "; ".join(f"{img}: {s:.1f} s" for img, s in slow.items())
                if slow
                else f"slowest median {max(measured):.2f} s"
                if measured
                else "no warm pull measured",
            )
        )

    rl = fig.ratelimit
    if t.min_ratelimit_remaining is not None:
        remaining = rl.anonymous_remaining
        ok = rl.unlimited or (remaining is not None and remaining >= t.min_ratelimit_remaining)
        checks.append(
            Check(
                f"Docker Hub pulls remaining ≥ {t.min_ratelimit_remaining}",
                ok,
                "unlimited (no rate-limit headers)"
                if rl.unlimited
                else f"{remaining} of {rl.anonymous_limit} left for {rl.source}"
                if remaining is not None
                else "headroom unknown: " + "; ".join(c.get("error") or "" for c in rl.checks),
            )
        )

    if demo is not None and not demo.skipped:
        checks.append(
            Check(
                "rate-limit demonstration: direct refused with 429, warm mirror served",
                demo.shown,
                f"direct: {demo.direct.status if demo.direct else None}, "
                "mirror: "
                f"{'ok' if demo.mirror and demo.mirror.ok else demo.mirror.error if demo.mirror else None}",
            )
        )
    return checks


def _warm_medians(fig: Figures, scope: str) -> dict[str, dict[str, float | None]]:
    if scope == "host":
        return fig.host.medians_s
    worst: dict[str, dict[str, float | None]] = {}
    for per_image in fig.node.medians_s.values():  # the slowest pool counts
        for image, m in per_image.items():
            w = m.get("warm")
            if w is not None and (image not in worst or (worst[image].get("warm") or 0) < w):
                worst[image] = {"warm": w}
    return worst
