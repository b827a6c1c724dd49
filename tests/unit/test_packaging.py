"""Packaging: one set of pins for pip and conda; the README's commands exist; the layout holds."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def lock_pins() -> set[str]:
    return {
        line.strip()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_every_lock_line_is_an_exact_pin() -> None:
    for pin in lock_pins():
        assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^=\s]+$", pin), pin


def test_environment_yml_carries_the_same_pins() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {p for p in pip_section if "==" in p}
    assert conda_pins == lock_pins()


def test_generator_reproduces_environment_yml() -> None:
    spec = importlib.util.spec_from_file_location("w", REPO / "scripts" / "write_environment_yml.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.render((REPO / "requirements.lock").read_text()) == (REPO / "environment.yml").read_text()


def test_kubernetes_pin_avoids_dateutil_conflict() -> None:
    pins = dict(p.split("==", 1) for p in lock_pins())
    assert pins["kubernetes"] == "37.0.1"
    assert int(pins["python-dateutil"].split(".")[0]) < 3


def test_installed_versions_match_the_lock() -> None:
    from importlib.metadata import PackageNotFoundError, version

    wrong = []
    for pin in lock_pins():
        name, want = pin.split("==", 1)
        try:
            have = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} not installed")
            continue
        if have != want:
            wrong.append(f"{name} {have} != {want}")
    assert not wrong, wrong


def test_readme_has_exactly_the_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Set up on a fresh machine", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_layout() -> None:
    for path in (
        "runbook_lib/notebooks",
        "runbook_lib",
        "lab/runbook_lab",
        "lab/pyproject.toml",
        "parameters",
        "outputs/.gitkeep",
        "environment.yml",
        "README.md",
        "pyproject.toml",
        ".ci/run",
    ):
        assert (REPO / path).exists(), path
    assert "outputs/*" in (REPO / ".gitignore").read_text()


def test_console_script_is_declared() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "eks-mirror-runbook"
    assert project["scripts"]["runbook"] == "runbook_lib.cli:main"
    assert sys.version_info >= (3, 11)


@pytest.fixture(scope="module")
def runbook_wheel(tmp_path_factory) -> Path:
    """The runbook's wheel, built from this checkout with the venv's own setuptools (no download)."""
    from setuptools import build_meta

    out = tmp_path_factory.mktemp("wheel")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        name = build_meta.build_wheel(str(out))
    finally:
        os.chdir(cwd)
        shutil.rmtree(REPO / "build", ignore_errors=True)
    return out / name


def test_the_wheel_ships_the_notebooks_and_data_but_not_the_lab(runbook_wheel: Path) -> None:
    with zipfile.ZipFile(runbook_wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    shipped = {n.split("/")[-1] for n in names if n.startswith("runbook_lib/notebooks/")}
    assert shipped == {p.name for p in (REPO / "runbook_lib" / "notebooks").glob("*.ipynb")}
    assert "runbook_lib/karpenter/crds/PROVENANCE" in names
    assert "runbook_lib/karpenter/crds/v1.14.1/karpenter.sh_nodepools.yaml" in names
    assert not [n for n in names if n.startswith(("runbook_lab/", "tests/"))]
    requires = [
        line.split(":", 1)[1].strip().lower()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    assert requires and not [r for r in requires if r.startswith(("moto", "grpcio"))], requires


def test_lab_commands_without_the_lab_say_how_to_install_it(monkeypatch, capsys) -> None:
    from runbook_lib import cli

    monkeypatch.setitem(sys.modules, "runbook_lab", None)  # as in an install without the lab
    assert cli.main(["lab", "status"]) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "pip install ./lab" in err and "Traceback" not in err


def test_secrets_depends_on_nothing_else_in_the_package() -> None:
    """Secret references are the base every module uses; they know no parameters, AWS or Kubernetes code."""
    import ast

    tree = ast.parse((REPO / "runbook_lib" / "secrets.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("runbook_lib")], imported
