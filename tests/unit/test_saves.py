"""The runner's papermill engine coalesces the saves between cells and never skips the final one."""

from __future__ import annotations

import nbformat
import papermill
import pytest

from runbook_lib.audit import saves


def notebook(path, cells: int, fail_at: int | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i in range(cells):
        nb.cells.append(nbformat.v4.new_markdown_cell(f"step {i}"))
        nb.cells.append(
            nbformat.v4.new_code_cell("raise RuntimeError('x')" if i == fail_at else f"print({i})")
        )
    nbformat.write(nb, path)


@pytest.fixture
def counted(monkeypatch):
    import papermill.engines as engines

    calls = []
    real = engines.write_ipynb

    def write(nb, path):
        calls.append(path)
        return real(nb, path)

    monkeypatch.setattr(engines, "write_ipynb", write)
    saves.register_engine()
    return calls


def test_saves_are_coalesced_and_the_last_one_holds_every_output(tmp_path, counted) -> None:
    notebook(tmp_path / "in.ipynb", 15)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(tmp_path / "in.ipynb"),
        str(out),
        engine_name=saves.ENGINE,
        progress_bar=False,
        kernel_name="python3",
    )
    assert len(counted) < 30 * 2 / 4  # papermill alone saves at every cell's start and end
    done = nbformat.read(out, as_version=4)
    printed = [c.outputs[0]["text"].strip() for c in done.cells if c.cell_type == "code"]
    assert printed == [str(i) for i in range(15)]


def test_a_failing_cell_still_gets_the_final_save(tmp_path, counted) -> None:
    notebook(tmp_path / "in.ipynb", 6, fail_at=4)
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(tmp_path / "in.ipynb"),
            str(out),
            engine_name=saves.ENGINE,
            progress_bar=False,
            kernel_name="python3",
        )
    done = nbformat.read(out, as_version=4)
    codes = [c for c in done.cells if c.cell_type == "code"]
    assert codes[4].outputs[0]["ename"] == "RuntimeError" and codes[3].outputs[0]["text"].strip() == "3"
