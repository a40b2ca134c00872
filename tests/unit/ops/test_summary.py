"""The demo / `convmesh summary` numbers (ops/summary.py)."""

from ops.summary import pipeline_summary, render, top_campaigns


def result(status, key_type=None, touch=None, reason=None):
    return {
        "status": status,
        "unidentified_reason": reason,
        "match": {"key_type": key_type, "user": "k0.x"} if key_type else None,
        "touch": {"type": touch} if touch else None,
    }


def summary(**overrides):
    args = dict(
        raw_received=5,
        accepted=[
            {"raw_ref": "r:0:1", "source": "api"},
            {"raw_ref": "r:0:2", "source": "tag"},
            {"raw_ref": "r:0:1", "source": "api"},
        ],  # a redelivery counts once
        duplicates=[{"raw_ref": "r:0:3", "source": "api"}],
        dlq=[
            {"source_topic": "conversions.raw", "partition": 0, "offset": 4, "reason": "x"},
            {"source_topic": "conversions.raw", "partition": 0, "offset": 5, "reason": "x"},
            {"source_topic": "ads.engagements", "partition": 0, "offset": 1, "reason": "y"},
        ],
        raw_topic="conversions.raw",
        attributed={
            "a": result("attributed", "em", "click"),
            "b": result("unidentified", reason="no_match"),
        },
        reports={},
    )
    args.update(overrides)
    return pipeline_summary(**args)


def test_counts_balance_and_redeliveries_count_once():
    events = summary()["events"]
    assert (events["accepted"], events["duplicates"], events["rejected"]) == (2, 1, 2)
    assert events["balanced"]
    assert events["by_source"]["api"] == {"accepted": 1, "duplicates": 1}


def test_unbalanced_counts_are_reported():
    assert not summary(raw_received=6)["events"]["balanced"]
    assert "NOT BALANCED" in render(summary(raw_received=6))


def test_match_rate_and_attribution_types():
    s = summary()
    assert s["match_rate_by_key_type"] == {"em": 0.5}
    assert s["attributed_by_type"] == {"click": 1, "engagement": 0, "view": 0}
    assert s["unidentified_reasons"] == {"no_match": 1}


def test_top_campaigns_sum_rows_and_skip_unattributed():
    rows = [
        {"ad_account_id": "1", "campaign_id": "c1", "conversions": 2, "value": {"USD": 0.1}},
        {"ad_account_id": "1", "campaign_id": "c1", "conversions": 1, "value": {"USD": 0.2}},
        {"ad_account_id": "1", "campaign_id": "c2", "conversions": 5, "value": {}},
        {"ad_account_id": "1", "campaign_id": None, "conversions": 9, "value": {}},
    ]
    assert top_campaigns(rows, 5) == [
        {"ad_account_id": "1", "campaign_id": "c2", "conversions": 5, "value": {}},
        {"ad_account_id": "1", "campaign_id": "c1", "conversions": 3, "value": {"USD": 0.3}},
    ]


def test_a_dead_letter_repeated_after_a_crash_counts_once():
    """The DLQ's dedup id is (source_topic, partition, offset) (docs/contracts.md)."""
    repeat = {"source_topic": "conversions.raw", "partition": 0, "offset": 4, "reason": "x"}
    base = summary()["events"]
    events = summary(dlq=[*summary_dlq(), repeat, repeat])["events"]
    assert events["rejected"] == base["rejected"] == 2 and events["balanced"]


def summary_dlq():
    return [
        {"source_topic": "conversions.raw", "partition": 0, "offset": 4, "reason": "x"},
        {"source_topic": "conversions.raw", "partition": 0, "offset": 5, "reason": "x"},
    ]
