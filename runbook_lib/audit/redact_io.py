"""Everything the runner saves passes through the redactor here.

Two doors, both scrubbing with ``secrets.REDACTOR``:

* ``RedactedOutput`` for the runner's own files (run.json, HTML, annotated notebooks, the log);
* ``RedactingNotebookIO``, a papermill I/O handler for the ``redact://`` scheme. papermill saves the
  output notebook many times (initial save, after every cell, autosaves, the error banner, the end;
  ``papermill/engines.py::NotebookExecutionManager``), and every one of those saves goes through this
  handler, so a secret never reaches the disk even for a moment (papermill itself has no secret handling:
  nteract/papermill#253, #706).

This module must stay cheap to import: the kernel side (``notebook.py``) uses ``register_secret``,
and papermill is imported only when the handler is installed.
"""

from __future__ import annotations

import json
from typing import Any

from runbook_lib.audit.destinations import DESTINATIONS
from runbook_lib.secrets import REDACTOR

SCHEME = "redact://"


def register_secret(value: str, user: str | None = None) -> None:
    """Register a secret (and, with a user, its Basic-auth form) with the process-wide redactor, which
    derives every encoded form itself (``Redactor.forms``: base64, URL, JSON and HTML escapes)."""
    if user:
        REDACTOR.add_pair(user, value)
    else:
        REDACTOR.add(value)


def scrub_json_text(text: str, indent: int | None = 1) -> str:
    """Scrub a JSON document value by value (so escaped forms inside strings are seen as the kernel
    sent them), then the serialized text as a second net. Non-JSON text is scrubbed as text."""
    try:
        doc = json.loads(text)
    except ValueError:
        return REDACTOR.scrub(text)
    out = json.dumps(REDACTOR.scrub_obj(doc), indent=indent, ensure_ascii=False, sort_keys=True)
    return REDACTOR.scrub(out) + "\n"


class RedactedOutput:
    """Writes text, JSON and notebooks to any registered destination, always scrubbed."""

    def write_text(self, location: str, text: str) -> None:
        DESTINATIONS.handler_for(location).write_text(location, REDACTOR.scrub(text))

    def write_json(self, location: str, obj: Any) -> None:
        text = json.dumps(REDACTOR.scrub_obj(obj), indent=2, ensure_ascii=False, default=str)
        DESTINATIONS.handler_for(location).write_text(location, REDACTOR.scrub(text) + "\n")

    def write_notebook(self, location: str, nb: Any) -> None:
        import nbformat

        DESTINATIONS.handler_for(location).write_text(location, scrub_json_text(nbformat.writes(nb)))

    def read_text(self, location: str) -> str:
        return DESTINATIONS.handler_for(location).read_text(location)


class RedactingNotebookIO:
    """papermill I/O handler: ``redact://<location>`` reads and writes ``<location>`` through the
    destination registry, scrubbing every write."""

    @staticmethod
    def inner(path: str) -> str:
        return path[len(SCHEME) :] if path.startswith(SCHEME) else path

    def read(self, path: str) -> str:
        inner = self.inner(path)
        return DESTINATIONS.handler_for(inner).read_text(inner)

    def write(self, buf: str, path: str) -> None:
        inner = self.inner(path)
        DESTINATIONS.handler_for(inner).write_text(inner, scrub_json_text(buf))

    def listdir(self, path: str) -> list[str]:
        inner = self.inner(path)
        return DESTINATIONS.handler_for(inner).listdir(inner)

    def pretty_path(self, path: str) -> str:
        return self.inner(path)


_installed = False


def install_papermill_handler() -> None:
    """Register the ``redact://`` scheme with papermill (once per process)."""
    global _installed
    if _installed:
        return
    from papermill.iorw import papermill_io

    papermill_io.register(SCHEME, RedactingNotebookIO())
    _installed = True


def redacted_location(location: str) -> str:
    return SCHEME + location
