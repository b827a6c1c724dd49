"""A node that boots while the mirror is down (issue #12 part 2), with the real containerd, in the private
network namespace.

The node's userData script runs while the Nexus emulator is stopped (its docker connectors refuse
connections): it still writes every hosts.toml. The node's containerd (real, CRI pulls as kubelet makes
them) pulls the mirrored name from the upstream meanwhile (containerd moves on to `server` on a refused
connection). Nexus comes back on the same ports with the same data: the next pull on that same node, with
the same files and no rerun of the script, goes through the mirror (the emulator's /_lab/counters show it)
without replacing the node.

Also checked here: with the installed containerd (Debian's 1.6.20), a hosts.toml that carries
`dial_timeout`, a key 1.6 does not know, is still read (no decode error) and its mirror used; and a boot
with black-holed mirrors (packets never answered) writes every file and finishes.
"""

from __future__ import annotations

import subprocess
import time
import tomllib

import httpx
import pytest

from runbook_lib.containerd.hosts import ContainerdVersion
from runbook_lib.karpenter import mirrors, userdata
from runbook_lib.karpenter import nodes as stage
from runbook_lib.secrets import REDACTOR
from tests.support.karpenter import no_secret, run_script, tree
from tests.support.labkit import Lab, upstream_fixture

pytestmark = pytest.mark.netns
upstream = pytest.fixture(upstream_fixture)  # per test: each one takes its mirror down
IMAGE = "docker.io/library/demo:1"
DOCKER_HOSTS = "etc/containerd/certs.d/docker.io/hosts.toml"


def counters(lab: Lab) -> dict:
    return httpx.get(f"{lab.params.nexus.url}/_lab/counters", timeout=5).json().get("docker", {})


def hub_manifests(upstream) -> int:
    c = upstream.hub.state()["counters"]
    return c.get("manifest_head", 0) + c.get("manifest_get", 0)


def installed_containerd() -> ContainerdVersion:
    text = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout
    return ContainerdVersion.parse(text.split()[2])


def new_lab(tmp_path, upstream, monkeypatch) -> Lab:
    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    quay = lab.params.upstream("quay.io")
    quay.mirror_url = f"http://127.0.0.1:{quay.connector_port}"
    return lab


def restart_nexus(lab: Lab) -> None:
    """Nexus comes back: a new emulator process on the same port and data folder (repositories, security,
    connector ports kept), as after a pod restart."""
    from runbook_lab.nexus.emulator import NexusEmulator

    old = lab.emulator
    lab.emulator = NexusEmulator(
        old.data_dir,
        port=int(lab.params.nexus.url.rsplit(":", 1)[1]),  # the stopped one was bound to an ephemeral port
        version=old.version,
        edition=old.edition,
        request_log=old.request_log_path,
    ).start()
    mirror = lab.params.upstream("docker.io").mirror_url
    for _ in range(100):  # the connector binds in start(); this only waits for it to serve
        try:
            if httpx.get(f"{mirror}/v2/", timeout=2).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the docker connector at {mirror} did not come back")


@pytest.mark.parametrize("family", ["AL2", "AL2023"])
def test_node_booted_while_nexus_was_down_pulls_through_the_mirror_once_it_is_back(
    tmp_path, upstream, monkeypatch, family
) -> None:
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient

    lab = new_lab(tmp_path, upstream, monkeypatch)
    lab.params.karpenter.ami_family = family
    root = tmp_path / "node"
    ctd = PrivateContainerd(tmp_path / "ctd", root / userdata.CERTS_DIR)
    try:
        lab.run_stages(apply=True)
        scripts = userdata.shell_scripts(stage.render(lab.params, no_secret).new_class_user_data)
        assert len(scripts) == 1
        mirror = lab.params.upstream("docker.io").mirror_url

        # Nexus is down (stopped: its connectors refuse connections) while the node boots.
        lab.emulator.stop()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{mirror}/v2/", timeout=2)
        boot = run_script(scripts[0], root)  # what cloud-init runs, once, at the node's first boot
        assert boot.returncode == 0, boot.stderr
        assert "2 of 2 hosts.toml" in boot.stderr and f"no registry answer from {mirror}/v2/" in boot.stderr
        files = tree(root)
        docker = tomllib.loads(files[DOCKER_HOSTS].decode())
        assert docker["server"] == upstream.url and list(docker["host"]) == [mirror]
        # the installed containerd decided whether the file carries dial_timeout, not a parameter
        assert ("dial_timeout" in docker["host"][mirror]) is installed_containerd().supports_dial_timeout()

        # Meanwhile the node's pulls of the mirrored name go to the upstream (containerd's fallback).
        ctd.start()
        hub_before = hub_manifests(upstream)
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        assert hub_manifests(upstream) > hub_before
        assert "trying next host" in ctd.log_text()

        # Nexus comes back. The same node, same files, script not rerun: the next pull uses the mirror.
        restart_nexus(lab)
        ctd.remove_all_images()
        before, offset = counters(lab), ctd.log_offset()
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        after = counters(lab)
        assert after["manifest_requests"] > before.get("manifest_requests", 0)
        assert after["blob_requests"] >= before.get("blob_requests", 0) + 2  # config + layer(s)
        assert after["bytes_served"] > before.get("bytes_served", 0)
        assert "trying next host" not in ctd.log_since(offset)  # the mirror answered, no fallback
        assert tree(root) == files  # nothing on the node changed: no rerun, no replacement
    finally:
        ctd.stop()
        lab.emulator.stop()
        REDACTOR.clear()


def test_installed_containerd_reads_a_hosts_toml_that_carries_dial_timeout(
    tmp_path, upstream, monkeypatch
) -> None:
    """What the node's decision rests on: containerd 1.6 (Debian's 1.6.20 here) does not know `dial_timeout`
    and ignores it (go-toml v1's non-strict decode in remotes/docker/config/hosts.go): no "failed to decode
    hosts.toml", the mirror is used. On a containerd >= 2.0.7 the key is read; the file works the same."""
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient

    lab = new_lab(tmp_path, upstream, monkeypatch)
    root = tmp_path / "node"
    ctd = PrivateContainerd(tmp_path / "ctd", root / userdata.CERTS_DIR)
    try:
        lab.run_stages(apply=True)
        (f,) = [f for f in mirrors.hosts_files(lab.params, None) if f.namespace == "docker.io"]
        text = f.render()  # rendered without a version, as in the userData: dial_timeout kept
        assert userdata.dial_line(lab.params.karpenter.dial_timeout) in text.splitlines()
        hosts = root / DOCKER_HOSTS
        hosts.parent.mkdir(parents=True)
        hosts.write_text(text)

        ctd.start()
        before = counters(lab)
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        after = counters(lab)
        assert after["manifest_requests"] > before.get("manifest_requests", 0)
        assert after["bytes_served"] > before.get("bytes_served", 0)
        log = ctd.log_text()
        assert "failed to decode" not in log and "trying next host" not in log
    finally:
        ctd.stop()
        lab.emulator.stop()
        REDACTOR.clear()


def test_boot_with_a_black_holed_mirror_writes_every_file_and_finishes(tmp_path) -> None:
    """The other way a mirror is down: its address swallows packets (no refusal, no ICMP), as a security
    group or a dead load balancer does. The boot script still writes every file, and its probes (parallel,
    bounded by probe_timeout_s) let it finish; run_script's own timeout would fail a hang."""
    from tests.support.karpenter import make_params, upstream

    # a route into lo for an address nobody holds: SYNs are sent and never answered (no RST, no ICMP), so a
    # connect hangs until its timeout; only in this private namespace
    blackhole, net = "10.213.0.2", "10.213.0.0/24"
    subprocess.run(["ip", "route", "add", net, "dev", "lo"], check=True)
    try:
        ups = [
            upstream("docker.io", "https://registry-1.docker.io", f"http://{blackhole}:5000", "docker-hub"),
            upstream("quay.io", "https://quay.io", f"http://{blackhole}:5001"),
        ]
        script = userdata.shell_scripts(
            stage.render(make_params(upstreams=ups, probe_timeout_s=1), no_secret).new_class_user_data
        )[0]
        result = run_script(script, tmp_path / "node")
        assert result.returncode == 0, result.stderr
        assert "2 of 2 hosts.toml" in result.stderr
        for port in (5000, 5001):
            assert f"no registry answer from http://{blackhole}:{port}/v2/ (HTTP 000" in result.stderr
        assert len(tree(tmp_path / "node")) == 2
    finally:
        subprocess.run(["ip", "route", "del", net, "dev", "lo"], check=False)
