"""The steps every stage does the same way: show a plan, apply it and confirm, record checks, enforce."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from runbook_lib.plan import ApplyResult, Check, Plan, apply_and_confirm, fail_on


class Context(Protocol):
    """What a stage needs from the notebook's StageContext (runbook_lib.notebook)."""

    apply: bool

    def record(self, key: str, value: Any) -> None: ...


def show(ctx: Context, state: Any, plan: Plan) -> Any:
    """Record the plan's changes and show them; a stage that only reads says so."""
    ctx.record("changes", plan.records())
    if not plan.changes:
        print(f"{plan.stage}: reads and measures only; nothing to write")
        return None
    print(plan.summary())
    return plan.table()


def apply(ctx: Context, plan: Plan, rebuild: Callable[[], Plan]) -> ApplyResult:
    """Apply (in apply mode), confirm that a fresh read shows nothing left to do, and say what happened."""
    result = apply_and_confirm(plan, rebuild, ctx.record)
    if plan.changes:
        print("applied:", ", ".join(result.applied) or "nothing")
        print("not applied:", ", ".join(result.not_applied) or "nothing")
    return result


def record_checks(
    ctx: Context, checks: list[Check], records: list[dict[str, Any]] | None = None
) -> list[Check]:
    ctx.record("checks", records if records is not None else [c.record() for c in checks])
    return checks


def enforce(
    ctx: Context,
    checks: Iterable[Check],
    what: str,
    step: str,
    describe: Callable[[Check], str] = lambda c: f"{c.name} ({c.detail})",
) -> None:
    fail_on(checks, ctx.record, what, step, describe)
