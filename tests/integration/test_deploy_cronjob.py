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


def test_manifests_apply_to_the_stand_in_with_strict_validation(kube, tmp_path: Path, rendered) -> None:
    """Every rendered object, the CronJob and the RBAC kinds included, through `kubectl apply` with the
    server-side strict field validation kubectl asks for."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    res = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(rendered))
    assert res.returncode == 0, res.stderr
    for line in (
        "cronjob.batch/eks-mirror-runbook-verify created",
        "configmap/eks-mirror-runbook-params created",
        "serviceaccount/eks-mirror-runbook created",
    ):
        assert line in res.stdout, res.stdout
    assert (
        "role.rbac.authorization.k8s.io/" in res.stdout
        and "rolebinding.rbac.authorization.k8s.io/" in res.stdout
    )
    posted = [r for r in kube.requests if r.method == "POST"]
    assert len(posted) == len(rendered) and all("fieldValidation=Strict" in r.query for r in posted)
    got = json.loads(kubectl(kubeconfig, "get", "cronjob", "-n", "eks-mirror-runbook", "-o", "json").stdout)
    [cron] = got["items"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "eks-mirror-runbook"
    again = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(rendered))
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout


def test_a_misspelt_field_is_refused_by_the_schema(kube, tmp_path: Path, rendered) -> None:
    """The validation above can fail: an unknown field in the pod template is rejected."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    cron = next(d for d in rendered if d["kind"] == "CronJob")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    ns = next(d for d in rendered if d["kind"] == "Namespace")
    res = kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all([ns, cron]))
    assert res.returncode != 0 and "restartPolicyy" in res.stderr
