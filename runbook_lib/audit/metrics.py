"""A run's figures as Prometheus metrics, for alerting: a textfile for node-exporter and a Pushgateway push.

Both take the same text, built from run.json (``metrics_text(record)``), in the text exposition format
0.0.4 (prometheus.io/docs/instrumenting/exposition_formats): gauges only, no timestamps (neither the
textfile collector nor the Pushgateway accepts them: prometheus/node_exporter README "Textfile
Collector", prometheus/pushgateway README "About timestamps").

* ``--metrics-file FILE``: written atomically (a temp file in the same folder, then a rename), so the
  collector never reads half a file; the name must end in ``.prom``, the only files the collector reads.
* ``--pushgateway URL``: ``PUT URL/metrics/job/<job>/instance/<target>/stages/<stages>`` (the
  Pushgateway API, prometheus/pushgateway README "API"): PUT replaces the whole group, so a stage that
  is gone from this run is gone from the gateway too.

Every series carries ``target`` and ``stages`` (the run's stage selection, e.g. ``verify``): two
schedules of one target (verification, drift detection in plan mode) give distinct series, in one
textfile folder or one Pushgateway. Label values come from the target name and stage ids only (and the
fixed path/action names below), values are numbers: nothing secret can reach a metric.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from runbook_lib.audit.record import ACTIONS

__all__ = [
    "CONTENT_TYPE",
    "DAY_S",
    "Family",
    "MetricsOptionError",
    "MetricsOutput",
    "check_metrics_file",
    "check_pushgateway",
    "families",
    "metrics_text",
    "push",
    "push_url",
    "write_textfile",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DAY_S = 86400  # the Community Edition request cap counts a rolling day
DEFAULT_JOB = "runbook"
PUSH_TIMEOUT_S = 10.0
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9._\-]+$")

Labels = dict[str, str]


@dataclass
class Family:
    """One metric family: its HELP text and its samples (labels, value). Every family here is a gauge:
    each figure is this run's, replaced by the next run, never accumulated."""

    name: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, labels: Labels, value: float | int | bool | None) -> None:
        """A sample; None (a figure the run could not measure) is left out rather than exported as NaN,
        so an alert on the figure neither fires nor resolves on a run that did not measure it."""
        if value is None:
            return
        self.samples.append((labels, float(value)))


class MetricsOptionError(ValueError):
    """A bad ``--metrics-file`` / ``--pushgateway`` value; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


# ------------------------------------------------------------------------------------ the metrics
def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _num(value: Any) -> float | None:
    """A finite number, else None (run.json figures are numbers or null; a bool is not a figure)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def stage_selection(record: Mapping[str, Any]) -> str:
    """The ``stages`` label: the run's stages in pipeline order, comma-separated."""
    return ",".join(str(s["name"]) for s in record.get("stages", []))


def families(record: Mapping[str, Any]) -> list[Family]:
    """The metric families of one run record (run.json)."""
    base: Labels = {"target": str(record["target"]), "stages": stage_selection(record)}
    out: list[Family] = []

    def family(name: str, help_text: str) -> Family:
        out.append(Family(name, help_text))
        return out[-1]

    started, ended = _epoch(record.get("started")), _epoch(record.get("ended"))
    family("runbook_run_success", "1 when every stage of the run was ok, 0 when a stage failed.").add(
        base, record.get("status") == "ok"
    )
    family("runbook_run_apply", "1 for a run with --apply, 0 for a plan-only run.").add(
        base, record.get("mode") == "apply"
    )
    family("runbook_run_start_timestamp_seconds", "When the run started, Unix time.").add(base, started)
    family("runbook_run_end_timestamp_seconds", "When the run ended, Unix time.").add(base, ended)
    family("runbook_run_duration_seconds", "Wall time of the run.").add(
        base, ended - started if started is not None and ended is not None else None
    )

    success = family("runbook_stage_success", "1 when the stage was ok, 0 when it failed; absent if skipped.")
    skipped = family("runbook_stage_skipped", "1 when the stage was skipped after an earlier stage failed.")
    duration = family("runbook_stage_duration_seconds", "Wall time of the stage (absent if skipped).")
    changes = family(
        "runbook_stage_changes",
        "Changes the stage planned (plan mode: create/update/delete above 0 is drift) or made (apply), "
        "by action.",
    )
    failed_checks = family("runbook_stage_failed_checks", "Checks the stage recorded as failed.")
    for stage in record.get("stages", []):
        labels = {**base, "stage": str(stage["name"])}
        status = stage.get("status")
        skipped.add(labels, status == "skipped")
        if status == "skipped":
            continue
        success.add(labels, status == "ok")
        duration.add(labels, _num(stage.get("duration_s")))
        counts = stage.get("changes") or {}
        for action in ACTIONS:
            changes.add({**labels, "action": action}, _num(counts.get(action, 0)))
        failed_checks.add(labels, sum(1 for c in stage.get("checks") or [] if not c.get("ok")))

    verify = next((s for s in record.get("stages", []) if s.get("name") == "verify"), None)
    if verify and verify.get("results"):
        out.extend(verify_families(verify["results"], base))
    return [f for f in out if f.samples]


def verify_families(results: Mapping[str, Any], labels: Labels) -> list[Family]:
    """The verify stage's figures (``verify.report.Figures`` and ``Usage`` in its run.json results)."""
    from runbook_lib.verify.report import Figures, headline

    try:
        fig = Figures.from_record(dict(results))
    except (KeyError, TypeError):  # a stage that failed before its figures were recorded
        return []
    out: list[Family] = []

    def family(name: str, help_text: str) -> Family:
        out.append(Family(name, help_text))
        return out[-1]

    head = headline(fig)
    family(
        "runbook_verify_warm_speedup_ratio",
        "Median direct pull time over median warm-mirror pull time, over the image set: the node path "
        "when it was measured, else the runbook host's.",
    ).add(labels, _num(head["set_speedup"]))
    by_path = family(
        "runbook_verify_path_warm_speedup_ratio", "Warm-mirror speed-up on one path (host or node)."
    )
    failed = family("runbook_verify_failed_pulls", "Test pulls that failed, by path (host or node).")
    pulls = family("runbook_verify_pulls", "Test pulls measured, by path (host or node).")
    for path, figures in (("host", fig.host), ("node", fig.node)):
        by_path.add({**labels, "path": path}, _num(figures.set_speedup))
        failed.add({**labels, "path": path}, _num(figures.failed))
        pulls.add({**labels, "path": path}, _num(figures.samples))
    family("runbook_verify_node_path_measured", "1 when pull Pods ran on the nodes, 0 when not.").add(
        labels, fig.node.measured
    )
    family(
        "runbook_verify_bypassed_pulls",
        "Node pulls of a mirrored name that did not go through the mirror (served upstream or by fallback).",
    ).add(labels, _num(fig.bypassed))

    rl = fig.ratelimit
    family(
        "runbook_verify_dockerhub_pulls_remaining",
        "Docker Hub anonymous pulls left in the window at the checked source address (absent if unlimited).",
    ).add(labels, _num(rl.anonymous_remaining))
    family("runbook_verify_dockerhub_pulls_limit", "Docker Hub anonymous pull limit per window.").add(
        labels, _num(rl.anonymous_limit)
    )
    family("runbook_verify_dockerhub_window_seconds", "Docker Hub rate-limit window.").add(
        labels, _num(rl.window_s)
    )
    if rl.source is not None or rl.unlimited:
        family(
            "runbook_verify_dockerhub_unlimited", "1 when Docker Hub sent no rate-limit headers (unlimited)."
        ).add(labels, rl.unlimited)

    use = results.get("usage")
    if isinstance(use, Mapping):
        # the caps are Community Edition's: Pro has none, OSS (before 3.77) had none (verify.report.Usage)
        caps_apply = use.get("edition") not in ("PRO", "OSS")
        forecast = _num(use.get("forecast_requests_per_day"))
        cap = _num(use.get("requests_cap")) if caps_apply else None
        family(
            "runbook_verify_nexus_forecast_requests",
            f"Forecast Nexus requests in a rolling day ({DAY_S} s): requests per mirror pull times "
            "verification.expected_pulls_per_day.",
        ).add(labels, forecast)
        family(
            "runbook_verify_nexus_requests_limit",
            f"Nexus Community Edition cap on requests in a rolling day ({DAY_S} s).",
        ).add(labels, cap)
        family("runbook_verify_nexus_requests_window_seconds", "The window of the Nexus request cap.").add(
            labels, DAY_S if cap is not None else None
        )
        family("runbook_verify_nexus_forecast_ratio", "Forecast requests over the cap (1 = at the cap).").add(
            labels, forecast / cap if forecast is not None and cap else None
        )
        family("runbook_verify_nexus_requests_per_pull", "Nexus requests one mirror pull costs.").add(
            labels, _num(use.get("requests_per_pull"))
        )
        family("runbook_verify_nexus_components", "Components in the proxy repositories.").add(
            labels, _num(use.get("components"))
        )
        family("runbook_verify_nexus_components_limit", "Nexus Community Edition cap on components.").add(
            labels, _num(use.get("components_cap")) if caps_apply else None
        )
        days = _num(use.get("days_to_component_cap")) if caps_apply else None
        family(
            "runbook_verify_nexus_components_limit_eta_seconds",
            "Time until the component cap at the growth of the history (absent until a day of history).",
        ).add(labels, days * DAY_S if days is not None else None)
    return [f for f in out if f.samples]


# ----------------------------------------------------------------------------- the text format
def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def exposition(fams: Iterable[Family]) -> str:
    lines: list[str] = []
    for fam in fams:
        if not _NAME.match(fam.name):
            raise ValueError(f"not a metric name: {fam.name!r}")
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for labels, value in fam.samples:
            inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{inner}}} {_value(value)}" if inner else f"{fam.name} {_value(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def metrics_text(record: Mapping[str, Any]) -> str:
    """The run's metrics in the Prometheus text format (what the file holds and the push sends)."""
    return exposition(families(record))


# ----------------------------------------------------------------------------------- the outputs
def check_metrics_file(value: str) -> Path:
    """The ``--metrics-file`` path, checked before the run (``{target}`` in it is the run's target)."""
    option = "--metrics-file"
    if "://" in value:
        raise MetricsOptionError(option, "a local file path, not a URL")
    path = Path(value).expanduser()
    if not path.name.endswith(".prom"):
        raise MetricsOptionError(
            option, "the file name must end in .prom (the textfile collector reads *.prom)"
        )
    if path.is_dir():
        raise MetricsOptionError(option, f"{path} is a directory; name the file, e.g. {path}/runbook.prom")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MetricsOptionError(option, f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MetricsOptionError(option, f"the folder {folder} is not writable")
    return path.absolute()


def check_pushgateway(url: str) -> str:
    """The ``--pushgateway`` base URL, checked before the run: http(s), a host, no credentials."""
    option = "--pushgateway"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MetricsOptionError(
            option, "an http:// or https:// URL with a host, e.g. http://pushgateway:9091"
        )
    if parts.username is not None or parts.password is not None:
        raise MetricsOptionError(option, "credentials in the URL are not supported (they would be logged)")
    if parts.query or parts.fragment:
        raise MetricsOptionError(option, "no query or fragment: the base URL only (…/metrics/job/… is added)")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _segment(name: str, value: str) -> str:
    """One ``/<label>/<value>`` of the grouping key: plain when safe, else ``<label>@base64/<value>``
    (URL-safe alphabet; what the Pushgateway API asks for a ``/`` or an empty value)."""
    if _PLAIN_SEGMENT.match(value):
        return f"/{name}/{value}"
    encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
    return f"/{name}@base64/{encoded}"


def push_url(base_url: str, job: str, target: str, stages: str) -> str:
    if not job:
        raise MetricsOptionError("--pushgateway-job", "must not be empty")
    return (
        base_url.rstrip("/")
        + "/metrics"
        + _segment("job", job)
        + _segment("instance", target)
        + _segment("stages", stages)
    )


def push(
    base_url: str,
    job: str,
    record: Mapping[str, Any],
    text: str,
    timeout_s: float = PUSH_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """PUT the run's metrics to its group; returns the group's URL. Raises RuntimeError saying why not."""
    url = push_url(base_url, job, str(record["target"]), stage_selection(record))
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            response = client.put(url, content=text.encode(), headers={"Content-Type": CONTENT_TYPE})
    except httpx.HTTPError as err:
        raise RuntimeError(f"push to {url} failed: {type(err).__name__}: {err}") from None
    if response.status_code not in (200, 202):  # 202: a gateway with --push.disable-consistency-check
        why = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        raise RuntimeError(f"push to {url}: HTTP {response.status_code}" + (f": {why}" if why else ""))
    return url


def write_textfile(path: Path, text: str) -> None:
    """Write atomically: a temp file in the same folder (not matching *.prom), fsync, rename over."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; node-exporter often runs as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class MetricsOutput:
    """Where a run's metrics go; ``publish`` is called by the runner once the run record is final
    (failed runs included: that is when alerting needs them). What could not be delivered is in
    ``errors`` (the CLI exits 1 for it): the run record itself is never affected."""

    file: Path | None = None
    pushgateway: str | None = None
    job: str = DEFAULT_JOB
    timeout_s: float = PUSH_TIMEOUT_S
    transport: httpx.BaseTransport | None = None  # tests only
    errors: list[str] = field(default_factory=list)

    def target_file(self, target: str) -> Path | None:
        return Path(str(self.file).replace("{target}", target)) if self.file is not None else None

    def publish(self, record: Mapping[str, Any], log: Callable[[str], None]) -> None:
        try:
            text = metrics_text(record)
        except Exception as err:  # noqa: BLE001 - metrics must never cost the run its record
            self._fail(log, f"metrics: could not build them: {type(err).__name__}: {err}")
            return
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        path = self.target_file(str(record["target"]))
        if path is not None:
            try:
                write_textfile(path, text)
                log(f"metrics: wrote {path} ({series} series)")
            except OSError as err:
                self._fail(log, f"metrics: could not write {path}: {err.strerror or err}")
        if self.pushgateway:
            try:
                url = push(self.pushgateway, self.job, record, text, self.timeout_s, self.transport)
                log(f"metrics: pushed {series} series to {url}")
            except (RuntimeError, MetricsOptionError) as err:
                self._fail(log, f"metrics: {err}")

    def _fail(self, log: Callable[[str], None], message: str) -> None:
        self.errors.append(message)
        log(message)
