"""The course's lab side (runbook_lab.course) on real parts: a distribution registry behind the Docker Hub
stand-in, a private containerd whose only way to docker.io is that Docker Hub (no mirror), the Kubernetes
API stand-in and two kubelet stand-ins ("lab nodes"); and the Nexus emulator for the port exercise.

The truths the exercises are checked against are read here from the parts themselves (the hub's ledger,
the API's Pods, Nexus's repositories), never from course.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runbook_lab.breakage import BY_NAME, FAULTS
from runbook_lab.course import Course, check_answer
from tests.support.lab_node import short_tmp, wait_for
from tests.support.labkit import free_port, needs_registry

LIMIT = 5  # the hub's anonymous budget in this test (Docker Hub's is 100)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    yield from short_tmp("lc")


@pytest.fixture(scope="module")
def hub(base: Path) -> Iterator:
    from runbook_lab.dockerhub import DockerHub, HubConfig
    from runbook_lab.images import seed_lab_images
    from runbook_lab.registries import start_registry, stop_process

    reg = start_registry("docker.io", base / "reg", 0, base / "reg.log")
    front = DockerHub(reg.url, config=HubConfig(limit=LIMIT)).start()
    try:
        seed_lab_images({"docker.io": reg.url}, base / "img", image_mb=1, multilayer_mb=4)
        yield front
    finally:
        front.stop()
        stop_process(reg)


def _remaining(hub) -> int:
    """The hub's own ledger for 127.0.0.1 (what every local client, containerd included, is charged to)."""
    return hub.ledger.remaining("127.0.0.1", LIMIT, hub.config.window_s)


@pytest.fixture(scope="module")
def cluster(base: Path, hub) -> Iterator[tuple]:
    """Two kubelets on two private containerds; docker.io means the Docker Hub front (no mirror)."""
    from kubernetes import config

    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient
    from runbook_lab.kube import KubeStandIn, write_kubeconfig
    from runbook_lab.kubelet import Kubelet, KubeletConfig
    from runbook_lab.node import write_lab_certs

    standin = KubeStandIn().start()
    kubeconfig = write_kubeconfig(base / "kc", standin.url)
    parts = []
    try:
        for name in ("n1", "n2"):
            certs = base / f"certs-{name}"
            write_lab_certs(certs, {"docker.io": hub.url})
            ctd = PrivateContainerd(base / f"ctd-{name}", certs)
            ctd.start()
            api = config.new_client_from_config(config_file=str(kubeconfig))
            cri = CRIImageClient(str(ctd.socket))
            kubelet = Kubelet(
                KubeletConfig(node_name=name, cri_socket=str(ctd.socket), heartbeat_s=1.0),
                api,
                cri,
                log=lambda _line: None,
            ).start()
            parts.append((ctd, api, cri, kubelet))
        course = Course(base / "lab.yaml", hub.url, "", kubeconfig, None)
        wait_for(lambda: len(course.ready_nodes()) == 2, 30, "two Ready nodes")
        yield standin, course
    finally:
        for ctd, api, cri, kubelet in parts:
            kubelet.stop()
            cri.close()
            api.close()
            ctd.stop()
        standin.stop()


@needs_registry
def test_ratelimit_reads_the_hub_headers_without_spending_a_pull(hub, base: Path) -> None:
    course = Course(base / "lab.yaml", hub.url, "", None, None)
    hub.ledger.reset()
    before = _remaining(hub)
    seen = course.ratelimit()
    assert seen["remaining"] == before == LIMIT
    assert seen["ratelimit-limit"].startswith(f"{LIMIT};w=")
    assert seen["docker-ratelimit-source"] == "127.0.0.1"
    assert _remaining(hub) == before  # a HEAD is not a pull


@needs_registry
@pytest.mark.netns
def test_scale_up_without_a_mirror_ends_in_429_and_image_pull_backoff(hub, cluster, capsys) -> None:
    standin, course = cluster
    hub.ledger.reset()
    assert course.use_up_budget(leave=0) == LIMIT
    assert _remaining(hub) == 0
    names = course.scale_up(4)
    rows = course.wait_settled(timeout=60)
    assert [r["pod"] for r in rows] == names
    assert {r["node"] for r in rows} == {"n1", "n2"}
    # From the API itself: every Pod waits in ImagePullBackOff and its kubelet saw the hub's 429.
    for name in names:
        pod = standin.get("v1", "Pod", name, "course")
        [cs] = pod["status"]["containerStatuses"]
        assert cs["state"]["waiting"]["reason"] == "ImagePullBackOff", pod["status"]
        messages = [
            e["message"] for e in standin.list("v1", "Event", "course") if e["involvedObject"]["name"] == name
        ]
        assert any("429" in m for m in messages), messages
        assert "Error: ImagePullBackOff" in messages
    assert all("429" in r["warning"] for r in rows)
    assert any("ImagePullBackOff" in line for line in course.events(names[0]))
    assert hub.state()["counters"].get("too_many_requests", 0) >= 1

    # The exercise is checked against the API now: the true count is right, another is wrong.
    waiting = sum(
        1
        for n in names
        if standin.get("v1", "Pod", n, "course")["status"]["containerStatuses"][0]["state"]
        .get("waiting", {})
        .get("reason")
        in ("ErrImagePull", "ImagePullBackOff")
    )
    assert check_answer("backoff-pods", waiting, course) is True
    assert check_answer("backoff-pods", waiting - 1, course) is False
    out = capsys.readouterr().out
    assert "right:" in out and "wrong:" in out and "Hint:" in out

    # The remaining-pulls exercise against the hub's ledger, before and after the lab's reset.
    assert check_answer("dockerhub-remaining", _remaining(hub), course) is True
    assert check_answer("dockerhub-remaining", "3", course) is False
    course.reset_budget()
    assert _remaining(hub) == LIMIT
    assert check_answer("dockerhub-remaining", str(LIMIT), course) is True
    assert check_answer("dockerhub-remaining", 0, course) is False

    # With the budget back the same scale-up pulls: the Pods succeed.
    course.scale_up(2)
    rows = course.wait_settled(timeout=60)
    assert [r["phase"] for r in rows] == ["Succeeded", "Succeeded"], rows
    assert check_answer("backoff-pods", 0, course) is True
    assert course.clean_up() == 2


@pytest.fixture
def nexus(tmp_path: Path) -> Iterator[tuple]:
    from runbook_lab.nexus.emulator import NexusEmulator

    emulator = NexusEmulator(
        tmp_path / "nexus" / "data", port=0, version="3.94.0-01", edition="COMMUNITY"
    ).start()
    try:
        yield emulator, tmp_path
    finally:
        emulator.stop()


def _docker_proxy(name: str, remote: str, port: int | None) -> dict:
    """What the Nexus UI's "docker (proxy)" form sends (Administration > Repositories > Create)."""
    return {
        "name": name,
        "online": True,
        "storage": {"blobStoreName": "default", "strictContentTypeValidation": True},
        "proxy": {"remoteUrl": remote, "contentMaxAge": 1440, "metadataMaxAge": 1440},
        "negativeCache": {"enabled": True, "timeToLive": 1440},
        "httpClient": {"blocked": False, "autoBlock": True},
        "docker": {"v1Enabled": False, "forceBasicAuth": False, **({"httpPort": port} if port else {})},
        "dockerProxy": {"indexType": "REGISTRY"},
    }


def test_port_exercise_is_checked_against_nexus(nexus, capsys) -> None:
    from runbook_lab.course import Upstream

    emulator, tmp = nexus
    auth = ("admin", (tmp / "nexus" / "data" / "admin.password").read_text().strip())
    ghcr_remote, port = "http://127.0.0.1:15003", free_port()
    course = Course(
        tmp / "lab.yaml",
        "http://127.0.0.1:9",
        emulator.url,
        None,
        tmp,
        [Upstream("ghcr-io", "ghcr.io", ghcr_remote, port)],
    )
    assert check_answer("ghcr-port", port, course) is False  # no repository yet: nothing serves ghcr.io
    resp = httpx.post(
        f"{emulator.url}/service/rest/v1/repositories/docker/proxy",
        json=_docker_proxy("ghcr-io", ghcr_remote, port),
        auth=auth,
    )
    assert resp.status_code == 201, resp.text
    repo = httpx.get(f"{emulator.url}/service/rest/v1/repositories/docker/proxy/ghcr-io", auth=auth).json()
    assert repo["docker"]["httpPort"] == port
    assert check_answer("ghcr-port", port, course) is True
    assert check_answer("ghcr-port", port + 1, course) is False
    assert check_answer("ghcr-port", "", course) is False  # no answer yet: says so, checks nothing
    out = capsys.readouterr().out
    assert "right:" in out and "wrong:" in out and "no answer yet" in out


# -- without a running lab ------------------------------------------------------------------------------
def test_course_reads_the_lab_parameters_as_plain_yaml() -> None:
    repo = Path(__file__).resolve().parents[2]
    c = Course.from_params(repo / "parameters" / "lab.yaml")
    assert c.hub_url == "http://127.0.0.1:15000"  # docker.io's remote_url: the lab's Docker Hub
    assert c.nexus_url == "http://127.0.0.1:18081"
    assert c.lab_dir == repo / ".lab" and c.kubeconfig == repo / ".lab" / "kubeconfig"
    assert [u.registry for u in c.upstreams] == ["docker.io", "gcr.io", "quay.io", "ghcr.io"]
    assert c.upstreams[3].connector_port == 18085


def test_course_without_a_docker_hub_or_a_file_says_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    from runbook_lab.course import PARAMS_ENV, CourseError, default_params_file

    bad = tmp_path / "p.yaml"
    bad.write_text("upstreams: [{name: q, registry: quay.io, remote_url: 'http://127.0.0.1:9'}]\n")
    with pytest.raises(CourseError, match="no docker.io entry"):
        Course.from_params(bad)
    with pytest.raises(CourseError, match="cannot read the lab parameters"):
        Course.from_params(tmp_path / "missing.yaml")
    monkeypatch.setenv(PARAMS_ENV, str(bad))
    assert default_params_file() == bad


@pytest.mark.parametrize("fault", [f.name for f in FAULTS])
def test_caught_looks_for_the_fault_tables_message(fault: str, capsys) -> None:
    course = Course(Path("lab.yaml"), "http://127.0.0.1:9", "", None, None)
    assert course.caught(fault, f"StageFailed: ... {BY_NAME[fault].message} ...") is True
    assert course.caught(fault, "run ok") is False
    out = capsys.readouterr().out
    assert f"caught: {fault} -> stage {BY_NAME[fault].stage}" in out and f"NOT caught: {fault}" in out
