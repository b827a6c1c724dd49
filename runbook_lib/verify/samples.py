"""One table shape for every pull sample (runbook host and nodes), its labels, medians and speed-ups.

Labels say what a sample really measured:
- ``direct`` — from the upstream, not through the mirror;
- ``mirror-cold`` — the first pull through the mirror of an image Nexus did not hold before (the components
  API said so): Nexus fetched it from the upstream while serving it;
- ``mirror-warm (was cached)`` — the first pull through the mirror in this run, but Nexus already held the
  image (an earlier run, the security stage's proof, another client): it is a warm pull, and the run has no
  cold sample for this image;
- ``mirror-first (cache state unknown)`` — the first pull through the mirror when Nexus could not be asked;
- ``mirror-warm`` — a repeated pull through the mirror.

``seconds`` is what medians and speed-ups use: a host sample's pull time; a node sample's transfer, that
is the kubelet's pull time (``pull_s``) minus the unpack into snapshots (``unpack_s``) when the node reports
it apart (nodepull.py), since the mirror changes the transfer and not the unpack.

Speed-ups compare medians of ``direct`` with medians of the two warm labels, over the samples marked
``eligible`` (a node sample is not eligible when the node already held the image or when the pull did not
take the route its name promises).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

DIRECT = "direct"
MIRROR_COLD = "mirror-cold"
MIRROR_WARM = "mirror-warm"
WAS_CACHED = "mirror-warm (was cached)"
CACHE_UNKNOWN = "mirror-first (cache state unknown)"
WARM_LABELS = (MIRROR_WARM, WAS_CACHED)
LABEL_ORDER = (DIRECT, MIRROR_COLD, CACHE_UNKNOWN, WAS_CACHED, MIRROR_WARM)

COLUMNS = [
    "scope",
    "pool",
    "node",
    "image",
    "pulled",
    "path",
    "label",
    "rep",
    "ok",
    "seconds",
    "pull_s",
    "unpack_s",
    "time_to_manifest_s",
    "bytes",
    "MBps",
    "status",
    "code",
    "error",
    "endpoint",
    "node_cache",
    "served_by",
    "eligible",
]


def first_mirror_label(cached_before: bool | None) -> str:
    return {False: MIRROR_COLD, True: WAS_CACHED, None: CACHE_UNKNOWN}[cached_before]


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"ok": bool, "eligible": bool}) if len(df) else df


def summarize(samples: pd.DataFrame, by: tuple[str, ...] = ("image", "label")) -> pd.DataFrame:
    """Median, quartiles, min and max of successful, eligible samples; n counts every attempt."""
    keys = list(by)
    cols = keys + [
        "n",
        "failed",
        "median_s",
        "q1_s",
        "q3_s",
        "min_s",
        "max_s",
        "median_MBps",
        "median_unpack_s",
    ]
    if samples.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, group in samples.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        good = group[group["ok"] & group["eligible"]]
        secs = good["seconds"].astype(float)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": len(group),
                "failed": int((~group["ok"]).sum()),
                "median_s": secs.median() if len(secs) else None,
                "q1_s": secs.quantile(0.25) if len(secs) else None,
                "q3_s": secs.quantile(0.75) if len(secs) else None,
                "min_s": secs.min() if len(secs) else None,
                "max_s": secs.max() if len(secs) else None,
                "median_MBps": good["MBps"].astype(float).median() if len(good) else None,
                # the unpack kept out of `seconds` (node samples whose node reported it), else None
                "median_unpack_s": (
                    good["unpack_s"].astype(float).median()
                    if "unpack_s" in good and good["unpack_s"].notna().any()
                    else None
                ),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    numbers = cols[len(keys) + 2 :]
    out[numbers] = out[numbers].astype(float).round(4)
    if "label" in keys:
        out["_order"] = out["label"].map({label: i for i, label in enumerate(LABEL_ORDER)})
        out = out.sort_values(keys[: keys.index("label")] + ["_order"], kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)


def _median(samples: pd.DataFrame, labels: tuple[str, ...]) -> float | None:
    good = samples[samples["ok"] & samples["eligible"] & samples["label"].isin(labels)]
    return float(good["seconds"].astype(float).median()) if len(good) else None


def medians(samples: pd.DataFrame) -> dict[str, float | None]:
    """label -> median seconds, plus 'warm' (both warm labels pooled)."""
    out = {label: _median(samples, (label,)) for label in LABEL_ORDER if (samples["label"] == label).any()}
    out["warm"] = _median(samples, WARM_LABELS)
    return out


def speedup(samples: pd.DataFrame) -> float | None:
    """median(direct) / median(warm) of one image's samples; None when either side is missing."""
    direct, warm = _median(samples, (DIRECT,)), _median(samples, WARM_LABELS)
    if direct is None or not warm:
        return None
    return direct / warm


def speedups(samples: pd.DataFrame) -> dict[str, float | None]:
    if samples.empty:
        return {}
    return {image: speedup(group) for image, group in samples.groupby("image", sort=False)}


def set_speedup(samples: pd.DataFrame) -> float | None:
    """Over the images measured both ways: sum of direct medians / sum of warm medians.

    Big images dominate, as they dominate a node's waiting time; a 2 KiB image's ratio says nothing.
    """
    direct_sum = warm_sum = 0.0
    for _, group in samples.groupby("image", sort=False):
        direct, warm = _median(group, (DIRECT,)), _median(group, WARM_LABELS)
        if direct is not None and warm:
            direct_sum, warm_sum = direct_sum + direct, warm_sum + warm
    return direct_sum / warm_sum if warm_sum else None
