"""Faults a stand-in injects at run time, so the runbook's retries and its "what was applied" reports meet
what a real server does on a bad day.

Settings are read and changed over HTTP on the stand-in's own port (lab-only, NOT part of the real API):

    GET    /_lab/faults   current settings and how many faults of each kind were injected
    PUT    /_lab/faults   new settings (JSON, every field optional; unknown fields are refused)
    DELETE /_lab/faults   back to no faults

Each matching request draws from a seeded generator, so a test that sends the same requests sees the
same faults. The kinds, each with its own rate (0..1):

- ``error``: answered ``error_status`` (503 by default) before anything is processed;
- ``reset``: the connection is closed without an answer — before processing, or with ``reset_after``
  after it, the case where the write happened and only its answer was lost;
- ``timeout``: no answer for ``timeout_s``, then the connection is closed (a client's read timeout);
- ``conflict``: writes only, answered 409 before processing (the Kubernetes stand-in: optimistic
  concurrency, "the object has been modified");
- ``latency_s``: added to every matching request.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CONTROL_PATH = "/_lab/faults"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KINDS = ("error", "reset", "timeout", "conflict")


@dataclass
class FaultSettings:
    error_rate: float = 0.0
    error_status: int = 503
    reset_rate: float = 0.0
    reset_after: bool = False
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    conflict_rate: float = 0.0
    latency_s: float = 0.0
    methods: list[str] = field(default_factory=list)  # empty: every method
    path_prefix: str = ""  # only requests whose path starts with it
    seed: int = 0

    @classmethod
    def parse(cls, doc: Any) -> FaultSettings:
        if not isinstance(doc, dict):
            raise ValueError("fault settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        settings = cls(**doc)
        for name in ("error_rate", "reset_rate", "timeout_rate", "conflict_rate"):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1")
        if not 400 <= int(settings.error_status) <= 599:
            raise ValueError("error_status must be a 4xx or 5xx code")
        settings.methods = [str(m).upper() for m in settings.methods]
        return settings


class Faults:
    """The settings of one stand-in and the generator that decides, request by request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settings = FaultSettings()
        self._random = random.Random(0)
        self.injected = dict.fromkeys(KINDS, 0)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed)
            self.injected = dict.fromkeys(KINDS, 0)

    def clear(self) -> None:
        self.configure(FaultSettings())

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"settings": asdict(self.settings), "injected": dict(self.injected)}

    def decide(self, method: str, path: str) -> tuple[str | None, FaultSettings]:
        """The fault for one request (None: serve it) and the settings it was drawn under."""
        with self._lock:
            s = self.settings
            if (s.methods and method not in s.methods) or not path.startswith(s.path_prefix):
                return None, FaultSettings()
            draw = self._random.random()
            edge = 0.0
            for kind, rate in (
                ("conflict", s.conflict_rate if method in WRITES else 0.0),
                ("error", s.error_rate),
                ("reset", s.reset_rate),
                ("timeout", s.timeout_rate),
            ):
                edge += rate
                if draw < edge:
                    self.injected[kind] += 1
                    return kind, s
            return None, s

    # -- the HTTP side ---------------------------------------------------------------------------
    def control(self, handler: Any) -> bool:
        """Answer a request to CONTROL_PATH (True), or leave the request alone (False)."""
        if handler.url_path != CONTROL_PATH:
            return False
        body = handler.read_body()
        if handler.command == "PUT":
            try:
                self.configure(FaultSettings.parse(json.loads(body or b"{}")))
            except (ValueError, TypeError) as err:
                handler.reply_json(400, {"error": str(err)})
                return True
        elif handler.command == "DELETE":
            self.clear()
        elif handler.command != "GET":
            handler.reply_json(405, {"error": f"{handler.command} not allowed"})
            return True
        handler.reply_json(200, self.describe())
        return True


def serve(
    faults: Faults,
    handler: Any,
    process: Callable[[], None],
    answer: Callable[[Any, int], None],
) -> None:
    """Serve one request through the faults: the control endpoint, latency, then the drawn fault or
    ``process()``. ``answer(handler, status)`` sends the stand-in's own error shape."""
    if faults.control(handler):
        return
    kind, s = faults.decide(handler.command, handler.url_path)
    if s.latency_s:
        time.sleep(s.latency_s)
    if kind is None:
        process()
    elif kind == "reset" and s.reset_after:
        real, handler.wfile = handler.wfile, io.BytesIO()  # processed; the answer goes nowhere
        try:
            process()
        finally:
            handler.wfile = real
        drop_connection(handler)
    else:
        handler.read_body()
        if kind == "error":
            answer(handler, s.error_status)
        elif kind == "conflict":
            answer(handler, 409)
        elif kind == "reset":
            drop_connection(handler)
        else:
            time.sleep(s.timeout_s)
            drop_connection(handler)


def drop_connection(handler: Any) -> None:
    """Close the client's connection without an answer (what a reset or a dead proxy looks like)."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)
