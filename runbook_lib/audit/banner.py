"""The audit banner: a markdown cell at the top of every saved stage notebook.

It answers what an auditor asks first (who ran what, where, when, in which mode, with which parameters
and code, and what changed or failed) without opening run.json. Built from the run.json dicts, so
it shows exactly what was recorded.
"""

from __future__ import annotations

import copy
import html
from typing import Any

BANNER_TAG = "runbook-banner"


def _cell_text(value: Any) -> str:
    """Plain text safe inside a markdown table cell (no markup, no pipes, one line)."""
    text = html.escape(str(value), quote=False)
    return text.replace("|", "&#124;").replace("\r", " ").replace("\n", " ")


def _code(value: Any) -> str:
    return f"<code>{_cell_text(value)}</code>"


def change_summary(changes: dict[str, int] | None) -> str:
    changes = changes or {}
    parts = [f"{changes.get(k, 0)} {k}" for k in ("create", "update", "delete", "unchanged")]
    parts += [f"{n} {k}" for k, n in changes.items() if k not in ("create", "update", "delete", "unchanged")]
    return ", ".join(parts)


def _items(values: list[Any] | None) -> str:
    if not values:
        return "<br>(none)"
    return "".join(f"<br>• {_cell_text(v)}" for v in values)


def banner_markdown(run: dict[str, Any], stage: dict[str, Any]) -> str:
    status = stage.get("status", "unknown")
    colour = {"ok": "#1a7f37", "failed": "#cf222e"}.get(status, "#6e7781")
    mode = run.get("mode", "plan")
    mode_text = "apply (changes were written)" if mode == "apply" else "plan (read only: nothing was changed)"
    rows = [
        ("Run", _code(run.get("run_id", ""))),
        ("Target", _cell_text(run.get("target", ""))),
        ("Mode", f"<b>{_cell_text(mode_text)}</b>"),
        ("Operator", _cell_text(f"{run.get('user', 'unknown')} on {run.get('host', 'unknown')}")),
        ("Stage started (UTC)", _cell_text(stage.get("started") or "")),
        ("Stage ended (UTC)", _cell_text(stage.get("ended") or "")),
        ("Duration", _cell_text(f"{stage.get('duration_s', 0):.1f} s")),
        ("Run started (UTC)", _cell_text(run.get("started", ""))),
        (
            "Parameters file",
            f"{_code(run.get('params_file', ''))} sha256 {_code(run.get('params_sha256', ''))}",
        ),
        ("Runbook commit", _code(run.get("runbook_commit", "unknown"))),
        ("Runbook version", _code(run.get("runbook_version", "unknown"))),
    ]
    if run.get("note"):
        rows.append(("Note", _cell_text(run["note"])))
    rows.append(("Changes", _cell_text(change_summary(stage.get("changes")))))
    if stage.get("flags"):
        rows.append(("Flags", _cell_text(", ".join(str(f) for f in stage["flags"]))))

    title = f"Stage {_cell_text(stage.get('name', ''))}: {_cell_text(status.upper())}"
    lines = [
        f'<h2 style="color:{colour}">{title}</h2>',
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    failure = stage.get("failure")
    if status == "failed" and failure:
        lines += [
            "",
            f"**Failed step:** {_code(failure.get('step') or 'unknown')}",
            "",
            f"**Reason:** {_cell_text(failure.get('reason') or 'see the error below')}",
            "",
            f"**Applied before the failure:**{_items(failure.get('applied'))}",
            "",
            f"**Not applied:**{_items(failure.get('not_applied'))}",
        ]
        if failure.get("outcome_unknown"):
            lines += ["", f"**Sent, answer lost (may be applied):**{_items(failure['outcome_unknown'])}"]
    return "\n".join(lines)


def add_banner(nb: Any, markdown: str) -> Any:
    """A copy of the notebook with the banner as its first cell (replacing an earlier banner)."""
    import nbformat

    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if BANNER_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(markdown, metadata={"tags": [BANNER_TAG]})
    if (out.get("nbformat"), out.get("nbformat_minor", 0)) < (4, 5):
        cell.pop("id", None)  # cell ids exist from nbformat 4.5 on
    out.cells.insert(0, cell)
    return out
