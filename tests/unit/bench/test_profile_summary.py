"""bench/profile_summary.py: shares of py-spy collapsed stacks per category."""

from __future__ import annotations

from bench import profile_summary

RAW = [
    "run (faust/transport/consumer.py:10);on_valid (services/dedupe/rules.py:5) 10\n",
    "run (faust/transport/consumer.py:10);send (faust/transport/producer.py:80) 30\n",
    "_run_once (asyncio/base_events.py:1900);select (selectors.py:468) 60\n",
    "garbage line without a count\n",
]


def test_parse_reads_frames_and_counts_and_skips_junk() -> None:
    stacks = profile_summary.parse(RAW)
    assert len(stacks) == 3
    assert stacks[0] == (
        ["run (faust/transport/consumer.py:10)", "on_valid (services/dedupe/rules.py:5)"],
        10,
    )


def test_inclusive_shares_count_each_sample_in_every_category_it_passes() -> None:
    summary = profile_summary.summarize(profile_summary.parse(RAW))
    shares = summary["inclusive_percent"]
    assert summary["samples"] == 100
    assert summary["idle_percent"] == 60.0  # the select samples
    assert shares["service rules (rules.py/logic.py)"] == 25.0  # of the 40 busy ones
    assert shares["faust consumer / fetch path"] == 100.0
    assert shares["faust producer send (Producer.send, FutureMessage)"] == 75.0


def test_top_self_names_the_leaf_frames_by_share() -> None:
    summary = profile_summary.summarize(profile_summary.parse(RAW))
    assert summary["top_self"][0] == ("select (selectors.py:468)", 60.0)


def test_the_stall_watchers_sleep_is_idle_but_its_report_is_not() -> None:
    raw = [
        "_bootstrap (threading.py:1002);watch (shared/runtime/stall_report.py:230) 50\n",
        "_bootstrap (threading.py:1002);watch (shared/runtime/stall_report.py:234);"
        "stall_report (shared/runtime/stall_report.py:180) 10\n",
        "run (faust/transport/consumer.py:10);on_valid (services/dedupe/rules.py:5) 40\n",
    ]
    summary = profile_summary.summarize(profile_summary.parse(raw))
    assert summary["idle_percent"] == 50.0
    assert summary["inclusive_percent"]["service rules (rules.py/logic.py)"] == 80.0
