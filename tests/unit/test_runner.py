"""The runner end to end with tiny fixture notebooks (real papermill, real kernels).

Two runs share one output folder (module fixture, to keep kernel start-ups few):
1. plan mode, stage preflight = ok_records.ipynb;
2. apply mode, preflight = ok_records.ipynb, nexus-repos = fail_step.ipynb, nexus-security = ok_records
   (never executed: skipped after the failure).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from runbook_lib import runner
from runbook_lib.audit.banner import BANNER_TAG
from runbook_lib.params import STAGES, ParamsError
from runbook_lib.runner import (
    STAGE_NOTEBOOKS,
    ProgressEvent,
    execute_stage,
    format_progress,
    read_stage,
    run,
    stage_parameters,
)
from tests.support.offline_params import offline_params_yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"

PARAMS_YAML = offline_params_yaml("fixture", "RUNBOOK_TEST_UNSET_PASSWORD")


def stage_folder(tmp: Path, mapping: dict[str, str]) -> Path:
    """A notebooks folder where each stage id gets the given fixture under its real file name."""
    folder = tmp / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    for stage, fixture in mapping.items():
        shutil.copy(FIXTURES / fixture, folder / STAGE_NOTEBOOKS[stage])
    return folder


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("runner")
    params_file = tmp / "params.yaml"
    params_file.write_text(PARAMS_YAML)
    notebooks = stage_folder(
        tmp,
        {
            "preflight": "ok_records.ipynb",
            "nexus-repos": "fail_step.ipynb",
            "nexus-security": "ok_records.ipynb",
        },
    )
    first = run(params_file, ["preflight"], False, None, None, notebooks_dir=notebooks)
    events: list[ProgressEvent] = []
    second = run(
        params_file,
        ["nexus-security", "preflight", "nexus-repos"],
        True,
        None,
        "change <ticket> #42",
        notebooks_dir=notebooks,
        progress=events.append,
    )
    return {"tmp": tmp, "params_file": params_file, "first": first, "second": second, "events": events}


def test_ok_run_exit_code_and_folder(two_runs: dict) -> None:
    first = two_runs["first"]
    assert first.exit_code == 0
    assert first.record["status"] == "ok"
    assert first.record["mode"] == "plan"
    # default output folder: outputs.dir resolved against the parameters file
    assert first.run_dir.parent == two_runs["tmp"] / "runs"
    assert re.fullmatch(r"\d{8}T\d{6}Z-fixture(-\d+)?", first.run_dir.name)
    assert sorted(p.name for p in first.run_dir.iterdir()) == [
        "00_preflight.html",
        "00_preflight.ipynb",
        "run.json",
        "run.log",
    ]


def test_records_are_collected_into_run_json(two_runs: dict) -> None:
    record = json.loads((two_runs["first"].run_dir / "run.json").read_text())
    assert record == two_runs["first"].record
    stage = record["stages"][0]
    assert stage["name"] == "preflight" and stage["status"] == "ok"
    assert stage["changes"] == {"create": 2, "update": 0, "delete": 0, "unchanged": 1}
    # two `results` records merged; apply flag and the run folder came from the parameters
    assert stage["results"] == {
        "answer": 42,
        "apply": False,
        "run_dir": str(two_runs["first"].run_dir),
        "second": "merged",
    }
    assert stage["checks"] == [{"name": "nexus reachable", "ok": True, "detail": "200"}]
    assert stage["flags"] == ["credential in userData"]
    assert stage["failure"] is None
    assert stage["duration_s"] > 0
    params_file = two_runs["params_file"]
    assert record["params_file"] == str(params_file)
    assert record["params_sha256"] == hashlib.sha256(params_file.read_bytes()).hexdigest()
    assert record["target"] == "fixture"
    assert record["user"] and record["host"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", record["runbook_commit"])


def test_failed_stage_stops_the_run(two_runs: dict) -> None:
    second = two_runs["second"]
    assert second.exit_code == 1
    record = second.record
    assert (
        record["status"] == "failed" and record["mode"] == "apply" and record["note"] == "change <ticket> #42"
    )
    # stages run in pipeline order whatever order they were asked in
    assert [(s["name"], s["status"]) for s in record["stages"]] == [
        ("preflight", "ok"),
        ("nexus-repos", "failed"),
        ("nexus-security", "skipped"),
    ]
    failed = record["stages"][1]
    assert failed["failure"]["step"] == "create repository gcr-io"
    assert failed["failure"]["applied"] == ["repository docker-hub"]
    assert failed["failure"]["not_applied"] == ["repository gcr-io", "group docker"]
    assert failed["failure"]["reason"] == "ConnectionError: Nexus answered 503 while creating gcr-io"
    assert failed["changes"] == {"create": 1, "update": 1, "delete": 0, "unchanged": 0}
    skipped = record["stages"][2]
    assert skipped["notebook"] is None and skipped["html"] is None
    assert not (second.run_dir / "02_nexus-security.ipynb").exists()
    # the notebook stopped at the failing cell
    nb = nbformat.read(second.run_dir / failed["notebook"], as_version=4)
    assert "never printed" not in json.dumps([c.get("outputs") for c in nb.cells if c.cell_type == "code"])


def test_banner_on_saved_notebooks(two_runs: dict) -> None:
    second = two_runs["second"]
    failed_nb = nbformat.read(second.run_dir / "01_nexus-repos.ipynb", as_version=4)
    banner = failed_nb.cells[0]
    assert banner.cell_type == "markdown" and BANNER_TAG in banner.metadata["tags"]
    text = banner.source
    assert "FAILED" in text and "create repository gcr-io" in text
    assert "repository docker-hub" in text and "group docker" in text
    assert "apply (changes were written)" in text
    assert hashlib.sha256(two_runs["params_file"].read_bytes()).hexdigest() in text
    assert second.record["runbook_commit"] in text
    assert "change &lt;ticket&gt; #42" in text  # the note, escaped
    ok_nb = nbformat.read(second.run_dir / "00_preflight.ipynb", as_version=4)
    assert "2 create, 0 update, 0 delete, 1 unchanged" in ok_nb.cells[0].source
    assert ok_nb.metadata["runbook"]["status"] == "ok"
    first_nb = nbformat.read(two_runs["first"].run_dir / "00_preflight.ipynb", as_version=4)
    assert "plan (read only" in first_nb.cells[0].source


def test_progress_events(two_runs: dict) -> None:
    lines = [format_progress(e) for e in two_runs["events"]]
    assert lines[0] == "[1/3] preflight ..."
    assert re.fullmatch(
        r"\[1/3\] preflight \.\.\. ok \(\d+\.\d s, 2 create, 0 update, 1 unchanged\)", lines[1]
    )
    assert lines[2] == "[2/3] nexus-repos ..."
    assert lines[3].startswith("[2/3] nexus-repos ... failed (") and "ConnectionError" in lines[3]
    assert lines[4] == "[3/3] nexus-security ... skipped"
    log = (two_runs["second"].run_dir / "run.log").read_text()
    assert "failed step: create repository gcr-io" in log


def test_html_has_no_code_prompts_or_parameters(two_runs: dict) -> None:
    html = (two_runs["first"].run_dir / "00_preflight.html").read_text()
    assert "FIXTURE_SOURCE_MARKER_printed" in html  # outputs are there ...
    assert (
        'FIXTURE_SOURCE_MARKER_" +' not in html and "FIXTURE_SOURCE_MARKER_&quot;" not in html
    )  # ... code is not
    body = html.split("</style>")[-1]
    code_cells = re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', body)
    assert code_cells and all("jp-mod-noInput" in c for c in code_cells)
    assert (
        "jp-InputArea-editor" not in body and "jp-InputPrompt" not in body and "jp-OutputPrompt" not in body
    )
    assert "celltag_injected-parameters" not in body
    assert "ctx.record" not in html and "# Parameters" not in html
    assert "application/vnd.jupyter.widget-state+json" not in html
    assert "data:image/png;base64," in html  # the matplotlib figure is embedded
    assert "Stage preflight: OK" in html  # banner rendered
    assert "vnd.eks-mirror-runbook.record" not in html


def test_report_index_lists_runs_newest_first(two_runs: dict) -> None:
    index = (two_runs["tmp"] / "runs" / "index.html").read_text()
    first, second = two_runs["first"].run_dir.name, two_runs["second"].run_dir.name
    assert first in index and second in index
    assert index.index(second) < index.index(first)
    assert f'href="{second}/01_nexus-repos.html"' in index
    assert f'href="{second}/01_nexus-repos.ipynb"' in index
    assert "<script" not in index
    assert runner.report(two_runs["tmp"] / "runs") == two_runs["tmp"] / "runs" / "index.html"


def test_invalid_params_raise_before_anything_runs(tmp_path: Path) -> None:
    params_file = tmp_path / "bad.yaml"
    params_file.write_text(PARAMS_YAML.replace("target: fixture", "target: fixture\nnot_a_key: 1"))
    with pytest.raises(ParamsError) as err:
        run(params_file, None, False, tmp_path / "out", None, notebooks_dir=tmp_path)
    assert "not_a_key" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_stage_and_missing_notebook(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS_YAML)
    with pytest.raises(ValueError, match="unknown stage"):
        run(params_file, ["nexus"], False, tmp_path / "out", None, notebooks_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="00_preflight.ipynb"):
        run(params_file, ["preflight"], False, tmp_path / "out", None, notebooks_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_stage_mapping_and_default_notebooks_dir() -> None:
    assert list(STAGE_NOTEBOOKS) == list(STAGES)
    assert runner.default_notebooks_dir() == REPO / "runbook_lib" / "notebooks"


def test_run_dir_names_do_not_collide(tmp_path: Path) -> None:
    import datetime as dt

    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    a = runner.create_run_dir(tmp_path, "lab", moment)
    b = runner.create_run_dir(tmp_path, "lab", moment)
    assert a[0] == "20260102T030405Z-lab" and b[0] == "20260102T030405Z-lab-2"
    assert Path(b[1]).is_dir()


# ------------------------------------------------------------------ a kernel that dies or hangs


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("failures") / "params.yaml"
    path.write_text(PARAMS_YAML)
    return path


def _execute(fixture: str, params_file: Path, timeout: float, log=None) -> runner.StageOutcome:
    out = params_file.parent / fixture
    execution = execute_stage(
        FIXTURES / fixture,
        str(out),
        stage_parameters("preflight", params_file, False, str(out.parent)),
        out.parent,
        timeout,
        log,
    )
    return read_stage("preflight", execution, fixture)


def test_cell_timeout_is_a_failed_stage(params_file: Path) -> None:
    outcome = _execute("timeout.ipynb", params_file, 3)
    assert outcome.status == "failed"
    assert "3 s cell timeout" in outcome.failure["reason"]
    assert outcome.failure["step"] == "cell [3]: import time"
    assert outcome.notebook == "timeout.ipynb"


def test_dead_kernel_is_a_failed_stage(params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    outcome = _execute("kernel_dies.ipynb", params_file, 30, lines.append)
    assert any("Kernel died" in line for line in lines)  # papermill's warning went to the run log ...
    assert "Kernel died" not in capsys.readouterr().err  # ... not to the terminal
    assert outcome.status == "failed"
    assert "kernel died" in outcome.failure["reason"]
    # the execution count is set only if the kernel's execute_input message arrived before it died
    assert re.fullmatch(r"cell( \[4\])?: import os", outcome.failure["step"])
    assert (params_file.parent / "kernel_dies.ipynb").is_file()  # saved up to the death


def test_resolve_context_builds_a_kube_client_only_for_k8s_refs(tmp_path: Path) -> None:
    from runbook_lib.notebook import resolve_context
    from runbook_lib.params import parse
    from runbook_lib.secrets import parse_ref

    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    params = parse(
        {
            "target": "t",
            "nexus": {"url": "http://127.0.0.1:9", "admin_password": "k8s:ns/s#k"},
            "upstreams": [
                {"name": "docker-hub", "registry": "docker.io", "remote_url": "http://127.0.0.1:9"}
            ],
            "kubernetes": {"kubeconfig": "kubeconfig", "api_host": "http://127.0.0.1:2"},
            "aws": {"region": "eu-west-1", "endpoint_url": "http://127.0.0.1:3"},
        },
        base_dir=tmp_path,
    )
    ctx = resolve_context(params, parse_ref("k8s:ns/s#k"))
    assert ctx.api_client.configuration.host == "http://127.0.0.1:2"  # api_host overrides the kubeconfig
    assert (ctx.base_dir, ctx.aws_region, ctx.aws_endpoint_url) == (
        tmp_path,
        "eu-west-1",
        "http://127.0.0.1:3",
    )
    assert resolve_context(params, parse_ref("env:X")).api_client is None


def test_report_without_output_dir_uses_outputs_where_it_runs(
    two_runs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`runbook report` alone indexes ./outputs (what `make demo` writes), never a folder of the package."""
    from runbook_lib import cli

    shutil.copytree(two_runs["tmp"] / "runs", tmp_path / "outputs")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report"]) == 0
    assert (tmp_path / "outputs" / "index.html").is_file()
    assert str(tmp_path / "outputs" / "index.html") in capsys.readouterr().out


# ------------------------------------------------------------------ metrics of an actual `runbook run`


def test_runbook_run_writes_and_pushes_metrics_of_a_failed_plan(tmp_path: Path) -> None:
    """`runbook run preflight nexus-repos` (plan only, the shipped notebooks) against nothing: preflight
    fails (every endpoint is the discard port), nexus-repos is skipped; the metrics say so, in the file
    and at the Pushgateway stand-in (issue #14 part 4: alerting needs them most when a stage fails)."""
    import os
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    from tests.unit.test_metrics import SECRET, serve_pushgateway

    params = tmp_path / "params.yaml"
    params.write_text(offline_params_yaml("fixture", "RUNBOOK_TEST_METRICS_PASSWORD"))
    env = {**os.environ, "RUNBOOK_TEST_METRICS_PASSWORD": SECRET}
    gateway = serve_pushgateway()
    pushgateway = next(gateway)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "runbook_lib.cli",
                "run",
                "preflight",
                "nexus-repos",
                "--params",
                str(params),
            ]
            + ["--metrics-file", str(tmp_path / "runbook-{target}.prom"), "--pushgateway", pushgateway.url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        gateway.close()
    assert proc.returncode == 1, proc.stderr  # the stage failed; the metrics went out
    text = (tmp_path / "runbook-fixture.prom").read_text()
    samples = {
        (s.name, s.labels.get("stage")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("runbook_run_success", None)] == 0
    assert samples[("runbook_stage_success", "preflight")] == 0
    assert samples[("runbook_stage_duration_seconds", "preflight")] > 0
    assert ("runbook_stage_success", "nexus-repos") not in samples
    assert samples[("runbook_stage_skipped", "nexus-repos")] == 1
    [push] = pushgateway.pushes
    assert push.grouping == {"job": "runbook", "instance": "fixture", "stages": "preflight,nexus-repos"}
    assert push.body == text
    assert SECRET not in text
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    log = (run_dir / "run.log").read_text()
    assert f"metrics: wrote {tmp_path / 'runbook-fixture.prom'}" in log and "metrics: pushed" in log
