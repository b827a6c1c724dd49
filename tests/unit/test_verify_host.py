"""Verification from the runbook host against the lab's real parts: the Nexus emulator configured by stages
1-2,
its docker connectors pulling through from a distribution registry behind the Docker Hub stand-in.

Nothing asserts a duration (performance belongs to bench/); the tests check labels, routes, counts, the
Nexus-side proof, the rate-limit figures and the demonstration's outcome.
"""

from __future__ import annotations

import pytest

from runbook_lib.secrets import REDACTOR
from runbook_lib.verify import hostpull, mirrorproof, ratelimit, report, samples
from runbook_lib.verify.nodepull import NodeComparison
from tests.support.labkit import Lab, upstream_fixture

upstream = pytest.fixture(scope="module")(upstream_fixture)
IMAGES = ["docker.io/library/demo:1", "docker.io/library/big:lab", "quay.io/lab/tool:1"]


@pytest.fixture
def lab(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    upstream.hub.ledger.reset()
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    v = lab.params.verification
    v.images = list(IMAGES)
    v.repetitions = 2
    v.counters_url = f"{lab.emulator.url}/_lab/counters"
    v.demo_source_address = "127.0.0.2"
    lab.params.outputs.dir = str(tmp_path / "outputs")
    lab.run_stages(apply=True)
    yield lab
    lab.emulator.stop()
    upstream.hub.ledger.reset()
    REDACTOR.clear()


def test_host_comparison_labels_routes_and_proof(lab) -> None:
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    assert content.client is not None, content.problem
    source = mirrorproof.CounterSource(lab.params, content)
    before = source.snapshot()
    assert before.per_repo is not None and before.problems == [] or "metrics" in " ".join(before.problems)

    host = hostpull.compare(lab.params, lab.secret, content)
    df = host.samples
    assert len(df) == len(IMAGES) * 2 * 2 and df["ok"].all(), df[~df["ok"]][["pulled", "error"]]
    for image in IMAGES:
        labels = df[df["image"] == image]["label"].tolist()
        assert labels == [samples.DIRECT, samples.DIRECT, samples.MIRROR_COLD, samples.MIRROR_WARM]
    docker = lab.params.upstream("docker.io")
    mirror_rows = df[df["path"] == "mirror"]
    assert set(mirror_rows[mirror_rows["image"] != "quay.io/lab/tool:1"]["endpoint"]) == {docker.mirror_url}
    # quay.io has no mirror_url in the test lab: its path on Nexus's main port is used
    quay = mirror_rows[mirror_rows["image"] == "quay.io/lab/tool:1"]["endpoint"].iloc[0]
    assert quay == f"{lab.params.nexus.url}/repository/quay-io"
    # same manifest both ways, same bytes
    for image, g in df.groupby("image"):
        assert g["bytes"].nunique() == 1, image

    proof = mirrorproof.prove(lab.params, content, source, before)
    assert [p.present for p in proof.images] == [True, True, True]
    assert [p.repository for p in proof.images] == ["docker-hub", "docker-hub", "quay-io"]
    assert proof.requests_moved and proof.requests_moved > 0

    summary = host.summary()
    assert set(summary["label"]) == {samples.DIRECT, samples.MIRROR_COLD, samples.MIRROR_WARM}
    assert set(host.speedups()) == set(IMAGES) and all(v and v > 0 for v in host.speedups().values())

    # second run: Nexus holds everything, so no sample may claim to be cold
    again = hostpull.compare(lab.params, lab.secret, content)
    first_mirror = again.samples[(again.samples["path"] == "mirror") & (again.samples["rep"] == 1)]
    assert set(first_mirror["label"]) == {samples.WAS_CACHED}
    content.client.close()


def test_unknown_cache_state_and_failed_mirror_are_labelled_honestly(lab) -> None:
    lab.params.upstream("docker.io").mirror_url = "http://127.0.0.1:9"  # nothing listens: mirror down
    lab.params.verification.images = ["docker.io/library/demo:1"]
    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None, "not asked"))
    mirror = host.samples[host.samples["path"] == "mirror"]
    assert not mirror["ok"].any()
    # never "warm" after failures: every mirror sample is a first attempt with an unknown cache state
    assert set(mirror["label"]) == {samples.CACHE_UNKNOWN}
    assert host.samples[host.samples["path"] == "direct"]["ok"].all()
    assert host.speedups() == {"docker.io/library/demo:1": None}


def test_headroom_reads_the_lab_docker_hub(lab, upstream) -> None:
    found = ratelimit.headroom(lab.params, lab.secret)
    assert len(found) == 1
    h = found[0]
    hub = upstream.hub.config
    assert (h.who, h.limit, h.window_s, h.source) == ("anonymous", hub.limit, hub.window_s, "127.0.0.1")
    assert h.remaining == hub.limit  # HEAD costs nothing; the ledger was reset
    assert not h.unlimited
    # one direct pull, and Nexus's fetch for the cold mirror pull, each cost one (same source here)
    hostpull.compare(
        lab.params.model_copy(
            update={
                "verification": lab.params.verification.model_copy(
                    update={"images": ["docker.io/library/busybox:lab"], "repetitions": 1}
                )
            }
        ),
        lab.secret,
        mirrorproof.NexusContent(None),
    )
    assert ratelimit.headroom(lab.params, lab.secret)[0].remaining == hub.limit - 2


def test_budget_guard_admits_only_the_direct_docker_hub_pulls_the_reserve_allows(lab) -> None:
    low = ratelimit.Headroom(
        "anonymous", "runbook host", limit=100, remaining=12, window_s=21600, source="1.2.3.4"
    )
    lab.params.verification.ratelimit_reserve = 10
    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None), [low])
    df = host.samples
    hub_direct = df[df["path"].eq("direct") & df["image"].str.startswith("docker.io")]
    # 12 left - reserve 10 = 2 of the 4 planned: repetition 1 of each Docker Hub image, so both get one
    assert sorted(zip(hub_direct["image"], hub_direct["rep"], strict=True)) == [
        ("docker.io/library/big:lab", 1),
        ("docker.io/library/demo:1", 1),
    ]
    assert df[df["image"] == "quay.io/lab/tool:1"]["path"].tolist().count("direct") == 2
    assert any("2 of 4 planned" in n and "12 pulls left" in n and "reserve 10" in n for n in host.notes)

    low.remaining = 10  # nothing above the reserve: no direct Docker Hub pull at all
    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None), [low])
    df = host.samples
    assert not (df["path"].eq("direct") & df["image"].str.startswith("docker.io")).any()
    assert any("4 of 4 planned" in n and "reserve 10" in n for n in host.notes)
    # the mirror samples are untouched by the budget
    assert (df["path"] == "mirror").sum() == len(IMAGES) * 2


def test_unlimited_when_no_headers(upstream) -> None:
    h = ratelimit.Headroom.from_headers("anonymous", "x", 200, {"content-type": "x"})
    assert h.unlimited and h.limit is None
    h = ratelimit.Headroom.from_headers(
        "anonymous",
        "x",
        200,
        {
            "RateLimit-Limit": "200;w=3600",
            "ratelimit-remaining": "7;w=3600",
            "docker-ratelimit-source": "2001:db8::",
        },
    )
    assert (h.limit, h.remaining, h.window_s, h.source, h.unlimited) == (200, 7, 3600, "2001:db8::", False)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("100;w=21600", (100, 21600)),
        ("76", (76, None)),
        (" 0 ; w = 60", (0, 60)),
        ("", None),
        ("abc", None),
        (None, None),
    ],
)
def test_parse_ratelimit(value, expected) -> None:
    assert ratelimit.parse_ratelimit(value) == expected


def test_demonstration_refuses_direct_and_serves_from_the_warm_mirror(lab, upstream) -> None:
    hub = upstream.hub
    saved = hub.config
    hub.config = saved.updated({"limit": 3})
    try:
        host_before = ratelimit.headroom(lab.params, lab.secret)[0].remaining
        demo = ratelimit.demonstrate(lab.params, lab.secret)
        host_after = ratelimit.headroom(lab.params, lab.secret)[0].remaining
    finally:
        hub.config = saved
    assert demo.skipped is None
    assert demo.warm_up and demo.warm_up.ok
    assert demo.before and demo.before.source == "127.0.0.2" and demo.before.remaining == 3
    assert demo.first_refusal_after == 3
    assert demo.direct and (demo.direct.status, demo.direct.code) == (429, "TOOMANYREQUESTS")
    assert demo.mirror and demo.mirror.ok
    assert demo.shown and demo.record()["shown"] is True
    # the GETs were charged to 127.0.0.2; the runbook host's source paid only Nexus's fetch for the warm-up
    assert (host_before, host_after) == (3, 2)
    assert "429" in demo.table().to_string()


def test_demonstration_is_off_by_default(lab) -> None:
    lab.params.verification.demonstrate_rate_limit = False
    demo = ratelimit.demonstrate(lab.params, lab.secret)
    assert demo.skipped and "burns real Docker Hub quota" in demo.skipped and not demo.shown


def test_counters_without_lab_endpoint_use_nexus_metrics_or_say_why(lab) -> None:
    lab.params.verification.counters_url = None
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    snap = mirrorproof.CounterSource(lab.params, content).snapshot()
    # the emulator does not serve Nexus's /service/metrics/data: the snapshot says so instead of guessing
    assert snap.per_repo is None and snap.requests_total is None
    assert any("/service/metrics/data" in p for p in snap.problems)
    content.client.close()


def test_usage_forecast_from_measured_requests(lab) -> None:
    lab.params.verification.expected_pulls_per_day = 1000
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    source = mirrorproof.CounterSource(lab.params, content)
    before = source.snapshot()
    host = hostpull.compare(lab.params, lab.secret, content)
    after = source.snapshot()
    proof = mirrorproof.prove(lab.params, content, source, before, after)
    node = NodeComparison(samples.frame([]))
    use = report.usage(lab.params, content, after, proof, host, node)
    assert use.mirror_pulls == len(IMAGES) * 2
    assert use.requests_per_pull == pytest.approx(proof.requests_moved / use.mirror_pulls)
    assert use.forecast_requests_per_day == pytest.approx(use.requests_per_pull * 1000)
    assert use.components == 3 and use.components_complete  # three images cached in the two proxies
    assert (use.requests_cap, use.components_cap) == (100_000, 40_000)
    content.client.close()


def test_headroom_of_the_docker_hub_account_nexus_uses(lab, upstream, monkeypatch) -> None:
    from runbook_lab.dockerhub import DockerHub, account_id
    from runbook_lib.params import Credentials

    hub = DockerHub(upstream.registry_url, user=("labuser", "hub-secret")).start()
    try:
        docker = lab.params.upstream("docker.io")
        docker.remote_url = hub.url
        docker.credentials = Credentials(username="labuser", password="env:TEST_HUB_PASSWORD")
        monkeypatch.setenv("TEST_HUB_PASSWORD", "hub-secret")
        anon, account = ratelimit.headroom(lab.params, lab.secret)
        assert (anon.who, anon.limit, anon.source) == ("anonymous", 100, "127.0.0.1")
        assert (account.who, account.limit, account.remaining) == ("user labuser", 200, 200)
        assert account.source == account_id("labuser")  # charged to the account, not to the address
        monkeypatch.setenv("TEST_HUB_PASSWORD", "wrong")
        refused = ratelimit.headroom(lab.params, lab.secret)[1]
        assert not refused.ok and refused.status == 401 and "hub-secret" not in (refused.error or "")
    finally:
        hub.stop()
