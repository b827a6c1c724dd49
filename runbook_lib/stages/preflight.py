"""Stage 0: reach and version every endpoint. Reads only; a required endpoint that fails fails the stage."""

from __future__ import annotations

from typing import Any

from runbook_lib import preflight as probes
from runbook_lib.plan import ApplyResult, Check, Plan
from runbook_lib.stages import steps

STAGE = "preflight"
State = probes.PreflightReport


def read(ctx: Any) -> State:
    """Probe every endpoint in parallel (Nexus, upstreams, mirrors, Kubernetes, AWS)."""
    return probes.run(ctx.params)


def plan(ctx: Any, state: State) -> Plan:
    return Plan(STAGE, ctx.apply)  # preflight writes nothing


def show(ctx: Any, state: State, plan: Plan) -> Any:
    return steps.show(ctx, state, plan)


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    return steps.apply(ctx, plan, lambda: plan)


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    ctx.record("results", state.results())
    return steps.record_checks(ctx, [p.as_check() for p in state.checks], state.check_records())


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(ctx, checks, "required endpoint(s) not usable", "preflight checks")
