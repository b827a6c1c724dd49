"""Every stage has the same shape: the same six steps, called by its notebook once each, in order."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import nbformat
import pytest

from runbook_lib.params import STAGES
from runbook_lib.plan import Check, Plan, StageFailed
from runbook_lib.runner import STAGE_NOTEBOOKS, default_notebooks_dir
from runbook_lib.stages import MODULES, STEPS, steps
from tests.support.recording import RecordingContext

SIGNATURES = {
    "read": ["ctx"],
    "plan": ["ctx", "state"],
    "show": ["ctx", "state", "plan"],
    "apply": ["ctx", "state", "plan"],
    "checks": ["ctx", "state", "plan"],
    "enforce": ["ctx", "checks"],
}
# What only a stage module may call: a notebook that calls these has left the shared shape.
STAGE_INTERNALS = {"apply_and_confirm", "fail_on", "build_plan", "raise_for_limits", "require_ready"}


def test_every_stage_has_a_module() -> None:
    assert list(MODULES) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_module_exposes_the_six_steps(stage: str) -> None:
    module = importlib.import_module(f"runbook_lib.stages.{MODULES[stage]}")
    for step in STEPS:
        fn = getattr(module, step)
        assert list(inspect.signature(fn).parameters)[: len(SIGNATURES[step])] == SIGNATURES[step], (
            stage,
            step,
        )


def _calls(path: Path) -> list[tuple[str, str]]:
    """(object, attribute) of every `x.y(...)` call and (name, "") of every `f(...)`."""
    out = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    out.append((f.value.id, f.attr))
                elif isinstance(f, ast.Name):
                    out.append((f.id, ""))
    return out


def _step_calls_in_order(path: Path, module: str) -> list[str]:
    found = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        calls = [
            n
            for n in ast.walk(ast.parse(cell.source))
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == module
            and n.func.attr in STEPS
        ]
        found += [n.func.attr for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset))]
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_calls_the_six_steps_once_in_order(stage: str) -> None:
    path = default_notebooks_dir() / STAGE_NOTEBOOKS[stage]
    module = MODULES[stage]
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert f"from runbook_lib.stages import {module}\n" in source
    assert _step_calls_in_order(path, module) == list(STEPS)
    internals = {name or attr for name, attr in _calls(path)} & STAGE_INTERNALS
    assert not internals, f"{path.name} calls {internals} itself"


def test_show_of_a_plan_without_changes_says_the_stage_only_reads(capsys) -> None:
    ctx = RecordingContext()
    assert steps.show(ctx, None, Plan("verify")) is None
    assert "verify: reads and measures only; nothing to write" in capsys.readouterr().out
    assert ctx.records == {"changes": []}


def test_apply_records_what_was_applied_and_confirms_no_drift(capsys) -> None:
    written = []
    plan = Plan("demo", apply=True)
    plan.compare("thing", "a", None, {"x": 1}, create=lambda: written.append("a"))
    ctx = RecordingContext(apply=True)
    result = steps.apply(ctx, plan, lambda: Plan("demo"))
    assert written == ["a"] and result.applied == ["create thing a"]
    assert ctx.records["results"] == {"applied": ["create thing a"], "not_applied": []}
    assert "applied: create thing a" in capsys.readouterr().out

    still = Plan("demo")
    still.compare("thing", "a", None, {"x": 1})
    with pytest.raises(StageFailed, match="still differs"):
        steps.apply(RecordingContext(apply=True), plan, lambda: still)


def test_enforce_fails_only_on_failed_checks() -> None:
    ctx = RecordingContext()
    steps.enforce(
        ctx, [Check("a", True), Check.graded("b", "warn", "w"), Check.graded("c", "skipped")], "x", "s"
    )
    assert ctx.calls == []
    with pytest.raises(StageFailed, match=r"^things broke: d \(gone\)$"):
        steps.enforce(ctx, [Check("a", True), Check("d", False, "gone")], "things broke", "the step")
    assert ctx.records["failure"]["step"] == "the step"
