"""Kubelet stand-in (runbook_lab.kubelet): message formats, and the kubelet against real containerd.

The netns tests run the kubelet in this process against a private containerd (CRI) and the Kubernetes API
stand-in, pulling from a real distribution registry on 127.0.0.1 (its hosts.toml in containerd's
config_path), without a lab node around them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_lab.kubelet import go_duration, grpc_error_text, pulled_message
from tests.support.lab_node import PULLED, events_of, pod, pod_phase, short_tmp, wait_for


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.05, "50ms"),
        (0.178, "178ms"),
        (0.9999, "999ms"),
        (1, "1s"),
        (1.2, "1.2s"),
        (1.2345, "1.234s"),
        (12.04, "12.04s"),
        (61.5, "1m1.5s"),
        (120, "2m0s"),
        (3600, "1h0m0s"),
        (3661.001, "1h1m1.001s"),
    ],
)
def test_go_duration_matches_go_time_duration_string(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_pulled_message_is_the_kubelet_sentence() -> None:
    message = pulled_message("docker.io/library/big:lab", 0.7961, 1.5944, 543804759)
    assert message == (
        'Successfully pulled image "docker.io/library/big:lab" in 796ms (1.594s including waiting). '
        "Image size: 543804759 bytes."
    )
    assert re.match(PULLED, message)


def test_cri_errors_read_like_the_go_grpc_client() -> None:
    assert grpc_error_text("NOT_FOUND", "x: not found") == "rpc error: code = NotFound desc = x: not found"
    assert grpc_error_text("DEADLINE_EXCEEDED", "slow").startswith(
        "rpc error: code = DeadlineExceeded desc = "
    )


# -- against real containerd ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    yield from short_tmp("lk")


@pytest.fixture(scope="module")
def registry(base: Path) -> Iterator:
    from runbook_lab.images import seed_lab_images
    from runbook_lab.registries import start_registry, stop_process

    reg = start_registry("docker.io", base / "reg", 0, base / "reg.log")
    try:
        seed_lab_images({"docker.io": reg.url}, base / "img", image_mb=1, multilayer_mb=4)
        yield reg
    finally:
        stop_process(reg)


@pytest.fixture(scope="module")
def containerd(base: Path, registry) -> Iterator:
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.node import write_lab_certs

    certs = base / "certs"
    host = registry.url.split("//", 1)[1]
    write_lab_certs(certs, {host: registry.url})
    ctd = PrivateContainerd(base / "ctd", certs)
    ctd.start()
    yield ctd
    ctd.stop()


@pytest.fixture
def cluster(containerd, registry) -> Iterator[tuple]:
    """A kube stand-in and a started kubelet for node `n1` (image GC after 1 s unused)."""
    from kubernetes import config

    from runbook_lab.cri import CRIImageClient
    from runbook_lab.kube import KubeStandIn, write_kubeconfig
    from runbook_lab.kubelet import Kubelet, KubeletConfig

    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(Path(containerd.workdir).parent / f"kc-{standin.port}", standin.url)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    cri = CRIImageClient(str(containerd.socket))
    cfg = KubeletConfig(
        node_name="n1", cri_socket=str(containerd.socket), heartbeat_s=1.0, image_maximum_gc_age_s=1.0
    )
    kubelet = Kubelet(cfg, api, cri, log=lambda _line: None).start()
    host = registry.url.split("//", 1)[1]
    try:
        yield standin, kubelet, cri, host
    finally:
        kubelet.stop()
        cri.close()
        api.close()
        standin.stop()


@pytest.mark.netns
def test_never_policy_without_the_image_waits_with_err_image_never_pull(cluster) -> None:
    standin, _, _, host = cluster
    standin.put(pod("never", f"{host}/library/nginx:lab", "n1", policy="Never"))
    wait_for(lambda: events_of(standin, "never"), 20, "an event")
    [event] = events_of(standin, "never")
    assert (event["type"], event["reason"]) == ("Warning", "ErrImageNeverPull")
    assert (
        event["message"]
        == f'Container image "{host}/library/nginx:lab" is not present with pull policy of Never'
    )
    waiting = standin.get("v1", "Pod", "never", "default")["status"]["containerStatuses"][0]["state"][
        "waiting"
    ]
    assert waiting["reason"] == "ErrImageNeverPull"


@pytest.mark.netns
def test_init_containers_pull_first_with_their_own_field_path(cluster) -> None:
    standin, _, _, host = cluster
    standin.put(pod("with-init", f"{host}/library/demo:1", "n1", init_image=f"{host}/library/busybox:lab"))
    wait_for(lambda: pod_phase(standin, "with-init") == "Succeeded", 60, "the pod to succeed")
    rows = [(e["reason"], e["involvedObject"]["fieldPath"]) for e in events_of(standin, "with-init")]
    assert rows == [
        ("Pulling", "spec.initContainers{init}"),
        ("Pulled", "spec.initContainers{init}"),
        ("Pulling", "spec.containers{pull}"),
        ("Pulled", "spec.containers{pull}"),
    ]
    status = standin.get("v1", "Pod", "with-init", "default")["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert status["containerStatuses"][0]["imageID"].startswith(f"{host}/library/demo@sha256:")


@pytest.mark.netns
def test_unused_images_are_garbage_collected_and_leave_node_status(cluster) -> None:
    standin, _, cri, host = cluster
    image = f"{host}/library/layers:lab"
    standin.put(pod("gc-me", image, "n1"))
    wait_for(lambda: pod_phase(standin, "gc-me") == "Succeeded", 60, "the pull")

    def reported() -> bool:
        return any(image in i["names"] for i in standin.get("v1", "Node", "n1")["status"].get("images") or [])

    assert reported() and cri.status(image) is not None
    time.sleep(2.5)  # longer than the GC age plus one GC period: a Pod that still exists keeps its image
    assert cri.status(image) is not None
    standin.delete("v1", "Pod", "gc-me", "default")
    wait_for(lambda: cri.status(image) is None, 20, "image garbage collection after the pod is gone")
    wait_for(lambda: not reported(), 10, "status.images to drop the image")
