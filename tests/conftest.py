"""Shared test fixtures and the policy for tests that need real components.

`make test` runs the whole suite inside a private network namespace (`unshare --net`, loopback up)
when it runs as root, so real containerd can never fall back to the internet and lab ports cannot
collide with anything else on the machine. Tests marked `netns` need that namespace and the Debian
packages; outside it they skip with the reason. Under CI (CI=true) a skip of that kind would hide a
missing install step, so there it is an error instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Public reference data the tests check against (see tests/data/reference/PROVENANCE.md)
REFERENCE = REPO / "tests" / "data" / "reference"


def in_private_netns() -> bool:
    # Not /sys/class/net: sysfs shows the namespace of whoever mounted /sys, not ours.
    from runbook_lab.netns import in_private_netns as check

    return check()


def missing_real_parts() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not in_private_netns():
        missing.append("a private network namespace (run through `make test`)")
    for tool in ("docker-registry", "containerd", "ctr"):
        if not shutil.which(tool):
            missing.append(f"{tool} (Debian package, installed by `make test` as root)")
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_real_parts()
    if not missing:
        return
    reason = "needs " + ", ".join(missing)
    for item in items:
        if "netns" in item.keywords:
            if os.environ.get("CI"):
                item.add_marker(pytest.mark.usefixtures("_ci_requires_real_parts"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture
def _ci_requires_real_parts() -> None:
    pytest.fail("CI must run this test with real parts, but it lacks " + ", ".join(missing_real_parts()))


@pytest.fixture
def kube():
    """A Kubernetes API stand-in on an ephemeral port, stopped afterwards."""
    from runbook_lab.kube import KubeStandIn

    standin = KubeStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def kubeconfig(kube, tmp_path: Path) -> Path:
    """A kubeconfig for the `kube` stand-in, as the official client and kubectl read it."""
    from runbook_lab.kube import write_kubeconfig

    return write_kubeconfig(tmp_path / "kubeconfig", kube.url)


@pytest.fixture
def nexus(tmp_path: Path):
    """A Nexus emulator (REST only) on an ephemeral port with a test client; modules may override it."""
    from tests.support.lab_nexus import running_nexus

    with running_nexus(tmp_path / "data") as nx:
        yield nx
