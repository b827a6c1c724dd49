"""Helm 3 release Secrets: encode like Helm, decode, read the right revision from the Kubernetes stand-in."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from runbook_lab.helm_seed import install_values, release_document, seed_helm_release
from runbook_lab.kube import KubeStandIn, write_kubeconfig
from runbook_lib import params as params_mod
from runbook_lib.helm import release, values
from runbook_lib.helm.release import (
    RELEASE_TYPE,
    decode_release,
    decode_secret_data,
    encode_release,
    secret_name,
)
from runbook_lib.plan import StageFailed

REPO = Path(__file__).resolve().parents[2]

# The shape `helm install` stores (pkg/release: Release, Info, chart.Chart with Metadata), abridged.
REAL_SHAPED = {
    "name": "nxrm",
    "info": {
        "first_deployed": "2026-03-02T09:14:07.512398124Z",
        "last_deployed": "2026-03-02T09:14:07.512398124Z",
        "deleted": "",
        "description": "Install complete",
        "status": "deployed",
        "notes": "",
    },
    "chart": {
        "metadata": {
            "name": "nxrm-ha",
            "home": "https://www.sonatype.com/products/sonatype-nexus-repository",
            "version": "95.2.0",
            "description": "Resilient Deployment of Sonatype Nexus Repository",
            "keywords": ["nexus3"],
            "maintainers": [{"name": "Sonatype"}],
            "apiVersion": "v2",
            "appVersion": "3.95.2",
            "type": "application",
        },
        "lock": None,
        "templates": [{"name": "templates/services.yaml", "data": base64.b64encode(b"# template").decode()}],
        "values": {
            "nexus": {"docker": {"enabled": False, "type": "NodePort", "protocol": "TCP"}},
            "ingress": {"enabled": False, "ingressClassName": None},
        },
        "schema": None,
        "files": [],
    },
    "config": {
        "ingress": {
            "enabled": True,
            "host": "nexus.example.com",
            "defaultRule": True,
            "ingressClassName": "nginx",
        }
    },
    "manifest": "---\n# Source: nxrm-ha/templates/service-headless.yaml\napiVersion: v1\nkind: Service\n",
    "version": 3,
    "namespace": "nexusrepo",
}


def test_encode_decode_round_trip() -> None:
    stored = encode_release(REAL_SHAPED)
    raw = base64.b64decode(stored)
    assert raw[:3] == b"\x1f\x8b\x08", "gzip like Helm's encodeRelease"
    assert stored.startswith("H4sI")  # what every Helm 3 release value starts with
    assert decode_release(stored) == REAL_SHAPED
    # As the Kubernetes API returns the Secret's data: base64 once more.
    assert decode_secret_data(base64.b64encode(stored.encode()).decode()) == REAL_SHAPED


def test_decode_uncompressed_release_from_before_compression() -> None:
    stored = base64.b64encode(json.dumps(REAL_SHAPED).encode()).decode()
    assert decode_release(stored) == REAL_SHAPED


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode_release("not base64 at all!")
    with pytest.raises(ValueError):
        decode_release(base64.b64encode(gzip.compress(b"[1, 2]")).decode())


def test_release_values_are_defaults_merged_with_config() -> None:
    rel = release.Release.from_json(REAL_SHAPED, "test")
    assert (rel.chart_name, rel.chart_version, rel.version, rel.status) == (
        "nxrm-ha",
        "95.2.0",
        3,
        "deployed",
    )
    assert rel.values["ingress"] == {
        "enabled": True,
        "ingressClassName": "nginx",
        "host": "nexus.example.com",
        "defaultRule": True,
    }
    assert rel.values["nexus"]["docker"]["type"] == "NodePort"
    # Helm: null in user values deletes the default
    assert (
        "type"
        not in values.coalesce(rel.chart_values, {"nexus": {"docker": {"type": None}}})["nexus"]["docker"]
    )


# -- against the Kubernetes stand-in -------------------------------------------------------------------
@pytest.fixture
def api(tmp_path) -> Iterator[client.ApiClient]:
    kube = KubeStandIn().start()
    api_client = config.new_client_from_config(
        config_file=str(write_kubeconfig(tmp_path / "kubeconfig", kube.url))
    )
    yield api_client
    api_client.close()
    kube.stop()


def lab_params(**helm) -> params_mod.RunbookParams:
    data = yaml.safe_load((REPO / "parameters" / "lab.yaml").read_text())
    data["helm"].update(helm)
    return params_mod.parse(data, "test", REPO / "parameters")


def store(api, doc: dict, status: str) -> None:
    """Write a revision the way Helm's Secrets driver does."""
    client.CoreV1Api(api).create_namespaced_secret(
        doc["namespace"],
        {
            "metadata": {
                "name": secret_name(doc["name"], doc["version"]),
                "labels": {
                    "name": doc["name"],
                    "owner": "helm",
                    "status": status,
                    "version": str(doc["version"]),
                },
            },
            "type": RELEASE_TYPE,
            "data": {"release": base64.b64encode(encode_release(doc).encode()).decode()},
        },
    )


def test_seed_writes_a_release_helm_can_read(api) -> None:
    p = lab_params()
    assert seed_helm_release(api, p)["created"] is True
    assert seed_helm_release(api, p)["created"] is False  # idempotent
    raw = json.loads(
        client.CoreV1Api(api)
        .read_namespaced_secret("sh.helm.release.v1.nxrm.v1", "nexusrepo", _preload_content=False)
        .data
    )
    assert raw["type"] == "helm.sh/release.v1"
    assert {k: v for k, v in raw["metadata"]["labels"].items() if k != "createdAt"} == {
        "name": "nxrm",
        "owner": "helm",
        "status": "deployed",
        "version": "1",
    }
    assert raw["metadata"]["labels"]["createdAt"].isdigit()
    assert base64.b64decode(raw["data"]["release"]).startswith(
        b"H4sI"
    )  # base64 of gzip, base64 again by the API
    rel = release.current(p, api)
    assert rel.record() == {
        "name": "nxrm",
        "namespace": "nexusrepo",
        "revision": 1,
        "status": "deployed",
        "chart": "nxrm-ha-95.2.0",
        "source": "Secret nexusrepo/sh.helm.release.v1.nxrm.v1",
    }
    assert rel.config == install_values(p)
    assert rel.values["nexus"]["docker"] == {"enabled": False, "type": "NodePort", "protocol": "TCP"}
    assert "kind: Service" in decode_secret_data(raw["data"]["release"])["manifest"]


@pytest.mark.parametrize("flavour", ["nexus-repository-manager", "nxrm-aws-resiliency"])
def test_seed_for_the_older_charts(api, flavour) -> None:
    p = lab_params(flavour=flavour)
    seed_helm_release(api, p)
    rel = release.current(p, api)
    assert rel.chart_name == flavour and rel.chart_version == "64.2.0" and rel.chart.get("deprecated") is True


def test_reads_the_deployed_revision(api) -> None:
    p = lab_params()
    seed_helm_release(api, p)
    doc = release_document(p)
    store(
        api,
        {
            **doc,
            "version": 2,
            "config": {**doc["config"], "marker": "two"},
            "info": {**doc["info"], "status": "deployed"},
        },
        "deployed",
    )
    client.CoreV1Api(api).patch_namespaced_secret(
        "sh.helm.release.v1.nxrm.v1",
        "nexusrepo",
        {"metadata": {"labels": {"status": "superseded"}}},
        _content_type="application/merge-patch+json",
    )
    store(
        api,
        {**doc, "version": 3, "config": {"marker": "three"}, "info": {**doc["info"], "status": "failed"}},
        "failed",
    )
    rel = release.current(p, api)
    assert rel.version == 2 and rel.config["marker"] == "two"
    assert rel.history == [(1, "superseded"), (2, "deployed"), (3, "failed")]


def test_pending_operation_and_wrong_chart_are_refused(api) -> None:
    p = lab_params()
    with pytest.raises(StageFailed, match="no Helm release 'nxrm'"):
        release.current(p, api)
    seed_helm_release(api, p)
    with pytest.raises(
        StageFailed, match="installed from chart nxrm-ha 95.2.0, but helm.flavour is nxrm-aws"
    ):
        release.current(lab_params(flavour="nxrm-aws-resiliency"), api)
    doc = release_document(p)
    store(api, {**doc, "version": 2, "info": {**doc["info"], "status": "pending-upgrade"}}, "pending-upgrade")
    with pytest.raises(StageFailed, match="pending-upgrade: another Helm operation"):
        release.current(p, api)


@pytest.mark.parametrize("flavour", ["nxrm-ha", "nexus-repository-manager", "nxrm-aws-resiliency"])
def test_lab_seed_ui_services_are_what_the_chart_renders(reference_dir, flavour) -> None:
    """The lab's own UI Services equal the chart's `helm template` output (release nxrm in nexusrepo)."""
    rendered = yaml.safe_load_all(
        (reference_dir / "nexus-helm" / flavour / "rendered-docker-8082.yaml").read_text()
    )
    golden = [d for d in rendered if d and d["kind"] == "Service" and "docker" not in d["metadata"]["name"]]
    seeded = yaml.safe_load_all(
        release_document(lab_params(flavour=flavour, release="nxrm", namespace="nexusrepo"))["manifest"]
    )
    assert sorted((d for d in seeded if d), key=lambda d: d["metadata"]["name"]) == sorted(
        golden, key=lambda d: d["metadata"]["name"]
    )
