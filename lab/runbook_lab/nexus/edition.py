"""Which Nexus the emulator pretends to be: version and edition, and the behaviours that hang on them.

Version facts (sonatype/nexus-public release tags; tests/data/reference/nexus/contract.json `versionNotes`):
message-object error bodies from
3.49, NexusAuthorizingRealm hidden from the realms API from 3.60, blob store checks from 3.68, the initial
password env var and `changepassword` status from 3.76, Community Edition + EULA from 3.77, docker
`pathEnabled` from 3.83, lowercase docker names from 3.89, `routingRuleName` in requests from 3.94.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EDITIONS = ("OSS", "COMMUNITY", "PRO")


@dataclass(frozen=True)
class Release:
    text: str  # as configured, e.g. "3.94.0-01"
    parts: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> Release:
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-(\d+))?", text.strip())
        if not m:
            raise ValueError(f"not a Nexus version (expected e.g. 3.94.0-01): {text!r}")
        return cls(text.strip(), (int(m[1]), int(m[2]), int(m[3])))

    def at_least(self, spec: str) -> bool:
        want = tuple(int(p) for p in spec.split("."))
        return self.parts[: len(want)] >= want


def default_edition(release: Release) -> str:
    """OSS up to 3.76; the free edition is called COMMUNITY from 3.77 (nexus-public#651 Server header)."""
    return "COMMUNITY" if release.at_least("3.77") else "OSS"


def check_edition(edition: str) -> str:
    value = edition.strip().upper()
    if value not in EDITIONS:
        raise ValueError(f"edition must be one of {', '.join(EDITIONS)}, not {edition!r}")
    return value
