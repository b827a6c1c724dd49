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

import contextlib
import functools
import threading
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


_RENDER_LOCK = threading.Lock()  # one exporter, one render at a time (the warm-up thread and the run)


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


def warm_up() -> threading.Thread:
    """Build the exporter and compile its templates in a thread while the first stage's kernel starts:
    on a cold process that is ~0.5 s of CPU the run would otherwise spend at its end, after the last
    stage. A render waits for it (one render at a time), and the exporter is built once.

    nbconvert is imported here, in the caller's thread: two threads importing modules of one import
    cycle at once (nbconvert and papermill share jupyter_client's) can be handed a half-initialised
    module, ``ImportError: ... partially initialized module`` (CPython per-module import locks,
    python/cpython#83065, fixed only in later Pythons by python/cpython#137196)."""
    import nbconvert  # noqa: F401 - see above
    import nbformat  # noqa: F401

    thread = threading.Thread(target=_warm, name="html-warm-up", daemon=True)
    thread.start()
    return thread


def _warm() -> None:
    import nbformat

    with contextlib.suppress(Exception):  # a report that cannot render is reported where it is rendered
        render_html(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("warm-up")]))


def render_html(nb: Any, title: str = "") -> str:
    """HTML for one notebook; the caller scrubs and writes it (``RedactedOutput``)."""
    import copy

    resources = {"metadata": {"name": title}} if title else None
    with _RENDER_LOCK:
        body, _ = _exporter().from_notebook_node(copy.deepcopy(nb), resources=resources)
    return body
