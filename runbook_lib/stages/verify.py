"""Stage 5: direct vs mirror pulls from the runbook host and from the nodes, proof that the mirror served
them, Docker Hub headroom, usage and the trend (runbook_lib.verify).

Verification writes nothing to the target, so its plan is empty; its work is measuring, done by the
helpers between ``apply`` and ``checks`` that fill ``State`` in order (each returns what it measured
for the notebook to show). ``checks`` grades the figures against ``verification.thresholds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.plan import ApplyResult, Check, Plan
from runbook_lib.stages import steps
from runbook_lib.verify import history, hostpull, mirrorproof, nodepull, ratelimit, report, thresholds

STAGE = "verify"


@dataclass
class State:
    headroom: list[ratelimit.Headroom]
    content: mirrorproof.NexusContent
    counters: mirrorproof.CounterSource
    before: mirrorproof.Counters
    host: hostpull.HostComparison | None = None
    node: nodepull.NodeComparison | None = None
    proof: mirrorproof.Proof | None = None
    figures: report.Figures | None = None
    usage: report.Usage | None = None
    store: history.HistoryStore | None = None
    demo: ratelimit.Demonstration | None = None

    def summary(self) -> str:
        return f"{self.content.status}\n{self.counters.describe(self.before)}"


def read(ctx: Any) -> State:
    """Docker Hub headroom first (it bounds the direct pulls), then the mirror's counters before any pull."""
    headroom = ratelimit.headroom(ctx.params, ctx.resolve)
    content = mirrorproof.NexusContent.connect(ctx.params, ctx.resolve, lambda: ctx.api_client)
    counters = mirrorproof.CounterSource(ctx.params, content)
    return State(headroom, content, counters, counters.snapshot())


def plan(ctx: Any, state: State) -> Plan:
    return Plan(STAGE, ctx.apply)  # nothing to write to the target


def show(ctx: Any, state: State, plan: Plan) -> Any:
    return steps.show(ctx, state, plan)


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    return steps.apply(ctx, plan, lambda: plan)


def pull_from_host(ctx: Any, state: State) -> hostpull.HostComparison:
    state.host = hostpull.compare(ctx.params, ctx.resolve, state.content, state.headroom)
    return state.host


def pull_on_nodes(ctx: Any, state: State) -> nodepull.NodeComparison:
    state.node = nodepull.compare(
        ctx.params, ctx.resolve, lambda: ctx.api_client, state.content, state.counters, state.headroom
    )
    return state.node


def prove_mirror(ctx: Any, state: State) -> mirrorproof.Proof:
    state.proof = mirrorproof.prove(ctx.params, state.content, state.counters, state.before)
    state.figures = report.figures(ctx.params, state.host, state.node, state.proof, state.headroom)
    return state.proof


def measure_usage(ctx: Any, state: State, run_dir: str) -> report.Usage:
    """Usage against Community Edition's limits, with the history store beside the run folders (or
    ``outputs.history``); ``run_dir`` is the notebook's parameter, empty when run by hand."""
    state.store = history.HistoryStore(history.path_for(ctx.params, Path(ctx.run_dir) if run_dir else None))
    state.usage = report.usage(
        ctx.params,
        state.content,
        state.counters.snapshot(),
        state.proof,
        state.host,
        state.node,
        state.store.metrics(ctx.params.target),
    )
    return state.usage


def record_history(ctx: Any, state: State) -> None:
    state.store.append(
        report.run_id(ctx.run_dir),
        ctx.params.target,
        report.history_rows(state.host, state.node),
        report.history_metrics(state.figures, state.usage),
    )
    print(
        f"history: {state.store.path} ({state.store.runs(ctx.params.target)} run(s) of {ctx.params.target})"
    )


def demonstrate_limit(ctx: Any, state: State) -> ratelimit.Demonstration:
    state.demo = ratelimit.demonstrate(ctx.params, ctx.resolve)
    return state.demo


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    ctx.record("results", report.results(state.figures, state.usage, state.demo))
    found = thresholds.evaluate(ctx.params, state.figures, state.host, state.node, state.demo)
    return steps.record_checks(ctx, found)


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(
        ctx, checks, "verification failed", "verification checks", lambda c: f"{c.name}: {c.detail}"
    )
    print("verification passed")
