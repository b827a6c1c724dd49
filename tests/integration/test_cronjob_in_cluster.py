"""The CronJob's exact command, run locally with a pod's environment against the lab (issue #14 part 2).

A pod has no kubeconfig: its service-account token, CA bundle and namespace are mounted at
``/var/run/secrets/kubernetes.io/serviceaccount`` and ``KUBERNETES_SERVICE_HOST/PORT`` point at the API
server over HTTPS (kubernetes-client/python ``config/incluster_config.py``). Here:

- the lab runs (``runbook lab up``) and stages 0-4 are applied from the operator's side (kubeconfig);
- a TLS front (``runbook_lab.tlsfront``) serves the lab's API stand-in over HTTPS with a throw-away
  certificate, which is the pod's ``ca.crt``;
- in a private mount namespace a tmpfs over ``/run`` (``/var/run`` links there) holds the service-account
  files, so nothing on the machine changes;
- the command and environment come from the rendered CronJob; the paths of its volumes (the parameters
  ConfigMap, the outputs emptyDir) map to test folders, and its parameters are the lab's without any
  kubeconfig.

The run must succeed, reach the API only through the TLS front, and leave the token out of its outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runbook_lab.tlsfront import TLSFront
from runbook_lib.cli import main
from tests.support.labkit import lab_params_file
from tests.support.tls import self_signed

REPO = Path(__file__).resolve().parents[2]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN = "pod-sa-token-7c1f0e9d"
pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl renders deploy/base (kustomize)"),
]


def cronjob() -> dict:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "deploy/base")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "CronJob")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    tmp = tmp_path_factory.mktemp("incluster")
    params_path = lab_params_file(tmp)
    data = yaml.safe_load(params_path.read_text())
    data["lab"]["node_pools"] = {"default": 1}
    data["verification"].update(repetitions=1, thresholds={"allow_bypass": False})
    data["karpenter"].update(rollout_poll_s=1)
    params_path.write_text(yaml.safe_dump(data))
    cli = [sys.executable, "-m", "runbook_lib.cli"]
    try:
        up = subprocess.run([*cli, "lab", "up", "--params", str(params_path)], capture_output=True, text=True)
        assert up.returncode == 0, up.stdout + up.stderr
        stages = ["preflight", "nexus-repos", "nexus-security", "helm", "karpenter"]
        applied = subprocess.run(
            [*cli, "run", *stages, "--params", str(params_path), "--apply"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield tmp, data
    finally:
        main(["lab", "down", "--params", str(params_path)])


def test_the_cronjobs_command_runs_in_cluster_against_the_lab(lab) -> None:
    tmp, data = lab
    job = cronjob()
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {name: tmp / "pod" / name for name in mounts}
    for folder in volumes.values():
        folder.mkdir(parents=True)

    def local(arg: str) -> str:
        for name, path in mounts.items():
            if arg == path or arg.startswith(path + "/"):
                return str(volumes[name]) + arg[len(path) :]
        return arg

    # The ConfigMap's parameters for this cluster: the lab's, with no kubeconfig anywhere.
    pod_params = json.loads(json.dumps(data))
    pod_params["kubernetes"] = {"required": True}
    pod_params["outputs"] = {"dir": str(volumes["outputs"])}
    params_arg = container["command"][container["command"].index("--params") + 1]
    Path(local(params_arg)).write_text(yaml.safe_dump(pod_params))

    cert, key = self_signed(tmp / "tls")
    sa = tmp / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    shutil.copy(cert, sa / "ca.crt")
    (sa / "namespace").write_text(job["metadata"].get("namespace", "eks-mirror-runbook"))
    command = [local(a) for a in container["command"]]
    command[0] = str(REPO / ".venv" / "bin" / command[0]) if command[0] == "runbook" else command[0]
    home = tmp / "home"
    home.mkdir()
    env = {
        "PATH": f"{REPO / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),  # no ~/.kube/config
        "AWS_ACCESS_KEY_ID": "lab",  # what IRSA or Pod Identity hands the pod
        "AWS_SECRET_ACCESS_KEY": "lab",
        **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
    }
    kube_port = data["lab"]["kube_port"]
    with TLSFront(kube_port, cert, key) as front:
        env |= {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(front.port)}
        script = (
            'mount -t tmpfs tmpfs /run && mkdir -p "$SA" && cp "$SRC"/token "$SRC"/ca.crt "$SRC"/namespace '
            '"$SA"/ && exec "$@"'
        )
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command],
            env={**env, "SA": SA_DIR, "SRC": str(sa)},
            capture_output=True,
            text=True,
            cwd=str(tmp),
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert front.connections > 0, "the run never reached the API server over TLS"

    outputs = volumes["outputs"]
    [record_path] = outputs.glob("*/run.json")
    record = json.loads(record_path.read_text())
    assert [s["name"] for s in record["stages"]] == ["verify"] and record["stages"][0]["status"] == "ok"
    node = record["stages"][0]["results"]["node"]
    assert node["measured"] and not node["failed"], node  # pull pods ran on the lab's nodes
    for path in outputs.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert not Path(SA_DIR, "token").exists()  # the files lived in the mount namespace only
