"""Structured records a stage notebook hands back to the runner.

A notebook calls ``ctx.record(key, value)``; that emits a ``display_data`` output whose MIME type is
``RECORD_MIME`` with ``{"key": key, "value": value}`` (a small glue of our own instead of scrapbook,
whose 0.5.0 release breaks on pandas >= 2). The runner reads them back from the saved notebook with nbformat.

Keys and how several records of one key combine:

    changes   list of {"kind", "name", "action": create|update|delete|unchanged, "diff"}   extended
    checks    list of {"name", "ok", "detail"}                                            extended
    flags     list of strings ("credential in userData")                                  extended, unique
    results   dict merged into run.json's results                                          merged
    failure   {"step", "applied", "not_applied", "outcome_unknown" (sent, answer lost)}   last wins
    any other key                                                                          results[key]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

RECORD_MIME = "application/vnd.eks-mirror-runbook.record+json"
ACTIONS: tuple[str, ...] = ("create", "update", "delete", "unchanged")
LIST_KEYS = ("changes", "checks", "flags")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: paths, dates, enums, sets, dataclasses and pydantic models become plain data."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        if isinstance(obj, (dt.datetime, dt.date)):
            return obj.isoformat()
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, (PurePath, bytes)):
            return str(obj) if isinstance(obj, PurePath) else obj.decode("utf-8", "replace")
        return repr(obj)

    return json.loads(json.dumps(value, default=default, allow_nan=False))


def record_bundle(key: str, value: Any) -> dict[str, Any]:
    """The MIME bundle for one record; text/plain is empty so rendered notebooks show nothing."""
    if not isinstance(key, str) or not key:
        raise ValueError("record key must be a non-empty string")
    return {RECORD_MIME: {"key": key, "value": jsonable(value)}, "text/plain": ""}


@dataclass
class StageRecords:
    changes: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None

    def add(self, key: str, value: Any) -> None:
        if key in LIST_KEYS:
            items = value if isinstance(value, list) else [value]
            if key == "flags":
                self.flags.extend(str(f) for f in items if str(f) not in self.flags)
            else:
                getattr(self, key).extend(items)
        elif key == "results" and isinstance(value, Mapping):
            self.results.update(value)
        elif key == "failure":
            self.failure = dict(value) if isinstance(value, Mapping) else {"step": str(value)}
        else:
            self.results[key] = value

    def change_counts(self) -> dict[str, int]:
        return change_counts(self.changes)


def change_counts(changes: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(ACTIONS, 0)
    for change in changes:
        action = change.get("action") if isinstance(change, Mapping) else None
        if isinstance(action, str):
            counts[action] = counts.get(action, 0) + 1
    return counts


def iter_records(nb: Any) -> list[tuple[str, Any]]:
    """(key, value) of every record output in a notebook, in cell order."""
    out = []
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            payload = data.get(RECORD_MIME)
            if isinstance(payload, str):  # stored as a JSON string by some writers
                try:
                    payload = json.loads(payload)
                except ValueError:
                    continue
            if isinstance(payload, Mapping) and isinstance(payload.get("key"), str):
                out.append((payload["key"], payload.get("value")))
    return out


def collect_records(nb: Any) -> StageRecords:
    records = StageRecords()
    for key, value in iter_records(nb):
        records.add(key, value)
    return records
