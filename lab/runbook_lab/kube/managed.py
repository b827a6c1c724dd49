"""metadata.managedFields and server-side apply: an APPROXIMATION of structured-merge-diff.

What is kept from upstream (k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager,
sigs.k8s.io/structured-merge-diff):
- every write records a managedFields entry {manager, operation Apply|Update, apiVersion, time, fieldsType
  FieldsV1, fieldsV1, subresource}; a non-apply write without `fieldManager` is attributed to the User-Agent
  prefix before the first "/" (managerOrUserAgent), e.g. "OpenAPI-Generator" for the Python client;
- an Update takes ownership of the fields it changed (other managers lose them); it never conflicts;
- an Apply owns exactly the fields in its configuration; fields it owned before and no longer sends are
  removed from the object unless another manager also owns them;
- an Apply that would change a field owned by another manager is a 409 Conflict listing each field and
  manager ("Apply failed with 1 conflict: conflict with \"x\" using v1: .spec.role"), unless force=true, which
  takes the fields over. Equal values are shared ownership, not conflicts.

What is simplified: every list is atomic (upstream merges lists granularly when the schema says
listType=map/set, e.g. containers by name), so ownership is per list, not per element; fieldsV1 has no "."
entries for owned maps themselves; `null` in an apply configuration is not treated as a deletion.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import ApiError

Path = tuple[str, ...]
# Fields never tracked (upstream strips these before computing field sets).
_IGNORED_TOP = {"apiVersion", "kind"}
_IGNORED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
}


_MISSING = object()


def leaf_paths(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Map each leaf field path to its value. Lists and empty maps are leaves (lists are atomic here)."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            if not prefix and key in _IGNORED_TOP:
                continue
            if prefix == ("metadata",) and key in _IGNORED_META:
                continue
            out.update(leaf_paths(value, prefix + (key,)))
    elif prefix:
        out[prefix] = obj
    return out


def _to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def _from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict) or not fields:
        return {prefix} if prefix else set()
    for key, value in fields.items():
        if key.startswith("f:"):
            out |= _from_fields_v1(value, prefix + (key[2:],))
        elif prefix:
            out.add(prefix)
    return out


def _overlaps(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _get(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _delete(obj: dict[str, Any], path: Path) -> None:
    nodes = [obj]
    for part in path[:-1]:
        node = nodes[-1].get(part)
        if not isinstance(node, dict):
            return
        nodes.append(node)
    nodes[-1].pop(path[-1], None)
    # drop maps left empty by the removal (never metadata or the root)
    for depth in range(len(nodes) - 1, 0, -1):
        if not nodes[depth] and path[:depth] != ("metadata",):
            nodes[depth - 1].pop(path[depth - 1], None)


def _deep_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class Entry:
    def __init__(
        self, manager: str, operation: str, api_version: str, subresource: str, paths: set[Path], time: str
    ) -> None:
        self.manager, self.operation, self.api_version = manager, operation, api_version
        self.subresource, self.paths, self.time = subresource, paths, time

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Entry:
        return cls(
            raw.get("manager", ""),
            raw.get("operation", "Update"),
            raw.get("apiVersion", ""),
            raw.get("subresource", ""),
            _from_fields_v1(raw.get("fieldsV1")),
            raw.get("time", ""),
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(self.paths),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    def identity(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def label(self) -> str:
        # printManager (fieldmanager/internal/conflict.go)
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}" + (f" at {self.time}" if self.time else "")
        return text


def _entries(obj: dict[str, Any]) -> list[Entry]:
    return [Entry.parse(e) for e in (obj.get("metadata") or {}).get("managedFields") or []]


def _store(obj: dict[str, Any], entries: list[Entry]) -> None:
    kept = [e.dump() for e in entries if e.paths]
    if kept:
        obj["metadata"]["managedFields"] = kept
    else:
        obj["metadata"].pop("managedFields", None)


def _path_text(path: Path) -> str:
    return "".join(f".{p}" for p in path)


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    api_version: str,
    subresource: str,
    now: str,
) -> None:
    """Give `manager` (operation Update) the fields that changed from old to new."""
    entries = _entries(old) if old else []
    before, after = leaf_paths(old or {}), leaf_paths(new)
    changed = {p for p, v in after.items() if before.get(p, _MISSING) != v}
    removed = {p for p in before if p not in after}
    for e in entries:
        e.paths = {p for p in e.paths if not any(_overlaps(p, c) for c in changed | removed)}
    if changed:
        mine = next((e for e in entries if e.identity() == (manager, "Update", subresource)), None)
        if mine is None:
            mine = Entry(manager, "Update", api_version, subresource, set(), now)
            entries.append(mine)
        mine.paths |= changed
        mine.api_version, mine.time = api_version, now
    _store(new, entries)


def apply(
    current: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    api_version: str,
    subresource: str,
    force: bool,
    now: str,
) -> dict[str, Any]:
    """Server-side apply of `config` by `manager` onto `current` (None: create). Returns the new object."""
    base = copy.deepcopy(current) if current else {"metadata": {}}
    entries = _entries(base)
    applied = leaf_paths(config)
    applied_paths = set(applied)
    conflicts: list[tuple[Entry, Path]] = []
    for e in entries:
        if e.identity() == (manager, "Apply", subresource):
            continue
        for owned in e.paths:
            for path, value in applied.items():
                if not _overlaps(owned, path):
                    continue
                found, existing = _get(base, path)
                if not found or existing != value:
                    conflicts.append((e, owned))
                    break
    if conflicts and not force:
        raise _conflict_error(conflicts)
    mine = next((e for e in entries if e.identity() == (manager, "Apply", subresource)), None)
    previously = mine.paths if mine else set()
    others = [e for e in entries if e is not mine]
    for path in previously - applied_paths:
        if not any(path in e.paths for e in others):
            _delete(base, path)
    result = _deep_merge(base, {k: v for k, v in config.items() if k != "metadata"})
    meta_config = {k: v for k, v in (config.get("metadata") or {}).items() if k != "managedFields"}
    _deep_merge(result.setdefault("metadata", {}), meta_config)
    if force:
        taken = {owned for _, owned in conflicts}
        for e in others:
            e.paths = {
                p for p in e.paths if p not in taken and not any(_overlaps(p, a) for a in applied_paths)
            }
    if mine is None:
        mine = Entry(manager, "Apply", api_version, subresource, set(), now)
        entries.append(mine)
    if mine.paths != applied_paths or mine.api_version != api_version:
        mine.time = now  # an unchanged field set keeps its timestamp, so a repeated apply is a no-op
    mine.paths, mine.api_version = applied_paths, api_version
    _store(result, entries)
    return result


def _conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {e.label()}", "field": _path_text(p)}
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {e.label()}: {_path_text(p)}"
    else:
        by_manager: dict[str, list[Path]] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.label(), []).append(p)
        lines = []
        for label in sorted(by_manager):
            lines.append(f"conflicts with {label}")
            lines.extend(f"- {_path_text(p)}" for p in by_manager[label])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def manager_from_user_agent(user_agent: str) -> str:
    # prefixFromUserAgent: everything before the first "/" (upstream also truncates to 128 chars).
    return (user_agent or "").split("/", 1)[0][:128]
