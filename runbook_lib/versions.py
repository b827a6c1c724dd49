"""One parser for the release versions the runbook compares (Karpenter, Bottlerocket, containerd)."""

from __future__ import annotations

import re


def numeric_release(text: str) -> tuple[int, ...]:
    """``v1.14.1``, ``1.7.27-1``, ``1.6.2~rc1`` or ``2.0.0+azure`` -> its numeric core: (1, 14, 1), (1, 7,
    27) ...

    Pre-release and build suffixes are dropped: the runbook compares against released feature versions.
    """
    core = re.split(r"[-~+]", text.strip().lstrip("v"), maxsplit=1)[0]
    return tuple(int(p) for p in core.split("."))
