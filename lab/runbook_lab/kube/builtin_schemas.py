"""Field trees of the built-in kinds, for unknown-field pruning (fieldValidation Strict/Warn/Ignore).

The real server decodes built-in kinds into Go structs, so unknown fields are dropped (or rejected with
fieldValidation=Strict, as kubectl sends). The field names come from the pinned official client's models
(kubernetes 37.0.1: `openapi_types` + `attribute_map`, generated from the upstream OpenAPI document), turned
into a structural schema used only for pruning. "object"-typed fields (IntOrString, RawExtension, fieldsV1,
JSON) keep anything. Loaded lazily: importing the models takes a moment.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from typing import Any

# kind -> (module, class) in kubernetes.client.models; importing single modules keeps this fast
MODELS = {
    "Namespace": ("v1_namespace", "V1Namespace"),
    "Node": ("v1_node", "V1Node"),
    "Pod": ("v1_pod", "V1Pod"),
    "Event": ("core_v1_event", "CoreV1Event"),
    "Secret": ("v1_secret", "V1Secret"),
    "ConfigMap": ("v1_config_map", "V1ConfigMap"),
    "Service": ("v1_service", "V1Service"),
    "Ingress": ("v1_ingress", "V1Ingress"),
    "Job": ("v1_job", "V1Job"),
    "CronJob": ("v1_cron_job", "V1CronJob"),
    "ServiceAccount": ("v1_service_account", "V1ServiceAccount"),
    "Role": ("v1_role", "V1Role"),
    "RoleBinding": ("v1_role_binding", "V1RoleBinding"),
    "ClusterRole": ("v1_cluster_role", "V1ClusterRole"),
    "ClusterRoleBinding": ("v1_cluster_role_binding", "V1ClusterRoleBinding"),
    "CustomResourceDefinition": ("v1_custom_resource_definition", "V1CustomResourceDefinition"),
}
_SCALARS = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "datetime": "string",
    "date": "string",
    "bytearray": "string",
    "bytes": "string",
}


def _schema_for_type(type_name: str, owner: Any, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if type_name in _SCALARS:
        return {"type": _SCALARS[type_name]}
    if type_name == "object":
        return {"x-kubernetes-preserve-unknown-fields": True}
    if m := re.fullmatch(r"List\[(.+)\]", type_name):
        return {"type": "array", "items": _schema_for_type(m[1], owner, cache)}
    if m := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        return {"type": "object", "additionalProperties": _schema_for_type(m[1], owner, cache)}
    # a referenced model is imported by the module of the model that uses it
    return _schema_for_model(vars(sys.modules[owner.__module__])[type_name], cache)


def _schema_for_model(model: Any, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if model.__name__ in cache:
        return cache[model.__name__]  # recursive types (JSONSchemaProps) share one node
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    cache[model.__name__] = schema
    for attr, type_name in model.openapi_types.items():
        schema["properties"][model.attribute_map[attr]] = _schema_for_type(type_name, model, cache)
    return schema


@functools.cache
def schema_for_kind(kind: str) -> dict[str, Any] | None:
    if kind not in MODELS:
        return None
    module, name = MODELS[kind]
    try:
        model = getattr(importlib.import_module(f"kubernetes.client.models.{module}"), name)
        return _schema_for_model(model, {})
    except (ImportError, AttributeError, KeyError):  # no (compatible) client installed: no pruning
        return None
