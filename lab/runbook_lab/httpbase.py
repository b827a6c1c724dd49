"""Small threaded HTTP server base shared by the lab's stand-ins.

stdlib only. Two details matter for speed and correctness: TCP_NODELAY on accepted sockets (without it
keep-alive requests wait ~40 ms for delayed ACKs because headers and body go out in separate writes)
and HTTP/1.1 keep-alive, which real clients (containerd, httpx, the kubernetes client) rely on.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def get_request(self):  # type: ignore[override]
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        # A client closing an idle keep-alive connection (ctr exiting, httpx pools) is normal.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LabHandler(BaseHTTPRequestHandler):
    """Base handler: parsed URL, body reading, JSON replies, quiet logging."""

    protocol_version = "HTTP/1.1"
    server_version = "lab"
    sys_version = ""

    # -- request helpers -----------------------------------------------------------------------
    @property
    def url_path(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- replies -------------------------------------------------------------------------------
    def reply(
        self,
        status: int,
        body: bytes | str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else (body or b"")
        self.send_response(status)
        if content_type and data:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def reply_json(
        self, status: int, obj: Any, headers: dict[str, str] | None = None, indent: int | None = None
    ) -> None:
        self.reply(status, json.dumps(obj, indent=indent), "application/json", headers)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # components keep their own structured logs


def serve_in_thread(server: LabHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    return thread


def run_until_signal(servers: list[LabHTTPServer], on_stop: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (how `lab down` stops a component), then close cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for s in servers:
        serve_in_thread(s)
    stop.wait()
    for s in servers:
        s.shutdown()
        s.server_close()
    if on_stop:
        on_stop()
