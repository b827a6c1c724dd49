"""Node path of the verification against the Kubernetes API stand-in, with the lab's real registries.

The lab's real kubelet stand-in (lab/runbook_lab/kubelet.py, real containerd over CRI) is another module's
work. Here a small test kubelet plays its part through the API, as a kubelet does: it sees a Pod bound to its
node, pulls the image the way containerd does with a docker.io hosts.toml (the mirror first, the upstream
`server` when the mirror cannot be reached; the bypass alias straight from the upstream), and posts the
kubelet's events: `Pulling`, then `Pulled` with "Successfully pulled image ... in ... (... including waiting).
Image size: N bytes." or a Warning `Failed` "Failed to pull image ...: ...". The pulls are real (the Nexus
emulator's connector and the Docker Hub stand-in), so the mirror's counters move, or do not, for real.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib.kube import api_client
from runbook_lib.plan import StageFailed
from runbook_lib.registry.client import ImageRef, RegistryClient
from runbook_lib.registry.pull import pull
from runbook_lib.secrets import REDACTOR
from runbook_lib.stages import verify as verify_stage
from runbook_lib.verify import endpoints, hostpull, mirrorproof, nodepull, report, samples, thresholds
from runbook_lib.verify.ratelimit import Headroom
from tests.support.labkit import Lab, upstream_fixture
from tests.support.recording import RecordingContext

upstream = pytest.fixture(scope="module")(upstream_fixture)
NS = "default"


def go_duration(seconds: float) -> str:
    """Go's Duration.String() style for the magnitudes a pull takes."""
    if seconds < 1:
        return f"{seconds * 1000:.3f}".rstrip("0").rstrip(".") + "ms"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


class TestKubelet:
    """Acts on Pods bound to its nodes; `mode[node]` is "pull" (default), "fail" or "silent"."""

    __test__ = False

    def __init__(
        self,
        standin: KubeStandIn,
        kubeconfig: Path,
        mirrors: dict[str, str],
        upstream_url: str,
        alias_host: str = "registry-1.docker.io",
    ) -> None:
        self.api = api_client_from(kubeconfig)
        self.core = k8s.CoreV1Api(self.api)
        self.mirrors = mirrors  # registry -> the mirror its hosts.toml names
        self.upstream_url, self.alias_host = upstream_url, alias_host
        self.mode: dict[str, str] = {}
        self.routes: list[tuple[str, str]] = []  # (image, "mirror" | "upstream")
        self.threads: list[threading.Thread] = []
        self.unsubscribe = standin.on_change(self._on_change)

    def close(self) -> None:
        self.unsubscribe()
        for t in self.threads:
            t.join(timeout=30)
        self.api.close()

    def _on_change(self, event: str, obj: dict[str, Any]) -> None:
        if event != "ADDED" or obj.get("kind") != "Pod" or not obj["spec"].get("nodeName"):
            return
        t = threading.Thread(target=self._run, args=(obj,), daemon=True)
        self.threads.append(t)
        t.start()

    def _event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        now = datetime.now(UTC)
        meta = pod["metadata"]
        self.core.create_namespaced_event(
            meta["namespace"],
            {
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "fieldPath": "spec.containers{pull}",
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]},
                "firstTimestamp": now,
                "lastTimestamp": now,
            },
        )

    def _pull(self, image: str) -> tuple[float, int]:
        """containerd with hosts.toml: mirror, then `server` on a connection failure; the alias goes
        direct."""
        ref = ImageRef.parse(image)
        targets = [(self.upstream_url, "upstream")]
        if ref.registry in self.mirrors:
            targets.insert(0, (self.mirrors[ref.registry], "mirror"))
        last = None
        for url, route in targets:
            with RegistryClient(url, timeout=10) as reg:
                result = pull(reg, ref.repository, ref.reference)
            if result.ok:
                self.routes.append((image, route))
                return result.total_s or 0.0, result.bytes
            last = result
            if result.status is not None:  # the host answered: containerd does not try the next one
                break
        raise RuntimeError(last.error if last else "no host")

    def _run(self, pod: dict[str, Any]) -> None:
        node, image = pod["spec"]["nodeName"], pod["spec"]["containers"][0]["image"]
        mode = self.mode.get(node, "pull")
        if mode == "silent":
            return
        self._event(pod, "Pulling", f'Pulling image "{image}"')
        try:
            if mode == "fail":
                raise RuntimeError("rpc error: code = NotFound desc = failed to resolve reference")
            seconds, size = self._pull(image)
        except RuntimeError as err:
            self._event(pod, "Failed", f'Failed to pull image "{image}": {err}', "Warning")
            return
        d = go_duration(seconds)
        self._event(
            pod,
            "Pulled",
            f'Successfully pulled image "{image}" in {d} ({d} including waiting). Image size: {size} bytes.',
        )
        try:
            self.core.patch_namespaced_pod_status(
                pod["metadata"]["name"], NS, {"status": {"phase": "Succeeded"}}
            )
        except ApiException as err:
            if err.status != 404:  # the stage may already have deleted the Pod
                raise


def api_client_from(kubeconfig: Path) -> k8s.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def node(name: str, pool: str, ready: bool = True, images: list[dict] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {nodepull.POOL_LABEL: pool, "kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "images": images or [],
        },
    }


@pytest.fixture
def cluster(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    upstream.hub.ledger.reset()
    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", standin.url)
    for obj in (
        node("n-a", "default"),
        node("n-b", "default"),
        node("n-down", "default", ready=False),
        node("g-1", "gpu"),
        node("other", "spare"),
    ):
        standin.put(obj)
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    p = lab.params
    p.kubernetes.kubeconfig = str(kubeconfig)
    p.karpenter.node_pools = ["default", "gpu"]
    p.verification.images = ["docker.io/library/big:lab", "quay.io/lab/tool:1"]
    p.verification.repetitions = 2
    p.verification.pull_timeout_s = 20
    p.verification.counters_url = f"{lab.emulator.url}/_lab/counters"
    lab.run_stages(apply=True)
    mirrors = {r: endpoints.mirror_url(p, p.upstream(r)) for r in ("docker.io", "quay.io")}
    kubelet = TestKubelet(standin, kubeconfig, mirrors, upstream.url)
    kube_api = api_client(p)
    yield lab, standin, kubelet, kube_api
    kube_api.close()
    kubelet.close()
    standin.stop()
    lab.emulator.stop()
    upstream.hub.ledger.reset()
    REDACTOR.clear()


def run_node_path(lab: Lab, kube_api: Any, headroom: list[Headroom] | None = None) -> nodepull.NodeComparison:
    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    counters = mirrorproof.CounterSource(lab.params, content)
    try:
        return nodepull.compare(lab.params, lab.secret, kube_api, content, counters, headroom)
    finally:
        if content.client:
            content.client.close()


def pods_left(standin: KubeStandIn) -> list[dict]:
    return standin.list("v1", "Pod", NS)


def test_pods_on_each_pool_mirrored_and_alias_names_cleaned_up(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    result = run_node_path(lab, kube_api)
    df = result.samples
    assert result.measured
    assert result.pools == {
        "default": ["n-a", "n-b"],
        "gpu": ["g-1"],
    }  # n-down is not Ready; "spare" not asked
    assert df["ok"].all(), df[~df["ok"]][["pulled", "error"]]
    big = df[df["image"] == "docker.io/library/big:lab"]
    # per pool and repetition: the mirrored name, then the alias
    assert (
        big[big["pool"] == "default"]["pulled"].tolist()
        == ["docker.io/library/big:lab", "registry-1.docker.io/library/big:lab"] * 2
    )
    assert set(big[big["pool"] == "default"]["node"]) == {"n-a", "n-b"}  # round-robin
    assert set(big[big["pool"] == "gpu"]["node"]) == {"g-1"}
    # quay.io has no bypass alias: only its mirrored name is pulled, and a note says why
    tool = df[df["image"] == "quay.io/lab/tool:1"]
    assert set(tool["path"]) == {"mirror"}
    assert any("no bypass alias for quay.io" in n for n in result.notes)
    # routes as the names promise, proven by the counters
    mirror_rows = df[df["path"] == "mirror"]
    assert set(mirror_rows["served_by"]) == {"mirror"} and result.bypassed == 0
    assert set(df[df["path"] == "direct"]["served_by"]) == {"upstream"}
    # nothing was cached before: the first pool's first pull of each image is cold, the second pool's is not
    for image in ("docker.io/library/big:lab", "quay.io/lab/tool:1"):
        rows = mirror_rows[mirror_rows["image"] == image]
        assert rows[rows["pool"] == "default"]["label"].tolist() == [samples.MIRROR_COLD, samples.MIRROR_WARM]
        assert rows[rows["pool"] == "gpu"]["label"].tolist() == [samples.WAS_CACHED, samples.MIRROR_WARM]
    # the kubelet's own figures
    assert (big["bytes"] > 0).all() and big["seconds"].notna().all()
    assert set(df["node_cache"]) == {nodepull.NOT_REPORTED}
    assert pods_left(standin) == []
    assert set(result.speedups()) == {"docker.io/library/big:lab", "quay.io/lab/tool:1"}
    assert result.speedups()["quay.io/lab/tool:1"] is None  # no direct samples for it
    # the pod the stage created
    created = [r for r in standin.requests if r.method == "POST" and r.path.endswith("/pods")]
    assert len(created) == len(df)


def test_pod_spec_pins_the_node_and_always_pulls() -> None:
    spec = nodepull.pod_manifest("p", "ns", "n-a", "docker.io/library/big:lab", 300)["spec"]
    assert spec["nodeName"] == "n-a" and spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert spec["tolerations"] == [{"operator": "Exists"}]


def test_mirror_down_falls_back_and_is_counted_as_bypassed(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.verification.images = ["docker.io/library/big:lab"]
    lab.params.karpenter.node_pools = ["default"]
    # Nexus down (main port and connectors): containerd's fallback to `server` serves from the upstream
    lab.emulator.stop()
    result = run_node_path(lab, kube_api)
    df = result.samples
    assert df["ok"].all()  # the pulls still succeed ...
    mirrored = df[df["path"] == "mirror"]
    assert set(mirrored["served_by"]) == {nodepull.FALLBACK}  # ... but not through the mirror
    assert result.bypassed == len(mirrored) == 2
    assert set(r for _, r in kubelet.routes) == {"upstream"}
    assert not mirrored["eligible"].any()
    fig = report.figures(lab.params, hostpull.HostComparison(samples.frame([])), result, None, [])
    checks = thresholds.evaluate(lab.params, fig, hostpull.HostComparison(samples.frame([])), result)
    ctx = RecordingContext()
    with pytest.raises(StageFailed) as err:
        verify_stage.enforce(ctx, checks)
    assert "bypassed" in str(err.value)
    assert ctx.calls and ctx.calls[0][0] == "failure" and "bypassed" in ctx.calls[0][1]["message"]


def test_counters_that_do_not_move_mean_bypass(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.verification.images = ["docker.io/library/big:lab"]
    lab.params.karpenter.node_pools = ["gpu"]
    lab.params.verification.repetitions = 1
    # a node whose containerd has no hosts.toml: the mirrored name goes straight to the upstream
    kubelet.mirrors = {}
    result = run_node_path(lab, kube_api)
    mirrored = result.samples[result.samples["path"] == "mirror"]
    assert mirrored["ok"].all() and set(mirrored["served_by"]) == {nodepull.BYPASSED}
    assert result.bypassed == 1
    lab.params.verification.thresholds.allow_bypass = True
    fig = report.figures(lab.params, hostpull.HostComparison(samples.frame([])), result, None, [])
    check = thresholds.evaluate(lab.params, fig, hostpull.HostComparison(samples.frame([])), result)[0]
    assert check.ok and "tolerated" in check.detail


def test_failed_pull_and_silent_kubelet_are_reported_and_cleaned_up(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.verification.images = ["docker.io/library/big:lab"]
    lab.params.karpenter.node_pools = ["default"]
    lab.params.verification.repetitions = 1
    kubelet.mode = {"n-a": "fail", "n-b": "silent"}
    nodepull_start = 1.0
    original = nodepull.run_pod

    def quick(core, namespace, node, image, timeout_s):  # a short wait for the silent kubelet
        return original(core, namespace, node, image, timeout_s, start_timeout_s=nodepull_start)

    content = mirrorproof.NexusContent.connect(lab.params, lab.secret)
    result = nodepull.compare(lab.params, lab.secret, kube_api, content, None, run_pull=quick)
    content.client.close()
    df = result.samples
    assert df["ok"].tolist() == [False, False]
    assert "failed to pull: rpc error" in df.iloc[0]["error"]
    assert df.iloc[1]["error"].startswith(nodepull.NO_KUBELET)
    assert any("n-b" in n and "no more Pods" in n for n in result.notes)
    assert pods_left(standin) == []


def test_leftover_pods_of_an_interrupted_run_are_removed(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.verification.images = ["quay.io/lab/tool:1"]
    lab.params.verification.repetitions = 1
    core = k8s.CoreV1Api(kube_api)
    kubelet.mode = {"n-a": "silent", "n-b": "silent", "g-1": "silent"}
    core.create_namespaced_pod(NS, nodepull.pod_manifest("verify-pull-old", NS, "n-a", "x", 60))
    kubelet.mode = {}
    result = run_node_path(lab, kube_api)
    assert any("removed 1 pull Pod" in n for n in result.notes)
    assert pods_left(standin) == []


def test_empty_pool_is_a_note_and_node_path_check_fails_without_nodes(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.karpenter.node_pools = ["nothing-here"]
    result = run_node_path(lab, kube_api)
    assert not result.measured and result.samples.empty
    assert any("NodePool nothing-here: no Ready node" in n for n in result.notes)
    fig = report.figures(lab.params, hostpull.HostComparison(samples.frame([])), result, None, [])
    checks = {
        c.name: c
        for c in thresholds.evaluate(lab.params, fig, hostpull.HostComparison(samples.frame([])), result)
    }
    assert not checks["node path measured"].ok


def test_alias_pulls_respect_the_docker_hub_budget(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    lab.params.verification.images = ["docker.io/library/big:lab"]
    low = Headroom("anonymous", "runbook host", limit=100, remaining=5, window_s=21600, source="1.2.3.4")
    result = run_node_path(lab, kube_api, [low])
    assert set(result.samples["path"]) == {"mirror"}
    assert any("node pulls of Docker Hub aliases skipped" in n for n in result.notes)


# -- event parsing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,seconds",
    [
        ("1.234s", 1.234),
        ("796ms", 0.796),
        ("1m2.5s", 62.5),
        ("850µs", 0.00085),
        ("0s", 0.0),
        ("1h0m0s", 3600.0),
        ("313.123456ms", 0.313123456),
    ],
)
def test_go_durations(text, seconds) -> None:
    assert nodepull.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1.2", "s", "1.2 s", "12sec", "-1s"])
def test_not_go_durations(text) -> None:
    with pytest.raises(ValueError):
        nodepull.parse_go_duration(text)


def test_pulled_messages_of_current_and_older_kubelets() -> None:
    m = nodepull.parse_pulled(
        'Successfully pulled image "ghcr.io/actions/actions-runner:latest" in 796ms '
        "(1.594s including waiting). Image size: 543804759 bytes."
    )
    assert (m.image, m.seconds, m.seconds_with_waiting, m.size_bytes) == (
        "ghcr.io/actions/actions-runner:latest",
        pytest.approx(0.796),
        pytest.approx(1.594),
        543804759,
    )
    older = nodepull.parse_pulled('Successfully pulled image "nginx" in 1.234s (1.234s including waiting)')
    assert (older.image, older.seconds, older.size_bytes) == ("nginx", pytest.approx(1.234), None)
    oldest = nodepull.parse_pulled('Successfully pulled image "busybox" in 2.5s')
    assert oldest.seconds == pytest.approx(2.5) and oldest.seconds_with_waiting is None
    assert nodepull.parse_pulled('Container image "nginx" already present on machine') is None
    assert nodepull.parse_pulled('Pulling image "nginx"') is None


def test_failed_messages() -> None:
    assert nodepull.parse_failed(
        'Failed to pull image "docker.io/library/x:1": rpc error: code = NotFound'
    ) == ("docker.io/library/x:1", "rpc error: code = NotFound")
    assert nodepull.parse_failed("Error: ErrImagePull") is None


def test_node_cache_state_from_reported_images(cluster) -> None:
    lab, standin, kubelet, kube_api = cluster
    core = k8s.CoreV1Api(kube_api)
    standin.put(
        node(
            "n-img",
            "x",
            images=[
                {
                    "names": ["docker.io/library/big@sha256:" + "a" * 64, "docker.io/library/big:lab"],
                    "sizeBytes": 1,
                }
            ],
        )
    )
    standin.put(node("n-other", "x", images=[{"names": ["docker.io/library/demo:1"], "sizeBytes": 1}]))
    standin.put(
        node("n-alias", "x", images=[{"names": ["registry-1.docker.io/library/big:lab"], "sizeBytes": 1}])
    )
    ref = ImageRef.parse("docker.io/library/big:lab")
    hosts = ("docker.io", "registry-1.docker.io")
    assert nodepull.node_cache(core, "n-img", ref, hosts) == nodepull.IMAGE_ON_NODE
    assert nodepull.node_cache(core, "n-other", ref, hosts) == nodepull.NOT_ON_NODE
    assert nodepull.node_cache(core, "n-alias", ref, hosts) == nodepull.IMAGE_ON_NODE
    assert nodepull.node_cache(core, "n-a", ref, hosts) == nodepull.NOT_REPORTED
