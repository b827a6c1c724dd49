"""A stand-in for the notebook's StageContext where a test drives a stage's steps directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RecordingContext:
    """Keeps what a stage records, in order and by key (later records of a key replace earlier ones)."""

    apply: bool = False
    params: Any = None
    run_dir: Path | None = None
    api_client: Any = None
    resolve: Any = None
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def record(self, key: str, value: Any) -> None:
        self.calls.append((key, value))

    @property
    def records(self) -> dict[str, Any]:
        return dict(self.calls)
