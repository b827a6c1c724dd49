"""Faults on the way to Nexus and to the Kubernetes API (issue #11 part 3): the stages retry what is safe,
say what was and was not applied when they give up, and once the faults stop a rerun converges to the
state of a clean run — compared on the stand-ins' state, not on exit codes.

The stand-ins draw faults from a seeded generator (runbook_lab.faults), so each run meets the same ones.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from runbook_lab.faults import CONTROL_PATH
from runbook_lib.karpenter import userdata
from runbook_lib.kube import api_client
from runbook_lib.nexus.client import NexusError
from runbook_lib.plan import StageFailed
from runbook_lib.stages import karpenter
from tests.support.karpenter import make_params
from tests.support.labkit import WRITES, Lab, labs_fixture, upstream_fixture
from tests.support.recording import RecordingContext

upstream = pytest.fixture(scope="module")(upstream_fixture)

# 503 before processing, resets after processing (the write happened, the answer is lost), read
# timeouts, and latency on top: every kind a Nexus behind a load balancer shows on a bad day.
NEXUS_FAULTS = {
    "error_rate": 0.15,
    "reset_rate": 0.1,
    "reset_after": True,
    "timeout_rate": 0.05,
    "timeout_s": 1.5,
    "latency_s": 0.005,
    "seed": 11,
}


def set_faults(url: str, **settings: Any) -> None:
    assert httpx.put(url + CONTROL_PATH, json=settings, timeout=5).status_code == 200


def injected(url: str) -> dict[str, int]:
    return httpx.get(url + CONTROL_PATH, timeout=5).json()["injected"]


def clear_faults(url: str) -> None:
    assert httpx.delete(url + CONTROL_PATH, timeout=5).status_code == 200


@pytest.fixture
def labs(tmp_path, upstream, monkeypatch):
    made = labs_fixture(tmp_path, upstream, monkeypatch)
    make = next(made)

    def faulty(name: str) -> Lab:
        lab = make("authenticated", name)
        lab.params.nexus.timeout_s = 0.5  # a held answer costs half a second per attempt, not 15
        return lab

    yield faulty
    next(made, None)


def nexus_state(lab: Lab) -> dict[str, Any]:
    """The emulator's configuration, with what differs between any two labs replaced: salted password
    hashes (each checked by logging in instead) and the connector ports (by the upstream they serve)."""
    with lab.emulator.state.read() as data:
        doc = json.loads(json.dumps(data))
    ports = {u.connector_port: u.registry for u in lab.params.upstreams}
    for user in doc["users"].values():
        user.pop("password", None)
    for repo in doc["repositories"].values():
        docker = repo.get("docker") or {}
        if docker.get("httpPort") is not None:
            docker["httpPort"] = ports[docker["httpPort"]]
    doc.pop("components", None)
    return doc


def test_nexus_stages_under_faults_converge_to_a_clean_run(labs) -> None:
    clean = labs("clean")
    clean.run_stages(apply=True)
    want = nexus_state(clean)
    clean.emulator.stop()

    lab = labs("faulty")
    set_faults(lab.emulator.url, **NEXUS_FAULTS)
    gave_up: list[dict[str, Any]] = []
    for _ in range(10):
        try:
            lab.run_stages(apply=True)
            break
        except StageFailed as err:  # a write failed: the record says what was and was not applied
            record = err.failure_record()
            assert record["step"] and set(record["applied"]).isdisjoint(record["not_applied"])
            assert record["step"] in record["not_applied"] + record.get("outcome_unknown", [])
            gave_up.append(record)
        except NexusError as err:  # a read still failing after its retries: nothing was written then
            gave_up.append({"read": str(err)})
    seen = injected(lab.emulator.url)
    assert seen["error"] and seen["reset"], seen  # the run met the faults it was meant to meet

    clear_faults(lab.emulator.url)
    lab.run_stages(apply=True)
    repos, sec = lab.run_stages(apply=True)
    assert repos["create"] == repos["update"] == sec["create"] == sec["update"] == 0
    assert nexus_state(lab) == want
    assert lab.secret("env:TEST_NEXUS_ADMIN") == "managed-admin-secret"
    assert httpx.get(
        lab.emulator.url + "/service/rest/v1/status/check", auth=("admin", "managed-admin-secret")
    ).is_success

    # POST is never retried: whatever the faults did, each resource was created by one POST at most.
    posts = Counter(
        (r["path"], (r.get("body") or {}).get("name") if isinstance(r.get("body"), dict) else None)
        for r in lab.requests()
        if r["method"] == "POST"
    )
    assert all(n == 1 for n in posts.values()), posts
    assert [r for r in lab.requests() if r["method"] in WRITES]


NODECONFIG = (
    'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="USER"\n\n'
    "--USER\nContent-Type: application/node.eks.aws\n\n"
    "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: 42\n"
    "--USER--\n"
)


def node_class() -> dict[str, Any]:
    tags = {"karpenter.sh/discovery": "lab"}
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "default"},
        "spec": {
            "role": "KarpenterNodeRole-lab",
            "subnetSelectorTerms": [{"tags": tags}],
            "securityGroupSelectorTerms": [{"tags": tags}],
            "amiSelectorTerms": [{"alias": "al2023@v20260714"}],
            "userData": NODECONFIG,
        },
    }


def no_secret(ref: str, user: str | None = None) -> str:
    raise AssertionError(ref)


def karpenter_ctx(kubeconfig, tmp_path, apply: bool) -> RecordingContext:
    params = make_params()
    params.kubernetes.kubeconfig = str(kubeconfig)
    params.karpenter.force_roll = False
    return RecordingContext(apply, params, tmp_path, api_client(params), no_secret)


def test_karpenter_stage_retries_reads_and_reports_a_refused_write(kube, kubeconfig, tmp_path) -> None:
    kube.put(node_class())
    ctx = karpenter_ctx(kubeconfig, tmp_path, apply=True)

    # Unavailable answers to reads are retried with back-off: the plan is built as without faults.
    set_faults(kube.url, error_rate=0.4, methods=["GET"], seed=1)  # the first read meets a 503
    state = karpenter.read(ctx)
    plan = karpenter.plan(ctx, state)
    assert [c.label for c in plan.pending] == ["update EC2NodeClass default"]
    assert injected(kube.url)["error"] > 0

    # A write answered 409 is not retried: the stage fails and says it applied nothing.
    set_faults(kube.url, conflict_rate=1)
    with pytest.raises(StageFailed, match="update EC2NodeClass default failed") as err:
        karpenter.apply(ctx, state, plan)
    assert err.value.applied == [] and err.value.not_applied == ["update EC2NodeClass default"]
    assert ctx.records["failure"]["not_applied"] == ["update EC2NodeClass default"]
    stored = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
    assert stored == NODECONFIG  # nothing half-written

    # Faults gone: the rerun converges, and a further rerun writes nothing.
    clear_faults(kube.url)
    ctx = karpenter_ctx(kubeconfig, tmp_path, apply=True)
    state = karpenter.read(ctx)
    plan = karpenter.plan(ctx, state)
    assert karpenter.apply(ctx, state, plan).applied == ["update EC2NodeClass default"]
    stored = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
    assert userdata.managed_script(stored) == state.rendered.generated.payload
    assert "maxPods: 42" in stored or "maxPods: 42" in base64.b64decode(stored).decode(errors="replace")
    again = karpenter.plan(ctx, karpenter.read(ctx))
    assert again.pending == []
