"""Rolling the nodes onto the new userData: drift per Karpenter version, budgets, forced roll, the watcher.

Facts (aws/karpenter-provider-aws pkg/cloudprovider/drift.go; Karpenter docs concepts/disruption.md):
- a userData change is *static drift*: Karpenter hashes the node class spec into an annotation
  (``karpenter.k8s.aws/ec2nodeclass-hash``; v0.31 ``karpenter.k8s.aws/nodetemplate-hash``) and stamps each
  NodeClaim (Machine) with the hash of the spec it was launched from; a difference marks the NodeClaim
  ``Drifted`` and Karpenter replaces it;
- drift is always on from v1.0; on by default v0.33-v0.37 (feature gate ``Drift``, Beta); off by default in
  v0.32 (Alpha) and v0.31 (``featureGates.driftEnabled`` in the ``karpenter-global-settings`` ConfigMap);
- pacing: ``NodePool.spec.disruption.budgets`` from v0.34 (default ``nodes: 10%``; v1 adds ``reasons``);
  before v0.34 drift replaces one non-empty node at a time;
- forced roll: a change of ``NodePool.spec.template.metadata.annotations`` (v0.31:
  ``Provisioner.spec.annotations``) changes the NodePool hash (``karpenter.sh/nodepool-hash``) and drifts
  every NodeClaim of the pool, paced by the same budgets.

How the watcher decides that a node "carries the new userData": its NodeClaim's hash annotation equals the
node class's current one (and, after a forced roll, its ``karpenter.sh/nodepool-hash`` equals the pool's),
once Karpenter has re-stamped the node class after our change. Where no hash annotations exist, a NodeClaim
created after the apply counts as new. Done = no old NodeClaim is left and every new one is Ready.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runbook_lib import kube
from runbook_lib import progress as live
from runbook_lib.karpenter.nodeclass import KINDS, NodeClassState
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Plan, StageFailed
from runbook_lib.versions import numeric_release

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


FORCE_ROLL_ANNOTATION = "eks-mirror-runbook/rollout"
HASH_VERSION_SUFFIX = (
    "-version"  # karpenter.k8s.aws/ec2nodeclass-hash-version, karpenter.sh/nodepool-hash-version
)
HEARTBEAT_S = 60.0  # a progress line at least this often while nothing moves


@dataclass(frozen=True)
class PoolKind:
    version: str
    plural: str
    kind: str
    claim_plural: str
    claim_kind: str
    hash_annotation: str
    node_label: str  # the label Karpenter puts on its nodes and NodeClaims naming the pool
    group: str = "karpenter.sh"


POOLS = {
    "v1": PoolKind(
        "v1",
        "nodepools",
        "NodePool",
        "nodeclaims",
        "NodeClaim",
        "karpenter.sh/nodepool-hash",
        "karpenter.sh/nodepool",
    ),
    "v1beta1": PoolKind(
        "v1beta1",
        "nodepools",
        "NodePool",
        "nodeclaims",
        "NodeClaim",
        "karpenter.sh/nodepool-hash",
        "karpenter.sh/nodepool",
    ),
    "v1alpha1": PoolKind(
        "v1alpha5",
        "provisioners",
        "Provisioner",
        "machines",
        "Machine",
        "karpenter.sh/provisioner-hash",
        "karpenter.sh/provisioner-name",
    ),
}


def _release(version: str | None) -> tuple[int, ...] | None:
    return numeric_release(version) if version else None


def _custom(api_client: ApiClient) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


# -- drift mode ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftMode:
    on: bool | None  # None: cannot tell from here
    how: str
    pacing: str
    force: str

    def rows(self) -> list[dict[str, str]]:
        return [
            {"question": "does a userData change replace the nodes?", "answer": self.how},
            {"question": "how fast?", "answer": self.pacing},
            {"question": "how to roll without a userData change?", "answer": self.force},
        ]


def _feature_gates(api_client: ApiClient, namespace: str) -> str | None:
    """FEATURE_GATES of the Karpenter deployment (v0.32-v0.37), None when it cannot be read."""
    from kubernetes.client.rest import ApiException

    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    try:
        deps = kube.get_json(api_client, path, labelSelector="app.kubernetes.io/name=karpenter")
    except (ApiException, ValueError):
        return None
    for dep in deps.get("items") or []:
        pod = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == "FEATURE_GATES":
                    return env.get("value") or ""
    return None


def _drift_enabled_v031(api_client: ApiClient, namespace: str) -> bool | None:
    from kubernetes.client.rest import ApiException

    path = f"/api/v1/namespaces/{namespace}/configmaps/karpenter-global-settings"
    try:
        cm = kube.get_json(api_client, path)
    except (ApiException, ValueError):
        return None
    return str((cm.get("data") or {}).get("featureGates.driftEnabled", "false")).lower() == "true"


def drift_mode(params: RunbookParams, api_client: ApiClient | None = None) -> DriftMode:
    k = params.karpenter
    release = _release(k.version)
    force = (
        "bump a NodePool template annotation (karpenter.force_roll): drift, paced by the budgets; or delete "
        "NodeClaims (kubectl delete nodeclaim ...): immediate, not budgeted, no pre-spun replacement"
    )
    if k.api_version == "v1":
        return DriftMode(
            True,
            "yes: drift is always on in Karpenter v1",
            "NodePool disruption budgets (default nodes: 10%; `reasons: [Drifted]` targets drift)",
            force,
        )
    if k.api_version == "v1beta1":
        pacing = (
            "NodePool disruption budgets (default nodes: 10%)"
            if release is None or release >= (0, 34)
            else "one non-empty node at a time (no budgets before v0.34)"
        )
        gates = _feature_gates(api_client, k.namespace) if api_client is not None else None
        if gates is not None and "Drift=" in gates:
            on = "Drift=true" in gates.replace(" ", "")
            return DriftMode(
                on,
                f"{'yes' if on else 'NO'}: FEATURE_GATES of the Karpenter deployment is {gates!r}",
                pacing,
                force,
            )
        if release is not None and release < (0, 33):
            return DriftMode(
                False,
                "NO by default: v0.32 has the Drift feature gate off (Alpha); set "
                "settings.featureGates.drift=true, or delete NodeClaims",
                pacing,
                force,
            )
        if release is None:
            return DriftMode(
                None,
                "on by default from v0.33 (Beta gate Drift), off in v0.32: set karpenter.version",
                pacing,
                force,
            )
        return DriftMode(True, "yes: the Drift feature gate is on by default in v0.33-v0.37", pacing, force)
    enabled = _drift_enabled_v031(api_client, k.namespace) if api_client is not None else None
    unread = "; the ConfigMap could not be read" if api_client is not None else ""
    force31 = (
        "with driftEnabled, bump Provisioner spec.annotations (karpenter.force_roll); otherwise delete the "
        "nodes (kubectl delete node -l karpenter.sh/provisioner-name=<p>): not budgeted, no pre-spin"
    )
    pacing31 = "one non-empty node at a time (v0.31 has no budgets)"
    if enabled is None:
        return DriftMode(
            None,
            'only with featureGates.driftEnabled: "true" in karpenter-global-settings (default '
            f"false){unread}",
            pacing31,
            force31,
        )
    return DriftMode(
        enabled,
        "yes: featureGates.driftEnabled is true"
        if enabled
        else "NO: featureGates.driftEnabled is false (Alpha, default off); enable it or delete nodes",
        pacing31,
        force31,
    )


# -- pools and budgets -----------------------------------------------------------------------------------
def _list(api_client: ApiClient, group: str, version: str, plural: str) -> list[dict[str, Any]]:
    """Every object of a cluster-scoped custom kind; none when the CRD is not installed (404)."""
    from kubernetes.client.rest import ApiException

    try:
        return _custom(api_client).list_cluster_custom_object(group, version, plural).get("items", [])
    except ApiException as err:
        if err.status == 404:
            return []
        raise


def list_pools(params: RunbookParams, api_client: ApiClient) -> list[dict[str, Any]]:
    pk = POOLS[params.karpenter.api_version]
    return _list(api_client, pk.group, pk.version, pk.plural)


def pool_class(pool: dict[str, Any], api_version: str) -> str | None:
    spec = pool.get("spec") or {}
    if api_version == "v1alpha1":
        return (spec.get("providerRef") or {}).get("name")
    return ((spec.get("template") or {}).get("spec") or {}).get("nodeClassRef", {}).get("name")


def pools_of(pools: list[dict[str, Any]], api_version: str, node_class: str) -> list[dict[str, Any]]:
    return [p for p in pools if pool_class(p, api_version) == node_class]


def budget_rows(pools: list[dict[str, Any]], params: RunbookParams) -> list[dict[str, str]]:
    """The budgets that pace drift, per pool (what the notebook shows before a roll)."""
    release, api = _release(params.karpenter.version), params.karpenter.api_version
    rows = []
    for pool in pools:
        name = pool["metadata"]["name"]
        node_class = pool_class(pool, api) or ""
        if api == "v1alpha1" or (release is not None and release < (0, 34)):
            rows.append(
                {
                    "pool": name,
                    "node class": node_class,
                    "budget": "one node at a time (built in)",
                    "applies to drift": "yes",
                }
            )
            continue
        budgets = ((pool.get("spec") or {}).get("disruption") or {}).get("budgets")
        if budgets is None:
            rows.append(
                {
                    "pool": name,
                    "node class": node_class,
                    "budget": "nodes: 10% (default)",
                    "applies to drift": "yes",
                }
            )
        for b in budgets or []:
            text = f"nodes: {b.get('nodes')}"
            if b.get("schedule"):
                text += f", schedule {b['schedule']} for {b.get('duration')}"
            reasons = b.get("reasons")
            applies = (
                "yes" if not reasons or "Drifted" in reasons else "no (reasons: " + ", ".join(reasons) + ")"
            )
            if str(b.get("nodes")) in ("0", "0%") and applies == "yes":
                applies = "BLOCKS drift while active"
            rows.append({"pool": name, "node class": node_class, "budget": text, "applies to drift": applies})
    return rows


# -- forced roll -----------------------------------------------------------------------------------------
def force_roll_token(params: RunbookParams, desired_user_data: list[str]) -> str | None:
    """True: one token per userData content (a rerun with the same content rolls nothing); a string:
    itself."""
    value = params.karpenter.force_roll
    if value is False or value is None or value == "":
        return None
    if value is True:
        return hashlib.sha256("\n".join(desired_user_data).encode()).hexdigest()[:16]
    return str(value)


def _pool_annotation_doc(api_version: str, token: str) -> dict[str, Any]:
    if api_version == "v1alpha1":
        return {"spec": {"annotations": {FORCE_ROLL_ANNOTATION: token}}}
    return {"spec": {"template": {"metadata": {"annotations": {FORCE_ROLL_ANNOTATION: token}}}}}


def _pool_annotation(pool: dict[str, Any], api_version: str) -> str | None:
    spec = pool.get("spec") or {}
    annotations = (
        spec.get("annotations")
        if api_version == "v1alpha1"
        else ((spec.get("template") or {}).get("metadata") or {}).get("annotations")
    )
    return (annotations or {}).get(FORCE_ROLL_ANNOTATION)


def plan_force_roll(plan: Plan, params: RunbookParams, api_client: ApiClient, token: str | None) -> list[str]:
    """A change per NodePool of `karpenter.node_pools` whose roll annotation differs from the token."""
    if token is None:
        return []
    api, pk = params.karpenter.api_version, POOLS[params.karpenter.api_version]
    by_name = {p["metadata"]["name"]: p for p in list_pools(params, api_client)}
    rolled = []
    for name in params.karpenter.node_pools:
        pool = by_name.get(name)
        if pool is None:
            raise StageFailed(f"{pk.kind} {name} not found (karpenter.node_pools)", step="force roll")
        desired = _pool_annotation_doc(api, token)
        actual = _pool_annotation_doc(api, _pool_annotation(pool, api)) if _pool_annotation(pool, api) else {}
        rv = pool["metadata"].get("resourceVersion")

        def write(name: str = name, desired: dict[str, Any] = desired, rv: str | None = rv) -> Any:
            body = {**desired, "metadata": {"resourceVersion": rv}}
            return _custom(api_client).patch_cluster_custom_object(
                pk.group, pk.version, pk.plural, name, body
            )

        # actual is {} (not None) when the annotation is absent: the pool exists, so this is an update
        change = plan.compare(
            pk.kind,
            name,
            actual,
            desired,
            update=write,
            note="forced roll: every NodeClaim of the pool drifts, paced by its budgets",
        )
        if change.action != "unchanged":
            rolled.append(name)
    return rolled


# -- the watcher -----------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _created(obj: dict[str, Any]) -> datetime | None:
    text = (obj.get("metadata") or {}).get("creationTimestamp")
    if not text:
        return None
    return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")


def _condition(obj: dict[str, Any], kind: str) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status")) == "True"
    return False


@dataclass
class Baseline:
    """What the cluster looked like just before the apply, so that afterwards old and new can be told
    apart."""

    started: datetime
    class_hashes: dict[str, str | None] = field(default_factory=dict)
    pool_hashes: dict[str, str | None] = field(default_factory=dict)
    changed_classes: set[str] = field(default_factory=set)
    rolled_pools: set[str] = field(default_factory=set)


def baseline(
    params: RunbookParams,
    api_client: ApiClient,
    states: list[NodeClassState],
    plan: Plan,
    rolled_pools: list[str],
) -> Baseline:
    pk = POOLS[params.karpenter.api_version]
    pending = {(c.kind, c.name) for c in plan.pending}
    pools = {p["metadata"]["name"]: p for p in list_pools(params, api_client)}
    return Baseline(
        started=_now(),
        class_hashes={s.name: s.hash for s in states if s.exists},
        pool_hashes={n: _annotations(p).get(pk.hash_annotation) for n, p in pools.items()},
        changed_classes={s.name for s in states if (s.kind.kind, s.name) in pending},
        rolled_pools={n for n in rolled_pools if (pk.kind, n) in pending},
    )


@dataclass
class ClassProgress:
    node_class: str
    new: list[str] = field(default_factory=list)
    new_ready: list[str] = field(default_factory=list)
    old: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    deleting: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    waiting_for_karpenter: bool = False  # our change is not hashed by Karpenter yet

    @property
    def done(self) -> bool:
        return (
            not self.old
            and not self.deleting
            and not self.waiting_for_karpenter
            and len(self.new_ready) == len(self.new)
        )

    @property
    def total(self) -> int:
        return len(self.new) + len(self.old) + len(self.deleting) + len(self.untracked)

    def line(self, width: int = 20) -> str:
        total = self.total
        filled = round(width * len(self.new_ready) / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        text = (
            f"{self.node_class}: [{bar}] {len(self.new)}/{total} new ({len(self.new_ready)} ready), "
            f"{len(self.old)} old ({len(self.drifted)} marked Drifted), {len(self.deleting)} terminating"
        )
        if self.untracked:
            text += f", {len(self.untracked)} without hash (not tracked)"
        if self.waiting_for_karpenter:
            text += " - waiting for Karpenter to hash the new node class"
        if not total:
            text += " - no nodes: new ones launch with the new userData"
        return text

    def record(self) -> dict[str, Any]:
        return {
            "node_class": self.node_class,
            "new": len(self.new),
            "new_ready": len(self.new_ready),
            "old": len(self.old),
            "drifted": len(self.drifted),
            "terminating": len(self.deleting),
            "untracked": len(self.untracked),
            "done": self.done,
        }


def _claims(api_client: ApiClient, params: RunbookParams) -> list[dict[str, Any]]:
    pk = POOLS[params.karpenter.api_version]
    return _list(api_client, pk.group, pk.version, pk.claim_plural)


def _claim_class(claim: dict[str, Any], api_version: str) -> str | None:
    spec = claim.get("spec") or {}
    ref = spec.get("machineTemplateRef") if api_version == "v1alpha1" else spec.get("nodeClassRef")
    return (ref or {}).get("name")


def _nodes(api_client: ApiClient) -> dict[str, dict[str, Any]]:
    items = kube.get_json(api_client, "/api/v1/nodes").get("items") or []
    out = {}
    for n in items:
        conditions = (n.get("status") or {}).get("conditions") or []
        out[n["metadata"]["name"]] = {
            "ready": any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        }
    return out


def snapshot(params: RunbookParams, api_client: ApiClient, base: Baseline) -> list[ClassProgress]:
    api = params.karpenter.api_version
    kind, pk = KINDS[api], POOLS[api]
    custom = _custom(api_client)
    pools = {p["metadata"]["name"]: p for p in list_pools(params, api_client)}
    claims, nodes = _claims(api_client, params), _nodes(api_client)
    out = []
    for name in params.karpenter.node_classes:
        progress = ClassProgress(name)
        try:
            obj = custom.get_cluster_custom_object(kind.group, kind.version, kind.plural, name)
        except Exception:  # noqa: BLE001 - a class that vanished has no nodes to watch
            obj = None
        ann = _annotations(obj)
        class_hash = ann.get(kind.hash_annotation)
        class_hash_version = ann.get(kind.hash_annotation + HASH_VERSION_SUFFIX)
        changed = name in base.changed_classes
        restamped = class_hash is not None and (not changed or class_hash != base.class_hashes.get(name))
        if changed and class_hash is not None and not restamped:
            progress.waiting_for_karpenter = True
        for claim in claims:
            if _claim_class(claim, api) != name:
                continue
            cname = claim["metadata"]["name"]
            if claim["metadata"].get("deletionTimestamp"):
                progress.deleting.append(cname)
                continue
            cann = _annotations(claim)
            pool_name = (claim["metadata"].get("labels") or {}).get(pk.node_label)
            is_new = _is_new(
                claim,
                cann,
                class_hash,
                class_hash_version,
                kind.hash_annotation,
                restamped,
                changed,
                base,
                pools.get(pool_name) if pool_name else None,
                pool_name,
                pk,
                base.class_hashes.get(name),
            )
            if is_new is None:
                progress.untracked.append(cname)
            elif is_new:
                progress.new.append(cname)
                node = nodes.get((claim.get("status") or {}).get("nodeName") or "")
                if _condition(claim, "Ready") or (node and node["ready"]):
                    progress.new_ready.append(cname)
            else:
                progress.old.append(cname)
                if _condition(claim, "Drifted"):
                    progress.drifted.append(cname)
        out.append(progress)
    return out


def _is_new(
    claim: dict[str, Any],
    cann: dict[str, str],
    class_hash: str | None,
    class_hash_version: str | None,
    hash_key: str,
    restamped: bool,
    changed: bool,
    base: Baseline,
    pool: dict[str, Any] | None,
    pool_name: str | None,
    pk: PoolKind,
    hash_before: str | None = None,
) -> bool | None:
    """True: launched from the current spec; False: from an older one; None: cannot tell (no hashes, and
    nothing changed in this run to compare creation times against)."""
    created = _created(claim)
    after_apply = created is not None and created >= base.started
    verdict: bool | None
    claim_hash = cann.get(hash_key)
    if class_hash is not None and claim_hash is not None and restamped:
        verdict = claim_hash == class_hash
        claim_version = cann.get(hash_key + HASH_VERSION_SUFFIX)
        if verdict and class_hash_version and claim_version and claim_version != class_hash_version:
            verdict = False
    elif changed and claim_hash is not None and claim_hash == hash_before:
        verdict = False  # launched from the spec as it was before our change
    elif changed:
        verdict = after_apply
    else:
        verdict = None
    if pool_name in base.rolled_pools and verdict is not False:
        pool_hash = _annotations(pool).get(pk.hash_annotation)
        claim_pool_hash = cann.get(pk.hash_annotation)
        if pool_hash and claim_pool_hash and pool_hash != base.pool_hashes.get(pool_name):
            verdict = claim_pool_hash == pool_hash
        else:
            verdict = after_apply
    return verdict


def watch(
    params: RunbookParams,
    api_client: ApiClient,
    base: Baseline,
    timeout_s: float | None = None,
    poll_s: float | None = None,
    out: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[ClassProgress]:
    """Look at NodeClaims and Nodes every `poll_s` until every node class is done; print a progress line
    whenever something moved. Raises StageFailed with the counts when `timeout_s` passes first."""
    timeout_s = params.karpenter.rollout_timeout_s if timeout_s is None else timeout_s
    poll_s = params.karpenter.rollout_poll_s if poll_s is None else poll_s
    deadline = clock() + timeout_s
    last: list[str] = []
    printed = clock()
    bars = {n: live.tracker(f"node rollout: {n}", unit="node") for n in params.karpenter.node_classes}
    while True:
        progress = snapshot(params, api_client, base)
        for p in progress:  # JupyterLab: a bar per node class, new nodes Ready of all; headless: nothing
            bars[p.node_class].update(len(p.new_ready), p.total, p.line())
        lines = [p.line() for p in progress]
        if lines != last or clock() - printed >= HEARTBEAT_S:  # also a line a minute while nothing moves
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            for line in lines:
                out(f"[{stamp}] {line}")
            last, printed = lines, clock()
        if all(p.done for p in progress):
            return progress
        if clock() >= deadline:
            raise StageFailed(
                f"rollout not finished after {timeout_s:.0f} s: "
                + "; ".join(
                    f"{p.node_class}: {len(p.old)} old, {len(p.deleting)} terminating, "
                    f"{len(p.new) - len(p.new_ready)} new not ready"
                    for p in progress
                    if not p.done
                )
                + ". Check that drift is on and the budgets allow it (see above); "
                + "the userData change itself is "
                "applied and stays",
                step="watch rollout",
            )
        sleep(poll_s)
