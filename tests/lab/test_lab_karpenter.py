"""Karpenter simulation (runbook_lab.karpenter): hashes, budgets, userData merge, and the controller with real
lab nodes against an in-process Kubernetes API stand-in and moto.

The controller tests watch the stand-in's change hook to check the pacing invariants of a budgeted drift
replacement as they happen: an old NodeClaim is deleted only while the pool still has its full count of
initialized nodes (the replacement was pre-spun and is ready), and never more NodeClaims are being deleted
at once than the budget allows.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runbook_lab import karpenter as k
from runbook_lab.processes import unused_port
from tests.support.lab_node import moto_fixture, pids_alive, registries_fixture, short_dir, wait_for

REPO = Path(__file__).resolve().parents[2]


# -- hashes --------------------------------------------------------------------------------------------------
def node_class_spec(**extra: Any) -> dict[str, Any]:
    spec = {
        "role": "KarpenterNodeRole-lab",
        "amiSelectorTerms": [{"alias": "al2023@latest"}],
        "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "lab"}}],
        "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "lab"}}],
        "userData": "#!/bin/bash\necho hi\n",
    }
    spec.update(extra)
    return spec


def test_node_class_hash_follows_user_data_and_ignores_selectors() -> None:
    base = k.nodeclass_hash(node_class_spec())
    assert re.fullmatch(r"\d+", base)
    assert k.nodeclass_hash(node_class_spec()) == base  # deterministic
    assert k.nodeclass_hash(node_class_spec(userData="#!/bin/bash\necho hi \n")) != base  # any byte drifts
    assert k.nodeclass_hash(node_class_spec(role="other")) != base
    assert (
        k.nodeclass_hash(
            node_class_spec(
                subnetSelectorTerms=[{"id": "subnet-1"}], securityGroupSelectorTerms=[{"id": "sg-1"}]
            )
        )
        == base
    )
    # amiFamily is hashed as resolved: an alias al2023 and an explicit AL2023 are the same family
    assert k.nodeclass_hash(node_class_spec(amiFamily="AL2023")) == base
    assert k.nodeclass_hash(node_class_spec(amiSelectorTerms=[{"alias": "al2@latest"}])) != base


def test_node_pool_hash_covers_the_template_but_not_requirements_or_budgets() -> None:
    spec = {
        "template": {
            "metadata": {"annotations": {"a": "1"}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"},
                "requirements": [{"key": "x", "operator": "In", "values": ["1"]}],
                "taints": [{"key": "t1", "effect": "NoSchedule"}, {"key": "t2", "effect": "NoSchedule"}],
            },
        },
        "disruption": {"budgets": [{"nodes": "10%"}]},
    }
    base = k.nodepool_hash(spec)
    changed = json.loads(json.dumps(spec))
    changed["template"]["spec"]["requirements"] = []
    changed["disruption"]["budgets"] = [{"nodes": "0"}]
    changed["template"]["spec"]["taints"].reverse()  # lists hash as sets (SlicesAsSets)
    assert k.nodepool_hash(changed) == base
    changed["template"]["metadata"]["annotations"]["a"] = "2"  # the forced-roll knob
    assert k.nodepool_hash(changed) != base


# -- budgets -------------------------------------------------------------------------------------------------
def pool(*budgets: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"disruption": {"budgets": list(budgets)}}}


@pytest.mark.parametrize(
    ("budgets", "total", "disrupting", "allowed"),
    [
        ([{"nodes": "1"}], 2, 0, 1),
        ([{"nodes": "1"}], 3, 1, 0),  # one in flight uses the budget
        ([{"nodes": "10%"}], 2, 0, 1),  # rounded up
        ([{"nodes": "50%"}], 5, 0, 3),
        ([{"nodes": "0"}], 4, 0, 0),  # blocks
        ([{"nodes": "3"}, {"nodes": "20%"}], 10, 0, 2),  # the minimum applies
        ([{"nodes": "0", "reasons": ["Empty"]}, {"nodes": "2", "reasons": ["Drifted"]}], 5, 0, 2),
        ([{"nodes": "2", "reasons": ["Underutilized"]}], 5, 0, 5000),  # no budget for drift: unbounded
    ],
)
def test_allowed_disruptions(
    budgets: list[dict[str, Any]], total: int, disrupting: int, allowed: int
) -> None:
    assert k.allowed_disruptions(pool(*budgets), total, disrupting) == allowed


def test_no_budgets_is_unbounded() -> None:
    assert k.allowed_disruptions({"spec": {}}, 3, 0) >= 3


# -- userData as Karpenter passes it -------------------------------------------------------------------------
def mime(*parts: tuple[str, str], boundary: str = "B") -> str:
    out = [f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{boundary}"\n']
    for headers, body in parts:
        out.append(f"--{boundary}\n{headers}\n\n{body}")
    return "\n".join(out) + f"\n--{boundary}--\n"


def parts_of(text: str) -> list[tuple[dict[str, str], str]]:
    msg = email.message_from_string(text, policy=email.policy.compat32)
    assert msg.get_boundary() == "//"
    return [(dict(p.items()), p.get_payload()) for p in msg.walk() if not p.is_multipart()]


USER = mime(
    ('Content-Type: text/x-shellscript; charset="us-ascii"\nX-Custom: keep', "#!/bin/bash\necho user\n")
)
LABELS = {"karpenter.sh/nodepool": "default"}


def test_al2023_user_parts_first_then_karpenter_nodeconfig_with_only_content_type() -> None:
    merged = k.karpenter_user_data("AL2023", USER, "lab", "http://api:1", LABELS, [], "29")
    parts = parts_of(merged)
    assert [h["Content-Type"] for h, _ in parts] == [
        'text/x-shellscript; charset="us-ascii"',
        "application/node.eks.aws",
    ]
    assert parts[0][0] == {"Content-Type": 'text/x-shellscript; charset="us-ascii"'}  # other headers dropped
    config = yaml.safe_load(parts[1][1])
    assert config["kind"] == "NodeConfig" and config["spec"]["cluster"]["name"] == "lab"
    assert "--node-labels=karpenter.sh/nodepool=default" in config["spec"]["kubelet"]["flags"]


def test_al2_keeps_part_headers_and_appends_the_bootstrap_part() -> None:
    parts = parts_of(k.karpenter_user_data("AL2", USER, "lab", "http://api:1", LABELS, [], "29"))
    assert parts[0][0]["X-Custom"] == "keep"
    assert "/etc/eks/bootstrap.sh 'lab'" in parts[-1][1] and "--max-pods=29" in parts[-1][1]


def test_bare_script_is_wrapped_and_custom_passes_through() -> None:
    [user, _] = parts_of(
        k.karpenter_user_data("AL2023", "#!/bin/bash\necho x\n", "lab", "u", LABELS, [], "29")
    )
    assert user[0]["Content-Type"].startswith("text/x-shellscript")
    assert k.karpenter_user_data("Custom", "anything\r\n", "lab", "u", LABELS, [], "29") == "anything\n"


def test_bottlerocket_keeps_user_settings_and_sets_kubernetes() -> None:
    user = '[settings.container-registry.mirrors]\n"docker.io" = ["https://m"]\n[other]\nx = 1\n'
    doc = tomllib.loads(k.karpenter_user_data("Bottlerocket", user, "lab", "https://api", LABELS, [], "29"))
    assert doc["settings"]["container-registry"] == {"mirrors": {"docker.io": ["https://m"]}}
    assert doc["settings"]["kubernetes"]["cluster-name"] == "lab"
    assert "other" not in doc  # only [settings] survives


# -- scheduling stand-in -------------------------------------------------------------------------------------
def node(
    name: str, labels: dict[str, str], taints: list[dict[str, str]] | None = None, ready: bool = True
) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_pod_fits_selector_affinity_and_taints() -> None:
    n = node(
        "n1", {"karpenter.sh/nodepool": "a"}, [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]
    )
    plain = {"spec": {"nodeSelector": {"karpenter.sh/nodepool": "a"}}}
    assert not k.pod_fits(plain, n)  # a node being disrupted takes no new pods
    tolerant = {
        "spec": {
            "nodeSelector": {"karpenter.sh/nodepool": "a"},
            "tolerations": [{"key": "karpenter.sh/disrupted", "operator": "Exists"}],
        }
    }
    assert k.pod_fits(tolerant, n)
    free = node("n2", {"karpenter.sh/nodepool": "a"})
    assert k.pod_fits(plain, free)
    assert not k.pod_fits({"spec": {"nodeSelector": {"karpenter.sh/nodepool": "b"}}}, free)
    affinity = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "karpenter.sh/nodepool", "operator": "NotIn", "values": ["a"]}
                                ]
                            }
                        ]
                    }
                }
            }
        }
    }
    assert not k.pod_fits(affinity, free)
    assert not k.pod_fits(plain, node("n3", {"karpenter.sh/nodepool": "a"}, ready=False))


# -- lab wiring ----------------------------------------------------------------------------------------------
def lab_params() -> Any:
    from runbook_lib import params

    return params.load(REPO / "parameters" / "lab.yaml")


def test_every_lab_service_port_is_bridged_and_the_lab_dns_names_the_stand_ins() -> None:
    p = lab_params()
    cluster = k.cluster_from_params(p, "/x/kubeconfig")
    lab = p.lab
    expected = {
        lab.kube_port,
        lab.moto_port,
        lab.ingress_port,
        lab.dockerhub.port,
        lab.dockerhub.token_port,
        *(r.port for r in lab.registries.values()),
        *(u.connector_port for u in p.upstreams if u.connector_port),
    }
    assert expected <= set(cluster.ports)
    docker = p.upstream("docker.io")
    assert cluster.lab_certs["registry-1.docker.io"] == docker.remote_url == cluster.lab_certs["docker.io"]
    assert all(cluster.hosts[name] == "127.0.0.1" for name in ("registry-1.docker.io", *p.resolve))
    assert cluster.node_pools == dict(lab.node_pools)
    assert cluster.userdata_env["AWS_ENDPOINT_URL"] == p.aws.endpoint_url


@pytest.mark.parametrize(("version", "profile"), [("v1", "all"), ("v1beta1", "v1beta1")])
def test_default_cluster_objects_are_valid_for_the_crds(version: str, profile: str) -> None:
    from runbook_lab.kube import KubeStandIn

    sim = k.KarpenterSim(
        None, None, k.LabCluster(node_pools={"default": 2, "gpu": 1}), Path("/nonexistent"), version=version
    )
    node_class, pools = sim.default_objects()
    standin = KubeStandIn(crds=profile)
    standin.put(node_class)  # validated against the CRD schema like an API write
    for p in pools:
        standin.put(p)
    assert sorted(p["metadata"]["name"] for p in standin.list(f"karpenter.sh/{version}", "NodePool")) == [
        "default",
        "gpu",
    ]
    stored = standin.get(f"karpenter.k8s.aws/{version}", "EC2NodeClass", "default")
    assert "cluster-user-data" in stored["spec"]["userData"]


# -- the controller with real lab nodes ----------------------------------------------------------------------
moto = pytest.fixture(scope="module")(moto_fixture)


class Recorder:
    """Replays NodeClaim changes from the stand-in's hook and checks the pacing invariants as they happen."""

    def __init__(self, pool: str = "default") -> None:
        self.pool = pool
        self.claims: dict[str, dict[str, Any]] = {}
        self.drifted: dict[str, str] = {}
        self.deleting_at_once = 0
        self.initialized_when_deleted: list[int] = []
        self.peak_live = 0
        self._seen_deleting: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, event: str, obj: dict[str, Any]) -> None:
        if (
            obj.get("kind") != "NodeClaim"
            or (obj["metadata"].get("labels") or {}).get(k.LABEL_NODEPOOL) != self.pool
        ):
            return
        name = obj["metadata"]["name"]
        with self._lock:
            if event == "DELETED":
                self.claims.pop(name, None)
                return
            self.claims[name] = obj
            drift = k.condition(obj, "Drifted")
            if drift and drift["status"] == "True":
                self.drifted[name] = drift["reason"]
            live = [c for c in self.claims.values() if not c["metadata"].get("deletionTimestamp")]
            self.peak_live = max(self.peak_live, len(live))
            deleting = [c for c in self.claims.values() if c["metadata"].get("deletionTimestamp")]
            self.deleting_at_once = max(self.deleting_at_once, len(deleting))
            if obj["metadata"].get("deletionTimestamp") and name not in self._seen_deleting:
                self._seen_deleting.add(name)
                self.initialized_when_deleted.append(sum(1 for c in live if k.is_true(c, "Initialized")))


@pytest.fixture
def sim(moto: str) -> Iterator[tuple[k.KarpenterSim, Any, Recorder]]:
    from kubernetes import config

    from runbook_lab.kube import KubeStandIn, write_kubeconfig

    standin = KubeStandIn().start()
    recorder = Recorder()
    standin.on_change(recorder)
    port = int(moto.rsplit(":", 1)[1])
    with short_dir("lk") as base:
        kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
        cluster = k.LabCluster(
            node_pools={"default": 2},
            cluster_name=f"lab{standin.port}",
            ports=[standin.port, port],
            kubeconfig=str(kubeconfig),
            api_server=standin.url,
            heartbeat_s=2.0,
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        controller = k.KarpenterSim(
            api, k.Ec2(moto), cluster, base / "nodes", resync_s=2.0, log=lambda _l: None
        )
        try:
            controller.start()
            wait_for(controller.ready, 90, "the NodePool's nodes")
            yield controller, standin, recorder
        finally:
            controller.stop()
            api.close()
            standin.stop()


def claims(standin: Any) -> list[dict[str, Any]]:
    return standin.list("karpenter.sh/v1", "NodeClaim")


def instance(moto: str, claim: dict[str, Any]) -> dict[str, Any]:
    ec2 = k.Ec2(moto).client
    instance_id = claim["status"]["providerID"].rsplit("/", 1)[1]
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def rolled(controller: k.KarpenterSim, standin: Any, old: set[str]) -> bool:
    current = claims(standin)
    return (
        controller.ready()
        and not controller.commands
        and len(current) == 2
        and not {c["metadata"]["name"] for c in current} & old
        and not any(k.is_true(c, "Drifted") for c in current)
    )


def karpenter_events(standin: Any) -> list[tuple[str, str, str]]:
    return sorted(
        (e["involvedObject"]["kind"], e["reason"], e["message"])
        for e in standin.list("v1", "Event", "default")
        if (e.get("source") or {}).get("component") == "karpenter"
    )


@pytest.mark.netns
def test_node_pools_get_launched_registered_and_initialized_lab_nodes(sim, moto: str) -> None:
    controller, standin, _ = sim
    node_class = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")
    class_hash = node_class["metadata"]["annotations"][k.ANN_NODECLASS_HASH]
    assert node_class["metadata"]["annotations"][k.ANN_NODECLASS_HASH_VERSION] == "v4"
    assert class_hash == k.nodeclass_hash(node_class["spec"])
    assert (
        node_class["status"]["subnets"]
        and node_class["status"]["securityGroups"]
        and node_class["status"]["amis"]
    )
    assert k.is_true(node_class, "Ready")
    pool = standin.get("karpenter.sh/v1", "NodePool", "default")
    assert pool["metadata"]["annotations"][k.ANN_NODEPOOL_HASH] == k.nodepool_hash(pool["spec"])

    current = claims(standin)
    assert len(current) == 2
    for claim in current:
        meta, status = claim["metadata"], claim["status"]
        assert meta["name"].startswith("default-")
        assert [(c["type"], c["status"]) for c in status["conditions"] if c["type"] != "Drifted"] == [
            ("Launched", "True"),
            ("Registered", "True"),
            ("Initialized", "True"),
            ("Ready", "True"),
        ]
        assert re.fullmatch(r"aws:///us-east-1[a-f]/i-[0-9a-f]+", status["providerID"])
        assert meta["annotations"][k.ANN_NODECLASS_HASH] == class_hash
        assert meta["finalizers"] == [k.TERMINATION_FINALIZER]
        assert meta["ownerReferences"][0]["name"] == "default"
        node = standin.get("v1", "Node", status["nodeName"])
        labels = node["metadata"]["labels"]
        assert labels[k.LABEL_NODEPOOL] == "default" and labels[k.LABEL_NODECLASS] == "default"
        assert labels[k.LABEL_INSTANCE_TYPE] == "m5.large" and labels[k.LABEL_HOSTNAME] == status["nodeName"]
        assert labels[k.LABEL_REGISTERED] == labels[k.LABEL_INITIALIZED] == "true"
        assert node["spec"]["providerID"] == status["providerID"]
        assert not [t for t in node["spec"].get("taints") or [] if t["key"] == "karpenter.sh/unregistered"]
        assert k.is_true(node, "Ready")
        # EC2 has the instance, tagged, with Karpenter's userData: the cluster's own part, then the NodeConfig
        ec2 = instance(moto, claim)
        tags = {t["Key"]: t["Value"] for t in ec2["Tags"]}
        assert tags["karpenter.sh/nodepool"] == "default" and tags["karpenter.sh/nodeclaim"] == meta["name"]
        user_data = k.Ec2(moto).user_data(ec2["InstanceId"])
        parts = email.message_from_string(user_data, policy=email.policy.compat32).get_payload()
        assert [p.get_content_type() for p in parts] == ["text/x-shellscript", "application/node.eks.aws"]
        # ... and the lab node ran that shell part in its own mount namespace
        lab_node = controller.nodes[meta["name"]]
        assert lab_node.node_path("/etc/lab-node/cluster-user-data").read_text().startswith("node set up by")


@pytest.mark.netns
def test_user_data_change_drifts_and_replaces_one_node_at_a_time(sim, moto: str) -> None:
    from kubernetes import client

    controller, standin, recorder = sim
    old = {c["metadata"]["name"]: c for c in claims(standin)}
    custom = client.CustomObjectsApi(controller.api)
    spec = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]
    new_user_data = spec["userData"].replace("node set up by", "node (v2) set up by")
    custom.patch_cluster_custom_object(
        "karpenter.k8s.aws",
        "v1",
        "ec2nodeclasses",
        "default",
        {"spec": {"userData": new_user_data}},
        _content_type="application/merge-patch+json",
    )
    wait_for(lambda: rolled(controller, standin, set(old)), 120, "the drifted nodes to be replaced")

    assert {recorder.drifted.get(name) for name in old} == {"NodeClassDrift"}
    assert recorder.deleting_at_once == 1  # budget 10% of 2 nodes = 1
    assert recorder.initialized_when_deleted == [
        2,
        2,
    ]  # each old node went only after its replacement was ready
    assert recorder.peak_live == 3
    events = karpenter_events(standin)
    assert events.count(("NodeClaim", "DisruptionLaunching", "Launching NodeClaim: Drifted")) == 2
    assert events.count(("NodeClaim", "DisruptionTerminating", "Disrupting NodeClaim: Drifted")) == 2
    assert events.count(("Node", "DisruptionTerminating", "Disrupting Node: Drifted")) == 2
    new_hash = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["metadata"]["annotations"][
        k.ANN_NODECLASS_HASH
    ]
    for claim in claims(standin):
        assert claim["metadata"]["annotations"][k.ANN_NODECLASS_HASH] == new_hash
        lab_node = controller.nodes[claim["metadata"]["name"]]
        assert "(v2)" in lab_node.node_path("/etc/lab-node/cluster-user-data").read_text()
        assert "node (v2) set up by" in k.Ec2(moto).user_data(instance(moto, claim)["InstanceId"])
    for claim in old.values():
        assert instance(moto, claim)["State"]["Name"] == "terminated"
        assert standin.get("v1", "Node", claim["status"]["nodeName"]) is None
        gone = controller.nodes_dir / claim["metadata"]["name"]
        assert (
            not (gone / "ctd").exists() and not (gone / "overlay").exists()
        )  # the disk went with the instance
        assert (gone / "node.log").exists()  # the logs stay
    assert pids_alive(*[n.node_pid for n in controller.nodes.values()]) == [
        n.node_pid for n in controller.nodes.values()
    ]


@pytest.mark.netns
def test_template_annotation_forces_a_roll_paced_by_the_budget(sim) -> None:
    from kubernetes import client

    controller, standin, recorder = sim
    custom = client.CustomObjectsApi(controller.api)
    old = {c["metadata"]["name"] for c in claims(standin)}

    def patch_pool(body: dict[str, Any]) -> None:
        custom.patch_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", "default", body, _content_type="application/merge-patch+json"
        )

    # budget 0 for drift: drifted, but blocked
    patch_pool(
        {
            "spec": {
                "disruption": {"budgets": [{"nodes": "0", "reasons": ["Drifted"]}]},
                "template": {"metadata": {"annotations": {"runbook.example/roll": "1"}}},
            }
        }
    )
    wait_for(lambda: all(k.is_true(c, "Drifted") for c in claims(standin)), 30, "drift")
    wait_for(
        lambda: (
            (
                "NodePool",
                "DisruptionBlocked",
                "No allowed disruptions for disruption reason Drifted due to blocking budget",
            )
            in karpenter_events(standin)
        ),
        30,
        "the blocked event",
    )
    assert {c["metadata"]["name"] for c in claims(standin)} == old
    assert {recorder.drifted[name] for name in old} == {"NodePoolDrifted"}
    # budget 2: both replaced together, each old node still going only after the replacements are ready
    patch_pool({"spec": {"disruption": {"budgets": [{"nodes": "2", "reasons": ["Drifted"]}]}}})
    wait_for(lambda: rolled(controller, standin, old), 120, "the forced roll")
    assert recorder.peak_live == 4
    assert min(recorder.initialized_when_deleted) >= 2
    for claim in claims(standin):
        assert claim["metadata"]["annotations"]["runbook.example/roll"] == "1"  # the template's annotation


@pytest.mark.netns
def test_a_nodeclaim_whose_instance_is_gone_is_collected_and_replaced(sim, moto: str) -> None:
    controller, standin, _ = sim
    victim = claims(standin)[0]
    k.Ec2(moto).terminate(victim["status"]["providerID"].rsplit("/", 1)[1])
    controller.nodes[victim["metadata"]["name"]].stop()  # the instance is gone, and its node with it
    controller._wake.set()
    wait_for(
        lambda: (
            victim["metadata"]["name"] not in {c["metadata"]["name"] for c in claims(standin)}
            and controller.ready()
        ),
        90,
        "garbage collection and a replacement",
    )
    assert len(claims(standin)) == 2
    assert standin.get("v1", "Node", victim["status"]["nodeName"]) is None


@pytest.mark.netns
def test_pending_pods_are_bound_to_a_ready_node_of_their_pool(sim) -> None:
    controller, standin, _ = sim
    standin.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "placed", "namespace": "default"},
            "spec": {
                "nodeSelector": {k.LABEL_NODEPOOL: "default"},
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "docker.io/library/none:1"}],
            },
        }
    )
    controller._wake.set()
    bound = wait_for(
        lambda: standin.get("v1", "Pod", "placed", "default")["spec"].get("nodeName"), 30, "binding"
    )
    assert bound in {c["status"]["nodeName"] for c in claims(standin)}
    scheduled = wait_for(
        lambda: [e for e in standin.list("v1", "Event", "default") if e["reason"] == "Scheduled"],
        10,
        "the Scheduled event",
    )
    assert scheduled[0]["message"] == f"Successfully assigned default/placed to {bound}"
    assert scheduled[0]["source"] == {"component": "default-scheduler"}


# -- the CLI, as the lab orchestrator runs it ----------------------------------------------------------------


@pytest.mark.netns
def test_cli_serves_until_sigterm_stops_its_nodes_and_reboots_them_on_restart(moto: str) -> None:
    from runbook_lab.kube import KubeStandIn, write_kubeconfig

    standin = KubeStandIn().start()
    with short_dir("lc") as base:
        data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
        data["lab"].update(
            kube_port=standin.port, moto_port=int(moto.rsplit(":", 1)[1]), node_pools={"default": 1}
        )
        data["aws"]["endpoint_url"] = moto
        data["aws"]["cluster_name"] = f"cli{standin.port}"
        data["lab"]["dir"] = str(base / "lab")
        params_file = base / "lab.yaml"  # never inside the checkout
        kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
        health = unused_port()
        argv = [
            sys.executable,
            "-m",
            "runbook_lab.karpenter",
            "--kubeconfig",
            str(kubeconfig),
            "--nodes-dir",
            str(base / "nodes"),
            "--aws-endpoint",
            moto,
            "--params",
            str(params_file),
            "--health-port",
            str(health),
        ]
        try:
            params_file.write_text(yaml.safe_dump(data))
            reports = []
            for _run in range(2):
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                try:
                    wait_for(lambda: _get(health, "/readyz") == 200, 90, "/readyz")  # noqa: B023
                    assert _get(health, "/healthz") == 200
                    report = httpx.get(f"http://127.0.0.1:{health}/_lab/nodes", timeout=5).json()["nodes"]
                    assert [r["phase"] for r in report] == ["ready"]
                    reports.append(report[0])
                finally:
                    proc.send_signal(signal.SIGTERM)
                    output = proc.communicate(timeout=30)[0]
                assert proc.returncode == 0, output
                assert pids_alive(report[0]["pid"], report[0]["node_pid"]) == [], output
                # stopped gracefully (SIGTERM: kubelet, containerd and bridge shut down), not killed
                assert json.loads((Path(report[0]["dir"]) / "status.json").read_text())["phase"] == "stopped"
            # the second run booted the same NodeClaim's instance again (a reboot), it did not launch another
            assert reports[0]["nodeclaim"] == reports[1]["nodeclaim"]
            assert reports[0]["node_pid"] != reports[1]["node_pid"]
            assert len(claims(standin)) == 1
        finally:
            params_file.unlink(missing_ok=True)
    standin.stop()


def _get(port: int, path: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.netns
def test_v1beta1_cluster_gets_nodes_with_v1beta1_objects(moto: str) -> None:
    from kubernetes import config

    from runbook_lab.kube import KubeStandIn, write_kubeconfig

    standin = KubeStandIn(crds="v1beta1").start()  # Karpenter v0.37 CRDs: karpenter.sh/v1beta1 only
    with short_dir("lk") as base:
        kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
        cluster = k.LabCluster(
            node_pools={"default": 1},
            cluster_name=f"beta{standin.port}",
            ports=[standin.port],
            kubeconfig=str(kubeconfig),
            api_server=standin.url,
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        controller = k.KarpenterSim(api, k.Ec2(moto), cluster, base / "nodes", log=lambda _l: None)
        try:
            assert controller.flavor.version == "v1beta1"  # found by discovery
            controller.start()
            wait_for(controller.ready, 90, "the v1beta1 NodePool's node")
            [claim] = standin.list("karpenter.sh/v1beta1", "NodeClaim")
            assert claim["spec"]["nodeClassRef"]["name"] == "default"
            assert claim["metadata"]["annotations"][k.ANN_NODECLASS_HASH_VERSION] == "v2"
            node = standin.get("v1", "Node", claim["status"]["nodeName"])
            assert node["metadata"]["labels"][k.LABEL_NODEPOOL] == "default" and k.is_true(node, "Ready")
        finally:
            controller.stop()
            api.close()
    standin.stop()


# -- the runbook's own stage-4 userData on lab nodes ---------------------------------------------------------
registries = pytest.fixture(scope="module")(registries_fixture)


@pytest.mark.netns
def test_stage4_user_data_rolls_the_nodes_which_then_pull_through_the_mirror(moto: str, registries) -> None:
    """The stage's renderer and MIME merge (runbook_lib.karpenter) applied to the lab cluster's EC2NodeClass:
    drift replaces the nodes, the new nodes run the generated boot script for real (mirror probe included)
    and keep the cluster's own part, and a Pod's pull goes through the mirror."""
    from kubernetes import client, config

    from runbook_lab.kube import KubeStandIn, write_kubeconfig
    from runbook_lib import params as params_mod
    from runbook_lib.karpenter import nodes as stage
    from tests.support.lab_node import events_of, pod, pod_phase

    hub, mirror = registries.hub, registries.mirror
    data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
    data["upstreams"] = [
        {
            "name": "docker-hub",
            "registry": "docker.io",
            "remote_url": hub.url,
            "mirror_url": mirror.url,
            "connector_port": mirror.port,
        }
    ]
    data["karpenter"].update(ami_family="AL2023", credential_mode="anonymous")
    params = params_mod.parse(data, "test", REPO / "parameters")
    rendered = stage.render(params, lambda *_a, **_k: "")

    standin = KubeStandIn().start()
    with short_dir("ls") as base:
        kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
        cluster = k.LabCluster(
            node_pools={"default": 1},
            cluster_name=f"stage{standin.port}",
            ports=[standin.port, hub.port, hub.token_port, mirror.port],
            kubeconfig=str(kubeconfig),
            api_server=standin.url,
            hosts={"registry-1.docker.io": "127.0.0.1"},
            lab_certs={"docker.io": hub.url, "registry-1.docker.io": hub.url},
        )
        api = config.new_client_from_config(config_file=str(kubeconfig))
        controller = k.KarpenterSim(api, k.Ec2(moto), cluster, base / "nodes", log=lambda _l: None)
        try:
            controller.start()
            wait_for(controller.ready, 90, "the cluster before the runbook")
            old = {c["metadata"]["name"] for c in claims(standin)}
            existing = standin.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")["spec"]["userData"]
            merged = rendered.generated.merge(existing)
            assert rendered.generated.merge(merged) == merged  # the stage's rerun writes nothing
            client.CustomObjectsApi(api).patch_cluster_custom_object(
                "karpenter.k8s.aws",
                "v1",
                "ec2nodeclasses",
                "default",
                {"spec": {"userData": merged}},
                _content_type="application/merge-patch+json",
            )
            wait_for(
                lambda: (
                    controller.ready()
                    and not controller.commands
                    and len(claims(standin)) == 1
                    and not {c["metadata"]["name"] for c in claims(standin)} & old
                ),
                120,
                "the roll",
            )
            [claim] = claims(standin)
            lab_node = controller.nodes[claim["metadata"]["name"]]
            ran = lab_node.status()["userdata"]
            assert [(r["content_type"], r.get("exit_code")) for r in ran if r["run"]] == [
                ("text/x-shellscript", 0),
                ("text/x-shellscript", 0),
            ]  # the runbook's part, then the cluster's
            written = lab_node.dir / "root" / "etc" / "containerd" / "certs.d" / "docker.io" / "hosts.toml"
            assert tomllib.loads(written.read_text())["server"] == hub.url
            assert "1 of 1 hosts.toml file(s) written" in (lab_node.dir / "userdata.log").read_text()
            assert lab_node.node_path("/etc/lab-node/cluster-user-data").exists()

            before = len(registries.mirror_requests())
            standin.put(pod("after-roll", "docker.io/library/nginx:lab", claim["status"]["nodeName"]))
            wait_for(lambda: pod_phase(standin, "after-roll") == "Succeeded", 60, "the pull on the new node")
            assert [e["reason"] for e in events_of(standin, "after-roll")] == ["Pulling", "Pulled"]
            assert any(
                "/v2/library/nginx/manifests/lab?ns=docker.io" in line
                for line in registries.mirror_requests()[before:]
            )
        finally:
            controller.stop()
            api.close()
    standin.stop()
