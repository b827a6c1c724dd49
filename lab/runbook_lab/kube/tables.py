"""Server-side printing (meta.k8s.io/v1 Table) for `kubectl get`, which asks with
`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`.

Custom resources use the CRD's additionalPrinterColumns like apiextensions' tableconvertor (simple JSONPath,
"date" columns rendered as ages); built-in kinds get the columns of pkg/printers/internalversion/printers.go
for the kinds served here (values simplified where the upstream printer needs objects we do not hold).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name automatically. "
    "Name is primarily intended for creation idempotence and configuration definition. Cannot be "
    "updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        return f"{hours // 24 // 365}y{(hours // 24) % 365}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


_TOKEN = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)==\"([^\"]*)\"\)\]")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The simple JSONPath subset CRD printer columns use: .a.b, .a[0], .a[?(@.k=="v")].b."""
    nodes = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for node in nodes:
            if m[1] is not None and isinstance(node, dict) and m[1] in node:
                nxt.append(node[m[1]])
            elif m[2] is not None and isinstance(node, list) and int(m[2]) < len(node):
                nxt.append(node[int(m[2])])
            elif m[3] is not None and isinstance(node, list):
                for item in node:
                    value: Any = item
                    for part in m[3].split("."):
                        value = value.get(part) if isinstance(value, dict) else None
                    if value is not None and str(value) == m[4]:
                        nxt.append(item)
        nodes = nxt
    return nodes


def _column(
    name: str, type_: str = "string", priority: int = 0, fmt: str = "", description: str = ""
) -> dict:
    return {
        "name": name,
        "type": type_,
        "format": fmt,
        "description": description or name,
        "priority": priority,
    }


def _cell(type_: str, value: Any) -> Any:
    if value is None:
        return None
    if type_ == "date":
        return age(value) if isinstance(value, str) else None
    if type_ in ("integer", "number", "boolean"):
        return value
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _custom_rows(rt: ResourceType, version: str, items: list[dict]) -> tuple[list[dict], list[list[Any]]]:
    printer = rt.printer_columns.get(version) or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    columns = [_column("Name", fmt="name", description=NAME_DESCRIPTION)]
    columns += [
        _column(
            c["name"],
            "string" if c.get("type") == "date" else c.get("type", "string"),
            int(c.get("priority", 0)),
            c.get("format", ""),
            c.get("description", ""),
        )
        for c in printer
    ]
    rows = []
    for obj in items:
        cells = [obj["metadata"]["name"]]
        for c in printer:
            found = jsonpath(obj, c.get("jsonPath", ""))
            cells.append(_cell(c.get("type", "string"), found[0] if found else None))
        rows.append(cells)
    return columns, rows


def _pod_cells(obj: dict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Unknown"
    if obj["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    return [
        f"{ready}/{len(spec.get('containers') or [])}",
        phase,
        restarts,
        age(obj["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _node_cells(obj: dict) -> list[Any]:
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = obj["metadata"].get("labels") or {}
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k
    )
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        state,
        ",".join(roles) or "<none>",
        age(obj["metadata"].get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _service_cells(obj: dict) -> list[Any]:
    spec = obj.get("spec") or {}
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    ports = (
        ",".join(
            f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
            f"/{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        or "<none>"
    )
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    return [
        spec.get("type", ""),
        spec.get("clusterIP") or "<none>",
        external,
        ports,
        age(obj["metadata"].get("creationTimestamp")),
        selector,
    ]


def _job_cells(obj: dict) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    state = (
        "Complete"
        if conditions.get("Complete") == "True"
        else "Failed"
        if conditions.get("Failed") == "True"
        else "Suspended"
        if spec.get("suspend")
        else "Running"
    )
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    return [
        state,
        f"{status.get('succeeded', 0)}/{spec.get('completions', 1)}",
        "",
        age(obj["metadata"].get("creationTimestamp")),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        ",".join(f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()),
    ]


def _event_cells(obj: dict) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    source = obj.get("source") or {}
    return [
        age(last[:19] + "Z" if last else None),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{(involved.get('kind') or '').lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
        involved.get("fieldPath", ""),
        ", ".join(v for v in (source.get("component"), source.get("host")) if v),
        age(obj.get("firstTimestamp")) if obj.get("firstTimestamp") else "<unknown>",
        obj.get("count", 1),
    ]


_BUILTIN: dict[str, tuple[list[tuple[str, str, int]], Any]] = {
    "Event": (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
        ],
        _event_cells,
    ),
    "Pod": (
        [
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        _pod_cells,
    ),
    "Node": (
        [
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        _node_cells,
    ),
    "Namespace": (
        [("Status", "string", 0), ("Age", "string", 0)],
        lambda o: [(o.get("status") or {}).get("phase", ""), age(o["metadata"].get("creationTimestamp"))],
    ),
    "Secret": (
        [("Type", "string", 0), ("Data", "string", 0), ("Age", "string", 0)],
        lambda o: [o.get("type", ""), len(o.get("data") or {}), age(o["metadata"].get("creationTimestamp"))],
    ),
    "ConfigMap": (
        [("Data", "string", 0), ("Age", "string", 0)],
        lambda o: [
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            age(o["metadata"].get("creationTimestamp")),
        ],
    ),
    "Service": (
        [
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        _service_cells,
    ),
    "Job": (
        [
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _job_cells,
    ),
    "CustomResourceDefinition": (
        [("Created At", "date", 0)],
        lambda o: [o["metadata"].get("creationTimestamp")],
    ),
}


def to_table(rt: ResourceType, version: str, items: list[dict], rv: str, token: str | None) -> dict[str, Any]:
    if not rt.builtin:
        columns, rows = _custom_rows(rt, version, items)
    elif rt.kind in _BUILTIN:
        spec, cells_of = _BUILTIN[rt.kind]
        if rt.kind == "Event":  # the event printer has no leading Name column (it is a wide-only column)
            columns = [_column(n, t, p) for n, t, p in spec] + [_column("Name", fmt="name", priority=1)]
            rows = [[*cells_of(o), o["metadata"]["name"]] for o in items]
        else:
            columns = [_column("Name", fmt="name", description=NAME_DESCRIPTION)]
            columns += [_column(n, t, p) for n, t, p in spec]
            rows = [[o["metadata"]["name"], *cells_of(o)] for o in items]
    else:
        columns = [_column("Name", fmt="name", description=NAME_DESCRIPTION), _column("Age")]
        rows = [[o["metadata"]["name"], age(o["metadata"].get("creationTimestamp"))] for o in items]
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": [
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
            for cells, obj in zip(rows, items, strict=True)
        ],
    }
