"""The lab serves the runbook's one copy of the Karpenter CRDs (runbook_lib/karpenter/crds, see its
PROVENANCE)."""

from __future__ import annotations

from pathlib import Path

from runbook_lab.kube.profiles import PROFILES, load_profile

CRDS = Path(__file__).resolve().parents[2] / "runbook_lib" / "karpenter" / "crds"


def test_every_crd_folder_is_used_by_a_profile() -> None:
    used = {folder for folders in PROFILES.values() for folder in folders}
    assert used == {p.name for p in CRDS.iterdir() if p.is_dir()}


def test_the_v1_profile_serves_nodepools_nodeclaims_and_node_classes() -> None:
    kinds = sorted(crd["spec"]["names"]["kind"] for crd in load_profile("v1"))
    assert kinds == ["EC2NodeClass", "NodeClaim", "NodePool"]
