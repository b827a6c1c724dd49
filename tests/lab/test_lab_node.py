"""Lab nodes (runbook_lab.node): userData parsing, and a real node in its own namespaces.

The netns tests boot one real lab node for the module: its userData (a shell part writing docker.io's
hosts.toml for a distribution pull-through mirror, plus a NodeConfig part to skip) runs in the node's mount
namespace; real containerd and the kubelet stand-in then serve Pods. The mirror's access log proves which
pulls it served; the Docker Hub front's counters prove the `registry-1.docker.io` alias went around it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_lab.kubelet import UNPACK_ANNOTATION
from runbook_lab.node import (
    LabNode,
    NodeError,
    NodeSpec,
    hosts_file,
    overlay_targets,
    unpack_seconds,
    user_data_parts,
    write_lab_certs,
)
from tests.support.lab_node import (
    PULLED,
    Registries,
    events_of,
    host_mounts_under,
    mirror_user_data,
    pids_alive,
    pod,
    pod_phase,
    registries_fixture,
    short_tmp,
    wait_for,
)

# -- userData as the node reads it (no namespaces needed) ---------------------------------------------------


def test_mime_parts_run_only_shell_scripts_and_skip_karpenter_bootstrap_and_nodeconfig() -> None:
    from runbook_lab.karpenter import karpenter_user_data

    merged = karpenter_user_data(
        "AL2",
        mirror_user_data("http://m:1", "http://u:2"),
        "lab",
        "http://api",
        {"karpenter.sh/nodepool": "default"},
        [],
        "29",
    )
    parts = user_data_parts(merged, "AL2")
    assert [(p.content_type, p.run) for p in parts] == [
        ("text/x-shellscript", True),
        ("application/node.eks.aws", False),
        ("text/x-shellscript", False),
    ]
    assert "hosts.toml" in parts[0].body
    assert "bootstrap" in parts[2].note.lower()
    assert "/etc/eks/bootstrap.sh" in parts[2].body


def test_base64_part_is_decoded_and_bare_script_runs() -> None:
    script = "#!/bin/bash\necho hi\n"
    encoded = base64.b64encode(script.encode()).decode()
    mime = (
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="X"\n\n--X\n'
        "Content-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n" + encoded + "\n--X--\n"
    )
    assert [(p.body, p.run) for p in user_data_parts(mime)] == [(script, True)]
    assert [(p.content_type, p.run) for p in user_data_parts(script)] == [("text/x-shellscript", True)]


def test_bare_nodeconfig_and_bottlerocket_toml_are_skipped_with_a_note() -> None:
    nodeconfig = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: {}\n"
    [part] = user_data_parts(nodeconfig, "AL2023")
    assert (part.content_type, part.run) == ("application/node.eks.aws", False)
    toml = '[settings.container-registry.mirrors]\n"docker.io" = ["https://m"]\n'
    for family in ("Bottlerocket", "AL2023"):  # recognised by its settings table too
        [part] = user_data_parts(toml, family)
        assert not part.run and "Bottlerocket" in part.note
    assert user_data_parts("   \n") == []


def test_lab_dns_files_parse_and_keep_the_runbook_out() -> None:
    text = hosts_file({"registry-1.docker.io": "127.0.0.1", "docker.mirror.lab.internal": "127.0.0.1"})
    assert "127.0.0.1 registry-1.docker.io" in text.splitlines()
    assert text.splitlines()[0] == "127.0.0.1 localhost"


def test_lab_certs_are_valid_hosts_toml_for_containerd_1_6(tmp_path: Path) -> None:
    write_lab_certs(tmp_path, {"registry-1.docker.io": "http://127.0.0.1:15000"})
    text = (tmp_path / "registry-1.docker.io" / "hosts.toml").read_text()
    doc = tomllib.loads(text)
    assert doc == {"server": "http://127.0.0.1:15000", "host": {}}  # empty [host]: containerd 1.6 needs one
    assert "written by the lab (not the runbook)" in text


def test_overlays_never_cover_the_node_folder(tmp_path: Path) -> None:
    targets = overlay_targets([tmp_path])
    assert "/etc" in targets
    assert all(not str(tmp_path).startswith(t + "/") for t in targets)
    assert "/tmp" not in targets


# -- a real node --------------------------------------------------------------------------------------------
registries = pytest.fixture(scope="module")(registries_fixture)


@pytest.fixture(scope="module")
def kube() -> Iterator:
    from runbook_lab.kube import KubeStandIn

    standin = KubeStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    yield from short_tmp("ln")


@pytest.fixture(scope="module")
def node(registries: Registries, kube, base: Path) -> Iterator[LabNode]:
    from runbook_lab.kube import write_kubeconfig

    kubeconfig = write_kubeconfig(base / "kubeconfig", kube.url)
    hub = registries.hub
    spec = NodeSpec(
        name="ip-10-0-0-1.ec2.internal",
        dir=str(base / "nodes" / "default-abcde"),
        user_data=mirror_user_data(registries.mirror.url, hub.url),
        ami_family="AL2023",
        kubeconfig=str(kubeconfig),
        ports=[hub.port, hub.token_port, registries.mirror.port, kube.port],
        hosts={"registry-1.docker.io": "127.0.0.1", "docker.io": "127.0.0.1"},
        lab_certs={"docker.io": hub.url, "registry-1.docker.io": hub.url},
        labels={"karpenter.sh/nodepool": "default"},
        provider_id="aws:///us-east-1a/i-0123456789abcdef0",
        internal_ip="10.0.0.1",
        heartbeat_s=1.0,
    )
    lab_node = LabNode(spec).start()
    try:
        lab_node.wait_ready(60)
        yield lab_node
    finally:
        lab_node.stop()


def run_in(node: LabNode, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(node.exec_argv(list(argv)), capture_output=True, text=True, timeout=30)


@pytest.mark.netns
def test_user_data_ran_in_the_node_mount_namespace_only(node: LabNode) -> None:
    status = node.status()
    assert status["phase"] == "ready"
    assert [(r["content_type"], r["run"], r.get("exit_code")) for r in status["userdata"]] == [
        ("text/x-shellscript", True, 0),
        ("application/node.eks.aws", False, None),
    ]
    hosts = node.dir / "root" / "etc" / "containerd" / "certs.d" / "docker.io" / "hosts.toml"
    assert tomllib.loads(hosts.read_text())["server"] == f"http://127.0.0.1:{node.spec.ports[0]}"
    marker = node.node_path("/etc/lab-node/marker")
    assert marker.read_text() == "runbook\n" and marker.is_relative_to(node.dir)
    assert not Path("/etc/lab-node/marker").exists()  # the host's /etc never saw the write
    assert host_mounts_under(node.dir) == []  # the node's mounts are not in this mount namespace
    inside = run_in(node, "cat", "/etc/lab-node/marker")
    assert inside.stdout == "runbook\n"


@pytest.mark.netns
def test_node_registers_ready_with_labels_provider_id_and_images(node: LabNode, kube) -> None:
    obj = kube.get("v1", "Node", node.spec.name)
    assert obj["spec"]["providerID"] == node.spec.provider_id
    labels = obj["metadata"]["labels"]
    assert labels["karpenter.sh/nodepool"] == "default" and labels["kubernetes.io/hostname"] == node.spec.name
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert obj["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://1.6.20"
    assert {"type": "InternalIP", "address": "10.0.0.1"} in obj["status"]["addresses"]
    first = ready["lastHeartbeatTime"]
    wait_for(
        lambda: (
            next(
                c
                for c in kube.get("v1", "Node", node.spec.name)["status"]["conditions"]
                if c["type"] == "Ready"
            )["lastHeartbeatTime"]
            != first
        ),
        10,
        "a heartbeat",
    )


@pytest.mark.netns
def test_pod_pull_goes_through_the_mirror_with_a_kubelet_pulled_event(
    node: LabNode, kube, registries: Registries
) -> None:
    before_mirror, before_hub = len(registries.mirror_requests()), registries.hub_counters()
    kube.put(pod("via-mirror", "docker.io/library/demo:1", node.spec.name))
    wait_for(lambda: pod_phase(kube, "via-mirror") == "Succeeded", 60, "the pod to succeed")
    events = events_of(kube, "via-mirror")
    assert [(e["type"], e["reason"]) for e in events] == [("Normal", "Pulling"), ("Normal", "Pulled")]
    pulling, pulled = events
    assert pulling["message"] == 'Pulling image "docker.io/library/demo:1"'
    match = re.match(PULLED, pulled["message"])
    assert match and match["image"] == "docker.io/library/demo:1" and int(match["size"]) > 0, pulled[
        "message"
    ]
    obj = kube.get("v1", "Pod", "via-mirror", "default")
    assert pulled["involvedObject"] == {
        "kind": "Pod",
        "namespace": "default",
        "name": "via-mirror",
        "uid": obj["metadata"]["uid"],
        "apiVersion": "v1",
        "resourceVersion": pulled["involvedObject"]["resourceVersion"],
        "fieldPath": "spec.containers{pull}",
    }
    assert pulled["source"] == {"component": "kubelet", "host": node.spec.name}
    # the unpack, apart: containerd's own "diff applied" timings for the layers of this pull
    unpack = float(pulled["metadata"]["annotations"][UNPACK_ANNOTATION])
    pull_s = float(match["pull"].removesuffix("ms")) / 1000 if match["pull"].endswith("ms") else None
    pull_s = pull_s if pull_s is not None else float(match["pull"].removesuffix("s"))
    assert 0 < unpack < pull_s + 0.001, (unpack, pull_s)
    total, layers = unpack_seconds((node.dir / "ctd" / "containerd.log").read_text())
    # demo:1 has two layers; the log holds every pull so far; the annotation is rounded to 0.1 ms
    assert layers >= 2 and total >= unpack - 5e-5
    state = obj["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    # served by the mirror: containerd's requests with ?ns=docker.io, and none reached the Docker Hub front
    served = registries.mirror_requests()[before_mirror:]
    assert any("/v2/library/demo/manifests/1?ns=docker.io" in line for line in served), served
    assert registries.hub_counters() == before_hub
    images = kube.get("v1", "Node", node.spec.name)["status"]["images"]
    assert any("docker.io/library/demo:1" in i["names"] for i in images)


@pytest.mark.netns
def test_registry_1_alias_bypasses_the_mirror(node: LabNode, kube, registries: Registries) -> None:
    before_mirror, before_hub = len(registries.mirror_requests()), registries.hub_counters()
    kube.put(pod("via-alias", "registry-1.docker.io/library/busybox:lab", node.spec.name))
    wait_for(lambda: pod_phase(kube, "via-alias") == "Succeeded", 60, "the alias pod to succeed")
    pulled = [e for e in events_of(kube, "via-alias") if e["reason"] == "Pulled"]
    assert len(pulled) == 1 and re.match(PULLED, pulled[0]["message"])
    hub = registries.hub_counters()
    assert hub.get("manifest_get", 0) > before_hub.get("manifest_get", 0)
    assert hub.get("tokens_issued", 0) > before_hub.get("tokens_issued", 0)  # through the Hub's token flow
    assert registries.mirror_requests()[before_mirror:] == []


@pytest.mark.netns
def test_failed_pull_gives_warning_events_and_err_image_pull(node: LabNode, kube) -> None:
    kube.put(pod("missing", "docker.io/library/does-not-exist:1", node.spec.name))
    wait_for(lambda: [e for e in events_of(kube, "missing") if e["reason"] == "BackOff"], 30, "the back-off")
    # kubelet posts "Error: ImagePullBackOff" just after the BackOff event: wait for it too, not only BackOff
    wait_for(
        lambda: len([e for e in events_of(kube, "missing") if e["reason"] == "Failed"]) >= 3,
        30,
        "the ImagePullBackOff error event",
    )
    events = events_of(kube, "missing")
    failed = [e for e in events if e["reason"] == "Failed"]
    assert failed[0]["type"] == "Warning"
    assert failed[0]["message"].startswith(
        'Failed to pull image "docker.io/library/does-not-exist:1": rpc error: code = NotFound desc = '
    )
    assert [e["message"] for e in failed[1:3]] == ["Error: ErrImagePull", "Error: ImagePullBackOff"]
    waiting = kube.get("v1", "Pod", "missing", "default")["status"]["containerStatuses"][0]["state"][
        "waiting"
    ]
    assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert pod_phase(kube, "missing") == "Pending"


@pytest.mark.netns
def test_if_not_present_uses_the_node_image_and_deletion_is_confirmed(node: LabNode, kube) -> None:
    wait_for(lambda: pod_phase(kube, "via-mirror") == "Succeeded", 60, "the first pull")
    kube.put(pod("cached", "docker.io/library/demo:1", node.spec.name, policy="IfNotPresent"))
    wait_for(lambda: pod_phase(kube, "cached") == "Succeeded", 30, "the cached pod")
    [pulled] = [e for e in events_of(kube, "cached") if e["reason"] == "Pulled"]
    assert pulled["message"] == 'Container image "docker.io/library/demo:1" already present on machine'
    assert not [e for e in events_of(kube, "cached") if e["reason"] == "Pulling"]
    kube.delete("v1", "Pod", "cached", "default")  # graceful: the kubelet confirms it
    wait_for(
        lambda: kube.get("v1", "Pod", "cached", "default") is None, 15, "the kubelet to confirm the deletion"
    )


@pytest.mark.netns
def test_node_reaches_only_the_lab_ports_over_the_kernel_path(
    node: LabNode, kube, registries: Registries
) -> None:
    net = json.loads((node.dir / "net.json").read_text())
    assert net["mode"] == "veth", net  # root, iproute2 and iptables are here: no fallback to the bridge
    assert node.status()["net"] == "veth" and sorted(net["ports"]) == sorted(node.spec.ports)
    routes = run_in(node, "ip", "-4", "route", "show").stdout.strip().splitlines()
    assert len(routes) == 1 and " dev lab0 " in routes[0] and not routes[0].startswith("default"), routes
    _assert_only_lab_ports(node, kube, registries)
    lab_side = run_in(
        node, "curl", "-sS", "-m", "5", f"http://{net['lab_addr']}:{registries.registry.port}/v2/"
    )
    assert lab_side.returncode == 7 and "Couldn't connect" in lab_side.stderr  # the lab side refuses it too


def _assert_only_lab_ports(node: LabNode, kube, registries: Registries) -> None:
    ok = run_in(
        node, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{kube.port}/version"
    )
    assert ok.stdout == "200", ok.stderr
    unbridged = run_in(
        node, "curl", "-sS", "-m", "5", f"{registries.registry.url}/v2/"
    )  # the lab has it, not bridged
    assert unbridged.returncode == 7 and "Couldn't connect" in unbridged.stderr
    fallback = run_in(
        node, "curl", "-sS", "-m", "5", "https://registry-1.docker.io/v2/"
    )  # name -> 127.0.0.1:443
    assert fallback.returncode == 7
    internet = run_in(node, "curl", "-sS", "-m", "5", "http://10.1.2.3/")
    assert internet.returncode == 7 and (
        "unreachable" in internet.stderr.lower() or "Couldn't" in internet.stderr
    )


@pytest.mark.netns
def test_stop_ends_every_process_and_leaves_no_mount(registries: Registries, kube, base: Path) -> None:
    from runbook_lab.kube import write_kubeconfig

    kubeconfig = write_kubeconfig(base / "kubeconfig-2", kube.url)
    spec = NodeSpec(
        name="ip-10-0-0-2.ec2.internal",
        dir=str(base / "nodes" / "stop-me"),
        kubeconfig=str(kubeconfig),
        ports=[kube.port],
        heartbeat_s=30,
    )
    node = LabNode(spec).start()
    try:
        node.wait_ready(60)
        containerd_host_pid = None
        for pid in Path("/proc").iterdir():
            if pid.name.isdigit():
                try:
                    cmd = (pid / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"/usr/bin/containerd\0") and str(node.dir).encode() in cmd:
                    containerd_host_pid = int(pid.name)
        assert containerd_host_pid, "the node's containerd runs (seen from the host)"
        pids = (node.pid, node.node_pid, containerd_host_pid)
        assert len(pids_alive(*pids)) == 3
    finally:
        node.stop()
    assert pids_alive(*pids) == []
    assert node.status()["phase"] == "stopped"
    assert host_mounts_under(node.dir) == []
    assert not (node.dir / "pid").exists()


@pytest.mark.netns
def test_a_bridge_node_keeps_the_same_isolation_and_stop_removes_each_lab_side(
    registries: Registries, kube, base: Path
) -> None:
    from runbook_lab.kube import write_kubeconfig
    from runbook_lab.veth import interfaces, leftover_interfaces

    kubeconfig = write_kubeconfig(base / "kubeconfig-br", kube.url)
    nodes = {}
    for net in ("bridge", "veth"):
        nodes[net] = LabNode(
            NodeSpec(
                name=f"ip-10-0-0-9{len(nodes)}.ec2.internal",
                dir=str(base / "nodes" / f"net-{net}"),
                kubeconfig=str(kubeconfig),
                ports=[registries.hub.port, kube.port],
                hosts={"registry-1.docker.io": "127.0.0.1"},
                heartbeat_s=30,
                net=net,
            )
        ).start()
    try:
        for net, lab_node in nodes.items():
            lab_node.wait_ready(60)
            assert lab_node.status()["net"] == net
            _assert_only_lab_ports(lab_node, kube, registries)
        assert (nodes["bridge"].spec.bridge_path / str(kube.port)).exists()
        ifname = nodes["veth"].net["lab_if"]
        assert ifname in interfaces() and ifname in leftover_interfaces()
    finally:
        for lab_node in nodes.values():
            lab_node.stop()
    assert not (nodes["bridge"].spec.bridge_path / str(kube.port)).exists()
    assert ifname not in interfaces() and ifname not in leftover_interfaces()


@pytest.mark.netns
def test_without_the_kernel_path_the_node_falls_back_to_the_bridge_and_says_why(
    kube, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_lab import veth
    from runbook_lab.kube import write_kubeconfig

    def refuse(node_pid: int, ports: list[int]) -> veth.Veth:
        raise veth.VethError("iptables-restore (lab side) failed (exit 4): no nf_tables here")

    monkeypatch.setattr(veth, "connect", refuse)
    kubeconfig = write_kubeconfig(base / "kubeconfig-fb", kube.url)
    auto = LabNode(
        NodeSpec(
            name="ip-10-0-0-95.ec2.internal",
            dir=str(base / "nodes" / "fallback"),
            kubeconfig=str(kubeconfig),
            ports=[kube.port],
            heartbeat_s=30,
        )
    ).start()
    try:
        auto.wait_ready(60)
        assert auto.net == {
            "mode": "bridge",
            "reason": "kernel path unavailable: iptables-restore (lab side) "
            "failed (exit 4): no nf_tables here",
        }
        assert auto.status()["net"] == "bridge"
        assert "falls back to the port bridge: kernel path unavailable" in auto.log_path.read_text()
        ok = run_in(
            auto,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://127.0.0.1:{kube.port}/version",
        )
        assert ok.stdout == "200", ok.stderr
    finally:
        auto.stop()
    strict = LabNode(
        NodeSpec(
            name="ip-10-0-0-96.ec2.internal",
            dir=str(base / "nodes" / "strict"),
            kubeconfig=str(kubeconfig),
            ports=[kube.port],
            net="veth",
        )
    )
    with pytest.raises(NodeError, match="kernel network path failed: iptables-restore"):
        strict.start()
    assert not strict.running  # net: veth refuses to fall back, and the started node is stopped


def test_an_unknown_net_mode_is_refused_before_anything_starts(tmp_path: Path) -> None:
    node = LabNode(NodeSpec(name="n", dir=str(tmp_path / "n"), net="tap"))
    with pytest.raises(NodeError, match="net: 'tap'"):
        node.start()
    assert node.proc is None


@pytest.mark.netns
def test_a_node_that_fails_to_start_is_reported_with_its_log_tail(base: Path) -> None:
    spec = NodeSpec(
        name="ip-10-0-0-3.ec2.internal",
        dir=str(base / "nodes" / "broken"),
        kubeconfig=str(base / "no-such-kubeconfig"),
        ports=[],
    )
    node = LabNode(spec).start()
    try:
        with pytest.raises(NodeError) as failure:
            node.wait_ready(60)
    finally:
        node.stop()
    message = str(failure.value)
    assert "failed to start" in message and "Invalid kube-config file" in message
    assert "== node.log ==" in message  # the log tail
    assert pids_alive(node.node_pid) == []


@pytest.mark.netns
def test_nodes_left_by_an_earlier_run_are_stopped_by_their_recorded_pids(kube, base: Path) -> None:
    from runbook_lab.kube import write_kubeconfig
    from runbook_lab.node import stop_stale
    from runbook_lab.veth import interfaces, leftover_interfaces

    kubeconfig = write_kubeconfig(base / "kubeconfig-3", kube.url)
    nodes_dir = base / "earlier-run"
    node = LabNode(
        NodeSpec(
            name="ip-10-0-0-4.ec2.internal",
            dir=str(nodes_dir / "left-over"),
            kubeconfig=str(kubeconfig),
            ports=[kube.port],
            heartbeat_s=30,
        )
    ).start()
    try:
        node.wait_ready(60)
        pids = (node.pid, node.node_pid)
        ifname = node.net["lab_if"]
        assert ifname in leftover_interfaces()
        assert stop_stale(nodes_dir) == [node.node_pid, node.pid]  # as a restarted controller does first
        assert pids_alive(*pids) == []
        assert not (node.dir / "pid").exists()
        wait_for(lambda: ifname not in interfaces(), 10, "the kernel to delete the dead node's veth pair")
        assert stop_stale(nodes_dir) == []
        assert ifname not in leftover_interfaces()  # its lab-side rules went with the sweep, not with stop()
    finally:
        node.stop()
