"""Render an executed stage notebook as a static HTML report for people who do not read code.

nbconvert's HTMLExporter with (nbconvert docs/source/removing_cells.rst, preprocessors/tagremove.py):
- ``exclude_input`` and no prompts: no code is shown, only markdown and outputs;
- ``TagRemovePreprocessor`` dropping the ``injected-parameters`` cell (and the ``parameters`` cell);
- ``ClearMetadataPreprocessor``: widget state (``metadata.widgets``) would otherwise be embedded in a
  ``<script type="application/vnd.jupyter.widget-state+json">`` with the widgets' values;
- our ``ReportCleanup``: drops record outputs and code cells that show nothing;
- ``embed_images`` so markdown images are inlined (output PNGs are data URIs already).
"""

from __future__ import annotations

import functools
from typing import Any

from runbook_lib.audit.record import RECORD_MIME

REMOVED_CELL_TAGS = {"injected-parameters", "parameters"}


def _report_cleanup_class() -> type:
    from nbconvert.preprocessors import Preprocessor

    class ReportCleanup(Preprocessor):
        """Remove record outputs and code cells left without any visible output."""

        def preprocess(self, nb: Any, resources: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            cells = []
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs = [
                        o for o in cell.get("outputs", []) if RECORD_MIME not in o.get("data", {})
                    ]
                    if not cell.outputs:
                        continue
                cells.append(cell)
            nb.cells = cells
            nb.metadata.pop("widgets", None)
            return nb, resources

    return ReportCleanup


@functools.cache
def _exporter() -> Any:
    """One exporter per process: each new HTMLExporter compiles its Jinja templates again (~0.25 s)."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = set(REMOVED_CELL_TAGS)
    config.ClearMetadataPreprocessor.enabled = True
    exporter = HTMLExporter(
        config=config,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.register_preprocessor(_report_cleanup_class(), enabled=True)
    return exporter


def render_html(nb: Any, title: str = "") -> str:
    """HTML for one notebook; the caller scrubs and writes it (``RedactedOutput``)."""
    import copy

    resources = {"metadata": {"name": title}} if title else None
    body, _ = _exporter().from_notebook_node(copy.deepcopy(nb), resources=resources)
    return body
