"""Nexus version and edition, read from the `Server` header every response carries.

Examples seen in the wild: ``Nexus/3.42.0-01 (OSS)`` and ``Nexus/3.80.0-06 (COMMUNITY)``
(nexus-public#651); the edition is COMMUNITY from 3.77 on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SERVER = re.compile(r"Nexus/(?P<version>\d+\.\d+\.\d+(?:-\d+)?)\s*\((?P<edition>[A-Z]+)\)")


@dataclass(frozen=True, order=True)
class NexusVersion:
    major: int
    minor: int
    patch: int
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> NexusVersion:
        m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:-(\d+))?$", text.strip())
        if not m:
            raise ValueError(f"not a Nexus version: {text!r}")
        return cls(*(int(g) if g else 0 for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.build:02d}" if self.build else "")


@dataclass(frozen=True)
class ServerInfo:
    version: NexusVersion
    edition: str  # OSS, COMMUNITY or PRO


def parse_server_header(value: str | None) -> ServerInfo | None:
    if not value:
        return None
    m = _SERVER.search(value)
    if not m:
        return None
    return ServerInfo(NexusVersion.parse(m["version"]), m["edition"])
