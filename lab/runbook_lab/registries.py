"""CNCF distribution registries (Debian `docker-registry` 2.8.2) as the lab's upstreams and caches.

Config shape (distribution's configuration reference, https://distribution.github.io/distribution/about/
configuration/), start order and behaviour as observed with 2.8.2: filesystem storage, delete enabled,
access log on (one line per request, which tests read to tell containerd
from the mirror's own upstream requests). A proxy-mode registry GETs `remoteurl/v2/` at startup and
*panics* if the upstream is down, so start the upstream first and wait for it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from runbook_lab.processes import port_free, stop_pid

REGISTRY_BINARY = "/usr/bin/docker-registry"
INSTALL_HINT = "install the Debian package docker-registry; `make test`/`make demo` do it as root"
# distribution logs `msg="listening on 127.0.0.1:40123"` once its listener is open
_LISTENING = re.compile(r'listening on "?\[?([0-9a-fA-F.:]*?)\]?:(\d+)"?')


class RegistryError(RuntimeError):
    pass


def registry_config(
    root: Path,
    port: int,
    host: str = "127.0.0.1",
    proxy_remote: str | None = None,
    service: str = "registry",
    htpasswd: Path | None = None,
) -> str:
    """YAML for `docker-registry serve`: storage under `root`; with `proxy_remote`, a pull-through cache;
    with `htpasswd` (bcrypt entries), HTTP Basic auth on every request."""
    config: dict = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}, "fields": {"service": service}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"{host}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": f"{service}-realm", "path": str(htpasswd)}}
    if proxy_remote:
        config["proxy"] = {"remoteurl": proxy_remote}
    return yaml.safe_dump(config, sort_keys=False)


class RegistryProcess(subprocess.Popen):
    """A running docker-registry; `url` is known once it listens (port 0 is resolved from its log)."""

    name: str
    host: str
    port: int
    root: Path
    log_path: Path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _binary() -> str:
    if not (os.path.isfile(REGISTRY_BINARY) and os.access(REGISTRY_BINARY, os.X_OK)):
        raise RegistryError(f"{REGISTRY_BINARY} not found: {INSTALL_HINT}")
    return REGISTRY_BINARY


def ensure_port_free(host: str, port: int) -> None:
    """Raise RegistryError if something already listens on host:port (port 0 is always free)."""
    if port == 0:
        return
    if not port_free(port, host):
        raise RegistryError(f"port {port} on {host} is already in use")


def start_registry(
    name: str,
    root: Path,
    port: int,
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    proxy_remote: str | None = None,
    htpasswd: Path | None = None,
    ready_timeout: float = 15.0,
) -> RegistryProcess:
    """Write `root/config.yml` (data in `root/data`), start the registry and wait until /v2/ answers.

    `port=0` picks a free port; read it back from the returned process's `port` / `url`.
    """
    binary = _binary()
    ensure_port_free(host, port)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    config_path = root / "config.yml"
    config_path.write_text(
        registry_config(root / "data", port, host, proxy_remote, service=name, htpasswd=htpasswd)
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = RegistryProcess(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    proc.name, proc.host, proc.port, proc.root, proc.log_path = name, host, port, root, log_path
    try:
        if port == 0:
            proc.port = _port_from_log(proc, log_path, log_start, ready_timeout)
        wait_ready(proc.url, ready_timeout, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _log_tail(log_path: Path, start: int, limit: int = 2000) -> str:
    try:
        with log_path.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")[-limit:]
    except OSError:
        return ""


def _log_summary(log_path: Path, start: int) -> str:
    """The lines that explain a failed start (panic / fatal / error), else the end of the log."""
    text = _log_tail(log_path, start, limit=1 << 20)
    key = [
        ln
        for ln in text.splitlines()
        if ln.startswith("panic:") or "level=fatal" in ln or "level=error" in ln
    ]
    return " | ".join(key)[-2000:] if key else text[-2000:]


def _port_from_log(proc: subprocess.Popen, log_path: Path, start: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(_log_tail(log_path, start, limit=1 << 20))
        if match:
            return int(match.group(2))
        if proc.poll() is not None:
            raise RegistryError(
                f"docker-registry exited with {proc.returncode}: {_log_summary(log_path, start)}"
            )
        time.sleep(0.02)
    raise RegistryError(
        f"docker-registry did not report its port within {timeout}s: {_log_summary(log_path, start)}"
    )


def wait_ready(
    url: str,
    timeout: float = 15.0,
    proc: subprocess.Popen | None = None,
    ok_status: tuple[int, ...] = (200, 401),
) -> None:
    """Poll `url`/v2/ until it answers with one of `ok_status` (401: up, but wants a token)."""
    probe = url.rstrip("/") + "/v2/"
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                tail = ""
                if isinstance(proc, RegistryProcess):
                    tail = ": " + _log_summary(proc.log_path, 0)
                raise RegistryError(
                    f"process {proc.pid} exited with {proc.returncode} before {probe} answered{tail}"
                )
            try:
                status = client.get(probe).status_code
                if status in ok_status:
                    return
                last = f"HTTP {status}"
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{probe} not ready within {timeout}s ({last})")
            time.sleep(0.05)


def stop_process(proc_or_pid: subprocess.Popen | int, timeout: float = 15.0) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code when it is known (own child)."""
    if isinstance(proc_or_pid, subprocess.Popen):
        proc = proc_or_pid
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode
    stop_pid(proc_or_pid, timeout)
    return None
