"""Validate request bodies against the published Nexus OpenAPI (tests/data/reference/nexus), for tests.

OpenAPI 3.0 schemas say `nullable: true` where JSON Schema says `type: [T, "null"]`; the converter below
rewrites that, then jsonschema validates each body against the operation's requestBody schema.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema


def _convert(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _convert(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            if "type" in out:
                out["type"] = (
                    [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
                )
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
            if "$ref" in out or "allOf" in out:
                out = {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_convert(v) for v in node]
    return node


@cache
def spec(path: str) -> dict:
    return _convert(json.loads(Path(path).read_text()))


def operation_schema(spec_doc: dict, method: str, path: str) -> tuple[str, dict | None]:
    """(template, JSON schema of the request body) for a concrete REST path like /v1/security/roles/x."""
    rel = path.split("/service/rest", 1)[-1]
    for template, ops in spec_doc["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, rel) and method.lower() in ops:
            body = ops[method.lower()].get("requestBody")
            if not body:
                return template, None
            content = body.get("content", {})
            media = (
                content.get("application/json") or content.get("text/plain") or next(iter(content.values()))
            )
            return template, media.get("schema")
    raise KeyError(f"{method} {rel} is not in the published API")


def validate_body(spec_path: str, method: str, path: str, body: Any) -> None:
    doc = spec(spec_path)
    template, schema = operation_schema(doc, method, path)
    if schema is None:
        assert body in (None, ""), f"{method} {template} takes no body"
        return
    wrapper = {**schema, "components": doc["components"]}
    jsonschema.validate(body, wrapper)
