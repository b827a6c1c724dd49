"""A papermill engine that saves the running notebook at most every ``SAVE_EVERY_S`` seconds.

papermill saves the output notebook at the start and the end of every cell, markdown cells included
(``papermill/engines.py``: ``NotebookExecutionManager.cell_start`` / ``cell_complete``), and each save
serializes the whole notebook and passes it through the redactor: about 2 saves x 13 ms per cell, most
of a short stage's own time (bench/stage_bench.py). Here the in-between saves are coalesced; the first
save and the final one (``notebook_complete``, which papermill calls whatever happened, in a
``finally``) always happen, so the run folder holds the whole executed notebook, and a killed run leaves
at most ``SAVE_EVERY_S`` of progress unsaved.
"""

from __future__ import annotations

from typing import Any

ENGINE = "runbook"
SAVE_EVERY_S = 2.0

_registered = False


def register_engine() -> None:
    """Register the engine with papermill under ``ENGINE`` (once per process)."""
    global _registered
    if _registered:
        return
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class CoalescedSaves(NotebookExecutionManager):
        _saved = False
        _final = False

        def save(self, **kwargs: Any) -> None:
            due = (
                self.last_save_time is None
                or (self.now() - self.last_save_time).total_seconds() >= SAVE_EVERY_S
            )
            if self._final or not self._saved or due:
                super().save(**kwargs)
                self._saved = True

        def notebook_complete(self, **kwargs: Any) -> None:
            self._final = True  # papermill's final sync must never be coalesced away
            super().notebook_complete(**kwargs)

    class RunbookEngine(NBClientEngine):
        @classmethod
        def execute_notebook(
            cls,
            nb: Any,
            kernel_name: str,
            output_path: str | None = None,
            progress_bar: bool = True,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            **kwargs: Any,
        ) -> Any:
            nb_man = CoalescedSaves(
                nb,
                output_path=output_path,
                progress_bar=progress_bar,
                log_output=log_output,
                autosave_cell_every=autosave_cell_every,
            )
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(ENGINE, RunbookEngine)
    _registered = True
