"""Static charts for the verification notebook (matplotlib, no pyplot state).

Each function returns a ``matplotlib.figure.Figure``; as the last expression of a notebook cell it is shown
once as a PNG (the notebook setup selects inline PNG), so the saved notebook and its HTML carry the image.
A chart with nothing to show says why instead of raising.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from runbook_lib.verify import samples
from runbook_lib.verify.ratelimit import Headroom
from runbook_lib.verify.report import Figures

COLORS = {
    samples.DIRECT: "#c0504d",
    samples.MIRROR_COLD: "#f2a93b",
    samples.CACHE_UNKNOWN: "#9e9e9e",
    samples.WAS_CACHED: "#6fa8dc",
    samples.MIRROR_WARM: "#3c78d8",
}
SHORT = {
    samples.DIRECT: "direct",
    samples.MIRROR_COLD: "mirror\ncold",
    samples.CACHE_UNKNOWN: "mirror\nfirst (?)",
    samples.WAS_CACHED: "mirror warm\n(was cached)",
    samples.MIRROR_WARM: "mirror\nwarm",
}


def _empty(title: str, reason: str) -> Figure:
    fig = Figure(figsize=(8, 2.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.45, reason, ha="center", va="center", wrap=True, fontsize=10, color="#555555")
    return fig


def _grid(n: int, per_row: int = 3, size: tuple[float, float] = (4.2, 3.4)) -> tuple[Figure, list[Any]]:
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(size[0] * cols, 8.0), size[1] * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _spread_panel(ax: Any, df: pd.DataFrame, groups: list[tuple[str, pd.DataFrame]]) -> None:
    """Bars at the median of eligible successful samples, min–max whiskers, every sample as a dot."""
    for x, (label, g) in enumerate(groups):
        base = label.split(" | ")[-1]
        good = g[g["ok"] & g["eligible"]]["seconds"].astype(float)
        color = COLORS.get(base, "#888888")
        if len(good):
            med = good.median()
            ax.bar(x, med, color=color, alpha=0.75, width=0.65)
            ax.errorbar(x, med, yerr=[[med - good.min()], [good.max() - med]], color="black", capsize=4, lw=1)
            ax.text(x, med, f"{med:.2f}s", ha="center", va="bottom", fontsize=8)
        other = g[g["ok"] & ~g["eligible"]]["seconds"].astype(float)
        ax.scatter([x] * len(good), good, color="black", s=10, zorder=3)
        ax.scatter([x] * len(other), other, facecolors="none", edgecolors="black", s=18, zorder=3)
        failed = int((~g["ok"]).sum())
        if failed:
            ax.text(
                x, 0, f"{failed}✗", ha="center", va="bottom", color="#c00000", fontsize=9, fontweight="bold"
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([_tick(label) for label, _ in groups], fontsize=8)
    # node samples whose node reported the unpack hold the transfer (samples.py)
    unpack_apart = "unpack_s" in df and bool(df["unpack_s"].notna().any())
    ax.set_ylabel("pull time (s), without the unpack" if unpack_apart else "pull time (s)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)


def _tick(label: str) -> str:
    *prefix, base = label.split(" | ")
    return "\n".join(prefix + [SHORT.get(base, base)])


def _ordered(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    order = {label: i for i, label in enumerate(samples.LABEL_ORDER)}
    return sorted(
        ((label, g) for label, g in df.groupby("label", sort=False)), key=lambda kv: order.get(kv[0], 99)
    )


def pull_times(df: pd.DataFrame, title: str = "Pull time from the runbook host") -> Figure:
    """Per image: median pull time per route and label, min–max whiskers, each sample a dot."""
    if df.empty:
        return _empty(title, "no samples")
    images = list(dict.fromkeys(df["image"]))
    fig, axes = _grid(len(images))
    for ax, image in zip(axes, images, strict=True):
        _spread_panel(ax, df, _ordered(df[df["image"] == image]))
        ax.set_title(image, fontsize=9)
    fig.suptitle(f"{title} (bar = median, whiskers = min–max, ✗ = failed)")
    return fig


def node_times(df: pd.DataFrame) -> Figure:
    """Per image: the kubelet's pull time per NodePool and route; hollow dots were kept out of the medians."""
    title = "Pull time on the nodes (kubelet's Pulled event)"
    if df.empty:
        return _empty(title, "the node path was not measured (see the notes above)")
    images = list(dict.fromkeys(df["image"]))
    fig, axes = _grid(len(images))
    for ax, image in zip(axes, images, strict=True):
        sub = df[df["image"] == image]
        groups: list[tuple[str, pd.DataFrame]] = []
        for pool in dict.fromkeys(sub["pool"]):
            groups += [(f"{pool} | {label}", g) for label, g in _ordered(sub[sub["pool"] == pool])]
        _spread_panel(ax, sub, groups)
        ax.set_title(image, fontsize=9)
    fig.suptitle(f"{title}; hollow dots: not in the medians")
    return fig


def speedups(fig_data: Figures, threshold: float | None = None) -> Figure:
    """Warm mirror vs direct per image (median direct / median warm), runbook host and nodes side by side."""
    title = "Speed-up of the warm mirror over direct pulls"
    host, node = fig_data.host.speedup, fig_data.node.speedup
    images = [i for i in dict.fromkeys(list(host) + list(node)) if host.get(i) or node.get(i)]
    if not images:
        return _empty(title, "no image was measured both directly and through the warm mirror")
    fig = Figure(figsize=(9, 0.9 + 0.6 * len(images)), layout="constrained")
    ax = fig.add_subplot()
    y = range(len(images))
    for offset, (name, data, color) in enumerate(
        (("runbook host", host, "#6fa8dc"), ("nodes", node, "#3c78d8"))
    ):
        vals = [data.get(i) or 0 for i in images]
        bars = ax.barh([v + (offset - 0.5) * 0.38 for v in y], vals, height=0.36, color=color, label=name)
        for bar, v in zip(bars, vals, strict=True):
            if v:
                ax.text(
                    bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.1f}×", va="center", fontsize=8
                )
    ax.axvline(1, color="black", lw=1)
    if threshold:
        ax.axvline(threshold, color="#c00000", ls="--", lw=1, label=f"threshold {threshold:g}×")
    ax.set_yticks(list(y))
    ax.set_yticklabels(images, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("× faster than direct (1× = no gain)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig


def ratelimit(found: list[Headroom]) -> Figure:
    """Docker Hub budget per identity: used and remaining in the window."""
    title = "Docker Hub pull budget"
    limited = [h for h in found if h.limit is not None and h.remaining is not None]
    if not limited:
        reason = (
            "unlimited (no rate-limit headers)"
            if any(h.unlimited for h in found)
            else "; ".join(f"{h.who}: {h.error}" for h in found) or "no docker.io upstream"
        )
        return _empty(title, reason)
    fig = Figure(figsize=(9, 0.8 + 0.6 * len(limited)), layout="constrained")
    ax = fig.add_subplot()
    for i, h in enumerate(limited):
        assert h.limit is not None and h.remaining is not None
        used = max(h.limit - h.remaining, 0)
        ax.barh(i, used, color="#c0504d", label="used" if i == 0 else None)
        ax.barh(i, h.remaining, left=used, color="#93c47d", label="remaining" if i == 0 else None)
        window = f"{h.window_s / 3600:g} h" if h.window_s else "?"
        ax.text(h.limit, i, f" {h.remaining}/{h.limit} left, window {window}", va="center", fontsize=8)
    ax.set_yticks(range(len(limited)))
    ax.set_yticklabels([f"{h.who}\n(source {h.source})" for h in limited], fontsize=8)
    ax.set_xlim(0, max(h.limit or 0 for h in limited) * 1.45)
    ax.set_xlabel("pulls (manifest GETs) in the window")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(title)
    return fig


def trend(medians: pd.DataFrame, metrics: pd.DataFrame) -> Figure:
    """Across runs: median direct and warm pull time per image, and the set-wide speed-up."""
    title = "Trend across runs"
    if medians.empty:
        return _empty(title, "no history yet")
    scope = "node" if (medians["scope"] == "node").any() else "host"
    m = medians[(medians["scope"] == scope) & medians["label"].isin([samples.DIRECT, *samples.WARM_LABELS])]
    m = m.assign(route=m["label"].where(m["label"] == samples.DIRECT, "warm mirror"))
    m = m.groupby(["at", "image", "route"], as_index=False)["median_s"].median()
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    palette = {image: f"C{i}" for i, image in enumerate(dict.fromkeys(m["image"]))}
    for (image, route), g in m.groupby(["image", "route"]):
        ax1.plot(
            g["at"],
            g["median_s"],
            marker="o",
            ls="-" if route == "warm mirror" else "--",
            color=palette[image],
            label=f"{image} {route}",
        )
    ax1.set_ylabel("median pull time (s)")
    ax1.set_title(f"Median pull time ({scope} path)", fontsize=10)
    ax1.legend(fontsize=7)
    ax1.set_ylim(bottom=0)
    for col, name in (("host.set_speedup", "runbook host"), ("node.set_speedup", "nodes")):
        if col in metrics:
            pts = metrics[["at", col]].dropna()
            ax2.plot(pts["at"], pts[col], marker="o", label=name)
    ax2.axhline(1, color="black", lw=1)
    ax2.set_ylabel("× faster than direct")
    ax2.set_title("Warm-mirror speed-up over the image set", fontsize=10)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle(f"{title} ({medians['run_id'].nunique()} run(s))")
    return fig


def usage(use: Any, metrics: pd.DataFrame) -> Figure:
    """Nexus Community Edition caps: requests per day and components, with what this run measured."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    bars = {
        "forecast\n(expected pulls ×\nrequests per pull)": use.forecast_requests_per_day,
        "counted by\nthe counters": use.requests_counted,
    }
    names = [k for k, v in bars.items() if v is not None]
    if names:
        ax1.bar(names, [bars[k] for k in names], color=["#3c78d8", "#9e9e9e"][: len(names)])
    else:
        ax1.text(
            0.5,
            0.5,
            "no request figures (no counters, or no expected_pulls_per_day)",
            ha="center",
            va="center",
            transform=ax1.transAxes,
            fontsize=8,
            wrap=True,
        )
    ax1.axhline(use.requests_cap, color="#c00000", ls="--", label=f"CE cap {use.requests_cap:,}/day")
    ax1.set_title("Requests per day", fontsize=10)
    ax1.legend(fontsize=8)
    if "nexus.components" in metrics:
        pts = metrics[["at", "nexus.components"]].dropna()
        ax2.plot(pts["at"], pts["nexus.components"], marker="o", label="components (per run)")
    if use.components is not None:
        ax2.scatter([pd.Timestamp.now(tz="UTC")], [use.components], color="#3c78d8", zorder=3, label="now")
        if use.days_to_component_cap is not None and use.days_to_component_cap < 3650:
            now = pd.Timestamp.now(tz="UTC")
            ax2.plot(
                [now, now + pd.Timedelta(days=use.days_to_component_cap)],
                [use.components, use.components_cap],
                ls=":",
                color="#3c78d8",
                label=f"trend: cap in {use.days_to_component_cap:,.0f} days",
            )
    ax2.axhline(use.components_cap, color="#c00000", ls="--", label=f"CE cap {use.components_cap:,}")
    ax2.set_title("Components in the proxy repositories", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.tick_params(axis="x", labelrotation=30, labelsize=7)
    for ax in (ax1, ax2):
        ax.set_yscale("symlog", linthresh=100)
        ax.grid(alpha=0.3)
    fig.suptitle("Nexus Community Edition usage against its caps")
    return fig
