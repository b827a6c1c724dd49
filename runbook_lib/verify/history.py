"""Trend store: each verification run appends its medians and headline figures to one SQLite file.

Where: ``outputs.history`` if set, else ``<outputs.dir>/history.sqlite`` — beside the run folders, so the
trend survives as long as the audit records do. SQLite because it ships with Python, takes concurrent
readers, and a half-written run cannot corrupt earlier ones (one transaction per run). A run appended twice
(same run id) replaces its rows.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from runbook_lib.params import RunbookParams

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, target TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS medians (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    scope TEXT NOT NULL, pool TEXT NOT NULL DEFAULT '', image TEXT NOT NULL, label TEXT NOT NULL,
    median_s REAL, n INTEGER);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS runs_target ON runs(target, at);
"""


def path_for(params: RunbookParams, run_dir: Path | None = None) -> Path:
    """`outputs.history` when set; else beside the run folders of this run (which `--output-dir` may
    have moved away from `outputs.dir`), so the trend follows the runs it describes."""
    explicit = params.path(params.outputs.history)
    if explicit is not None:
        return explicit
    if run_dir is not None and run_dir.parent.is_dir():
        return run_dir.parent / "history.sqlite"
    base = params.path(params.outputs.dir)
    assert base is not None
    return base / "history.sqlite"


class HistoryStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
            with db:  # one transaction
                yield db
        finally:
            db.close()

    def append(
        self,
        run_id: str,
        target: str,
        medians: list[dict[str, Any]],
        metrics: dict[str, float | None],
        at: dt.datetime | None = None,
    ) -> None:
        """medians: [{scope, pool, image, label, median_s, n}]; metrics: name -> value (None is skipped)."""
        when = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            db.execute("INSERT INTO runs (run_id, target, at) VALUES (?, ?, ?)", (run_id, target, when))
            db.executemany(
                "INSERT INTO medians (run_id, scope, pool, image, label, median_s, n) VALUES (?, ?, ?, ?, ?, "
                "?, ?)",
                [
                    (
                        run_id,
                        m["scope"],
                        m.get("pool") or "",
                        m["image"],
                        m["label"],
                        m.get("median_s"),
                        m.get("n"),
                    )
                    for m in medians
                ],
            )
            db.executemany(
                "INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                [(run_id, k, float(v)) for k, v in metrics.items() if v is not None],
            )

    def medians(self, target: str) -> pd.DataFrame:
        with self._db() as db:
            df = pd.read_sql_query(
                "SELECT r.run_id, r.at, m.scope, m.pool, m.image, m.label, m.median_s, m.n FROM medians m "
                "JOIN runs r USING (run_id) WHERE r.target = ? ORDER BY r.at, m.scope, m.pool, m.image, "
                "m.label",
                db,
                params=(target,),
            )
        df["at"] = pd.to_datetime(df["at"], utc=True)
        return df

    def metrics(self, target: str) -> pd.DataFrame:
        """One row per run, one column per metric name."""
        with self._db() as db:
            long = pd.read_sql_query(
                "SELECT r.run_id, r.at, x.name, x.value FROM metrics x JOIN runs r USING (run_id) "
                "WHERE r.target = ? ORDER BY r.at",
                db,
                params=(target,),
            )
        if long.empty:
            return pd.DataFrame(columns=["run_id", "at"])
        wide = long.pivot_table(index=["run_id", "at"], columns="name", values="value").reset_index()
        wide.columns.name = None
        wide["at"] = pd.to_datetime(wide["at"], utc=True)
        return wide.sort_values("at").reset_index(drop=True)

    def runs(self, target: str) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM runs WHERE target = ?", (target,)).fetchone()[0])
