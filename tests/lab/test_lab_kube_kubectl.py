"""kubectl against the Kubernetes API stand-in, through a kubeconfig from write_kubeconfig.

kubectl is not a Python dependency: these tests need a kubectl binary >= 1.27 on PATH (server-side field
validation through /openapi/v3; the stand-in reports v1.33, and kubectl supports one minor version of skew).
They skip, saying why, when it is missing or too old (Debian bookworm's kubernetes-client is 1.20.2).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_lab.kube import KubeStandIn, write_kubeconfig

MIN_MINOR = 27


@functools.cache
def _kubectl_problem() -> str | None:
    path = shutil.which("kubectl")
    if not path:
        return "kubectl is not installed (not on PATH); install a kubectl >= 1.27 to run these tests"
    try:
        out = subprocess.run(
            [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
        )
        minor = int("".join(ch for ch in json.loads(out.stdout)["clientVersion"]["minor"] if ch.isdigit()))
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        return f"cannot determine the kubectl version: {exc}"
    if minor < MIN_MINOR:
        return f"kubectl 1.{minor} is older than 1.{MIN_MINOR} (no OpenAPI v3 field-validation support)"
    return None


pytestmark = pytest.mark.skipif(bool(_kubectl_problem()), reason=_kubectl_problem() or "")

EC2NODECLASS = """\
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  role: "{role}"
  amiSelectorTerms:
    - alias: al2023@v20260714
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: "my-cluster"
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: "my-cluster"
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.base = [
            shutil.which("kubectl") or "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(cache),
        ]

    def __call__(
        self, *args: str, stdin: str | None = None, ok: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True, timeout=60)
        if ok and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[KubeStandIn, Kubectl]]:
    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", standin.url)
    yield standin, Kubectl(kubeconfig, tmp_path / "cache")
    standin.stop()


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_get_nodes_and_namespaces(lab: tuple[KubeStandIn, Kubectl]) -> None:
    standin, kubectl = lab
    assert kubectl("get", "nodes").stderr.strip() == "No resources found"
    standin.put(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "ip-10-0-1-1.ec2.internal"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "nodeInfo": {"kubeletVersion": "v1.33.5-eks-lab"},
            },
        }
    )
    rows = _rows(kubectl("get", "nodes").stdout)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows[1][:3] == ["ip-10-0-1-1.ec2.internal", "Ready", "<none>"] and rows[1][4] == "v1.33.5-eks-lab"
    names = [r[0] for r in _rows(kubectl("get", "namespaces").stdout)[1:]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_apply_get_and_delete_an_ec2nodeclass(lab: tuple[KubeStandIn, Kubectl]) -> None:
    standin, kubectl = lab
    manifest = EC2NODECLASS.format(role="KarpenterNodeRole-my-cluster")
    assert (
        kubectl("apply", "-f", "-", stdin=manifest).stdout.strip()
        == "ec2nodeclass.karpenter.k8s.aws/default created"
    )
    posted = [r for r in standin.requests if r.method == "POST"]
    assert posted[-1].query == "fieldManager=kubectl-client-side-apply&fieldValidation=Strict"
    assert (
        kubectl("apply", "-f", "-", stdin=manifest).stdout.strip()
        == "ec2nodeclass.karpenter.k8s.aws/default unchanged"
    )
    changed = EC2NODECLASS.format(role="OtherRole")
    assert (
        kubectl("apply", "-f", "-", stdin=changed).stdout.strip()
        == "ec2nodeclass.karpenter.k8s.aws/default configured"
    )
    assert [r.content_type for r in standin.requests if r.method == "PATCH"] == [
        "application/merge-patch+json"
    ]

    rows = _rows(kubectl("get", "ec2nodeclasses").stdout)
    assert rows[0] == ["NAME", "READY", "AGE"] and rows[1][0] == "default"
    wide = _rows(kubectl("get", "ec2nc", "-o", "wide").stdout)
    assert wide[0][-1] == "ROLE" and wide[1][-1] == "OtherRole"
    obj = json.loads(kubectl("get", "ec2nodeclass", "default", "-o", "json").stdout)
    assert obj["spec"]["role"] == "OtherRole" and obj["metadata"]["generation"] == 2
    assert obj["spec"]["metadataOptions"]["httpTokens"] == "required"  # CRD default applied by the server

    assert (
        kubectl("delete", "ec2nodeclass", "default").stdout.strip()
        == 'ec2nodeclass.karpenter.k8s.aws "default" deleted'
    )
    assert standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default") is None


def test_server_side_validation_errors_reach_the_user(lab: tuple[KubeStandIn, Kubectl]) -> None:
    _, kubectl = lab
    bad_type = EC2NODECLASS.format(role="x").replace('role: "x"', "role: 5")
    result = kubectl("apply", "-f", "-", stdin=bad_type, ok=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'The EC2NodeClass "default" is invalid: spec.role: Invalid value: "integer": '
        'spec.role in body must be of type string: "integer"'
    )
    typo = EC2NODECLASS.format(role="x").replace("  role:", "  rolez: typo\n  role:")
    result = kubectl("apply", "-f", "-", stdin=typo, ok=False)
    assert 'strict decoding error: unknown field "spec.rolez"' in result.stderr


def test_server_side_apply_and_configmap_round_trip(lab: tuple[KubeStandIn, Kubectl]) -> None:
    standin, kubectl = lab
    manifest = EC2NODECLASS.format(role="R")
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout
    managed = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("kubectl", "Apply")]

    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  labels: {app: lab}\ndata:\n  a: '1'\n"
    kubectl("apply", "-f", "-", stdin=cm)
    kubectl("apply", "-f", "-", stdin=cm.replace("a: '1'", "a: '2'"))
    assert [r.content_type for r in standin.requests if r.method == "PATCH"][
        -1
    ] == "application/strategic-merge-patch+json"
    assert standin.get("v1", "ConfigMap", "cfg", "default")["data"] == {"a": "2"}
    kubectl("label", "configmap", "cfg", "tier=x")
    assert [r[0] for r in _rows(kubectl("get", "cm", "-l", "app=lab,tier in (x)").stdout)[1:]] == ["cfg"]
