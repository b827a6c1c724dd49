"""notebooks/04_karpenter.ipynb through the runner (`runbook run karpenter`), against the Kubernetes stand-in.

No Karpenter runs here (the lab's simulation is another component), so no NodeClaims exist: the rollout is
done at once. What is proven: the notebook runs end to end in plan and apply mode, the apply merges our part
into an EC2NodeClass that already has the user's NodeConfig, the records (changes, checks, results) reach
run.json, the run folder gets the example manifest and the before/after userData, and a rerun writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib.karpenter import userdata
from tests.support.karpenter import LAB
from tests.unit.test_karpenter_nodeclass import USER_NODECONFIG_MIME, ec2nodeclass, nodepool


def last_run(outputs: Path) -> tuple[dict, Path]:
    path = sorted(outputs.glob("*/run.json"))[-1]
    return json.loads(path.read_text()), path.parent


def test_runbook_run_karpenter_plan_apply_rerun(tmp_path, capsys) -> None:
    from runbook_lib.cli import main

    kube = KubeStandIn().start()
    try:
        kube.put(ec2nodeclass("v1", "default", USER_NODECONFIG_MIME))
        kube.put(nodepool("default", "default"))
        data = yaml.safe_load(yaml.safe_dump(LAB))
        data["kubernetes"] = {"kubeconfig": str(write_kubeconfig(tmp_path / "kubeconfig", kube.url))}
        data["outputs"] = {"dir": str(tmp_path / "outputs")}
        data["nexus"]["initial_password_file"] = None
        data["karpenter"].update(rollout_timeout_s=60, rollout_poll_s=1)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(data))
        outputs = tmp_path / "outputs"

        assert main(["run", "karpenter", "--params", str(params_file)]) == 0, capsys.readouterr()
        run, _ = last_run(outputs)
        stage = run["stages"][0]
        assert stage["status"] == "ok" and stage["changes"]["update"] == 1
        assert (
            kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
            == USER_NODECONFIG_MIME
        )

        assert main(["run", "karpenter", "--params", str(params_file), "--apply"]) == 0, capsys.readouterr()
        run, run_dir = last_run(outputs)
        stage = run["stages"][0]
        assert stage["status"] == "ok" and stage["changes"]["update"] == 1
        assert stage["checks"] and all(c["ok"] for c in stage["checks"])
        results = stage["results"]["karpenter"]
        assert results["node_classes"]["default"]["changed"] is True
        assert results["rollout"] == [
            {
                "node_class": "default",
                "new": 0,
                "new_ready": 0,
                "old": 0,
                "drifted": 0,
                "terminating": 0,
                "untracked": 0,
                "done": True,
            }
        ]
        stored = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
        assert userdata.managed_script(stored) is not None
        assert userdata.remove(stored) == USER_NODECONFIG_MIME
        assert (run_dir / "karpenter-userData-default-before.txt").read_text() == USER_NODECONFIG_MIME
        assert (run_dir / "karpenter-userData-default-after.txt").read_text() == stored
        assert (run_dir / "karpenter-example-v1.yaml").exists()

        kube.clear_requests()
        assert main(["run", "karpenter", "--params", str(params_file), "--apply"]) == 0, capsys.readouterr()
        run, _ = last_run(outputs)
        assert run["stages"][0]["changes"]["update"] == 0 and run["stages"][0]["changes"]["unchanged"] == 1
        assert [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")] == []
    finally:
        kube.stop()
