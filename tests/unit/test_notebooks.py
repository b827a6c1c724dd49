"""Stage notebooks: narrative first, one parameters cell with the runner's contract, short cells."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from runbook_lib.params import STAGES

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "runbook_lib" / "notebooks").glob("*.ipynb"))
PARAMETER_NAMES = {"params_file", "apply", "run_dir", "stage"}


def test_one_notebook_per_stage_in_order() -> None:
    assert len(NOTEBOOKS) == len(STAGES)
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(STAGES))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params_cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params_cells) == 1
    names = {line.split(":", 1)[0].strip() for line in params_cells[0].source.splitlines() if line.strip()}
    assert names == PARAMETER_NAMES
    for cell in nb.cells:
        if cell.cell_type == "code":
            code_lines = [
                ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")
            ]
            assert len(code_lines) <= 15, cell.source
            assert not cell.get("outputs"), "notebooks are committed without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stage_id_matches_file(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    source = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    stage = next(line for line in source.splitlines() if line.startswith("stage"))
    assert f'"{STAGES[int(path.name[:2])]}"' in stage
