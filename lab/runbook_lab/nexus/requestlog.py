"""A JSON-lines record of every REST request the emulated Nexus answered, with secrets masked.

One line per request: time, method, path, query, status, the authenticated user and the JSON body. Any
`password`, `bearerToken` or `secretAccessKey` value anywhere in the body becomes "***", and so does the
whole text/plain body of change-password. A body that is not JSON is recorded by size only, since it could
hold anything. Lab tests and the runbook's audit read this file to see exactly what the client sent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from runbook_lab.nexus.state import now_iso

MASK = "***"
SECRET_KEYS = frozenset({"password", "bearerToken", "secretAccessKey"})


def mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if k in SECRET_KEYS and v is not None else mask_secrets(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def loggable_body(raw: bytes, secret_text: bool) -> Any:
    if not raw:
        return None
    if secret_text:
        return MASK
    try:
        return mask_secrets(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"<{len(raw)} bytes, not JSON>"


class RequestLog:
    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(
        self, *, method: str, path: str, query: dict[str, list[str]], status: int, user: str | None, body: Any
    ) -> None:
        if not self.path:
            return
        entry = {
            "time": now_iso(),
            "method": method,
            "path": path,
            "query": {k: v[0] if len(v) == 1 else v for k, v in query.items()},
            "status": status,
            "user": user,
            "body": body,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
