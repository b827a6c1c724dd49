"""Host pulls with bounded concurrency (issue #15) on the lab's real parts: the Nexus emulator configured by
stages 1-2, its docker.io proxy pulling from a CNCF distribution registry behind the Docker Hub stand-in.

What is asserted is behaviour, never a duration: how many pulls were in flight at once (a barrier makes
the first ones meet, so concurrency is shown without timing), the order of the components check and the
mirror pulls per image, the sorted rows, and the Docker Hub stand-in's own counters and ledger: exactly
the admitted direct pulls reach it, and it never answers 429 while the run stays within the reserve.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from runbook_lib.registry.pull import pull
from runbook_lib.secrets import REDACTOR
from runbook_lib.verify import hostpull, mirrorproof, ratelimit, samples
from tests.support.labkit import Lab, Upstream, needs_registry

pytestmark = needs_registry
N_IMAGES = 8
REPS = 2
IMAGES = [f"docker.io/library/c{i}:1" for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[Upstream]:
    """A distribution registry with N small single-platform images, behind the Docker Hub stand-in."""
    from runbook_lab.dockerhub import DockerHub
    from runbook_lab.images import build_image, push
    from runbook_lab.registries import start_registry, stop_process

    tmp = tmp_path_factory.mktemp("upstream")
    reg = start_registry("docker.io", tmp / "reg", 0, tmp / "reg.log")
    hub = DockerHub(reg.url).start()
    try:
        for i in range(N_IMAGES):
            image = build_image({f"etc/c{i}.conf": b"image %d\n" % i}, [{"data/fill": bytes([i]) * 65536}])
            push(image, reg.url, f"library/c{i}", "1")
        yield Upstream(hub.url, hub, reg.url)
    finally:
        hub.stop()
        stop_process(reg)


@pytest.fixture
def lab(tmp_path, upstream, monkeypatch) -> Iterator[Lab]:
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    hub = upstream.hub
    saved = hub.config
    hub.ledger.reset()
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    v = lab.params.verification
    v.images = list(IMAGES)
    v.repetitions = REPS
    v.concurrency = 4
    lab.run_stages(apply=True)
    yield lab
    lab.emulator.stop()
    hub.config = saved
    hub.ledger.reset()
    REDACTOR.clear()


def hub_counters(upstream: Upstream) -> dict[str, int]:
    return dict(upstream.hub.state()["counters"])


def delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def expected_layout(direct_reps: dict[str, list[int]]) -> list[tuple[str, str, int]]:
    """(image, path, rep) in the order the result frame must have: parameters order, direct, then mirror."""
    out = []
    for image in IMAGES:
        out += [(image, "direct", rep) for rep in direct_reps.get(image, [])]
        out += [(image, "mirror", rep) for rep in range(1, REPS + 1)]
    return out


def layout(host: hostpull.HostComparison) -> list[tuple[str, str, int]]:
    df = host.samples
    return list(zip(df["image"], df["path"], df["rep"].astype(int), strict=True))


class Recorder:
    """Wraps the real pull and the real components check: a global sequence of events and the peak number
    of pulls in flight. The first `meet` pulls wait for each other at a barrier before pulling, which
    only succeeds when that many run at once."""

    def __init__(self, content: mirrorproof.NexusContent, mirror_hosts: set[str], meet: int) -> None:
        self.events: list[tuple[str, str, str]] = []  # (what, route, image)
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.calls = itertools.count()
        self.barrier = threading.Barrier(meet, timeout=60) if meet > 1 else None
        self.meet = meet
        self.mirror_hosts = mirror_hosts
        real = content.is_cached

        def is_cached(up, ref):
            found = real(up, ref)
            self.log("checked", "-", f"{ref.registry}/{ref.repository}:{ref.reference}")
            return found

        content.is_cached = is_cached  # type: ignore[method-assign]

    def log(self, what: str, route: str, image: str) -> None:
        with self.lock:
            self.events.append((what, route, image))

    def pull(self, client, repository, reference, platform, max_parallel):
        route = "mirror" if client.base_url in self.mirror_hosts else "direct"
        image = f"docker.io/{repository}:{reference}"
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        if self.barrier is not None and next(self.calls) < self.meet:
            self.barrier.wait()  # BrokenBarrierError (a failure) unless `meet` pulls are in flight at once
        self.log("start", route, image)
        try:
            return pull(client, repository, reference, platform, max_parallel)
        finally:
            self.log("end", route, image)
            with self.lock:
                self.in_flight -= 1


def test_concurrent_pulls_keep_cold_then_warm_and_check_before_the_first_mirror_pull(lab, upstream) -> None:
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    assert content.client is not None, content.problem
    mirror = lab.params.upstream("docker.io").mirror_url
    rec = Recorder(content, {mirror}, meet=4)
    before = hub_counters(upstream)

    host = hostpull.compare(lab.params, lab.secret, content, pull_one=rec.pull)
    after = hub_counters(upstream)
    content.client.close()

    assert rec.peak == 4  # four met at the barrier, and the bound of verification.concurrency held
    df = host.samples
    assert df["ok"].all(), df[~df["ok"]][["pulled", "error"]]
    # rows are sorted, whichever pull finished first
    assert layout(host) == expected_layout({image: list(range(1, REPS + 1)) for image in IMAGES})
    for image in IMAGES:
        assert df[df["image"] == image]["label"].tolist() == [
            samples.DIRECT,
            samples.DIRECT,
            samples.MIRROR_COLD,
            samples.MIRROR_WARM,
        ]
        mine = [(i, e) for i, e in enumerate(rec.events) if e[2] == image]
        checked = [i for i, e in mine if e[0] == "checked"]
        mirror_events = [e[0] for _, e in mine if e[1] == "mirror"]
        first_mirror = next(i for i, e in mine if e[1] == "mirror")
        assert len(checked) == 1 and checked[0] < first_mirror  # Nexus asked before its first mirror pull
        assert mirror_events == ["start", "end"] * REPS  # an image's mirror pulls never overlap: cold first
    # every direct pull reached the stand-in (one counted pull each), plus Nexus's one fetch per cold image
    assert delta(after, before, "pulls_counted") == N_IMAGES * REPS + N_IMAGES
    assert delta(after, before, "too_many_requests") == 0


def test_one_at_a_time_is_the_serial_order(lab) -> None:
    lab.params.verification.concurrency = 1
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    rec = Recorder(content, {lab.params.upstream("docker.io").mirror_url}, meet=1)
    host = hostpull.compare(lab.params, lab.secret, content, pull_one=rec.pull)
    content.client.close()
    assert rec.peak == 1
    expected: list[tuple[str, str, str]] = []
    for image in IMAGES:  # per image: direct pulls, the components check, then the mirror pulls
        expected += [("start", "direct", image), ("end", "direct", image)] * REPS
        expected += [("checked", "-", image)] + [("start", "mirror", image), ("end", "mirror", image)] * REPS
    assert rec.events == expected
    assert layout(host) == expected_layout({image: list(range(1, REPS + 1)) for image in IMAGES})


def warm_nexus(lab: Lab, upstream: Upstream) -> None:
    """One run with the stand-in unlimited, so later runs' mirror pulls cost Docker Hub nothing."""
    hub = upstream.hub
    limited = hub.config
    hub.config = limited.updated({"limit": None})
    hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None))
    hub.config = limited
    hub.ledger.reset()


def test_budget_admits_exactly_the_allowed_direct_pulls_and_docker_hub_never_refuses(lab, upstream) -> None:
    hub = upstream.hub
    warm_nexus(lab, upstream)
    hub.config = hub.config.updated({"limit": 10})
    lab.params.verification.ratelimit_reserve = 4  # 10 left - 4 = 6 of the 16 planned direct pulls
    found = ratelimit.headroom(lab.params, lab.secret)  # a real HEAD against the stand-in: costs nothing
    assert ratelimit.anonymous(found).remaining == 10
    before = hub_counters(upstream)

    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None), found)
    after = hub_counters(upstream)

    # the stand-in saw exactly the admitted direct pulls (Nexus served every mirror pull from its cache)
    assert delta(after, before, "manifest_get") == 6
    assert delta(after, before, "pulls_counted") == 6
    assert delta(after, before, "too_many_requests") == 0
    assert hub.state()["sources"]["127.0.0.1"]["remaining"] == 4  # the reserve is left, untouched
    # repetition 1 of the first six images; the rest skipped with a note naming the parameter
    assert layout(host) == expected_layout({image: [1] for image in IMAGES[:6]})
    assert host.samples["ok"].all()
    assert any(
        "10 of 16 planned (6 admitted)" in n
        and "10 pulls left" in n
        and "verification.ratelimit_reserve" in n
        for n in host.notes
    ), host.notes
    mirror_first = host.samples[(host.samples["path"] == "mirror") & (host.samples["rep"] == 1)]
    assert set(mirror_first["label"]) == {samples.CACHE_UNKNOWN}  # Nexus not asked in this run


def test_reserve_covers_the_cold_fetches_nexus_makes_from_the_same_source(lab, upstream) -> None:
    """In the lab Nexus reaches Docker Hub from the same address as the runbook host: the cold mirror pulls
    cost one pull each, and a reserve that covers them keeps the whole run clear of 429."""
    hub = upstream.hub
    hub.config = hub.config.updated({"limit": 12})
    lab.params.verification.ratelimit_reserve = N_IMAGES  # 12 left - 8 = 4 direct pulls
    found = ratelimit.headroom(lab.params, lab.secret)
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    before = hub_counters(upstream)

    host = hostpull.compare(lab.params, lab.secret, content, found)
    after = hub_counters(upstream)
    content.client.close()

    assert delta(after, before, "too_many_requests") == 0
    assert delta(after, before, "pulls_counted") == 4 + N_IMAGES  # four direct, one cold fetch per image
    assert hub.state()["sources"]["127.0.0.1"]["remaining"] == 0
    assert layout(host) == expected_layout({image: [1] for image in IMAGES[:4]})
    assert host.samples["ok"].all()
    cold = host.samples[(host.samples["path"] == "mirror") & (host.samples["rep"] == 1)]
    assert set(cold["label"]) == {samples.MIRROR_COLD}


def test_a_429_seen_anyway_stops_the_remaining_direct_docker_hub_pulls(lab, upstream) -> None:
    """Headroom read earlier than another client spent the budget: the first refusal ends direct pulls."""
    hub = upstream.hub
    warm_nexus(lab, upstream)
    hub.config = hub.config.updated({"limit": 3})
    stale = ratelimit.Headroom("anonymous", "runbook host", limit=100, remaining=100, source="127.0.0.1")
    lab.params.verification.concurrency = 1  # one at a time: which pull meets the 429 is deterministic
    lab.params.verification.ratelimit_reserve = 0
    before = hub_counters(upstream)

    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None), [stale])
    after = hub_counters(upstream)

    assert delta(after, before, "too_many_requests") == 1
    assert delta(after, before, "pulls_counted") == 3
    direct = host.samples[host.samples["path"] == "direct"]
    assert direct["status"].tolist()[-1] == 429 and direct["ok"].tolist() == [True, True, True, False]
    assert (host.samples["path"] == "mirror").sum() == N_IMAGES * REPS and host.samples["ok"].sum() == 3 + 16
    assert any("answered 429" in n for n in host.notes)
