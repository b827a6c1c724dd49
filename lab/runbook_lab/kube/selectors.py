"""Label and field selectors with the apiserver's grammar (k8s.io/apimachinery/pkg/labels, pkg/fields).

Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist),
`k>n`, `k<n`, comma-separated (AND). `!=` and `notin` also match objects that lack the key, as upstream.
Field selectors: `f=v`, `f==v`, `f!=v`, comma-separated, with backslash escapes; values compare as strings.
A malformed selector is a 400 BadRequest, as the apiserver answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .names import label_value, qualified_name


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        try:
            number, bound = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return number > bound if self.op == ">" else number < bound


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


_SET_TERM = re.compile(r"^(?P<key>[^\s=!<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_TERM = re.compile(r"^(?P<key>[^\s=!<>(),]+)\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s=!<>(),]*)$")


def _check_key(key: str) -> None:
    errs = qualified_name(key)
    if errs:
        raise bad_request(f'unable to parse requirement: key: Invalid value: "{key}": {errs[0]}')


def _check_value(value: str) -> None:
    errs = label_value(value)
    if errs:
        raise bad_request(f'unable to parse requirement: values[0]: Invalid value: "{value}": {errs[0]}')


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text or not text.strip():
        return []
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        if term.startswith("!"):
            key = term[1:].strip()
            _check_key(key)
            requirements.append(Requirement(key, "!"))
            continue
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m["values"].split(",")) if m["values"].strip() else ()
            _check_key(m["key"])
            for v in values:
                _check_value(v)
            if not values and m["op"] == "in":
                raise bad_request(
                    "unable to parse requirement: values: Invalid value: []: "
                    "for 'in', 'notin' operators, values set can't be empty"
                )
            requirements.append(Requirement(m["key"], m["op"], values))
            continue
        if m := _EQ_TERM.match(term):
            op = "=" if m["op"] == "==" else m["op"]
            _check_key(m["key"])
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", m["value"]):
                    raise bad_request(
                        f'unable to parse requirement: values[0]: Invalid value: "{m["value"]}": '
                        "for 'Gt', 'Lt' operators, the value must be an integer"
                    )
            else:
                _check_value(m["value"])
            requirements.append(Requirement(m["key"], op, (m["value"],)))
            continue
        if re.fullmatch(r"[^\s=!<>(),]+", term):
            _check_key(term)
            requirements.append(Requirement(term, "exists"))
            continue
        raise bad_request(f"unable to parse requirement: unable to parse {term!r}")
    return requirements


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldTerm:
    field: str
    op: str  # "=" or "!="
    value: str


def _split_escaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None) -> list[FieldTerm]:
    if not text or not text.strip():
        return []
    terms = []
    for raw in _split_escaped(text, ","):
        for op, token in (("!=", "!="), ("=", "=="), ("=", "=")):
            idx = raw.find(token)
            if idx > 0 and (token != "=" or raw[idx - 1] != "!"):
                terms.append(FieldTerm(raw[:idx].strip(), op, _unescape(raw[idx + len(token) :])))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{raw}'")
    return terms


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string the apiserver's field-label conversion yields for a dotted path (bools as true/false)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(terms: list[FieldTerm], obj: dict[str, Any]) -> bool:
    for term in terms:
        value = field_value(obj, term.field)
        if (value == term.value) != (term.op == "="):
            return False
    return True
