"""The rollout watcher against the Kubernetes API stand-in, with NodeClaims and Nodes made by hand.

The test plays Karpenter's part as Karpenter's docs describe it (concepts/disruption.md): it re-stamps the
EC2NodeClass hash annotation after the spec changed, marks old NodeClaims Drifted, terminates them (a
finalizer keeps them visible while "draining") and launches replacements stamped with the new hash. The
watcher's `sleep` is the hook that advances this script one step per poll, and its clock is a counter, so
nothing depends on wall time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib.karpenter import nodes as stage
from runbook_lib.karpenter import rollout
from runbook_lib.kube import api_client
from runbook_lib.plan import StageFailed
from tests.support.karpenter import make_params
from tests.unit.test_karpenter_nodeclass import ec2nodeclass, nodepool

HASH_KEY = "karpenter.k8s.aws/ec2nodeclass-hash"
POOL_HASH_KEY = "karpenter.sh/nodepool-hash"
NOW = "2026-11-28T10:00:00Z"


@pytest.fixture
def params(kube: KubeStandIn, tmp_path: Path):
    p = make_params(rollout_timeout_s=100, rollout_poll_s=1)
    p.kubernetes.kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", kube.url))
    return p


def condition(kind: str, status: str = "True") -> dict:
    return {"type": kind, "status": status, "lastTransitionTime": NOW, "reason": kind, "message": ""}


def claim(
    name: str,
    class_hash: str | None,
    pool: str = "default",
    node_class: str = "default",
    ready: bool = True,
    drifted: bool = False,
    pool_hash: str | None = None,
    finalizer: bool = True,
) -> dict:
    annotations = {HASH_KEY: class_hash} if class_hash else {}
    if pool_hash:
        annotations[POOL_HASH_KEY] = pool_hash
    conditions = [condition("Ready", "True" if ready else "False")] + (
        [condition("Drifted")] if drifted else []
    )
    meta = {"name": name, "labels": {"karpenter.sh/nodepool": pool}, "annotations": annotations}
    if finalizer:
        meta["finalizers"] = ["karpenter.sh/termination"]
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": meta,
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
            "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
        },
        "status": {"nodeName": f"node-{name}", "conditions": conditions},
    }


def node(name: str, ready: bool = True, pool: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": pool}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def stamp_class(kube: KubeStandIn, value: str, name: str = "default") -> None:
    obj = kube.get("karpenter.k8s.aws/v1", "EC2NodeClass", name)
    obj["metadata"].setdefault("annotations", {})[HASH_KEY] = value
    kube.put(obj)


def terminate(kube: KubeStandIn, api, name: str) -> None:
    """Karpenter deleting a NodeClaim: deletionTimestamp first (finalizer), gone after 'draining'."""
    kube.delete("karpenter.sh/v1", "NodeClaim", name)


def finish(api, name: str) -> None:
    client.CustomObjectsApi(api).patch_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", name, {"metadata": {"finalizers": None}}
    )


def seed_cluster(kube: KubeStandIn, n: int = 3, class_hash: str = "h1") -> None:
    kube.put(ec2nodeclass("v1", "default", None))
    stamp_class(kube, class_hash)
    kube.put(nodepool("default", "default"))
    for i in range(n):
        kube.put(claim(f"old-{i}", class_hash))
        kube.put(node(f"node-old-{i}"))


def plan_and_apply(params, api):
    rendered = stage.render(params, lambda ref, user=None: "x")
    sp = stage.build_plan(params, api, True, rendered, lambda ref, user=None: "x")
    base = stage.start_rollout(params, api, sp)
    sp.plan.apply()
    return sp, base


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_watch_follows_a_drift_rollout_to_the_end(kube, params) -> None:
    seed_cluster(kube)
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    assert base.changed_classes == {"default"} and base.class_hashes == {"default": "h1"}
    first = rollout.snapshot(params, api, base)[0]
    assert first.waiting_for_karpenter and not first.done  # Karpenter has not hashed the new spec yet

    clock, lines = Clock(), []
    steps = [
        lambda: stamp_class(kube, "h2"),  # Karpenter hashes the new spec: every claim is now old
        lambda: [kube.put(claim(f"old-{i}", "h1", drifted=True)) for i in range(3)],
        # budget nodes: "2": two replacements launched (not Ready yet), two old ones terminating
        lambda: [
            kube.put(claim("new-0", "h2", ready=False)),
            kube.put(claim("new-1", "h2", ready=False)),
            terminate(kube, api, "old-0"),
            terminate(kube, api, "old-1"),
        ],
        lambda: [
            kube.put(claim("new-0", "h2")),
            kube.put(claim("new-1", "h2")),
            finish(api, "old-0"),
            finish(api, "old-1"),
        ],
        lambda: [kube.put(claim("new-2", "h2")), terminate(kube, api, "old-2")],
        lambda: finish(api, "old-2"),
    ]

    def sleep(seconds: float) -> None:
        clock.t += seconds
        steps.pop(0)()

    progress = rollout.watch(params, api, base, out=lines.append, sleep=sleep, clock=clock)
    assert steps == [] and all(p.done for p in progress)
    assert progress[0].record() == {
        "node_class": "default",
        "new": 3,
        "new_ready": 3,
        "old": 0,
        "drifted": 0,
        "terminating": 0,
        "untracked": 0,
        "done": True,
    }
    text = "\n".join(lines)
    assert "waiting for Karpenter to hash the new node class" in text
    assert "0/3 new (0 ready), 3 old (3 marked Drifted), 0 terminating" in text
    assert "2/5 new (0 ready), 1 old (1 marked Drifted), 2 terminating" in text  # 5 claims exist now
    assert "3/3 new (3 ready), 0 old" in text and "[####################]" in lines[-1]


def test_watch_times_out_with_the_counts(kube, params) -> None:
    seed_cluster(kube, n=2)
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    stamp_class(kube, "h2")
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.t += seconds

    with pytest.raises(StageFailed, match="rollout not finished after 5 s: default: 2 old") as info:
        rollout.watch(
            params, api, base, timeout_s=5, poll_s=1, out=lambda line: None, sleep=sleep, clock=clock
        )
    assert info.value.step == "watch rollout" and clock.t == 5


def test_rerun_with_nothing_changed_is_done_when_every_claim_has_the_current_hash(kube, params) -> None:
    seed_cluster(kube, n=2, class_hash="h1")
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    stamp_class(kube, "h2")
    for i in range(2):
        kube.delete("karpenter.sh/v1", "NodeClaim", f"old-{i}")
        finish(api, f"old-{i}")
        kube.put(claim(f"new-{i}", "h2"))
    rendered = stage.render(params, lambda ref, user=None: "x")
    again = stage.build_plan(params, api, True, rendered, lambda ref, user=None: "x")
    assert again.plan.pending == []
    base2 = stage.start_rollout(params, api, again)
    assert base2.changed_classes == set()
    assert stage.run_rollout(params, api, base2, apply=True, out=lambda line: None)[0].done
    # a claim left over from an earlier, unfinished roll is still old on the rerun
    kube.put(claim("straggler", "h1"))
    assert rollout.snapshot(params, api, base2)[0].old == ["straggler"]


def test_nodeclaims_of_other_classes_are_not_counted(kube, params) -> None:
    seed_cluster(kube, n=1)
    kube.put(ec2nodeclass("v1", "gpu", None))
    kube.put(claim("gpu-0", "zzz", node_class="gpu"))
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    stamp_class(kube, "h2")
    assert rollout.snapshot(params, api, base)[0].old == ["old-0"]


def test_new_claim_counts_as_ready_through_its_node(kube, params) -> None:
    seed_cluster(kube, n=0)
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    stamp_class(kube, "h2")
    c = claim("new-0", "h2")
    c["status"]["conditions"] = []
    kube.put(c)
    assert not rollout.snapshot(params, api, base)[0].done
    kube.put(node("node-new-0", ready=True))
    assert rollout.snapshot(params, api, base)[0].done


def test_no_nodes_is_done_at_once(kube, params) -> None:
    seed_cluster(kube, n=0)
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    stamp_class(kube, "h2")
    progress = rollout.snapshot(params, api, base)[0]
    assert progress.done and "no nodes" in progress.line()


def test_forced_roll_is_tracked_by_the_nodepool_hash(kube, params) -> None:
    seed_cluster(kube, n=1)
    pool = kube.get("karpenter.sh/v1", "NodePool", "default")
    pool["metadata"]["annotations"] = {POOL_HASH_KEY: "p1"}
    kube.put(pool)
    kube.put(claim("old-0", "h1", pool_hash="p1"))
    params.karpenter.force_roll = "roll-1"
    api = api_client(params)
    sp, base = plan_and_apply(params, api)
    assert base.rolled_pools == {"default"}
    stamp_class(kube, "h2")
    kube.put(claim("old-0", "h2", pool_hash="p1"))  # class hash current, but launched from the old pool spec
    pool = kube.get("karpenter.sh/v1", "NodePool", "default")
    pool["metadata"]["annotations"][POOL_HASH_KEY] = "p2"
    kube.put(pool)
    assert rollout.snapshot(params, api, base)[0].old == ["old-0"]
    kube.put(claim("old-0", "h2", pool_hash="p2"))
    assert rollout.snapshot(params, api, base)[0].done


def test_creation_time_decides_when_karpenter_stamps_no_hashes() -> None:
    started = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
    base = rollout.Baseline(started=started, changed_classes={"default"})
    pk = rollout.POOLS["v1"]

    def at(delta: int) -> dict:
        ts = (started + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"metadata": {"name": "c", "creationTimestamp": ts}}

    def is_new(obj: dict, changed: bool = True) -> bool | None:
        b = base if changed else rollout.Baseline(started=started)
        return rollout._is_new(obj, {}, None, None, HASH_KEY, False, changed, b, None, None, pk)

    assert is_new(at(-60)) is False and is_new(at(0)) is True and is_new(at(30)) is True
    assert (
        is_new(at(-60), changed=False) is None
    )  # nothing changed and no hashes: cannot tell, not waited for


def test_drift_modes_per_version(kube, params) -> None:
    assert rollout.drift_mode(make_params(api_version="v1")).on is True
    assert (
        rollout.drift_mode(make_params(api_version="v1beta1", version="0.32.10", ami_family="AL2")).on
        is False
    )
    assert rollout.drift_mode(make_params(api_version="v1beta1", version="0.36.1")).on is True
    assert rollout.drift_mode(make_params(api_version="v1beta1", ami_family="AL2")).on is None
    v031 = make_params(api_version="v1alpha1", version="0.31.5", ami_family="AL2")
    v031.kubernetes.kubeconfig = params.kubernetes.kubeconfig
    api = api_client(v031)
    assert rollout.drift_mode(v031, api).on is None  # no settings ConfigMap readable
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "karpenter"}})
    core.create_namespaced_config_map(
        "karpenter",
        {"metadata": {"name": "karpenter-global-settings"}, "data": {"featureGates.driftEnabled": "false"}},
    )
    assert rollout.drift_mode(v031, api).on is False
    core.patch_namespaced_config_map(
        "karpenter-global-settings", "karpenter", {"data": {"featureGates.driftEnabled": "true"}}
    )
    assert rollout.drift_mode(v031, api).on is True


def test_drift_off_with_old_nodes_fails_fast(kube, params) -> None:
    # v0.31 stamps the template and each Machine with karpenter.k8s.aws/nodetemplate-hash
    # (aws/karpenter-provider-aws v0.31.5 pkg/apis/v1alpha1)
    template_hash = {"karpenter.k8s.aws/nodetemplate-hash": "t1"}
    kube.put(
        {
            "apiVersion": "karpenter.k8s.aws/v1alpha1",
            "kind": "AWSNodeTemplate",
            "metadata": {"name": "default", "annotations": template_hash},
            "spec": {"subnetSelector": {"a": "b"}, "securityGroupSelector": {"a": "b"}},
        }
    )
    kube.put(
        {
            "apiVersion": "karpenter.sh/v1alpha5",
            "kind": "Provisioner",
            "metadata": {"name": "default"},
            "spec": {"providerRef": {"name": "default"}},
        }
    )
    kube.put(
        {
            "apiVersion": "karpenter.sh/v1alpha5",
            "kind": "Machine",
            "metadata": {
                "name": "m-0",
                "labels": {"karpenter.sh/provisioner-name": "default"},
                "annotations": template_hash,
            },
            "spec": {"machineTemplateRef": {"name": "default"}, "requirements": []},
        }
    )
    p = make_params(api_version="v1alpha1", version="0.31.5", ami_family="AL2")
    p.kubernetes.kubeconfig = params.kubernetes.kubeconfig
    api = api_client(p)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "karpenter"}})
    core.create_namespaced_config_map(
        "karpenter",
        {"metadata": {"name": "karpenter-global-settings"}, "data": {"featureGates.driftEnabled": "false"}},
    )
    sp, base = plan_and_apply(p, api)
    with pytest.raises(StageFailed, match="drift is off"):
        stage.run_rollout(p, api, base, apply=True, out=lambda line: None)


def test_budget_rows(kube, params) -> None:
    kube.put(ec2nodeclass("v1", "default", None))
    kube.put(nodepool("default", "default"))
    no_budget = nodepool("spot", "default")
    del no_budget["spec"]["disruption"]
    kube.put(no_budget)
    blocked = nodepool("frozen", "other")
    blocked["spec"]["disruption"]["budgets"] = [{"nodes": "0"}, {"nodes": "5", "reasons": ["Empty"]}]
    kube.put(blocked)
    api = api_client(params)
    rows = rollout.budget_rows(rollout.list_pools(params, api), params)
    assert {(r["pool"], r["budget"], r["applies to drift"]) for r in rows} == {
        ("default", "nodes: 2", "yes"),
        ("spot", "nodes: 10% (default)", "yes"),
        ("frozen", "nodes: 0", "BLOCKS drift while active"),
        ("frozen", "nodes: 5", "no (reasons: Empty)"),
    }
    old = make_params(api_version="v1beta1", version="0.33.1", ami_family="AL2")
    assert (
        rollout.budget_rows([nodepool("x", "default")], old)[0]["budget"] == "one node at a time (built in)"
    )
    assert [
        p["metadata"]["name"] for p in rollout.pools_of(rollout.list_pools(params, api), "v1", "default")
    ] == ["default", "spot"]
