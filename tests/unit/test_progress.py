"""runbook_lib.progress: plain lines headless, a bar and a chart in JupyterLab, nothing secret in either.

The JupyterLab path is taken two ways: the ``interactive=True`` flag, and the real detection
(``interactive.is_interactive``) with a fake shell whose execute request carries a ``cellId`` as
JupyterLab's does. The scrubbers the tracker installs in a kernel are replaced by a recorder here, so
the test process's streams stay as pytest set them.

The hooks run for real with JupyterLab's path forced: the rollout watch against the Kubernetes stand-in
(the test plays Karpenter, as in test_karpenter_rollout), the node pulls with the test kubelet of
test_verify_node, the rate-limit demonstration against the lab's Docker Hub (test_verify_host's lab).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook_lib import interactive, notebook, progress
from runbook_lib.secrets import REDACTOR
from tests.unit.test_verify_host import lab  # noqa: F401 - fixtures: the Nexus-emulator lab ...
from tests.unit.test_verify_node import cluster, upstream  # noqa: F401 - ... and its nodes' stand-in

pytest.importorskip("IPython")  # a kernel's process has it loaded: the tracker asks it only then
REPO = Path(__file__).resolve().parents[2]
SECRET = "progress-S3cret-value"


@pytest.fixture
def scrubbers(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(notebook, "install_scrubbers", lambda: calls.append("installed"))
    return calls


@pytest.fixture
def secret():
    REDACTOR.add(SECRET)
    yield SECRET
    REDACTOR.clear()


def widget_states(widget) -> list[dict]:
    """The state of a widget and every widget it holds: what JupyterLab saves with the notebook."""
    out = [widget.get_state()]
    for child in getattr(widget, "children", ()):
        out += widget_states(child)
    return out


def bars(svg: str) -> list[tuple[str, float]]:
    return [
        (s, float(v))
        for s, v in re.findall(r'<rect class="sample" data-series="([^"]*)" data-value="([^"]*)"', svg)
    ]


def test_headless_tracker_prints_only_its_notes_and_imports_no_widget_library() -> None:
    """In a fresh interpreter (no kernel): no widget, ipywidgets and IPython never imported."""
    code = (
        "import sys\n"
        "from runbook_lib import progress\n"
        "with progress.tracker('node rollout: default', total=2, unit='node', chart='pulls') as t:\n"
        "    t.advance('node-a replaced')\n"
        "    t.note('[12:00:00] default: 1/2 new')\n"
        "    t.advance('nginx via mirror', value=0.42, series='mirror')\n"
        "print('widgets', t.widgets, 'ipywidgets' in sys.modules, 'IPython' in sys.modules)\n"
        "print('state', t.counts(), t.series())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "[12:00:00] default: 1/2 new",
        "widgets None False False",
        "state 2/2 nodes {'mirror': [0.42]}",
    ]


def test_headless_under_papermill_even_with_a_kernel(monkeypatch, scrubbers) -> None:
    """A kernel whose history holds papermill's injected cell is headless, whatever the request says."""
    shell = fake_shell(history=["# Parameters\nparams_file = 'x.yaml'\n"])
    monkeypatch.setattr(interactive, "_shell", lambda: shell)
    lines: list[str] = []
    t = progress.tracker("node pulls", total=1, unit="pull", chart="s", out=lines.append)
    t.advance("a", value=1.0)
    t.note("one line")
    assert t.widgets is None and scrubbers == [] and lines == ["one line"]


def fake_shell(history: list[str]) -> SimpleNamespace:
    """What JupyterLab's kernel looks like to is_interactive(): a request with a cellId."""
    kernel = SimpleNamespace(get_parent=lambda channel="shell": {"metadata": {"cellId": "c-1"}})
    return SimpleNamespace(kernel=kernel, user_ns={"In": ["", *history]})


def test_jupyterlab_tracker_bar_and_chart_follow_advance(monkeypatch, scrubbers) -> None:
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(interactive, "_shell", lambda: fake_shell(history=["x = 1\n"]))
    lines: list[str] = []
    t = progress.tracker("node pulls", total=3, unit="pull", chart="pull (s)", out=lines.append)
    w = t.widgets
    assert w is not None and scrubbers == ["installed"]  # scrubbed before the first widget message
    assert (w.bar.value, w.bar.max, w.counts.value) == (0, 3, "0/3 pulls")
    assert 'data-samples="0"' in w.chart.value

    t.advance("pool/node-a: docker.io/library/nginx:1.27 via mirror", value=0.5, series="mirror (cold)")
    t.advance("pool/node-a: registry-1.docker.io/library/nginx:1.27 via direct", value=2.0, series="direct")
    assert (w.bar.value, w.bar.max, w.counts.value) == (2, 3, "2/3 pulls")
    assert w.latest.value.endswith("via direct") and w.bar.bar_style == ""
    assert bars(w.chart.value) == [("mirror (cold)", 0.5), ("direct", 2.0)]

    t.advance("pool/node-b: failed", value=None)  # a failed pull: counted, no chart point
    t.note("pool/node-b: the kubelet did not act on the Pod")
    assert (w.bar.value, w.counts.value, w.bar.bar_style) == (3, "3/3 pulls", "success")
    assert len(bars(w.chart.value)) == 2 and 'data-samples="2"' in w.chart.value
    assert t.series() == {"mirror (cold)": [0.5], "direct": [2.0]}
    assert lines == ["pool/node-b: the kubelet did not act on the Pod"]  # notes still print
    assert list(w.bar._dom_classes) == ["runbook-progress-bar"]  # the browser tests' handle


def test_update_sets_absolute_counts_and_a_changing_total(scrubbers) -> None:
    pytest.importorskip("ipywidgets")
    t = progress.tracker("node rollout: default", unit="node", interactive=True)
    w = t.widgets
    assert w.chart is None  # chart=None: a bar only
    t.update(0, total=0, label="default: no nodes")
    assert (w.bar.value, w.bar.max, w.counts.value, w.bar.bar_style) == (1, 1, "0/0 nodes", "success")
    t.update(1, total=4, label="default: 1/4 new (1 ready)")
    assert (w.bar.value, w.bar.max, w.counts.value, w.bar.bar_style) == (1, 4, "1/4 nodes", "")
    t.update(2, total=2)  # old nodes gone: the total shrinks to the new ones
    assert (w.bar.value, w.bar.max, w.counts.value, w.bar.bar_style) == (2, 2, "2/2 nodes", "success")
    assert w.latest.value == "default: 1/4 new (1 ready)"  # no label given: the last one stays


def test_no_secret_in_widget_state(scrubbers, secret) -> None:
    pytest.importorskip("ipywidgets")
    lines: list[str] = []
    t = progress.tracker(
        f"pulls as {secret}", 2, "pull", f"chart {secret}", out=lines.append, interactive=True
    )
    t.advance(f"pulled with password {secret}", value=1.5, series=f"series-{secret}")
    t.note(f"token {secret}")
    state = json.dumps(widget_states(t.widgets.box))
    assert "pulled with password ***" in state and "series-***" in state  # the text is there, masked
    assert not [f for f in REDACTOR.forms(secret) if f in state]
    assert lines == ["token ***"] and secret not in repr(t)


def test_a_headless_tracker_feeds_the_forms_mirror_without_secrets(tmp_path: Path) -> None:
    """Under the form's Apply (FEED_ENV set) a headless tracker, in a process of its own as the stage
    kernel is, appends its scrubbed state per change; the mirror turns the lines into the same bar and
    chart, and a line still being written waits for its end."""
    feed = tmp_path / "feed.jsonl"
    code = (
        "from runbook_lib import progress\n"
        "from runbook_lib.secrets import REDACTOR\n"
        f"REDACTOR.add({SECRET!r})\n"
        "t = progress.tracker('node pulls per image and route', 3, 'pull', 'node pull (s) by label')\n"
        f"t.advance('nginx as {SECRET}', value=0.5, series='direct')\n"
        "t.advance('nginx via mirror', value=0.1, series='mirror')\n"
        "print(t.widgets, t.feed is not None)\n"
    )
    env = {**os.environ, progress.FEED_ENV: str(feed)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["None True"]  # headless: no widget, the state went to the feed
    lines = feed.read_text().splitlines()
    assert len(lines) == 3 and SECRET not in feed.read_text()  # created, then one line per step
    shown: list = []
    mirror = progress.FeedMirror(feed, shown.append)
    mirror.drain()
    [t] = mirror.trackers.values()
    assert shown == [t.widgets.box]
    assert t.widgets.counts.value == "2/3 pulls" and t.widgets.latest.value == "nginx via mirror"
    assert bars(t.widgets.chart.value) == [("direct", 0.5), ("mirror", 0.1)]
    assert SECRET not in json.dumps(widget_states(t.widgets.box))
    last = {**json.loads(lines[-1]), "done": 3, "label": "nginx via mirror again", "sample": None}
    text = json.dumps(last) + "\n"
    with feed.open("a") as out:
        out.write(text[:20])  # half a line: not shown yet
    mirror.drain()
    assert t.widgets.counts.value == "2/3 pulls"
    with feed.open("a") as out:
        out.write(text[20:])
    mirror.drain()
    assert t.widgets.counts.value == "3/3 pulls" and t.widgets.latest.value == "nginx via mirror again"
    assert len(mirror.trackers) == 1 and len(shown) == 1  # same key: the same bar


def test_chart_keeps_the_latest_samples_and_counts_all() -> None:
    samples = [progress.Sample("GET", float(i), f"GET {i}") for i in range(progress.MAX_BARS + 50)]
    svg = progress.svg_chart("GETs", samples)
    drawn = bars(svg)
    assert len(drawn) == progress.MAX_BARS and drawn[0][1] == 50.0 and drawn[-1][1] == progress.MAX_BARS + 49
    assert f'data-samples="{progress.MAX_BARS + 50}"' in svg and f"GET ({progress.MAX_BARS + 50})" in svg


# ---------------------------------------------------------------- the hooks, with JupyterLab's path taken
@pytest.fixture
def shown(monkeypatch, scrubbers) -> list[progress.Tracker]:
    """Every tracker the steps create, built as in JupyterLab (widgets and all)."""
    pytest.importorskip("ipywidgets")
    made: list[progress.Tracker] = []
    real = progress.tracker

    def tracker(*args, **kwargs) -> progress.Tracker:
        made.append(real(*args, **{**kwargs, "interactive": True}))
        return made[-1]

    monkeypatch.setattr(progress, "tracker", tracker)
    return made


def test_rollout_watch_shows_a_bar_per_node_class_that_reaches_its_nodes(kube, shown, tmp_path) -> None:
    from runbook_lib.karpenter import rollout
    from runbook_lib.kube import api_client
    from tests.unit import test_karpenter_rollout as r

    params = r.make_params(rollout_timeout_s=100, rollout_poll_s=1)
    params.kubernetes.kubeconfig = str(r.write_kubeconfig(tmp_path / "kubeconfig", kube.url))
    r.seed_cluster(kube, n=2)
    api = api_client(params)
    _, base = r.plan_and_apply(params, api)
    steps = [
        lambda: r.stamp_class(kube, "h2"),
        lambda: [kube.put(r.claim("new-0", "h2")), r.terminate(kube, api, "old-0"), r.finish(api, "old-0")],
        lambda: [kube.put(r.claim("new-1", "h2")), r.terminate(kube, api, "old-1"), r.finish(api, "old-1")],
    ]
    seen: list[tuple[int, int]] = []

    def sleep(seconds: float) -> None:
        bar = shown[0].widgets.bar
        seen.append((bar.value, bar.max))
        steps.pop(0)()

    lines: list[str] = []
    done = rollout.watch(params, api, base, out=lines.append, sleep=sleep)
    assert done[0].done and steps == []
    [t] = shown
    assert t.title == "node rollout: default" and t.widgets.chart is None
    assert (t.widgets.bar.value, t.widgets.bar.max, t.widgets.counts.value) == (2, 2, "2/2 nodes")
    assert seen == [(0, 2), (0, 2), (1, 2)]  # the bar moved with the new nodes, one per poll
    assert t.widgets.latest.value == done[0].line() and lines[-1].endswith(done[0].line())  # lines as before


def test_node_pulls_show_a_bar_of_all_pulls_and_a_chart_by_label(cluster, shown) -> None:  # noqa: F811
    from tests.unit.test_verify_node import run_node_path

    nexus_lab, _, _, kube_api = cluster
    result = run_node_path(nexus_lab, kube_api)
    df = result.samples
    [t] = shown
    assert t.total == len(df) > 0 and t.counts() == f"{len(df)}/{len(df)} pulls"
    assert t.widgets.bar.value == t.widgets.bar.max == len(df)
    timed = df[df["seconds"].notna()]
    assert bars(t.widgets.chart.value) == [
        (label, pytest.approx(s, rel=1e-5)) for label, s in zip(timed["label"], timed["seconds"], strict=True)
    ]
    assert (
        t.label
        == f"{df['pool'].iloc[-1]}/{df['node'].iloc[-1]}: {df['pulled'].iloc[-1]} via {df['path'].iloc[-1]}"
    )


def test_rate_limit_demonstration_charts_each_manifest_get(lab, upstream, shown) -> None:  # noqa: F811
    from runbook_lib.verify import ratelimit

    saved = upstream.hub.config
    upstream.hub.config = saved.updated({"limit": 3})
    try:
        demo = ratelimit.demonstrate(lab.params, lab.secret)
    finally:
        upstream.hub.config = saved
    [t] = shown
    assert demo.first_refusal_after == 3 and demo.manifest_gets == 4
    assert (t.done, t.total, t.counts(), t.label) == (4, 4, "4/4 GETs", "429 after 3 served")  # budget was 8
    assert [s for s, _ in bars(t.widgets.chart.value)] == ["served"] * 3 + ["429 refused"]
    assert t.widgets.bar.value == t.widgets.bar.max == 4 and t.widgets.bar.bar_style == "success"


def test_host_pulls_show_a_bar_of_the_admitted_pulls_and_a_chart_by_label(lab, shown) -> None:  # noqa: F811
    """Host pulls run up to verification.concurrency at once: one bar over the pulls the budget admits
    (skipped direct Docker Hub pulls are not in it), one chart sample per pull, labelled by route."""
    from runbook_lib.verify import hostpull, mirrorproof, ratelimit

    low = ratelimit.Headroom("anonymous", "runbook host", limit=100, remaining=12, window_s=21600, source="x")
    lab.params.verification.ratelimit_reserve = 10  # 2 of the planned direct Docker Hub pulls admitted
    host = hostpull.compare(lab.params, lab.secret, mirrorproof.NexusContent(None), [low])
    df = host.samples
    [t] = shown
    assert t.total == t.done == len(df) and t.counts() == f"{len(df)}/{len(df)} pulls"
    assert t.widgets.bar.value == t.widgets.bar.max == len(df)
    charted = sorted(s for s, _ in bars(t.widgets.chart.value))
    assert charted == sorted(df["label"]) and set(charted) >= {"direct"}
