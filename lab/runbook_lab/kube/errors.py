"""`Status` failure bodies exactly as kube-apiserver builds them.

Shapes and messages follow k8s.io/apimachinery/pkg/api/errors/errors.go (NewNotFound, NewAlreadyExists,
NewConflict, NewInvalid, NewBadRequest, NewMethodNotSupported, NewGenericServerResponse, ...) and
k8s.io/apimachinery/pkg/util/validation/field/errors.go (field error bodies). Note the quirks kept on
purpose: `details.kind` holds the *resource* (plural) for NotFound/AlreadyExists/Conflict but the *Kind*
for Invalid, and a cause's type is serialised under the key "reason".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# field.ErrorType -> the canonical text ErrorType.String() prints.
_TYPE_TEXT = {
    "FieldValueNotFound": "Not found",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "InternalError": "Internal error",
}
_NO_VALUE_TYPES = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "InternalError"}


class GoLiteral(str):
    """A bad value printed verbatim, for Go values whose %#v form is not a quoted string (e.g. uint64 0 ->
    0x0)."""


def go_value(value: Any) -> str:
    """How field.Error prints a bad value: %q for strings, %v for numbers/bools, Go-ish for the rest."""
    if isinstance(value, GoLiteral):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    # Go prints maps/slices with %#v; JSON is the closest readable stand-in (documented approximation).
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class FieldError:
    """One field.Error: type (e.g. FieldValueInvalid), field path, bad value and detail."""

    type: str
    field: str
    value: Any = ""
    detail: str = ""

    def body(self) -> str:
        if self.type in _NO_VALUE_TYPES:
            text = _TYPE_TEXT[self.type]
        else:
            text = f"{_TYPE_TEXT[self.type]}: {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    # Constructors named like the Go helpers.
    @classmethod
    def required(cls, path: str, detail: str = "") -> FieldError:
        return cls("FieldValueRequired", path, "", detail)

    @classmethod
    def invalid(cls, path: str, value: Any, detail: str) -> FieldError:
        return cls("FieldValueInvalid", path, value, detail)

    @classmethod
    def forbidden(cls, path: str, detail: str) -> FieldError:
        return cls("FieldValueForbidden", path, "", detail)

    @classmethod
    def not_supported(cls, path: str, value: Any, valid: list[str]) -> FieldError:
        detail = "supported values: " + ", ".join(json.dumps(v) for v in valid) if valid else ""
        return cls("FieldValueNotSupported", path, value, detail)


@dataclass
class ApiError(Exception):
    """A failure answered as a `Status` body with HTTP `code`."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = {k: v for k, v in self.details.items() if v not in ("", None, [])}
        body["code"] = self.code
        return body


def qualified(resource: str, group: str) -> str:
    """schema.GroupResource.String(): "pods" for core, "ec2nodeclasses.karpenter.k8s.aws" otherwise."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f"{qualified(resource, group)} {json.dumps(name)} not found",
        {"name": name, "group": group, "kind": resource},
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f"{qualified(resource, group)} {json.dumps(name)} already exists",
        {"name": name, "group": group, "kind": resource},
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {qualified(resource, group)} {json.dumps(name)}: {why}",
        {"name": name, "group": group, "kind": resource},
    )


STALE_OBJECT = "the object has been modified; please apply your changes to the latest version and try again"


def forbidden(resource: str, group: str, name: str, why: str) -> ApiError:
    what = qualified(resource, group)
    message = f"{what} {json.dumps(name)} is forbidden: {why}" if name else f"{what} is forbidden: {why}"
    return ApiError(403, "Forbidden", message, {"name": name, "group": group, "kind": resource})


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """NewInvalid: message aggregates the de-duplicated errors ("[a, b]" when more than one)."""
    unique: list[FieldError] = []
    seen: set[str] = set()
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            unique.append(e)
    aggregate = str(unique[0]) if len(unique) == 1 else "[" + ", ".join(str(e) for e in unique) + "]"
    qualified_kind = f"{kind}.{group}" if group else kind
    causes = [{"reason": e.type, "message": e.body(), "field": e.field} for e in errors]
    return ApiError(
        422,
        "Invalid",
        f"{qualified_kind} {json.dumps(name)} is invalid: {aggregate}",
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message, None)


def method_not_supported(resource: str, group: str, action: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"{action} is not supported on resources of kind {json.dumps(qualified(resource, group))}",
        {"group": group, "kind": resource},
    )


# NewGenericServerResponse: what the apiserver answers when go-restful itself rejects a request
# (no route for the method, no such resource in a known group version) or a JSON patch fails.
_GENERIC = {
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    406: ("NotAcceptable", None),
    415: ("UnsupportedMediaType", None),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
}


def generic(code: int, server_message: str = "") -> ApiError:
    reason, message = _GENERIC[code]
    return ApiError(code, reason, message if message is not None else server_message, {})


def unsupported_media_type(accepted: list[str]) -> ApiError:
    # negotiation.NewUnsupportedMediaTypeError
    return generic(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message, None)


def internal(message: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
    )
