"""The node preflight's look at the parts of a node class's userData that are not the runbook's: do they
write containerd's hosts.toml files too?

The manual way to set a mirror, found in many guides, is a shell step that appends with `tee -a` (or
`>>`). Run once on an empty directory it works; run beside the runbook's part, pasted twice, or over a
file the AMI ships, it leaves `server` and the `[host."..."]` tables twice in one file. TOML forbids a key
or table defined twice, so containerd cannot decode the file: it logs `failed to decode hosts.toml` and
pulls that registry from the upstream, and pulls keep working, so only containerd's log shows the mirror
is bypassed (`loadHostDir` in containerd's `remotes/docker/config/hosts.go`; toml.io v1.0.0, "Tables":
"you cannot define a table more than once"). A part that overwrites a file the runbook writes wins or
loses by part order: a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runbook_lib.karpenter import userdata
from runbook_lib.plan import Check

_PATH = r"['\"]?(/etc/containerd/certs\.d/[^\s'\";|&]+/hosts\.toml)"
APPEND = re.compile(r"(?:\btee\s+(?:-[a-zA-Z]*a[a-zA-Z]*|--append)\s+|>>\s*)" + _PATH)
OVERWRITE = re.compile(r"(?:\btee\s+|(?<![>&0-9])>\s*)" + _PATH)


@dataclass(frozen=True)
class Write:
    part: int  # 1-based position of the part in the userData
    path: str
    append: bool
    line: str


def foreign_writes(user_data: str) -> list[Write]:
    """Every write of a hosts.toml by a shell part of the userData that is not the runbook's."""
    found: list[Write] = []
    for i, part in enumerate(userdata.parts(user_data), 1):
        if part["ours"] or not part["content_type"].startswith("text/x-shellscript"):
            continue
        for line in part["body"].splitlines():
            text = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
            appended = {m.group(1) for m in APPEND.finditer(text)}
            found += [Write(i, p, True, line.strip()) for p in sorted(appended)]
            found += [
                Write(i, m.group(1), False, line.strip())
                for m in OVERWRITE.finditer(text)
                if m.group(1) not in appended
            ]
    return found


def checks(node_class: str, user_data: str) -> list[Check]:
    """One check per node class: fails when another part appends to a hosts.toml, warns when it
    overwrites one; nothing when no other part touches them."""
    writes = foreign_writes(user_data)
    if not writes:
        return []
    name = f"node class {node_class}: only the runbook's part writes containerd's hosts.toml"
    appends = [w for w in writes if w.append]
    if appends:
        paths = sorted({w.path for w in appends})
        twice = [p for p in paths if sum(w.path == p for w in appends) > 1]
        return [
            Check(
                name,
                False,
                f"userData part {appends[0].part} (not the runbook's) appends to "
                + ", ".join(paths)
                + f" (`{appends[0].line}`)"
                + (f"; {', '.join(twice)} is appended more than once" if twice else "")
                + ": written twice, a file holds `server` and its [host] tables twice, containerd fails "
                "to decode it (`failed to decode hosts.toml`) and pulls that registry from the upstream, "
                "bypassing the mirror; remove that step, the runbook's part writes every file whole",
            )
        ]
    paths = sorted({w.path for w in writes})
    return [
        Check.graded(
            name,
            "warn",
            f"userData part {writes[0].part} (not the runbook's) also writes {', '.join(paths)}: the part "
            "that runs last decides what the file says",
        )
    ]
