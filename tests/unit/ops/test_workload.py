"""The workload generator: deterministic, realistic, decodable, labelled."""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import lru_cache

import orjson
import pytest

from ops.workload import (
    CONTEXT_TOPICS,
    DAY_MS,
    ENGAGEMENTS,
    ENVELOPE_KINDS,
    INPUT_TOPICS,
    INVALID_KINDS,
    PRIVACY,
    RAW,
    SIGNALS,
    Record,
    Workload,
    generate,
)
from shared.contract.identifiers import is_sha256_hex
from shared.contract.keys import ip_ua_hash
from tests.support.reference import reference

NOW = 1_764_151_200_000  # 2025-11-26T10:00:00Z


@lru_cache(maxsize=4)
def _workload(seed: int = 11, conversions: int = 600) -> Workload:
    return generate(seed, conversions, now_ms=NOW)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a, b = generate(5, 200, now_ms=NOW), generate(5, 200, now_ms=NOW)
    assert a.records == b.records
    assert a.raw_labels == b.raw_labels
    c = generate(6, 200, now_ms=NOW)
    assert c.records[RAW] != a.records[RAW]
    d = generate(5, 200, now_ms=NOW + 60_000)
    assert d.records[RAW] != a.records[RAW]


def test_counts() -> None:
    w = _workload()
    labels = w.raw_labels
    assert len(labels) == len(w.records[RAW])
    kinds = Counter(lbl.kind for lbl in labels)
    assert kinds["original"] + kinds["supersede"] >= 600 - kinds["supersede"]
    originals = sum(
        1 for lbl in labels if lbl.kind in ("original", "supersede") and lbl.expect == "accepted"
    )
    assert originals == 600 + kinds["supersede"]
    assert kinds["duplicate"] == round(600 * 0.08)
    assert kinds["supersede"] == round(600 * 0.02)
    assert 1 <= kinds["other_scope"] <= round(600 * 0.03)
    assert sum(kinds[k] for k in INVALID_KINDS) == round(600 * 0.04)
    assert w.counts()[RAW] == len(labels)
    assert w.counts()["raw_rejected"] == sum(kinds[k] for k in INVALID_KINDS)
    for topic in INPUT_TOPICS:
        assert w.counts()[topic] == len(w.records[topic]) > 0


def test_every_invalid_kind_and_every_feature_is_present() -> None:
    w = _workload()
    kinds = {lbl.kind for lbl in w.raw_labels}
    assert set(INVALID_KINDS) <= kinds
    assert {"duplicate", "supersede", "other_scope", "edge_valid"} <= kinds
    assert {lbl.source for lbl in w.raw_labels} == {"api", "tag", "topic", "batch"}
    assert {lbl.restricted for lbl in w.raw_labels} >= {"opt_out", "ldp"}
    signals = [orjson.loads(r.value) for r in w.records[SIGNALS]]
    assert {s["key_type"] for s in signals} == {"em", "ph", "hashed_maid", "external_id", "ip_ua"}
    assert {s["op"] for s in signals} == {"link", "unlink"}
    by_key: dict[str, set[str]] = defaultdict(set)
    for s in signals:
        by_key[s["key"]].add(s["user_id"])
        assert (s["ad_account_id"] is not None) == (s["key_type"] == "external_id")
    assert any(len(users) > 1 for users in by_key.values()), "no key moves to another user"
    engagements = [orjson.loads(r.value) for r in w.records[ENGAGEMENTS]]
    assert {e["type"] for e in engagements} == {"click", "engagement", "view"}
    kinds_p = Counter(orjson.loads(r.value)["kind"] for r in w.records[PRIVACY])
    assert kinds_p["opt_out"] > 0 and kinds_p["opt_in"] > 0 and kinds_p["delete"] == 0
    ids = [e["engagement_id"] for e in engagements]
    assert len(set(ids)) == len(ids)


def test_every_record_decodes_or_is_a_labelled_invalid() -> None:
    w = _workload()
    for rec in w.records[SIGNALS]:
        s = orjson.loads(rec.value)
        assert rec.key == s["key"].encode() and is_sha256_hex(s["key"])
        assert set(s) == {"user_id", "key_type", "key", "ad_account_id", "op", "ts_ms"}
    for rec in w.records[ENGAGEMENTS]:
        e = orjson.loads(rec.value)
        assert rec.key == e["user_id"].encode()
        assert (e["type"] == "click") == (e["click_id"] is not None)
        assert e["click_id"] is None or e["click_id"].startswith("epik")
    for rec in w.records[PRIVACY]:
        p = orjson.loads(rec.value)
        assert rec.key == p["user_id"].encode() and p["kind"] in ("opt_out", "opt_in")
    for rec, lbl in zip(w.records[RAW], w.raw_labels, strict=True):
        assert w.label(rec) == lbl
        if lbl.kind == "not_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(rec.value)
            continue
        env = orjson.loads(rec.value)
        if lbl.kind == "not_object":
            assert not isinstance(env, dict)
            continue
        if lbl.kind in ENVELOPE_KINDS:
            assert lbl.expect == "rejected" and lbl.reason == lbl.kind
            if lbl.kind == "key_mismatch":
                assert rec.key != env["ad_account_id"].encode()
            elif lbl.kind == "unknown_envelope_field":
                assert set(env) - {"ad_account_id", "source", "received_at_ms", "event"}
            elif lbl.kind == "invalid_source":
                assert env["source"] not in ("api", "tag", "topic", "batch")
            elif lbl.kind == "missing_event":
                assert env.get("event") is None
            else:
                assert not env["ad_account_id"].isdigit() or len(env["ad_account_id"]) > 18
            continue
        assert set(env) == {"ad_account_id", "source", "received_at_ms", "event"}
        assert rec.key == env["ad_account_id"].encode()
        assert env["source"] == lbl.source and env["received_at_ms"] <= NOW
        if lbl.expect == "rejected":
            assert lbl.reason and lbl.conversion_key is None
            continue
        event = env["event"]
        assert lbl.conversion_key == (
            f"{env['ad_account_id']}:{event['event_name']}:{event['event_id']}:"
            f"{'offline' if event['action_source'] == 'offline' else 'online'}"
        )
        t_ms = event["event_time"] * 1000
        assert -67 * DAY_MS <= t_ms - env["received_at_ms"] <= 3_600_000
        assert t_ms <= NOW
        ud = event["user_data"]
        for name in ("em", "ph", "hashed_maids", "external_id"):
            assert all(is_sha256_hex(h) for h in ud.get(name, []))
        assert (
            ud.get("em")
            or ud.get("hashed_maids")
            or (ud.get("client_ip_address") and ud.get("client_user_agent"))
        )
        custom = event.get("custom_data") or {}
        if "value" in custom:
            assert isinstance(custom["value"], str) and len(custom["currency"]) == 3


def test_raw_values_are_unique_so_labels_can_be_found() -> None:
    w = _workload()
    values = [r.value for r in w.records[RAW]]
    assert len(set(values)) == len(values)
    with pytest.raises(KeyError):
        w.label(Record(RAW, None, b"never produced"))


@pytest.mark.parametrize("order", ["context_first", "conversions_first", "interleaved"])
def test_orders_are_permutations_keeping_each_topics_order(order: str) -> None:
    w = _workload()
    out = w.ordered(order)
    assert Counter(out) == Counter(w.all_records()) and len(out) == len(w.all_records())
    for topic in INPUT_TOPICS:
        assert [r for r in out if r.topic == topic] == w.records[topic]
    # per ad account (the partition key of conversions.raw) the order is kept
    per_account: dict[bytes | None, list[Record]] = defaultdict(list)
    for r in w.records[RAW]:
        per_account[r.key].append(r)
    for key, recs in per_account.items():
        assert [r for r in out if r.topic == RAW and r.key == key] == recs
    if order == "context_first":
        first_raw = next(i for i, r in enumerate(out) if r.topic == RAW)
        assert all(r.topic == RAW for r in out[first_raw:])
    elif order == "conversions_first":
        n = len(w.records[RAW])
        assert all(r.topic == RAW for r in out[:n])
        assert all(r.topic in CONTEXT_TOPICS for r in out[n:])
    else:
        topics = [r.topic for r in out]
        assert topics != sorted(topics, key=INPUT_TOPICS.index)
        assert w.ordered("interleaved", 1) != w.ordered("interleaved", 2)


def test_unknown_order_is_an_error() -> None:
    with pytest.raises(ValueError):
        _workload().ordered("random")


def test_conversions_arrive_in_received_order_and_resends_after_their_first() -> None:
    w = _workload()
    received = []
    first_seen: dict[str, int] = {}
    for i, (rec, lbl) in enumerate(zip(w.records[RAW], w.raw_labels, strict=True)):
        if lbl.expect == "rejected":
            continue
        received.append(orjson.loads(rec.value)["received_at_ms"])
        if lbl.conversion_key:
            first_seen.setdefault(lbl.conversion_key, i)
            if lbl.kind in ("duplicate", "supersede"):
                assert first_seen[lbl.conversion_key] < i
    assert received == sorted(received)


def test_labels_agree_with_the_reference_model() -> None:
    w = _workload()
    expected = reference(w.ordered("context_first"), now_ms=NOW)
    assert expected.counts == w.expected_counts_by_source()
    for lbl, out in zip(w.raw_labels, expected.outcomes, strict=True):
        assert (lbl.expect, lbl.conversion_key) == (out.outcome, out.conversion_key), lbl
        if lbl.expect == "rejected":
            assert lbl.reason == out.reason, lbl
    restricted = {
        lbl.conversion_key: lbl.restricted for lbl in w.raw_labels if lbl.expect == "accepted"
    }
    for key, result in expected.attributed.items():
        if restricted[key] is not None:
            assert result["unidentified_reason"] == restricted[key]


def test_the_workload_exercises_every_outcome() -> None:
    w = _workload()
    expected = reference(w.ordered("context_first"), now_ms=NOW)
    results = list(expected.attributed.values())
    assert {r["status"] for r in results} == {"attributed", "unattributed", "unidentified"}
    assert {r["unidentified_reason"] for r in results} >= {
        None,
        "no_match",
        "opt_out",
        "ldp",
        "user_opt_out",
    }
    assert {r["match"]["key_type"] for r in results if r["match"]} >= {
        "click_id",
        "external_id",
        "em",
        "ph",
        "ip_ua",
    }
    assert {r["touch"]["type"] for r in results if r["touch"]} >= {"click", "engagement"}


def test_conversion_times_stay_in_the_span_except_the_old_edge() -> None:
    w = generate(3, 400, now_ms=NOW, span_days=6)
    for rec, lbl in zip(w.records[RAW], w.raw_labels, strict=True):
        if lbl.expect != "accepted":
            continue
        t_ms = orjson.loads(rec.value)["event"]["event_time"] * 1000
        if lbl.kind == "edge_valid":
            continue
        assert NOW - 6 * DAY_MS - 1000 <= t_ms <= NOW, lbl


def test_links_after_a_conversion_and_expired_sessions_occur() -> None:
    """The workload holds the cases the rules make special: a link made after the
    conversion's event_time (must not claim it) and ip_ua links both inside and
    outside their 7-day validity."""
    w = _workload()
    history: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rec in w.records[SIGNALS]:
        s = orjson.loads(rec.value)
        if s["op"] == "link":
            history[(s["key_type"], s["key"])].append(s["ts_ms"])
    late_links = valid_sessions = expired_sessions = 0
    for rec, lbl in zip(w.records[RAW], w.raw_labels, strict=True):
        if lbl.expect != "accepted":
            continue
        event = orjson.loads(rec.value)["event"]
        t_ms = event["event_time"] * 1000
        for h in event["user_data"].get("em", []):
            links = history.get(("em", h), [])
            if links and min(links) > t_ms:
                late_links += 1
        ud = event["user_data"]
        if ud.get("client_ip_address"):
            links = [
                ts
                for ts in history.get(
                    ("ip_ua", ip_ua_hash(ud["client_ip_address"], ud["client_user_agent"])), []
                )
                if ts <= t_ms
            ]
            if links and t_ms - max(links) <= 7 * DAY_MS:
                valid_sessions += 1
            elif links:
                expired_sessions += 1
    assert late_links > 0 and valid_sessions > 0 and expired_sessions > 0


def test_gen_command_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ops.commands import gen

    parser = argparse.ArgumentParser()
    gen.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "gen",
            "--conversions",
            "50",
            "--seed",
            "4",
            "--order",
            "conversions_first",
            "--now-ms",
            str(NOW),
            "--dry-run",
            "--json",
        ]
    )
    assert args.func(args) == 0
    report = orjson.loads(capsys.readouterr().out)
    w = generate(4, 50, now_ms=NOW)
    assert report["topics"] == {t: len(w.records[t]) for t in INPUT_TOPICS}
    assert report["by_source"] == w.expected_counts_by_source()
    assert report["order"] == "conversions_first" and report["now_ms"] == NOW
    with pytest.raises(SystemExit):
        parser.parse_args(["gen", "--order", "backwards"])
