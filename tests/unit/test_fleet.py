"""`runbook fleet run` (issue #14 part 5): three lab targets in parallel, the summary, and a second
concurrent fleet refused by the per-target locks.

The targets' preflight (plan only, the shipped notebook) reaches a Nexus emulator and a CNCF distribution
registry (Debian docker-registry) started here on loopback; the emulator answers after a set latency (its
lab-only fault settings) so the first fleet is still running when the second one starts. Target c expects
a Pro edition the emulator does not have: its stage fails and the others do not stop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runbook_lib import cli, fleet
from runbook_lib.lock import holder
from tests.support.lab_nexus import running_nexus
from tests.support.offline_params import offline_params_yaml

REGISTRY = Path("/usr/bin/docker-registry")
LATENCY_S = 2.0  # per emulator request: keeps the first fleet's targets busy while the second one starts


def target_yaml(name: str, nexus_url: str, registry_url: str, edition: str | None = None) -> str:
    expect = f"\n  expect_edition: {edition}" if edition else ""
    return f"""\
target: {name}
nexus:
  url: {nexus_url}
  admin_password: env:RUNBOOK_FLEET_TEST_PASSWORD{expect}
upstreams:
  - name: docker-hub
    registry: docker.io
    remote_url: {registry_url}
kubernetes:
  required: false
aws:
  required: false
outputs:
  dir: ../runs
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not REGISTRY.is_file():
        pytest.skip(f"{REGISTRY} missing: install Debian's docker-registry (make test does as root)")
    from runbook_lab.registries import start_registry, stop_process

    tmp = tmp_path_factory.mktemp("fleet")
    registry = start_registry("upstream", tmp / "registry", 0, tmp / "registry.log")
    try:
        with running_nexus(tmp / "nexus") as nexus:
            r = httpx.put(f"{nexus.url}/_lab/faults", json={"latency_s": LATENCY_S, "seed": 1})
            assert r.status_code == 200, r.text
            params = tmp / "params"
            params.mkdir()
            (params / "a.yaml").write_text(target_yaml("fleet-a", nexus.url, registry.url))
            (params / "b.yaml").write_text(target_yaml("fleet-b", nexus.url, registry.url))
            (params / "c.yml").write_text(target_yaml("fleet-c", nexus.url, registry.url, "PRO"))
            (params / "notes.txt").write_text("not a parameters file")
            yield {"tmp": tmp, "params": params, "nexus": nexus}
    finally:
        stop_process(registry)


def fleet_cmd(params: Path, summary: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runbook_lib.cli",
        "fleet",
        "run",
        "preflight",
        "--params-dir",
        str(params),
    ] + [
        "--parallel",
        "3",
        "--summary",
        str(summary),
        *extra,
    ]


@pytest.fixture(scope="module")
def two_fleets(lab: dict) -> dict:
    tmp, params = lab["tmp"], lab["params"]
    locks = tmp / "locks"
    env = {**os.environ, "RUNBOOK_LOCK_DIR": str(locks), "RUNBOOK_FLEET_TEST_PASSWORD": "fleet-Secret-1"}
    first = subprocess.Popen(
        fleet_cmd(params, tmp / "first.json"),
        env=env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        targets = ["fleet-a", "fleet-b", "fleet-c"]
        seen_all = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and first.poll() is None:
            if all(holder(t, locks) is not None for t in targets):
                seen_all = True  # all three hold their lock at once: they run in parallel
                break
            time.sleep(0.05)
        second = subprocess.run(
            fleet_cmd(params, tmp / "second.json"),
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    return {
        "seen_all": seen_all,
        "first": (first.returncode, out, err, json.loads((tmp / "first.json").read_text())),
        "second": (
            second.returncode,
            second.stdout,
            second.stderr,
            json.loads((tmp / "second.json").read_text()),
        ),
        "runs": tmp / "runs",
    }


def test_three_targets_run_in_parallel_and_one_failing_does_not_stop_the_others(two_fleets: dict) -> None:
    assert two_fleets["seen_all"], "the three targets never held their locks at the same time"
    code, out, err, summary = two_fleets["first"]
    assert code == 1, err  # one target failed
    by_target = {t["target"]: t for t in summary["targets"]}
    assert list(by_target) == ["fleet-a", "fleet-b", "fleet-c"]  # the files' order (a.yaml, b.yaml, c.yml)
    assert by_target["fleet-a"]["status"] == by_target["fleet-b"]["status"] == "ok"
    assert by_target["fleet-a"]["stages"] == {"preflight": "ok"}
    c = by_target["fleet-c"]
    assert (c["status"], c["exit_code"], c["stages"]) == ("failed", 1, {"preflight": "failed"})
    assert "preflight" in c["reason"] and "required endpoint" in c["reason"]
    assert (summary["mode"], summary["stages"], summary["parallel"], summary["exit_code"]) == (
        "plan",
        ["preflight"],
        3,
        1,
    )
    # one run folder per target, each with its record; the index lists all three
    for name, entry in by_target.items():
        run_dir = Path(entry["run"])
        assert run_dir.parent == two_fleets["runs"] and run_dir.name.endswith(name)
        record = json.loads((run_dir / "run.json").read_text())
        assert record["target"] == name and record["mode"] == "plan"
    index = (two_fleets["runs"] / "index.html").read_text()
    assert all(Path(e["run"]).name in index for e in by_target.values())
    # the table on stdout, the targets' own lines prefixed with their name
    assert "[fleet-a] [1/1] preflight ..." in out
    table = out[out.index("target ") :]
    for name, status in (("fleet-a", "ok"), ("fleet-b", "ok"), ("fleet-c", "failed")):
        assert any(line.startswith(name) and f" {status} " in line for line in table.splitlines())
    assert "fleet " in out and "3 target(s), 2 ok, 1 failed; exit 1" in out
    assert "fleet-Secret-1" not in out + err + json.dumps(summary)


def test_a_concurrent_second_fleet_is_refused_by_the_locks(two_fleets: dict) -> None:
    code, out, err, summary = two_fleets["second"]
    assert code == 3, out + err  # refused, none failed
    assert [t["status"] for t in summary["targets"]] == ["locked", "locked", "locked"]
    for entry in summary["targets"]:
        assert entry["exit_code"] == 3 and entry["run"] is None and entry["stages"] == {}
        assert "refused by the lock" in entry["reason"] and "plan mode" in entry["reason"]
    assert "3 locked; exit 3" in out
    # nothing of the second fleet was executed: only the first fleet's three run folders exist
    assert len([p for p in two_fleets["runs"].iterdir() if p.is_dir() and not p.name.startswith(".")]) == 3


def test_a_single_apply_is_refused_while_a_fleet_holds_the_target(lab: dict, tmp_path: Path) -> None:
    """The fleet's lock is the one single runs take: an --apply of a target a fleet runs is refused."""
    from runbook_lib.lock import acquire

    locks = tmp_path / "locks"
    held = acquire("fleet-a", locks, mode="plan")  # what a fleet's target process holds
    try:
        env = {**os.environ, "RUNBOOK_LOCK_DIR": str(locks), "RUNBOOK_FLEET_TEST_PASSWORD": "x"}
        proc = subprocess.run(
            [sys.executable, "-m", "runbook_lib.cli", "run", "preflight", "--apply"]
            + ["--params", str(lab["params"] / "a.yaml"), "--output-dir", str(tmp_path / "out")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        held.release()
    assert proc.returncode == 3 and "run (plan mode)" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------- bounded parallelism, input


def test_parallelism_is_bounded_and_results_keep_the_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def fake_target(target, stages, apply, output_dir, note, emit):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        code = 1 if target.name == "t3" else 0
        return fleet.TargetResult(target.name, str(target.params_file), fleet._status(code), code)

    monkeypatch.setattr(fleet, "run_target", fake_target)
    targets = [fleet.Target(f"t{i}", tmp_path / f"t{i}.yaml", str(tmp_path)) for i in range(6)]
    summary = fleet.run_fleet(targets, ["preflight"], parallel=2, emit=lambda line: None)
    assert peak[0] == 2
    assert [t.target for t in summary.targets] == [f"t{i}" for i in range(6)]
    assert summary.exit_code == 1
    assert fleet.fleet_exit_code([fleet.TargetResult("x", "", "locked", 3)]) == 3
    assert fleet.fleet_exit_code([fleet.TargetResult("x", "", "ok", 0)]) == 0


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (
            ["--parallel", "0"],
            {"a.yaml": offline_params_yaml("a", "X")},
            "--parallel: must be between 1 and 64",
        ),
        ([], {}, "--params-dir: no parameter files"),
        (
            [],
            {"a.yaml": offline_params_yaml("same", "X"), "b.yaml": offline_params_yaml("same", "X")},
            "target: 'same' is also the target of a.yaml",
        ),
        ([], {"a.yaml": offline_params_yaml("a", "X").replace("target: a", "target: a\nbogus: 1")}, "bogus"),
        (
            ["--output-dir", "s3://Bad_Bucket/x"],
            {"a.yaml": offline_params_yaml("a", "X")},
            "--output-dir: the bucket",
        ),
        (["nexus"], {"a.yaml": offline_params_yaml("a", "X")}, "STAGE: unknown stage 'nexus'"),
    ],
)
def test_bad_fleet_input_exits_2_before_anything_runs(
    args: list[str], files: dict[str, str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params"
    params.mkdir()
    for name, text in files.items():
        _write(params, name, text)
    summary = tmp_path / "summary.json"
    assert cli.main(["fleet", "run", "--params-dir", str(params), "--summary", str(summary), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "nothing was executed" in err and "Traceback" not in err
    assert not summary.exists() and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- Argo WorkflowTemplate

REPO = Path(__file__).resolve().parents[2]
ARGO = REPO / "deploy" / "argo"


def argo_validator():
    """Argo's published schema (the extracted definitions), made strict: an object definition that lists
    its properties takes no others, so a misspelt field fails here as it would be dropped by Argo."""
    import copy

    import jsonschema

    schema = json.loads((REPO / "tests/data/reference/argo/workflowtemplate-subset.schema.json").read_text())
    strict = copy.deepcopy(schema)
    for definition in strict["definitions"].values():
        if "properties" in definition:
            definition["additionalProperties"] = False
    return jsonschema.Draft7Validator(strict)


def workflow_template() -> dict:
    import yaml

    [doc] = [d for d in yaml.safe_load_all((ARGO / "workflowtemplate.yaml").read_text()) if d]
    return doc


def test_workflow_template_validates_against_argo_schema() -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in argo_validator().iter_errors(workflow_template())
    ]
    assert errors == []


def test_the_schema_check_is_not_vacuous() -> None:
    validator = argo_validator()
    doc = workflow_template()
    doc["spec"]["paralelism"] = 4  # misspelt
    doc["spec"]["templates"][0]["dag"]["tasks"][0]["withParams"] = "x"  # misspelt
    del doc["spec"]["templates"][1]["inputs"]["parameters"][0]["name"]
    doc["spec"]["templates"][1]["container"]["args"] = "verify"  # not a list
    messages = [e.message for e in validator.iter_errors(doc)]
    assert any("paralelism" in m for m in messages) and any("withParams" in m for m in messages)
    assert any("'name' is a required property" in m for m in messages)
    assert any("is not of type 'array'" in m for m in messages)


def test_workflow_template_fans_out_one_pod_per_target_running_the_runbook() -> None:
    from runbook_lib.params import STAGES

    spec = workflow_template()["spec"]
    params = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    assert isinstance(json.loads(params["targets"]), list)
    assert params["stage"] in STAGES
    assert spec["parallelism"] >= 1  # bounded, like --parallel
    templates = {t["name"]: t for t in spec["templates"]}
    dag = templates[spec["entrypoint"]]["dag"]
    assert dag["failFast"] is False  # one target failing does not stop the others
    [task] = dag["tasks"]
    assert task["withParam"] == "{{workflow.parameters.targets}}"
    assert task["arguments"]["parameters"] == [{"name": "target", "value": "{{item}}"}]
    target = templates[task["template"]]
    container = target["container"]
    argv = container["command"] + container["args"]
    resolved = [
        a.replace("{{workflow.parameters.stage}}", params["stage"])
        .replace("{{inputs.parameters.target}}", "example")
        .replace("{{workflow.parameters.output-dir}}", params["output-dir"])
        for a in argv
    ]
    assert resolved[0] == "runbook" and "{{" not in " ".join(resolved)
    args = cli.build_parser().parse_args(resolved[1:])  # the runbook's own CLI accepts the pod's command
    assert (args.func, args.stages, args.output_dir) == (cli.cmd_run, [params["stage"]], params["output-dir"])
    assert cli.check_output_dir(args.output_dir) == params["output-dir"]
    # the parameters file the pod reads is a key of the fleet ConfigMap, mounted where --params points
    mount = next(m for m in container["volumeMounts"] if m["name"] == "targets")
    volume = next(v for v in target["volumes"] if v["name"] == "targets")
    assert args.params.startswith(mount["mountPath"] + "/")
    assert {e["name"] for e in container["env"]} >= {"RUNBOOK_LOCK_DIR"}  # the root file system is read-only
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert target["securityContext"]["runAsNonRoot"] is True
    assert volume["configMap"]["name"] == "eks-mirror-runbook-fleet-params"


def test_fleet_configmap_holds_valid_parameters_per_target(tmp_path: Path) -> None:
    import yaml

    from runbook_lib import params as params_mod

    [cm] = [d for d in yaml.safe_load_all((ARGO / "configmap.yaml").read_text()) if d]
    assert cm["metadata"]["name"] == "eks-mirror-runbook-fleet-params"
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
        loaded = params_mod.load(tmp_path / key)
        assert key == f"{loaded.target}.yaml"  # the pod reads <target>.yaml
        assert loaded.outputs.dir.startswith("s3://")
    names = json.loads(
        next(p for p in workflow_template()["spec"]["arguments"]["parameters"] if p["name"] == "targets")[
            "value"
        ]
    )
    assert {f"{n}.yaml" for n in names} <= set(cm["data"])


def argo_target_pod() -> dict:
    """The pod Argo creates for one target, as far as the template decides it (Argo adds its own wait
    container and annotations): the template's container, volumes and security context, the workflow's
    service account, parameters substituted."""
    spec = workflow_template()["spec"]
    params = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    target = next(t for t in spec["templates"] if t["name"] == "run-target")
    text = json.dumps(target)
    for key, value in (
        ("workflow.parameters.stage", params["stage"]),
        ("inputs.parameters.target", "example"),
    ):
        text = text.replace("{{" + key + "}}", value)
    text = text.replace("{{workflow.parameters.output-dir}}", params["output-dir"])
    target = json.loads(text)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fleet-example", "namespace": "default", "labels": target["metadata"]["labels"]},
        "spec": {
            "serviceAccountName": spec["serviceAccountName"],
            "restartPolicy": "Never",
            "activeDeadlineSeconds": target["activeDeadlineSeconds"],
            "securityContext": target["securityContext"],
            "containers": [target["container"]],
            "volumes": target["volumes"],
        },
    }


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not on PATH")
def test_the_target_pod_and_configmap_pass_the_kubernetes_schema(kube, tmp_path: Path) -> None:
    """The Kubernetes parts the Argo schema leaves open (container, volumes, security context) are applied
    with strict field validation to the lab's Kubernetes stand-in, and a misspelt field is refused there."""
    import yaml

    from runbook_lab.kube import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    [cm] = [d for d in yaml.safe_load_all((ARGO / "configmap.yaml").read_text()) if d]
    cm["metadata"]["namespace"] = "default"

    def apply(*docs: dict) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"), "apply"]
            + ["--validate=strict", "-f", "-"],
            input=yaml.safe_dump_all(list(docs)),
            capture_output=True,
            text=True,
            timeout=60,
        )

    res = apply(cm, argo_target_pod())
    assert res.returncode == 0, res.stderr
    assert (
        "pod/fleet-example created" in res.stdout
        and "configmap/eks-mirror-runbook-fleet-params" in res.stdout
    )
    bad = argo_target_pod()
    bad["metadata"]["name"] = "fleet-bad"
    bad["spec"]["containers"][0]["volumeMount"] = bad["spec"]["containers"][0].pop("volumeMounts")
    res = apply(bad)
    assert res.returncode != 0 and "volumeMount" in res.stderr
