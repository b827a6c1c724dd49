"""Pull-time comparison on the nodes: the path that matters, measured by the kubelet itself.

For each NodePool in ``karpenter.node_pools`` the stage lists its Ready nodes (label
``karpenter.sh/nodepool``)
and runs short-lived Pods pinned to them with ``spec.nodeName`` — no scheduler involved, valid on any cluster
— with ``imagePullPolicy: Always``, one Pod per pull:
- the mirrored name (``docker.io/library/big:lab``): containerd on the node follows its hosts.toml to the
  mirror;
- an alias of the same registry that nodes have no mirror for (``registry-1.docker.io/library/big:lab``,
  ``verification.bypass_aliases``): the direct route, from the node's own network position.

The pull time is the kubelet's own figure, from its ``Pulled`` event (pkg/kubelet/images/image_manager.go):
``Successfully pulled image "IMG" in 796ms (1.594s including waiting). Image size: 543804759 bytes.`` — the
first duration is the pull, the second adds the wait in the kubelet's image-pull queue; older kubelets omit
the bracket and the size. A failed pull gives a Warning ``Failed`` event ``Failed to pull image "IMG": ...``.
Transfer vs unpack. The kubelet's pull time includes containerd's unpack of the layers into snapshots, which
the mirror does not change. When the Pulled event carries an ``eks-mirror-runbook/unpack-seconds``
annotation (the lab's nodes add it, from containerd's own "diff applied" timings; a real kubelet does not),
a sample's ``seconds`` is the transfer (pull minus unpack), with ``pull_s`` and ``unpack_s`` beside it, so
medians and speed-ups compare what the mirror changes; without it ``seconds`` is the kubelet's pull time.
Pods are deleted after each pull, on failure and on timeout too, and leftovers of an earlier interrupted run
are removed first (label ``app.kubernetes.io/name=mirror-verify-pull``).

Honest labels. ``imagePullPolicy: Always`` makes the kubelet resolve the manifest every time, but a node that
already holds the layers does not download them again (they are content-addressed: the alias name shares
them). Before each Pod the stage reads the node's ``status.images`` (what the kubelet reports: at most 50
images, largest first, refreshed every few seconds): a node that lists the image gives a sample labelled
``node_cache = image on node`` which is kept out of the medians. Pulls go round-robin over a pool's nodes, and
the mirrored name is pulled before the alias in each repetition, so when layers linger unreported the
comparison errs against the mirror, not for it; a node that does not report the image is preferred over the
next one in rotation. Removing images between repetitions is the node's business (image garbage
collection); the stage never touches a node.

Served by whom. Around each pull of a mirrored name the mirror is pinged and the request counters are read
(mirrorproof.py). A successful pull while the mirror did not answer, or with counters that did not move,
went to the upstream — containerd's fallback to ``server`` — and is counted as ``bypassed``.
"""

from __future__ import annotations

import re
import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from runbook_lib import progress
from runbook_lib.params import RunbookParams, Upstream
from runbook_lib.registry.client import ImageRef
from runbook_lib.secrets import REDACTOR, SecretResolver
from runbook_lib.verify import endpoints, samples
from runbook_lib.verify.hostpull import docker_hub_budget_note
from runbook_lib.verify.mirrorproof import CounterSource, NexusContent, delta
from runbook_lib.verify.ratelimit import Headroom

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


POOL_LABEL = "karpenter.sh/nodepool"
APP_LABEL = "app.kubernetes.io/name"
APP = "mirror-verify-pull"
CONTAINER = "pull"
MAX_REPORTED_IMAGES = 50  # kubelet --node-status-max-images default

IMAGE_ON_NODE = "image on node"
NOT_ON_NODE = "not on node"
NOT_REPORTED = "not reported"
BYPASSED = "upstream (bypassed the mirror)"
FALLBACK = "upstream (mirror down: fallback)"
ALIAS_MIRRORED = "mirror (the alias is mirrored too)"
NO_KUBELET = "the kubelet did not act on the Pod"
UNPACK_ANNOTATION = "eks-mirror-runbook/unpack-seconds"  # on a Pulled event: the unpack part of the pull

_PULLED = re.compile(
    r'^Successfully pulled image "(?P<image>[^"]+)" in (?P<took>[0-9.µμa-z]+)'
    r"(?: \((?P<waiting>[0-9.µμa-z]+) including waiting\))?"
    r"(?:\. Image size: (?P<size>\d+) bytes)?\.?\s*$"
)
_FAILED = re.compile(r'^Failed to pull image "(?P<image>[^"]+)": (?P<reason>.*)$', re.S)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_IMAGE_PULL_ERRORS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
)


# -- kubelet event messages ----------------------------------------------------------------------------
def parse_go_duration(text: str) -> float:
    """Go's time.Duration.String(): '1.234s', '796ms', '1m2.5s', '850µs', '0s' -> seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class PulledMessage:
    image: str
    seconds: float
    seconds_with_waiting: float | None
    size_bytes: int | None


def parse_pulled(message: str) -> PulledMessage | None:
    m = _PULLED.match(message.strip())
    if not m:
        return None
    return PulledMessage(
        m["image"],
        parse_go_duration(m["took"]),
        parse_go_duration(m["waiting"]) if m["waiting"] else None,
        int(m["size"]) if m["size"] else None,
    )


def parse_failed(message: str) -> tuple[str, str] | None:
    m = _FAILED.match(message.strip())
    return (m["image"], m["reason"]) if m else None


# -- nodes ---------------------------------------------------------------------------------------------
def _ready(node: Any) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready and not (node.spec and node.spec.unschedulable) and not node.metadata.deletion_timestamp


def nodes_by_pool(core: Any, pools: list[str]) -> dict[str, list[str]]:
    """NodePool -> names of its Ready, schedulable nodes (sorted, so runs are repeatable)."""
    return {
        pool: sorted(
            n.metadata.name for n in core.list_node(label_selector=f"{POOL_LABEL}={pool}").items if _ready(n)
        )
        for pool in pools
    }


def names_of(ref: ImageRef, hosts: tuple[str, ...]) -> set[str]:
    """The names a kubelet may report for an image: each host, by tag (and repository for digests)."""
    return {f"{host}/{ref.repository}" for host in hosts}


def node_cache(core: Any, node: str, ref: ImageRef, hosts: tuple[str, ...]) -> str:
    images = core.read_node(node).status.images or []
    if not images:
        return NOT_REPORTED
    wanted = names_of(ref, hosts)
    for image in images:
        for name in image.names or []:
            repo, sep, rest = name.rpartition("@") if "@" in name else name.rpartition(":")
            if sep and repo in wanted and (sep == "@" or rest == ref.reference):
                return IMAGE_ON_NODE
    return NOT_REPORTED if len(images) >= MAX_REPORTED_IMAGES else NOT_ON_NODE


def pick_node(
    core: Any, nodes: list[str], turn: int, ref: ImageRef, hosts: tuple[str, ...]
) -> tuple[str, str]:
    """The next node in rotation that does not report the image; the rotation's node when all of them do."""
    order = [nodes[(turn + i) % len(nodes)] for i in range(len(nodes))]
    states = []
    for node in order:
        state = node_cache(core, node, ref, hosts)
        if state != IMAGE_ON_NODE:
            return node, state
        states.append(state)
    return order[0], states[0]


# -- one pod -------------------------------------------------------------------------------------------
@dataclass
class PodPull:
    pod: str
    node: str
    image: str
    ok: bool
    seconds: float | None = None
    seconds_with_waiting: float | None = None
    size_bytes: int | None = None
    error: str | None = None
    unpack_seconds: float | None = None  # reported apart (UNPACK_ANNOTATION), else None

    @property
    def transfer_seconds(self) -> float | None:
        """The pull without its unpack when the node reported the unpack; else the pull time."""
        if self.seconds is None or self.unpack_seconds is None or not 0 <= self.unpack_seconds < self.seconds:
            return self.seconds
        return self.seconds - self.unpack_seconds


def unpack_of(event: Any) -> float | None:
    """The unpack seconds a Pulled event carries (UNPACK_ANNOTATION), None when absent or not a number."""
    annotations = (event.metadata.annotations if getattr(event, "metadata", None) else None) or {}
    try:
        value = float(annotations[UNPACK_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value >= 0 else None


def pod_manifest(name: str, namespace: str, node: str, image: str, timeout_s: float) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {APP_LABEL: APP, "app.kubernetes.io/managed-by": "eks-mirror-runbook"},
        },
        "spec": {
            "nodeName": node,  # pinned: no scheduler decision, the pull happens on this node
            "restartPolicy": "Never",
            "activeDeadlineSeconds": max(int(timeout_s) * 2, 60),  # the kubelet ends it if we cannot
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],  # dedicated pools' taints must not refuse the pod
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "imagePullPolicy": "Always",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def _container_error(pod: Any) -> str | None:
    for status in (pod.status.container_statuses if pod and pod.status else None) or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason in _IMAGE_PULL_ERRORS:
            return f"{waiting.reason}: {waiting.message or ''}".strip()
    return None


def delete_pod(core: Any, name: str, namespace: str) -> None:
    from kubernetes.client.rest import ApiException

    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as err:
        if err.status != 404:
            raise


def remove_leftovers(core: Any, namespace: str) -> int:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{APP_LABEL}={APP}").items
    for pod in pods:
        delete_pod(core, pod.metadata.name, namespace)
    return len(pods)


def run_pod(
    core: Any,
    namespace: str,
    node: str,
    image: str,
    timeout_s: float,
    start_timeout_s: float = 60.0,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PodPull:
    """Create the pull Pod, wait for the kubelet's Pulled or Failed event, delete the Pod (always).

    A kubelet that posts no event at all for the Pod within `start_timeout_s` is not acting on it (node
    gone, kubelet down): that is reported as such rather than waited out for the whole pull timeout.
    """
    name = f"verify-pull-{pysecrets.token_hex(4)}"
    outcome = PodPull(name, node, image, ok=False)
    created = core.create_namespaced_pod(namespace, pod_manifest(name, namespace, node, image, timeout_s))
    uid = created.metadata.uid
    try:
        started = clock()
        wait_s = 0.05  # short first: small images pull in well under a second
        while True:
            events = core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}"
            ).items
            events = [
                ev for ev in events if not (ev.involved_object.uid and uid and ev.involved_object.uid != uid)
            ]
            for ev in events:
                if ev.reason == "Pulled" and (parsed := parse_pulled(ev.message or "")):
                    outcome.ok, outcome.seconds = True, parsed.seconds
                    outcome.seconds_with_waiting, outcome.size_bytes = (
                        parsed.seconds_with_waiting,
                        parsed.size_bytes,
                    )
                    outcome.unpack_seconds = unpack_of(ev)
                    return outcome
                if ev.reason == "Pulled":  # "already present on machine": not a pull
                    outcome.error = f"no pull happened: {ev.message}"
                    return outcome
                if ev.reason == "Failed" and (failed := parse_failed(ev.message or "")):
                    outcome.error = REDACTOR.scrub(f"failed to pull: {failed[1]}")
                    return outcome
            error = _container_error(core.read_namespaced_pod(name, namespace))
            if error:
                outcome.error = REDACTOR.scrub(error)
                return outcome
            waited = clock() - started
            if not events and waited >= min(start_timeout_s, timeout_s):
                waited = min(start_timeout_s, timeout_s)
                outcome.error = f"{NO_KUBELET}: no event for the Pod from {node} within {waited:g} s"
                return outcome
            if waited >= timeout_s:
                outcome.error = f"no Pulled event from the kubelet on {node} within {timeout_s:g} s"
                return outcome
            sleep(wait_s)
            wait_s = min(wait_s * 2, poll_s)
    finally:
        delete_pod(core, name, namespace)


# -- the comparison ------------------------------------------------------------------------------------
@dataclass
class NodeComparison:
    samples: pd.DataFrame
    pools: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured: bool = False  # at least one pod ran

    def summary(self) -> pd.DataFrame:
        return samples.summarize(self.samples, ("pool", "image", "label"))

    def speedups(self) -> dict[str, float | None]:
        return samples.speedups(self.samples)

    def speedups_by_pool(self) -> dict[str, dict[str, float | None]]:
        if self.samples.empty:
            return {}
        return {pool: samples.speedups(group) for pool, group in self.samples.groupby("pool", sort=False)}

    def set_speedup(self) -> float | None:
        return samples.set_speedup(self.samples)

    @property
    def bypassed(self) -> int:
        if self.samples.empty:
            return 0
        s = self.samples
        return int((s["path"].eq("mirror") & s["served_by"].isin([BYPASSED, FALLBACK])).sum())

    def bypass_rows(self) -> pd.DataFrame:
        s = self.samples
        return s[s["path"].eq("mirror") & s["served_by"].isin([BYPASSED, FALLBACK])] if not s.empty else s


@dataclass
class _Plan:
    text: str
    ref: ImageRef
    up: Upstream
    alias: str | None


def _served_by(
    path: str, ok: bool, up_before: bool, up_after: bool, moved: int | None, exact: bool
) -> str | None:
    if not ok:
        return None
    if path == "mirror":
        if not up_before and not up_after:
            return FALLBACK
        if moved == 0:
            return BYPASSED
        if moved:
            return "mirror"
        return "mirror (not proven: no counters)"
    if exact and moved:  # per-repository counters moved during a pull that should not touch the mirror
        return ALIAS_MIRRORED
    return "upstream"


def _pulls(plans: list[_Plan], pools: dict[str, list[str]], reps: int, skip_hub: bool) -> int:
    """How many pulls compare() sends: per pool with nodes, per image, per repetition, per route."""
    routes = sum(1 + bool(p.alias and not (skip_hub and p.ref.registry == "docker.io")) for p in plans)
    return sum(1 for names in pools.values() if names) * routes * reps


def compare(
    params: RunbookParams,
    secret: SecretResolver,
    api_client: ApiClient | Callable[[], ApiClient],
    content: NexusContent,
    counters: CounterSource | None,
    headroom: list[Headroom] | None = None,
    run_pull: Callable[..., PodPull] = run_pod,
) -> NodeComparison:
    from kubernetes import client as k8s

    v = params.verification
    result = NodeComparison(samples.frame([]))
    if not v.node_pull:
        result.notes.append("node path off (verification.node_pull: false)")
        return result
    try:  # api_client may be a callable building the client: a missing kubeconfig is a note, not a crash
        core = k8s.CoreV1Api(api_client() if callable(api_client) else api_client)
        pools = nodes_by_pool(core, list(params.karpenter.node_pools))
    except Exception as err:  # noqa: BLE001 - config errors, ApiException, urllib3 connection errors
        result.notes.append(REDACTOR.scrub(f"cannot list nodes: {type(err).__name__}: {err}"[:500]))
        return result
    result.pools = pools
    for pool, names in pools.items():
        if not names:
            result.notes.append(
                f"NodePool {pool}: no Ready node. Karpenter launches nodes only for pending "
                "Pods; run a workload on the pool, then verify again"
            )
    plans: list[_Plan] = []
    for text in v.images:
        ref = ImageRef.parse(text)
        up = endpoints.upstream_for(params, ref)
        if up is None:
            result.notes.append(f"{text}: no upstream mirrors {ref.registry}; not measured on nodes")
            continue
        alias = v.bypass_aliases.get(ref.registry)
        if alias is None:
            result.notes.append(
                f"{text}: no bypass alias for {ref.registry} (verification.bypass_aliases): "
                "only the mirrored name is pulled on nodes"
            )
        plans.append(_Plan(text, ref, up, alias))
    hub_aliases = sum(1 for p in plans if p.alias and p.ref.registry == "docker.io")
    pools_with_nodes = sum(1 for n in pools.values() if n)
    skip_hub = docker_hub_budget_note(params, headroom, hub_aliases * v.repetitions * pools_with_nodes)
    if skip_hub and hub_aliases:
        result.notes.append(skip_hub.replace("direct Docker Hub pulls", "node pulls of Docker Hub aliases"))
    removed = remove_leftovers(core, v.namespace) if pools_with_nodes else 0
    if removed:
        result.notes.append(f"removed {removed} pull Pod(s) left by an earlier interrupted run")

    rows: list[dict[str, Any]] = []
    exact = bool(counters and counters.per_repository)
    silent: set[str] = set()  # nodes whose kubelet did not act on a Pod
    total = _pulls(plans, pools, v.repetitions, bool(skip_hub))
    bar = progress.tracker("node pulls per image and route", total, "pull", "node pull (s) by label")
    for pool, names in pools.items():
        turn = 0
        for plan in plans:
            if not names:
                break
            hosts = tuple(h for h in (plan.ref.registry, plan.alias) if h)
            cached = content.is_cached(plan.up, plan.ref)
            warmed = False
            for rep in range(1, v.repetitions + 1):
                routes = [("mirror", f"{plan.ref.registry}/{plan.ref.repository}:{plan.ref.reference}")]
                if plan.alias and not (skip_hub and plan.ref.registry == "docker.io"):
                    routes.append(("direct", f"{plan.alias}/{plan.ref.repository}:{plan.ref.reference}"))
                for path, name in routes:
                    live = [n for n in names if n not in silent]
                    if not live:
                        break
                    node, cache_state = pick_node(core, live, turn, plan.ref, hosts)
                    turn += 1
                    label = (
                        samples.DIRECT
                        if path == "direct"
                        else (samples.MIRROR_WARM if warmed else samples.first_mirror_label(cached))
                    )
                    up_before = endpoints.mirror_answers(params, plan.up)
                    before = counters.snapshot() if counters else None
                    pulled = run_pull(core, v.namespace, node, name, v.pull_timeout_s)
                    if not pulled.ok and (pulled.error or "").startswith(NO_KUBELET):
                        silent.add(node)
                        result.notes.append(f"{pool}/{node}: {pulled.error}; no more Pods sent to it")
                    after = counters.snapshot() if counters else None
                    up_after = endpoints.mirror_answers(params, plan.up)
                    moved = delta(before, after, plan.up.endpoint_repository if exact else None)
                    served = _served_by(path, pulled.ok, up_before, up_after, moved, exact)
                    if path == "mirror" and pulled.ok and served not in (BYPASSED, FALLBACK):
                        warmed = True
                    eligible = cache_state != IMAGE_ON_NODE and served not in (
                        BYPASSED,
                        FALLBACK,
                        ALIAS_MIRRORED,
                    )
                    rows.append(
                        {
                            "scope": "node",
                            "pool": pool,
                            "node": node,
                            "image": plan.text,
                            "pulled": name,
                            "path": path,
                            "label": label,
                            "rep": rep,
                            "ok": pulled.ok,
                            "seconds": pulled.transfer_seconds,
                            "pull_s": pulled.seconds,
                            "unpack_s": pulled.unpack_seconds,
                            "time_to_manifest_s": None,
                            "bytes": pulled.size_bytes,
                            "MBps": (
                                pulled.size_bytes / pulled.transfer_seconds / 1e6
                                if pulled.ok and pulled.size_bytes and pulled.transfer_seconds
                                else None
                            ),
                            "status": None,
                            "code": None,
                            "error": pulled.error,
                            "endpoint": pulled.pod,
                            "node_cache": cache_state,
                            "served_by": served,
                            "eligible": eligible,
                        }
                    )
                    result.measured = True
                    bar.advance(f"{pool}/{node}: {name} via {path}", value=pulled.seconds, series=label)
    result.samples = samples.frame(rows)
    return result
