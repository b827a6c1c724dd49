"""Real containerd on the generated userData (issue #6 acceptance), in the private network namespace.

For AL2 and AL2023: the shell part of the generated userData runs twice below a sandbox root (its root
override), leaving identical, valid hosts.toml files; a real containerd whose CRI config_path is that
sandbox's certs.d pulls docker.io/library/demo:1 through the Nexus emulator's connector (after stages 1-2;
the emulator's /_lab/counters prove the mirror served it). Then the mirror goes down: the next cold pull
falls back to the upstream stand-in (the Docker Hub front's counters move) instead of hanging, and a node
booting now still gets every hosts.toml (the probe only logs the outage).

With a credential in the files (authenticated mode, static-header nodes) they are written 0600 and real
containerd still reads them and pulls through the mirror.
"""

from __future__ import annotations

import tomllib

import httpx
import pytest

from runbook_lib.containerd.hosts import validate
from runbook_lib.containerd.preflight import check_config
from runbook_lib.karpenter import nodes as stage
from runbook_lib.karpenter import userdata
from runbook_lib.secrets import REDACTOR
from tests.support.karpenter import no_secret, run_script, tree
from tests.support.labkit import Lab, upstream_fixture

pytestmark = pytest.mark.netns
upstream = pytest.fixture(upstream_fixture)  # per test: each one takes its mirror down
IMAGE = "docker.io/library/demo:1"


def counters(lab: Lab) -> dict:
    return httpx.get(f"{lab.params.nexus.url}/_lab/counters", timeout=5).json().get("docker", {})


@pytest.mark.parametrize("family", ["AL2", "AL2023"])
def test_generated_userdata_makes_real_containerd_pull_through_the_mirror(
    tmp_path, upstream, monkeypatch, family
) -> None:
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient

    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    lab = Lab(tmp_path / "lab", upstream.url, "anonymous")
    quay = lab.params.upstream("quay.io")
    quay.mirror_url = f"http://127.0.0.1:{quay.connector_port}"
    lab.params.karpenter.ami_family = family
    root = tmp_path / "node"
    ctd = PrivateContainerd(tmp_path / "ctd", root / userdata.CERTS_DIR)
    try:
        lab.run_stages(apply=True)
        user_data = stage.render(lab.params, no_secret).new_class_user_data
        scripts = userdata.shell_scripts(user_data)  # what a node's cloud-init runs
        assert len(scripts) == 1
        for _ in range(2):
            result = run_script(scripts[0], root)
            assert result.returncode == 0 and "2 of 2 hosts.toml" in result.stderr, result.stderr
            files = tree(root)
            assert sorted(files) == [
                "etc/containerd/certs.d/docker.io/hosts.toml",
                "etc/containerd/certs.d/quay.io/hosts.toml",
            ]
            if _ == 0:
                first = files
        assert files == first
        docker = files["etc/containerd/certs.d/docker.io/hosts.toml"].decode()
        assert validate(docker) == []
        mirror = lab.params.upstream("docker.io").mirror_url
        assert tomllib.loads(docker) == {
            "server": upstream.url,
            "host": {mirror: {"capabilities": ["pull", "resolve"]}},
        }

        ctd.start()
        before = counters(lab)
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
        after = counters(lab)
        assert after["manifest_requests"] > before.get("manifest_requests", 0)
        assert after["blob_requests"] >= before.get("blob_requests", 0) + 2  # config + layer(s)
        assert "trying next host" not in ctd.log_text()

        # The mirror goes down: the file stays, containerd falls back to `server` (the upstream) at once.
        lab.emulator.stop()
        ctd.remove_all_images()
        hub_before = upstream.hub.state()["counters"]
        offset = ctd.log_offset()
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        hub_after = upstream.hub.state()["counters"]
        manifests = ("manifest_head", "manifest_get")
        assert sum(hub_after.get(k, 0) for k in manifests) > sum(hub_before.get(k, 0) for k in manifests)
        assert "trying next host" in ctd.log_since(offset)

        # A node booting while the mirror is down still gets every file (issue #12; the pull through the
        # mirror once it is back: test_node_boot_mirror_down.py); the probe only logs the outage.
        result = run_script(scripts[0], tmp_path / "late-node")
        assert result.returncode == 0 and "2 of 2 hosts.toml" in result.stderr
        assert "no registry answer" in result.stderr and tree(tmp_path / "late-node") == files
    finally:
        ctd.stop()
        lab.emulator.stop()
        REDACTOR.clear()


def test_credential_hosts_toml_is_0600_and_real_containerd_pulls_with_it(
    tmp_path, upstream, monkeypatch
) -> None:
    """Authenticated mode, static-header nodes: the hosts.toml that carries the pull credential is written
    0600 (root only, like the real containerd that reads it), and containerd still pulls through the mirror
    with it (Nexus has anonymous access off, so only the header gets the pull through)."""
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient

    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    lab = Lab(tmp_path / "lab", upstream.url, "authenticated")
    quay = lab.params.upstream("quay.io")
    quay.mirror_url = f"http://127.0.0.1:{quay.connector_port}"
    lab.params.karpenter.credential_mode = "static-header"
    root = tmp_path / "node"
    ctd = PrivateContainerd(tmp_path / "ctd", root / userdata.CERTS_DIR)
    try:
        lab.run_stages(apply=True)
        scripts = userdata.shell_scripts(stage.render(lab.params, lab.secret).new_class_user_data)
        result = run_script(scripts[0], root)
        assert result.returncode == 0 and "2 of 2 hosts.toml" in result.stderr, result.stderr
        certs = root / userdata.CERTS_DIR
        for registry in ("docker.io", "quay.io"):
            hosts = certs / registry / "hosts.toml"
            table = next(iter(tomllib.loads(hosts.read_text())["host"].values()))
            assert table["header"]["Authorization"].startswith("Basic ")
            assert oct(hosts.stat().st_mode & 0o777) == "0o600", registry
            assert hosts.stat().st_uid == 0  # written by root: containerd (root) reads it, nobody else
        assert sorted(p.name for p in (certs / "docker.io").iterdir()) == ["hosts.toml"]  # no temp file

        ctd.start()
        before = counters(lab)
        with CRIImageClient(str(ctd.socket), timeout=60) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        after = counters(lab)
        # bytes_served moves only for an authorized answer (a 401 is counted as a request, not served)
        assert after["bytes_served"] > before.get("bytes_served", 0)
        assert "trying next host" not in ctd.log_text()
    finally:
        ctd.stop()
        lab.emulator.stop()
        REDACTOR.clear()


def test_preflight_verdict_on_legacy_mirrors_matches_real_containerd(tmp_path) -> None:
    """Our preflight says legacy registry.mirrors beside config_path breaks CRI; the real daemon agrees."""
    from runbook_lab.containerd import CRI_PLUGIN, PrivateContainerd

    legacy = {
        "plugins": {
            CRI_PLUGIN: {"registry": {"mirrors": {"docker.io": {"endpoint": ["http://127.0.0.1:9"]}}}}
        }
    }
    for extra, cri_ok in (({}, True), (legacy, False)):
        ctd = PrivateContainerd(
            tmp_path / ("bad" if extra else "good"), tmp_path / "certs", extra_config=extra
        )
        try:
            ctd.start()
            checks = {
                c.name: c.ok
                for c in check_config(ctd.config_path.read_text(), None, certs_dir=str(ctd.certs_dir))
            }
            assert checks["no legacy registry.mirrors beside config_path"] is cri_ok
            assert checks["config_path set"]
            assert ctd.cri_loaded() is cri_ok
        finally:
            ctd.stop()
