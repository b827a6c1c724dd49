"""JSON the way Nexus writes it: Jackson `INDENT_OUTPUT` with its DefaultPrettyPrinter.

Objects put one `"key" : value` per line indented by two spaces; arrays stay on one line as `[ a, b ]`
(their indenter is inline, so objects inside an array indent at the array's level); empty containers are
`{ }` and `[ ]`; nulls are written; non-ASCII is written as UTF-8, not escaped (NP
components/nexus-rest-jackson2/.../ObjectMapperProvider.java). Clients only need valid JSON; the shape
is kept so captured responses look like the real thing.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any, level: int = 0) -> str:
    if isinstance(value, dict):
        if not value:
            return "{ }"
        pad = "  " * (level + 1)
        lines = [
            f"{pad}{json.dumps(str(k), ensure_ascii=False)} : {dumps(v, level + 1)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n" + "  " * level + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[ ]"
        return "[ " + ", ".join(dumps(v, level) for v in value) + " ]"
    return json.dumps(value, ensure_ascii=False)
