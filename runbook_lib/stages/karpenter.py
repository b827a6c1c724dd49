"""Stage 4: node userData writing containerd's hosts.toml per upstream (runbook_lib.karpenter), then the
nodes rolled onto it and watched.

The node preflight (containerd version and config, credentials, userData size) is part of the plan:
``apply`` refuses to write while one of its checks fails, and ``checks`` reports it with the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.karpenter import credentials, nodes, rollout
from runbook_lib.plan import ApplyResult, Check, Plan, fail_on
from runbook_lib.stages import steps


@dataclass
class State:
    rendered: nodes.Rendered  # our userData content, from the parameters
    staged: nodes.StagePlan | None = None  # the node classes as read, set by plan()
    preflight: list[Check] = field(default_factory=list)  # node preflight, set by plan()
    baseline: rollout.Baseline | None = None  # Karpenter's hashes before the apply, set by apply()
    progress: list[rollout.ClassProgress] = field(default_factory=list)  # set by roll()
    rotation: credentials.RotationStatus | None = None  # a credential rotation's phase, set by plan()
    old_accepted: bool | None = None  # rotation: finish: Nexus still accepts the old user


def read(ctx: Any) -> State:
    ctx.record("flags", credentials.flags(ctx.params))
    old_accepted = credentials.require_next_accepted(ctx.params, ctx.resolve)  # refuses an unknown next_user
    return State(nodes.render(ctx.params, ctx.resolve), old_accepted=old_accepted)


def plan(ctx: Any, state: State) -> Plan:
    """Read the node classes and plan their userData (and a forced roll); run the node preflight."""
    state.staged = nodes.build_plan(ctx.params, ctx.api_client, ctx.apply, state.rendered, ctx.resolve)
    state.preflight = nodes.node_preflight(ctx.params, state.staged.states, state.rendered)
    changed = [s.name for s in state.staged.states if s.changed]
    state.rotation = credentials.node_rotation(ctx.params, changed, old_accepted=state.old_accepted)
    if state.rotation is not None:
        state.staged.plan.add(state.rotation.change())
    return state.staged.plan


def show(ctx: Any, state: State, plan: Plan) -> Any:
    """The plan, the userData differences, and one row per node class."""
    ctx.record("changes", plan.records())
    print(plan.summary())
    print(state.staged.diffs())
    return state.staged.table()


def write_files(ctx: Any, state: State) -> list[Path]:
    """Before/after userData per node class (the rollback) and the example manifest, in the run folder."""
    return nodes.write_run_files(ctx.run_dir, ctx.params, state.staged, state.rendered)


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    """Refuse while the node preflight fails or a node class is not ready; take Karpenter's baseline, then
    apply and confirm."""
    fail_on(state.preflight, ctx.record, "node preflight failed", "node preflight")
    nodes.require_ready(state.staged, ctx.record)
    state.baseline = nodes.start_rollout(ctx.params, ctx.api_client, state.staged)
    return steps.apply(
        ctx,
        plan,
        lambda: nodes.build_plan(ctx.params, ctx.api_client, False, state.rendered, ctx.resolve).plan,
    )


def roll(ctx: Any, state: State, **watch: Any) -> list[rollout.ClassProgress]:
    """Plan mode: one look (how many nodes are old). Apply mode: watch the rollout until done or timeout."""
    state.progress = nodes.run_rollout(ctx.params, ctx.api_client, state.baseline, ctx.apply, **watch)
    ctx.record("results", nodes.results(state.staged, state.progress))
    return state.progress


def rollout_checks(progress: list[rollout.ClassProgress], apply: bool) -> list[Check]:
    """One check per node class: every node runs the new userData. Old nodes in a plan-mode run are drift
    the schedule should see (warn), not a failure: the apply replaces them."""
    out = []
    for p in progress:
        name = f"node class {p.node_class}: every node runs the new userData"
        if p.done:
            out.append(Check(name, True, p.line()))
        elif apply:
            out.append(Check(name, False, p.line()))
        else:
            out.append(Check.graded(name, "warn", f"plan mode: {p.line()}"))
    return out


def rotation_checks(ctx: Any, state: State) -> list[Check]:
    """A rotation's "credential rotation" check: the phase after the roll, and what is next. Old nodes
    left are the rollout checks' failure; here they only say the old user cannot be retired yet."""
    status = credentials.node_rotation(ctx.params, [], state.progress, state.old_accepted)
    if status is None:
        return []
    return [
        Check.graded(credentials.ROTATION_CHECK, "warn" if status.phase == "blocked" else "ok", status.line)
    ]


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    return steps.record_checks(
        ctx, state.preflight + rollout_checks(state.progress, ctx.apply) + rotation_checks(ctx, state)
    )


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(ctx, checks, "node checks failed", "node checks")
