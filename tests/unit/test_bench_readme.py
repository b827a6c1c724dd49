"""The README's Performance section is generated from bench/results.json, never edited by hand."""

from __future__ import annotations

import json

from bench.readme import BEGIN, END, REPO, RESULTS, section, update_readme


def test_readme_section_matches_results_json() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    results = json.loads(RESULTS.read_text())
    assert section(results) in readme, "README Performance section is stale: run python -m bench.readme"


def test_update_replaces_only_the_section(tmp_path) -> None:
    results = json.loads(RESULTS.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{BEGIN}\nhand-edited\n{END}\nafter\n")
    out = update_readme(readme, results)
    assert out.startswith("before\n") and out.endswith("\nafter\n")
    assert "hand-edited" not in out and section(results) in out


def test_every_figure_says_how_it_stands() -> None:
    for fig in json.loads(RESULTS.read_text())["figures"]:
        assert fig["met"] is not None or fig["explanation"], fig["name"]
        assert fig["load_before"] is not None or fig["explanation"], fig["name"]
