"""shared.values.value_class: a frozen dataclass for mypy, a cheap one at run time."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from shared.runtime.settings import REPO_ROOT
from shared.values import value_class


@value_class(frozen=True, slots=True)
class Point:
    x: int
    y: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenPoint:
    x: int
    y: str | None = None


def test_equal_values_are_equal_and_hash_alike() -> None:
    assert Point(1, "a") == Point(1, "a") != Point(2, "a")
    assert len({Point(1, "a"), Point(1, "a"), Point(1, None)}) == 2


def test_a_value_hashes_as_the_frozen_dataclass_would() -> None:
    assert hash(Point(3, "b")) == hash(FrozenPoint(3, "b"))


def test_replace_makes_a_new_value_and_leaves_the_old_one() -> None:
    before = Point(1, "a")
    after = dataclasses.replace(before, y="b")
    assert (before, after) == (Point(1, "a"), Point(1, "b"))


def test_values_have_slots_not_a_dict() -> None:
    assert not hasattr(Point(1), "__dict__")
    assert Point.__slots__ == ("x", "y")


def test_mypy_refuses_an_assignment_to_a_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run time no longer refuses it: the type check is what keeps values immutable."""
    monkeypatch.chdir(REPO_ROOT)  # mypy finds ``shared`` from the repository's root
    snippet = tmp_path / "assigns.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from shared.values import value_class

            @value_class(frozen=True, slots=True)
            class Point:
                x: int

            Point(1).x = 2
            """
        )
    )
    out, _, status = mypy_api.run(
        ["--no-incremental", "--config-file", str(REPO_ROOT / "pyproject.toml"), str(snippet)]
    )
    assert status == 1
    assert 'Property "x" defined in "Point" is read-only' in out


@pytest.mark.parametrize("frozen", [False, True])
def test_a_value_class_is_a_dataclass(frozen: bool) -> None:
    @value_class(frozen=frozen, slots=True)
    class Pair:
        a: int
        b: int

    assert [f.name for f in dataclasses.fields(Pair)] == ["a", "b"]


def test_bare_value_class_is_a_plain_dataclass() -> None:
    @value_class
    class Plain:
        a: int

    assert Plain(1) == Plain(1) and Plain.__hash__ is None  # like @dataclass


def test_a_value_without_eq_keeps_the_identity_hash_as_a_frozen_one_would() -> None:
    @value_class(frozen=True, eq=False, slots=True)
    class Token:
        a: int

    assert Token.__hash__ is object.__hash__
    assert Token(1) != Token(1)
