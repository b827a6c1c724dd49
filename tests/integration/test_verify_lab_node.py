"""The node path end to end on real lab nodes: real containerd (CRI) behind the kubelet stand-in, each node in
its own namespaces, pulling through the Nexus emulator's docker connector per the node's hosts.toml (written
by the node's userData, with the Docker Hub stand-in as `server`), and `registry-1.docker.io` reaching the
Docker Hub stand-in directly. Then Nexus goes down: the mirrored name still pulls — containerd's fallback —
and the stage counts it as bypassed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_lib.kube import api_client
from runbook_lib.plan import StageFailed
from runbook_lib.secrets import REDACTOR
from runbook_lib.stages import verify as verify_stage
from runbook_lib.verify import hostpull, mirrorproof, nodepull, report, samples, thresholds
from tests.support.lab_node import mirror_user_data, short_tmp
from tests.support.labkit import Lab, upstream_fixture
from tests.support.recording import RecordingContext

pytestmark = pytest.mark.netns
upstream = pytest.fixture(scope="module")(upstream_fixture)
IMAGE = "docker.io/library/big:lab"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    yield from short_tmp("vn")


@pytest.fixture(scope="module")
def cluster(upstream, base: Path, tmp_path_factory) -> Iterator[tuple[Lab, object]]:
    import os

    from runbook_lab.kube import KubeStandIn, write_kubeconfig
    from runbook_lab.node import LabNode, NodeSpec

    os.environ["TEST_NEXUS_ADMIN"] = "managed-admin-secret"
    os.environ["TEST_PULL_PASSWORD"] = "pull-user-secret"
    lab = Lab(tmp_path_factory.mktemp("lab"), upstream.url, "anonymous")
    kube = KubeStandIn().start()
    nodes: list[LabNode] = []
    try:
        kubeconfig = write_kubeconfig(base / "kubeconfig", kube.url)
        p = lab.params
        p.kubernetes.kubeconfig = str(kubeconfig)
        p.karpenter.node_pools = ["default"]
        p.verification.images = [IMAGE]
        p.verification.repetitions = 1
        p.verification.pull_timeout_s = 60
        p.verification.counters_url = f"{lab.emulator.url}/_lab/counters"
        lab.run_stages(apply=True)
        mirror = p.upstream("docker.io").mirror_url
        hub = upstream.hub
        mirror_port = int(mirror.rsplit(":", 1)[1])
        for i in (1, 2):
            spec = NodeSpec(
                name=f"ip-10-0-0-{i}.ec2.internal",
                dir=str(base / "nodes" / f"default-{i}"),
                user_data=mirror_user_data(mirror, hub.url),
                kubeconfig=str(kubeconfig),
                ports=[hub.port, hub.token_port, mirror_port, kube.port],
                hosts={"registry-1.docker.io": "127.0.0.1", "docker.io": "127.0.0.1"},
                lab_certs={"docker.io": hub.url, "registry-1.docker.io": hub.url},
                labels={nodepull.POOL_LABEL: "default"},
                internal_ip=f"10.0.0.{i}",
                heartbeat_s=1.0,
            )
            nodes.append(LabNode(spec).start())
        for n in nodes:
            n.wait_ready(90)
        yield lab, kube
    finally:
        for n in nodes:
            n.stop()
        kube.stop()
        lab.emulator.stop()
        os.environ.pop("TEST_NEXUS_ADMIN", None)
        os.environ.pop("TEST_PULL_PASSWORD", None)
        REDACTOR.clear()


def node_path(lab: Lab) -> nodepull.NodeComparison:
    kube_api = api_client(lab.params)
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    try:
        return nodepull.compare(
            lab.params, lab.secret, kube_api, content, mirrorproof.CounterSource(lab.params, content)
        )
    finally:
        kube_api.close()
        if content.client:
            content.client.close()


def test_real_nodes_pull_through_the_mirror_and_around_it_when_it_is_down(cluster) -> None:
    lab, kube = cluster
    result = node_path(lab)
    df = result.samples
    assert df["ok"].all(), df[["node", "pulled", "error"]]
    assert df["pulled"].tolist() == [IMAGE, "registry-1.docker.io/library/big:lab"]
    assert df["node"].nunique() == 2  # round-robin: each route on a node that did not hold the image
    # fresh nodes report no images (the kubelet omits an empty list): not on node, or not reported
    assert set(df["node_cache"]) <= {nodepull.NOT_ON_NODE, nodepull.NOT_REPORTED} and df["eligible"].all()
    mirror, direct = df.iloc[0], df.iloc[1]
    assert mirror["served_by"] == "mirror" and mirror["label"] == samples.MIRROR_COLD
    assert direct["served_by"] == "upstream"
    assert mirror["bytes"] == direct["bytes"] > 1 << 20  # the kubelet's "Image size", same image both ways
    assert result.bypassed == 0
    assert (
        result.speedups()[IMAGE] is None
    )  # the one mirror pull was cold: no warm sample, no speed-up claimed
    assert kube.list("v1", "Pod", "default") == []

    # Nexus down: containerd falls back to `server`, the pull succeeds, the stage sees the bypass
    lab.emulator.stop()
    down = node_path(lab)
    mirrored = down.samples[down.samples["path"] == "mirror"]
    assert mirrored["ok"].all() and set(mirrored["served_by"]) == {nodepull.FALLBACK}
    assert down.bypassed == 1
    empty = hostpull.HostComparison(samples.frame([]))
    fig = report.figures(lab.params, empty, down, None, [])
    with pytest.raises(StageFailed, match="bypassed"):
        verify_stage.enforce(RecordingContext(), thresholds.evaluate(lab.params, fig, empty, down))
    assert kube.list("v1", "Pod", "default") == []
