"""Tables for people: the outcome column is coloured by value, the rest plain, everything left-aligned.

Read from the HTML the Styler renders (what the runner's report shows), not from Styler internals.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from runbook_lib.display import COLOURS, styled
from runbook_lib.preflight import PreflightReport, Probe

_BLOCK = re.compile(r"([^{}]+)\{([^{}]*)\}")
_CELL = re.compile(r"_row(\d+)_col(\d+)$")
_TD = re.compile(r'<td id="[^"]*_row(\d+)_col(\d+)"[^>]*>([^<]*)</td>')


def cell_styles(html: str) -> dict[tuple[int, int], dict[str, str]]:
    """(row, col) -> CSS properties, from the <style> block pandas writes per cell id."""
    css = html.split("<style", 1)[1].split("</style>", 1)[0].split(">", 1)[1]
    out: dict[tuple[int, int], dict[str, str]] = {}
    for selectors, body in _BLOCK.findall(css):
        props = dict(tuple(p.strip() for p in decl.split(":", 1)) for decl in body.split(";") if ":" in decl)
        for sel in selectors.split(","):
            m = _CELL.search(sel.strip())
            if m:
                out.setdefault((int(m[1]), int(m[2])), {}).update(props)
    return out


def cell_texts(html: str) -> dict[tuple[int, int], str]:
    return {(int(r), int(c)): text for r, c, text in _TD.findall(html)}


def render(rows: list[dict[str, Any]], column: str, **kw: Any) -> tuple[dict, dict, str]:
    html = styled(rows, column, **kw).to_html()
    return cell_styles(html), cell_texts(html), html


def test_outcome_values_get_their_colour_and_weight() -> None:
    """Each known outcome is its colour; loud ones bold, quiet ones (unchanged, optional) normal weight."""
    values = list(COLOURS)
    styles, texts, _ = render([{"name": f"n{i}", "outcome": v} for i, v in enumerate(values)], "outcome")
    quiet = {"unchanged", "unreachable (optional)"}
    for row, value in enumerate(values):
        assert texts[(row, 1)] == value
        assert styles[(row, 1)]["color"] == COLOURS[value]
        assert styles[(row, 1)]["font-weight"] == ("normal" if value in quiet else "bold")


def test_fail_is_red_and_ok_is_green() -> None:
    """The colours an operator reads at a glance: FAIL and delete red, ok and create green, warn amber."""
    assert COLOURS["FAIL"] == COLOURS["delete"] == "#cf222e"
    assert COLOURS["ok"] == COLOURS["create"] == "#1a7f37"
    assert COLOURS["warn"] == COLOURS["update"] == "#9a6700"


def test_only_the_named_column_is_coloured() -> None:
    """A value like 'ok' in another column stays uncoloured; unknown outcome values stay uncoloured too."""
    styles, texts, _ = render(
        [{"note": "ok", "status": "FAIL"}, {"note": "FAIL", "status": "something else"}], "status"
    )
    assert texts[(0, 0)] == "ok" and "color" not in styles.get((0, 0), {})
    assert "color" not in styles.get((1, 0), {})
    assert styles[(0, 1)]["color"] == COLOURS["FAIL"]
    assert "color" not in styles.get((1, 1), {}) and "font-weight" not in styles.get((1, 1), {})


def test_every_cell_and_header_is_left_aligned_and_index_hidden() -> None:
    """Text is left-aligned in all cells and headers; the row index is not shown."""
    styles, texts, html = render([{"a": "x", "status": "ok"}, {"a": "y", "status": "update"}], "status")
    assert set(texts) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(styles[cell]["text-align"] == "left" for cell in texts)
    assert re.search(r"th\s*\{\s*text-align:\s*left;", html)
    assert "row_heading" not in html and "blank" not in html


def test_custom_colours_replace_the_defaults() -> None:
    """A caller's mapping decides the colours; values outside it (even 'ok') are plain."""
    styles, _, _ = render([{"s": "green-ish"}, {"s": "ok"}], "s", colours={"green-ish": "#00ff00"})
    assert styles[(0, 0)]["color"] == "#00ff00" and styles[(0, 0)]["font-weight"] == "bold"
    assert "color" not in styles.get((1, 0), {})


def test_non_string_values_are_matched_by_their_text() -> None:
    """Values are looked up by str(value): a numeric outcome can be coloured by its text."""
    styles, _, _ = render([{"code": 200}, {"code": 500}], "code", colours={"200": "#111111"})
    assert styles[(0, 0)]["color"] == "#111111"
    assert "color" not in styles.get((1, 0), {})


@pytest.mark.parametrize("rows", [[], [{"a": 1}]])
def test_empty_rows_or_missing_column_give_a_plain_dataframe(rows: list[dict[str, Any]]) -> None:
    """Nothing to colour: the rows come back as a plain DataFrame (no Styler, no error)."""
    out = styled(rows, "status")
    assert isinstance(out, pd.DataFrame)
    assert out.to_dict("records") == rows


def test_preflight_table_colours_the_status_column() -> None:
    """A stage table (preflight) renders through styled(): a failed required endpoint's status is red."""
    report = PreflightReport([Probe("nexus", "n", True, ok=True), Probe("aws", "a", True, detail="down")])
    html = report.table().to_html()
    texts, styles = cell_texts(html), cell_styles(html)
    status_col = list(report.rows()[0]).index("status")
    assert texts[(1, status_col)] == "FAIL"
    assert styles[(1, status_col)]["color"] == COLOURS["FAIL"]
    assert styles[(0, status_col)]["color"] == COLOURS["ok"]
