"""Stage 3: the Nexus chart's docker Services and Ingresses (runbook_lib.helm), applied by
``helm upgrade`` or as manifests, then checked where clients meet them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.helm import exposure, release, values, verify
from runbook_lib.plan import ApplyResult, Check, Plan
from runbook_lib.stages import steps


@dataclass
class State:
    how: exposure.Mode  # "helm" (helm upgrade) or "manifests" (objects applied, adopted by Helm later)
    release: release.Release
    overlay: values.Overlay  # the docker endpoints' values, computed from the release's values
    overlay_path: Path

    def summary(self) -> str:
        return f"{self.release.summary()}\napply mode: {self.how}"


def _read_release(ctx: Any, how: exposure.Mode) -> release.Release:
    return release.current(ctx.params, ctx.api_client, use_helm=(how == "helm"))


def read(ctx: Any) -> State:
    """The release as installed, and the overlay of values the docker endpoints need (written to the run
    folder: it is what `helm upgrade -f` takes)."""
    how = exposure.mode(ctx.params)
    rel = _read_release(ctx, how)
    overlay = values.build_overlay(ctx.params, rel.values)
    path = overlay.write(ctx.run_dir)
    ctx.record(
        "results",
        {"release": rel.record(), "apply mode": how, "overlay": overlay.record(), "overlay file": str(path)},
    )
    return State(how, rel, overlay, path)


def plan(ctx: Any, state: State) -> Plan:
    state.overlay.raise_for_limits(ctx.record)  # nothing to plan when the chart cannot express it
    return exposure.build_plan(
        ctx.params, ctx.api_client, ctx.apply, state.release, state.overlay, state.overlay_path, state.how
    )


def show(ctx: Any, state: State, plan: Plan) -> Any:
    return steps.show(ctx, state, plan)


def manifests(ctx: Any, state: State) -> str:
    """The helm command and the objects it makes, both recorded; the objects file is for review and for the
    manifests mode."""
    objects = exposure.desired_objects(ctx.params, state.release, state.overlay)
    command = " ".join(exposure.helm_command(ctx.params, state.release, state.overlay_path))
    path = exposure.write_manifests(objects, ctx.run_dir)
    ctx.record("results", {"helm command": command, "objects file": str(path)})
    return (
        "helm mode runs (and in manifests mode, adopts the objects later with):\n  "
        + command
        + "\n\n"
        + exposure.manifests_yaml(objects)
    )


def apply(ctx: Any, state: State, plan: Plan) -> ApplyResult:
    return steps.apply(
        ctx,
        plan,
        lambda: exposure.rebuild(
            ctx.params,
            ctx.api_client,
            lambda: _read_release(ctx, state.how),
            state.overlay,
            state.overlay_path,
            state.how,
        ),
    )


def checks(ctx: Any, state: State, plan: Plan) -> list[Check]:
    """Objects and endpoints; skipped (and said so) in a plan-mode run that still has changes to make."""
    found, note = verify.run_after(
        plan, ctx.params, ctx.api_client, state.release, state.overlay, ctx.resolve
    )
    print(note)
    return steps.record_checks(ctx, found)


def enforce(ctx: Any, checks: list[Check]) -> None:
    steps.enforce(ctx, checks, "the docker endpoints do not work", "exposure checks")
