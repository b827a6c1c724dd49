"""Packaging: one set of pins for pip and conda; the README's commands exist; the layout holds."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def lock_pins() -> set[str]:
    return {line.strip() for line in (REPO / "requirements.lock").read_text().splitlines()
            if line.strip() and not line.startswith("#")}


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
    for path in ("runbook_lib/notebooks", "runbook_lib", "lab/runbook_lab", "lab/pyproject.toml", "parameters", "outputs/.gitkeep", "environment.yml", "README.md",
                 "pyproject.toml", ".ci/run"):
        assert (REPO / path).exists(), path
    assert "outputs/*" in (REPO / ".gitignore").read_text()


def test_console_script_is_declared() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "eks-mirror-runbook"
    assert project["scripts"]["runbook"] == "runbook_lib.cli:main"
    assert sys.version_info >= (3, 11)
