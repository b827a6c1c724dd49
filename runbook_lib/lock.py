"""One writer per target: the lock `runbook run --apply` holds on its target for the whole run.

Where: ``$RUNBOOK_LOCK_DIR`` when set; else ``<output folder>/.locks/`` when the run folders are local (so
every run of one parameters file meets the same lock by default); else the per-user state folder
(``$XDG_STATE_HOME`` or ``~/.local/state``)``/eks-mirror-runbook/locks``. One file per target,
``<target>.lock``, holding who holds it as JSON: pid, host, user, start time, mode, target, run folder and
parameters file. Never a secret (nothing of the parameters but the file's path is in it).

How: ``flock(LOCK_EX | LOCK_NB)`` on the open file. The kernel drops a flock when the last descriptor of
the open file closes, so also when its holder is killed with SIGKILL: a lock file whose flock can be taken
is stale whatever it says, and is taken over (its content only tells who left it; the run that takes it
over logs that). No pid is guessed at and the file is never deleted (deleting a flock file lets two
processes hold "the" lock on two inodes). The runner also passes the descriptor to each notebook kernel
it starts, so a lock outlives a killed runner until its kernel, which may still be writing, has exited
(ipykernel exits within a second of losing its parent: ``ipykernel/parentpoller.py``).

Plan-only runs take no lock: they only read. They are told when an apply holds the target, since they may
see its intermediate state (``holder``).

Limits: a flock is seen on one machine only (and is unreliable on some network file systems), so two hosts
applying one target are not stopped; nor, by default, are two runs with different output folders: point
``RUNBOOK_LOCK_DIR`` at one folder that every operator of this machine can write to for that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_LOCKED",
    "Holder",
    "LockHeld",
    "TargetLock",
    "acquire",
    "holder",
    "lock_dir",
    "lock_path",
]

EXIT_LOCKED = 3  # `runbook run --apply` refused: another apply holds the target (nothing executed)
ENV_LOCK_DIR = "RUNBOOK_LOCK_DIR"
SUFFIX = ".lock"
# A plan's look at the lock (``holder``) holds a shared flock for an instant; an apply that meets it
# tries again for this long before it is refused.
CONTENTION_GRACE_S = 0.5


@dataclass
class Holder:
    """Who holds (or last held) a target's lock; all of it is written into the lock file."""

    pid: int
    host: str
    user: str
    started: str
    target: str
    mode: str = "apply"
    run_dir: str | None = None
    params_file: str | None = None

    @classmethod
    def from_text(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError):
            return None

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    def alive(self) -> bool | None:
        """Whether the holder's own process still runs (None: on another host, cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        where = f" (run folder {self.run_dir})" if self.run_dir else ""
        return f"pid {self.pid} on {self.host}, user {self.user}, since {self.started}{where}"


class LockHeld(Exception):
    """The target's lock is held by another run: nothing was executed."""

    def __init__(self, target: str, path: Path, holder: Holder | None) -> None:
        self.target, self.path, self.holder = target, path, holder
        who = holder.describe() if holder else "a run that has not written its details yet"
        doing = "applied" if holder is None or holder.mode == "apply" else f"run ({holder.mode} mode)"
        msg = f"target {target!r} is being {doing} by another run: {who}. Nothing was executed."
        if holder is not None and holder.alive() is False:
            msg += (
                " Its runner has exited but a process it started (its notebook kernel) still holds the "
                "lock and may still be writing; it ends on its own within seconds, or stop it."
            )
        else:
            msg += " Wait for it to finish (a lock left by a killed run is taken over by the next run)."
        super().__init__(f"{msg} Lock file: {path}")


def lock_dir(output_dir: str | Path | None = None) -> Path:
    """Where the lock files go (see the module docstring)."""
    env = os.environ.get(ENV_LOCK_DIR)
    if env:
        return Path(env).expanduser()
    if output_dir is not None and "://" not in str(output_dir).removeprefix("file://"):
        return Path(str(output_dir).removeprefix("file://")) / ".locks"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eks-mirror-runbook" / "locks"


def lock_path(target: str, directory: str | Path) -> Path:
    # target names are already restricted (params); this keeps any other caller inside the folder
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", target).lstrip(".") or "_"
    return Path(directory) / f"{safe}{SUFFIX}"


def _read(fd: int) -> str:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class TargetLock:
    """A held lock. ``stale`` is whoever left the lock file behind without releasing it (a killed run)."""

    path: Path
    fd: int
    holder: Holder
    stale: Holder | None = None
    _released: bool = field(default=False, repr=False)

    def fileno(self) -> int:
        return self.fd

    def update(self, **changes: Any) -> None:
        """Record more about the run (e.g. its run folder once created)."""
        for key, value in changes.items():
            setattr(self.holder, key, value)
        self._write()

    def _write(self) -> None:
        data = self.holder.to_text().encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Empty the file (an empty file means released cleanly), then drop the flock."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closes the flock for this process; a kernel still holding the fd keeps it

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    target: str,
    directory: str | Path,
    *,
    mode: str = "apply",
    run_dir: str | None = None,
    params_file: str | None = None,
) -> TargetLock:
    """Take the target's lock or raise ``LockHeld`` at once. A lock left by a dead run is taken over."""
    path = lock_path(target, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + CONTENTION_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise LockHeld(target, path, Holder.from_text(_read(fd)))
            time.sleep(0.05)  # a plan's instant look, or a writer between its flock and its write
        previous = _read(fd)
        stale = Holder.from_text(previous) if previous.strip() else None
        held = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            user=_user(),
            started=_now(),
            target=target,
            mode=mode,
            run_dir=run_dir,
            params_file=params_file,
        )
        lock = TargetLock(path=path, fd=fd, holder=held, stale=stale)
        lock._write()
        return lock
    except BaseException:
        os.close(fd)
        raise


def holder(target: str, directory: str | Path) -> Holder | None:
    """Who holds the target's lock now, without taking it (None: nobody). For plan-only runs."""
    path = lock_path(target, directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return Holder.from_text(_read(fd)) or Holder(0, "unknown", "unknown", "unknown", target)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
