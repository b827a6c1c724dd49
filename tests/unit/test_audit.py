"""Audit pieces without a kernel: records, banner, HTML rendering, run index, destinations."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from runbook_lib.audit.banner import BANNER_TAG, add_banner, banner_markdown
from runbook_lib.audit.destinations import LocalFolder, OutputRegistry, join
from runbook_lib.audit.html import render_html
from runbook_lib.audit.record import RECORD_MIME, collect_records, jsonable, record_bundle
from runbook_lib.audit.report import index_html, load_runs, report
from runbook_lib.notebook import StageContext
from runbook_lib.params import parse
from runbook_lib.runner import ProgressEvent, format_progress

# ---------------------------------------------------------------------------------------- records


def record_output(key: str, value) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data=record_bundle(key, value))


def test_record_bundle_is_json_safe_and_invisible() -> None:
    bundle = record_bundle(
        "results", {"path": Path("/x"), "when": dt.date(2026, 1, 2), "set": {1}, "obj": object}
    )
    assert bundle["text/plain"] == ""
    value = bundle[RECORD_MIME]["value"]
    assert value["path"] == "/x" and value["when"] == "2026-01-02" and value["set"] == [1]
    assert value["obj"].startswith("<class")
    json.dumps(bundle)
    with pytest.raises(ValueError):
        record_bundle("", 1)
    with pytest.raises(ValueError):
        jsonable(float("nan"))


def test_collect_records_merges_by_key() -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        record_output("changes", [{"kind": "repo", "name": "a", "action": "create", "diff": {}}]),
        nbformat.v4.new_output("stream", name="stdout", text="hello"),
        record_output(
            "changes",
            [
                {"kind": "repo", "name": "b", "action": "update", "diff": {}},
                {"kind": "repo", "name": "c", "action": "unchanged", "diff": {}},
            ],
        ),
        record_output("results", {"a": 1}),
        record_output("results", {"b": 2, "a": 3}),
        record_output("flags", ["credential in userData"]),
        record_output("flags", ["credential in userData", "bypass"]),
        record_output("checks", [{"name": "n", "ok": False, "detail": "d"}]),
        record_output("failure", {"step": "s1", "applied": [], "not_applied": ["x"]}),
        record_output("failure", {"step": "s2", "applied": ["y"], "not_applied": []}),
        record_output("timings", {"cold_s": 1.5}),
    ]
    nb.cells.append(cell)
    rec = collect_records(nbformat.reads(nbformat.writes(nb), as_version=4))  # through JSON, as saved
    assert [c["name"] for c in rec.changes] == ["a", "b", "c"]
    assert rec.change_counts() == {"create": 1, "update": 1, "delete": 0, "unchanged": 1}
    assert rec.results == {"a": 3, "b": 2, "timings": {"cold_s": 1.5}}
    assert rec.flags == ["credential in userData", "bypass"]
    assert rec.checks == [{"name": "n", "ok": False, "detail": "d"}]
    assert rec.failure == {"step": "s2", "applied": ["y"], "not_applied": []}


def test_stage_context_record_outside_a_kernel(tmp_path: Path) -> None:
    params = parse(
        {
            "target": "t",
            "nexus": {"url": "http://127.0.0.1:9", "admin_password": "env:X"},
            "upstreams": [
                {"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:9"}
            ],
        },
        base_dir=tmp_path,
    )
    ctx = StageContext("preflight", tmp_path / "p.yaml", params, False, tmp_path)
    ctx.record("changes", [{"kind": "k", "name": "n", "action": "delete", "diff": {}}])
    assert ctx.records.change_counts()["delete"] == 1
    assert ctx.mode == "plan"


def test_format_progress() -> None:
    end = ProgressEvent(2, 6, "nexus-repos", "end", "ok", 3.24, {"create": 2, "update": 0, "unchanged": 5})
    assert format_progress(end) == "[2/6] nexus-repos ... ok (3.2 s, 2 create, 0 update, 5 unchanged)"
    assert format_progress(ProgressEvent(3, 6, "helm", "start")) == "[3/6] helm ..."
    failed = ProgressEvent(3, 6, "helm", "end", "failed", 1.0, {"delete": 1}, reason="boom")
    assert (
        format_progress(failed)
        == "[3/6] helm ... failed (1.0 s, 0 create, 0 update, 0 unchanged, 1 delete): boom"
    )
    assert (failed.phase, failed.stage, failed.reason) == ("end", "helm", "boom")
    assert not hasattr(failed, "__getitem__")  # a typed event, not a mapping
    assert ProgressEvent(1, 1, "helm", "start").duration_s is None


# ----------------------------------------------------------------------------------------- banner

RUN = {
    "run_id": "20260102T030405Z-lab",
    "target": "lab",
    "mode": "apply",
    "user": "ops",
    "host": "h1",
    "started": "2026-01-02T03:04:05Z",
    "params_file": "/p/lab.yaml",
    "params_sha256": "ab" * 32,
    "runbook_commit": "c0ffee",
    "note": "ticket | <b>42</b>",
}


def test_banner_failure_section_and_escaping() -> None:
    stage = {
        "name": "helm",
        "status": "failed",
        "started": "s",
        "ended": "e",
        "duration_s": 2.0,
        "changes": {"create": 1, "update": 0, "delete": 0, "unchanged": 0},
        "failure": {
            "step": "apply Service",
            "reason": "403 <forbidden>",
            "applied": ["Deployment nxrm"],
            "not_applied": ["Service nxrm", "Ingress nxrm"],
        },
    }
    text = banner_markdown(RUN, stage)
    assert "Stage helm: FAILED" in text
    assert "ticket &#124; &lt;b&gt;42&lt;/b&gt;" in text  # a note cannot break the table or inject markup
    assert "<code>apply Service</code>" in text and "403 &lt;forbidden&gt;" in text
    assert "• Deployment nxrm" in text and "• Ingress nxrm" in text
    assert "1 create, 0 update, 0 delete, 0 unchanged" in text
    assert "ab" * 32 in text and "c0ffee" in text and "ops on h1" in text
    ok = banner_markdown({**RUN, "mode": "plan", "note": None}, {**stage, "status": "ok", "failure": None})
    assert "Failed step" not in ok and "Note" not in ok and "plan (read only" in ok


def test_add_banner_replaces_an_earlier_one() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Stage")]
    once = add_banner(nb, "first")
    twice = add_banner(once, "second")
    assert [c.source for c in twice.cells] == ["second", "# Stage"]
    assert BANNER_TAG in twice.cells[0].metadata.tags
    assert len(nb.cells) == 1  # the input is not modified
    nbformat.validate(twice)


# ------------------------------------------------------------------------------------------- HTML


def test_render_html_hides_code_parameters_records_and_widget_state() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {"m": {"state": {"value": "WIDGET-VALUE-X"}}}}
    }
    params = nbformat.v4.new_code_cell('params_file = "DEFAULT-PARAM-X"', metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell(
        'params_file = "INJECTED-PARAM-X"', metadata={"tags": ["injected-parameters"]}
    )
    injected.outputs = [nbformat.v4.new_output("stream", name="stdout", text="INJECTED-OUTPUT-X")]
    silent = nbformat.v4.new_code_cell("SILENT_CODE_X = 1")
    shown = nbformat.v4.new_code_cell("print('VISIBLE' + '-OUTPUT')")
    shown.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="VISIBLE-OUTPUT\n"),
        nbformat.v4.new_output("display_data", data=record_bundle("results", {"r": "RECORD-VALUE-X"})),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title-X"), params, injected, silent, shown]
    html = render_html(nb, title="run stage")
    body = html.split("</style>")[-1]
    assert "Title-X" in body and "VISIBLE-OUTPUT" in body
    for absent in (
        "WIDGET-VALUE-X",
        "widget-state+json",
        "INJECTED-",
        "DEFAULT-PARAM-X",
        "SILENT_CODE_X",
        "'-OUTPUT'",
        "RECORD-VALUE-X",
        "jp-InputPrompt",
        "jp-OutputPrompt",
    ):
        assert absent not in body, absent
    assert body.count("jp-CodeCell") == 1  # only the cell with visible output remains
    assert "<title>run stage</title>" in html
    assert "WIDGET-VALUE-X" in json.dumps(nb.metadata)  # rendering did not modify the input


# ------------------------------------------------------------------------------------ run index


def write_run(folder: Path, started: str, status: str, **extra) -> None:
    folder.mkdir(parents=True)
    stages = [
        {
            "name": "preflight",
            "status": "ok",
            "changes": {"create": 0, "update": 0, "delete": 0, "unchanged": 3},
            "html": "00_preflight.html",
            "notebook": "00_preflight.ipynb",
        },
        {
            "name": "nexus-repos",
            "status": status,
            "changes": {"create": 2},
            "html": "01_nexus-repos.html",
            "notebook": "01_nexus-repos.ipynb",
            "failure": {"step": "create <x>", "reason": "503"} if status == "failed" else None,
        },
        {"name": "helm", "status": "skipped" if status == "failed" else "ok", "html": None, "notebook": None},
    ]
    record = {
        "run_id": folder.name,
        "target": "lab",
        "mode": "apply",
        "status": status,
        "started": started,
        "user": "ops",
        "host": "h",
        "runbook_commit": "abc",
        "stages": stages,
        **extra,
    }
    (folder / "run.json").write_text(json.dumps(record))


def test_report_lists_runs_newest_first(tmp_path: Path) -> None:
    write_run(tmp_path / "20260101T000000Z-lab", "2026-01-01T00:00:00Z", "ok", note="first <run>")
    write_run(tmp_path / "20260301T000000Z-lab", "2026-03-01T00:00:00Z", "failed")
    write_run(tmp_path / "20260201T000000Z-lab", "2026-02-01T00:00:00Z", "ok")
    (tmp_path / "20260401T000000Z-broken").mkdir()
    (tmp_path / "20260401T000000Z-broken" / "run.json").write_text("{not json")
    (tmp_path / "stray-file.txt").write_text("x")
    runs = load_runs(tmp_path)
    assert [r["_folder"] for r in runs] == [
        "20260301T000000Z-lab",
        "20260201T000000Z-lab",
        "20260101T000000Z-lab",
    ]
    path = report(tmp_path)
    assert path == tmp_path / "index.html"
    html = path.read_text()
    assert (
        html.index("20260301T000000Z-lab")
        < html.index("20260201T000000Z-lab")
        < html.index("20260101T000000Z-lab")
    )
    assert 'href="20260301T000000Z-lab/01_nexus-repos.html"' in html
    assert 'href="20260301T000000Z-lab/run.json"' in html
    assert "failed at create &lt;x&gt;: 503" in html and "first &lt;run&gt;" in html
    assert '<span class="skipped">skipped</span>' in html
    assert "<script" not in html


def test_report_on_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert load_runs(tmp_path / "missing") == []
    assert "No runs yet" in index_html([])
    assert "No runs yet" in report(tmp_path / "new").read_text()


# ---------------------------------------------------------------------------------- destinations


class MemoryStore:
    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def write_text(self, location: str, text: str) -> None:
        self.files[location] = text

    def read_text(self, location: str) -> str:
        return self.files[location]

    def exists(self, location: str) -> bool:
        return location in self.files

    def listdir(self, location: str) -> list[str]:
        return []

    def makedirs(self, location: str) -> None:
        pass


def test_registry_dispatches_by_scheme(tmp_path: Path) -> None:
    registry = OutputRegistry()
    memory = MemoryStore()
    registry.register("mem://", memory)
    assert registry.handler_for("mem://bucket/run/run.json") is memory
    assert isinstance(registry.handler_for(tmp_path), LocalFolder)
    assert isinstance(registry.handler_for("file:///tmp/x"), LocalFolder)
    with pytest.raises(ValueError, match="s3://"):
        registry.handler_for("s3://bucket/runs")
    assert join("s3://b/runs", "r1", "run.json") == "s3://b/runs/r1/run.json"
    assert join("/", "x") == "/x" and join("/a/", "b") == "/a/b"


def test_local_folder_writes_whole_files(tmp_path: Path) -> None:
    local = LocalFolder()
    target = str(tmp_path / "a.txt")
    local.write_text(target, "one")
    local.write_text(target, "two")
    assert local.read_text(target) == "two" and local.exists(target)
    assert local.listdir(str(tmp_path)) == ["a.txt"]
    with pytest.raises(FileNotFoundError):
        local.write_text(str(tmp_path / "missing" / "b.txt"), "x")
    local.makedirs(str(tmp_path / "x" / "y"))
    assert (tmp_path / "x" / "y").is_dir()
    assert local.read_text("file://" + target) == "two"


def test_index_shortens_a_long_failure_reason(tmp_path: Path) -> None:
    run = tmp_path / "20261128T000000Z-lab"
    run.mkdir()
    reason = "verification failed: " + "node pull bypassed the mirror; " * 40
    (run / "run.json").write_text(
        json.dumps(
            {
                "run_id": run.name,
                "target": "lab",
                "mode": "plan",
                "status": "failed",
                "started": "2026-11-28T00:00:00Z",
                "stages": [
                    {
                        "name": "verify",
                        "status": "failed",
                        "changes": {},
                        "html": "05_verify.html",
                        "failure": {"step": "verification checks", "reason": reason},
                    }
                ],
            }
        )
    )
    page = report(tmp_path).read_text()
    assert "verification failed: node pull bypassed" in page and "see the report" in page
    assert reason not in page


# ------------------------------------------------------------------------------------ S3 destination


def test_s3_locations_go_to_the_s3_handler() -> None:
    from runbook_lib.audit.destinations import DESTINATIONS, S3, is_remote, parse_s3_url

    assert DESTINATIONS.handler_for("s3://audit-bucket/eks") is S3
    assert isinstance(DESTINATIONS.handler_for("/tmp/x"), LocalFolder)
    assert is_remote("s3://b/x") and not is_remote("file:///tmp/x") and not is_remote("outputs")
    loc = parse_s3_url("s3://audit.example-1/eks/prod/")
    assert (loc.bucket, loc.key, loc.url, loc.folder_prefix) == (
        "audit.example-1",
        "eks/prod",
        "s3://audit.example-1/eks/prod",
        "eks/prod/",
    )
    assert parse_s3_url("s3://audit-bucket").folder_prefix == ""


def test_report_index_from_s3_objects() -> None:
    """An index built from run.json objects in a bucket (in-process moto), written beside them."""
    import boto3
    from moto import mock_aws

    from runbook_lib.audit.destinations import S3

    older = {"run_id": "r1", "started": "2026-01-01T00:00:00Z", "target": "a", "status": "ok", "stages": []}
    newer = {**older, "run_id": "r2", "started": "2026-01-02T00:00:00Z", "status": "failed"}
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        S3.reset()
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="audit-bucket")
        for run in (older, newer):
            client.put_object(Bucket="audit-bucket", Key=f"p/{run['run_id']}/run.json", Body=json.dumps(run))
        client.put_object(Bucket="audit-bucket", Key="p/broken/run.json", Body=b"{not json")
        client.put_object(Bucket="audit-bucket", Key="p/history.sqlite", Body=b"SQLite format 3\x00")
        assert [r["_folder"] for r in load_runs("s3://audit-bucket/p")] == ["r2", "r1"]
        assert report("s3://audit-bucket/p/") == "s3://audit-bucket/p/index.html"
        page = client.get_object(Bucket="audit-bucket", Key="p/index.html")["Body"].read().decode()
        assert page.index("r2") < page.index("r1") and 'href="r1/run.json"' in page
        assert "No runs yet" in (report("s3://audit-bucket/empty") and _s3_text(client, "empty/index.html"))
    S3.reset()


def _s3_text(client, key: str) -> str:
    return client.get_object(Bucket="audit-bucket", Key=key)["Body"].read().decode()


# In a fresh interpreter: which modules the warm-up thread imports itself.
WARM_UP_IMPORTS = """
import importlib.abc, sys, threading
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        seen.append((threading.current_thread().name, name))
from runbook_lib.audit import html
sys.meta_path.insert(0, Watch())
html.warm_up().join(timeout=60)
print(" ".join(sorted({n for t, n in seen if t == "html-warm-up"})))
"""
# the packages of the import cycle the runner's thread also imports (papermill -> nbclient -> jupyter_client)
SHARED_IMPORTS = {"nbconvert", "nbformat", "nbclient", "jupyter_client", "jupyter_core", "papermill", "zmq"}


def test_html_warm_up_thread_imports_nothing_the_runner_thread_imports() -> None:
    """Two threads importing one import cycle at once can get a half-initialised module (an ImportError
    seen in CI: python/cpython#83065): nbconvert is imported before the warm-up thread starts."""
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP_IMPORTS], capture_output=True, text=True, timeout=120, check=True
    )
    in_thread = out.stdout.split()
    assert in_thread, "the warm-up thread imported nothing: the watch did not see it"  # it renders lazily
    assert not [m for m in in_thread if m.split(".")[0] in SHARED_IMPORTS], in_thread


def test_html_warm_up_builds_the_one_exporter_used_by_later_renders() -> None:
    """The runner warms the HTML exporter in a thread while the first kernel starts; a render afterwards
    uses that same exporter (built once) and still drops the parameters cell from the report."""
    import nbformat

    from runbook_lib.audit import html

    html._exporter.cache_clear()
    html.warm_up().join(timeout=60)
    assert html._exporter.cache_info().currsize == 1  # built by the warm-up thread, not by this test
    warmed = html._exporter()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("params_file = 'x'", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_markdown_cell("# Stage report"),
        ]
    )
    body = html.render_html(nb, title="t")
    assert html._exporter() is warmed and html._exporter.cache_info().misses == 1
    assert "Stage report" in body and "params_file" not in body
