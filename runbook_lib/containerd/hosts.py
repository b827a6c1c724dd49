"""Render containerd `hosts.toml` files: one per upstream registry, pointing at its mirror endpoint.

Rendered with a TOML writer from a dict, never by string templating, so a file can never carry a
duplicated table or key. containerd does not use such a file: it logs the error `failed to decode
hosts.toml` (with the TOML library's reason) and falls back to the certificate files in that folder, so
every pull of that registry goes to the upstream (loadHostDir in remotes/docker/config/hosts.go, 1.x;
core/remotes/docker/config/hosts.go, 2.x). Pulls still work while the upstream answers, so only
containerd's log shows the mirror is unused. Facts (containerd docs/hosts.md, at v1.6.38, v1.7.34, main):
- `server` is the upstream, tried last; `[host."<mirror>"]` entries are tried first, in file order;
- `capabilities = ["pull", "resolve"]`: without `resolve`, tags are still looked up upstream;
- a mirror URL with a path (Nexus `/repository/<name>`) needs `/v2` and `override_path = true`;
- `dial_timeout` (how long a dial to that host may take; default 30 s, paid per request when the host
  is black-holed, containerd/containerd#10660) is read from containerd 2.1.0 (containerd/containerd#11106)
  and 2.0.7 (the release/2.0 backport, containerd/containerd#12136). Older ones ignore the key: 1.6/1.7
  decode with go-toml v1's non-strict `Unmarshal`, 2.0.0-2.0.6 with go-toml v2's, neither rejects an
  unknown key (checked with the real containerd 1.6.20 in tests/integration/test_node_boot_mirror_down.py).
  A file for a known version carries it only where it is read; a file rendered without a version (the
  userData's: the node decides at boot from `containerd --version`) carries it;
- containerd below 2.0 rejects a file without any `[host]` table ("failed to decode hosts.toml" error=
  "invalid `host` tree", containerd/containerd#10027, reported on 1.7 and seen on 1.6; the fix,
  containerd/containerd#10028, is a 1.7 backport only, and 2.0's newer TOML library never had the bug):
  an empty `[host]` table works around it on every containerd below 2.0;
- write the header key as `Authorization` (canonical case), or HTTP/1.1 may carry two.
"""

from __future__ import annotations

import base64
import tomllib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import tomli_w

from runbook_lib.versions import numeric_release

CAPABILITIES = ("pull", "resolve")


@dataclass(frozen=True)
class ContainerdVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> ContainerdVersion:
        parts = list(numeric_release(text)[:3])
        while len(parts) < 3:
            parts.append(0)
        return cls(*parts)

    def supports_dial_timeout(self) -> bool:
        return (self.major, self.minor, self.patch) >= (2, 0, 7)

    def needs_empty_host_table(self) -> bool:
        # every 1.x: containerd/containerd#10027 (1.7, also 1.6); 2.0 parses a file without [host]
        return self.major < 2


@dataclass
class MirrorHost:
    url: str
    capabilities: tuple[str, ...] = CAPABILITIES
    ca: list[str] = field(default_factory=list)
    skip_verify: bool = False
    dial_timeout: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def normalized(self) -> tuple[str, bool]:
        """(URL, override_path). A path-style endpoint gets an explicit /v2 and override_path."""
        parts = urlsplit(self.url.rstrip("/"))
        path = parts.path
        if not path:
            return urlunsplit((parts.scheme, parts.netloc, "", "", "")), False
        if not path.endswith("/v2"):
            path = f"{path}/v2"
        return urlunsplit((parts.scheme, parts.netloc, path, "", "")), True

    def table(self) -> dict:
        url, override = self.normalized()
        t: dict = {"capabilities": list(self.capabilities)}
        if self.ca:
            t["ca"] = self.ca[0] if len(self.ca) == 1 else list(self.ca)
        if self.skip_verify:
            t["skip_verify"] = True
        if override:
            t["override_path"] = True
        if self.dial_timeout:
            t["dial_timeout"] = self.dial_timeout
        if self.headers:
            t["header"] = dict(self.headers)
        return {url: t}


@dataclass
class HostsToml:
    """The hosts.toml of one registry namespace (the folder name under certs.d)."""

    namespace: str
    server: str
    mirrors: list[MirrorHost] = field(default_factory=list)
    containerd: ContainerdVersion | None = None

    @property
    def relative_path(self) -> PurePosixPath:
        return PurePosixPath(self.namespace) / "hosts.toml"

    def document(self) -> dict:
        doc: dict = {"server": self.server}
        hosts: dict = {}
        for mirror in self.mirrors:
            # unknown version: kept (the boot script drops it on a node below 2.0.7; harmless where unread)
            if mirror.dial_timeout and self.containerd and not self.containerd.supports_dial_timeout():
                mirror = MirrorHost(
                    mirror.url, mirror.capabilities, mirror.ca, mirror.skip_verify, None, mirror.headers
                )
            hosts.update(mirror.table())
        if hosts:
            doc["host"] = hosts
        elif self.containerd is None or self.containerd.needs_empty_host_table():
            doc["host"] = {}  # containerd < 2.0: a file with no [host] table is rejected (#10027)
        return doc

    def render(self) -> str:
        # ASCII only: the file travels inside a us-ascii userData part (stage 4)
        header = f"# containerd registry hosts for {self.namespace} - written by eks-mirror-runbook\n"
        return header + tomli_w.dumps(self.document())


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse(text: str) -> dict:
    """Parse a hosts.toml back (raises tomllib.TOMLDecodeError on what containerd would also reject)."""
    return tomllib.loads(text)


def validate(text: str) -> list[str]:
    """Problems containerd would have with this file (it would ignore the file silently)."""
    try:
        doc = parse(text)
    except tomllib.TOMLDecodeError as err:
        return [f"not valid TOML: {err}"]
    problems = []
    if not isinstance(doc.get("server", ""), str):
        problems.append("server must be a string")
    hosts = doc.get("host", None)
    if hosts is None:
        problems.append("no [host] table (containerd below 2.0 rejects the file: #10027)")
    elif isinstance(hosts, dict):
        for url, table in hosts.items():
            if not isinstance(table, dict):
                continue
            caps = table.get("capabilities", list(CAPABILITIES))
            unknown = set(caps) - {"pull", "resolve", "push", "referrers"}
            if unknown:
                problems.append(f"{url}: unknown capabilities {sorted(unknown)}")
            if "resolve" not in caps:
                problems.append(f"{url}: without 'resolve', tags are looked up upstream")
            path = urlsplit(url).path
            if table.get("override_path") and not path.endswith("/v2"):
                problems.append(f"{url}: override_path without /v2 sends requests to the wrong path")
            header = table.get("header", {})
            if any(k.lower() == "authorization" and k != "Authorization" for k in header):
                problems.append(f"{url}: write the header key as 'Authorization'")
    return problems
