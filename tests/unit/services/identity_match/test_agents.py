"""The identity_match agents' steps, run in-process (tests/support/harness.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from services.identity_match import agents, rules
from shared.contract.keys import internal_click, internal_user, ip_ua_hash, keyed_ip_ua
from shared.runtime.settings import Settings
from tests.support.harness import FakeEvent, FakeTable, Harness, Sent

NOW_MS = 1_800_000_000_000
T = 1_700_000_000  # a conversion's event_time (seconds)
EM = "e" * 64
CONVERSION_KEY = "549755885175:checkout:ev-1:online"
PLAIN_IP_UA = ip_ua_hash("203.0.113.7", "Mozilla/5.0 (X11; Linux x86_64)")
#: The harness runs in development mode: the development identifier key.
KEY = Settings(dev_mode=True).active_identifier_key
U1, GONE = internal_user("u1", KEY), internal_user("gone", KEY)
CLICK = internal_click("epik-1", KEY)


@dataclass
class RecordingLog:
    """A structlog stand-in keeping every line (event and fields)."""

    lines: list[dict[str, Any]] = field(default_factory=list)

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append({"level": level, "event": event, **fields})

        return log


@pytest.fixture
def h() -> Harness:
    return Harness(log=RecordingLog())


def clock() -> int:
    return NOW_MS


def handlers(h: Harness) -> dict[str, Any]:
    """The five handlers on one harness, by agent name."""
    return {
        "clicks": agents.ClickForwarder(h.settings, h.outbox(*agents.CLICKS_OUTPUTS), h.log),
        "signals": agents.SignalForwarder(h.settings, h.outbox(*agents.SIGNALS_OUTPUTS), h.log),
        "keys": agents.KeysHandler(h.settings, h.outbox(*agents.KEYS_OUTPUTS), h.log, clock),
        "owner": agents.OwnerHandler(h.settings, h.outbox(*agents.OWNER_OUTPUTS), h.log, clock),
        "deletions": agents.DeletionForwarder(
            h.settings, h.outbox(*agents.DELETIONS_OUTPUTS), h.log
        ),
        "user_index": agents.UserIndexHandler(
            h.settings, h.outbox(*agents.INDEX_OUTPUTS), h.log, clock
        ),
    }


TABLES = {"keys": agents.KEYS_TABLES, "owner": ("conversions",), "user_index": ("user_index",)}


async def run(h: Harness, agent: str, *events: FakeEvent) -> None:
    tables = [h.table(name) for name in TABLES.get(agent, ())]
    handler = handlers(h)[agent]
    await h.run(handler, list(events), *tables, user_keyed=handler.user_keyed)


def link(key: str, user: str = "u1", key_type: str = "em", ts_ms: int = T * 1000 - 1) -> Any:
    return {
        "user_id": user,
        "key_type": key_type,
        "key": key,
        "ad_account_id": None,
        "op": "link",
        "ts_ms": ts_ms,
    }


def signal_of(signal: dict[str, Any], offset: int = 1) -> dict[str, Any]:
    """The identity.key_signals record the signals agent makes of ``signal`` (internal user)."""
    return rules.forward_signal(signal, 0, offset, KEY).value


def accepted(**ids: Any) -> dict[str, Any]:
    return {
        "conversion_key": CONVERSION_KEY,
        "raw_ref": "conversions.raw:0:1",
        "ad_account_id": "549755885175",
        "event_time": T,
        "ids": {"click_id": None, "em": [], "ip_ua": None, **ids},
        "opt_out": False,
        "ldp": False,
    }


def lookup(slot: str = "0", signal_type: str = "em") -> dict[str, Any]:
    return {
        "conversion_key": CONVERSION_KEY,
        "slot": slot,
        "gen": 1,
        "signal_type": signal_type,
        "ad_account_id": "549755885175",
        "event_time": T,
    }


def click_engagement(click_id: str = "epik-1", user: str = "u1") -> dict[str, Any]:
    return {
        "engagement_id": "eng-1",
        "user_id": user,
        "ad_account_id": "549755885175",
        "type": "click",
        "ts_ms": T * 1000 - 5,
        "click_id": click_id,
    }


CONSUMERS = {
    "identity.clicks": "keys",
    "identity.key_signals": "keys",
    "identity.lookups": "keys",
    "identity.answers": "owner",
    "identity.user_keys": "user_index",
    "identity.deletions": "user_index",
}


async def deliver(h: Harness) -> None:
    """Feed each internal record not delivered yet to its agent, until none is left."""
    while (start := getattr(h, "delivered", 0)) < len(h.producer.sent):
        h.delivered = len(h.producer.sent)  # type: ignore[attr-defined]
        for sent in h.producer.sent[start:]:
            if sent.topic in CONSUMERS:
                await run(h, CONSUMERS[sent.topic], h.record(sent.topic, sent.key, sent.value))


def everything_stored_and_sent(h: Harness) -> bytes:
    tables = b"".join(k + v for t in h.tables.values() for k, v in t.items())
    sent = b"".join((s.key or b"") + (s.value or b"") for s in h.producer.sent)
    return tables + sent


def only(sent: list[Sent]) -> Sent:
    [one] = sent
    return one


# ------------------------------------------------------------------ clicks


async def test_a_click_is_forwarded_by_its_internal_click_id_with_the_internal_user(
    h: Harness,
) -> None:
    await run(h, "clicks", h.record("ads.engagements", "u1", click_engagement()))
    forwarded = only(h.sent("identity.clicks"))
    assert forwarded.key == CLICK.encode()
    assert forwarded.json == {
        "click_id": CLICK,
        "user_id": U1,
        "engagement_id": "eng-1",
        "ts_ms": T * 1000 - 5,
    }


async def test_an_invalid_engagement_is_left_to_attribute_and_the_batch_goes_on(
    h: Harness,
) -> None:
    await run(
        h,
        "clicks",
        h.record("ads.engagements", "u1", b"not json"),
        h.record("ads.engagements", "u1", {**click_engagement(), "type": "view"}),
        h.record("ads.engagements", "u1", click_engagement()),
    )
    assert h.dead_letters() == [] and len(h.sent("identity.clicks")) == 1


# ------------------------------------------------------------------ signals


async def test_an_em_signal_is_forwarded_with_the_internal_user_and_its_input_position(
    h: Harness,
) -> None:
    await run(h, "signals", h.record("identity.signals", EM, link(EM), partition=3))
    forwarded = only(h.sent("identity.key_signals"))
    assert forwarded.key == EM.encode()
    assert forwarded.json == {**link(EM), "user_id": U1, "arrival": [3, 0]}


async def test_an_ip_ua_signal_is_forwarded_by_its_keyed_hash(h: Harness) -> None:
    await run(
        h, "signals", h.record("identity.signals", PLAIN_IP_UA, link(PLAIN_IP_UA, key_type="ip_ua"))
    )
    keyed = keyed_ip_ua(PLAIN_IP_UA, h.settings.active_identifier_key)
    forwarded = only(h.sent("identity.key_signals"))
    assert forwarded.key == keyed.encode() and forwarded.json["key"] == keyed
    assert PLAIN_IP_UA.encode() not in everything_stored_and_sent(h)


async def test_an_undecodable_signal_is_dead_lettered_and_the_batch_goes_on(h: Harness) -> None:
    await run(
        h,
        "signals",
        h.record("identity.signals", EM, link(EM)),
        h.record("identity.signals", EM, b"not json"),
        h.record("identity.signals", EM, {**link(EM), "op": "merge"}),
        h.record("identity.signals", EM, link(EM, user="u2")),
    )
    assert [(d["reason"], d["offset"]) for d in h.dead_letters()] == [
        ("invalid_json", 1),
        ("invalid_op", 2),
    ]
    assert all(s.key is None for s in h.sent("conversions.dlq"))
    assert len(h.sent("identity.key_signals")) == 2


# ------------------------------------------------------------------ keys


async def test_a_lookup_is_answered_to_its_conversion_key(h: Harness) -> None:
    await run(h, "keys", h.record("identity.lookups", EM, lookup()))
    answer = only(h.sent("identity.answers"))
    assert answer.key == CONVERSION_KEY.encode()
    assert answer.json == {"conversion_key": CONVERSION_KEY, "slot": "0", "gen": 1, "user_id": None}
    assert h.table("watchers").value(f"{EM}|{CONVERSION_KEY}|0")["last"] is None
    assert h.table("keys").value(EM) is None  # no signal or click: no value


class WriteCountingTable(FakeTable):
    """A table that remembers the keys it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.written.append(key)
        super().__setitem__(key, value)


async def test_a_lookup_leaves_its_identifiers_value_unwritten(h: Harness) -> None:
    """A lookup folds no signal: only its watcher is written, not the (unchanged)
    signal history, which would cost a changelog record per lookup."""
    h.tables["keys"] = WriteCountingTable()
    await run(h, "keys", h.record("identity.key_signals", EM, signal_of(link(EM))))
    history = h.table("keys").value(EM)
    h.tables["keys"].written.clear()
    await run(h, "keys", h.record("identity.lookups", EM, lookup()))
    assert only(h.sent("identity.answers")).json["user_id"] == U1
    assert h.table("watchers").value(f"{EM}|{CONVERSION_KEY}|0")["last"] == U1
    assert h.tables["keys"].written == []
    assert h.table("keys").value(EM) == history


async def test_a_redelivered_signal_writes_its_identifiers_value_again(h: Harness) -> None:
    """Its effect may be in a store whose changelog record never left (StateCache.rewrite)."""
    h.tables["keys"] = WriteCountingTable()
    record = signal_of(link(EM))
    await run(h, "keys", h.record("identity.key_signals", EM, record))
    h.tables["keys"].written.clear()
    await run(h, "keys", h.record("identity.key_signals", EM, record))
    assert h.tables["keys"].written == [EM.encode()]


async def test_a_lookup_moves_old_layout_watchers_out_of_its_identifiers_value(
    h: Harness,
) -> None:
    """The one case in which a lookup changes the identifier's value: it is written."""
    old = {"signals": [], "clicks": [[T * 1000 - 5, U1, "eng-1"]], "watchers": {}}
    h.table("keys").data[EM.encode()] = orjson.dumps(old)
    await run(h, "keys", h.record("identity.lookups", EM, lookup()))
    assert h.table("keys").value(EM) == {"signals": [], "clicks": old["clicks"]}


def test_a_batch_writes_the_watchers_before_the_keys_values() -> None:
    """A crash between the two leaves watchers newer than the signals, never the reverse:
    a watcher whose ``last`` lagged its signals could miss a change back to an old user."""
    assert agents.KEYS_TABLES.index("watchers") < agents.KEYS_TABLES.index("keys")


async def test_an_identifier_watched_by_thousands_of_conversions_keeps_every_value_small(
    h: Harness,
) -> None:
    """A carrier NAT's IP+UA: one watcher key per conversion slot, none growing with the rest."""
    await run(h, "keys", h.record("identity.key_signals", EM, signal_of(link(EM))))
    lookups = [
        h.record("identity.lookups", EM, {**lookup(), "conversion_key": f"acct:c:ev-{i}:web"})
        for i in range(3_000)
    ]
    await run(h, "keys", *lookups)
    watchers = h.table("watchers").data
    assert len(watchers) == 3_000
    assert max(len(v) for v in watchers.values()) < 300
    assert len(h.table("keys").data[EM.encode()]) < 300
    assert len(h.sent("identity.answers")) == 3_000


async def test_a_late_signal_re_answers_every_watcher_from_the_table(h: Harness) -> None:
    for i in range(3):
        conv = {**lookup(), "conversion_key": f"acct:c:ev-{i}:web"}
        await run(h, "keys", h.record("identity.lookups", EM, conv))
    await run(h, "keys", h.record("identity.key_signals", EM, signal_of(link(EM))))
    late = [a.json for a in h.sent("identity.answers") if a.json["user_id"] == U1]
    assert sorted(a["conversion_key"] for a in late) == [f"acct:c:ev-{i}:web" for i in range(3)]
    for i in range(3):
        assert h.table("watchers").value(f"{EM}|acct:c:ev-{i}:web|0")["last"] == U1


async def test_watchers_of_the_old_layout_move_to_their_table_on_the_first_write(
    h: Harness,
) -> None:
    """A keys value written before the watchers table: read, answered, then split."""
    old = {
        "signals": [],
        "clicks": [],
        "watchers": {
            f"{CONVERSION_KEY}|0": {
                "conversion_key": CONVERSION_KEY,
                "slot": "0",
                "gen": 1,
                "signal_type": "em",
                "ad_account_id": "549755885175",
                "event_time": T,
                "last": None,
                "expires_ms": NOW_MS + 10**9,
            }
        },
    }
    h.table("keys").data[EM.encode()] = orjson.dumps(old)
    await run(h, "keys", h.record("identity.key_signals", EM, signal_of(link(EM))))
    assert only(h.sent("identity.answers")).json["user_id"] == U1
    assert "watchers" not in h.table("keys").value(EM)
    moved = h.table("watchers").value(f"{EM}|{CONVERSION_KEY}|0")
    assert moved == {**old["watchers"][f"{CONVERSION_KEY}|0"], "last": U1}


async def test_a_forgotten_identifier_leaves_no_watcher_behind(h: Harness) -> None:
    await run(h, "keys", h.record("identity.key_signals", EM, signal_of(link(EM, user="gone"))))
    await run(h, "keys", h.record("identity.lookups", EM, lookup()))
    forget = {"op": "forget_user", "user_id": GONE}
    await run(h, "keys", h.record("identity.lookups", EM, forget))
    assert h.table("keys").value(EM) is None
    assert h.table("watchers").data == {}
    assert only([a for a in h.sent("identity.answers") if "op" in a.json]).json["user_id"] == GONE


async def test_a_late_signal_indexes_its_user_and_re_answers_the_watcher(h: Harness) -> None:
    await run(h, "keys", h.record("identity.lookups", EM, lookup()))
    await run(h, "signals", h.record("identity.signals", EM, link(EM)))
    await deliver(h)
    index = only(h.sent("identity.user_keys"))
    assert index.key == U1.encode()
    assert index.json == {"user_id": U1, "key": EM, "ts_ms": T * 1000 - 1}
    assert [a.json["user_id"] for a in h.sent("identity.answers")] == [None, U1]
    assert h.table("user_index").value(U1) == [EM]


async def test_a_signal_forwarded_twice_is_folded_once(h: Harness) -> None:
    """After a crash the forwarder may write the same input twice, at two offsets."""
    source = h.record("identity.signals", EM, link(EM))
    await run(h, "signals", source)
    await run(h, "signals", source)
    first, second = h.sent("identity.key_signals")
    await run(
        h,
        "keys",
        h.record("identity.key_signals", first.key, first.value),
        h.record("identity.key_signals", second.key, second.value),
    )
    assert len(h.table("keys").value(EM)["signals"]) == 1
    assert len(h.sent("identity.user_keys")) == 1


async def test_a_click_is_indexed_under_its_user(h: Harness) -> None:
    await run(h, "clicks", h.record("ads.engagements", "u1", click_engagement()))
    await deliver(h)
    assert h.table("keys").value(CLICK)["clicks"] == [[T * 1000 - 5, U1, "eng-1"]]
    assert h.table("user_index").value(U1) == [CLICK]


async def test_a_broken_lookup_is_dead_lettered_without_its_key_and_the_batch_goes_on(
    h: Harness,
) -> None:
    """A lookup's key may be a click id: neither the DLQ record nor the log carries it."""
    await run(
        h,
        "keys",
        h.record("identity.lookups", "epik-secret", b"{broken"),
        h.record("identity.lookups", EM, lookup()),
    )
    [dead] = h.sent("conversions.dlq")
    assert dead.key is None and dead.json["reason"] == "processing_error"
    assert len(h.sent("identity.answers")) == 1
    assert "epik-secret" not in str(h.log.lines)  # type: ignore[attr-defined]
    assert any(line["event"] == "processing_error" for line in h.log.lines)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ owner


async def test_an_acceptance_looks_up_each_identifier_by_its_key(h: Harness) -> None:
    await run(
        h,
        "owner",
        h.record("conversions.accepted", CONVERSION_KEY, accepted(em=[EM], click_id="epik-1")),
    )
    assert [(s.key, s.json["slot"], s.json["signal_type"]) for s in h.sent("identity.lookups")] == [
        (b"epik-1", "0", "click"),
        (EM.encode(), "1", "em"),
    ]
    assert h.table("conversions").value(CONVERSION_KEY)["gen"] == 1


async def test_a_matched_conversion_is_assigned_to_its_user(h: Harness) -> None:
    await run(h, "signals", h.record("identity.signals", EM, link(EM)))
    await run(h, "owner", h.record("conversions.accepted", CONVERSION_KEY, accepted(em=[EM])))
    await deliver(h)
    assign = only(h.sent("attribution.assignments"))
    assert assign.key == U1.encode() and assign.json["op"] == "assign"
    assert assign.json["key_type"] == "em" and "ids" not in assign.json["conv"]
    assert h.sent("attribution.results") == []


async def test_an_unmatched_conversion_is_published_unidentified(h: Harness) -> None:
    await run(h, "owner", h.record("conversions.accepted", CONVERSION_KEY, accepted(em=[EM])))
    await deliver(h)
    result = only(h.sent("attribution.results"))
    assert result.key == CONVERSION_KEY.encode() and result.json["reason"] == "no_match"


async def test_ip_ua_matches_when_both_sides_are_keyed_and_the_plain_hash_stays_out(
    h: Harness,
) -> None:
    """Ingest keys the conversion's ip_ua, the signals agent the signal's: they meet."""
    keyed = keyed_ip_ua(PLAIN_IP_UA, h.settings.active_identifier_key)
    signal = link(PLAIN_IP_UA, key_type="ip_ua")
    await run(h, "signals", h.record("identity.signals", PLAIN_IP_UA, signal))
    await run(h, "owner", h.record("conversions.accepted", CONVERSION_KEY, accepted(ip_ua=keyed)))
    await deliver(h)
    assign = only(h.sent("attribution.assignments"))
    assert assign.key == U1.encode() and assign.json["key_type"] == "ip_ua"
    assert h.table("user_index").value(U1) == [keyed]
    assert PLAIN_IP_UA.encode() not in everything_stored_and_sent(h)


async def test_an_undecodable_acceptance_is_dead_lettered_with_its_key(h: Harness) -> None:
    await run(
        h,
        "owner",
        h.record("conversions.accepted", CONVERSION_KEY, b"not json"),
        h.record("conversions.accepted", CONVERSION_KEY, accepted(em=[EM])),
    )
    [dead] = h.sent("conversions.dlq")
    assert dead.key == CONVERSION_KEY.encode() and dead.json["reason"] == "processing_error"
    assert len(h.sent("identity.lookups")) == 1


# ------------------------------------------------------------------ deletion


async def matched_user(h: Harness, user: str = "gone") -> None:
    """A conversion matched to ``user`` through EM and a click id."""
    await run(h, "signals", h.record("identity.signals", EM, link(EM, user=user)))
    await run(h, "clicks", h.record("ads.engagements", user, click_engagement(user=user)))
    await run(
        h,
        "owner",
        h.record("conversions.accepted", CONVERSION_KEY, accepted(em=[EM], click_id=CLICK)),
    )
    await deliver(h)


async def delete(h: Harness, request: dict[str, Any]) -> None:
    """A privacy.requests record through the deletions forwarder to the user index."""
    await run(h, "deletions", h.record("privacy.requests", request["user_id"], request))
    await run(
        h, "user_index", *[h.record(s.topic, s.key, s.value) for s in h.sent("identity.deletions")]
    )


def delete_request(user: str = "gone", request_id: str | None = "r-1") -> dict[str, Any]:
    request = {"user_id": user, "kind": "delete", "ts_ms": NOW_MS}
    return {**request, "request_id": request_id} if request_id else request


async def test_a_delete_clears_the_users_links_and_identifiers(h: Harness) -> None:
    await matched_user(h)
    assert {k for k, _ in h.table("keys").items()} == {EM.encode(), CLICK.encode()}
    await delete(h, delete_request())
    await deliver(h)
    assert dict(h.table("keys").items()) == {}  # no link left: deleted whole
    assert h.table("user_index").value(GONE) is None
    owner = h.table("conversions").value(CONVERSION_KEY)
    assert GONE not in str(owner) and EM not in str(owner) and CLICK not in str(owner)


async def test_a_delete_leaves_other_users_links(h: Harness) -> None:
    await matched_user(h)
    await run(h, "signals", h.record("identity.signals", EM, link(EM, user="stays", key_type="ph")))
    await deliver(h)
    await delete(h, delete_request())
    await deliver(h)
    kept = h.table("keys").value(EM)
    assert [s[3] for s in kept["signals"]] == [internal_user("stays", KEY)]


async def test_a_delete_sends_a_receipt_by_request_id_without_the_user_id(h: Harness) -> None:
    await matched_user(h)
    await delete(h, delete_request())
    receipt = only(h.sent("privacy.receipts"))
    assert receipt.key == b"r-1"
    assert receipt.json == {
        "request_id": "r-1",
        "service": "identity_match",
        "completed_at_ms": NOW_MS,
        "identifiers": 2,
    }
    assert b"gone" not in receipt.value and GONE.encode() not in receipt.value  # type: ignore[operator]


async def test_a_forgotten_user_is_logged_by_a_hash_of_the_key(h: Harness) -> None:
    await delete(h, delete_request())
    [line] = [x for x in h.log.lines if x["event"] == "user_forgotten"]  # type: ignore[attr-defined]
    assert line["key"].startswith("sha256:") and "gone" not in str(line)


async def test_opt_outs_and_invalid_requests_are_left_to_attribute(h: Harness) -> None:
    await matched_user(h)
    await run(
        h,
        "deletions",
        h.record("privacy.requests", "gone", b"not json"),
        h.record("privacy.requests", "gone", {**delete_request(), "kind": "opt_out"}),
    )
    await deliver(h)
    assert h.dead_letters() == [] and h.sent("privacy.receipts") == []
    assert h.table("user_index").value(GONE) == [EM, CLICK]


async def test_a_delete_without_request_id_still_forgets(h: Harness) -> None:
    await matched_user(h)
    await delete(h, delete_request(request_id=None))
    await deliver(h)
    assert h.sent("privacy.receipts") == [] and dict(h.table("keys").items()) == {}


async def test_no_log_line_carries_a_user_id_or_click_id(h: Harness) -> None:
    await matched_user(h)
    await delete(h, delete_request())
    await deliver(h)
    await run(h, "keys", h.record("identity.clicks", "epik-1", b"{broken"))
    logged = orjson.dumps(h.log.lines)  # type: ignore[attr-defined]
    assert h.log.lines  # type: ignore[attr-defined]
    assert b"gone" not in logged and b"epik-1" not in logged


def stored(h: Harness) -> bytes:
    return b"".join(k + v for t in h.tables.values() for k, v in t.items())


async def test_a_delete_forgets_links_dated_after_it_too(h: Harness) -> None:
    """A link's time is its sender's: one dated ahead of the deletion is the user's all the same."""
    ahead = link(EM, user="gone", ts_ms=NOW_MS + 600_000)
    await run(h, "signals", h.record("identity.signals", EM, ahead))
    await deliver(h)
    await delete(h, delete_request())
    await deliver(h)
    assert dict(h.table("keys").items()) == {}
    assert GONE.encode() not in stored(h)


async def test_a_link_replayed_after_a_delete_is_forgotten_again(h: Harness) -> None:
    """The user's link and click from before the deletion come again (a replay)."""
    await matched_user(h)
    await delete(h, delete_request())
    await deliver(h)
    await matched_user(h)  # the same signal and click, processed again
    assert dict(h.table("keys").items()) == {}
    assert GONE.encode() not in stored(h) and EM.encode() not in stored(h)
    assert any(x["event"] == "deleted_user_link_forgotten" for x in h.log.lines)  # type: ignore[attr-defined]


async def test_a_link_indexed_just_after_the_delete_is_forgotten(h: Harness) -> None:
    """The race the deletion's marker closes: the link reached its identifier
    before the delete request reached the user index, its index record after."""
    await run(h, "signals", h.record("identity.signals", EM, link(EM, user="gone")))
    forwarded = only(h.sent("identity.key_signals"))
    await run(h, "keys", h.record(forwarded.topic, forwarded.key, forwarded.value))
    late = only(h.sent("identity.user_keys"))
    await delete(h, delete_request())  # the index has nothing to forget yet
    assert h.table("keys").value(EM) is not None
    h.delivered = len(h.producer.sent)  # type: ignore[attr-defined]
    await run(h, "user_index", h.record(late.topic, late.key, late.value))
    await deliver(h)
    assert dict(h.table("keys").items()) == {}
    assert GONE.encode() not in stored(h)


async def test_a_link_after_the_delete_is_the_users_return(h: Harness) -> None:
    await delete(h, delete_request())
    after = link(EM, user="gone", ts_ms=NOW_MS + 1_000)
    await run(h, "signals", h.record("identity.signals", EM, after))
    await deliver(h)
    assert h.table("user_index").value(GONE) == [EM]
    assert [s[3] for s in h.table("keys").value(EM)["signals"]] == [GONE]


async def test_a_replayed_link_behind_the_users_return_is_forgotten(h: Harness) -> None:
    """The identifier knows the user already (their return): the replay, older
    than the return's link, still reaches the user index and is forgotten."""
    await delete(h, delete_request())
    await deliver(h)
    back = link(EM, user="gone", ts_ms=NOW_MS + 1_000)
    await run(h, "signals", h.record("identity.signals", EM, back))
    await run(h, "signals", h.record("identity.signals", EM, link(EM, user="gone")))
    await deliver(h)
    assert [s[0] for s in h.table("keys").value(EM)["signals"]] == [NOW_MS + 1_000]
    assert h.table("user_index").value(GONE) == [EM]


async def test_a_conversion_after_the_deletion_is_not_kept_by_a_replayed_link(h: Harness) -> None:
    """The replay answers a conversion from after the deletion before its
    forget comes: the conversion is decided again, its assignment retracted."""
    await delete(h, delete_request())
    await deliver(h)
    later = {**accepted(em=[EM]), "event_time": NOW_MS // 1000 + 60}
    await run(h, "owner", h.record("conversions.accepted", CONVERSION_KEY, later))
    await deliver(h)
    await run(h, "signals", h.record("identity.signals", EM, link(EM, user="gone")))
    await deliver(h)
    owner = h.table("conversions").value(CONVERSION_KEY)
    assert owner["user"] is None and owner["result"]["status"] == "unidentified"
    assert [a.json["op"] for a in h.sent("attribution.assignments")] == ["assign", "retract"]
    assert dict(h.table("keys").items()) == {}


async def test_a_delete_request_is_forwarded_by_internal_user_id_only(h: Harness) -> None:
    await run(h, "deletions", h.record("privacy.requests", "gone", delete_request()))
    forwarded = only(h.sent("identity.deletions"))
    assert forwarded.key == GONE.encode()
    assert forwarded.json == {"user_id": GONE, "request_id": "r-1", "ts_ms": NOW_MS}


async def test_nothing_stored_or_sent_carries_a_raw_user_id_or_click_id(h: Harness) -> None:
    await matched_user(h)
    stored_and_sent = everything_stored_and_sent(h)
    assert b"gone" not in stored_and_sent and b"epik-1" not in stored_and_sent
