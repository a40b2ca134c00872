"""identity_match's match metric: one decision, counted per key type."""

from __future__ import annotations

from services.identity_match.agents import count_match_decisions
from shared.contract.records import Send
from shared.runtime.metrics import Metrics


def count(metrics: Metrics, key_type: str, outcome: str) -> float:
    labels = {"key_type": key_type, "outcome": outcome}
    return metrics.registry.get_sample_value("convmesh_match_outcomes_total", labels) or 0.0


def test_an_assignment_is_a_match_of_its_key_type() -> None:
    metrics = Metrics()
    retract = Send("attribution.assignments", "u-1", {"op": "retract", "conversion_key": "k"})
    assign = Send("attribution.assignments", "u-2", {"op": "assign", "key_type": "em"})
    count_match_decisions(metrics, [retract, assign])
    assert count(metrics, "em", "matched") == 1


def test_an_unidentified_result_is_counted_as_such() -> None:
    metrics = Metrics()
    result = Send("attribution.results", "k", {"status": "unidentified", "reason": "no_match"})
    count_match_decisions(metrics, [result])
    assert count(metrics, "none", "unidentified") == 1


def test_other_sends_are_no_decision() -> None:
    metrics = Metrics()
    count_match_decisions(metrics, [Send("identity.lookups", "id", {"op": "lookup"})])
    assert metrics.registry.get_sample_value("convmesh_match_outcomes_total") is None
