"""The vendored Karpenter CRDs are unmodified copies of the reference files named in crds/PROVENANCE."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from runbook_lib.lab.kube.profiles import PROFILES
from tests.conftest import SHARED

CRDS = Path(__file__).resolve().parent.parent / "runbook_lib" / "lab" / "kube" / "crds"
# folder here -> folder in shared/reference/karpenter (see PROVENANCE)
REFERENCE = {"v1.14.1": "v1", "v1.0.0": "v1/v1.0.0", "v0.37.0": "v1beta1", "v0.32.10": "v1beta1/v0.32.10"}


def _provenance_digests() -> dict[str, str]:
    text = (CRDS / "PROVENANCE").read_text()
    return {path: digest for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_every_vendored_file_is_listed_with_its_digest() -> None:
    digests = _provenance_digests()
    files = {str(p.relative_to(CRDS)) for p in CRDS.rglob("*.yaml")}
    assert files == set(digests)
    for rel, digest in digests.items():
        assert hashlib.sha256((CRDS / rel).read_bytes()).hexdigest() == digest, rel
    used = {folder for folders in PROFILES.values() for folder in folders}
    assert used == {p.name for p in CRDS.iterdir() if p.is_dir()}


def test_vendored_files_equal_the_reference_copies() -> None:
    reference = SHARED / "reference" / "karpenter"
    if not reference.is_dir():
        pytest.skip(f"reference material not present at {reference}")
    for path in CRDS.rglob("*.yaml"):
        folder = path.parent.name
        if folder in REFERENCE:
            source = reference / REFERENCE[folder] / path.name
        else:  # v0.31.5: AWSNodeTemplate is v1alpha1, Provisioner/Machine are v1alpha5
            source = reference / ("v1alpha1" if "awsnodetemplates" in path.name else "v1alpha5") / path.name
        assert path.read_bytes() == source.read_bytes(), path
