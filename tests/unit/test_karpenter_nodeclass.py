"""Plan and apply against the Kubernetes API stand-in (in process, real HTTP, the official client): our part
merged into existing node classes of each API version, the user's content kept, a rerun writes nothing."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib.karpenter import bottlerocket, mime, nodeclass, rollout, userdata
from runbook_lib.karpenter import nodes as stage
from runbook_lib.kube import api_client
from runbook_lib.plan import StageFailed, apply_and_confirm
from tests.support.karpenter import make_params

USER_NODECONFIG_MIME = (
    'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="USER"\n\n'
    "--USER\nContent-Type: application/node.eks.aws\n\n"
    "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: 42\n"
    "--USER--\n"
)
DISCOVERY = {"karpenter.sh/discovery": "lab"}


def no_secret(ref: str, user: str | None = None) -> str:
    raise AssertionError(ref)


def ec2nodeclass(
    version: str, name: str, user_data: str | None, alias: str = "al2023@v20260714", family: str = "AL2023"
) -> dict:
    spec: dict = {
        "role": "KarpenterNodeRole-lab",
        "subnetSelectorTerms": [{"tags": DISCOVERY}],
        "securityGroupSelectorTerms": [{"tags": DISCOVERY}],
    }
    if version == "v1":
        spec["amiSelectorTerms"] = [{"alias": alias}]
    else:
        spec["amiFamily"] = family
    if user_data is not None:
        spec["userData"] = user_data
    return {
        "apiVersion": f"karpenter.k8s.aws/{version}",
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def awsnodetemplate(name: str, user_data: str | None) -> dict:
    spec = {"subnetSelector": DISCOVERY, "securityGroupSelector": DISCOVERY}
    if user_data is not None:
        spec["userData"] = user_data
    return {
        "apiVersion": "karpenter.k8s.aws/v1alpha1",
        "kind": "AWSNodeTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }


def nodepool(name: str, node_class: str) -> dict:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.k8s.aws",
                        "kind": "EC2NodeClass",
                        "name": node_class,
                    },
                    "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
                }
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": "1m",
                "budgets": [{"nodes": "2", "reasons": ["Drifted"]}],
            },
        },
    }


def params_for(kubeconfig: Path, **karpenter):
    params = make_params(**karpenter)
    params.kubernetes.kubeconfig = str(kubeconfig)
    return params


def writes(kube: KubeStandIn) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def run(params, apply: bool, api=None):
    api = api or api_client(params)
    rendered = stage.render(params, no_secret)
    sp = stage.build_plan(params, api, apply, rendered, no_secret)
    return api, rendered, sp


@pytest.mark.parametrize(
    ("api_version", "existing"),
    [
        ("v1", USER_NODECONFIG_MIME),
        ("v1beta1", "#!/bin/bash\necho user-bare-script\n"),
        ("v1", None),
    ],
)
def test_apply_merges_into_an_existing_ec2nodeclass_and_rerun_writes_nothing(
    kube, kubeconfig, api_version, existing
) -> None:
    kube.put(ec2nodeclass(api_version, "default", existing))
    params = params_for(kubeconfig, api_version=api_version)
    api, rendered, sp = run(params, apply=False)
    assert [c.action for c in sp.plan.changes] == ["update"] and writes(kube) == []  # plan mode only reads
    assert "+#!/bin/bash" in sp.diffs() and sp.states[0].row()["status"] == "update"

    api, rendered, sp = run(params, apply=True, api=api)
    records: dict = {}
    apply_and_confirm(sp.plan, lambda: run(params, False, api)[2].plan, lambda k, v: records.setdefault(k, v))
    assert records["results"]["applied"] == ["update EC2NodeClass default"]
    stored = kube.get(f"karpenter.k8s.aws/{api_version}", "EC2NodeClass", "default")
    user_data = stored["spec"]["userData"]
    assert userdata.managed_script(user_data) == rendered.generated.payload
    users = [p for p in userdata.parts(user_data) if not p["ours"]]
    if existing is None:
        assert users == []
    elif mime.is_mime(existing):
        assert [(p["content_type"], p["body"]) for p in users] == [
            (p["content_type"], p["body"]) for p in userdata.parts(existing)
        ]
        assert user_data.endswith(existing.split("\n\n", 1)[1])  # the user's parts, byte for byte
    else:
        assert [p["body"] for p in users] == [existing]

    kube.clear_requests()
    _, _, again = run(params, apply=True, api=api)
    assert [c.action for c in again.plan.changes] == ["unchanged"]
    again.plan.apply()
    assert writes(kube) == []


def test_awsnodetemplate_v1alpha1(kube, kubeconfig) -> None:
    kube.put(awsnodetemplate("default", "#!/bin/bash\necho seed\n"))
    params = params_for(kubeconfig, api_version="v1alpha1", version="0.31.5", ami_family="AL2")
    api, rendered, sp = run(params, apply=True)
    sp.plan.apply()
    stored = kube.get("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate", "default")
    assert [p["body"] for p in userdata.parts(stored["spec"]["userData"])] == [
        rendered.generated.payload,
        "#!/bin/bash\necho seed\n",
    ]
    assert [c.action for c in run(params, apply=False, api=api)[2].plan.changes] == ["unchanged"]


def test_bottlerocket_node_class(kube, kubeconfig) -> None:
    user = "[settings.kubernetes]\nmax-pods = 58  # mine\n"
    kube.put(ec2nodeclass("v1", "br", user, alias="bottlerocket@v1.20.4"))
    params = params_for(
        kubeconfig, ami_family="Bottlerocket", node_classes=["br"], bottlerocket_version="1.20.4"
    )
    api, rendered, sp = run(params, apply=True)
    sp.plan.apply()
    stored = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "br")["spec"]["userData"]
    assert stored.startswith(user) and bottlerocket.managed_block(stored) == rendered.generated.payload
    assert [c.action for c in run(params, apply=False, api=api)[2].plan.changes] == ["unchanged"]


def test_missing_class_and_family_mismatch_block_the_stage(kube, kubeconfig) -> None:
    kube.put(ec2nodeclass("v1", "al2box", None, alias="al2@v20251209"))
    params = params_for(kubeconfig, node_classes=["absent", "al2box"])  # parameters say AL2023
    api, rendered, sp = run(params, apply=True)
    assert sp.plan.changes == []
    rows = {r["node class"]: r for r in sp.table().to_dict("records")}
    assert rows["absent"]["status"] == "missing" and "not found" in rows["absent"]["notes"]
    assert rows["al2box"]["status"] == "blocked" and "amiFamily AL2" in rows["al2box"]["notes"]
    records: dict = {}
    with pytest.raises(StageFailed, match="absent"):
        stage.require_ready(sp, lambda k, v: records.setdefault(k, v))
    assert records["failure"]["step"] == "node classes"


def test_user_mime_that_conflicts_blocks_only_that_class(kube, kubeconfig) -> None:
    broken = "MIME-Version: 1.0\nContent-Type: multipart/mixed\n\nno boundary\n"
    kube.put(ec2nodeclass("v1", "default", broken))
    api, rendered, sp = run(params_for(kubeconfig), apply=True)
    assert sp.states[0].problems and "boundary" in sp.states[0].problems[0]


def test_concurrent_edit_between_plan_and_apply_is_not_overwritten(kube, kubeconfig) -> None:
    kube.put(ec2nodeclass("v1", "default", "#!/bin/bash\necho one\n"))
    params = params_for(kubeconfig)
    api, rendered, sp = run(params, apply=True)
    kube.put(ec2nodeclass("v1", "default", "#!/bin/bash\necho someone-else\n"))
    with pytest.raises(StageFailed, match="update EC2NodeClass default failed"):
        sp.plan.apply()
    stored = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
    assert stored == "#!/bin/bash\necho someone-else\n"


def test_force_roll_bumps_the_nodepool_template_annotation_once(kube, kubeconfig) -> None:
    kube.put(ec2nodeclass("v1", "default", None))
    kube.put(nodepool("default", "default"))
    params = params_for(kubeconfig, force_roll="2026-11-28")
    api, rendered, sp = run(params, apply=True)
    assert [c.label for c in sp.plan.pending] == ["update EC2NodeClass default", "update NodePool default"]
    assert sp.rolled_pools == ["default"]
    sp.plan.apply()
    pool = kube.get("karpenter.sh/v1", "NodePool", "default")
    assert pool["spec"]["template"]["metadata"]["annotations"] == {
        rollout.FORCE_ROLL_ANNOTATION: "2026-11-28"
    }
    assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "2", "reasons": ["Drifted"]}]  # untouched
    assert run(params, apply=False, api=api)[2].plan.pending == []
    token = rollout.force_roll_token(params_for(kubeconfig, force_roll=True), ["a"])
    assert (
        token
        == rollout.force_roll_token(params_for(kubeconfig, force_roll=True), ["a"])
        != rollout.force_roll_token(params_for(kubeconfig, force_roll=True), ["b"])
    )


def test_rollback_puts_the_previous_user_data_back(kube, kubeconfig, tmp_path) -> None:
    kube.put(ec2nodeclass("v1", "default", USER_NODECONFIG_MIME))
    params = params_for(kubeconfig)
    api, rendered, sp = run(params, apply=True)
    files = stage.write_run_files(tmp_path / "run", params, sp, rendered)
    assert {p.name for p in files} == {
        "karpenter-example-v1.yaml",
        "karpenter-userData-default-before.txt",
        "karpenter-userData-default-after.txt",
    }
    sp.plan.apply()
    before = (tmp_path / "run" / "karpenter-userData-default-before.txt").read_text()
    assert before == USER_NODECONFIG_MIME
    change = nodeclass.rollback_change(params, api, "default", before, apply=True)
    assert change.action == "update"
    assert (
        kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
        == USER_NODECONFIG_MIME
    )


def test_run_files_mask_a_static_credential(kube, kubeconfig, tmp_path, monkeypatch) -> None:
    from runbook_lib.secrets import REDACTOR, resolve

    kube.put(ec2nodeclass("v1", "default", None))
    params = params_for(kubeconfig, credential_mode="static-header")
    params.security.mode, params.security.pull_password = "authenticated", "env:K4_PULL_PASSWORD"
    monkeypatch.setenv("K4_PULL_PASSWORD", "static-pull-pw-9")
    encoded = base64.b64encode(b"docker-pull:static-pull-pw-9").decode()
    try:
        api = api_client(params)
        rendered = stage.render(params, lambda ref, user=None: resolve(ref, None, user))
        sp = stage.build_plan(params, api, False, rendered, no_secret)
        assert f"Basic {encoded}" in sp.states[0].desired  # what the node class gets
        for path in stage.write_run_files(tmp_path / "run", params, sp, rendered):
            text = path.read_text()
            assert "static-pull-pw-9" not in text and encoded not in text  # what the run folder keeps
        assert "Authorization" in (tmp_path / "run" / "karpenter-userData-default-after.txt").read_text()
    finally:
        REDACTOR.clear()


def test_a_cluster_without_karpenter_crds(tmp_path) -> None:
    with KubeStandIn(crds="none") as bare:
        params = params_for(write_kubeconfig(tmp_path / "kc", bare.url))
        api, rendered, sp = run(params, apply=False)
        assert sp.states[0].row()["status"] == "missing" and sp.plan.changes == []
        assert rollout.list_pools(params, api) == []
        base = rollout.Baseline(started=rollout._now())
        assert rollout.snapshot(params, api, base)[0].total == 0


def test_secrets_manager_mode_plans_the_node_secret(kube, kubeconfig, monkeypatch) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from runbook_lib.plan import MASK
    from runbook_lib.secrets import REDACTOR, resolve

    kube.put(ec2nodeclass("v1", "default", None))
    params = params_for(kubeconfig, credential_mode="secrets-manager", credentials_secret_id="lab/node-pull")
    params.security.mode, params.security.pull_password = "authenticated", "env:K4_PULL_PASSWORD"
    monkeypatch.setenv("K4_PULL_PASSWORD", "first-pw-123")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        sm = boto3.client(
            "secretsmanager",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            endpoint_url=f"http://127.0.0.1:{moto._server.server_port}",
        )
        api = api_client(params)

        def plan(apply: bool):
            rendered = stage.render(params, no_secret)  # the script holds only the secret id
            assert "first-pw" not in rendered.new_class_user_data
            return stage.build_plan(
                params, api, apply, rendered, lambda ref, user=None: resolve(ref, None, user), sm
            )

        sp = plan(True)
        assert [c.label for c in sp.plan.pending] == [
            "create node secret lab/node-pull",
            "update EC2NodeClass default",
        ]
        assert sp.plan.records()[0]["diff"] == {"value": [None, MASK]}
        sp.plan.apply()
        assert sm.get_secret_value(SecretId="lab/node-pull")["SecretString"] == "docker-pull:first-pw-123"
        assert plan(False).plan.pending == []
        monkeypatch.setenv(
            "K4_PULL_PASSWORD", "rotated-pw-456"
        )  # rotation: the secret changes, userData does not
        again = plan(True)
        assert [c.label for c in again.plan.pending] == ["update node secret lab/node-pull"]
        assert again.plan.records()[0]["diff"] == {"value": [MASK, MASK]}
        again.plan.apply()
        assert sm.get_secret_value(SecretId="lab/node-pull")["SecretString"] == "docker-pull:rotated-pw-456"
    finally:
        moto.stop()
        REDACTOR.clear()
