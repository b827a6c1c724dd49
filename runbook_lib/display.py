"""Tables for people: HTML in JupyterLab and in the runner's reports, aligned text everywhere else, with the
outcome column coloured (ok / FAIL / create / update readable at a glance) and text left-aligned.

Plain Python on purpose: the stages 0-4 show only tables, and importing pandas for them cost each stage's
kernel about half a second (bench/stage_bench.py). The verification stage's samples stay DataFrames.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
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
QUIET = frozenset({"unchanged", "unreachable (optional)"})
_CELL = "text-align: left; vertical-align: top; padding: 2px 8px"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class Table:
    """Rows (dicts, or sequences with ``columns``) shown as a table; ``colour`` names the outcome column."""

    def __init__(
        self,
        rows: Iterable[Mapping[str, Any] | Sequence[Any]],
        columns: Sequence[str] | None = None,
        colour: str | None = None,
        colours: Mapping[str, str] = COLOURS,
    ) -> None:
        rows = list(rows)
        if columns is None:
            columns = list(dict.fromkeys(k for r in rows if isinstance(r, Mapping) for k in r))
        self.columns = list(columns)
        self.rows = [
            dict(r) if isinstance(r, Mapping) else dict(zip(self.columns, r, strict=True)) for r in rows
        ]
        self.colour = colour
        self.colours = colours

    @property
    def empty(self) -> bool:
        return not self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self, orient: str = "records") -> list[dict[str, Any]]:
        if orient != "records":
            raise ValueError("only records")
        return [{c: r.get(c) for c in self.columns} for r in self.rows]

    def style_of(self, column: str, value: Any) -> str:
        """The CSS of one cell: the outcome column's known values in their colour, bold unless quiet."""
        colour = self.colours.get(_text(value)) if column == self.colour else None
        if not colour:
            return _CELL
        weight = "normal" if _text(value) in QUIET else "bold"
        return f"{_CELL}; color: {colour}; font-weight: {weight}"

    def to_html(self) -> str:
        head = "".join(f'<th style="{_CELL}">{html.escape(c)}</th>' for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="{self.style_of(c, r.get(c))}">{html.escape(_text(r.get(c)))}</td>'
                for c in self.columns
            )
            + "</tr>"
            for r in self.rows
        )
        return f'<table class="runbook-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_string(self) -> str:
        cells = [self.columns] + [
            [_text(r.get(c)).replace("\n", " ") for c in self.columns] for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        return "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
        )

    def __repr__(self) -> str:
        return self.to_string() if self.columns else "(no rows)"


def table(rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str] | None = None) -> Table:
    return Table(rows, columns)


def styled(rows: list[dict[str, Any]], column: str, colours: Mapping[str, str] = COLOURS) -> Table:
    """A table of *rows* whose *column* is coloured by value (bold unless it is a quiet value)."""
    return Table(rows, colour=column, colours=colours)
