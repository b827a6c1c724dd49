"""A minimal /openapi/v3 so kubectl behaves as against a real cluster.

kubectl (`apply`, `create`, `replace` with the default --validate=strict) first asks the OpenAPI v3 document
of the object's group version whether the PATCH operation of that kind takes the `fieldValidation` query
parameter (cli-runtime resource/query_param_verifier_v3.go). When it does, kubectl skips client-side schema
validation and sends fieldValidation=Strict, leaving validation to the server; when /openapi/v3 and
/openapi/v2 are both missing it fails with "failed to download openapi". `kubectl apply` also reads the
PATCH requestBody media types to choose strategic merge (built-in kinds) or JSON merge patch (custom kinds).

Served here: the /openapi/v3 index and, per group version, paths with their operations, parameters,
`x-kubernetes-group-version-kind`/`x-kubernetes-action` extensions and request media types; component
schemas only for custom resources (their CRD schema). /openapi/v2 is not served (404): kubectl only falls
back to it when v3 is unavailable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import Registry, ResourceType

_QUERY = {
    "dryRun": "When present, indicates that modifications should not be persisted.",
    "fieldManager": (
        "fieldManager is a name associated with the actor or entity that is making these changes."
    ),
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields.",
    "force": 'Force is going to "force" Apply requests.',
    "pretty": "If 'true', then the output is pretty printed.",
}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _param(name: str, schema_type: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": _QUERY.get(name, name),
        "schema": {"type": schema_type, "uniqueItems": True},
    }


def _operation(
    rt: ResourceType,
    version: str,
    action: str,
    params: list[str],
    media: list[str] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{rt.kind}",
        "parameters": [_param(p, "boolean" if p == "force" else "string") for p in params],
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "kind": rt.kind, "version": version},
    }
    if media:
        op["requestBody"] = {"content": {m: {"schema": {"type": "object"}} for m in media}, "required": True}
    return op


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [rt for rt in registry.all() if rt.group == group and version in rt.versions]
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        base = "/" + _gv_path(group, version) + ("/namespaces/{namespace}" if rt.namespaced else "")
        write = ["dryRun", "fieldManager", "fieldValidation", "pretty"]
        paths[f"{base}/{rt.plural}"] = {
            "get": _operation(rt, version, "list", ["pretty"]),
            "post": _operation(rt, version, "post", write, ["application/json"]),
            "delete": _operation(rt, version, "deletecollection", ["dryRun", "pretty"]),
        }
        paths[f"{base}/{rt.plural}/{{name}}"] = {
            "get": _operation(rt, version, "get", ["pretty"]),
            "put": _operation(rt, version, "put", write, ["application/json"]),
            "patch": _operation(rt, version, "patch", write + ["force"], rt.patch_types),
            "delete": _operation(rt, version, "delete", ["dryRun", "pretty"]),
        }
        for sub in rt.subresources:
            if sub == "status":
                paths[f"{base}/{rt.plural}/{{name}}/status"] = {
                    "get": _operation(rt, version, "get", ["pretty"]),
                    "put": _operation(rt, version, "put", write, ["application/json"]),
                    "patch": _operation(rt, version, "patch", write + ["force"], rt.patch_types),
                }
        if not rt.builtin and rt.schemas.get(version):
            name = ".".join(reversed(group.split("."))) + f".{version}.{rt.kind}"
            schema = dict(rt.schemas[version])
            schema["x-kubernetes-group-version-kind"] = [
                {"group": group, "kind": rt.kind, "version": version}
            ]
            schemas[name] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.5-eks-lab"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups().items():
        for version in versions:
            doc = group_version_document(registry, group, version)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128].upper()
            paths[_gv_path(group, version)] = {
                "serverRelativeURL": f"/openapi/v3/{_gv_path(group, version)}?hash={digest}"
            }
    return {"paths": paths}
