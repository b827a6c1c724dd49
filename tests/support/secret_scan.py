"""Scan files and text for secret values in every encoding a leak could take (issue #11 part 5).

Independent of the runbook's redactor (runbook_lib.secrets.Redactor): the forms are derived here, so a form
the redactor forgets is a finding, not a blind spot shared by product and test. A value is looked for as:
plain text, base64 (standard and URL-safe, padded or not, and at the two other byte alignments, as when it
sits inside a longer base64 blob such as EC2 userData), percent-encoded (quote and quote_plus), JSON-escaped,
HTML-escaped, hex (lower and upper case), and for each of its users ``base64(user:password)`` as in an HTTP
Basic header or a docker config ``auth``. Files are read as bytes; SQLite files are also dumped row by row,
since a long value may be split across overflow pages.
"""

from __future__ import annotations

import base64
import html
import json
import sqlite3
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Secret:
    name: str  # what it is, e.g. "nexus admin password" (never the value)
    value: str
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    where: str  # file path (or the label of a text)
    secret: str  # Secret.name
    encoding: str

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} ({self.encoding})"


def _b64_shifted(raw: bytes, shift: int, alphabet: str) -> str:
    """The base64 characters that encode only `raw` when `shift` bytes precede it in a longer blob."""
    enc = base64.b64encode(b"\0" * shift + raw)
    if alphabet == "urlsafe":
        enc = enc.replace(b"+", b"-").replace(b"/", b"_")
    text = enc.decode().rstrip("=")
    head = {0: 0, 1: 2, 2: 3}[shift]  # characters that still carry prefix bits
    tail = (shift + len(raw)) % 3  # the last group is partial: its final character carries padding bits
    return text[head : len(text) - (1 if tail else 0)]


def encodings(secret: Secret) -> dict[str, str]:
    """Encoding name -> the text that encoding produces for the secret."""
    value, raw = secret.value, secret.value.encode()
    forms = {
        "plain": value,
        "base64": base64.b64encode(raw).decode(),
        "base64 urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64 shifted by 1": _b64_shifted(raw, 1, "std"),
        "base64 shifted by 2": _b64_shifted(raw, 2, "std"),
        "base64 urlsafe shifted by 1": _b64_shifted(raw, 1, "urlsafe"),
        "base64 urlsafe shifted by 2": _b64_shifted(raw, 2, "urlsafe"),
        "percent-encoded": urllib.parse.quote(value, safe=""),
        "form-encoded": urllib.parse.quote_plus(value),
        "JSON-escaped": json.dumps(value)[1:-1],
        "JSON-escaped ASCII": json.dumps(value, ensure_ascii=True)[1:-1],
        "HTML-escaped": html.escape(value, quote=True),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }
    for user in secret.users:
        pair = f"{user}:{value}".encode()
        forms[f"base64({user}:password)"] = base64.b64encode(pair).decode()
        forms[f"base64url({user}:password)"] = base64.urlsafe_b64encode(pair).decode()
        forms[f"base64({user}:password) unpadded"] = base64.b64encode(pair).decode().rstrip("=")
    return forms


class Scanner:
    def __init__(self, secrets: Iterable[Secret]) -> None:
        self.secrets = list(secrets)
        short = [s.name for s in self.secrets if len(s.value) < 8]
        if short:  # a short value would match ordinary text and prove nothing
            raise ValueError(f"secret values too short to scan for: {', '.join(short)}")
        self._forms = [
            (s.name, enc, form.encode()) for s in self.secrets for enc, form in encodings(s).items()
        ]
        self.scanned: list[Path] = []

    def scan_bytes(self, data: bytes, where: str) -> list[Finding]:
        """One finding per secret present, naming every encoding it was found in."""
        found: dict[str, list[str]] = {}
        for name, enc, form in self._forms:
            if form in data:
                found.setdefault(name, []).append(enc)
        return [Finding(where, name, ", ".join(encs)) for name, encs in found.items()]

    def scan_text(self, text: str, where: str) -> list[Finding]:
        return self.scan_bytes(text.encode("utf-8", "surrogateescape"), where)

    def scan_file(self, path: Path) -> list[Finding]:
        data = path.read_bytes()
        self.scanned.append(path)
        findings = self.scan_bytes(data, str(path))
        if data.startswith(SQLITE_MAGIC):
            findings += self.scan_text(sqlite_dump(path), f"{path} (rows)")
        return findings

    def scan_tree(
        self, root: Path, include: Iterable[str] = ("**/*",), exclude: Iterable[str] = ()
    ) -> list[Finding]:
        """Every regular file under root matching one of `include` and none of `exclude` (glob patterns)."""
        skipped = {p for pattern in exclude for p in root.glob(pattern)}
        files = sorted(
            {p for pattern in include for p in root.glob(pattern) if p.is_file() and not p.is_symlink()}
        )
        out: list[Finding] = []
        for path in files:
            if path in skipped or any(parent in skipped for parent in path.parents):
                continue
            out += self.scan_file(path)
        return out


def sqlite_dump(path: Path) -> str:
    """Every row of every table as text (read-only; the store may be in use)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()
