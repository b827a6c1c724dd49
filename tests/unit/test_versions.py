"""The one release-version parser."""

from __future__ import annotations

import pytest

from runbook_lib.versions import numeric_release


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1.14.1", (1, 14, 1)),
        ("1.7.27-1", (1, 7, 27)),  # a distribution's package revision
        ("1.6.2~rc1", (1, 6, 2)),
        ("2.0.0+azure", (2, 0, 0)),
        (" 0.32 ", (0, 32)),
    ],
)
def test_numeric_core(text: str, expected: tuple[int, ...]) -> None:
    assert numeric_release(text) == expected


def test_a_short_version_sorts_as_its_release_line() -> None:
    assert numeric_release("0.33.5") < (0, 34) <= numeric_release("0.34.0")


def test_not_a_version_is_an_error() -> None:
    with pytest.raises(ValueError):
        numeric_release("latest")
