"""A pull credential rotation on real lab nodes (real containerd behind the kubelet stand-in), launched and
drifted by the lab's Karpenter simulation, pulling through the Nexus emulator's docker connector with the
static Authorization header stage 4 writes into hosts.toml (docs/rotation.md).

In every phase — before, after stage 2 adds the second user, while Karpenter replaces the nodes, after the
old user is retired — each node pull of a mirrored name is served by the mirror: the emulator's
/_lab/counters show a served manifest for it (a refused credential gets 401 before any manifest is served,
and containerd then falls back to the upstream). Stage 4 refuses to write a user Nexus does not know, stage 2
refuses to retire the old user while a node may use it, and after retirement Nexus refuses the old one.
A negative control at the end changes a password in place: that pull is seen going around the mirror.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runbook_lab import karpenter as k
from runbook_lib.containerd.hosts import basic_header
from runbook_lib.karpenter import credentials
from runbook_lib.nexus import session
from runbook_lib.plan import StageFailed
from runbook_lib.secrets import REDACTOR
from runbook_lib.stages import karpenter as stage4
from runbook_lib.stages import nexus_security as stage2
from tests.support.lab_node import moto_fixture, pod, pod_phase, short_dir, wait_for
from tests.support.labkit import Lab, upstream_fixture

pytestmark = pytest.mark.netns
upstream = pytest.fixture(scope="module")(upstream_fixture)
moto = pytest.fixture(scope="module")(moto_fixture)
IMAGE = "docker.io/library/demo:1"
OLD, NEW = "docker-pull", "docker-pull-2"
_names = itertools.count()


@pytest.fixture
def rig(upstream, moto, tmp_path) -> Iterator[tuple[Lab, Any, Any]]:
    from kubernetes import config

    from runbook_lab.kube import KubeStandIn, write_kubeconfig

    os.environ.update(
        TEST_NEXUS_ADMIN="managed-admin-secret",
        TEST_PULL_PASSWORD="old-pull-secret",
        TEST_NEXT_PW="new-secret",
    )
    lab = Lab(tmp_path / "lab", upstream.url, "authenticated")
    standin = KubeStandIn().start()
    hub = upstream.hub
    connector_ports = [u.connector_port for u in lab.params.upstreams]
    try:
        with short_dir("rt") as base:
            kubeconfig = write_kubeconfig(base / "kubeconfig", standin.url)
            p = lab.params
            p.kubernetes.kubeconfig = str(kubeconfig)
            p.karpenter.credential_mode = "static-header"
            quay = p.upstream("quay.io")
            quay.mirror_url = f"http://127.0.0.1:{quay.connector_port}"
            p.karpenter.probe_mirror_at_boot = False
            p.karpenter.rollout_timeout_s = 240
            p.karpenter.rollout_poll_s = 1
            cluster = k.LabCluster(
                node_pools={"default": 2},
                cluster_name=f"rot{standin.port}",
                ports=[standin.port, int(moto.rsplit(":", 1)[1]), hub.port, hub.token_port, *connector_ports],
                kubeconfig=str(kubeconfig),
                api_server=standin.url,
                hosts={"registry-1.docker.io": "127.0.0.1"},
                lab_certs={"docker.io": hub.url, "registry-1.docker.io": hub.url},
                heartbeat_s=2.0,
            )
            api = config.new_client_from_config(config_file=str(kubeconfig))
            controller = k.KarpenterSim(
                api, k.Ec2(moto), cluster, base / "nodes", resync_s=2.0, log=lambda _l: None
            )
            try:
                controller.start()
                wait_for(controller.ready, 120, "the NodePool's nodes")
                lab.api_client = api
                yield lab, standin, controller
            finally:
                controller.stop()
                api.close()
    finally:
        standin.stop()
        lab.emulator.stop()
        for name in ("TEST_NEXUS_ADMIN", "TEST_PULL_PASSWORD", "TEST_NEXT_PW"):
            os.environ.pop(name, None)
        REDACTOR.clear()


def phase(lab: Lab, rotation: str | None) -> None:
    sec = lab.params.security
    sec.rotation = rotation
    sec.next_user, sec.next_pull_password = (NEW, "env:TEST_NEXT_PW") if rotation else (None, None)


def run_stage(module: Any, lab: Lab, apply: bool = True) -> tuple[Any, Any, list]:
    lab.apply = apply
    state = module.read(lab)
    plan = module.plan(lab, state)
    module.show(lab, state, plan)
    module.apply(lab, state, plan)
    if module is stage4:
        module.roll(lab, state, out=lambda _line: None)
    checks = module.checks(lab, state, plan)
    module.enforce(lab, checks)
    return state, plan, checks


def rotation_row(plan: Any) -> str:
    [row] = [c for c in plan.changes if c.kind == credentials.ROTATION_CHECK]
    return row.note


def served(lab: Lab) -> int:
    stats = httpx.get(f"{lab.emulator.url}/_lab/counters").json()["docker"]
    return stats["cache_hits"] + stats["cache_misses"]


def ready_nodes(standin: Any) -> list[str]:
    out = []
    for n in standin.list("v1", "Node"):
        conditions = (n.get("status") or {}).get("conditions") or []
        if not n["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        ):
            out.append(n["metadata"]["name"])
    return out


def pull_on(lab: Lab, standin: Any, node: str, timeout: float = 90) -> bool | None:
    """One pull of the mirrored name on `node`: True = the mirror served it, False = it did not (bypass),
    None = the node went away before the pull finished (a drifted node being replaced)."""
    before = served(lab)
    name = f"rot-{next(_names)}"
    standin.put(pod(name, IMAGE, node))
    try:
        wait_for(lambda: pod_phase(standin, name) in ("Succeeded", "Failed"), timeout, f"pull {name}")
    except AssertionError:
        if node not in ready_nodes(standin):
            return None
        raise
    if pod_phase(standin, name) != "Succeeded":
        return None if node not in ready_nodes(standin) else False
    return served(lab) > before


def pulls_go_through_the_mirror(lab: Lab, standin: Any, what: str) -> None:
    nodes = ready_nodes(standin)
    assert nodes, what
    for node in nodes:
        assert pull_on(lab, standin, node) is True, f"{what}: {node} pulled {IMAGE} around the mirror"


def accepted(lab: Lab, user: str, password: str) -> bool:
    return credentials.nexus_accepts(lab.params, user, password)[0]


def test_rotation_keeps_every_node_pull_on_the_mirror(rig) -> None:
    lab, standin, controller = rig
    lab.run_stages(apply=True)  # stages 1 and 2: the docker connectors, the pull user docker-pull
    run_stage(stage4, lab)  # nodes roll onto docker-pull's header
    pulls_go_through_the_mirror(lab, standin, "before the rotation")

    # start: stage 4 will not hand nodes a user Nexus does not have (they would bypass the mirror)
    phase(lab, "start")
    with pytest.raises(StageFailed, match=f"does not let {NEW} pull yet"):
        stage4.read(lab)
    _, plan, checks = run_stage(stage2, lab)
    assert [c.label for c in plan.pending if c.kind == "user"] == [f"create user {NEW}"]
    assert "phase adding" in rotation_row(plan)  # the plan was made before the user existed
    assert all(c.ok for c in checks)  # the proof: both users pull, wrong passwords refused
    assert accepted(lab, OLD, "old-pull-secret") and accepted(lab, NEW, "new-secret")
    _, plan, _ = run_stage(stage2, lab, apply=False)
    assert plan.pending == [] and "phase rolling" in rotation_row(plan)
    assert "node class default does not carry docker-pull-2 yet" in rotation_row(plan)
    pulls_go_through_the_mirror(lab, standin, "second user added, nodes not rolled")

    # finish too early: the nodes still carry docker-pull
    phase(lab, "finish")
    with pytest.raises(StageFailed, match=f"refusing to retire {OLD}"):
        run_stage(stage2, lab, apply=False)
    phase(lab, "start")

    # the roll: pull on every ready node, old and new, while Karpenter replaces them
    old_nodes = set(ready_nodes(standin))
    results: list[tuple[str, bool | None]] = []
    stop = threading.Event()

    def keep_pulling() -> None:
        while not stop.is_set():
            for node in ready_nodes(standin):
                if stop.is_set():
                    return
                results.append((node, pull_on(lab, standin, node, timeout=60)))

    puller = threading.Thread(target=keep_pulling, daemon=True)
    puller.start()
    try:
        state, plan, checks = run_stage(stage4, lab)
    finally:
        stop.set()
        puller.join(120)
    assert "phase rolling" in rotation_row(plan) and "does not carry docker-pull-2" in rotation_row(plan)
    [rot] = [c for c in checks if c.name == credentials.ROTATION_CHECK]
    assert rot.ok and "phase ready to retire" in rot.detail, rot.detail
    assert not set(ready_nodes(standin)) & old_nodes  # every node was replaced
    assert [r for r in results if r[1] is False] == [], results  # no pull bypassed the mirror
    assert {n for n, ok in results if ok} & old_nodes, results  # pulls ran on old nodes during the roll
    for node in ready_nodes(standin):
        lab_node = next(v for v in list(controller.nodes.values()) if v.spec.name == node)
        hosts = lab_node.node_path("/etc/containerd/certs.d/docker.io/hosts.toml").read_text()
        assert basic_header(NEW, "new-secret") in hosts and basic_header(OLD, "old-pull-secret") not in hosts
    pulls_go_through_the_mirror(lab, standin, "nodes rolled onto docker-pull-2")

    # finish: no node uses docker-pull any more, so stage 2 retires it; Nexus then refuses it
    phase(lab, "finish")
    _, plan, checks = run_stage(stage2, lab)
    assert [c.label for c in plan.pending if c.kind == "user"] == [f"delete user {OLD}"]
    assert "phase retiring" in rotation_row(plan)
    assert any(c.name.endswith(f"user {OLD} is refused (retired)") and c.ok for c in checks), checks
    assert not accepted(lab, OLD, "old-pull-secret") and accepted(lab, NEW, "new-secret")
    mirror = lab.params.upstream("docker.io").mirror_url
    assert (
        httpx.get(
            f"{mirror}/v2/", headers={"Authorization": basic_header(OLD, "old-pull-secret")}
        ).status_code
        == 401
    )
    pulls_go_through_the_mirror(lab, standin, "old user retired")

    # the failure mode this avoids, and the check that sees it: a password changed in place sends the
    # node's pull around the mirror (401, then containerd's fallback), and pull_on says so
    node = ready_nodes(standin)[0]
    with session.admin_login(lab.params, lab.secret, None).client as admin:
        admin.change_password(NEW, "changed-in-place")
        try:
            assert pull_on(lab, standin, node) is False
        finally:
            admin.change_password(NEW, "new-secret")
    assert pull_on(lab, standin, node) is True

    _, plan, _ = run_stage(stage2, lab)  # rerun: nothing left to do, says to swap the parameters
    assert plan.pending == [] and "phase retired" in rotation_row(plan)
    _, plan, _ = run_stage(stage4, lab)
    assert plan.pending == [] and "phase retired" in rotation_row(plan)
