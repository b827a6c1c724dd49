"""Plan, then apply: the core every stage shares.

A stage reads actual state, compares it with the desired state from the parameters and builds a
``Plan`` of ``Change`` records (create / update / delete / unchanged, with a field-level diff whose
secrets are masked). The plan is shown, stored in the run record, and applied only when asked; the
apply loop runs the writes in order and, when one fails, says exactly what was and was not applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runbook_lib.secrets import MASK, REDACTOR

Action = Literal["create", "update", "delete", "unchanged"]
ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "unchanged")
_MISSING = object()


class StageFailed(Exception):
    """A stage could not do its job; the message says why in words an operator can act on."""

    def __init__(
        self,
        message: str,
        step: str | None = None,
        applied: list[str] | None = None,
        not_applied: list[str] | None = None,
        outcome_unknown: list[str] | None = None,
    ):
        super().__init__(message)
        self.step = step
        self.applied = applied or []
        self.not_applied = not_applied or []
        self.outcome_unknown = outcome_unknown or []  # sent, but the answer was lost

    def failure_record(self) -> dict[str, Any]:
        record = {
            "step": self.step or "",
            "message": str(self),
            "applied": self.applied,
            "not_applied": self.not_applied,
        }
        if self.outcome_unknown:
            record["outcome_unknown"] = self.outcome_unknown
        return record


_NOT_SENT = {"ConnectError", "ConnectTimeout", "NewConnectionError", "ConnectTimeoutError"}
_ANSWER_LOST = {"RemoteProtocolError", "ReadError", "ReadTimeout", "ProtocolError", "ReadTimeoutError"}


def answer_lost(err: BaseException) -> bool:
    """True when a request was sent and its answer never came (reset, read timeout): the write may have
    happened. Connection failures before sending and error answers are not that case. Walks the chain
    of causes, as the Nexus and Kubernetes clients wrap transport errors (httpx, urllib3)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {cls.__name__ for cls in type(current).__mro__}
        if names & _NOT_SENT:
            return False
        if names & _ANSWER_LOST:
            return True
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps the last error here
        wrapped = reason if isinstance(reason, BaseException) else None
        current = current.__cause__ or current.__context__ or wrapped
    return False


@dataclass
class Change:
    kind: str
    name: str
    action: Action
    diff: dict[str, list[Any]] = field(default_factory=dict)  # path -> [actual, desired], masked
    note: str = ""
    write: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.action} {self.kind} {self.name}"

    def as_record(self) -> dict[str, Any]:
        return REDACTOR.scrub_obj(
            {
                "kind": self.kind,
                "name": self.name,
                "action": self.action,
                "diff": self.diff,
                "note": self.note,
            }
        )


def _mask_path(path: str, secret_keys: Iterable[str]) -> bool:
    leaf = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return leaf in set(secret_keys)


def diff_documents(
    actual: Any, desired: Any, secret_keys: Iterable[str] = ("password", "bearerToken"), prefix: str = ""
) -> dict[str, list[Any]]:
    """Field-level differences for the keys *desired* sets (we own those; the rest is left alone).

    Dicts recurse; lists and scalars compare whole. Secret leaves are masked on both sides.
    """
    secret_keys = tuple(secret_keys)
    out: dict[str, list[Any]] = {}
    if isinstance(desired, Mapping) and isinstance(actual, Mapping):
        for key, want in desired.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            have = actual.get(key, _MISSING)
            if have is _MISSING:
                out[path] = [None, MASK if _mask_path(path, secret_keys) else want]
            else:
                out.update(diff_documents(have, want, secret_keys, path))
        return out
    if actual != desired:
        if _mask_path(prefix, secret_keys):
            out[prefix or "(value)"] = [MASK, MASK]
        else:
            out[prefix or "(value)"] = [actual, desired]
    return out


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)


class Plan:
    """Ordered change records of one stage (creation order is apply order: dependencies first)."""

    def __init__(self, stage: str, apply: bool = False):
        self.stage = stage
        self.apply_mode = apply
        self.changes: list[Change] = []

    # -- building ------------------------------------------------------------------------------
    def add(self, change: Change) -> Change:
        self.changes.append(change)
        return change

    def compare(
        self,
        kind: str,
        name: str,
        actual: Mapping[str, Any] | None,
        desired: Mapping[str, Any],
        create: Callable[[], Any] | None = None,
        update: Callable[[], Any] | None = None,
        secret_keys: Iterable[str] = ("password", "bearerToken"),
        note: str = "",
    ) -> Change:
        """Add create (absent), update (differs) or unchanged for one resource."""
        if actual is None:
            diff = diff_documents({}, desired, secret_keys)
            return self.add(Change(kind, name, "create", diff, note, create))
        diff = diff_documents(actual, desired, secret_keys)
        if diff:
            return self.add(Change(kind, name, "update", diff, note, update))
        return self.add(Change(kind, name, "unchanged", {}, note))

    # -- reading -------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ACTIONS, 0)
        for c in self.changes:
            counts[c.action] += 1
        return counts

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def records(self) -> list[dict[str, Any]]:
        return [c.as_record() for c in self.changes]

    def rows(self) -> list[dict[str, str]]:
        rows = []
        for c in self.changes:
            fields = (
                "; ".join(f"{path}: {_short(old)} → {_short(new)}" for path, (old, new) in c.diff.items())
                if c.action == "update"
                else ("" if c.action == "unchanged" else f"{len(c.diff)} field(s)")
            )
            rows.append(
                {"action": c.action, "kind": c.kind, "name": c.name, "changes": fields, "note": c.note}
            )
        return REDACTOR.scrub_obj(rows)

    def table(self):
        """The plan as a table for the notebook, actions coloured."""
        from runbook_lib.display import styled

        return styled(self.rows(), "action")

    def summary(self) -> str:
        c = self.counts()
        mode = "apply" if self.apply_mode else "plan only (rerun with --apply to write)"
        return (
            f"{self.stage}: {c['create']} to create, {c['update']} to update, {c['delete']} to delete, "
            f"{c['unchanged']} unchanged — {mode}"
        )

    # -- applying ------------------------------------------------------------------------------
    def apply(self) -> ApplyResult:
        """Run the writes in order. In plan mode nothing is written. A failure raises StageFailed
        naming the failing change and listing what was and was not applied."""
        result = ApplyResult()
        if not self.apply_mode:
            result.not_applied = [c.label for c in self.pending]
            return result
        pending = self.pending
        for i, change in enumerate(pending):
            if change.write is None:
                raise StageFailed(
                    f"{change.label}: no write step defined",
                    change.label,
                    result.applied,
                    [c.label for c in pending[i:]],
                )
            try:
                change.write()
            except Exception as err:  # the stage reports; the operator reruns after fixing
                lost = answer_lost(err)
                why = " (sent, but the answer was lost: it may have been applied; a rerun reads first)"
                raise StageFailed(
                    f"{change.label} failed: {REDACTOR.scrub(str(err))}" + (why if lost else ""),
                    change.label,
                    result.applied,
                    [c.label for c in pending[i + 1 if lost else i :]],
                    [change.label] if lost else [],
                ) from err
            result.applied.append(change.label)
        return result


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


Recorder = Callable[[str, Any], None]


CheckStatus = Literal["ok", "warn", "fail", "skipped"]


@dataclass(frozen=True)
class Check:
    """One verified fact of a stage: what was checked, whether it holds, and what was seen.

    The one check type of every stage (preflight endpoints, node preflight, access model, exposure,
    verification thresholds). ``status`` grades it: only ``fail`` fails the stage; ``warn`` and
    ``skipped`` are shown and recorded. Built from a yes/no (``Check(name, ok, detail)``) or from a
    grade (``Check.graded(name, status, detail)``).
    """

    name: str
    ok: bool
    detail: str = ""
    status: CheckStatus | None = None

    def __post_init__(self) -> None:
        if self.status is None:
            object.__setattr__(self, "status", "ok" if self.ok else "fail")
        elif (self.status == "fail") == self.ok:
            raise ValueError(f"check {self.name!r}: status {self.status} contradicts ok={self.ok}")

    @classmethod
    def graded(cls, name: str, status: CheckStatus, detail: str = "") -> Check:
        return cls(name, status != "fail", detail, status)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status, "detail": self.detail}


def checks_table(checks: Iterable[Check]) -> Any:
    """The checks as a table for the notebook, results coloured (FAIL stands out)."""
    from runbook_lib.display import styled

    return styled(
        [
            {"check": c.name, "result": "FAIL" if c.status == "fail" else c.status, "detail": c.detail}
            for c in checks
        ],
        "result",
    )


def fail_on(
    checks: Iterable[Check],
    record: Recorder,
    what: str,
    step: str,
    describe: Callable[[Any], str] = lambda c: f"{c.name}: {c.detail}",
) -> None:
    """Fail the stage when any check failed: record why, then raise StageFailed."""
    failed = [c for c in checks if not c.ok]
    if not failed:
        return
    err = StageFailed(f"{what}: " + "; ".join(describe(c) for c in failed), step=step)
    record("failure", err.failure_record())
    raise err


def apply_and_confirm(plan: Plan, rebuild: Callable[[], Plan], record: Recorder) -> ApplyResult:
    """Apply the plan (in apply mode), then read the state again and require that nothing differs.

    The outcome goes into the run record; a failure records the failing step and what was and was not
    applied before the stage fails.
    """
    try:
        result = plan.apply()
        if plan.apply_mode and plan.pending:
            drift = rebuild().pending
            if drift:
                raise StageFailed(
                    "after apply the server still differs from the parameters: "
                    + "; ".join(f"{c.label} ({', '.join(c.diff)})" for c in drift),
                    step="confirm no drift",
                    applied=result.applied,
                    not_applied=[c.label for c in drift],
                )
    except StageFailed as err:
        record("failure", err.failure_record())
        raise
    record("results", {"applied": result.applied, "not_applied": result.not_applied})
    return result
