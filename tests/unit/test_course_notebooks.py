"""The onboarding course (issue #13 part 4): its notebooks' shape and narrative, the names they call, that the
lab package ships them, and `runbook notebook --course`."""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from runbook_lab import breakage, course
from runbook_lib import cli, interactive
from runbook_lib.params import STAGES
from runbook_lib.runner import STAGE_NOTEBOOKS, default_notebooks_dir

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "parameters" / "lab.yaml"
NOTEBOOKS = sorted(course.notebooks_dir().glob("*.ipynb"))
NAMES = ["01_the_problem", "02_fix_it_stage_by_stage", "03_break_it_on_purpose", "04_exercises"]


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(course.notebooks_dir() / f"{name}.ipynb", as_version=4)


def text(nb: nbformat.NotebookNode, kind: str) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == kind)


def test_four_numbered_course_notebooks_in_the_lab_package() -> None:
    assert [p.stem for p in NOTEBOOKS] == NAMES
    assert course.notebooks_dir() == REPO / "lab" / "runbook_lab" / "course"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_course_notebook_shape(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.startswith(f"# Course {int(path.name[:2])} — ")
    [params] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert params.source.startswith("params_file: str = ")
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(markdown) >= len(code) / 2  # narrative first: a course reads, it does not only run
    for cell in code:
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert len(lines) <= 15, cell.source
        assert not cell.get("outputs"), "course notebooks are committed without outputs"
        assert "runbook_lib" not in cell.source  # the course drives the runbook as a learner: `runbook ...`


def test_every_course_name_a_notebook_calls_exists() -> None:
    """`course.X` and the names imported from runbook_lab.course resolve (a rename cannot strand a lesson)."""
    missing = []
    for path in NOTEBOOKS:
        tree = ast.parse(text(nbformat.read(path, as_version=4), "code"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module == "runbook_lab.course", node.module
                missing += [f"{path.name}: {a.name}" for a in node.names if not hasattr(course, a.name)]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "course"
            ) and (
                not hasattr(course.Course, node.attr) and node.attr not in course.Course.__dataclass_fields__
            ):
                missing.append(f"{path.name}: course.{node.attr}")
    assert missing == []


def test_the_problem_notebook_shows_429_and_image_pull_backoff_from_the_lab() -> None:
    nb = read("01_the_problem")
    prose, code = text(nb, "markdown"), text(nb, "code")
    for words in ("429", "ImagePullBackOff", "ErrImagePull", "ratelimit-remaining", "NAT gateway"):
        assert words in prose, words
    order = [code.index(call) for call in ("hosts_toml(", "ratelimit()", "use_up_budget(", "scale_up(")]
    assert order == sorted(order)
    assert "course.events(" in code and "course.clean_up()" in code and "course.reset_budget()" in code


def test_fix_it_walks_the_six_stages_in_order_each_with_a_check_against_the_lab() -> None:
    nb = read("02_fix_it_stage_by_stage")
    runs = [re.search(r'run_stage\("([a-z-]+)"', c.source) for c in nb.cells if c.cell_type == "code"]
    assert [m.group(1) for m in runs if m] == list(STAGES)
    cells = nb.cells
    for i, cell in enumerate(cells):
        if "run_stage(" in cell.source:
            check = next(c for c in cells[i + 1 :] if c.cell_type == "code")
            assert "assert " in check.source and "run_stage" not in check.source, check.source
    prose = text(nb, "markdown")
    links = re.findall(r"\]\(stages/([^)]+\.ipynb)\)", prose)
    assert links == [STAGE_NOTEBOOKS[s] for s in STAGES]  # each stage's notebook, in order
    assert set(links) <= {p.name for p in default_notebooks_dir().glob("*.ipynb")}
    for manual in ("Create repository", "Docker Bearer Token Realm", "tee -a", "?ns=", "forceBasicAuth"):
        assert manual in prose, manual  # the original manual steps, and where each goes wrong
    assert prose.count("**Where it goes wrong:**") == len(STAGES)


def test_break_it_has_every_fault_of_the_table_with_its_stage_and_a_fix() -> None:
    nb = read("03_break_it_on_purpose")
    prose, code = text(nb, "markdown"), text(nb, "code")
    for fault in breakage.FAULTS:
        assert f"## `{fault.name}` — caught by stage `{fault.stage}`" in prose
        assert f'fault = "{fault.name}"' in code
        assert fault.message in prose  # what the learner is told to look for
    assert code.count("course.break_fault(fault)") == len(breakage.FAULTS)
    assert code.count("course.fix_fault(fault)") == len(breakage.FAULTS)
    assert code.count("course.caught(fault, out)") == len(breakage.FAULTS)


def test_exercises_are_checked_against_the_lab() -> None:
    nb = read("04_exercises")
    answers = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    checked = re.findall(r'ok = check_answer\("([a-z-]+)", (answer_\d+), course\)', text(nb, "code"))
    assert [name for name, _ in checked] == list(course.EXERCISES)
    for cell, (_, variable) in zip(answers, checked, strict=True):
        assert cell.source.startswith(f"{variable} = None")


def test_course_links_between_notebooks_resolve() -> None:
    for path in NOTEBOOKS:
        for target in re.findall(
            r"\]\(([0-9]{2}_[a-z_]+\.ipynb)\)", text(nbformat.read(path, as_version=4), "markdown")
        ):
            assert (course.notebooks_dir() / target).exists(), f"{path.name} links to {target}"


def test_check_answer_refuses_an_unknown_exercise_and_says_when_there_is_no_answer(capsys) -> None:
    with pytest.raises(course.CourseError, match="no exercise 'nope'"):
        course.check_answer("nope", 1)
    lab = course.Course(LAB, "http://127.0.0.1:9", "http://127.0.0.1:9", None, None)
    assert course.check_answer("dockerhub-remaining", None, lab) is False  # asks nothing of the lab
    assert "no answer yet" in capsys.readouterr().out


def test_the_lab_wheel_ships_the_course(tmp_path: Path) -> None:
    from setuptools import build_meta

    cwd = os.getcwd()
    os.chdir(REPO / "lab")
    try:
        name = build_meta.build_wheel(str(tmp_path))
    finally:
        os.chdir(cwd)
        shutil.rmtree(REPO / "lab" / "build", ignore_errors=True)
    with zipfile.ZipFile(tmp_path / name) as wheel:
        shipped = {n.split("/")[-1] for n in wheel.namelist() if n.startswith("runbook_lab/course/")}
    assert shipped == {p.name for p in NOTEBOOKS}


# ---------------------------------------------------------------------------- `runbook notebook --course`
def test_course_without_the_lab_exits_2_and_says_how_to_install_it(monkeypatch, capsys) -> None:
    started = []
    monkeypatch.setitem(sys.modules, "runbook_lab", None)  # as in an install without the lab
    monkeypatch.setattr(interactive, "launch", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(cli, "cmd_lab", lambda args: started.append(args) or 0)
    assert cli.main(["notebook", "--course", "--params", str(LAB)]) == 2
    err = capsys.readouterr().err
    assert "notebook --course: the built-in lab is not installed" in err and "pip install ./lab" in err
    assert "Traceback" not in err and started == []


def test_course_needs_a_lab_parameters_file(monkeypatch, capsys) -> None:
    started = []
    monkeypatch.setattr(interactive, "launch", lambda *a, **k: started.append(a) or 0)
    monkeypatch.setattr(cli, "cmd_lab", lambda args: started.append(args) or 0)
    assert cli.main(["notebook", "--course", "--params", str(REPO / "parameters" / "eks-example.yaml")]) == 2
    err = capsys.readouterr().err
    assert "lab: --course needs a parameters file with a lab section" in err and started == []


@pytest.mark.parametrize("lab_rc", [0, 1])
def test_course_brings_the_lab_up_then_serves_copies_of_the_course(
    lab_rc: int, monkeypatch, tmp_path
) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(
        cli, "cmd_lab", lambda args: calls.append(("lab", args.action, args.params)) or lab_rc
    )
    monkeypatch.setattr(
        interactive, "launch", lambda nb, port, params, out: calls.append(("jupyter", nb, params)) or 0
    )
    folder = tmp_path / "course"
    assert cli.main(["notebook", "--course", "--params", str(LAB), "--dir", str(folder)]) == lab_rc
    if lab_rc:
        assert calls == [("lab", "up", str(LAB))] and not folder.exists()  # a failed lab starts nothing
        return
    assert calls == [("lab", "up", str(LAB)), ("jupyter", folder.resolve(), LAB)]
    assert sorted(p.stem for p in folder.glob("*.ipynb")) == NAMES
    assert sorted(p.name for p in (folder / "stages").glob("*.ipynb")) == sorted(STAGE_NOTEBOOKS.values())
    lesson = folder / "01_the_problem.ipynb"
    lesson.write_text("{}")  # a learner's work is never overwritten by the next start
    assert cli.main(["notebook", "--course", "--params", str(LAB), "--dir", str(folder)]) == 0
    assert lesson.read_text() == "{}"


def test_course_defaults_to_the_lab_folder(monkeypatch, tmp_path) -> None:
    import yaml

    data = yaml.safe_load(LAB.read_text())
    data["lab"]["dir"] = str(tmp_path / "labdir")
    params = tmp_path / "lab.yaml"
    params.write_text(yaml.safe_dump(data))
    seen = []
    monkeypatch.setattr(cli, "cmd_lab", lambda args: 0)
    monkeypatch.setattr(interactive, "launch", lambda nb, port, p, out: seen.append(nb) or 0)
    assert cli.main(["notebook", "--course", "--params", str(params)]) == 0
    assert seen == [(tmp_path / "labdir" / "course").resolve()]
