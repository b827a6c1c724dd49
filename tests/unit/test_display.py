"""Tables for people: the outcome column is coloured by value, the rest plain, everything left-aligned.

Read from the HTML the table renders (what JupyterLab and the runner's report show), not from its internals.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from runbook_lib.display import COLOURS, Table, styled, table
from runbook_lib.preflight import PreflightReport, Probe

_ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
_TD = re.compile(r'<td style="([^"]*)">([^<]*)</td>')


def _props(css: str) -> dict[str, str]:
    return dict(tuple(p.strip() for p in decl.split(":", 1)) for decl in css.split(";") if ":" in decl)


def cells(html: str) -> dict[tuple[int, int], tuple[dict[str, str], str]]:
    """(row, col) -> (CSS properties, text) of every body cell."""
    body = html.split("<tbody>", 1)[1]
    return {
        (r, c): (_props(css), text)
        for r, row in enumerate(_ROW.findall(body))
        for c, (css, text) in enumerate(_TD.findall(row))
    }


def cell_styles(html: str) -> dict[tuple[int, int], dict[str, str]]:
    return {k: v[0] for k, v in cells(html).items()}


def cell_texts(html: str) -> dict[tuple[int, int], str]:
    return {k: v[1] for k, v in cells(html).items()}


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


def test_every_cell_and_header_is_left_aligned_and_no_index() -> None:
    """Text is left-aligned in all cells and headers; there is no row index column."""
    styles, texts, html = render([{"a": "x", "status": "ok"}, {"a": "y", "status": "update"}], "status")
    assert set(texts) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(styles[cell]["text-align"] == "left" for cell in texts)
    headers = re.findall(r'<th style="([^"]*)">([^<]*)</th>', html)
    assert [h for _, h in headers] == ["a", "status"]
    assert all(_props(css)["text-align"] == "left" for css, _ in headers)


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
def test_empty_rows_or_missing_column_give_a_plain_table(rows: list[dict[str, Any]]) -> None:
    """Nothing to colour: a plain table of the rows, no error."""
    out = styled(rows, "status")
    assert isinstance(out, Table) and out.to_dict("records") == rows
    assert "color" not in out.to_html()


def test_values_are_escaped_and_the_text_form_is_aligned() -> None:
    """HTML in a value is shown, not interpreted; the text form lines the columns up."""
    out = table([{"name": "<b>x</b>", "n": 1}, {"name": "longer name", "n": None}])
    assert "&lt;b&gt;x&lt;/b&gt;" in out.to_html() and "<b>" not in out.to_html()
    lines = out.to_string().splitlines()
    assert lines[0].split() == ["name", "n"] and lines[1].startswith("<b>x</b>   ")
    assert lines[1].index("1") == lines[0].rindex("n")


def test_sequence_rows_take_the_column_names() -> None:
    out = table([("a", 1), ("b", 2)], ["key", "value"])
    assert out.to_dict("records") == [{"key": "a", "value": 1}, {"key": "b", "value": 2}]
    with pytest.raises(ValueError):
        table([("a", 1, 2)], ["key", "value"])


def test_preflight_table_colours_the_status_column() -> None:
    """A stage table (preflight) renders through styled(): a failed required endpoint's status is red."""
    report = PreflightReport([Probe("nexus", "n", True, ok=True), Probe("aws", "a", True, detail="down")])
    html = report.table().to_html()
    texts, styles = cell_texts(html), cell_styles(html)
    status_col = list(report.rows()[0]).index("status")
    assert texts[(1, status_col)] == "FAIL"
    assert styles[(1, status_col)]["color"] == COLOURS["FAIL"]
    assert styles[(0, status_col)]["color"] == COLOURS["ok"]
