"""Audit records to S3 (issue #14 part 3), against moto's S3 server on loopback (real HTTP, real boto3).

A run to ``s3://bucket/prefix`` writes its folder locally (redacted) and uploads it; the canary notebook
tries to leak every secret it resolves and no uploaded object may hold any form of any of them. The
index is built from S3; the history store is downloaded, appended and merged back with conditional PUTs,
so two writers both keep their rows; bad S3 URLs exit 2 before any request, naming the field.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from runbook_lib import cli
from runbook_lib.audit.destinations import HISTORY, S3, StagedOutput, parse_s3_url
from runbook_lib.runner import STAGE_NOTEBOOKS, run
from runbook_lib.secrets import REDACTOR
from runbook_lib.verify.history import HistoryStore
from tests.support.offline_params import offline_params_yaml
from tests.support.secret_scan import Secret
from tests.support.secret_scan import encodings as secret_forms

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"
BUCKET = "runbook-audit"
PREFIX = f"s3://{BUCKET}/team/eks"

ENV_CANARY = ('S3 "Canary~~?>&x', "admin")
FILE_CANARY = ("Up&<Canary/+x ?~~z1q", "docker-pull")
KERNEL_CANARY = ("S3kern <Canary>?~~/+?!", "kernel-user")
CANARIES = [ENV_CANARY, FILE_CANARY, KERNEL_CANARY]

CANARY_PARAMS = offline_params_yaml(
    "canary", "RUNBOOK_S3_ADMIN_CANARY", "file:secrets/pull-password.txt", "runs"
)

# A stage that appends to the history store where the verify stage finds it (verify.history.path_for).
HISTORY_CELL = """\
from runbook_lib.notebook import setup
from runbook_lib.verify import history

ctx = setup(stage, params_file, apply, run_dir)
store = history.HistoryStore(history.path_for(ctx.params, ctx.run_dir))
store.append(ctx.run_dir.name, ctx.params.target, [], {"warm_speedup": 4.0})
ctx.record("results", {"history": str(store.path), "runs": store.runs(ctx.params.target)})
"""


def encodings(value: str, user: str) -> dict[str, str]:
    """Every form the secret scanner looks for (tests/support/secret_scan.py), Basic auth with `user`."""
    return secret_forms(Secret("canary", value, (user,)))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's S3 on 127.0.0.1 and boto3 pointed at it through its own environment variables."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{server._server.server_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        S3.reset()
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
        S3.reset()
    server.stop()


def objects(client, prefix: str = "") -> dict[str, bytes]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def notebooks_with(tmp: Path, preflight: str | None = None, source: str | None = None) -> Path:
    folder = tmp / "notebooks"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / STAGE_NOTEBOOKS["preflight"]
    if preflight:
        shutil.copy(FIXTURES / preflight, target)
    else:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('params_file = ""\napply = False\nrun_dir = ""\nstage = ""')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(source)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, target)
    return folder


@pytest.fixture(scope="module")
def canary_runs(s3, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("s3canary")
    (tmp / "secrets").mkdir()
    (tmp / "secrets" / "pull-password.txt").write_text(FILE_CANARY[0] + "\n")
    params_file = tmp / "params.yaml"
    params_file.write_text(CANARY_PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNBOOK_S3_ADMIN_CANARY", ENV_CANARY[0])
        mp.setenv("RUNBOOK_KERNEL_ONLY_CANARY", KERNEL_CANARY[0])
        leaky = run(
            params_file,
            ["preflight"],
            False,
            PREFIX,
            "canary",
            notebooks_dir=notebooks_with(tmp, "canary.ipynb"),
        )
        ok_dir = notebooks_with(tmp / "ok", "ok_records.ipynb")
        ok = run(params_file, ["preflight"], False, PREFIX + "/", "second", notebooks_dir=ok_dir)
    yield {"tmp": tmp, "leaky": leaky, "ok": ok}
    REDACTOR.clear()


def test_run_folders_land_in_s3_and_nothing_stays_behind(canary_runs: dict, s3) -> None:
    leaky, ok = canary_runs["leaky"], canary_runs["ok"]
    assert (leaky.exit_code, ok.exit_code) == (1, 0)  # the canary stage raises; the records stage passes
    assert not leaky.errors and not ok.errors
    stored = objects(s3, "team/eks/")
    for result in (leaky, ok):
        run_id = result.record["run_id"]
        assert result.location == f"{PREFIX}/{run_id}"
        for name in ("00_preflight.ipynb", "00_preflight.html", "run.json", "run.log"):
            assert f"team/eks/{run_id}/{name}" in stored, name
        record = json.loads(stored[f"team/eks/{run_id}/run.json"])
        assert record["status"] == result.record["status"] and record["ended"]
        assert not result.run_dir.exists()  # the staging copy is removed once uploaded
        assert not (canary_runs["tmp"] / "runs").exists()  # outputs.dir was overridden by the S3 URL
    assert (
        json.loads(stored[f"team/eks/{ok.record['run_id']}/run.json"])["stages"][0]["results"]["answer"] == 42
    )
    head = s3.head_object(Bucket=BUCKET, Key=f"team/eks/{ok.record['run_id']}/00_preflight.html")
    assert head["ContentType"].startswith("text/html")


def test_no_canary_in_any_uploaded_object(canary_runs: dict, s3) -> None:
    stored = objects(s3)
    assert len(stored) >= 9
    leaks = [
        f"{key}: {name} of {value!r}"
        for key, data in stored.items()
        for value, user in CANARIES
        for name, form in encodings(value, user).items()
        if form.encode() in data
    ]
    assert not leaks
    # the test is not vacuous: the canary stage did print and record masked secrets
    nb = json.loads(stored[f"team/eks/{canary_runs['leaky'].record['run_id']}/00_preflight.ipynb"])
    assert "raw ***" in json.dumps(nb)
    assert canary_runs["leaky"].record["stages"][0]["results"] == {"leaky": ["***", "***", "***"]}


def test_index_is_built_from_s3(canary_runs: dict, s3, capsys: pytest.CaptureFixture[str]) -> None:
    s3.delete_object(Bucket=BUCKET, Key="team/eks/index.html")
    assert cli.main(["report", "--output-dir", PREFIX]) == 0
    assert f"report: {PREFIX}/index.html" in capsys.readouterr().out
    page = s3.get_object(Bucket=BUCKET, Key="team/eks/index.html")["Body"].read().decode()
    leaky, ok = canary_runs["leaky"].record["run_id"], canary_runs["ok"].record["run_id"]
    assert page.index(ok) < page.index(leaky)  # newest first
    assert f'href="{ok}/00_preflight.html"' in page and f'href="{leaky}/run.json"' in page
    assert "second" in page and "canary" in page  # the notes
    assert not any(form in page for v, u in CANARIES for form in encodings(v, u).values())


def test_history_is_downloaded_appended_and_uploaded(s3, tmp_path: Path) -> None:
    """Two runs of a stage that appends to the history store: the second sees the first's row (the
    store was downloaded beside its staging run folder) and S3 ends with both."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(offline_params_yaml("hist", "RUNBOOK_S3_UNSET"))
    notebooks = notebooks_with(tmp_path, source=HISTORY_CELL)
    location = f"s3://{BUCKET}/history-test"
    first = run(params_file, ["preflight"], False, location, None, notebooks_dir=notebooks)
    second = run(params_file, ["preflight"], False, location, None, notebooks_dir=notebooks)
    assert (first.exit_code, second.exit_code) == (0, 0), second.record["stages"]
    assert first.record["stages"][0]["results"]["runs"] == 1
    assert second.record["stages"][0]["results"]["runs"] == 2
    local = tmp_path / "history.sqlite"
    local.write_bytes(s3.get_object(Bucket=BUCKET, Key=f"history-test/{HISTORY}")["Body"].read())
    assert HistoryStore(local).runs("hist") == 2
    metrics = HistoryStore(local).metrics("hist")
    assert sorted(metrics["run_id"]) == sorted([first.record["run_id"], second.record["run_id"]])


def _add_run(store_path: Path, run_id: str) -> None:
    HistoryStore(store_path).append(run_id, "two", [], {"warm_speedup": 2.0})


def test_two_writers_of_the_history_both_keep_their_rows(s3) -> None:
    """A and B start from the same history. B reads the newest copy to merge into, A uploads before B's PUT
    (the race); B's PUT, conditioned on the ETag it read, is refused (412) by S3, so B merges into A's copy
    instead of overwriting it: every run's rows survive."""
    location = f"s3://{BUCKET}/two-writers"
    seed = StagedOutput(location)
    _add_run(seed.history_path, "seed")
    assert seed.push_history()  # the first copy: If-None-Match: *
    a, b = StagedOutput(location), StagedOutput(location)
    outcomes: list[str] = []

    class Racing:
        """B's view of S3: right after B's first read, A uploads."""

        def read_bytes(self, loc: str) -> tuple[bytes, str]:
            answer = S3.read_bytes(loc)
            if not outcomes:
                outcomes.append("a pushed")
                assert a.push_history()
            return answer

        def write_bytes(self, loc: str, data: bytes, **kw: object) -> str:
            try:
                etag = S3.write_bytes(loc, data, **kw)
            except Exception as err:
                outcomes.append(type(err).__name__ + " " + str(getattr(err, "response", {}).get("Error", {})))
                raise
            outcomes.append("b written")
            return etag

    try:
        assert a.pull_history() and b.pull_history()
        _add_run(a.history_path, "run-a")
        _add_run(b.history_path, "run-b")
        b.handler = Racing()  # type: ignore[assignment]
        assert b.push_history()
        assert (
            outcomes[0] == "a pushed" and "PreconditionFailed" in outcomes[1] and outcomes[2] == "b written"
        )
        merged = a.root / "check.sqlite"
        merged.write_bytes(S3.read_bytes(f"{location}/{HISTORY}")[0])
        db = sqlite3.connect(merged)
        assert sorted(r[0] for r in db.execute("SELECT run_id FROM runs")) == ["run-a", "run-b", "seed"]
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 3
        db.close()
        assert not b.push_history()  # nothing new: no upload
    finally:
        for staged in (seed, a, b):
            staged.cleanup()


def test_secret_left_in_a_staged_file_is_scrubbed_or_refused(s3) -> None:
    """The upload is a second net: text is scrubbed again, a binary file holding a secret stays local."""
    secret = "st4ged-Secret-value"
    REDACTOR.add(secret)
    staged = StagedOutput(f"s3://{BUCKET}/net")
    try:
        folder = staged.root / "r1"
        folder.mkdir()
        (folder / "overlay.yaml").write_text(f"password: {secret}\n")  # a file a stage wrote itself
        (folder / "blob.bin").write_bytes(b"\x00\xff" + secret.encode() + b"\xfe")
        (folder / "chart.png").write_bytes(b"\x89PNG\x00\xff\xfe")
        assert staged.push_run("r1") == ["r1/blob.bin"]
        stored = objects(s3, "net/")
        assert set(stored) == {"net/r1/overlay.yaml", "net/r1/chart.png"}
        assert stored["net/r1/overlay.yaml"] == b"password: ***\n"
        assert staged.push_run("r1") == ["r1/blob.bin"]  # unchanged files are not sent again
    finally:
        staged.cleanup()
        REDACTOR.clear()


# ------------------------------------------------------------------------------------ bad input: exit 2


@pytest.fixture
def no_request(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """boto3 pointed at a listening socket of ours: any request would be a connection waiting on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    S3.reset()
    yield listener
    S3.reset()
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


BAD_URLS = [
    ("s3://Bad_Bucket/runs", "bucket name"),
    ("s3://ab/runs", "bucket name"),
    ("s3://192.168.0.1/runs", "IP address"),
    ("s3://bucket..x/runs", "bucket name"),
    ("s3://good-bucket/a//b", "empty"),
    ("s3://good-bucket/a/../b", "'..'"),
    ("s3://good-bucket/runs?versionId=1", "query"),
    ("s3://AKIAEXAMPLE:hunter2@bucket/x", "bucket name"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_bad_s3_urls_exit_2_naming_the_option(
    url: str, reason: str, no_request, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(offline_params_yaml("bad", "RUNBOOK_S3_UNSET"))
    assert cli.main(["run", "preflight", "--params", str(params_file), "--output-dir", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--output-dir: ") and reason in err and "nothing was executed" in err
    assert "hunter2" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["report", "--output-dir", url]) == 2
    assert capsys.readouterr().err.startswith("--output-dir: ")
    with pytest.raises(ValueError, match=reason.strip("'")):
        parse_s3_url(url)


def test_other_remote_schemes_are_refused(
    no_request, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(offline_params_yaml("bad", "RUNBOOK_S3_UNSET"))
    assert cli.main(["run", "--params", str(params_file), "--output-dir", "gs://bucket/runs"]) == 2
    assert "--output-dir: a remote output is s3://" in capsys.readouterr().err


def test_bad_outputs_dir_in_parameters_names_the_field(
    no_request, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    text = offline_params_yaml("bad", "RUNBOOK_S3_UNSET").replace("dir: runs", "dir: s3://Secret_Bucket//x")
    params_file.write_text(text)
    assert cli.main(["params", "check", str(params_file)]) == 2
    out = capsys.readouterr().out
    assert "outputs.dir" in out and "bucket name" in out and "Secret_Bucket" not in out
    assert cli.main(["run", "preflight", "--params", str(params_file)]) == 2
    assert "outputs.dir" in capsys.readouterr().err
    history = text.replace("dir: s3://Secret_Bucket//x", "dir: runs\n  history: s3://bucket/h.sqlite")
    params_file.write_text(history)
    assert cli.main(["params", "check", str(params_file)]) == 2
    assert "outputs.history" in capsys.readouterr().out


def test_a_valid_outputs_dir_s3_url_is_accepted_by_params_check(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        offline_params_yaml("ok", "RUNBOOK_S3_UNSET").replace(
            "dir: runs", "dir: s3://audit.example-1/eks/prod/"
        )
    )
    assert cli.main(["params", "check", str(params_file)]) == 0


def test_missing_bucket_exits_2_before_anything_runs(
    s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(offline_params_yaml("nobucket", "RUNBOOK_S3_UNSET"))
    code = cli.main(
        ["run", "preflight", "--params", str(params_file), "--output-dir", "s3://no-such-bucket/x"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "NoSuchBucket" in err and "nothing was executed" in err
    assert not objects(s3, "x/")


def test_fleet_to_s3_writes_each_run_folder_the_summary_and_the_index(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runbook fleet run --output-dir s3://...`: every target's process uploads its own run folder; the
    fleet writes its summary and rebuilds the index there (both targets fail: nothing answers them)."""
    import os
    import subprocess
    import sys

    params = tmp_path / "params"
    params.mkdir()
    for name in ("fa", "fb"):
        (params / f"{name}.yaml").write_text(offline_params_yaml(name, "RUNBOOK_S3_UNSET"))
    monkeypatch.setenv("RUNBOOK_LOCK_DIR", str(tmp_path / "locks"))
    location = f"s3://{BUCKET}/fleet"
    proc = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "fleet", "run", "preflight", "--params-dir", str(params)]
        + ["--parallel", "2", "--output-dir", location],
        env=dict(os.environ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    stored = objects(s3, "fleet/")
    [summary_key] = [k for k in stored if k.startswith("fleet/fleets/") and k.endswith("-fleet.json")]
    summary = json.loads(stored[summary_key])
    assert [(t["target"], t["status"]) for t in summary["targets"]] == [("fa", "failed"), ("fb", "failed")]
    index = stored["fleet/index.html"].decode()
    for entry in summary["targets"]:
        assert entry["run"].startswith(f"{location}/")
        run_id = entry["run"].rsplit("/", 1)[1]
        assert f"fleet/{run_id}/run.json" in stored and f"fleet/{run_id}/00_preflight.html" in stored
        assert run_id in index
    assert f"summary: {location}/fleets/" in proc.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "runs").exists()


def test_outputs_dir_in_the_parameters_sends_the_run_to_s3(s3, tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        offline_params_yaml("fromparams", "RUNBOOK_S3_UNSET").replace("dir: runs", f"dir: s3://{BUCKET}/p/")
    )
    result = run(
        params_file,
        ["preflight"],
        False,
        None,
        None,
        notebooks_dir=notebooks_with(tmp_path, "ok_records.ipynb"),
    )
    assert result.exit_code == 0 and result.location == f"s3://{BUCKET}/p/{result.record['run_id']}"
    assert f"p/{result.record['run_id']}/run.json" in objects(s3, "p/")
    assert not (tmp_path / "s3:").exists()  # never taken for a local path
