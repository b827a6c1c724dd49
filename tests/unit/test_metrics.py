"""Metrics for alerting (issue #14 part 4): the text is read back with prometheus_client's own parser.

The Pushgateway stand-in is a loopback HTTP server held to the documented API (prometheus/pushgateway
README "API"): ``/metrics/job/<JOB>{/<LABEL>/<VALUE>}``, ``@base64`` label values (URL-safe alphabet,
padding optional, ``=`` for empty), PUT/POST answer 200, pushed timestamps or unparsable bodies 400.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runbook_lib import cli
from runbook_lib.audit import metrics
from runbook_lib.audit.metrics import Family, MetricsOptionError, MetricsOutput
from runbook_lib.verify import report
from runbook_lib.verify.ratelimit import Headroom

SECRET = "s3cr3t-Pa55word"


# -------------------------------------------------------------------------------- the stand-in
@dataclass
class Push:
    method: str
    grouping: dict[str, str]
    content_type: str
    body: str


def decode_grouping(path: str) -> dict[str, str]:
    """The grouping key of a push path, as the Pushgateway reads it; ValueError if it is not one."""
    parts = path.split("/")
    if len(parts) < 4 or parts[:2] != ["", "metrics"] or len(parts[2:]) % 2:
        raise ValueError(f"not /metrics/job/<JOB>{{/<LABEL>/<VALUE>}}: {path}")
    grouping: dict[str, str] = {}
    for name, value in zip(parts[2::2], parts[3::2], strict=True):
        if name.endswith("@base64"):
            name = name.removesuffix("@base64")
            value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        else:
            value = unquote(value)
        grouping[name] = value
    if next(iter(grouping)) != "job" or not grouping["job"]:
        raise ValueError("the first label must be a non-empty job")
    return grouping


@dataclass
class Pushgateway:
    url: str
    pushes: list[Push] = field(default_factory=list)
    answer: int | None = None  # force a status (e.g. 500) instead of the API's answer


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    yield from serve_pushgateway()


def serve_pushgateway() -> Iterator[Pushgateway]:
    state = Pushgateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, code: int, text: str = "") -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _push(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            try:
                grouping = decode_grouping(self.path)
                families = list(text_string_to_metric_families(body))
            except ValueError as err:
                return self._reply(400, f"{err}\n")
            if any(s.timestamp is not None for f in families for s in f.samples):
                return self._reply(400, "pushed metrics must not have timestamps\n")
            content_type = self.headers.get("Content-Type", "")
            state.pushes.append(Push(self.command, grouping, content_type, body))
            self._reply(state.answer or 200)

        do_PUT = do_POST = _push

        def do_GET(self) -> None:
            self._reply(405)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------ records
def verify_results(*, unlimited: bool = False, expected_pulls: int | None = 2000) -> dict[str, Any]:
    """A verify stage's run.json results, built by the product's own report code."""
    headers = {} if unlimited else {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "37;w=21600"}
    headroom = Headroom.from_headers("anonymous", "runbook host", 200, headers)
    headroom.source = "203.0.113.7"
    fig = report.Figures.from_record(
        {
            "host": {
                "medians_s": {"docker.io/library/demo:1": {"direct": 2.0, "mirror-warm": 0.5}},
                "speedup": {"docker.io/library/demo:1": 4.0},
                "set_speedup": 4.0,
                "failed": 1,
                "samples": 12,
                "notes": [],
            },
            "node": {
                "measured": True,
                "pools": {"default": ["node-a"]},
                "medians_s": {},
                "speedup": {"docker.io/library/demo:1": 3.25},
                "speedup_by_pool": {},
                "set_speedup": 3.25,
                "failed": 0,
                "samples": 9,
                "notes": [],
            },
            "bypassed": 2,
            "bypassed_pulls": [
                {"pool": "default", "node": "node-a", "image": "docker.io/library/demo:1", "served_by": "x"}
            ]
            * 2,
            "ratelimit": {
                "checks": [headroom.record()],
                "anonymous_remaining": None if unlimited else headroom.remaining,
                "anonymous_limit": headroom.limit,
                "window_s": headroom.window_s,
                "source": headroom.source,
                "unlimited": headroom.unlimited,
            },
            "proof": None,
        }
    )
    per_pull = 5.5
    use = report.Usage(
        requests_cap=100_000,
        components_cap=40_000,
        counters="lab counters",
        requests_counted=177,
        requests_moved=99,
        mirror_pulls=18,
        requests_per_pull=per_pull,
        expected_pulls_per_day=expected_pulls,
        forecast_requests_per_day=per_pull * expected_pulls if expected_pulls else None,
        components=4,
        components_complete=True,
        components_per_day=2.0,
        days_to_component_cap=19_998.0,
    )
    return report.results(fig, use)


def stage(name: str, status: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "status": status,
        "duration_s": 0.0 if status == "skipped" else 2.5,
        "changes": {"create": 0, "update": 0, "delete": 0, "unchanged": 0},
        "results": {},
        "checks": [],
        "flags": [],
        "failure": None,
    }
    return {**base, **extra}


def run_record(stages: list[dict[str, Any]], status: str = "ok", mode: str = "plan") -> dict[str, Any]:
    return {
        "run_id": "20261203T120000Z-prod-eu1",
        "target": "prod-eu1",
        "started": "2026-12-03T12:00:00Z",
        "ended": "2026-12-03T12:01:30Z",
        "mode": mode,
        "status": status,
        "note": f"ticket with {SECRET}",
        "params_file": f"/srv/{SECRET}/params.yaml",
        "stages": stages,
    }


def parse(text: str) -> dict[str, Any]:
    """name -> family, from prometheus_client's parser."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def one(families: dict[str, Any], name: str, **labels: str) -> float:
    matches = [
        s.value for s in families[name].samples if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


# ----------------------------------------------------------------------------------- the text
def test_verify_run_metrics_parse_with_their_figures() -> None:
    record = run_record(
        [
            stage(
                "preflight",
                "ok",
                checks=[{"name": "a", "ok": True}, {"name": "b", "ok": False}],
            ),
            stage("verify", "ok", duration_s=24.93, results=verify_results()),
        ]
    )
    fams = parse(metrics.metrics_text(record))
    assert all(f.type == "gauge" for f in fams.values())
    assert all(f.name.startswith("runbook_") for f in fams.values())
    base = {"target": "prod-eu1", "stages": "preflight,verify"}
    assert values(fams["runbook_run_success"]) == {tuple(sorted(base.items())): 1.0}
    assert one(fams, "runbook_run_apply") == 0
    assert one(fams, "runbook_run_start_timestamp_seconds") == 1796299200.0  # 2026-12-03T12:00:00Z
    assert one(fams, "runbook_run_duration_seconds") == 90
    assert one(fams, "runbook_stage_success", stage="verify") == 1
    assert one(fams, "runbook_stage_duration_seconds", stage="verify") == 24.93
    assert one(fams, "runbook_stage_failed_checks", stage="preflight") == 1
    assert one(fams, "runbook_verify_warm_speedup_ratio") == 3.25  # the node path: it was measured
    assert one(fams, "runbook_verify_path_warm_speedup_ratio", path="host") == 4.0
    assert one(fams, "runbook_verify_failed_pulls", path="host") == 1
    assert one(fams, "runbook_verify_pulls", path="node") == 9
    assert one(fams, "runbook_verify_node_path_measured") == 1
    assert one(fams, "runbook_verify_bypassed_pulls") == 2
    assert one(fams, "runbook_verify_dockerhub_pulls_remaining") == 37
    assert one(fams, "runbook_verify_dockerhub_pulls_limit") == 100
    assert one(fams, "runbook_verify_dockerhub_window_seconds") == 21600
    assert one(fams, "runbook_verify_dockerhub_unlimited") == 0
    assert one(fams, "runbook_verify_nexus_forecast_requests") == 11_000  # 5.5 requests x 2000 pulls
    assert one(fams, "runbook_verify_nexus_requests_limit") == 100_000
    assert one(fams, "runbook_verify_nexus_requests_window_seconds") == 86400
    assert one(fams, "runbook_verify_nexus_forecast_ratio") == pytest.approx(0.11)
    assert one(fams, "runbook_verify_nexus_components") == 4
    assert one(fams, "runbook_verify_nexus_components_limit_eta_seconds") == 19_998 * 86400
    # every series carries the target and the run's stage selection
    for fam in fams.values():
        for sample in fam.samples:
            assert {k: sample.labels[k] for k in base} == base, (fam.name, sample.labels)


def test_failed_run_metrics_name_the_failed_and_the_skipped_stage() -> None:
    record = run_record(
        [
            stage("preflight", "ok"),
            stage(
                "nexus-repos",
                "failed",
                changes={"create": 1, "update": 1, "delete": 0, "unchanged": 3},
                failure={"step": "create gcr-io", "reason": f"503 with {SECRET}"},
            ),
            stage("verify", "skipped"),
        ],
        status="failed",
        mode="apply",
    )
    text = metrics.metrics_text(record)
    fams = parse(text)
    assert one(fams, "runbook_run_success") == 0
    assert one(fams, "runbook_run_apply") == 1
    assert one(fams, "runbook_stage_success", stage="nexus-repos") == 0
    assert one(fams, "runbook_stage_success", stage="preflight") == 1
    assert not [s for s in fams["runbook_stage_success"].samples if s.labels["stage"] == "verify"]
    assert one(fams, "runbook_stage_skipped", stage="verify") == 1
    assert one(fams, "runbook_stage_skipped", stage="nexus-repos") == 0
    assert one(fams, "runbook_stage_changes", stage="nexus-repos", action="create") == 1
    assert one(fams, "runbook_stage_changes", stage="nexus-repos", action="unchanged") == 3
    assert not any(name.startswith("runbook_verify_") for name in fams)
    # the note, the parameters path and the failure reason held a secret: none of it is a metric
    assert SECRET not in text


def test_unmeasured_figures_are_left_out_not_zero() -> None:
    results = verify_results(unlimited=True, expected_pulls=None)
    fams = parse(metrics.metrics_text(run_record([stage("verify", "ok", results=results)])))
    assert "runbook_verify_dockerhub_pulls_remaining" not in fams  # unlimited: no budget to count down
    assert one(fams, "runbook_verify_dockerhub_unlimited") == 1
    assert "runbook_verify_nexus_forecast_requests" not in fams  # no expected_pulls_per_day
    assert "runbook_verify_nexus_forecast_ratio" not in fams
    assert one(fams, "runbook_verify_nexus_requests_limit") == 100_000


def test_no_cap_metrics_for_an_edition_without_caps() -> None:
    results = verify_results()
    results["usage"]["edition"] = "PRO"  # nexus.expect_edition: Pro has no Community Edition caps
    fams = parse(metrics.metrics_text(run_record([stage("verify", "ok", results=results)])))
    assert one(fams, "runbook_verify_nexus_forecast_requests") == 11_000
    for name in ("requests_limit", "forecast_ratio", "components_limit", "components_limit_eta_seconds"):
        assert f"runbook_verify_nexus_{name}" not in fams


def test_verify_that_failed_before_its_figures_gives_only_stage_metrics() -> None:
    record = run_record([stage("verify", "failed", results={"host": {"set_speedup": 2.0}})], status="failed")
    fams = parse(metrics.metrics_text(record))
    assert one(fams, "runbook_stage_success", stage="verify") == 0
    assert not any(name.startswith("runbook_verify_") for name in fams)


def test_label_values_and_help_are_escaped() -> None:
    odd = 'a "quoted" back\\slash\nnewline'
    fam = Family("runbook_test_value", "help with \\ and\nnewline")
    fam.add({"stage": odd}, 1.5)
    fam.add({"stage": "plain"}, None)  # None: left out
    text = metrics.exposition([fam])
    assert text.count("\n") == 3  # HELP, TYPE, one sample: the newlines inside are escaped
    parsed = parse(text)["runbook_test_value"]
    assert parsed.documentation == "help with \\ and\nnewline"
    assert [(s.labels, s.value) for s in parsed.samples] == [({"stage": odd}, 1.5)]


def test_metric_names_are_checked() -> None:
    with pytest.raises(ValueError, match="not a metric name"):
        metrics.exposition([Family("runbook-bad", "x", [({}, 1.0)])])


# ------------------------------------------------------------------------------------ the file
def test_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "runbook.prom"
    metrics.write_textfile(target, "runbook_run_success 1\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # node-exporter may run as another user
    metrics.write_textfile(target, "runbook_run_success 0\n")
    assert target.read_text() == "runbook_run_success 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runbook.prom"]


def test_textfile_write_that_fails_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runbook.prom"
    target.write_text("old 1\n")
    seen: list[str] = []

    def failing_replace(src: str, dst: Path) -> None:
        seen.append(Path(src).name)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        metrics.write_textfile(target, "new 1\n")
    assert target.read_text() == "old 1\n"
    # the temp file was in the same folder (a rename, not a copy) and is not read by the collector
    assert len(seen) == 1 and not seen[0].endswith(".prom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runbook.prom"]


def test_metrics_output_writes_the_file_per_target(tmp_path: Path) -> None:
    lines: list[str] = []
    out = MetricsOutput(file=tmp_path / "runbook-{target}.prom")
    out.publish(run_record([stage("preflight", "ok")]), lines.append)
    written = tmp_path / "runbook-prod-eu1.prom"
    assert one(parse(written.read_text()), "runbook_stage_success", stage="preflight") == 1
    series = sum(1 for line in written.read_text().splitlines() if not line.startswith("#"))
    assert series == 13  # 5 of the run, 8 of the stage (success, skipped, duration, 4 actions, checks)
    assert out.errors == [] and lines == [f"metrics: wrote {written} ({series} series)"]


def test_metrics_output_reports_a_file_it_could_not_write(tmp_path: Path) -> None:
    lines: list[str] = []
    out = MetricsOutput(file=tmp_path / "gone" / "runbook.prom")
    out.publish(run_record([stage("preflight", "ok")]), lines.append)
    assert len(out.errors) == 1 and "could not write" in out.errors[0] and lines == out.errors


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("metrics.txt", "must end in .prom"),
        ("s3://bucket/runbook.prom", "not a URL"),
        ("/nonexistent-folder/runbook.prom", "does not exist"),
    ],
)
def test_bad_metrics_file_is_refused(value: str, message: str) -> None:
    with pytest.raises(MetricsOptionError, match=message) as err:
        metrics.check_metrics_file(value)
    assert err.value.option == "--metrics-file"


def test_metrics_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "collector.prom"
    folder.mkdir()
    with pytest.raises(MetricsOptionError, match="is a directory"):
        metrics.check_metrics_file(str(folder))


# ------------------------------------------------------------------------------------ the push
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("pushgateway:9091", "http:// or https://"),
        ("ftp://pushgateway:9091", "http:// or https://"),
        ("http://user:pw@pushgateway:9091", "credentials"),
        ("http://pushgateway:9091/?x=1", "no query"),
    ],
)
def test_bad_pushgateway_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(MetricsOptionError, match=message) as err:
        metrics.check_pushgateway(url)
    assert err.value.option == "--pushgateway"
    assert "pw" not in str(err.value)


def test_push_url_grouping_key_round_trips() -> None:
    base = metrics.check_pushgateway("https://gw.example:9091/prefix/")
    url = metrics.push_url(base, "runbook", "prod-eu1", "preflight,verify")
    assert url.startswith(
        "https://gw.example:9091/prefix/metrics/job/runbook/instance/prod-eu1/stages@base64/"
    )
    path = url.removeprefix("https://gw.example:9091/prefix")
    assert decode_grouping(path) == {"job": "runbook", "instance": "prod-eu1", "stages": "preflight,verify"}
    odd = metrics.push_url(base, "team/runbook", "lab", "")
    assert decode_grouping(odd.removeprefix("https://gw.example:9091/prefix")) == {
        "job": "team/runbook",
        "instance": "lab",
        "stages": "",
    }


def test_push_puts_the_same_text_to_the_run_group(pushgateway: Pushgateway, tmp_path: Path) -> None:
    record = run_record([stage("preflight", "ok"), stage("verify", "ok", results=verify_results())])
    lines: list[str] = []
    out = MetricsOutput(file=tmp_path / "runbook.prom", pushgateway=pushgateway.url, job="runbook-verify")
    out.publish(record, lines.append)
    assert out.errors == []
    [push] = pushgateway.pushes
    assert push.method == "PUT"  # replaces the whole group: a figure gone from this run is gone there
    assert push.grouping == {"job": "runbook-verify", "instance": "prod-eu1", "stages": "preflight,verify"}
    assert push.content_type.startswith("text/plain; version=0.0.4")
    assert push.body == (tmp_path / "runbook.prom").read_text()
    assert one(parse(push.body), "runbook_verify_warm_speedup_ratio") == 3.25
    series = sum(1 for line in push.body.splitlines() if not line.startswith("#"))
    group = metrics.push_url(pushgateway.url, "runbook-verify", "prod-eu1", "preflight,verify")
    assert lines[-1] == f"metrics: pushed {series} series to {group}"


def test_push_failures_are_errors_not_exceptions(pushgateway: Pushgateway) -> None:
    pushgateway.answer = 400
    out = MetricsOutput(pushgateway=pushgateway.url)
    out.publish(run_record([stage("preflight", "ok")]), lambda line: None)
    assert len(out.errors) == 1 and "HTTP 400" in out.errors[0]

    closed = MetricsOutput(pushgateway="http://127.0.0.1:9", timeout_s=5)  # discard port: nothing listens
    closed.publish(run_record([stage("preflight", "ok")]), lambda line: None)
    assert len(closed.errors) == 1 and "ConnectError" in closed.errors[0]


# ------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--metrics-file", "runbook.txt"], "--metrics-file"),
        (["--pushgateway", "gw:9091"], "--pushgateway"),
        (["--pushgateway", "http://gw:9091", "--pushgateway-job", ""], "--pushgateway-job"),
    ],
)
def test_cli_refuses_bad_metrics_options_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"target": "x"}))  # never read: the option is refused first
    code = cli.main(
        ["run", "preflight", "--params", str(params), "--output-dir", str(tmp_path / "runs"), *argv]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"{option}: ") and "nothing was executed" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
