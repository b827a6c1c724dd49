"""A private, real containerd daemon (Debian package `containerd`, 1.6.20) for the lab and its tests.

Everything it writes stays inside `workdir`: root, state, gRPC/ttrpc sockets, the `opt` plugin path
(without it containerd 1.6 creates /opt/containerd/{bin,lib} on the host) and the CRI plugin's CNI
directories (the CRI plugin creates its CNI conf_dir at startup). Facts used here (containerd
docs/hosts.md and docs/cri/config.md; checked with Debian's containerd 1.6 on this machine): a legacy
`registry.mirrors` table beside `config_path` leaves the CRI plugin unloaded with only a warning.

The daemon resolves registries for CRI pulls through `registry.config_path = certs_dir` (what EKS nodes
use), while `ctr images pull --hosts-dir DIR` resolves on the ctr client side and never consults the
daemon's config_path (containerd/containerd#12550, #11478). Run pulls that could fall back to docker.io
only in a private network namespace (see runbook_lab.netns).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import tomli_w

INSTALL_HINT = "install the Debian package containerd; make test does it as root"
NAMESPACES = ("default", "k8s.io")  # ctr's default namespace and the one CRI (kubelet) uses
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
# sun_path is 108 bytes including the terminating NUL; containerd adds ".ttrpc" for the ttrpc socket
_MAX_SOCKET_PATH = 100
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class ContainerdError(RuntimeError):
    """containerd or ctr failed; the message carries the relevant output."""


class ContainerdNotInstalled(ContainerdError):
    """The containerd or ctr binary is not on PATH."""


@dataclass(frozen=True)
class PullResult:
    """Outcome of one `ctr images pull`."""

    ref: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class PluginStatus:
    """One row of `ctr plugins ls`: TYPE ID PLATFORMS STATUS (status is ok, skip or error)."""

    type: str
    id: str
    platforms: str
    status: str

    @property
    def name(self) -> str:
        return f"{self.type}.{self.id}"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ContainerdNotInstalled(f"{name!r} not found on PATH: {INSTALL_HINT}")
    return path


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` in this process's mount namespace, deepest first."""
    base = Path(os.path.realpath(path))
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            # field 5 is the mount point, with space, tab, newline and backslash octal-escaped
            raw = line.split()[4]
            point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
            if point == base or base in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def parse_plugins(text: str) -> list[PluginStatus]:
    """Parses `ctr plugins ls` (a header line, then whitespace-separated columns)."""
    rows = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4:
            continue
        rows.append(PluginStatus(type=cols[0], id=cols[1], platforms=" ".join(cols[2:-1]), status=cols[-1]))
    return rows


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


class PrivateContainerd:
    """A containerd daemon with its own config, root, state and sockets under `workdir`.

    `extra_config` is deep-merged into the generated config.toml (e.g. to reproduce a misconfigured
    node); the generated settings are otherwise fixed so that nothing lands outside `workdir`.
    """

    def __init__(
        self,
        workdir: Path,
        certs_dir: Path,
        debug: bool = True,
        snapshotter: str = "overlayfs",
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.certs_dir = Path(certs_dir).resolve()
        self.debug = debug
        self.snapshotter = snapshotter
        self.extra_config = extra_config or {}
        self.config_path = self.workdir / "config.toml"
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.opt_dir = self.workdir / "opt"
        self.cni_dir = self.workdir / "cni"
        self.socket = self.workdir / "containerd.sock"
        if len(str(self.socket)) + len(".ttrpc") > _MAX_SOCKET_PATH:
            # A deep workdir (a long checkout path, pytest's temp dirs) would exceed the 108-byte limit of
            # unix socket paths: use a short folder named after the workdir, so it stays unique and stable.
            digest = hashlib.sha256(str(self.workdir).encode()).hexdigest()[:16]
            self.socket = Path(tempfile.gettempdir()) / f"ctd-{digest}" / "containerd.sock"
        self.log_path = self.workdir / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None
        if len(str(self.socket)) + len(".ttrpc") > _MAX_SOCKET_PATH:
            raise ContainerdError(
                f"socket path too long for a unix socket ({self.socket}); use a shorter workdir"
            )

    # -- config ----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cri = {
            "containerd": {"snapshotter": self.snapshotter},
            "registry": {"config_path": str(self.certs_dir)},
            "cni": {"bin_dir": str(self.cni_dir / "bin"), "conf_dir": str(self.cni_dir / "net.d")},
        }
        config: dict[str, Any] = {
            "version": 2,
            "root": str(self.root),
            "state": str(self.state),
            "grpc": {"address": str(self.socket)},
            "ttrpc": {"address": f"{self.socket}.ttrpc"},
            "debug": {"level": "debug" if self.debug else "info"},
            "plugins": {
                "io.containerd.internal.v1.opt": {"path": str(self.opt_dir)},
                CRI_PLUGIN: cri,
            },
        }
        return _merge(config, self.extra_config)

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".toml.tmp")
        tmp.write_text(tomli_w.dumps(self.config()), encoding="utf-8")
        tmp.replace(self.config_path)
        return self.config_path

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Starts the daemon in the background; returns once `ctr version` answers on its socket."""
        if self.running:
            raise ContainerdError(f"containerd already running (pid {self.pid})")
        binary = require_binary("containerd")
        require_binary("ctr")
        self.write_config()
        for path in (self.root, self.state, self.opt_dir, self.certs_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [binary, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise ContainerdError(
                    f"containerd exited with status {code} during startup:\n{self.log_tail()}"
                )
            probe = self.ctr("version", check=False, timeout=5)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ContainerdError(f"containerd not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by PID, wait (shutdown takes more than 1 s), SIGKILL fallback, then drop any mount left."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        elif proc is not None:
            proc.wait()  # already exited: reap it
        if self._log is not None:
            self._log.close()
            self._log = None
        self._unmount_leftovers()
        if self.socket.parent != self.workdir:  # the short socket folder is ours alone
            shutil.rmtree(self.socket.parent, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        # a pull unpacks through temporary mounts that containerd removes itself; a SIGKILL mid-unpack
        # could leave one under root, which would then block deleting the workdir
        if not self.workdir.exists():
            return
        for point in mounts_under(self.workdir):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)

    def __enter__(self) -> PrivateContainerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _env() -> dict[str, str]:
        # a proxy from the caller's environment must not decide where lab pulls go
        return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}

    # -- ctr -------------------------------------------------------------------------------------
    def ctr(
        self, *args: str, namespace: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs `ctr -a SOCKET [-n NAMESPACE] ARGS...` and returns its text output."""
        argv = [require_binary("ctr"), "-a", str(self.socket)]
        if namespace:
            argv += ["-n", namespace]
        argv += list(args)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env())
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from exc
        if check and done.returncode != 0:
            raise ContainerdError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def ctr_pull(
        self,
        ref: str,
        hosts_dir: Path | None = None,
        platform: str | None = None,
        namespace: str | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> PullResult:
        """`ctr images pull [--hosts-dir DIR] [--platform P] REF`; a failed pull is a result, not an error.

        Without `hosts_dir` ctr ignores every hosts.toml and goes straight to the image's registry.
        """
        args = ["images", "pull"]
        if hosts_dir is not None:
            args += ["--hosts-dir", str(hosts_dir)]
        if platform:
            args += ["--platform", platform]
        args += [*extra_args, ref]
        started = time.monotonic()
        done = self.ctr(*args, namespace=namespace, check=False, timeout=timeout)
        return PullResult(ref, done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def image_names(self, namespace: str = "default") -> list[str]:
        return self.ctr("images", "ls", "-q", namespace=namespace).stdout.split()

    def content_digests(self, namespace: str = "default") -> list[str]:
        return self.ctr("content", "ls", "-q", namespace=namespace).stdout.split()

    def remove_all_images(self) -> None:
        """Removes every image in both namespaces, with synchronous garbage collection.

        Content blobs are shared between containerd namespaces (one content store): a pull is only cold
        after the image is gone from ctr's `default` and CRI's `k8s.io` alike.
        """
        for namespace in NAMESPACES:
            names = self.image_names(namespace)
            if names:
                self.ctr("images", "rm", "--sync", *names, namespace=namespace)

    def plugins(self) -> list[PluginStatus]:
        return parse_plugins(self.ctr("plugins", "ls").stdout)

    def plugin_status(self, name: str) -> str | None:
        """Status of plugin `TYPE.ID` (e.g. "io.containerd.grpc.v1.cri"), None when not listed at all."""
        for plugin in self.plugins():
            if plugin.name == name:
                return plugin.status
        return None

    def cri_loaded(self) -> bool:
        # containerd keeps running when CRI fails to load, with only a warning in its log (the config check
        # in containerd pkg/cri/config/config.go fails the CRI plugin, not the daemon)
        return self.plugin_status(CRI_PLUGIN) == "ok"

    # -- log -------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_offset(self) -> int:
        """Current size of the log; pass it to log_since() to see only what happens after this point."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
