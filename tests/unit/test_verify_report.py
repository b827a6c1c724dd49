"""Figures, thresholds, history store and charts of the verification stage, from sample tables.

Sample tables are built by hand here (the pull tests make real ones); what is tested is arithmetic,
labelling, the failure contract and that every chart renders a PNG with the Agg backend.
"""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from runbook_lib import params as params_mod
from runbook_lib.plan import StageFailed
from runbook_lib.stages import verify as verify_stage
from runbook_lib.verify import charts, history, report, samples, thresholds
from runbook_lib.verify.hostpull import HostComparison
from runbook_lib.verify.mirrorproof import ImageProof, NexusContent, Proof
from runbook_lib.verify.nodepull import FALLBACK, IMAGE_ON_NODE, NOT_REPORTED, NodeComparison
from runbook_lib.verify.ratelimit import Demonstration, Headroom
from tests.support.recording import RecordingContext

REPO = Path(__file__).resolve().parents[2]
BIG, SMALL = "docker.io/library/big:lab", "docker.io/library/demo:1"


def params(**thresholds_) -> params_mod.RunbookParams:
    p = params_mod.load(REPO / "parameters" / "lab.yaml")
    p.verification.thresholds = params_mod.Thresholds(**thresholds_)
    return p


def row(
    image: str,
    label: str,
    seconds: float | None,
    ok: bool = True,
    scope: str = "host",
    pool: str | None = None,
    node: str | None = None,
    served_by: str | None = None,
    node_cache: str | None = None,
    eligible: bool = True,
    rep: int = 1,
) -> dict:
    path = "direct" if label == samples.DIRECT else "mirror"
    return {
        "scope": scope,
        "pool": pool,
        "node": node,
        "image": image,
        "pulled": image,
        "path": path,
        "label": label,
        "rep": rep,
        "ok": ok,
        "seconds": seconds,
        "time_to_manifest_s": None,
        "bytes": 1000,
        "MBps": 1.0,
        "status": None if ok else 503,
        "code": None,
        "error": None if ok else "boom",
        "endpoint": "x",
        "node_cache": node_cache,
        "served_by": served_by or (path if ok else None),
        "eligible": eligible,
    }


def host_comparison() -> HostComparison:
    rows = [row(BIG, samples.DIRECT, s, rep=i) for i, s in enumerate((3.0, 2.0, 4.0), 1)]
    rows += [
        row(BIG, samples.MIRROR_COLD, 3.5),
        row(BIG, samples.MIRROR_WARM, 0.5, rep=2),
        row(BIG, samples.MIRROR_WARM, 0.4, rep=3),
    ]
    rows += [
        row(SMALL, samples.DIRECT, 0.2),
        row(SMALL, samples.WAS_CACHED, 0.1),
        row(SMALL, samples.MIRROR_WARM, None, ok=False, rep=2),
    ]
    return HostComparison(samples.frame(rows))


def node_comparison(bypass: bool = False) -> NodeComparison:
    rows = []
    for pool, nodes in (("default", ("n-a", "n-b")), ("gpu", ("g-1",))):
        for rep in (1, 2):
            n = nodes[rep % len(nodes)]
            rows.append(
                row(
                    BIG,
                    samples.MIRROR_WARM,
                    0.6,
                    scope="node",
                    pool=pool,
                    node=n,
                    served_by="mirror",
                    node_cache=NOT_REPORTED,
                    rep=rep,
                )
            )
            rows.append(
                row(
                    BIG,
                    samples.DIRECT,
                    3.0,
                    scope="node",
                    pool=pool,
                    node=n,
                    served_by="upstream",
                    node_cache=NOT_REPORTED,
                    rep=rep,
                )
            )
    # a sample the node already held: kept, but not in the medians
    rows.append(
        row(
            BIG,
            samples.DIRECT,
            0.1,
            scope="node",
            pool="default",
            node="n-a",
            served_by="upstream",
            node_cache=IMAGE_ON_NODE,
            eligible=False,
            rep=3,
        )
    )
    if bypass:
        rows.append(
            row(
                BIG,
                samples.MIRROR_WARM,
                3.1,
                scope="node",
                pool="gpu",
                node="g-1",
                served_by=FALLBACK,
                node_cache=NOT_REPORTED,
                eligible=False,
                rep=3,
            )
        )
    result = NodeComparison(samples.frame(rows), {"default": ["n-a", "n-b"], "gpu": ["g-1"]}, measured=True)
    return result


def proof(present: bool | None = True) -> Proof:
    return Proof(
        [
            ImageProof(BIG, "docker-hub", present, "found" if present else "not found"),
            ImageProof(SMALL, "docker-hub", True, "found"),
        ],
        "lab counters",
        42,
    )


HEADROOM = [
    Headroom(
        "anonymous", "runbook host", limit=100, remaining=80, window_s=21600, source="127.0.0.1", status=200
    )
]


# -- samples -------------------------------------------------------------------------------------------
def test_medians_speedups_and_set_speedup() -> None:
    host = host_comparison()
    sp = host.speedups()
    assert sp[BIG] == pytest.approx(3.0 / 0.45)  # median direct 3.0, warm median of 0.5 and 0.4
    assert sp[SMALL] == pytest.approx(0.2 / 0.1)  # "was cached" counts as warm; the failed sample does not
    assert host.set_speedup() == pytest.approx((3.0 + 0.2) / (0.45 + 0.1))
    summary = host.summary()
    big = summary[summary["image"] == BIG].set_index("label")
    assert list(big.index) == [samples.DIRECT, samples.MIRROR_COLD, samples.MIRROR_WARM]
    assert (big.loc[samples.DIRECT, "min_s"], big.loc[samples.DIRECT, "max_s"]) == (2.0, 4.0)
    small = summary[summary["image"] == SMALL].set_index("label")
    assert small.loc[samples.MIRROR_WARM, "failed"] == 1 and pd.isna(
        small.loc[samples.MIRROR_WARM, "median_s"]
    )


def test_ineligible_node_samples_stay_out_of_the_medians() -> None:
    node = node_comparison()
    assert node.speedups()[BIG] == pytest.approx(3.0 / 0.6)  # the 0.1 s "image on node" sample is ignored
    assert node.speedups_by_pool()["gpu"][BIG] == pytest.approx(5.0)
    summary = node.summary()
    default_direct = summary[(summary["pool"] == "default") & (summary["label"] == samples.DIRECT)].iloc[0]
    assert default_direct["n"] == 3 and default_direct["median_s"] == 3.0


def test_speedup_missing_when_a_side_is_missing() -> None:
    only_direct = samples.frame([row(BIG, samples.DIRECT, 1.0)])
    assert samples.speedup(only_direct) is None and samples.set_speedup(only_direct) is None


# -- figures and thresholds ----------------------------------------------------------------------------
def test_figures_are_json_clean_and_headline_prefers_the_node_path() -> None:
    import json

    fig = report.figures(params(), host_comparison(), node_comparison(), proof(), HEADROOM)
    json.dumps(fig.record(), allow_nan=False)
    assert fig.node.speedup[BIG] == pytest.approx(5.0)
    assert fig.host.medians_s[SMALL][samples.MIRROR_WARM] is None
    assert fig.ratelimit.anonymous_remaining == 80 and fig.ratelimit.window_s == 21600
    assert report.headline(fig) == {"speedup_scope": "node", "set_speedup": pytest.approx(5.0)}
    no_node = report.figures(
        params(), host_comparison(), NodeComparison(samples.frame([])), proof(), HEADROOM
    )
    assert report.headline(no_node)["speedup_scope"] == "host"


def checks_by_name(checks: list[thresholds.Check]) -> dict[str, thresholds.Check]:
    return {c.name.split(" (")[0]: c for c in checks}


def test_all_checks_pass_on_a_good_run() -> None:
    p = params(min_warm_speedup=4, max_warm_pull_s=1, min_ratelimit_remaining=10)
    host = host_comparison()
    host.samples.loc[host.samples["ok"].eq(False), ["ok", "seconds", "error"]] = [True, 0.1, None]
    node = node_comparison()
    fig = report.figures(p, host, node, proof(), HEADROOM)
    checks = thresholds.evaluate(p, fig, host, node)
    assert all(c.ok for c in checks), [c.record() for c in checks]
    ctx = RecordingContext()
    verify_stage.enforce(ctx, checks)
    assert ctx.calls == []


def test_each_threshold_breach_fails_the_stage_and_says_why() -> None:
    p = params(min_warm_speedup=6, max_warm_pull_s=0.5, min_ratelimit_remaining=90)
    host, node = host_comparison(), node_comparison(bypass=True)
    fig = report.figures(p, host, node, proof(present=False), HEADROOM)
    checks = checks_by_name(thresholds.evaluate(p, fig, host, node))
    assert not checks["no node pull bypassed the mirror"].ok
    assert (
        "1 node pull(s) of mirrored names bypassed the mirror"
        in checks["no node pull bypassed the mirror"].detail
    )
    assert not checks["pulls through the mirror succeeded"].ok  # the failed warm pull of demo:1
    assert not checks["Nexus holds every image in its proxy repository"].ok
    assert (
        not checks["warm-mirror speed-up ≥ 6×"].ok and "5.00×" in checks["warm-mirror speed-up ≥ 6×"].detail
    )
    assert not checks["warm pulls within 0.5 s"].ok
    assert not checks["Docker Hub pulls remaining ≥ 90"].ok
    assert "80 of 100 left for 127.0.0.1" in checks["Docker Hub pulls remaining ≥ 90"].detail
    ctx = RecordingContext()
    with pytest.raises(StageFailed) as err:
        verify_stage.enforce(ctx, list(checks.values()))
    assert str(err.value).startswith("verification failed: no node pull bypassed the mirror")
    assert ctx.calls[0][0] == "failure" and ctx.calls[0][1]["step"] == "verification checks"


def test_unlimited_rate_limit_passes_and_unknown_fails() -> None:
    p = params(min_ratelimit_remaining=10)
    host, node = host_comparison(), node_comparison()
    unlimited = [Headroom("anonymous", "runbook host", unlimited=True, status=200)]
    fig = report.figures(p, host, node, proof(), unlimited)
    assert checks_by_name(thresholds.evaluate(p, fig, host, node))["Docker Hub pulls remaining ≥ 10"].ok
    broken = [Headroom("anonymous", "runbook host", error="ConnectError: refused")]
    fig = report.figures(p, host, node, proof(), broken)
    check = checks_by_name(thresholds.evaluate(p, fig, host, node))["Docker Hub pulls remaining ≥ 10"]
    assert not check.ok and "refused" in check.detail


def test_demonstration_check_only_when_it_ran() -> None:
    p = params()
    host, node = host_comparison(), node_comparison()
    fig = report.figures(p, host, node, proof(), HEADROOM)
    names = [c.name for c in thresholds.evaluate(p, fig, host, node, Demonstration("x", None, skipped="off"))]
    assert not any("demonstration" in n for n in names)
    failed = Demonstration("x", None)  # ran, but neither pull happened
    check = [c for c in thresholds.evaluate(p, fig, host, node, failed) if "demonstration" in c.name][0]
    assert not check.ok


# -- history -------------------------------------------------------------------------------------------
def test_history_appends_reads_and_replaces_a_rerun(tmp_path) -> None:
    store = history.HistoryStore(tmp_path / "h" / "history.sqlite")
    host, node = host_comparison(), node_comparison()
    fig = report.figures(params(), host, node, proof(), HEADROOM)
    rows, metrics = report.history_rows(host, node), report.history_metrics(fig, None)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.append("run-1", "lab", rows, metrics, at=t0)
    store.append("run-2", "lab", rows, {**metrics, "bypassed": 3}, at=t0 + dt.timedelta(days=1))
    store.append(
        "run-2", "lab", rows, {**metrics, "bypassed": 1}, at=t0 + dt.timedelta(days=1)
    )  # rerun replaces
    store.append("other", "prod", rows, metrics, at=t0)
    assert store.runs("lab") == 2 and store.runs("prod") == 1
    m = store.metrics("lab")
    assert m["run_id"].tolist() == ["run-1", "run-2"] and m["bypassed"].tolist() == [0.0, 1.0]
    med = store.medians("lab")
    assert len(med) == 2 * len(rows)
    big_warm = med[(med["scope"] == "node") & (med["pool"] == "gpu") & (med["label"] == samples.MIRROR_WARM)]
    assert big_warm["median_s"].tolist() == [0.6, 0.6]
    with sqlite3.connect(store.path) as db:  # no orphans after the replace
        assert db.execute("SELECT COUNT(*) FROM medians WHERE run_id = 'run-2'").fetchone()[0] == len(rows)


def test_history_path_defaults_beside_the_outputs(tmp_path) -> None:
    p = params()
    assert history.path_for(p) == (REPO / "outputs" / "history.sqlite").resolve()
    p.outputs.history = str(tmp_path / "x.sqlite")
    assert history.path_for(p) == tmp_path / "x.sqlite"


def test_component_growth_and_days_to_cap() -> None:
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    hist = pd.DataFrame({"at": [t0, t0 + pd.Timedelta(days=10)], "nexus.components": [1000.0, 2000.0]})
    assert report.growth_per_day(hist, "nexus.components") == pytest.approx(100.0)
    assert report.growth_per_day(hist.iloc[:1], "nexus.components") is None


def test_usage_with_counted_components_and_no_counters() -> None:
    p = params()
    p.verification.expected_pulls_per_day = 500
    host, node = host_comparison(), node_comparison(bypass=True)
    use = report.usage(p, NexusContent(None), None, proof(), host, node)
    assert use.mirror_pulls == 4 + 4  # host mirror successes + node mirrored pulls that reached the mirror
    assert use.requests_per_pull == pytest.approx(42 / 8)
    assert use.forecast_requests_per_day == pytest.approx(42 / 8 * 500)
    assert use.components is None and use.days_to_component_cap is None
    assert "unknown" in use.table().to_string()


@pytest.mark.parametrize(
    ("edition", "pulls", "over"),
    [
        ("COMMUNITY", 20_000, True),  # 42 requests / 8 pulls = 5.25 a pull: 105,000 a day
        ("COMMUNITY", 19_000, False),  # 99,750: below the cap
        (None, 20_000, True),  # edition not stated: the cap is assumed to bind
        ("PRO", 20_000, None),  # Pro has no cap
        ("COMMUNITY", None, None),  # no expected pulls: no forecast
    ],
)
def test_forecast_flags_the_community_edition_requests_cap(edition, pulls, over) -> None:
    p = params()
    p.nexus.expect_edition = edition
    p.verification.expected_pulls_per_day = pulls
    use = report.usage(p, NexusContent(None), None, proof(), host_comparison(), node_comparison(True))
    assert use.over_requests_cap is over
    record = use.record()
    assert record["over_requests_cap"] is over and record["edition"] == edition
    flagged = [w for w in use.warnings() if "requests/day" in w]
    assert bool(flagged) is bool(over)
    table = dict(use.table().itertuples(index=False))
    expected_row = {True: "AT OR OVER the cap", False: "below the cap", None: "unknown"}[over]
    assert table["forecast against the requests cap"] == expected_row
    if over:
        assert "100,000" in flagged[0] and "105,000" in flagged[0]
    if edition == "PRO":
        assert table["cap: requests per day"] == "none (PRO)"


def test_run_id_uses_the_runner_folder(tmp_path) -> None:
    folder = tmp_path / "20260101T000000Z-lab"
    folder.mkdir()
    assert report.run_id(folder) == "20260101T000000Z-lab"
    assert report.run_id(tmp_path / "notebooks").endswith("-manual")


# -- charts --------------------------------------------------------------------------------------------
def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_every_chart_renders_a_png_with_agg(tmp_path) -> None:
    matplotlib.use("Agg")
    p = params(min_warm_speedup=2)
    host, node = host_comparison(), node_comparison(bypass=True)
    fig = report.figures(p, host, node, proof(), HEADROOM)
    store = history.HistoryStore(tmp_path / "h.sqlite")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(3):
        store.append(
            f"r{i}",
            "lab",
            report.history_rows(host, node),
            {**report.history_metrics(fig, None), "nexus.components": 100.0 * (i + 1)},
            at=t0 + dt.timedelta(days=i),
        )
    p.verification.expected_pulls_per_day = 1000
    use = report.usage(p, NexusContent(None), None, proof(), host, node, store.metrics("lab"))
    figures = [
        charts.pull_times(host.samples),
        charts.node_times(node.samples),
        charts.speedups(fig, 2.0),
        charts.ratelimit(HEADROOM),
        charts.trend(store.medians("lab"), store.metrics("lab")),
        charts.usage(use, store.metrics("lab")),
    ]
    for f in figures:
        data = png(f)
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_charts_without_data_explain_themselves() -> None:
    empty = samples.frame([])
    for f in (
        charts.pull_times(empty),
        charts.node_times(empty),
        charts.ratelimit([Headroom("anonymous", "h", unlimited=True)]),
        charts.trend(pd.DataFrame(columns=["scope"]), pd.DataFrame()),
        charts.speedups(
            report.figures(
                params(), HostComparison(samples.frame([])), NodeComparison(samples.frame([])), None, []
            )
        ),
    ):
        texts = [t.get_text() for ax in f.axes for t in ax.texts]
        assert texts and texts[0]
        assert png(f).startswith(b"\x89PNG")


def test_history_follows_the_run_folders(tmp_path) -> None:
    from runbook_lib import params as params_mod
    from runbook_lib.verify import history

    p = params_mod.load(REPO / "parameters" / "lab.yaml")
    run_dir = tmp_path / "elsewhere" / "20261128T000000Z-lab"
    run_dir.mkdir(parents=True)
    assert history.path_for(p, run_dir) == tmp_path / "elsewhere" / "history.sqlite"
    assert history.path_for(p) == (REPO / "outputs" / "history.sqlite").resolve()
    p.outputs.history = str(tmp_path / "h.sqlite")
    assert history.path_for(p, run_dir) == tmp_path / "h.sqlite"


def test_figures_are_a_typed_record_whose_record_round_trips() -> None:
    """Thresholds and charts read attributes; run.json gets the same figures as plain JSON."""
    import json

    fig = report.figures(params(), host_comparison(), node_comparison(), proof(), HEADROOM)
    assert isinstance(fig.host, report.HostFigures) and isinstance(fig.node, report.NodeFigures)
    assert report.Figures.from_record(json.loads(json.dumps(fig.record()))) == fig
    assert fig.path("node") is fig.node and fig.path("host") is fig.host
    results = report.results(fig, None)
    assert results["node"]["speedup"][BIG] == pytest.approx(5.0) and results["speedup_scope"] == "node"
