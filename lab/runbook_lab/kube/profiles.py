"""Named sets of the Karpenter CRDs (runbook_lib/karpenter/crds, see its PROVENANCE) installed on a fresh
state."""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PROFILES: dict[str, tuple[str, ...]] = {
    "all": ("v1.0.0", "v0.31.5"),
    "v1": ("v1.14.1",),
    "v1.0": ("v1.0.0",),
    "v1beta1": ("v0.37.0",),
    "v0.32": ("v0.32.10", "v0.31.5"),
    "v1alpha5": ("v0.31.5",),
    "none": (),
}


def crd_files(profile: str) -> list[Any]:
    if profile not in PROFILES:
        raise ValueError(f"unknown CRD profile {profile!r}; choose one of {', '.join(PROFILES)}")
    # one copy of the CRDs, the runbook's own (data, not logic: the lab may read it)
    root = resources.files("runbook_lib.karpenter").joinpath("crds")
    files = []
    for folder in PROFILES[profile]:
        files.extend(
            sorted(
                (f for f in root.joinpath(folder).iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name
            )
        )
    return files


@functools.cache
def _parsed(profile: str) -> tuple[dict[str, Any], ...]:
    crds = []
    for f in crd_files(profile):
        for doc in yaml.load_all(f.read_text(), Loader=_Loader):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return tuple(crds)


def load_profile(profile: str) -> list[dict[str, Any]]:
    """The CRD objects of a profile, as parsed from the vendored YAML (fresh copies)."""
    return copy.deepcopy(list(_parsed(profile)))
