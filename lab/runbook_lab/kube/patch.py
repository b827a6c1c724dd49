"""PATCH bodies by Content-Type: JSON merge patch, JSON patch, and an approximate strategic merge patch.

- application/merge-patch+json: RFC 7386 (maps merge recursively, null deletes, lists and scalars replace).
- application/json-patch+json: RFC 6902 (add, remove, replace, move, copy, test; JSON pointers per RFC 6901).
- application/strategic-merge-patch+json (built-in kinds only, as upstream): APPROXIMATE. Upstream drives
  merging from `patchStrategy`/`patchMergeKey` struct tags of each Go type. Here a table of the list fields
  those tags mark for the kinds this stand-in serves (containers/env/volumes by `name`, container ports by
  `containerPort`, Service ports by `port`, volumeMounts by `mountPath`, conditions/addresses by `type`,
  ownerReferences by `uid`, finalizers as a merged set of strings) decides; any other list is replaced, as
  upstream does for lists without a strategy. Directives `$patch: delete|replace|merge` (in maps and list
  items), `$deleteFromPrimitiveList/<field>` are honoured; `$setElementOrder/<field>` and `$retainKeys`
  are accepted and ignored (ordering/retain semantics are not reproduced).
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request, generic


# -- RFC 7386 ----------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- RFC 6902 ----------------------------------------------------------------------------------------
class JsonPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict):
            if part not in node:
                raise JsonPatchError(f"doc is missing path: {part!r}")
            node = node[part]
        elif isinstance(node, list):
            node = node[_index(node, part, allow_end=False)]
        else:
            raise JsonPatchError(f"cannot traverse into {type(node).__name__} at {part!r}")
    return node, parts[-1]


def _index(array: list, token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(array)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise JsonPatchError(f"invalid array index {token!r}")
    idx = int(token)
    if idx > len(array) or (idx == len(array) and not allow_end):
        raise JsonPatchError(f"array index {idx} out of bounds")
    return idx


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"doc is missing key: {last!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise JsonPatchError("cannot index a scalar")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise JsonPatchError("cannot add to a scalar")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise JsonPatchError("cannot remove the whole document")
    parent, last = _parent(doc, parts)
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"unable to remove nonexistent key: {last}: missing value")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise JsonPatchError("cannot remove from a scalar")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch. A malformed patch is a 400; a failing operation the apiserver's generic
    422."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    try:
        for op in operations:
            kind = op.get("op")
            if kind not in ("add", "remove", "replace", "move", "copy", "test"):
                raise bad_request(f"Unexpected kind: {kind}")
            if "path" not in op:
                raise JsonPatchError(f"{kind} operation missing path")
            parts = _pointer(op["path"])
            if kind == "add":
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                doc = _remove(doc, parts)
            elif kind == "replace":
                _get(doc, parts)  # must exist
                doc = (
                    _add(_remove(doc, parts), parts, copy.deepcopy(op.get("value")))
                    if parts
                    else op.get("value")
                )
            elif kind in ("move", "copy"):
                source = _pointer(op.get("from", ""))
                value = copy.deepcopy(_get(doc, source))
                if kind == "move":
                    doc = _remove(doc, source)
                doc = _add(doc, parts, value)
            elif kind == "test" and _get(doc, parts) != op.get("value"):
                raise JsonPatchError(f"testing value {op['path']} failed")
    except JsonPatchError as exc:
        # handlers/patch.go answers a failed JSON patch with NewGenericServerResponse(422, ...).
        raise generic(422, str(exc)) from exc
    return doc


# -- strategic merge (approximate) -------------------------------------------------------------------
# Field name -> merge key, from the patchMergeKey tags of the core/batch/networking types served here.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with patchStrategy "merge" (set union).
MERGED_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, kind: str, path: tuple[str, ...]) -> str | None:
    if field == "ports":
        # ServiceSpec.ports merge on "port"; Container.ports on "containerPort".
        return "port" if kind == "Service" and path[-1:] == ("spec",) else "containerPort"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any, kind: str) -> Any:
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
    try:
        return _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch, kind, ())
    except ApiError:
        raise
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc)) from exc


def _smp_map(target: dict, patch: dict, kind: str, path: tuple[str, ...]) -> dict:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
    if directive == "delete":
        return {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(target.get(field), list):
                target[field] = [x for x in target[field] if x not in (value or [])]
            continue
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value, kind, path + (key,))
            if merged == {} and value.get("$patch") == "delete":
                target.pop(key, None)
            else:
                target[key] = merged
        elif isinstance(value, list):
            target[key] = _smp_list(target.get(key), value, key, kind, path)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _smp_list(current: Any, patch: list, field: str, kind: str, path: tuple[str, ...]) -> list:
    current = current if isinstance(current, list) else []
    if field in MERGED_SCALAR_LISTS:
        merged = list(current)
        merged.extend(x for x in patch if x not in merged)
        return merged
    key = _merge_key(field, kind, path)
    if key is None or not all(isinstance(x, dict) for x in patch):
        return [x for x in copy.deepcopy(patch) if not (isinstance(x, dict) and x.get("$patch"))]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [x for x in copy.deepcopy(patch) if x.get("$patch") != "replace"]
    result = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        match = next(
            (i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if match is not None:
                del result[match]
        elif match is None:
            result.append(_smp_map({}, item, kind, path + (field,)))
        else:
            result[match] = _smp_map(result[match], item, kind, path + (field,))
    return result
