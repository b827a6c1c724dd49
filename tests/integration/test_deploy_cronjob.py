"""deploy/base renders with kubectl's kustomize and applies, with strict server-side field validation against
the Kubernetes OpenAPI schema, to the lab's Kubernetes stand-in (which validates the built-in kinds)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from runbook_lab.kube import write_kubeconfig

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not on PATH")


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "cache"), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def rendered() -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy/base")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_cronjob_settings(rendered: list[dict]) -> None:
    kinds = {d["kind"] for d in rendered}
    assert kinds >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    cron = next(d for d in rendered if d["kind"] == "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["runbook", "run", "verify"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert not any(e.get("name") == "KUBECONFIG" for e in container.get("env", []))
    sa = next(d for d in rendered if d["kind"] == "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]


# Kinds the stand-in serves (lab/runbook_lab/kube/resources.py). CronJob, ServiceAccount and the RBAC kinds
# are not served there: the CronJob's jobTemplate is applied as a batch/v1 Job instead (same JobSpec and pod
# template schema), the others are checked by test_cronjob_settings only.
SERVED = {"Namespace", "ConfigMap"}


def as_job(rendered: list[dict]) -> dict:
    cron = next(d for d in rendered if d["kind"] == "CronJob")
    meta = {"name": cron["metadata"]["name"], "namespace": cron["metadata"]["namespace"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": cron["spec"]["jobTemplate"]["spec"],
    }


def test_manifests_apply_to_the_stand_in_with_strict_validation(kube, tmp_path: Path, rendered) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    docs = [d for d in rendered if d["kind"] in SERVED] + [as_job(rendered)]
    res = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert res.returncode == 0, res.stderr
    assert "job.batch/eks-mirror-runbook-verify created" in res.stdout
    assert "configmap/eks-mirror-runbook-params created" in res.stdout
    posted = [r for r in kube.requests if r.method == "POST"]
    assert all("fieldValidation=Strict" in r.query for r in posted)
    got = json.loads(kubectl(kubeconfig, "get", "job", "-n", "eks-mirror-runbook", "-o", "json").stdout)
    [job] = got["items"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "eks-mirror-runbook"


def test_a_misspelt_field_is_refused_by_the_schema(kube, tmp_path: Path, rendered) -> None:
    """The validation above can fail: an unknown field in the pod template is rejected."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    job = as_job(rendered)
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    ns = next(d for d in rendered if d["kind"] == "Namespace")
    res = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all([ns, job]))
    assert res.returncode != 0 and "restartPolicyy" in res.stderr
