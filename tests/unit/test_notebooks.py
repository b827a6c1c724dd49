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


def test_every_library_name_a_notebook_calls_exists() -> None:
    """`module.name` in a stage notebook resolves in runbook_lib (a rename in the library cannot strand a
    notebook until a lab run finds it)."""
    import ast
    import importlib

    import nbformat

    from runbook_lib.runner import default_notebooks_dir

    missing = []
    for path in sorted(default_notebooks_dir().glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        tree = ast.parse(code)
        modules: dict[str, object] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runbook_lib"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    try:
                        modules[alias.asname or alias.name] = importlib.import_module(target)
                    except ModuleNotFoundError:
                        parent = importlib.import_module(node.module)
                        if not hasattr(parent, alias.name):
                            missing.append(f"{path.name}: {target}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = modules.get(node.value.id)
                if module is not None and not hasattr(module, node.attr):
                    missing.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert missing == []
