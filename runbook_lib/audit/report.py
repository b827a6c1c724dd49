"""The index of all runs in an output folder: ``DIR/index.html``, newest first, no JavaScript. The folder
may be any registered destination (a local folder, ``s3://bucket/prefix``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from runbook_lib.audit.banner import change_summary
from runbook_lib.audit.destinations import DESTINATIONS, is_remote, join
from runbook_lib.audit.redact_io import RedactedOutput

RUN_JSON = "run.json"
INDEX = "index.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .4em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.ok { color: #1a7f37; font-weight: bold; } .failed { color: #cf222e; font-weight: bold; }
.skipped, .running { color: #6e7781; }
ul { margin: 0; padding-left: 1.2em; } small { color: #57606a; }
"""

REASON_CHARS = 280


def load_runs(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable run.json under the output folder's run folders, newest first."""
    location = str(output_dir)
    handler = DESTINATIONS.handler_for(location)
    runs = []
    if not handler.exists(location):
        return runs
    for name in handler.listdir(location):
        record_location = join(location, name, RUN_JSON)
        if not handler.exists(record_location):
            continue
        try:
            record = json.loads(handler.read_text(record_location))
        except (OSError, ValueError):
            continue  # a broken record must not hide the others
        if isinstance(record, dict):
            record["_folder"] = name
            runs.append(record)
    runs.sort(key=lambda r: (str(r.get("started", "")), r["_folder"]), reverse=True)
    return runs


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _link(folder: str, name: str | None, label: str) -> str:
    if not name:
        return ""
    return f'<a href="{_e(folder)}/{_e(name)}">{_e(label)}</a>'


def _stage_item(folder: str, stage: dict[str, Any]) -> str:
    status = str(stage.get("status", "unknown"))
    links = " ".join(
        x
        for x in (
            _link(folder, stage.get("html"), "report"),
            _link(folder, stage.get("notebook"), "notebook"),
        )
        if x
    )
    detail = ""
    if status != "skipped":
        detail = f" <small>{_e(change_summary(stage.get('changes')))}</small>"
    failure = stage.get("failure") or {}
    if status == "failed" and failure:
        reason = str(failure.get("reason") or "")
        if len(reason) > REASON_CHARS:  # the index is an overview; the stage report has the whole text
            reason = reason[:REASON_CHARS].rstrip() + " … (see the report)"
        detail += f"<br><small>failed at {_e(failure.get('step'))}: {_e(reason)}</small>"
    return f'<li>{_e(stage.get("name"))} <span class="{_e(status)}">{_e(status)}</span>{detail} {links}</li>'


def index_html(runs: list[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        folder = run["_folder"]
        status = str(run.get("status", "unknown"))
        stages = "".join(_stage_item(folder, s) for s in run.get("stages", []))
        note = f"<br><small>{_e(run['note'])}</small>" if run.get("note") else ""
        rows.append(
            "<tr>"
            f"<td>{_e(run.get('started'))}<br><small>{_e(run.get('run_id', folder))}</small></td>"
            f"<td>{_e(run.get('target'))}</td>"
            f"<td>{_e(run.get('mode'))}</td>"
            f'<td><span class="{_e(status)}">{_e(status)}</span>{note}</td>'
            f"<td><ul>{stages}</ul></td>"
            f"<td>{_e(run.get('user'))}@{_e(run.get('host'))}<br>"
            f"<small>commit {_e(str(run.get('runbook_commit', 'unknown'))[:12])}</small><br>"
            f"{_link(folder, RUN_JSON, 'run.json')}</td>"
            "</tr>"
        )
    body = (
        "<table><thead><tr><th>Started (UTC)</th><th>Target</th><th>Mode</th><th>Status</th>"
        "<th>Stages</th><th>Who / what</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p>No runs yet.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Runbook runs</title>'
        f"<style>{_STYLE}</style></head><body><h1>Runbook runs</h1>{body}</body></html>\n"
    )


def report(output_dir: str | Path) -> Path | str:
    """Write ``DIR/index.html`` listing every run in the folder; returns its path (an ``s3://`` location
    as a string: the index of an S3 output is built from the run.json objects there and written beside
    them, with the same relative links)."""
    location = str(output_dir).rstrip("/") if is_remote(output_dir) else str(output_dir)
    DESTINATIONS.handler_for(location).makedirs(location)
    target = join(location, INDEX)
    RedactedOutput().write_text(target, index_html(load_runs(location)))
    return target if is_remote(target) else Path(target)
