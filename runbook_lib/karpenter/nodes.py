"""Stage 4 pieces that runbook_lib.stages.karpenter puts in order.

render -> build_plan (node classes read) -> node preflight -> (show, write run files) -> require_ready
-> start_rollout (baseline) -> apply -> rollout. Plan mode reads only; a rerun with the same parameters
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runbook_lib.containerd import preflight as ctd
from runbook_lib.containerd.hosts import HostsToml
from runbook_lib.karpenter import (
    bottlerocket,
    credentials,
    foreign_writes,
    manifests,
    mime,
    mirrors,
    nodeclass,
    rollout,
    userdata,
)
from runbook_lib.karpenter.nodeclass import Generated, NodeClassState
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Check, Plan, StageFailed
from runbook_lib.secrets import REDACTOR, SecretResolver

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


STAGE = "karpenter"


# -- the choices -----------------------------------------------------------------------------------------
def choices(params: RunbookParams) -> Any:
    from runbook_lib.display import table

    k = params.karpenter
    kind = nodeclass.kind_for(params)
    drift = rollout.drift_mode(params)
    rows = [
        (
            "node class",
            f"{kind.kind} {kind.full_api_version}",
            f"Karpenter {k.version or '(version not set)'}: where spec.userData lives",
        ),
        (
            "AMI family",
            k.ami_family,
            {
                "AL2": (
                    "bash part run by cloud-init before bootstrap.sh; "
                    "EKS releases no AL2 AMIs after Kubernetes 1.32"
                ),
                "AL2023": "bash part in a MIME document (always MIME), beside any nodeadm NodeConfig part",
                "Bottlerocket": "TOML settings.container-registry (no boot script on Bottlerocket)",
            }[k.ami_family],
        ),
        (
            "credential mode",
            k.credential_mode,
            {
                "anonymous": "recommended: nothing secret on the nodes",
                "static-header": "WARNING: the pull password is in userData (flagged in the run record)",
                "secrets-manager": (
                    f"the node role reads {k.credentials_secret_id} at boot; rotation drifts no node"
                ),
            }[k.credential_mode],
        ),
        (
            "boot probe",
            f"log only, {k.probe_timeout_s} s, mirrors in parallel" if k.probe_mirror_at_boot else "off",
            "every hosts.toml is written even if its mirror is down at boot: containerd falls back to the "
            "upstream per pull and uses the mirror once it is back",
        ),
        (
            "dial_timeout",
            k.dial_timeout,
            "written where the node's own `containerd --version` is >= 2.0.7 (decided at boot); bounds what "
            "a black-holed mirror costs per request (30 s without it)",
        ),
        (
            "node containerd",
            k.containerd_version or "unknown",
            "for the preflight: the 1.x empty [host] workaround and the 2.1 transfer-service check",
        ),
        ("drift", "on" if drift.on else "OFF" if drift.on is False else "unknown", drift.how),
        ("forced roll", str(k.force_roll), "NodePool template annotation " + rollout.FORCE_ROLL_ANNOTATION),
    ]
    return table(rows, ["choice", "value", "what it means"])


# -- rendering -------------------------------------------------------------------------------------------
@dataclass
class Rendered:
    generated: Generated
    mirrors: list[mirrors.NodeMirror]
    files: list[HostsToml] = field(default_factory=list)  # AL2/AL2023

    @property
    def new_class_user_data(self) -> str:
        """The complete userData of a node class that has none yet."""
        return self.generated.merge(None)

    def preview(self) -> str:
        if self.generated.ami_family == "Bottlerocket":
            return self.generated.payload
        return "\n".join(f"### /{userdata.CERTS_DIR}/{f.relative_path}\n{f.render()}" for f in self.files)


def render(params: RunbookParams, resolve: SecretResolver) -> Rendered:
    """Our userData content, from the parameters (static-header mode resolves the pull password here)."""
    k = params.karpenter
    node_mirrors = mirrors.node_mirrors(params)
    if k.ami_family == "Bottlerocket":
        block = bottlerocket.settings_block(
            node_mirrors, credentials.bottlerocket_auth(params, resolve), k.bottlerocket_version
        )
        return Rendered(Generated("Bottlerocket", block), node_mirrors)
    files = mirrors.hosts_files(params, credentials.hosts_authorization(params, resolve))
    script = userdata.boot_script(userdata.inputs(params, files, node_mirrors, mirrors.ca_bundle(params)))
    return Rendered(Generated(k.ami_family, script), node_mirrors, files)


# -- preflight -------------------------------------------------------------------------------------------
# What the EKS AMIs ship, reduced to the keys the checks read (awslabs/amazon-eks-ami):
# - AL2, containerd 1.7: templates/al2/runtime/containerd-config.toml (discard_unpacked_layers = true
#   since mid-2023); containerd 2.x: templates/al2/runtime/containerd-config2.toml;
# - AL2023, containerd 1.7: nodeadm/internal/containerd/config.template.toml; containerd 2.x:
#   nodeadm/internal/containerd/config2.template.toml. Every one sets discard_unpacked_layers = true,
#   which keeps containerd >= 2.1 on the pull path that splits the two-folder config_path.
_V2_CONFIG = (
    'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndiscard_unpacked_layers = true\n'
    '[plugins."io.containerd.grpc.v1.cri".registry]\n'
    'config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
)
_V3_CONFIG = (
    'version = 3\n[plugins."io.containerd.cri.v1.images"]\ndiscard_unpacked_layers = true\n'
    '[plugins."io.containerd.cri.v1.images".registry]\n'
    'config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
)
AMI_CONFIGS = {
    "AL2-1.7": _V2_CONFIG,
    "AL2-2.x": _V3_CONFIG,
    "AL2023-1.7": _V2_CONFIG,
    "AL2023-2.x": _V3_CONFIG,
}


def ami_config_model(ami_family: str, version: ctd.ContainerdVersion | None) -> str:
    """The AMI_CONFIGS key for a node: an unknown containerd is taken as 2.x, as current AMIs ship."""
    return f"{ami_family}-{'1.7' if version is not None and version.major < 2 else '2.x'}"


def _nodeconfig_fragments(state: NodeClassState) -> list[str]:
    """`spec.containerd.config` of every NodeConfig part in an AL2023 node class's userData."""
    out = []
    for part in userdata.parts(state.current):
        if part["content_type"] != mime.NODECONFIG:
            continue
        try:
            docs = list(yaml.safe_load_all(part["body"]))
        except yaml.YAMLError:
            continue
        for doc in docs:
            config = (((doc or {}).get("spec") or {}).get("containerd") or {}).get("config")
            if isinstance(config, str):
                out.append(config)
    return out


def node_preflight(params: RunbookParams, states: list[NodeClassState], rendered: Rendered) -> list[Check]:
    k = params.karpenter
    version = mirrors.containerd_version(params)
    checks = ctd.check_version(version)
    if k.ami_family == "Bottlerocket":
        checks.append(
            Check.graded(
                "node containerd config",
                "skipped",
                "Bottlerocket renders containerd's config from settings; nothing to check here",
            )
        )
    else:
        model = ami_config_model(k.ami_family, version)
        for c in ctd.check_config(AMI_CONFIGS[model], version):
            checks.append(Check.graded(f"EKS {model} AMI config: {c.name}", c.status, c.detail))
        path = params.path(k.node_containerd_config)
        if path is None:
            checks.append(
                Check.graded(
                    "node containerd config",
                    "skipped",
                    "no karpenter.node_containerd_config given; on a node: `containerd config dump "
                    "> node-config.toml` and point the parameter at the file",
                )
            )
        elif not path.is_file():
            checks.append(Check.graded("node containerd config", "fail", f"{path} not found"))
        else:
            for c in ctd.check_config(path.read_text(), version):
                checks.append(Check.graded(f"{path.name}: {c.name}", c.status, c.detail))
        for state in states:
            for fragment in _nodeconfig_fragments(state):
                checks += ctd.check_nodeconfig_fragment(fragment, version, f"node class {state.name}")
            checks += foreign_writes.checks(state.name, state.current)  # e.g. a manual `tee -a` step
    for c in credentials.consistency(params):
        checks.append(Check.graded(c["name"], "ok" if c["ok"] else "fail", c["detail"]))
    size = userdata.size_report(rendered.new_class_user_data)
    checks.append(
        Check.graded("userData size (our part alone)", "ok" if size["ok"] else "fail", size["detail"])
    )
    return checks


# -- the plan --------------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    plan: Plan
    states: list[NodeClassState]
    rolled_pools: list[str]

    def table(self) -> Any:
        from runbook_lib.display import table

        return table([s.row() for s in self.states])

    def diffs(self) -> str:
        return "\n".join(s.diff() for s in self.states if s.exists and not s.problems)


def build_plan(
    params: RunbookParams,
    api_client: ApiClient,
    apply: bool,
    rendered: Rendered,
    resolve: SecretResolver,
    secretsmanager: Any = None,
) -> StagePlan:
    """Node secret (secrets-manager mode) first, then each node class's userData, then a forced roll."""
    plan = Plan(STAGE, apply)
    if params.karpenter.credential_mode == "secrets-manager":
        if secretsmanager is None:
            from runbook_lib import aws

            secretsmanager = aws.client(params, "secretsmanager")
        credentials.plan_node_secret(plan, params, resolve, secretsmanager)
    states = nodeclass.plan_changes(plan, params, api_client, rendered.generated)
    token = rollout.force_roll_token(params, [s.desired for s in states])
    rolled = rollout.plan_force_roll(plan, params, api_client, token)
    return StagePlan(plan, states, rolled)


def write_run_files(run_dir: Path, params: RunbookParams, sp: StagePlan, rendered: Rendered) -> list[Path]:
    """Before/after userData per node class (the 'before' file is the rollback), and the example manifest.

    Written through the redactor like everything in a run folder: with credential_mode static-header the
    credential in them is masked, so such a file is a record, not a rollback (the notebook says so)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = manifests.write(run_dir, params, rendered.new_class_user_data)
    path.write_text(REDACTOR.scrub(path.read_text(encoding="utf-8")), encoding="utf-8")
    paths = [path]
    for s in sp.states:
        if not s.exists:
            continue
        for label, text in (("before", s.current), ("after", s.desired if not s.problems else s.current)):
            path = run_dir / f"karpenter-userData-{s.name}-{label}.txt"
            path.write_text(REDACTOR.scrub(text), encoding="utf-8")
            paths.append(path)
    return paths


def require_ready(sp: StagePlan, record: Any) -> None:
    blocked = [s for s in sp.states if s.problems]
    if blocked:
        err = StageFailed(
            "; ".join(f"{s.name}: {' / '.join(s.problems)}" for s in blocked),
            step="node classes",
            not_applied=[c.label for c in sp.plan.pending],
        )
        record("failure", err.failure_record())
        raise err


# -- rollout ---------------------------------------------------------------------------------------------
def start_rollout(params: RunbookParams, api_client: ApiClient, sp: StagePlan) -> rollout.Baseline:
    """Taken before the apply: the hashes Karpenter has now, to tell old NodeClaims from new ones later."""
    return rollout.baseline(params, api_client, sp.states, sp.plan, sp.rolled_pools)


def run_rollout(
    params: RunbookParams,
    api_client: ApiClient,
    base: rollout.Baseline,
    apply: bool,
    out: Any = print,
    **watch_kw: Any,
) -> list[rollout.ClassProgress]:
    """Plan mode: one look (how many nodes are old). Apply mode: watch until done or the timeout."""
    if not apply:
        progress = rollout.snapshot(params, api_client, base)
        for p in progress:
            out(p.line())
        return progress
    drift = rollout.drift_mode(params, api_client)
    progress = rollout.snapshot(params, api_client, base)
    if drift.on is False and any(p.old for p in progress):
        raise StageFailed(
            f"drift is off ({drift.how}), so old nodes are never replaced: {drift.force}",
            step="watch rollout",
        )
    return rollout.watch(params, api_client, base, out=out, **watch_kw)


def results(sp: StagePlan, progress: list[rollout.ClassProgress]) -> dict[str, Any]:
    return {
        "karpenter": {
            "node_classes": {
                s.name: {"changed": s.changed, "bytes": len(s.desired.encode()), "family": s.family}
                for s in sp.states
            },
            "rolled_pools": sp.rolled_pools,
            "rollout": [p.record() for p in progress],
        }
    }
