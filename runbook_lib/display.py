"""Tables for people: pandas DataFrames with the outcome column coloured and text left-aligned.

Used by every stage's `table()`; the runner's HTML report keeps the styling (the Styler renders to
HTML), so an operator reads ok / FAIL / create / update at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLOURS: Mapping[str, str] = {
    "ok": "#1a7f37",
    "warn": "#9a6700",
    "FAIL": "#cf222e",
    "unreachable (optional)": "#6e7781",
    "create": "#1a7f37",
    "update": "#9a6700",
    "delete": "#cf222e",
    "unchanged": "#6e7781",
}


def styled(rows: list[dict[str, Any]], column: str, colours: Mapping[str, str] = COLOURS) -> Any:
    """A Styler over *rows* whose *column* is coloured by value (bold unless it is a quiet value)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty or column not in df.columns:
        return df

    def colour(value: Any) -> str:
        c = colours.get(str(value))
        if not c:
            return ""
        weight = "normal" if value in ("unchanged", "unreachable (optional)") else "bold"
        return f"color: {c}; font-weight: {weight}"

    return (
        df.style.map(colour, subset=[column])
        .hide(axis="index")
        .set_properties(**{"text-align": "left"})
        .set_table_styles([{"selector": "th", "props": [("text-align", "left")]}])
    )
