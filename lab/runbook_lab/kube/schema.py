"""Structural-schema handling of custom resources, in the apiserver's order: prune, default, validate.

1. Pruning (apiextensions-apiserver pkg/apiserver/schema/pruning): fields the schema does not specify are
   dropped unless `x-kubernetes-preserve-unknown-fields: true`. With `fieldValidation=Strict` (kubectl's
   default) they are a 400 "strict decoding error: unknown field ..."; with `Warn` (the server default) a
   `Warning: 299 - "unknown field ..."` header; with `Ignore` silent.
2. Defaulting (pkg/apiserver/schema/defaulting): absent properties with a `default` get it; a null in a
   non-nullable field is dropped (or replaced by its default).
3. Validation against the openAPIV3Schema with `jsonschema` (Draft 4 semantics, which OpenAPI v3.0 follows),
   errors converted to field errors exactly like kubeOpenAPIResultToFieldErrors (validation.go): type errors
   "spec.x in body must be of type string: \"integer\"", Required value, Unsupported value, Too long, ...

Not evaluated (documented gaps): CEL rules (`x-kubernetes-validations`; those need a real apiserver, e.g.
`kubectl apply --dry-run=server` against a real cluster), `format` checks (date-time, int32, ...),
`x-kubernetes-list-type` uniqueness and ratcheting of unchanged invalid values on update.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

from .errors import FieldError

OBJECT_META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}

_KEEP_KEYWORDS = {
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
}


def _path_child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- pruning -----------------------------------------------------------------------------------------
def prune(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Drop unspecified fields in place; return their paths (for strict errors / warnings)."""
    unknown: list[str] = []
    for key in list(obj):
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(obj[key], dict):
            for mkey in list(obj["metadata"]):
                if mkey not in OBJECT_META_FIELDS:
                    unknown.append(f"metadata.{mkey}")
                    del obj["metadata"][mkey]
            continue
        prop = (schema.get("properties") or {}).get(key)
        if prop is None:
            if not schema.get("x-kubernetes-preserve-unknown-fields"):
                unknown.append(key)
                del obj[key]
            continue
        obj[key] = _prune_value(obj[key], prop, key, unknown)
    return unknown


def _prune_value(value: Any, schema: dict[str, Any], path: str, unknown: list[str]) -> Any:
    if isinstance(value, dict):
        keep = {"apiVersion", "kind", "metadata"} if schema.get("x-kubernetes-embedded-resource") else set()
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key in list(value):
            child = _path_child(path, key)
            if props is not None and key in props:
                value[key] = _prune_value(value[key], props[key], child, unknown)
            elif isinstance(additional, dict):
                value[key] = _prune_value(value[key], additional, child, unknown)
            elif additional is True or preserve or key in keep:
                continue
            elif props is not None or additional is not None or schema.get("type") == "object":
                unknown.append(child)
                del value[key]
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_value(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


# -- defaulting --------------------------------------------------------------------------------------
def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, prop in props.items():
            if key in value and value[key] is None and not prop.get("nullable"):
                del value[key]
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                value[key] = apply_defaults(value[key], prop)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in list(value):
                if key not in props:
                    value[key] = apply_defaults(value[key], additional)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


# -- validation --------------------------------------------------------------------------------------
def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON Schema (Draft 4) for `jsonschema`."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEEP_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string"):
        # ConvertJSONSchemaPropsWithPostProcess: type becomes ["integer", "string"].
        out["type"] = ["integer", "string"]
    if schema.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"]
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
    return out


def _is_integer(_checker: Any, instance: Any) -> bool:
    # Go decodes 2.0 as float64 and kube-openapi accepts integral floats where integers are expected.
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


_TYPE_CHECKER = jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer)
_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=_TYPE_CHECKER)


def make_validator(openapi_schema: dict[str, Any]) -> Any:
    return _Validator(to_json_schema(openapi_schema))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text = text + f"[{part}]" if isinstance(part, int) else _path_child(text, str(part))
    return text


def _go(value: Any) -> str:
    # %v of a number in go-openapi messages
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if not isinstance(value, int | float) else str(value)


def validate(obj: dict[str, Any], validator: Any) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for err in sorted(
        validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    ):
        path = _path(err.absolute_path)
        kind, rule, value = err.validator, err.validator_value, err.instance
        if kind == "required":
            missing = [p for p in rule if isinstance(value, dict) and p not in value]
            for prop in missing:
                key = (_path_child(path, prop), "required")
                if key not in seen:
                    seen.add(key)
                    errors.append(FieldError.required(_path_child(path, prop)))
            continue
        if kind == "type":
            types = ",".join(rule) if isinstance(rule, list) else rule
            actual = _json_type(value)
            if value is None:
                errors.append(
                    FieldError("FieldValueTypeInvalid", path, "", f"{path} in body must be of type {types}")
                )
            else:
                errors.append(
                    FieldError(
                        "FieldValueTypeInvalid",
                        path,
                        actual,
                        f'{path} in body must be of type {types}: "{actual}"',
                    )
                )
        elif kind == "enum":
            allowed = [v if isinstance(v, str) else json.dumps(v) for v in rule if v is not None]
            errors.append(FieldError.not_supported(path, value, allowed))
        elif kind == "maxLength":
            errors.append(FieldError("FieldValueTooLong", path, value, f"may not be longer than {rule}"))
        elif kind in ("maxItems", "maxProperties"):
            errors.append(
                FieldError("FieldValueTooMany", path, len(value), f"must have at most {rule} items")
            )
        elif kind == "pattern":
            errors.append(FieldError.invalid(path, value, f"{path} in body should match '{rule}'"))
        elif kind == "minLength":
            errors.append(
                FieldError.invalid(path, value, f"{path} in body should be at least {rule} chars long")
            )
        elif kind == "minItems":
            errors.append(
                FieldError.invalid(path, len(value), f"{path} in body should have at least {rule} items")
            )
        elif kind == "minProperties":
            errors.append(
                FieldError.invalid(path, len(value), f"{path} in body should have at least {rule} properties")
            )
        elif kind == "minimum":
            op = "greater than" if err.schema.get("exclusiveMinimum") else "greater than or equal to"
            errors.append(FieldError.invalid(path, value, f"{path} in body should be {op} {_go(rule)}"))
        elif kind == "maximum":
            op = "less than" if err.schema.get("exclusiveMaximum") else "less than or equal to"
            errors.append(FieldError.invalid(path, value, f"{path} in body should be {op} {_go(rule)}"))
        elif kind == "multipleOf":
            errors.append(
                FieldError.invalid(path, value, f"{path} in body should be a multiple of {_go(rule)}")
            )
        elif kind == "uniqueItems":
            errors.append(FieldError.invalid(path, "", f"{path} in body shouldn't contain duplicates"))
        elif kind == "anyOf":
            errors.append(
                FieldError.invalid(path, value, f'"{path}" must validate at least one schema (anyOf)')
            )
        elif kind == "oneOf":
            errors.append(
                FieldError.invalid(path, value, f'"{path}" must validate one and only one schema (oneOf)')
            )
        elif kind == "allOf":
            errors.append(FieldError.invalid(path, value, f'"{path}" must validate all the schemas (allOf)'))
        else:
            errors.append(FieldError.invalid(path, value, f"{path} in body {err.message}"))
    return errors
