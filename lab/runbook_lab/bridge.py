"""Port bridge: a lab node reaches exactly the lab's services, over Unix sockets, and nothing else.

The fallback path: lab nodes use the kernel path (veth.py: a veth pair and NAT) unless it cannot be set
up (the reason is in the node's net.json and log) or NodeSpec.net is "bridge". The kernel path is faster:
this bridge copies every byte through two Python threads on each side.

A lab node lives in its own network namespace where only `lo` exists, so its 127.0.0.1 is not the lab's
127.0.0.1. The bridge gives the node a listener on 127.0.0.1:<port> for each lab service port (the same
number as in the lab, so URLs from the parameters file work unchanged inside the node) and carries each
connection over a Unix socket to the lab side, which connects to 127.0.0.1:<port> in the lab's namespace.

    node netns                          filesystem                 lab netns
    client -> 127.0.0.1:P (NodeSide) -> SOCK_DIR/P (unix) -> LabSide -> 127.0.0.1:P (service)

Unix sockets with a path are reachable across network namespaces (the path lives in the file system),
which is what makes the bridge work without veth pairs, routes or iptables. A port that is not bridged
has no listener inside the node: connecting to it is refused by the node's own kernel, and every
non-loopback address is "network is unreachable" (no route).

One difference from a direct connection, by construction: when the lab service behind a bridged port is
down, the node's connect() has already succeeded (the node side accepts first), so the client sees the
connection reset right away instead of "connection refused". A one-byte answer from the lab side tells
the node side whether the service accepted, and the node side then resets (SO_LINGER 0) instead of
closing cleanly, so clients treat it as a failed connection, not as an empty reply.

`python -m runbook_lab.bridge lab|node SOCK_DIR PORT...` runs one side until SIGTERM (for debugging).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

BUFFER = 256 * 1024
ACCEPTED, REFUSED = b"\x00", b"\x01"
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


class BridgeError(RuntimeError):
    pass


def socket_path(sock_dir: Path, port: int) -> Path:
    path = Path(sock_dir) / str(port)
    if len(str(path)) > _MAX_UNIX_PATH:
        raise BridgeError(f"bridge socket path too long for a unix socket: {path}")
    return path


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER on, timeout 0), so the peer sees a failed connection, not a clean EOF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src -> dst until EOF, then half-close dst for writing so the peer sees the EOF too."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(view)
            if n == 0:
                break
            dst.sendall(view[:n])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _Connections:
    """Open relayed connections, so stop() can cut them (a watch stream would otherwise live on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def discard(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(socks)

    def close_all(self) -> None:
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


def relay(a: socket.socket, b: socket.socket, connections: _Connections) -> None:
    """Both directions in two threads; closes both sockets when both directions ended."""
    connections.add(a, b)

    def run() -> None:
        back = threading.Thread(target=_pump, args=(b, a), daemon=True)
        back.start()
        _pump(a, b)
        back.join()
        connections.discard(a, b)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()

    threading.Thread(target=run, daemon=True).start()


class _Side:
    """Listeners + accept threads + open connections, shared by both sides."""

    def __init__(self, sock_dir: Path, ports: Iterable[int]) -> None:
        self.sock_dir = Path(sock_dir)
        self.ports = sorted(set(int(p) for p in ports))
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._connections = _Connections()
        self._stopping = threading.Event()

    def _serve(self, listener: socket.socket, port: int) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, port), daemon=True).start()

    def _handle(self, conn: socket.socket, port: int) -> None:
        raise NotImplementedError

    def _listen(self, listener: socket.socket, port: int) -> None:
        listener.listen(128)
        self._listeners.append(listener)
        t = threading.Thread(target=self._serve, args=(listener, port), daemon=True, name=f"bridge-{port}")
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()
        for t in self._threads:
            t.join(timeout=2)
        self._listeners, self._threads = [], []
        self._connections.close_all()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LabSide(_Side):
    """Runs in the lab's network namespace: SOCK_DIR/<port> -> 127.0.0.1:<port>."""

    def __init__(self, sock_dir: Path, ports: Iterable[int], target_host: str = "127.0.0.1") -> None:
        super().__init__(sock_dir, ports)
        self.target_host = target_host

    def start(self) -> LabSide:
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        try:
            for port in self.ports:
                path = socket_path(self.sock_dir, port)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a socket file left by a killed run
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(str(path))
                os.chmod(path, 0o600)
                self._listen(listener, port)
        except BaseException:
            self.stop()
            raise
        return self

    def _handle(self, conn: socket.socket, port: int) -> None:
        try:
            upstream = socket.create_connection((self.target_host, port), timeout=10)
        except OSError:
            with contextlib.suppress(OSError):
                conn.sendall(REFUSED)
            with contextlib.suppress(OSError):
                conn.close()
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn.sendall(ACCEPTED)
        except OSError:
            upstream.close()
            conn.close()
            return
        relay(conn, upstream, self._connections)

    def stop(self) -> None:
        super().stop()
        for port in self.ports:
            with contextlib.suppress(OSError, BridgeError):
                socket_path(self.sock_dir, port).unlink()


class NodeSide(_Side):
    """Runs in the node's network namespace: 127.0.0.1:<port> -> SOCK_DIR/<port>."""

    def __init__(self, sock_dir: Path, ports: Iterable[int], listen_host: str = "127.0.0.1") -> None:
        super().__init__(sock_dir, ports)
        self.listen_host = listen_host

    def start(self) -> NodeSide:
        try:
            for port in self.ports:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    listener.bind((self.listen_host, port))
                except OSError as exc:
                    listener.close()
                    if exc.errno == errno.EADDRINUSE:
                        raise BridgeError(f"port {port} is already in use inside the node") from None
                    raise
                self._listen(listener, port)
        except BaseException:
            self.stop()
            raise
        return self

    def _handle(self, conn: socket.socket, port: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lab = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lab.connect(str(socket_path(self.sock_dir, port)))
            answer = lab.recv(1)
        except OSError:
            answer = b""
        if answer != ACCEPTED:
            with contextlib.suppress(OSError):
                lab.close()
            _reset(conn)
            return
        relay(conn, lab, self._connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbook_lab.bridge", description=__doc__.split("\n")[0])
    parser.add_argument("side", choices=["lab", "node"])
    parser.add_argument("sock_dir", type=Path)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args(argv)
    side: _Side = (
        LabSide(args.sock_dir, args.ports) if args.side == "lab" else NodeSide(args.sock_dir, args.ports)
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        side.start()  # type: ignore[attr-defined]
    except (OSError, BridgeError) as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    print(f"bridge {args.side} side up for ports {', '.join(map(str, side.ports))}", flush=True)
    stop.wait()
    side.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
