"""Stage 1: a docker proxy per upstream and one endpoint per upstream (runbook_lib.nexus.repositories)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runbook_lib.nexus import repositories, session
from runbook_lib.plan import ApplyResult, Check, Plan
from runbook_lib.stages import steps


@dataclass
class State:
    login: session.AdminLogin

    def summary(self) -> str:
        return f"logged in ({self.login.source} admin password). {self.login.note}".strip()


def endpoints(ctx: Any) -> Any:
    """Which repository and connector serve each upstream, as a table."""
    from runbook_lib.display import table

    return table(repositories.endpoints(ctx.params))


def read(ctx: Any) -> State:
    return State(session.admin_login(ctx.params, ctx.resolve, ctx.api_client))


def plan(ctx: Any, state: State) -> Plan:
    return repositories.build_plan(ctx.params, state.login.client, ctx.apply, ctx.resolve)


def show(ctx: Any, state: State, plan: Plan) -> Any:
    return steps.show(ctx, state, plan)


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    return steps.apply(
        ctx, plan, lambda: repositories.build_plan(ctx.params, state.login.client, False, ctx.resolve)
    )


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    found = repositories.serving_checks(ctx.params, plan) + repositories.drift_checks(ctx.params, plan)
    return steps.record_checks(ctx, found)


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(ctx, checks, "a repository does not serve docker clients", "repository checks")
