"""The attribute agents' steps, run in-process (tests/support/harness.py)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from services.attribute import rules, state
from services.attribute.agents import (
    INTAKE_INPUTS,
    INTAKE_OUTPUTS,
    PUBLISHER_OUTPUTS,
    USERS_OUTPUTS,
    IntakeHandler,
    PublisherHandler,
    UsersHandler,
    deleted_users_view,
)
from shared.contract.keys import internal_user, lane_user
from shared.kafka.compacted_view import CompactedView
from shared.runtime.settings import Settings
from tests.support.harness import FakeEvent, Harness

USER = "u-secret-17"
#: The harness runs in development mode: the development identifier key.
IUSER = internal_user(USER, Settings(dev_mode=True).active_identifier_key)
ACCOUNT = "549755885175"
CK = f"{ACCOUNT}:checkout:ev-1:online"
#: Recent: the users table keeps engagements 127 days by the wall clock.
T = int(time.time()) - 3_600
CONV = {
    "conversion_key": CK,
    "ad_account_id": ACCOUNT,
    "event_id": "ev-1",
    "event_name": "checkout",
    "action_source": "web",
    "source": "api",
    "event_time": T,
    "value": 12.5,
    "currency": "USD",
}


@pytest.fixture
def h() -> Harness:
    return Harness()


def engagement(eid: str = "e-1", **changes: Any) -> dict[str, Any]:
    return {
        "engagement_id": eid,
        "user_id": USER,
        "ad_account_id": ACCOUNT,
        "campaign_id": "c-1",
        "ad_group_id": "g-1",
        "ad_id": "a-1",
        "type": "click",
        "ts_ms": (T - 600) * 1000,
        "click_id": None,
        **changes,
    }


def assign(mv: int = 1, key: str = CK) -> dict[str, Any]:
    conv = {**CONV, "conversion_key": key}
    return {"op": "assign", "conversion_key": key, "mv": mv, "key_type": "em", "conv": conv}


def privacy(kind: str, ts_ms: int = T * 1000, user: str = USER) -> dict[str, Any]:
    return {"request_id": "r-1", "user_id": user, "kind": kind, "ts_ms": ts_ms}


def deleted_of(h: Harness) -> CompactedView:
    """The harness's privacy.deleted view, like the one each worker follows."""
    view: CompactedView = h.__dict__.setdefault("deleted_view", deleted_users_view(h.settings))
    return view


def user_tables(h: Harness) -> list[Any]:
    return [h.table("users")]


def nothing_left_of(h: Harness, user: str) -> bool:
    """No key of the user in ``users``: neither their own value nor any part."""
    keys = h.table("users").data
    return not [k for k in keys if k == user.encode() or k.startswith(f"{user}|".encode())]


async def users(h: Harness, *events: FakeEvent) -> None:
    """Each event in order: an input through the intake, then what it forwarded
    (and an assignment directly) through the users agent."""
    intake = IntakeHandler(h.settings, h.outbox(*INTAKE_OUTPUTS), h.log)
    handler = UsersHandler(h.settings, h.outbox(*USERS_OUTPUTS), h.log, deleted_of(h))
    inputs = {h.settings.topic_name(t) for t in INTAKE_INPUTS}
    for event in events:
        if event.message.topic not in inputs:
            await h.run(handler, [event], *user_tables(h), user_keyed=True)
            continue
        before = len(h.sent("attribution.user_events"))
        await h.run(intake, [event], user_keyed=True)
        for sent in h.sent("attribution.user_events")[before:]:
            forwarded = h.record("attribution.user_events", sent.key, sent.value)
            await h.run(handler, [forwarded], *user_tables(h), user_keyed=True)


async def publish(h: Harness, *events: FakeEvent) -> None:
    handler = PublisherHandler(h.settings, h.outbox(*PUBLISHER_OUTPUTS), h.log)
    await h.run(handler, list(events), h.table("published"))


async def results_to_publisher(h: Harness, start: int = 0) -> None:
    """Feed what the users agent sent to attribution.results to the publisher."""
    sent = h.sent("attribution.results")[start:]
    await publish(h, *(h.record("attribution.results", s.key, s.value) for s in sent))


async def test_assignment_sends_a_result_keyed_by_conversion(h: Harness) -> None:
    await users(h, h.record("ads.engagements", USER, engagement()))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    [result] = h.sent("attribution.results")
    assert result.key == CK.encode() and result.json["status"] == "attributed"
    assert result.json["match"]["user"] and USER not in result.json["match"]["user"]
    assert h.table("users").value(f"{IUSER}|n|{CK}") is True


async def test_publisher_writes_a_result_only_when_it_is_newer(h: Harness) -> None:
    await users(h, h.record("attribution.assignments", IUSER, assign(mv=2)))
    [result] = h.sent("attribution.results")
    older = {**result.json, "order": [1, 99]}
    await publish(
        h,
        h.record("attribution.results", CK, result.json),
        h.record("attribution.results", CK, older),
        h.record("attribution.results", CK, result.json),
    )
    [record] = h.sent("conversions.attributed")
    assert record.key == CK.encode() and record.json["status"] == "unattributed"
    assert h.table("published").value(CK) == {"order": result.json["order"], "record": record.json}


async def test_publisher_sends_the_report_deltas_and_the_fact_of_each_record(h: Harness) -> None:
    """aggregate's inputs leave with the record, keyed by ad account."""
    await users(h, h.record("attribution.assignments", IUSER, assign(mv=2)))
    await results_to_publisher(h)
    [record] = h.sent("conversions.attributed")
    [delta] = h.sent("reports.deltas")
    assert [(op.get("lane"), op["op"]) for op in delta.json["ops"]] == [
        (None, "add"),
        ("modeled", "add"),
    ]
    assert delta.key == record.json["ad_account_id"].encode()
    assert delta.json["version"] == record.json["version"]
    [fact] = h.sent("diagnostics.facts")
    assert fact.json["kind"] == "result" and fact.json["ref"] == CK


async def test_the_protected_delta_counts_the_lane_user_which_is_never_published(
    h: Harness,
) -> None:
    await users(h, h.record("ads.engagements", USER, engagement()))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    [record] = h.sent("conversions.attributed")
    [delta] = h.sent("reports.deltas")
    [protected] = [op for op in delta.json["ops"] if op.get("lane") == "protected"]
    key = h.settings.active_identifier_key
    assert protected["user"] == lane_user(record.json["ad_account_id"], IUSER, key)
    assert "lane_user" not in record.json


async def test_a_record_without_report_deltas_is_published_and_its_input_dead_lettered(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug making the deltas never holds the result back; the gap is seen in the DLQ."""
    await users(h, h.record("attribution.assignments", IUSER, assign()))

    def broken(*_: Any) -> list[Any]:
        raise KeyError("action_source")

    monkeypatch.setattr(rules, "aggregate_inputs", broken)
    await results_to_publisher(h)
    assert len(h.sent("conversions.attributed")) == 1
    assert h.sent("reports.deltas") == []
    [dead] = h.dead_letters()
    assert dead["reason"] == "report_error"
    assert dead["source_topic"].endswith("attribution.results")


async def test_a_result_not_newer_sends_no_deltas_again(h: Harness) -> None:
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    await results_to_publisher(h)  # redelivered
    assert len(h.sent("conversions.attributed")) == 1
    assert len(h.sent("diagnostics.facts")) == 1


async def test_a_re_attribution_moves_the_conversion_out_of_its_old_row(h: Harness) -> None:
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    [first] = h.sent("reports.deltas")
    first_row = first.json["ops"][0]["row"]
    await users(h, h.record("ads.engagements", USER, engagement()))
    await results_to_publisher(h, start=1)
    [_, later] = h.sent("reports.deltas")
    observed = [op for op in later.json["ops"] if "lane" not in op]
    assert [(op["op"], op["row"] == first_row) for op in observed] == [
        ("remove", True),
        ("add", False),
    ]


async def test_invalid_engagement_is_dead_lettered_and_the_batch_goes_on(h: Harness) -> None:
    await users(
        h,
        h.record("ads.engagements", USER, engagement(type="poke")),
        h.record("attribution.assignments", IUSER, assign()),
    )
    [dead] = h.dead_letters()
    assert dead["reason"] == "invalid_type" and dead["source_topic"].endswith("ads.engagements")
    assert USER not in str(dead) and '"engagement_id":"e-1"' in dead["raw"]
    assert h.sent("conversions.dlq")[0].key is None
    assert len(h.sent("attribution.results")) == 1


async def test_invalid_privacy_request_is_dead_lettered_without_the_user_id(h: Harness) -> None:
    await users(
        h,
        h.record("privacy.requests", USER, privacy("forget-me")),
        h.record("privacy.requests", USER, b"not json " + USER.encode()),
    )
    invalid, not_json = h.dead_letters()
    assert invalid["reason"] == "invalid_kind" and not_json["reason"] == "invalid_json"
    assert USER not in str(h.dead_letters())


async def test_privacy_request_for_another_user_than_its_key_is_dead_lettered(
    h: Harness,
) -> None:
    """The key's state is not touched: the request would wipe the wrong user."""
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await users(
        h,
        h.record("privacy.requests", USER, privacy("delete", user="u-someone-else")),
        h.record("privacy.requests", None, privacy("delete")),
        h.record("ads.engagements", USER, engagement()),
    )
    assert [d["reason"] for d in h.dead_letters()] == ["key_mismatch", "key_mismatch"]
    assert USER not in str(h.dead_letters()) and "u-someone-else" not in str(h.dead_letters())
    assert h.sent("identity.answers") == []
    assert h.table("users").value(f"{IUSER}|n|{CK}") is True
    assert len(h.sent("attribution.results")) == 2  # the engagement after them re-attributes


async def test_delete_leaves_a_tombstone_and_scrubs_the_published_record(h: Harness) -> None:
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    [before] = h.sent("conversions.attributed")
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    assert nothing_left_of(h, IUSER)
    [forget] = h.sent("identity.answers")
    assert forget.key == CK.encode() and forget.json["op"] == "forget_user"
    await results_to_publisher(h, start=1)
    [_, after] = h.sent("conversions.attributed")
    assert after.json["match"] == {"key_type": "em", "user": None}
    assert after.json["version"] > before.json["version"]
    assert {
        k: v for k, v in after.json.items() if k not in ("match", "version", "processed_at_ms")
    } == {k: v for k, v in before.json.items() if k not in ("match", "version", "processed_at_ms")}


async def test_scrub_of_a_record_that_names_another_user_sends_nothing(h: Harness) -> None:
    await users(h, h.record("attribution.assignments", "u-other", assign()))
    await results_to_publisher(h)
    scrub = {"op": "scrub", "user": "dev.0123456789abcdef0123456789abcdef"}
    await publish(h, h.record("attribution.results", CK, scrub))
    assert len(h.sent("conversions.attributed")) == 1


K1 = ("k1", "the-first-pseudonym-secret-32-bytes-long")
K2 = ("k2", "the-second-pseudonym-secret-32-bytes-long")


async def test_delete_after_a_key_rotation_scrubs_records_published_under_the_old_key() -> None:
    h = Harness(Settings(dev_mode=True, pseudonym_keys=(K1,)))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    [before] = h.sent("conversions.attributed")
    assert before.json["match"]["user"].startswith("k1.")
    h.settings = replace(h.settings, pseudonym_keys=(K2, K1))  # rotated: k2 newest
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    await results_to_publisher(h, start=1)
    [_, after] = h.sent("conversions.attributed")
    assert after.json["match"] == {"key_type": "em", "user": None}


async def test_delete_writes_the_deleted_user_and_a_receipt_without_the_user_id(
    h: Harness,
) -> None:
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    [deleted] = h.sent("privacy.deleted")
    assert deleted.key == deleted.json["user"].encode() and deleted.json["request_id"] == "r-1"
    [receipt] = h.sent("privacy.receipts")
    assert receipt.key == b"r-1"
    assert set(receipt.json) == {"request_id", "service", "completed_at_ms", "conversions_scrubbed"}
    assert receipt.json["service"] == "attribute" and receipt.json["conversions_scrubbed"] == 1
    assert USER not in str([s.value for s in h.producer.sent if s.topic != "identity.answers"])


async def test_replayed_inputs_from_before_the_deletion_do_not_bring_the_user_back(
    h: Harness,
) -> None:
    before = [
        ("ads.engagements", engagement()),
        ("attribution.assignments", assign()),
        ("privacy.requests", privacy("opt_in", ts_ms=(T - 60) * 1000)),
    ]

    def key(topic: str) -> str:
        return IUSER if topic == "attribution.assignments" else USER

    def outputs() -> int:
        """What the users agent sent (the intake forwards a replay as any input)."""
        return sum(s.topic != "attribution.user_events" for s in h.producer.sent)

    await users(h, *(h.record(topic, key(topic), value) for topic, value in before))
    sent = outputs()
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    deletion = outputs()
    await users(h, *(h.record(topic, key(topic), value) for topic, value in before))
    assert nothing_left_of(h, IUSER)
    # Only the replayed assignment sends anything: its conversion's result and the
    # owner's forget (below).
    assert outputs() == deletion + 2 and deletion > sent


async def test_a_conversion_still_matched_to_a_deleted_user_gets_its_result_without_them(
    h: Harness,
) -> None:
    """identity_match assigned it (a link the deletion missed): a result with no user,
    published, and the owner told to forget the user; nothing stored."""
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    before = len(h.producer.sent)
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    assert nothing_left_of(h, IUSER)
    sent = h.producer.sent[before:]
    [forget] = [s.json for s in sent if s.topic.endswith("identity.answers")]
    assert forget["op"] == "forget_user" and forget["user_id"] == IUSER
    [result] = [s.json for s in sent if s.topic.endswith("attribution.results")]
    assert result["lane_user"] is None  # nothing of the user on the topic either
    await results_to_publisher(h)
    [record] = h.sent("conversions.attributed")
    assert record.json["match"]["user"] is None and record.json["status"] == "unattributed"


async def test_a_replayed_assignment_of_a_deleted_user_leaves_the_scrubbed_record(
    h: Harness,
) -> None:
    """The deletion scrubbed an attributed record: a replay of its assignment must not
    replace it with an unattributed one."""
    await users(h, h.record("ads.engagements", USER, engagement()))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await users(h, h.record("privacy.requests", USER, privacy("delete")))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await results_to_publisher(h)
    *_, last = h.sent("conversions.attributed")
    assert last.json["status"] == "attributed" and last.json["match"]["user"] is None


async def test_a_deletion_seen_by_another_worker_drops_the_replay_too(h: Harness) -> None:
    """The view of privacy.deleted (another worker deleted the user, under an older key)."""
    other = Harness(Settings(dev_mode=True, pseudonym_keys=(K1,)))
    await users(other, other.record("privacy.requests", USER, privacy("delete")))
    [record] = other.sent("privacy.deleted")
    h.settings = replace(h.settings, pseudonym_keys=(K2, K1))
    deleted_of(h).apply(record.key, record.value)
    await users(h, h.record("ads.engagements", USER, engagement()))
    assert nothing_left_of(h, IUSER)


async def test_inputs_after_the_deletion_are_new_data(h: Harness) -> None:
    await users(h, h.record("privacy.requests", USER, privacy("delete", ts_ms=(T - 60) * 1000)))
    later = engagement("e-2", ts_ms=int(time.time() * 1000) + 60_000)
    await users(h, h.record("ads.engagements", USER, later))
    assert list(h.table("users").data) == [f"{IUSER}|e|e-2".encode()]


async def test_an_input_goes_on_keyed_by_the_internal_user_id_without_raw_ids(
    h: Harness,
) -> None:
    await users(h, h.record("ads.engagements", USER, engagement(click_id="clk-secret-9")))
    [forwarded] = h.sent("attribution.user_events")
    assert forwarded.key == IUSER.encode()
    assert forwarded.json["topic"] == "ads.engagements" and forwarded.json["arrival"] == [0, 0]
    assert forwarded.json["event"]["user_id"] == IUSER
    assert b"u-secret-17" not in forwarded.value and b"clk-secret-9" not in forwarded.value  # type: ignore[operator]


async def test_nothing_stored_or_sent_carries_the_raw_user_id(h: Harness) -> None:
    await users(h, h.record("ads.engagements", USER, engagement()))
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    await users(h, h.record("privacy.requests", USER, privacy("opt_out")))
    await users(h, h.record("privacy.requests", USER, privacy("delete", ts_ms=(T + 60) * 1000)))
    stored = b"".join(k + v for t in h.tables.values() for k, v in t.items())
    sent = b"".join((s.key or b"") + (s.value or b"") for s in h.producer.sent)
    assert USER.encode() not in stored + sent


async def test_privacy_requests_are_ordered_by_their_offset_in_privacy_requests(
    h: Harness,
) -> None:
    """Equal ts_ms: the later input wins, even when the earlier one is forwarded
    again after it (a forwarder restarted after a crash)."""
    opt_out = h.record("privacy.requests", USER, privacy("opt_out"))  # offset 0
    opt_in = h.record("privacy.requests", USER, privacy("opt_in"))  # offset 1
    await users(h, opt_out, opt_in, opt_out)
    assert h.table("users").value(IUSER)["privacy"] == [T * 1000, 1, "opt_in"]


async def test_an_assignment_stages_its_name_before_its_conversion(h: Harness) -> None:
    """The changelog keeps a partition's records in order: a crash can leave the name
    without the conversion (a redelivery adds it), never the conversion without its name."""
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    keys = list(h.table("users").data)
    assert keys.index(f"{IUSER}|n|{CK}".encode()) < keys.index(f"{IUSER}|c|{CK}".encode())


def test_parts_are_staged_names_then_conversions_then_engagements() -> None:
    assert list(state.PART_KINDS) == ["named", "convs", "engagements"]


async def test_a_user_with_hundreds_of_engagements_keeps_every_value_small(h: Harness) -> None:
    """A user shown many ads: one key per engagement, none growing with the rest."""
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    many = [
        h.record("ads.engagements", USER, engagement(f"e-{i}", ts_ms=(T - 600 - i) * 1000))
        for i in range(500)
    ]
    await users(h, *many)
    stored = list(h.table("users").data.values())
    assert len([k for k in h.table("users").data if b"|e|" in k]) == 500
    assert max(len(v) for v in stored) < 400
    assert h.sent("attribution.results")[-1].json["touch"]["engagement_id"] == "e-0"


async def test_a_users_value_of_the_old_layout_is_split_on_its_next_write(h: Harness) -> None:
    old = {
        "eng": {"e-0": [(T - 900) * 1000, "click", ACCOUNT, "c-0", "g-0", "a-0"]},
        "convs": {},
        "privacy": None,
        "named": ["1:old:ev:online"],
    }
    h.table("users").data[IUSER.encode()] = orjson.dumps(old)
    await users(h, h.record("attribution.assignments", IUSER, assign()))
    [result] = h.sent("attribution.results")
    assert result.json["touch"]["engagement_id"] == "e-0"  # read from the old value
    assert h.table("users").value(IUSER) is None  # no privacy choice: no value left
    assert h.table("users").value(f"{IUSER}|e|e-0") == old["eng"]["e-0"]
    assert h.table("users").value(f"{IUSER}|n|1:old:ev:online") is True
    assert h.table("users").value(f"{IUSER}|n|{CK}") is True
    assert h.table("users").value(f"{IUSER}|c|{CK}")["mv"] == 1
