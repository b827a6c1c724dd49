"""Live progress for long steps: a bar and a chart in JupyterLab, plain lines everywhere else.

::

    from runbook_lib import progress
    with progress.tracker("node rollout: default", total=3, unit="node", chart=None) as t:
        t.advance("node-abc replaced")                       # one step done; the label is shown
        t.advance("nginx via mirror", value=0.42, series="mirror")  # value: a sample (s), a chart point
        t.note("text")                                       # a line of context

Headless (papermill, ``runbook run``, scripts, tests: ``interactive.is_interactive()`` is false) no widget
is created and ipywidgets is not imported: ``advance`` prints nothing and ``note`` prints its line, so
a step that logs through ``note`` (or keeps its own prints) logs exactly what it logged before.

In JupyterLab the tracker shows an ipywidgets bar with the count and the latest label and, with
``chart`` set, an SVG bar chart of the samples grouped by series, redrawn per sample (a few hundred
bytes of SVG per message: no plotting library, no new dependency). Notes still print, under the widget.

The form's Apply runs the stage headless (``runner.run``: papermill, a kernel of its own), so its
trackers are headless too. For that run the form sets ``RUNBOOK_PROGRESS_FEED`` to a file: each
headless tracker appends its state there as a JSON line (``Feed``), and ``FeedMirror``, a thread in the
form's kernel, shows every tracker of the feed as the same bar and chart under the form while the stage
runs.

Nothing secret reaches a widget: every text passes the redactor before it is set (and the kernel's
scrubbed session is installed before the first widget message, as for the form). The feed holds the
same scrubbed texts, in a file only the form's user can read.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.secrets import REDACTOR

CHART_WIDTH, CHART_HEIGHT = 640, 160  # px of the SVG
MAX_BAR_PX = 24  # the widest bar: the chart fills in from the left as samples arrive
MAX_BARS = 200  # the chart keeps the latest samples beyond this (a long run stays cheap to redraw)
FEED_ENV = "RUNBOOK_PROGRESS_FEED"  # set by the form's Apply for the stage kernels it starts
_FEED_KEYS = itertools.count(1)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Sample:
    series: str
    value: float
    label: str


@dataclass
class Tracker:
    """Counts, the latest label and the samples of one long step; widgets only when interactive."""

    title: str
    total: int | None = None
    unit: str = "step"
    chart: str | None = None
    out: Callable[[str], None] = print
    done: int = 0
    label: str = ""
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    widgets: Any = None  # _Widgets in JupyterLab, None headless
    feed: Feed | None = None  # headless under the form's Apply: the state goes to the form's mirror

    def __post_init__(self) -> None:
        self.title = REDACTOR.scrub(self.title)
        self.chart = REDACTOR.scrub(self.chart) if self.chart else self.chart

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # -- what the calling step reports
    def advance(self, label: str = "", value: float | None = None, series: str = "", steps: int = 1) -> None:
        """``steps`` done (one by default); ``value`` is a sample for the chart, grouped by ``series``."""
        self.done += steps
        self.label = REDACTOR.scrub(str(label))
        if value is not None:
            self.samples.append(Sample(REDACTOR.scrub(series or "value"), float(value), self.label))
        self._refresh(chart=value is not None)

    def update(self, done: int, total: int | None = None, label: str = "") -> None:
        """Absolute counts, for steps that observe progress rather than make it (a rollout's watch)."""
        self.done = done
        if total is not None:
            self.total = total
        if label:
            self.label = REDACTOR.scrub(str(label))
        self._refresh(chart=False)

    def note(self, text: str) -> None:
        """A line of context: printed in every mode (what the step logged before the tracker)."""
        self.notes.append(REDACTOR.scrub(str(text)))
        self.out(self.notes[-1])

    # -- what is shown
    def counts(self) -> str:
        unit = self.unit if (self.total or self.done) == 1 else f"{self.unit}s"
        return f"{self.done}/{self.total} {unit}" if self.total is not None else f"{self.done} {unit}"

    def series(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for s in self.samples:
            out.setdefault(s.series, []).append(s.value)
        return out

    def _refresh(self, chart: bool) -> None:
        if self.widgets is not None:
            self.widgets.show(self, chart)
        if self.feed is not None:
            self.feed.send(self, self.samples[-1] if chart and self.samples else None)


@dataclass
class Feed:
    """One headless tracker's state, appended as a JSON line per change to the file ``FEED_ENV`` names.
    Every text in it went through the redactor already (``Tracker``)."""

    path: str
    key: str = field(default_factory=lambda: f"{os.getpid()}-{next(_FEED_KEYS)}")

    def send(self, t: Tracker, sample: Sample | None) -> None:
        if not self.path:  # a write failed before: the form went away
            return
        line = {
            "key": self.key,
            "title": t.title,
            "total": t.total,
            "unit": t.unit,
            "chart": t.chart,
            "done": t.done,
            "label": t.label,
            "sample": [sample.series, sample.value, sample.label] if sample else None,
        }
        try:  # one write of one line: the mirror never reads half a line of a finished write
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        except OSError:
            self.path = ""  # the form went away: the stage goes on, its notebook logs as ever


class FeedMirror:
    """The trackers of a feed shown live in JupyterLab: a thread reads the lines the stage's kernel
    appends and keeps one tracker with widgets per feed key; ``show`` gets each new tracker's box.
    Leaving the ``with`` block reads what is left, so the bars end where the stage's trackers ended."""

    def __init__(self, path: Path, show: Callable[[Any], None], poll_s: float = 0.2) -> None:
        self.path, self.show, self.poll_s = Path(path), show, poll_s
        self.trackers: dict[str, Tracker] = {}
        self._offset, self._rest = 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-feed", daemon=True)

    def __enter__(self) -> FeedMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.drain()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.drain()

    def drain(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as feed:
                feed.seek(self._offset)
                text = feed.read()
                self._offset = feed.tell()
        except OSError:
            return
        *lines, self._rest = (self._rest + text).split("\n")
        for line in lines:
            if line.strip():
                self._apply(json.loads(line))

    def _apply(self, state: dict[str, Any]) -> None:
        t = self.trackers.get(state["key"])
        if t is None:
            t = Tracker(state["title"], state["total"], state["unit"], state["chart"], out=lambda _: None)
            t.widgets = _Widgets(t)
            self.trackers[state["key"]] = t
            self.show(t.widgets.box)
        t.done, t.total, t.label = state["done"], state["total"], REDACTOR.scrub(state["label"])
        if state["sample"]:
            series, value, label = state["sample"]
            t.samples.append(Sample(REDACTOR.scrub(series), float(value), REDACTOR.scrub(label)))
        t._refresh(chart=bool(state["sample"]))


class _Widgets:
    """The bar, its counts, the latest label and the chart. Only built in a JupyterLab kernel."""

    def __init__(self, t: Tracker) -> None:
        import ipywidgets as w

        self.title = w.HTML(f"<b>{html.escape(t.title)}</b>")
        self.bar = w.IntProgress(value=0, min=0, max=max(t.total or 0, 1), layout=w.Layout(width="40%"))
        self.counts = w.Label()
        self.latest = w.Label()
        self.chart = w.HTML() if t.chart else None
        for widget, name in (
            (self.bar, "progress-bar"),
            (self.counts, "progress-counts"),
            (self.latest, "progress-label"),
            *(((self.chart, "progress-chart"),) if self.chart else ()),
        ):
            widget.add_class(f"runbook-{name}")  # stable names for the browser tests
        parts = [self.title, w.HBox([self.bar, self.counts]), self.latest]
        self.box = w.VBox(parts + ([self.chart] if self.chart else []))
        self.box.add_class("runbook-progress")
        self.show(t, chart=True)

    def show(self, t: Tracker, chart: bool) -> None:
        total = t.total if t.total is not None else max(t.done, 1)
        self.bar.max = max(total, 1)
        self.bar.value = self.bar.max if t.total == 0 else min(t.done, self.bar.max)  # 0 to do: done
        self.bar.bar_style = "success" if t.total is not None and t.done >= t.total else ""
        self.counts.value = t.counts()
        self.latest.value = t.label
        if self.chart is not None and chart:
            self.chart.value = svg_chart(t.chart or "", t.samples)


def svg_chart(title: str, samples: list[Sample], width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> str:
    """A bar per sample (seconds), coloured by series, with a legend: cheap to redraw per sample."""
    shown = samples[-MAX_BARS:]
    names = list(dict.fromkeys(s.series for s in samples))
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    top = max((s.value for s in shown), default=0.0) or 1.0
    pad, plot_h = 4, height - 36
    step = min((width - 2 * pad) / max(len(shown), 1), MAX_BAR_PX)  # a few samples: narrow bars, room left
    bars = []
    for i, s in enumerate(shown):
        h = max(plot_h * s.value / top, 1.0)
        x, y = pad + i * step, 20 + plot_h - h
        tip = html.escape(f"{s.series}: {s.label} {s.value:.3g} s")
        bars.append(
            f'<rect class="sample" data-series="{html.escape(s.series)}" data-value="{s.value:.6g}" '
            f'x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="{colour[s.series]}"><title>{tip}</title></rect>'
        )
    count = {n: sum(1 for s in samples if s.series == n) for n in names}
    legend = " ".join(
        f'<tspan fill="{colour[n]}">\u25a0 {html.escape(n)} ({count[n]})</tspan>' for n in names
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'data-samples="{len(samples)}" style="background:#fafafa">'
        f'<text x="{pad}" y="14" font-size="12">{html.escape(title)} — max {top:.3g} s: {legend}</text>'
        f"{''.join(bars)}"
        f'<line x1="{pad}" y1="{20 + plot_h}" x2="{width - pad}" y2="{20 + plot_h}" stroke="#999"/>'
        "</svg>"
    )


def _interactive() -> bool:
    if "IPython" not in sys.modules:  # no kernel in this process: not even worth importing IPython
        return False
    from runbook_lib import interactive

    return interactive.is_interactive()


def tracker(
    title: str,
    total: int | None = None,
    unit: str = "step",
    chart: str | None = None,
    *,
    out: Callable[[str], None] = print,
    interactive: bool | None = None,
) -> Tracker:
    """A tracker for one long step, shown at once in JupyterLab; use it in ``with`` or as is (a step whose
    loop is not a block of its own). ``interactive`` None: JupyterLab or not, as the form decides."""
    t = Tracker(title, total, unit, chart, out)
    if interactive if interactive is not None else _interactive():
        from IPython.display import display

        from runbook_lib.notebook import install_scrubbers

        install_scrubbers()  # before the first widget message leaves the kernel
        t.widgets = _Widgets(t)
        display(t.widgets.box)
    elif os.environ.get(FEED_ENV):
        t.feed = Feed(os.environ[FEED_ENV])
        t.feed.send(t, None)  # the bar shows in the form before the first step ends
    return t
