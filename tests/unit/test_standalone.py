"""The repository stands alone: no tracked file points at material outside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Built so that this file does not hold the string it looks for.
OUTSIDE = "shared" + "/"


def tracked_files() -> list[Path]:
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an installed copy): nothing tracked to check")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_names_the_folder_beside_the_checkout() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for p in tracked_files()
        if p.is_file() and OUTSIDE in p.read_bytes().decode(errors="replace")
    ]
    assert not offenders, f"these files cite material users do not have: {offenders}"


def test_reference_data_has_its_provenance() -> None:
    reference = REPO / "tests" / "data" / "reference"
    provenance = (reference / "PROVENANCE.md").read_text()
    for path in sorted(reference.rglob("*")):
        if path.is_file() and path.name != "PROVENANCE.md":
            assert str(path.relative_to(reference)) in provenance, path
