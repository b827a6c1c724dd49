"""Kubelet stand-in for lab nodes: registers the Node, pulls Pod images through the node's real containerd
(CRI), and reports what a kubelet reports — the Events and Pod status that show how a pull went.

It runs inside the node's namespaces (see node.py) and talks to the Kubernetes API stand-in through the
node's path to the lab's ports (veth.py) with the official client, like a kubelet talks to its API
server. What it does, and the real kubelet behaviour each part follows (kubernetes/kubernetes pkg/kubelet):

* Registration: creates the Node (labels from --node-labels, --register-with-taints, spec.providerID,
  addresses, capacity, nodeInfo) and posts `Ready=True` ("kubelet is posting ready status"); status
  heartbeats every `heartbeat_s` seconds (nodeStatusUpdateFrequency, 10 s by default).
* Image pulls (pkg/kubelet/images/image_manager.go EnsureImageExists): per container, init containers
  first, `Always` pulls, `IfNotPresent` pulls only when CRI ImageStatus says the image is absent, `Never`
  never pulls. Pulls are serialized per node (serializeImagePulls defaults to true). Events, exact wording:
    Normal  Pulling  `Pulling image "IMG"`
    Normal  Pulled   `Successfully pulled image "IMG" in 1.234s (1.234s including waiting). Image size: N
    bytes.`
    Normal  Pulled   `Container image "IMG" already present on machine`
    Warning Failed   `Failed to pull image "IMG": <CRI error>` then `Error: ErrImagePull`
    Normal  BackOff  `Back-off pulling image "IMG"` and Warning Failed `Error: ImagePullBackOff`
    Warning ErrImageNeverPull `Container image "IMG" is not present with pull policy of Never`
  Durations are Go `time.Duration` strings truncated to milliseconds, as the kubelet prints them; the
  first is the CRI PullImage call, the second includes the wait in the node's serial pull queue. The
  image size is CRI ImageStatus `size`. Lab only: the Pulled event's annotation
  `eks-mirror-runbook/unpack-seconds` says how much of the pull containerd spent unpacking (its "diff
  applied" debug log lines, node.UnpackMeter), which a real kubelet does not report. Event source:
  component `kubelet`, host = node name;
  involvedObject = the Pod with fieldPath `spec.containers{NAME}` (`spec.initContainers{NAME}`).
  After a failed pull the container waits with reason ErrImagePull, then ImagePullBackOff, and the pull
  is retried with the kubelet's image back-off (10 s doubling to 300 s).
* Approximation (documented, deliberate): containers are NOT run. Once every image of a Pod is present,
  the Pod is reported `Succeeded` with each container `terminated` (exitCode 0, reason Completed), whatever
  its restartPolicy — enough for pull-time measurements, which are all the lab needs from a node.
* Graceful deletion: a Pod on this node with a deletionTimestamp has nothing running, so the kubelet
  confirms the deletion at once (DELETE with gracePeriodSeconds=0 and a UID precondition), as the real
  status manager does once the containers are gone.
* Node `status.images`: the node's images (CRI ListImages: names = repo tags + repo digests, sizeBytes),
  largest first, at most 50 (--node-status-max-images), refreshed with each heartbeat and after each pull.
* Image garbage collection by age (KubeletConfiguration `imageMaximumGCAge`, off by default as in the
  kubelet): an image no Pod on this node uses any more is removed (CRI RemoveImage) once it has been unused
  for that long. The kubelet checks every 5 minutes (ImageGCPeriod); the stand-in every second.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 10.0, 300.0  # kubelet's image pull back-off (pkg/kubelet/kubelet.go)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() of `seconds` truncated to milliseconds (kubelet's `%v` of a duration)."""
    ns = int(seconds * 1000) * 1_000_000
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}"

    if ns < 1_000_000_000:
        return sign + frac(ns, 1_000_000) + "ms"  # sub-millisecond values cannot occur after truncation
    text = frac(ns % 60_000_000_000, 1_000_000_000) + "s"
    minutes = ns // 60_000_000_000
    if minutes:
        text = f"{minutes % 60}m" + text
        if minutes >= 60:
            text = f"{minutes // 60}h" + text
    return sign + text


def go_quote(text: str) -> str:
    """Go's %q for the printable ASCII image names kubelet messages quote (JSON escaping is the same
    there)."""
    return json.dumps(text)


# Lab only, on a Pulled event: seconds of the pull that containerd spent unpacking (node.UnpackMeter).
UNPACK_ANNOTATION = "eks-mirror-runbook/unpack-seconds"


def pulled_message(image: str, pull_s: float, total_s: float, size: int) -> str:
    return (
        f"Successfully pulled image {go_quote(image)} in {go_duration(pull_s)} "
        f"({go_duration(total_s)} including waiting). Image size: {size} bytes."
    )


def grpc_error_text(code_name: str, details: str) -> str:
    """A CRI error as the Go gRPC client prints it: `rpc error: code = Unknown desc = ...`."""
    camel = "".join(part.capitalize() for part in code_name.split("_"))
    return f"rpc error: code = {camel} desc = {details}"


@dataclass
class KubeletConfig:
    node_name: str
    cri_socket: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    provider_id: str = ""
    internal_ip: str = "127.0.0.1"
    capacity: dict[str, str] = field(
        default_factory=lambda: {"cpu": "2", "memory": "8Gi", "pods": "29", "ephemeral-storage": "20Gi"}
    )
    kubelet_version: str = "v1.33.5-eks-lab"
    runtime_version: str = "containerd://1.6.20"
    heartbeat_s: float = 10.0
    os_image: str = "Lab node (eks-mirror-runbook)"
    image_maximum_gc_age_s: float = 0.0  # 0 = off (the kubelet's default)
    max_reported_images: int = 50


class ObjectWatch:
    """List, then watch from the list's resourceVersion; relist after 410 Gone or a broken stream.

    `on_event(type, raw_object)` gets "ADDED" for every listed object, then the watch events. Runs in a
    daemon thread until stop(); the stand-in ends idle watches after `timeout_s`, which bounds stop().
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        on_event: Callable[[str, dict[str, Any]], None],
        name: str,
        timeout_s: int = 20,
        **list_kwargs: Any,
    ) -> None:
        self.list_fn, self.on_event, self.name = list_fn, on_event, name
        self.timeout_s, self.list_kwargs = timeout_s, list_kwargs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()

    def start(self) -> ObjectWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{self.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _list(self) -> str:
        raw = self.list_fn(_preload_content=False, **self.list_kwargs)
        body = json.loads(raw.data)
        for item in body.get("items") or []:
            self.on_event("ADDED", item)
        self.synced.set()
        return (body.get("metadata") or {}).get("resourceVersion") or ""

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                w = watch.Watch()
                for event in w.stream(
                    self.list_fn,
                    resource_version=rv,
                    timeout_seconds=self.timeout_s,
                    allow_watch_bookmarks=True,
                    **self.list_kwargs,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    obj = event.get("raw_object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.on_event(event["type"], obj)
            except ApiException as exc:
                if exc.status == 410:
                    rv = ""  # history expired: start over from a fresh list
                    continue
                rv = ""
                self._stop.wait(1.0)
            except Exception:  # connection refused/reset while the API restarts: retry from a list
                rv = ""
                self._stop.wait(1.0)


@dataclass
class _PullRequest:
    image: str
    queued: float


class Kubelet:
    """One node's kubelet stand-in. `api` is a kubernetes ApiClient; `cri` a CRIImageClient (or alike)."""

    def __init__(
        self,
        config: KubeletConfig,
        api: Any,
        cri: Any,
        log: Callable[[str], None] = print,
        unpack_meter: Any = None,  # node.UnpackMeter: the Pulled event then carries UNPACK_ANNOTATION
    ) -> None:
        from kubernetes import client

        self.config = config
        self.api = api
        self.core = client.CoreV1Api(api)
        self.cri = cri
        self.log = log
        self.unpack_meter = unpack_meter
        self._stop = threading.Event()
        self._work: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._known: dict[str, float] = {}  # pod uid -> earliest time to (re)try
        self._known_lock = threading.Lock()
        self._backoff: dict[tuple[str, str], float] = {}  # (pod uid, image) -> current back-off
        self._threads: list[threading.Thread] = []
        self._watch: ObjectWatch | None = None
        self._ready_since = now_rfc3339()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self.register()
        self._watch = ObjectWatch(
            self.core.list_pod_for_all_namespaces,
            self._on_pod,
            "pods",
            field_selector=f"spec.nodeName={self.config.node_name}",
        ).start()
        loops = [(self._worker, "pods"), (self._heartbeat, "heartbeat"), (self._retrier, "retry")]
        if self.config.image_maximum_gc_age_s > 0:
            loops.append((self._image_gc, "image-gc"))
        for target, name in loops:
            t = threading.Thread(target=target, daemon=True, name=f"kubelet-{name}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch:
            self._watch.stop()
        self._work.put(None)
        for t in self._threads:
            t.join(timeout=5)

    # -- node ------------------------------------------------------------------------------------
    def node_conditions(self, heartbeat: str) -> list[dict[str, str]]:
        since = self._ready_since
        rows = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]
        return [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": since,
            }
            for t, s, r, m in rows
        ]

    def node_object(self) -> dict[str, Any]:
        c = self.config
        labels = {
            "kubernetes.io/hostname": c.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            **c.labels,
        }
        spec: dict[str, Any] = {"providerID": c.provider_id} if c.provider_id else {}
        if c.taints:
            spec["taints"] = c.taints
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": c.node_name,
                "labels": labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": spec,
            "status": self.node_status(),
        }

    def node_status(self) -> dict[str, Any]:
        c = self.config
        boot = uuid.uuid5(uuid.NAMESPACE_URL, c.node_name + self._ready_since)
        return {
            "capacity": dict(c.capacity),
            "allocatable": dict(c.capacity),
            "conditions": self.node_conditions(now_rfc3339()),
            "addresses": [
                {"type": "InternalIP", "address": c.internal_ip},
                {"type": "Hostname", "address": c.node_name},
                {"type": "InternalDNS", "address": c.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": self._images_or_empty(),
            "nodeInfo": {
                "machineID": boot.hex,
                "systemUUID": str(boot),
                "bootID": str(boot),
                "kernelVersion": _kernel(),
                "osImage": c.os_image,
                "containerRuntimeVersion": c.runtime_version,
                "kubeletVersion": c.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create the Node (or take over one left from an earlier boot of the same instance), then post
        status."""
        from kubernetes.client.rest import ApiException

        body = self.node_object()
        try:
            self.core.create_node(body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # re-registration after a restart: kubelet updates labels/providerID and its status
            self.core.patch_node(
                self.config.node_name,
                {
                    "metadata": {"labels": body["metadata"]["labels"]},
                    "spec": {"providerID": self.config.provider_id},
                },
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        self.core.patch_node_status(
            self.config.node_name,
            {"status": body["status"]},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        )
        self.log(f"kubelet: node {self.config.node_name} registered")

    def node_images(self) -> list[dict[str, Any]]:
        """status.images as the kubelet reports them: largest first, at most max_reported_images."""
        rows = [
            {"names": [*img.repo_tags, *img.repo_digests] or [img.id], "sizeBytes": img.size}
            for img in self.cri.list()
        ]
        rows.sort(key=lambda r: r["sizeBytes"], reverse=True)
        return rows[: self.config.max_reported_images]

    def _images_or_empty(self) -> list[dict[str, Any]]:
        try:
            return self.node_images()
        except Exception:
            return []

    def report_images(self) -> None:
        try:
            images = self.node_images()
            self.core.patch_node_status(
                self.config.node_name,
                {"status": {"images": images}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        except Exception as exc:
            self.log(f"kubelet: image status not reported: {exc}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.config.heartbeat_s):
            try:
                status: dict[str, Any] = {"conditions": self.node_conditions(now_rfc3339())}
                with contextlib.suppress(Exception):
                    status["images"] = self.node_images()
                self.core.patch_node_status(
                    self.config.node_name,
                    {"status": status},
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            except Exception as exc:  # the API may be restarting; the next beat retries
                self.log(f"kubelet: heartbeat failed: {exc}")

    def _image_gc(self) -> None:
        """Remove images unused for image_maximum_gc_age_s (imageMaximumGCAge)."""
        unused_since: dict[str, float] = {}
        while not self._stop.wait(1.0):
            try:
                pods = json.loads(
                    self.core.list_pod_for_all_namespaces(
                        field_selector=f"spec.nodeName={self.config.node_name}", _preload_content=False
                    ).data
                )
                in_use: set[str] = set()
                for pod in pods.get("items") or []:
                    spec = pod.get("spec") or {}
                    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                        present = self.cri.status(c["image"])
                        if present is not None:
                            in_use.add(present.id)
                now = time.monotonic()
                removed = False
                for image in self.cri.list():
                    if image.id in in_use:
                        unused_since.pop(image.id, None)
                        continue
                    since = unused_since.setdefault(image.id, now)
                    if now - since >= self.config.image_maximum_gc_age_s:
                        self.cri.remove(image.id)
                        unused_since.pop(image.id, None)
                        removed = True
                        self.log(
                            f"kubelet: image {image.repo_tags or image.id} removed (unused for "
                            f"{now - since:.0f} s, imageMaximumGCAge)"
                        )
                if removed:
                    self.report_images()
            except Exception as exc:
                self.log(f"kubelet: image garbage collection failed: {exc}")

    # -- pods ------------------------------------------------------------------------------------
    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        if kind == "DELETED":
            with self._known_lock:
                self._known.pop(uid, None)
            return
        if meta.get("deletionTimestamp"):
            self._confirm_deletion(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        with self._known_lock:
            if phase != "Pending" or uid in self._known:
                return
            self._known[uid] = 0.0
        self._work.put((meta.get("namespace", "default"), meta["name"], uid))

    def _confirm_deletion(self, pod: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                meta["name"],
                meta.get("namespace", "default"),
                grace_period_seconds=0,
                body={"preconditions": {"uid": meta["uid"]}},
                _preload_content=False,
            )

    def _retrier(self) -> None:
        """Re-queue pods whose image back-off has expired (kubelet retries on its next pod sync)."""
        while not self._stop.wait(0.5):
            due = []
            now = time.monotonic()
            with self._known_lock:
                for uid, when in self._known.items():
                    if when and when <= now:
                        self._known[uid] = 0.0
                        due.append(uid)
            for uid in due:
                self._requeue(uid)

    def _requeue(self, uid: str) -> None:
        pods = json.loads(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.config.node_name}", _preload_content=False
            ).data
        ).get("items", [])
        for pod in pods:
            if pod["metadata"]["uid"] == uid:
                self._work.put((pod["metadata"].get("namespace", "default"), pod["metadata"]["name"], uid))

    def _worker(self) -> None:
        while not self._stop.is_set():
            item = self._work.get()
            if item is None:
                return
            try:
                self.sync_pod(*item)
            except Exception:
                self.log("kubelet: pod sync failed:\n" + traceback.format_exc())

    def _get_pod(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            pod = json.loads(self.core.read_namespaced_pod(name, namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return pod if pod["metadata"].get("uid") == uid else None

    def sync_pod(self, namespace: str, name: str, uid: str) -> None:
        pod = self._get_pod(namespace, name, uid)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        if (pod.get("status") or {}).get("phase") not in ("Pending", None):
            return
        spec = pod.get("spec") or {}
        started = now_rfc3339()
        status = pod.get("status") or {}
        start_time = status.get("startTime") or started
        groups = [("initContainers", c) for c in spec.get("initContainers") or []] + [
            ("containers", c) for c in spec.get("containers") or []
        ]
        states: dict[str, dict[str, Any]] = {
            c["name"]: {"waiting": {"reason": "ContainerCreating"}} for _, c in groups
        }
        image_ids: dict[str, str] = {}
        self._post_status(pod, "Pending", start_time, states, image_ids)
        for field_name, container in groups:
            outcome = self._ensure_image(pod, field_name, container)
            if isinstance(outcome, dict):  # waiting state: stop here, like kubelet's failed SyncPod
                states[container["name"]] = {"waiting": outcome}
                self._post_status(pod, "Pending", start_time, states, image_ids)
                return
            image_ids[container["name"]] = outcome
        finished = now_rfc3339()
        for _, container in groups:
            states[container["name"]] = {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": finished,
                    "finishedAt": finished,
                    "containerID": "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex,
                }
            }
        self._post_status(pod, "Succeeded", start_time, states, image_ids)
        with self._known_lock:
            self._known[uid] = 0.0

    def _ensure_image(
        self, pod: dict[str, Any], field_name: str, container: dict[str, Any]
    ) -> str | dict[str, str]:
        """The image id (repo digest) when the image is there, else the container's waiting state."""
        from runbook_lab.cri import CRIError

        image = container["image"]
        policy = container.get("imagePullPolicy") or "IfNotPresent"
        ref = f"spec.{field_name}{{{container['name']}}}"
        present = self.cri.status(image)
        if present is not None and policy != "Always":
            self.event(
                pod, ref, "Normal", "Pulled", f"Container image {go_quote(image)} already present on machine"
            )
            return _image_id(image, present)
        if policy == "Never":
            message = f"Container image {go_quote(image)} is not present with pull policy of Never"
            self.event(pod, ref, "Warning", "ErrImageNeverPull", message)
            return {"reason": "ErrImageNeverPull", "message": message}
        key = (pod["metadata"]["uid"], image)
        request = _PullRequest(image, time.monotonic())
        self.event(pod, ref, "Normal", "Pulling", f"Pulling image {go_quote(image)}")
        mark = self.unpack_meter.mark() if self.unpack_meter else None
        try:
            _, pull_s = self.cri.pull(image)
        except CRIError as exc:
            error = grpc_error_text(exc.code.name, exc.details)
            self.event(pod, ref, "Warning", "Failed", f"Failed to pull image {go_quote(image)}: {error}")
            self.event(pod, ref, "Warning", "Failed", "Error: ErrImagePull")
            self._schedule_retry(pod, ref, key, image)
            return {"reason": "ErrImagePull", "message": error}
        total_s = time.monotonic() - request.queued
        self._backoff.pop(key, None)
        after = self.cri.status(image)
        size = after.size if after else 0
        unpack_s = self.unpack_meter.since(mark) if self.unpack_meter and mark is not None else None
        # lab only: a real kubelet reports the pull with its unpack; the lab node says the unpack apart
        notes = {UNPACK_ANNOTATION: f"{unpack_s:.4f}"} if unpack_s is not None else None
        self.event(pod, ref, "Normal", "Pulled", pulled_message(image, pull_s, total_s, size), notes)
        self.report_images()
        return _image_id(image, after)

    def _schedule_retry(self, pod: dict[str, Any], ref: str, key: tuple[str, str], image: str) -> None:
        delay = self._backoff.get(key)
        delay = BACKOFF_INITIAL_S if delay is None else min(delay * 2, BACKOFF_MAX_S)
        self._backoff[key] = delay

        def back_off() -> None:
            # the next sync finds the image in back-off: BackOff event and ImagePullBackOff state
            if self._stop.wait(1.0):
                return
            current = self._get_pod(
                pod["metadata"].get("namespace", "default"), pod["metadata"]["name"], pod["metadata"]["uid"]
            )
            if current is None or current["metadata"].get("deletionTimestamp"):
                return
            message = f"Back-off pulling image {go_quote(image)}"
            self.event(current, ref, "Normal", "BackOff", message)
            self.event(current, ref, "Warning", "Failed", "Error: ImagePullBackOff")
            statuses = (current.get("status") or {}).get("containerStatuses") or []
            name = ref.split("{", 1)[1].rstrip("}")
            for cs in statuses:
                if cs.get("name") == name:
                    cs["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
            self._patch_status(current, {"containerStatuses": statuses} if statuses else {})

        threading.Thread(target=back_off, daemon=True).start()
        with self._known_lock:
            self._known[key[0]] = time.monotonic() + delay

    # -- status and events -----------------------------------------------------------------------
    def _post_status(
        self,
        pod: dict[str, Any],
        phase: str,
        start_time: str,
        states: dict[str, dict[str, Any]],
        image_ids: dict[str, str],
    ) -> None:
        spec = pod.get("spec") or {}
        now = now_rfc3339()
        done = phase == "Succeeded"

        def statuses(key: str) -> list[dict[str, Any]]:
            rows = []
            for c in spec.get(key) or []:
                state = states.get(c["name"], {"waiting": {"reason": "ContainerCreating"}})
                rows.append(
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": image_ids.get(c["name"], ""),
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": state,
                        **(
                            {"containerID": state["terminated"]["containerID"]}
                            if "terminated" in state
                            else {}
                        ),
                    }
                )
            return rows

        init_done = done or all(
            "terminated" in states.get(c["name"], {}) for c in spec.get("initContainers") or []
        )
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": start_time},
            {
                "type": "Initialized",
                "status": "True" if init_done else "False",
                "lastTransitionTime": now,
                **({} if init_done else {"reason": "ContainersNotInitialized"}),
            },
            {
                "type": "Ready",
                "status": "False",
                "lastTransitionTime": now,
                "reason": "PodCompleted" if done else "ContainersNotReady",
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "lastTransitionTime": now,
                "reason": "PodCompleted" if done else "ContainersNotReady",
            },
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": start_time},
        ]
        body: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "startTime": start_time,
            "hostIP": self.config.internal_ip,
            "hostIPs": [{"ip": self.config.internal_ip}],
            "containerStatuses": statuses("containers"),
            "qosClass": (pod.get("status") or {}).get("qosClass"),
        }
        if spec.get("initContainers"):
            body["initContainerStatuses"] = statuses("initContainers")
        self._patch_status(pod, body)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta.get("namespace", "default"),
                {"status": status},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted meanwhile needs no status
                raise

    def event(
        self,
        pod: dict[str, Any],
        field_path: str,
        type_: str,
        reason: str,
        message: str,
        annotations: dict[str, str] | None = None,
    ) -> None:
        meta = pod["metadata"]
        namespace = meta.get("namespace", "default")
        stamp = now_rfc3339()
        body = {
            # client-go's recorder names events "<object name>.<unix nanoseconds in hex>"
            "metadata": {
                "name": f"{meta['name']}.{time.time_ns():x}",
                "namespace": namespace,
                **({"annotations": annotations} if annotations else {}),
            },
            "involvedObject": {
                "kind": "Pod",
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta.get("uid"),
                "apiVersion": "v1",
                "resourceVersion": meta.get("resourceVersion"),
                "fieldPath": field_path,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "kubelet", "host": self.config.node_name},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.config.node_name,
        }
        try:
            self.core.create_namespaced_event(namespace, body, _preload_content=False)
        except Exception as exc:  # the recorder drops events it cannot write; so do we, with a log line
            self.log(f"kubelet: event {reason} not recorded: {exc}")
        self.log(f"kubelet: {type_} {reason} {namespace}/{meta['name']} {field_path}: {message}")


def _image_id(image: str, present: Any) -> str:
    digests = list(getattr(present, "repo_digests", []) or [])
    return digests[0] if digests else getattr(present, "id", "") or image


def _kernel() -> str:
    try:
        with open("/proc/sys/kernel/osrelease", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def iter_events(core: Any, namespace: str, pod: str) -> Iterator[dict[str, Any]]:
    """The Events of a Pod (kubectl describe's source), oldest first — a helper for tests and tools."""
    raw = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod}", _preload_content=False
    )
    items = json.loads(raw.data).get("items") or []
    yield from sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
