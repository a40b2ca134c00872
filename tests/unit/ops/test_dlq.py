"""`convmesh dlq`: grouping of recent rejects."""

from __future__ import annotations

import orjson
import pytest

from ops.dlq import group_rejects, parse_since_s
from shared.contract.errors import ConvmeshError


def dead(reason: str, offset: int, account: str = "1", message: str = "m") -> bytes:
    return orjson.dumps(
        {
            "reason": reason,
            "message": message,
            "source_topic": "conversions.raw",
            "partition": 0,
            "offset": offset,
            "ad_account_id": account,
            "raw": f'{{"offset":{offset}}}',
        }
    )


def test_since_accepts_seconds_minutes_hours_days() -> None:
    assert [parse_since_s(t) for t in ("90s", "15m", "1h", "7d")] == [90, 900, 3_600, 604_800]
    with pytest.raises(ConvmeshError):
        parse_since_s("yesterday")


def test_rejects_are_grouped_by_reason_most_frequent_first() -> None:
    rejects = group_rejects(
        [(dead("a", 1), 1), (dead("b", 2), 2), (dead("b", 3, account="2", message="late"), 3)]
    )
    [first, second] = rejects.ordered()
    assert (first.reason, first.count, first.accounts) == ("b", 2, {"1", "2"})
    assert first.message == "late" and first.example == '{"offset":3}'
    assert (second.reason, second.count) == ("a", 1)


def test_a_position_dead_lettered_twice_counts_once() -> None:
    rejects = group_rejects([(dead("a", 1), 1), (dead("a", 1), 2)])
    assert rejects.ordered()[0].count == 1


def test_reason_filter_keeps_only_that_reason() -> None:
    rejects = group_rejects([(dead("a", 1), 1), (dead("b", 2), 2)], reason="b")
    assert [g.reason for g in rejects.ordered()] == ["b"]
