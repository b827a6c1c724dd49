"""Private network namespaces for anything that could fall back to the internet.

containerd falls back to `https://registry-1.docker.io` when a docker.io hosts.toml is broken, ignored
or its mirror fails. Inside a fresh `unshare --net` namespace only `lo` exists, so such a fallback fails
with "network is unreachable" instead of reaching Docker Hub, and loopback ports are private to it.

Which namespace are we in? The interface list must come from the *current* network namespace
(`if_nameindex(3)` asks the kernel over a socket). /sys/class/net is NOT usable for this: sysfs shows
the namespace of whoever mounted /sys, so inside a plain `unshare --net` it still lists the host's
eth0 (checked on the lab VM, kernel 6.18: `unshare --net ls /sys/class/net` -> eth0 ifb0 ifb1 lo).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence

# `ip link set lo up` first: a new namespace starts with lo DOWN, and then even 127.0.0.1 is unreachable.
_ENTER = 'ip link set lo up && exec "$@"'


def network_interfaces() -> list[str]:
    """Names of the network interfaces of the calling process's network namespace."""
    return sorted(name for _, name in socket.if_nameindex())


def in_private_netns() -> bool:
    """True when the only interface in this process's network namespace is `lo`."""
    try:
        return network_interfaces() == ["lo"]
    except OSError:
        return False


def can_unshare() -> bool:
    """True when this process may create a network namespace (root, `unshare` and `ip` installed)."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def private_netns_argv(argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` in a new network namespace with loopback up."""
    if not argv:
        raise ValueError("argv must not be empty")
    for tool in ("unshare", "ip"):
        if not shutil.which(tool):
            raise FileNotFoundError(f"{tool!r} not found on PATH (Debian packages util-linux and iproute2)")
    return ["unshare", "--net", "--", "sh", "-c", _ENTER, "sh", *argv]


def run_in_private_netns(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    capture_output: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside a new private network namespace (only `lo`, up) and wait for it.

    Output is captured as text unless `capture_output=False`. The namespace disappears with the process,
    so servers started by `argv` must be stopped by `argv` itself.
    """
    return subprocess.run(
        private_netns_argv(argv),
        env=dict(env) if env is not None else None,
        timeout=timeout,
        capture_output=capture_output,
        text=True,
        cwd=cwd,
        check=False,
    )
