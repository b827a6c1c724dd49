"""Where audit records go: output handlers keyed by location scheme.

Like papermill's I/O handlers (``papermill/iorw.py``), a handler is chosen by the prefix of a location
string, so a new store (``s3://`` later) plugs in with ``register`` and callers never branch on it.
Plain paths and ``file://`` URLs go to the local folder handler. Handlers do not redact; callers
write through ``redact_io.RedactedOutput``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class OutputHandler(Protocol):
    def write_text(self, location: str, text: str) -> None: ...

    def read_text(self, location: str) -> str: ...

    def exists(self, location: str) -> bool: ...

    def listdir(self, location: str) -> list[str]: ...

    def makedirs(self, location: str) -> None: ...


class LocalFolder:
    """Files on the local file system. Writes go to a temporary name first, then replace the target,
    so a reader (the report index, a browser) never sees half a file."""

    @staticmethod
    def _path(location: str) -> Path:
        return Path(location.removeprefix("file://"))

    def write_text(self, location: str, text: str) -> None:
        path = self._path(location)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {path.parent} does not exist")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def read_text(self, location: str) -> str:
        return self._path(location).read_text(encoding="utf-8")

    def exists(self, location: str) -> bool:
        return self._path(location).exists()

    def listdir(self, location: str) -> list[str]:
        return sorted(os.listdir(self._path(location)))

    def makedirs(self, location: str) -> None:
        self._path(location).mkdir(parents=True, exist_ok=True)


class OutputRegistry:
    """Handlers by scheme prefix; the last registered match wins, ``local`` is the fallback."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str, OutputHandler]] = []
        self._local: OutputHandler = LocalFolder()

    def register(self, scheme: str, handler: OutputHandler) -> None:
        if scheme == "local":
            self._local = handler
        else:
            self._handlers.insert(0, (scheme, handler))

    def handler_for(self, location: str | Path) -> OutputHandler:
        text = str(location)
        for scheme, handler in self._handlers:
            if text.startswith(scheme):
                return handler
        if "://" in text and not text.startswith("file://"):
            raise ValueError(f"no output handler for {text.split('://', 1)[0]}:// locations")
        return self._local


DESTINATIONS = OutputRegistry()


def join(location: str | Path, *parts: str) -> str:
    """Join path parts onto a location with '/', whatever its scheme."""
    text = str(location)
    return text + ("" if text.endswith("/") else "/") + "/".join(parts)
