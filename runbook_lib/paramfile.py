"""Byte-level reading of a parameters file: size, encoding, YAML nesting, aliases and duplicate keys.

PyYAML's safe_load merges duplicate keys silently (the last one wins), recurses without bound on deep
nesting and expands aliases; a parameters file needs none of that, so the file is composed to a node
tree first, checked, and only then constructed. Every problem is a (field path, reason) pair; no
reason quotes file content (a value where a secret reference belongs must never be echoed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # a parameters file is a few KiB
MAX_DEPTH = 32  # the schema nests 4 levels; YAML deeper than this is not a parameters file


class FileProblem(Exception):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and refuses aliases (no billion laughs)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise FileProblem(_line(mark), "YAML aliases (*name) are not accepted in parameters files")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise FileProblem(_line(mark), f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _duplicates(node: Node, path: str = "") -> None:
    """Raise on the first mapping key given twice, naming the field path and both lines."""
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None:
                if name in seen:
                    raise FileProblem(
                        _join(path, name),
                        f"duplicate key on line {key.start_mark.line + 1} "
                        f"(first on line {seen[name]}); YAML would keep only the last one",
                    )
                seen[name] = key.start_mark.line + 1
            _duplicates(value, _join(path, name if name is not None else "?"))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, _join(path, i))


def loads(raw: bytes) -> Any:
    """Decode and parse parameter bytes; raise FileProblem for anything that is not a clean YAML file."""
    if len(raw) > MAX_BYTES:
        raise FileProblem("(file)", f"larger than {MAX_BYTES} bytes: not a parameters file")
    if b"\x00" in raw:
        raise FileProblem("(file)", "contains NUL bytes: a binary file, not YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise FileProblem(
            f"line {line}", f"not UTF-8 text (undecodable byte at offset {err.start})"
        ) from None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader already refuses non-printable characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _duplicates(node)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or type(err).__name__
        raise FileProblem(_line(mark), f"not valid YAML: {problem}") from None
    except RecursionError:
        raise FileProblem("(file)", "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read(path: Path) -> Any:
    try:
        if path.is_dir():
            raise FileProblem("(file)", "is a directory, not a parameters file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise FileProblem("(file)", err.strerror or type(err).__name__) from None
    except ValueError:  # e.g. a NUL in the path
        raise FileProblem("(file)", "not a usable file path") from None
    return loads(raw)
