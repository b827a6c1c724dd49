"""The stateful object store behind the stand-in: verbs with kube-apiserver semantics, watch history, hooks
and a JSON state file.

Semantics reproduced (sources: k8s.io/apiserver/pkg/registry/generic/registry/store.go, pkg/registry/rest/
{create,update,delete}.go, handlers/{create,update,patch,delete}.go, etcd3 store):
- one cluster-wide resourceVersion counter (etcd revision); every write bumps it; a write that changes
  nothing is not written (no new resourceVersion, no watch event), like GuaranteedUpdate;
- create: generateName (5 chars of "bcdfghjklmnpqrstvwxz2456789"), uid, creationTimestamp, generation 1 for
  kinds whose strategy tracks it; the Namespace must exist (404) and not be terminating (403);
- update: optimistic concurrency on metadata.resourceVersion (409 Conflict); custom resources refuse an
  update without one (422, AllowUnconditionalUpdate=false); generation bumps when the spec (custom
  resources: anything but metadata and status) changes; the main resource ignores status changes and the
  status subresource ignores everything else;
- delete: finalizers keep the object, marked with deletionTimestamp and deletionGracePeriodSeconds 0, until an
  update empties them; Pods bound to a node are deleted gracefully (deletionTimestamp = now + grace, kept
  until
  a delete with gracePeriodSeconds=0, which a kubelet sends); the answer is the object (pods, services,
  namespaces, and any object still pending finalization) or a Status Success with details (others);
- namespace deletion marks the namespace Terminating, deletes its content (what the namespace controller
  does, done synchronously here) and removes the namespace once it is empty.
Garbage collection of dependents (ownerReferences, propagationPolicy) is not reproduced.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import tempfile
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from . import builtin_schemas, builtins, managed
from .errors import (
    STALE_OBJECT,
    ApiError,
    FieldError,
    GoLiteral,
    already_exists,
    bad_request,
    conflict,
    expired,
    forbidden,
    invalid,
    not_found,
    unsupported_media_type,
)
from .names import NAME_RULES, validate_annotations, validate_labels
from .patch import json_patch, merge_patch, strategic_merge_patch
from .resources import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, Registry, ResourceType
from .schema import apply_defaults, prune
from .schema import validate as validate_schema
from .selectors import FieldTerm, Requirement, fields_match, labels_match

HISTORY_SIZE = 10000
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apiserver/pkg/storage/names (no vowels, no 0/1/3)
STATE_FORMAT = 1

Key = tuple[str, str]  # (namespace or "", name)
ChangeHook = Callable[[str, dict[str, Any]], None]


def now_rfc3339(delta_seconds: int = 0) -> str:
    return (datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=delta_seconds)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


@dataclass
class Context:
    """Per-request options and outputs."""

    dry_run: bool = False
    field_manager: str | None = None
    user_agent: str = ""
    field_validation: str = "Warn"  # server default since 1.27 is Warn
    warnings: list[str] = field(default_factory=list)

    @property
    def manager(self) -> str:
        return self.field_manager or managed.manager_from_user_agent(self.user_agent) or "unknown"


@dataclass
class Event:
    rv: int
    resource: tuple[str, str]
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    preconditions: dict[str, Any] = field(default_factory=dict)
    propagation_policy: str | None = None
    dry_run: bool = False


def _ns(rt: ResourceType, namespace: str | None) -> str:
    return (namespace or "") if rt.namespaced else ""


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return meta


class Store:
    def __init__(self, state_file: Path | None = None, crd_profile: str = "all") -> None:
        self.registry = Registry()
        self.state_file = Path(state_file) if state_file else None
        self._objects: dict[tuple[str, str], dict[Key, dict[str, Any]]] = {}
        self._rv = 0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._history: deque[Event] = deque(maxlen=HISTORY_SIZE)
        self._hooks: list[ChangeHook] = []
        self._pending: list[Event] = []
        self._depth = 0
        self._dirty = False
        self.closed = False
        if self.state_file and self.state_file.exists():
            self._load()
        else:
            self._bootstrap(crd_profile)

    # -- state -------------------------------------------------------------------------------------
    def _bootstrap(self, crd_profile: str) -> None:
        from .profiles import load_profile

        ctx = Context(field_manager="kube-apiserver")
        with self._write():
            for name in builtins.DEFAULT_NAMESPACES:
                self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ctx)
            for crd in load_profile(crd_profile):
                self.seed(crd, Context(field_manager="helm"))
            self.seed(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": "kubernetes",
                        "namespace": "default",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "clusterIP": str(builtins.SERVICE_CIDR.network_address + 1),
                        "type": "ClusterIP",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}],
                    },
                },
                ctx,
            )

    def _load(self) -> None:
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text())
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_file}: unknown state format {data.get('format')!r}")
        self._rv = int(data["resourceVersion"])
        crds = [o for o in data["objects"] if o.get("kind") == "CustomResourceDefinition"]
        self.registry.set_crds(crds)
        for obj in data["objects"]:
            found = self.registry.by_api_version_kind(obj["apiVersion"], obj["kind"])
            if found is None:
                continue  # its CRD is gone
            rt = found[0]
            meta = obj["metadata"]
            self._objects.setdefault(rt.key, {})[(meta.get("namespace", ""), meta["name"])] = obj

    def _persist(self) -> None:
        if not self.state_file:
            return
        objects = [o for bucket in self._objects.values() for _, o in sorted(bucket.items())]
        payload = json.dumps(
            {"format": STATE_FORMAT, "resourceVersion": self._rv, "objects": objects}, separators=(",", ":")
        )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.state_file.parent, prefix=self.state_file.name + ".", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _write(self) -> Iterator[None]:
        pending: list[Event] = []
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    if self._dirty:
                        self._dirty = False
                        self._persist()
                    pending, self._pending = self._pending, []
                    self._cond.notify_all()
        for event in pending:
            for hook in list(self._hooks):
                try:
                    hook(event.type, copy.deepcopy(event.obj))
                except Exception:  # a broken lab controller must not fail the API write that triggered it
                    traceback.print_exc()

    def add_hook(self, hook: ChangeHook) -> Callable[[], None]:
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook) if hook in self._hooks else None

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._cond.notify_all()

    @property
    def resource_version(self) -> int:
        return self._rv

    def _commit(
        self, rt: ResourceType, key: Key, obj: dict[str, Any] | None, prev: dict[str, Any] | None
    ) -> int:
        """Write (obj) or remove (None) one object; record the watch event. Caller holds the lock."""
        self._rv += 1
        bucket = self._objects.setdefault(rt.key, {})
        if obj is None:
            assert prev is not None
            bucket.pop(key, None)
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = str(
                self._rv
            )  # a DELETED event carries the deletion revision
            event = Event(self._rv, rt.key, "DELETED", gone, prev)
        else:
            obj["metadata"]["resourceVersion"] = str(self._rv)
            bucket[key] = obj
            event = Event(self._rv, rt.key, "ADDED" if prev is None else "MODIFIED", copy.deepcopy(obj), prev)
        self._history.append(event)
        self._pending.append(event)
        self._dirty = True
        if rt.kind == "CustomResourceDefinition":
            self.registry.set_crds(list(self._objects.get(rt.key, {}).values()))
        return self._rv

    # -- helpers -----------------------------------------------------------------------------------
    def _bucket(self, rt: ResourceType) -> dict[Key, dict[str, Any]]:
        return self._objects.setdefault(rt.key, {})

    def _served(self, rt: ResourceType, obj: dict[str, Any], version: str) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version(version)  # conversion strategy None: only apiVersion changes
        out["kind"] = rt.kind
        return out

    def _stored(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        obj["apiVersion"] = rt.api_version(rt.storage_version)
        obj["kind"] = rt.kind
        return obj

    def _check_type(self, rt: ResourceType, version: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
        expected = rt.api_version(version)
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not rt.builtin and (not api_version or not kind):
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body, separators=(',', ':'))}'")
        if api_version and api_version != expected:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({expected})"
            )
        if kind and kind != rt.kind:
            raise bad_request(
                f'{kind} in version "{version}" cannot be handled as a {rt.kind}: '
                f"converting ({api_version}.{kind}) to ({rt.kind}): unknown conversion"
            )
        body["apiVersion"], body["kind"] = expected, rt.kind
        return body

    def _namespace_admission(self, rt: ResourceType, namespace: str, meta: dict[str, Any]) -> None:
        """NamespaceLifecycle admission: the namespace must exist (404) and not be terminating (403)."""
        if not rt.namespaced:
            return
        ns_type = self.registry.by_key(("", "namespaces"))
        assert ns_type is not None
        ns = self._bucket(ns_type).get(("", namespace))
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            # admission.NewForbidden names the object (or its generateName, or "Unknown")
            name = meta.get("name") or meta.get("generateName") or "Unknown"
            err = forbidden(
                rt.plural,
                rt.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )
            assert err.details is not None
            err.details["causes"] = [
                {
                    "reason": "NamespaceTerminating",
                    "message": f"namespace {namespace} is being terminated",
                    "field": "metadata.namespace",
                }
            ]
            raise err

    def _decode(
        self, rt: ResourceType, version: str, obj: dict[str, Any], ctx: Context, defaults: bool = True
    ) -> None:
        """Prune unknown fields (Strict: 400, Warn: warnings) and apply schema defaults (custom resources)."""
        schema = builtin_schemas.schema_for_kind(rt.kind) if rt.builtin else rt.schemas.get(version)
        if schema is None:
            return
        unknown = prune(obj, schema)
        if unknown:
            if ctx.field_validation == "Strict":
                raise bad_request(
                    "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
                )
            if ctx.field_validation == "Warn":
                ctx.warnings.extend(f'unknown field "{u}"' for u in unknown)
        if defaults and not rt.builtin:
            apply_defaults(obj, schema)

    def _validate(
        self, rt: ResourceType, version: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        meta = obj["metadata"]
        errs: list[FieldError] = []
        name = meta.get("name") or ""
        if old is None:
            if not name:
                errs.append(FieldError.required("metadata.name", "name or generateName is required"))
            else:
                errs.extend(
                    FieldError.invalid("metadata.name", name, m) for m in NAME_RULES[rt.name_rule](name)
                )
        for key in ("labels", "annotations"):
            if meta.get(key) is not None and (
                not isinstance(meta[key], dict) or not all(isinstance(v, str) for v in meta[key].values())
            ):
                raise bad_request(
                    f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                    f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{key} of "
                    "type map[string]string"
                )
        errs += validate_labels(meta.get("labels"), "metadata.labels")
        errs += validate_annotations(meta.get("annotations"), "metadata.annotations")
        errs += builtins.finalizer_errors(meta.get("finalizers"))
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = [
                f for f in meta.get("finalizers") or [] if f not in (old["metadata"].get("finalizers") or [])
            ]
            if added:
                errs.append(
                    FieldError.forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the "
                        f"object is being deleted, found new finalizers {_go_list(added)}",
                    )
                )
        if rt.builtin:
            errs += builtins.validate(rt, obj, old)
        else:
            validator = rt.validator(version)
            if validator is not None:
                errs += validate_schema(obj, validator)
        if errs:
            raise invalid(rt.kind, rt.group, name, errs)

    def _generation_changed(self, rt: ResourceType, new: dict[str, Any], old: dict[str, Any]) -> bool:
        if rt.builtin:
            return new.get("spec") != old.get("spec")
        skip = {"metadata", "status"} if rt.has_status else {"metadata"}
        return {k: v for k, v in new.items() if k not in skip} != {
            k: v for k, v in old.items() if k not in skip
        }

    def _alloc(self) -> builtins.Allocator:
        svc_type = self.registry.by_key(("", "services"))
        assert svc_type is not None
        ips, ports = set(), set()
        for svc in self._bucket(svc_type).values():
            spec = svc.get("spec") or {}
            ips.update(spec.get("clusterIPs") or [spec.get("clusterIP")])
            ports.update(p.get("nodePort") for p in spec.get("ports") or [] if p.get("nodePort"))
        return builtins.Allocator({ip for ip in ips if ip}, ports)

    # -- create ------------------------------------------------------------------------------------
    def create(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        body: Any,
        ctx: Context,
        keep_status: bool = False,
        preset_managed: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        with self._write():
            obj = self._check_type(rt, version, copy.deepcopy(body))
            meta = _meta(obj)
            ns = _ns(rt, namespace)
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise bad_request(
                        "the namespace of the provided object does not match the namespace sent "
                        "on the request"
                    )
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            if meta.get("resourceVersion"):
                # storage.ErrResourceVersionSetOnCreate, as storeerr.InterpretCreateError answers it
                raise bad_request("resourceVersion can not be set for Create requests")
            if rt.kind == "Secret":
                builtins.check_secret_encoding(obj)
            self._decode(rt, version, obj, ctx)
            self._namespace_admission(rt, ns, meta)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(rt, ns, meta["generateName"])
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
                meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.tracks_generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if rt.has_status and not rt.builtin and not keep_status:
                obj.pop("status", None)  # status subresource: create ignores status
            saved_status = copy.deepcopy(obj.get("status")) if keep_status else None
            if rt.builtin and meta.get("name"):
                builtins.prepare_for_create(rt, obj, self._alloc)
            if keep_status and saved_status is not None:
                obj["status"] = saved_status
            self._validate(rt, version, obj, None)
            if (ns, meta["name"]) in self._bucket(rt):
                raise already_exists(rt.plural, rt.group, meta["name"])
            if preset_managed is not None:
                meta["managedFields"] = preset_managed  # server-side apply computed them
            else:
                managed.record_update(
                    None, obj, ctx.manager, rt.api_version(version), "", meta["creationTimestamp"]
                )
            obj = self._stored(rt, obj)
            if ctx.dry_run:
                meta.pop("resourceVersion", None)
                return self._served(rt, obj, version)
            self._commit(rt, (ns, meta["name"]), obj, None)
            return self._served(rt, obj, version)

    def _generate_name(self, rt: ResourceType, ns: str, prefix: str) -> str:
        prefix = prefix[:58]  # maxGeneratedNameLength = 63 - 5
        for _ in range(8):  # RetryGenerateName: up to 8 attempts on a collision
            name = prefix + "".join(random.choice(NAME_CHARS) for _ in range(5))
            if (ns, name) not in self._bucket(rt):
                return name
        raise already_exists(rt.plural, rt.group, name)

    # -- read --------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, version: str, namespace: str | None, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._bucket(rt).get((_ns(rt, namespace), name))
            if obj is None:
                raise not_found(rt.plural, rt.group, name)
            return self._served(rt, obj, version)

    def list(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        labels: list[Requirement] | None = None,
        fields: list[FieldTerm] | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str, str | None, int | None]:
        with self._lock:
            start: list[str] | None = None
            if continue_token:
                try:
                    start = json.loads(base64.b64decode(continue_token))["start"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise bad_request(f"continue key is not valid: {exc}") from exc
            items = []
            for key in sorted(self._bucket(rt)):
                if rt.namespaced and namespace and key[0] != namespace:
                    continue
                if start is not None and list(key) <= start:
                    continue
                obj = self._bucket(rt)[key]
                if labels and not labels_match(labels, obj):
                    continue
                if fields and not fields_match(fields, obj):
                    continue
                items.append((key, obj))
            rv = str(self._rv)
            token, remaining = None, None
            if limit and len(items) > limit:
                last = items[limit - 1][0]
                token = base64.b64encode(json.dumps({"rv": rv, "start": list(last)}).encode()).decode()
                remaining = len(items) - limit
                items = items[:limit]
            return [self._served(rt, o, version) for _, o in items], rv, token, remaining

    # -- update / patch ----------------------------------------------------------------------------
    def update(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        body: Any,
        ctx: Context,
        subresource: str = "",
        keep_status: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        with self._write():
            obj = self._check_type(rt, version, copy.deepcopy(body))
            meta = _meta(obj)
            ns = _ns(rt, namespace)
            if meta.get("name", "") != name:
                raise bad_request(
                    f"the name of the object ({meta.get('name', '')}) does not match the name on "
                    f"the URL ({name})"
                )
            if rt.namespaced and meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request(
                    f"the namespace of the object ({meta['namespace']}) does not match the namespace "
                    f"on the request ({ns})"
                )
            current = self._bucket(rt).get((ns, name))
            if current is None:
                if rt.allow_create_on_update and not subresource:
                    meta.pop("resourceVersion", None)
                    return self.create(rt, version, namespace, obj, ctx), True
                raise not_found(rt.plural, rt.group, name)
            return self._update_existing(rt, version, ns, obj, current, ctx, subresource, keep_status), False

    def _update_existing(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        obj: dict[str, Any],
        current: dict[str, Any],
        ctx: Context,
        subresource: str,
        keep_status: bool,
        managed_done: bool = False,
    ) -> dict[str, Any]:
        meta, old_meta = obj["metadata"], current["metadata"]
        rv = meta.get("resourceVersion")
        if rv:
            if rv != old_meta["resourceVersion"]:
                raise conflict(rt.plural, rt.group, old_meta["name"], STALE_OBJECT)
        elif not rt.allow_unconditional_update:
            # registry Store.Update: the qualified "kind" is the resource here, and the uint64 0 prints as 0x0
            raise invalid(
                rt.plural,
                rt.group,
                old_meta["name"],
                [
                    FieldError.invalid(
                        "metadata.resourceVersion", GoLiteral("0x0"), "must be specified for an update"
                    )
                ],
            )
        if rt.kind == "Secret":
            builtins.check_secret_encoding(obj)
        self._decode(rt, version, obj, ctx)
        old = self._served(rt, current, version)
        if subresource == "status":
            status = obj.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if rt.builtin:  # built-in status strategies let labels/annotations through
                for key in ("labels", "annotations"):
                    if key in meta:
                        new["metadata"][key] = meta[key]
            obj, meta = new, new["metadata"]
        else:
            if rt.has_status and not keep_status:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "generateName",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if rt.builtin:
                builtins.prepare_for_update(rt, obj, old, self._alloc)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if not managed_done:
            meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields") or [])
            if not meta["managedFields"]:
                meta.pop("managedFields")
        self._validate(rt, version, obj, old)
        if rt.tracks_generation and self._generation_changed(rt, obj, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if not managed_done:
            probe = copy.deepcopy(obj)
            managed.record_update(
                old, probe, ctx.manager, rt.api_version(version), subresource, now_rfc3339()
            )
            if _content(probe) != _content(old):
                obj = probe
        if obj == old:
            return old  # nothing changed: no write, no event, same resourceVersion
        obj = self._stored(rt, obj)
        key = (ns, old_meta["name"])
        if ctx.dry_run:
            return self._served(rt, obj, version)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and meta.get("deletionGracePeriodSeconds", 0) == 0
        ):
            self._remove(rt, key, obj)  # the last finalizer is gone: the object is deleted now
            return self._served(rt, obj, version)
        self._commit(rt, key, obj, current)
        return self._served(rt, obj, version)

    def patch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        ctx: Context,
        subresource: str = "",
        force: bool | None = None,
    ) -> tuple[dict[str, Any], bool]:
        if content_type not in rt.patch_types:
            raise unsupported_media_type(rt.patch_types)
        errs = []
        if content_type != APPLY_PATCH and force is not None:
            errs.append(FieldError.forbidden("force", "may not be specified for non-apply patch"))
        if content_type == APPLY_PATCH and not ctx.field_manager:
            errs.append(FieldError.required("fieldManager", "is required for apply patch"))
        if errs:
            raise invalid("PatchOptions", "meta.k8s.io", "", errs)
        with self._write():
            ns = _ns(rt, namespace)
            current = self._bucket(rt).get((ns, name))
            if content_type == APPLY_PATCH:
                return self._apply(rt, version, ns, name, raw, ctx, subresource, bool(force), current)
            if current is None:
                raise not_found(rt.plural, rt.group, name)
            try:
                patch_doc = json.loads(raw or b"null")
            except ValueError as exc:
                raise bad_request(f"error decoding patch: {exc}") from exc
            served = self._served(rt, current, version)
            if content_type == JSON_PATCH:
                patched = json_patch(served, patch_doc)
            elif content_type == MERGE_PATCH:
                if not isinstance(patch_doc, dict):
                    raise bad_request(
                        "json: cannot unmarshal array into Go value of type map[string]interface {}"
                    )
                patched = merge_patch(served, patch_doc)
            else:
                assert content_type == STRATEGIC_PATCH
                patched = strategic_merge_patch(served, patch_doc, rt.kind)
            if not isinstance(patched, dict):
                raise bad_request("the patched document is not an object")
            patched_meta = patched.get("metadata") if isinstance(patched.get("metadata"), dict) else {}
            if patched_meta.get("name", name) != name:
                raise bad_request(
                    f"the name of the object ({patched_meta.get('name')}) does not match the name on "
                    f"the URL ({name})"
                )
            patched.setdefault("metadata", {})["name"] = name
            if patched["metadata"].get("resourceVersion") is None:
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._update_existing(
                rt,
                version,
                ns,
                self._check_type(rt, version, patched),
                current,
                ctx,
                subresource,
                keep_status=False,
            ), False

    def _apply(
        self,
        rt: ResourceType,
        version: str,
        ns: str,
        name: str,
        raw: bytes,
        ctx: Context,
        subresource: str,
        force: bool,
        current: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], bool]:
        try:
            config = yaml.safe_load(raw or b"")
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML: {exc}") from exc
        if not isinstance(config, dict):
            raise bad_request("error decoding YAML: the applied configuration must be an object")
        config = self._check_type(rt, version, config)
        cmeta = config.setdefault("metadata", {})
        if not isinstance(cmeta, dict):
            raise bad_request("metadata must be an object")
        if cmeta.get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil")
        if cmeta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({cmeta.get('name')}) does not match the name on the URL ({name})"
            )
        cmeta["name"] = name
        if rt.namespaced:
            if cmeta.get("namespace", ns) != ns:
                raise bad_request(
                    f"the namespace of the object ({cmeta['namespace']}) does not match the namespace "
                    f"on the request ({ns})"
                )
            cmeta["namespace"] = ns
        # defaults are applied to the merged object later, so they are owned by no applier (as upstream)
        self._decode(rt, version, config, ctx, defaults=False)
        now = now_rfc3339()
        api_version = rt.api_version(version)
        if current is None:
            if subresource:
                raise not_found(rt.plural, rt.group, name)
            applied = managed.apply(None, config, ctx.field_manager or "", api_version, "", force, now)
            applied.setdefault("apiVersion", api_version)
            applied.setdefault("kind", rt.kind)
            managed_fields = applied["metadata"].pop("managedFields", [])
            quiet = Context(
                dry_run=ctx.dry_run,
                field_manager=ctx.field_manager,
                user_agent=ctx.user_agent,
                field_validation="Ignore",
            )  # unknown fields were already reported above
            return self.create(rt, version, ns, applied, quiet, preset_managed=managed_fields), True
        old = self._served(rt, current, version)
        if subresource == "status":
            config = {
                "apiVersion": api_version,
                "kind": rt.kind,
                "metadata": {"name": name},
                **({"status": config["status"]} if "status" in config else {}),
            }
        applied = managed.apply(old, config, ctx.field_manager or "", api_version, subresource, force, now)
        applied["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._update_existing(
            rt, version, ns, applied, current, ctx, subresource, keep_status=False, managed_done=True
        ), False

    # -- delete ------------------------------------------------------------------------------------
    def delete(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        options: DeleteOptions,
        ctx: Context,
    ) -> dict[str, Any]:
        with self._write():
            ns = _ns(rt, namespace)
            current = self._bucket(rt).get((ns, name))
            if current is None:
                raise not_found(rt.plural, rt.group, name)
            meta = current["metadata"]
            pre = options.preconditions or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {meta['uid']}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                )
            if rt.kind == "Namespace" and name in builtins.UNDELETABLE_NAMESPACES:
                raise forbidden("namespaces", "", name, "this namespace may not be deleted")
            obj = copy.deepcopy(current)
            if rt.kind == "Namespace":
                return self._delete_namespace(rt, version, obj, current, ctx)
            grace = self._grace_period(rt, obj, options)
            if grace > 0 or obj["metadata"].get("finalizers"):
                return self._mark_deleting(rt, version, (ns, name), obj, current, grace, ctx)
            if ctx.dry_run:
                return self._deleted_answer(rt, version, obj)
            self._remove(rt, (ns, name), current)
            return self._deleted_answer(rt, version, obj)

    def _grace_period(self, rt: ResourceType, obj: dict[str, Any], options: DeleteOptions) -> int:
        if rt.kind != "Pod":
            return 0
        # pod strategy CheckGracefulDelete
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        grace = options.grace_period_seconds
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        if not spec.get("nodeName") or status.get("phase") in ("Failed", "Succeeded"):
            grace = 0
        if grace < 0:
            grace = 1
        pending = obj["metadata"].get("deletionGracePeriodSeconds")
        if pending is not None and obj["metadata"].get("deletionTimestamp"):
            grace = min(grace, int(pending))  # a pending deletion may only be shortened
        return grace

    def _mark_deleting(
        self,
        rt: ResourceType,
        version: str,
        key: Key,
        obj: dict[str, Any],
        current: dict[str, Any],
        grace: int,
        ctx: Context,
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        if grace == 0 and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if not ctx.dry_run:
                self._remove(rt, key, current)
            return self._deleted_answer(rt, version, obj)
        if not meta.get("deletionTimestamp"):
            if meta.get("generation"):
                meta["generation"] = int(meta["generation"]) + 1
            meta["deletionTimestamp"] = now_rfc3339(grace)
            meta["deletionGracePeriodSeconds"] = grace
        elif grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            meta["deletionTimestamp"] = now_rfc3339(grace)
            meta["deletionGracePeriodSeconds"] = grace
        if obj != current and not ctx.dry_run:
            self._commit(rt, key, obj, current)
        return self._served(rt, obj, version)

    def _deleted_answer(self, rt: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.returns_deleted_object:
            return self._served(rt, obj, version)
        # Store.finalizeDelete: "Yes we set Kind field to resource."
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                k: v
                for k, v in (
                    ("name", obj["metadata"]["name"]),
                    ("group", rt.group),
                    ("kind", rt.plural),
                    ("uid", obj["metadata"]["uid"]),
                )
                if v
            },
        }

    def _remove(self, rt: ResourceType, key: Key, current: dict[str, Any]) -> None:
        self._commit(rt, key, None, current)
        if rt.kind == "CustomResourceDefinition":
            self._drop_custom_objects(current)
        if rt.namespaced:
            self._finish_namespace_if_empty(key[0])

    def _drop_custom_objects(self, crd: dict[str, Any]) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        for obj_key, obj in list(self._objects.get(key, {}).items()):
            self._rv += 1
            self._objects[key].pop(obj_key)
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            event = Event(self._rv, key, "DELETED", gone, obj)
            self._history.append(event)
            self._pending.append(event)

    def _delete_namespace(
        self, rt: ResourceType, version: str, obj: dict[str, Any], current: dict[str, Any], ctx: Context
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
        answer = self._served(rt, obj, version)
        if ctx.dry_run:
            return answer
        if obj != current:
            self._commit(rt, ("", meta["name"]), obj, current)
        # what the namespace controller does: delete everything in the namespace, then finalize it
        for other in self.registry.all():
            if not other.namespaced:
                continue
            for key in [k for k in self._bucket(other) if k[0] == meta["name"]]:
                item = self._bucket(other).get(key)
                if item is not None:
                    self.delete(
                        other,
                        other.storage_version,
                        key[0],
                        key[1],
                        DeleteOptions(),
                        Context(field_manager="namespace-controller"),
                    )
        self._finish_namespace_if_empty(meta["name"])
        return answer

    def _finish_namespace_if_empty(self, namespace: str) -> None:
        ns_type = self.registry.by_key(("", "namespaces"))
        assert ns_type is not None
        ns = self._bucket(ns_type).get(("", namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        # spec.finalizers "kubernetes" is the namespace controller's own (emulated here); others must go first
        if any(f != "kubernetes" for f in (ns.get("spec") or {}).get("finalizers") or []):
            return
        for other in self.registry.all():
            if other.namespaced and any(k[0] == namespace for k in self._bucket(other)):
                return
        self._commit(ns_type, ("", namespace), None, ns)

    def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldTerm],
        options: DeleteOptions,
        ctx: Context,
    ) -> dict[str, Any]:
        with self._write():
            items, rv, _, _ = self.list(rt, version, namespace, labels, fields)
            deleted = []
            for item in items:
                meta = item["metadata"]
                try:
                    self.delete(rt, version, meta.get("namespace"), meta["name"], options, ctx)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
                deleted.append(item)
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(self._rv)},
                "items": deleted,
            }

    # -- pods/binding ------------------------------------------------------------------------------
    def bind(self, rt: ResourceType, namespace: str, name: str, binding: Any, ctx: Context) -> dict[str, Any]:
        """POST pods/<name>/binding: set spec.nodeName (the scheduler's way; a Pod's spec is otherwise
        immutable)."""
        if not isinstance(binding, dict) or not (binding.get("target") or {}).get("name"):
            raise invalid("Binding", "", name, [FieldError.required("target.name")])
        with self._write():
            current = self._bucket(rt).get((namespace, name))
            if current is None:
                raise not_found(rt.plural, rt.group, name)
            if (current.get("spec") or {}).get("nodeName"):
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f'pod {name} is already assigned to node "{current["spec"]["nodeName"]}"',
                )
            if current["metadata"].get("deletionTimestamp"):
                raise conflict(
                    rt.plural, rt.group, name, f"pod {name} is being deleted, cannot be assigned to a host"
                )
            obj = copy.deepcopy(current)
            obj["spec"]["nodeName"] = binding["target"]["name"]
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            managed.record_update(current, obj, ctx.manager, "v1", "binding", now_rfc3339())
            if not ctx.dry_run:
                self._commit(rt, (namespace, name), obj, current)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- watch -------------------------------------------------------------------------------------
    def watch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldTerm],
        resource_version: str | None,
        timeout: float,
        stop: threading.Event,
        initial_events_end: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Events for a watch: the current objects as ADDED (no resourceVersion, or "0"), or the history after
        resourceVersion (410 Expired as an ERROR event when it is older than the history), then live events
        until `timeout` seconds pass. sendInitialEvents=true ends the initial ADDED list with a BOOKMARK
        annotated k8s.io/initial-events-end (watch-list, KEP-3157)."""
        import time

        deadline = time.monotonic() + timeout

        def visible(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            if rt.namespaced and namespace and obj["metadata"].get("namespace") != namespace:
                return False
            return labels_match(labels, obj) and fields_match(fields, obj)

        with self._lock:
            if resource_version in (None, "", "0"):
                last = self._rv
                initial = [
                    {"type": "ADDED", "object": self._served(rt, o, version)}
                    for _, o in sorted(self._bucket(rt).items())
                    if visible(o)
                ]
                if initial_events_end:
                    initial.append(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version(version),
                                "metadata": {
                                    "resourceVersion": str(last),
                                    "annotations": {"k8s.io/initial-events-end": "true"},
                                },
                            },
                        }
                    )
            else:
                try:
                    last = int(resource_version)
                except ValueError as exc:
                    raise bad_request(f"invalid resource version: {resource_version!r}") from exc
                oldest = self._history[0].rv if self._history else self._rv + 1
                if last < oldest - 1 and last < self._rv:
                    err = expired(f"too old resource version: {last} ({oldest - 1})")
                    initial = [{"type": "ERROR", "object": err.status()}]
                    last = -1
                else:
                    initial = []
        yield from initial
        if last < 0:
            return
        while True:
            with self._lock:
                batch = [e for e in self._history if e.rv > last]
                if batch:
                    last = batch[-1].rv
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or stop.is_set() or self.closed:
                        return
                    self._cond.wait(min(remaining, 1.0))
                    continue
                out = []
                for e in batch:
                    if e.resource != rt.key:
                        continue
                    now_in, was_in = visible(e.obj), visible(e.prev)
                    if e.type == "DELETED":
                        kind = "DELETED" if was_in else None
                    elif now_in and was_in:
                        kind = "MODIFIED"
                    elif now_in:
                        kind = "ADDED"
                    elif was_in:
                        kind = "DELETED"  # the cacher reports an object leaving the selection as deleted
                    else:
                        kind = None
                    if kind:
                        out.append({"type": kind, "object": self._served(rt, e.obj, version)})
            yield from out

    # -- in-process seeding ------------------------------------------------------------------------
    def seed(self, obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
        """Create or replace an object as given (status included), validated like an API write."""
        ctx = ctx or Context(field_manager="lab")
        found = self.registry.by_api_version_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if found is None:
            raise not_found("", "", f"{obj.get('apiVersion')}/{obj.get('kind')}")
        rt, version = found
        meta = obj.get("metadata") or {}
        with self._write():
            current = self._bucket(rt).get((_ns(rt, meta.get("namespace")), meta.get("name", "")))
            if current is None:
                body = copy.deepcopy(obj)
                body.get("metadata", {}).pop("resourceVersion", None)
                return self.create(rt, version, meta.get("namespace"), body, ctx, keep_status=True)
            body = copy.deepcopy(obj)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._update_existing(
                rt,
                version,
                _ns(rt, meta.get("namespace")),
                self._check_type(rt, version, body),
                current,
                ctx,
                "",
                keep_status=True,
            )


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out.get("metadata", {}).pop("managedFields", None)
    return out


def _go_list(values: list[str]) -> str:
    return "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
