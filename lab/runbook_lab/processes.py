"""Processes of the lab: is a PID still ours and alive, and stopping one by PID.

A stopped child that nobody has reaped yet is a zombie: `kill(pid, 0)` still succeeds, but it holds no
port and runs nothing, so it counts as gone. A PID whose command line no longer names our program was
reused by the system and is not ours to signal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import socket
import time
from pathlib import Path


def pid_alive(pid: int | None, argv0: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv0 is None or any(argv0.encode() in part for part in cmdline)


def _reap(pid: int) -> bool:
    """Collect pid if it is our own exited child; True when it is collected or not ours to collect."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _collect(pid: int, timeout: float = 5.0) -> None:
    # A multi-threaded process (Go) shows its group leader as a zombie while other threads still exit;
    # waitpid only succeeds once all are gone, so keep trying for a moment.
    deadline = time.monotonic() + timeout
    while not _reap(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns once the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            _reap(pid)
            if not pid_alive(pid):
                break
            time.sleep(0.05)
    _collect(pid)  # a child of ours that died is a zombie until collected


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR as Go's and Python's servers set it: connections in TIME_WAIT do not block a restart.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise  # e.g. an address this machine does not have: not a "port taken" answer
    return True


_HANDED_OUT: set[int] = set()
# Between the lab parameters' own ports (15000-18090 in parameters/lab.yaml) and the bench's copies of
# them (+10000: 25000-28090), below the kernel's ephemeral range (Linux default 32768-60999).
UNUSED_PORTS = range(19000, 25000)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def unused_port(host: str = "127.0.0.1") -> int:
    """A free port for a service that binds it later, below the kernel's ephemeral range.

    A port from bind(0) lies inside the ephemeral range, where any outgoing connection may take it as its
    local port between the pick and the service's bind ("Address already in use" at random). Below the
    range only listeners take ports; each port is handed out once per process."""
    low, top = UNUSED_PORTS.start, min(UNUSED_PORTS.stop, _ephemeral_start())
    for _ in range(1000):
        port = random.randrange(low, top)
        if port not in _HANDED_OUT and port_free(port, host):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{top - 1} on {host}")
