"""Name, label and annotation rules of ObjectMeta validation, with the apiserver's messages.

Regexes and messages are those of k8s.io/apimachinery/pkg/util/validation/validation.go
(IsDNS1123Label, IsDNS1123Subdomain, IsDNS1035Label, IsQualifiedName, IsValidLabelValue, IsConfigMapKey)
and apimachinery/pkg/api/validation/objectmeta.go (ValidateObjectMeta).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldError

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + ")*"
_DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_CONFIG_KEY = "[-._a-zA-Z0-9]+"


def _regex_error(msg: str, fmt: str, examples: list[str]) -> str:
    # validation.RegexError: examples joined with ",  or " (two spaces, as in the Go source).
    text = msg
    if examples:
        text += " (e.g. " + ",  or ".join(f"'{e}'" for e in examples) + ", "
    else:
        text += " ("
    return text + f"regex used for validation is '{fmt}')"


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_DNS1123_LABEL, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character",
                _DNS1123_LABEL,
                ["my-name", "123-abc"],
            )
        )
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(_DNS1123_SUBDOMAIN, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN,
                ["example.com"],
            )
        )
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_DNS1035_LABEL, value):
        errs.append(
            _regex_error(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
                "with an alphabetic character, and end with an alphanumeric character",
                _DNS1035_LABEL,
                ["my-name", "abc-123"],
            )
        )
    return errs


def path_segment_name(value: str) -> list[str]:
    # path.IsValidPathSegmentName (used for a few kinds whose names are free-form).
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


NAME_RULES = {
    "subdomain": dns1123_subdomain,
    "label": dns1123_label,
    "dns1035": dns1035_label,
    "path": path_segment_name,
}


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: label and annotation keys ("prefix/name")."""
    errs = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in dns1123_subdomain(prefix))
    else:
        return [
            _regex_error(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character",
                _QUALIFIED_NAME,
                ["MyName", "my.name", "123-abc"],
            )
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if name and not re.fullmatch(_QUALIFIED_NAME, name):
        errs.append(
            _regex_error(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character",
                _QUALIFIED_NAME,
                ["MyName", "my.name", "123-abc"],
            )
        )
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL_VALUE, value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                "'_' or '.', and must start and end with an alphanumeric character",
                _LABEL_VALUE,
                ["MyValue", "my_value", "12345"],
            )
        )
    return errs


def config_key(value: str) -> list[str]:
    """IsConfigMapKey: keys of Secret/ConfigMap data."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(_CONFIG_KEY, value):
        errs.append(
            _regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                _CONFIG_KEY,
                ["key.name", "KEY_NAME", "key-name"],
            )
        )
    if value in (".", ".."):
        errs.append(f"must not be '{value}'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def validate_labels(labels: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for key, value in (labels or {}).items():
        errs.extend(FieldError.invalid(path, key, m) for m in qualified_name(key))
        errs.extend(FieldError.invalid(path, value, m) for m in label_value(str(value)))
    return errs


TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


def validate_annotations(annotations: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    total = 0
    for key, value in (annotations or {}).items():
        errs.extend(FieldError.invalid(path, key, m) for m in qualified_name(key.lower()))
        total += len(key) + len(str(value))
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(
            FieldError(
                "FieldValueTooLong", path, "", f"must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"
            )
        )
    return errs
