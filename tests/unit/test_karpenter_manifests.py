"""Generated node class manifests validate against the vendored Karpenter CRDs for all three API versions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from runbook_lib.karpenter import manifests, schemas
from runbook_lib.karpenter import nodes as stage
from tests.support.karpenter import make_params

CRDS = Path(__file__).resolve().parents[2] / "runbook_lib" / "karpenter" / "crds"


def test_vendored_crds_are_the_files_listed_in_provenance() -> None:
    """Every CRD file is listed in crds/PROVENANCE with the sha256 of the upstream file, and matches it."""
    listed = {}
    for line in (CRDS / "PROVENANCE").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            listed[parts[1]] = parts[0]
    files = sorted(p.relative_to(CRDS).as_posix() for p in CRDS.rglob("*.yaml"))
    assert sorted(listed) == files
    for rel, digest in listed.items():
        assert hashlib.sha256((CRDS / rel).read_bytes()).hexdigest() == digest, rel


# (api_version, Karpenter version, family, CRD sets to validate against: oldest and newest of the line)
CASES = [
    ("v1", "1.14.1", "AL2023", ["v1.0.0", "v1.14.1"]),
    ("v1", "1.0.0", "AL2", ["v1.0.0", "v1.14.1"]),
    ("v1", None, "Bottlerocket", ["v1.0.0", "v1.14.1"]),
    ("v1beta1", "0.37.0", "AL2023", ["v0.37.0"]),
    ("v1beta1", "0.32.10", "AL2", ["v0.32.10", "v0.37.0"]),
    ("v1beta1", "0.33.0", "Bottlerocket", ["v0.32.10", "v0.37.0"]),
    ("v1alpha1", "0.31.5", "AL2", ["v0.31.5"]),
    ("v1alpha1", None, "Bottlerocket", ["v0.31.5"]),
]


@pytest.mark.parametrize(("api", "version", "family", "crd_sets"), CASES)
def test_example_manifests_validate(api, version, family, crd_sets, tmp_path) -> None:
    params = make_params(api_version=api, version=version, ami_family=family)
    user_data = stage.render(params, lambda ref, user=None: "x").new_class_user_data
    docs = manifests.examples(params, user_data)
    assert [p for p in manifests.validate(docs, params)] == []
    for crd_set in crd_sets:
        assert [str(p) for doc in docs for p in schemas.validate(doc, crd_set)] == [], crd_set
    path = manifests.write(tmp_path, params, user_data)
    reread = list(yaml.safe_load_all(path.read_text()))
    assert reread == docs and reread[0]["spec"]["userData"] == user_data
    assert "&id" not in path.read_text()


def crd_budget_reasons(crd_set: str) -> tuple[str, ...]:
    """The disruption reasons the vendored NodePool CRD allows in budgets[].reasons."""
    crd = yaml.safe_load((CRDS / crd_set / "karpenter.sh_nodepools.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    budgets = schema["properties"]["spec"]["properties"]["disruption"]["properties"]["budgets"]
    return tuple(budgets["items"]["properties"]["reasons"]["items"]["enum"])


@pytest.mark.parametrize("crd_set", ["v1.0.0", "v1.14.1"])
def test_v1_example_budgets_cover_consolidation_as_well_as_drift(crd_set) -> None:
    """Karpenter takes, per reason, the minimum of the budgets that list it or list none: a reason no
    budget covers is unconstrained. Every reason the CRD knows (Underutilized, Empty, Drifted) is paced."""
    reasons = crd_budget_reasons(crd_set)
    assert {"Underutilized", "Empty", "Drifted"} <= set(reasons)
    pool = manifests.node_pool(make_params(api_version="v1", version="1.14.1"), "p", "x")
    assert manifests.unbudgeted_reasons(pool, reasons) == []
    assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "10%"}]
    # the check itself: a drift-only budget leaves consolidation free
    drift_only = {"spec": {"disruption": {"budgets": [{"nodes": "10%", "reasons": ["Drifted"]}]}}}
    assert manifests.unbudgeted_reasons(drift_only, reasons) == [r for r in reasons if r != "Drifted"]
    assert manifests.unbudgeted_reasons({"spec": {}}, reasons) == []  # Karpenter's default budget


def test_al2023_is_rejected_by_the_v032_schema() -> None:
    params = make_params(api_version="v1beta1", version="0.37.0", ami_family="AL2023")
    doc = manifests.node_class(params, "x", "")
    assert any("amiFamily" in p.path and p.severity == "error" for p in schemas.validate(doc, "v0.32.10"))


def test_budgets_unknown_to_v032_are_reported_as_dropped_fields() -> None:
    params = make_params(api_version="v1beta1", version="0.37.0", ami_family="AL2")
    pool = manifests.node_pool(params, "p", "x")
    problems = schemas.validate(pool, "v0.32.10")
    assert [(p.path, p.severity) for p in problems] == [("spec.disruption.budgets", "warning")]
    old = make_params(api_version="v1beta1", version="0.32.10", ami_family="AL2")
    assert "disruption" not in manifests.node_pool(old, "p", "x")["spec"]


def test_schema_errors_are_found() -> None:
    params = make_params()
    doc = manifests.node_class(params, "x", "ud")
    doc["spec"]["userData"] = 42
    del doc["spec"]["subnetSelectorTerms"]
    messages = [str(p) for p in schemas.validate(doc, "v1.14.1")]
    assert any("userData" in m and "string" in m for m in messages)
    assert any("subnetSelectorTerms" in m and "required" in m for m in messages)


def test_crd_set_for_karpenter_versions() -> None:
    assert schemas.crd_set_for("v1", "1.14.1") == "v1.14.1"
    assert schemas.crd_set_for("v1", "1.3.0") == "v1.0.0"
    assert schemas.crd_set_for("v1beta1", "0.32.4") == "v0.32.10"
    assert schemas.crd_set_for("v1beta1", "0.36.2") == "v0.37.0"
    assert schemas.crd_set_for("v1alpha1", None) == "v0.31.5"
    assert schemas.crd_set_for("v1", None) == "v1.14.1"
