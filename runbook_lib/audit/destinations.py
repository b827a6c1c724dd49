"""Where audit records go: output handlers keyed by location scheme.

Like papermill's I/O handlers (``papermill/iorw.py``), a handler is chosen by the prefix of a location
string, so a new store plugs in with ``register`` and callers never branch on it. Plain paths and
``file://`` URLs go to the local folder handler, ``s3://bucket/prefix`` to ``S3Folder`` (boto3). Handlers
do not redact; callers write through ``redact_io.RedactedOutput``. A run whose output is remote writes
its folder locally first and uploads it (``StagedOutput``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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


# ------------------------------------------------------------------------------------------------- S3
S3_SCHEME = "s3://"
HISTORY = "history.sqlite"
# S3 bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".ipynb": "application/x-ipynb+json",
    ".log": "text/plain; charset=utf-8",
    ".sqlite": "application/vnd.sqlite3",
}


class DestinationError(Exception):
    """An output location that cannot be used (unreachable, no permission, a failed upload)."""


def is_remote(location: str | Path) -> bool:
    text = str(location)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # no leading or trailing '/'; "" is the bucket's root

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"

    @property
    def folder_prefix(self) -> str:
        """The key prefix of everything under this location seen as a folder."""
        return f"{self.key}/" if self.key else ""


def parse_s3_url(text: str) -> S3Location:
    """``s3://bucket[/prefix]``. Raises ValueError saying what is wrong, never repeating the value (a
    pasted URL may carry something secret)."""
    if not text.startswith(S3_SCHEME):
        raise ValueError("an S3 location is s3://BUCKET[/PREFIX]")
    rest = text[len(S3_SCHEME) :]
    if any(c in rest for c in "?#\\") or any(ord(c) < 32 or ord(c) == 127 for c in rest):
        raise ValueError("an S3 location has no query, fragment, backslash or control character")
    bucket, _, key = rest.partition("/")
    if (
        not _BUCKET.match(bucket)
        or ".." in bucket
        or _IPV4.match(bucket)
        or bucket.startswith(("xn--", "sthree-"))
        or bucket.endswith(("-s3alias", "--ol-s3"))
    ):
        raise ValueError(
            "the bucket name must be 3-63 lowercase letters, digits, '.' or '-', begin and end with a "
            "letter or digit, and not look like an IP address (S3 bucket naming rules)"
        )
    key = key.rstrip("/")
    if key and any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError("the prefix has an empty, '.' or '..' path segment")
    if len(key.encode()) > 800:  # leaves room for run folder and file names within S3's 1024-byte keys
        raise ValueError("the prefix is longer than 800 bytes")
    return S3Location(bucket, key)


def default_s3_client() -> Any:
    """boto3's own configuration chain (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3, IRSA or Pod Identity),
    not the parameters' ``aws`` section: ``runbook report`` reaches the same bucket without parameters."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})
    )


class S3Folder:
    """Objects under an ``s3://bucket/prefix`` location, through boto3. S3 has no folders: ``makedirs``
    does nothing and a "folder" exists when a key lies under it."""

    def __init__(self, client_factory: Callable[[], Any] = default_s3_client) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def reset(self) -> None:
        """Forget the client (a test that changes the endpoint, a fork)."""
        with self._lock:
            self._client = None

    @staticmethod
    def _missing(err: Exception) -> bool:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def write_bytes(
        self, location: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        """PUT one object; with ``if_match`` (an ETag) or ``if_absent``, a conditional write that fails with
        ``PreconditionFailed`` when another writer got there first. Returns the new ETag."""
        loc = parse_s3_url(location)
        extra: dict[str, str] = {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        elif if_absent:
            extra["IfNoneMatch"] = "*"
        suffix = Path(loc.key).suffix
        content_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")
        answer = self.client.put_object(
            Bucket=loc.bucket, Key=loc.key, Body=data, ContentType=content_type, **extra
        )
        return str(answer.get("ETag", ""))

    def write_text(self, location: str, text: str) -> None:
        self.write_bytes(location, text.encode("utf-8"))

    def read_bytes(self, location: str) -> tuple[bytes, str]:
        """The object's content and ETag; FileNotFoundError when there is none."""
        loc = parse_s3_url(location)
        try:
            answer = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as err:
            if self._missing(err):
                raise FileNotFoundError(f"no object {loc.url}") from None
            raise
        return answer["Body"].read(), str(answer.get("ETag", ""))

    def read_text(self, location: str) -> str:
        return self.read_bytes(location)[0].decode("utf-8")

    def exists(self, location: str) -> bool:
        loc = parse_s3_url(location)
        if loc.key:
            try:
                self.client.head_object(Bucket=loc.bucket, Key=loc.key)
                return True
            except Exception as err:
                if not self._missing(err):
                    raise
        answer = self.client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.folder_prefix, MaxKeys=1)
        return bool(answer.get("KeyCount"))

    def listdir(self, location: str) -> list[str]:
        loc = parse_s3_url(location)
        names: set[str] = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=loc.folder_prefix, Delimiter="/"
        )
        start = len(loc.folder_prefix)
        for page in pages:
            names.update(p["Prefix"][start:].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][start:] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def makedirs(self, location: str) -> None:
        parse_s3_url(location)

    def probe(self, location: str) -> None:
        """One listing under the location: says before a run whether the bucket answers and may be read."""
        from botocore.exceptions import BotoCoreError, ClientError

        loc = parse_s3_url(location)
        try:
            self.client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.folder_prefix, MaxKeys=1)
        except ClientError as err:
            error = err.response.get("Error", {})
            raise DestinationError(
                f"{loc.url}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
            ) from None
        except BotoCoreError as err:
            raise DestinationError(f"{loc.url}: {type(err).__name__}: {err}") from None


S3 = S3Folder()
DESTINATIONS.register(S3_SCHEME, S3)


def _precondition_failed(err: Exception) -> bool:
    code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class StagedOutput:
    """A remote output location written through a local folder.

    The run folder is written (redacted, through ``redact_io``) into a local staging folder first, since
    papermill saves a notebook after every cell and stages write their own files beside it; ``push_run``
    then uploads what changed, scrubbing every text file once more on the way and refusing any file,
    binary ones too, in which a registered secret still shows.

    The history store (SQLite, ``history.sqlite`` beside the run folders) cannot be appended to in S3.
    ``pull_history`` downloads it into the staging folder before the run, where the verify stage finds it
    beside its run folder as usual; ``push_history`` merges this run's rows into the newest copy in S3 and
    writes it back conditioned on the ETag it read (``If-Match``, or ``If-None-Match: *`` for the first
    one). Two writers, on one machine or on two: the second PUT fails with 412, and that writer downloads
    the other's copy and merges again, so no run's rows are lost (up to ``HISTORY_ATTEMPTS`` rounds).
    """

    HISTORY_ATTEMPTS = 8

    def __init__(self, remote: str, handler: S3Folder | None = None) -> None:
        self.remote = parse_s3_url(remote).url
        self.handler = handler or S3
        self.root = Path(tempfile.mkdtemp(prefix="runbook-output-"))
        self._sent: dict[str, str] = {}  # remote location -> sha256 of the bytes sent
        self._history_runs: set[str] = set()

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY

    def check(self) -> None:
        self.handler.probe(self.remote)

    def run_exists(self, run_id: str) -> bool:
        return (self.root / run_id).exists() or self.handler.exists(join(self.remote, run_id))

    def pull_history(self) -> bool:
        """Download the history store, if there is one, into the staging folder."""
        try:
            data, _ = self.handler.read_bytes(join(self.remote, HISTORY))
        except FileNotFoundError:
            return False
        self.history_path.write_bytes(data)
        self._history_runs = _run_ids(self.history_path)
        return True

    def push_run(self, run_id: str) -> list[str]:
        """Upload the run folder's new or changed files; returns the files refused (a secret showed)."""
        from runbook_lib.secrets import REDACTOR

        refused = []
        folder = self.root / run_id
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            rel = path.relative_to(self.root).as_posix()
            location = join(self.remote, rel)
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                if REDACTOR.scrub(data.decode("latin-1")) != data.decode("latin-1"):
                    refused.append(rel)
                    continue
            else:
                data = REDACTOR.scrub(text).encode("utf-8")
            digest = hashlib.sha256(data).hexdigest()
            if self._sent.get(location) == digest:
                continue
            self.handler.write_bytes(location, data)
            self._sent[location] = digest
        return refused

    def push_history(self) -> bool:
        """Merge the runs this process added to the staged history into the one in S3 (see the class
        docstring); False when there was nothing to add."""
        if not self.history_path.is_file():
            return False
        new = _run_ids(self.history_path) - self._history_runs
        if not new:
            return False
        location = join(self.remote, HISTORY)
        for _ in range(self.HISTORY_ATTEMPTS):
            try:
                current, etag = self.handler.read_bytes(location)
            except FileNotFoundError:
                current, etag = None, None
            merged = self.root / f".{HISTORY}.merge"
            merged.unlink(missing_ok=True)
            if current is None:
                shutil.copyfile(self.history_path, merged)
            else:
                merged.write_bytes(current)
                _merge_runs(merged, self.history_path, new)
            try:
                self.handler.write_bytes(location, merged.read_bytes(), if_match=etag, if_absent=etag is None)
            except Exception as err:
                if _precondition_failed(err):
                    continue  # another writer went first: merge into its copy
                raise
            self._history_runs |= new
            return True
        raise DestinationError(f"{location}: still contended after {self.HISTORY_ATTEMPTS} merges")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _run_ids(db_path: Path) -> set[str]:
    db = sqlite3.connect(db_path)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone():
            return set()
        return {str(r[0]) for r in db.execute("SELECT run_id FROM runs")}
    finally:
        db.close()


def _merge_runs(into: Path, source: Path, run_ids: set[str]) -> None:
    """Copy the rows of ``run_ids`` from every table of ``source`` with a run_id column into ``into``
    (tables it lacks are created as in ``source``), replacing rows of the same runs."""
    db = sqlite3.connect(into)
    try:
        db.execute("ATTACH DATABASE ? AS src", (str(source),))
        ids = sorted(run_ids)
        marks = ",".join("?" * len(ids))
        tables = db.execute("SELECT name, sql FROM src.sqlite_master WHERE type='table'").fetchall()
        have = {r[0] for r in db.execute("SELECT name FROM main.sqlite_master WHERE type='table'")}
        with db:
            for name, sql in tables:
                if name not in have:
                    db.execute(sql)
            # runs first: the others refer to it
            for name, _sql in sorted(tables, key=lambda t: t[0] != "runs"):
                columns = [r[1] for r in db.execute(f'PRAGMA src.table_info("{name}")')]
                if "run_id" not in columns:
                    continue
                cols = ", ".join(f'"{c}"' for c in columns)
                db.execute(f'DELETE FROM main."{name}" WHERE run_id IN ({marks})', ids)
                db.execute(
                    f'INSERT INTO main."{name}" ({cols}) SELECT {cols} FROM src."{name}" '
                    f"WHERE run_id IN ({marks})",
                    ids,
                )
        db.execute("DETACH DATABASE src")
    finally:
        db.close()
