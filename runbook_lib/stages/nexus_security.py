"""Stage 2: token realm, anonymous or authenticated pulls, admin bootstrap, CE EULA
(runbook_lib.nexus.security), proven at the registry endpoints (runbook_lib.nexus.proof)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runbook_lib.nexus import proof, security, session
from runbook_lib.plan import ApplyResult, Check, Plan
from runbook_lib.stages import steps


@dataclass
class State:
    login: session.AdminLogin

    def summary(self) -> str:
        return f"logged in ({self.login.source} admin password). {self.login.note}".strip()


def read(ctx: Any) -> State:
    return State(session.admin_login(ctx.params, ctx.resolve, ctx.api_client))


def _api_client(ctx: Any) -> Any:
    """The Kubernetes API client, only for a credential rotation (which nodes still use the old user)."""
    if ctx.params.security.rotation is None:
        return None
    try:
        return ctx.api_client
    except Exception:  # noqa: BLE001 - no cluster to read: the rotation says "cannot tell" and finish refuses
        return None


def plan(ctx: Any, state: State) -> Plan:
    return security.build_plan(
        ctx.params,
        state.login,
        ctx.apply,
        ctx.resolve,
        security.secrets_manager(ctx.params),
        _api_client(ctx),
    )


def show(ctx: Any, state: State, plan: Plan) -> Any:
    return steps.show(ctx, state, plan)


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    # A fresh login for the confirmation: the bootstrap may just have changed the admin password.
    def rebuild() -> Plan:
        login = session.admin_login(ctx.params, ctx.resolve, ctx.api_client)
        return security.build_plan(ctx.params, login, False, ctx.resolve, api_client=_api_client(ctx))

    return steps.apply(ctx, plan, rebuild)


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    found = security.drift_checks(ctx.params, plan) + proof.prove(ctx.params, ctx.resolve)
    return steps.record_checks(ctx, found)


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(
        ctx,
        checks,
        "the access model does not hold",
        "prove access model",
        lambda c: f"{c.name}, but {c.detail}",
    )
