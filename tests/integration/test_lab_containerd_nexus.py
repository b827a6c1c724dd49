"""Real containerd pulls through the Nexus emulator's docker connector (issues #3 and #4).

The Nexus stages configure the emulator (anonymous and authenticated mode), our renderer writes the
node's docker.io hosts.toml, and a private containerd pulls `docker.io/library/demo:1` over CRI. The
connector's counters and the proxy's components prove the mirror served it; then the upstream is taken
down and a cold pull of the cached image still succeeds — only the mirror can have served it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runbook_lib.containerd.hosts import HostsToml, MirrorHost, basic_header
from runbook_lib.nexus.client import NexusClient
from runbook_lib.secrets import REDACTOR
from tests.support.labkit import Lab, upstream_fixture

pytestmark = pytest.mark.netns
upstream = pytest.fixture(upstream_fixture)  # per test: each one takes its upstream down
IMAGE = "docker.io/library/demo:1"


def write_hosts(certs: Path, lab: Lab, credentials: tuple[str, str] | None) -> str:
    up = lab.params.upstream("docker.io")
    headers = {"Authorization": basic_header(*credentials)} if credentials else {}
    f = HostsToml("docker.io", up.remote_url, [MirrorHost(up.mirror_url, headers=headers)])
    path = certs / f.relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f.render())
    tmp.replace(path)
    return up.mirror_url


def connector_stats(lab: Lab) -> dict:
    return httpx.get(f"{lab.params.nexus.url}/_lab/counters", timeout=5).json()


@pytest.mark.parametrize("mode", ["anonymous", "authenticated"])
def test_containerd_pulls_through_the_nexus_connector(tmp_path, upstream, monkeypatch, mode) -> None:
    from runbook_lab.containerd import PrivateContainerd
    from runbook_lab.cri import CRIImageClient

    monkeypatch.setenv("TEST_NEXUS_ADMIN", "managed-admin-secret")
    monkeypatch.setenv("TEST_PULL_PASSWORD", "pull-user-secret")
    lab = Lab(tmp_path / "lab", upstream.url, mode)
    ctd = PrivateContainerd(tmp_path / "ctd", tmp_path / "certs")
    try:
        lab.run_stages(apply=True)
        creds = ("docker-pull", "pull-user-secret") if mode == "authenticated" else None
        write_hosts(tmp_path / "certs", lab, creds)
        ctd.start()
        before = connector_stats(lab).get("docker", {})
        with CRIImageClient(str(ctd.socket)) as cri:
            cri.pull(IMAGE)
        after = connector_stats(lab)["docker"]
        assert after["manifest_requests"] > before.get("manifest_requests", 0)
        assert after["blob_requests"] >= before.get("blob_requests", 0) + 2  # config + layer(s)
        assert "trying next host" not in ctd.log_text()

        admin = NexusClient(lab.params.nexus.url, "admin", "managed-admin-secret")
        names = {(c["name"], c["version"]) for c in admin.components("docker-hub")}
        assert ("library/demo", "1") in names

        # Upstream down: a cold pull (images removed) can only be served from the mirror's cache.
        upstream.hub.stop()
        ctd.remove_all_images()
        with CRIImageClient(str(ctd.socket)) as cri:
            cri.pull(IMAGE)
            assert cri.status(IMAGE) is not None
        assert connector_stats(lab)["docker"]["blob_requests"] > after["blob_requests"]
    finally:
        ctd.stop()
        lab.emulator.stop()
        REDACTOR.clear()
