"""Helpers of the agents (shared/runtime/batching.py): failure policy and state cache."""

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from shared.runtime.batching import DLQ, DeadLetterOnError, Outbox, StateCache
from shared.runtime.pipeline import write_table


class FakeOutbox:
    dead_letter = Outbox.dead_letter  # the real policy over a recording send()

    def __init__(self):
        self.sent = []

    async def send(self, topic, key, value):
        self.sent.append((topic, key, value))


class FakeLog:
    def __init__(self):
        self.errors = []

    def error(self, event, **fields):
        self.errors.append((event, fields))

    def warning(self, event, **fields):
        pass


def event(value=b"\xffbad"):
    message = SimpleNamespace(
        topic="t.conversions.valid", partition=3, offset=42, key=b"k", value=value
    )
    return SimpleNamespace(message=message)


async def process(guard, ev, fail):
    async with guard(ev):
        if fail:
            raise ValueError("boom")
    return "went on"


def test_a_failing_message_is_dead_lettered_and_processing_goes_on():
    outbox, log = FakeOutbox(), FakeLog()
    guard = DeadLetterOnError(outbox, log)
    assert asyncio.run(process(guard, event(), fail=True)) == "went on"
    [(topic, key, record)] = outbox.sent
    assert (topic, key) == (DLQ, b"k")
    assert record["reason"] == "processing_error"
    assert (record["source_topic"], record["partition"], record["offset"]) == (
        "t.conversions.valid",
        3,
        42,
    )
    assert log.errors[0][1]["offset"] == 42


def test_a_message_that_succeeds_sends_nothing_to_the_dlq():
    outbox, log = FakeOutbox(), FakeLog()
    asyncio.run(process(DeadLetterOnError(outbox, log), event(b"{}"), fail=False))
    assert outbox.sent == [] and log.errors == []


def test_cancellation_is_not_swallowed():
    outbox, log = FakeOutbox(), FakeLog()
    guard = DeadLetterOnError(outbox, log)

    async def cancelled():
        async with guard(event()):
            raise asyncio.CancelledError

    try:
        asyncio.run(cancelled())
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("CancelledError must propagate")
    assert outbox.sent == []


def test_user_keyed_messages_are_dead_lettered_without_their_key_and_logged_hashed():
    outbox, log = FakeOutbox(), FakeLog()
    asyncio.run(process(DeadLetterOnError(outbox, log, user_keyed=True), event(), fail=True))
    [(_topic, key, _record)] = outbox.sent
    assert key is None
    assert log.errors[0][1]["key"].startswith("sha256:")


def test_a_dead_lettered_engagement_never_carries_its_user_or_click_id():
    """conversions.dlq keeps 30 days: user-keyed inputs must not leave their user id there."""
    engagement = (
        b'{"engagement_id": "e-81", "user_id": "u-secret-17", "ad_account_id": "549755885175",'
        b' "type": "click", "ts_ms": 1764150000000, "click_id": "epik-secret"}'
    )
    outbox, log = FakeOutbox(), FakeLog()
    guard = DeadLetterOnError(outbox, log, user_keyed=True)
    asyncio.run(process(guard, event(engagement), fail=True))
    [(_topic, _key, record)] = outbox.sent
    assert "u-secret-17" not in record["raw"] and "epik-secret" not in record["raw"]
    assert '"engagement_id":"e-81"' in record["raw"]
    assert record["ad_account_id"] == "549755885175"


def test_a_dead_lettered_conversion_never_carries_its_click_id():
    valid = b'{"conversion_key": "1:lead:ev-1:online", "ids": {"click_id": "dj0yJnU9secret"}}'
    outbox, log = FakeOutbox(), FakeLog()
    asyncio.run(process(DeadLetterOnError(outbox, log), event(valid), fail=True))
    [(_topic, _key, record)] = outbox.sent
    assert "dj0yJnU9secret" not in record["raw"] and "1:lead:ev-1:online" in record["raw"]


def test_an_unparsable_dead_letter_is_redacted_as_text():
    outbox, log = FakeOutbox(), FakeLog()
    bad = b'{"user_id": "u-secret-17", "privacy": '
    asyncio.run(process(DeadLetterOnError(outbox, log, user_keyed=True), event(bad), fail=True))
    [(_topic, _key, record)] = outbox.sent
    assert "u-secret-17" not in record["raw"] and record["ad_account_id"] is None


class RecordingTable(dict):
    """A table stand-in: every write is a changelog record."""

    def __init__(self, *args):
        super().__init__(*args)
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)


class Event:  # Faust routes table access through a weak reference to the event
    def __init__(self):
        self.message = event().message


def test_rewrite_sends_an_already_applied_value_to_the_changelog_again():
    """A redelivery that finds its effect in the local store writes it once more."""

    table = RecordingTable({b"k": b'{"n":1}'})
    cache = StateCache(table)
    ev = Event()
    cache.rewrite(b"k", ev)
    cache.rewrite(b"absent", ev)
    asyncio.run(write_table(cache.table, cache.take_writes()))
    assert table.writes == [b"k"] and table[b"k"] == b'{"n":1}'


def test_a_tombstone_of_a_key_the_store_lacks_is_left_out():
    cache = StateCache(RecordingTable())
    cache.put(b"absent", None, Event())
    assert cache.take_writes() == []


def test_a_tombstone_put_always_is_written_even_when_the_store_lacks_the_key():
    """A redelivered deletion: the store dropped the key, the changelog may still have it."""
    cache = StateCache(RecordingTable())
    cache.put(b"absent", None, Event(), always=True)
    assert cache.take_writes() == [(3, b"absent", None)]
    cache.put(b"absent", None, Event())
    assert cache.take_writes() == []  # ``always`` lasts one batch


def test_staged_tells_the_keys_a_batch_has_put_until_its_writes_are_taken():
    cache = StateCache(RecordingTable({b"k": b'{"n":1}'}))
    ev = Event()
    cache.get(b"k", ev)
    assert not cache.staged(b"k")  # read, not written
    cache.put(b"k", {"n": 2}, ev)
    assert cache.staged(b"k") and cache.staged_value(b"k") == {"n": 2}
    cache.take_writes()
    assert not cache.staged(b"k")
    with pytest.raises(KeyError):
        cache.staged_value(b"k")


class FlakyRun:
    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    async def __call__(self, events):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("broker unreachable")


class ForgettingOutbox:
    def __init__(self):
        self.forgotten = 0

    def forget_pending(self):
        self.forgotten += 1


def test_a_failed_batch_is_run_again_until_it_succeeds(monkeypatch):
    """The batch is retried, never skipped; each failure is logged."""
    from shared.runtime import batching

    monkeypatch.setattr("shared.runtime.pipeline.RETRY_FIRST_S", 0.0)
    run, outbox, log = FlakyRun(failures=2), ForgettingOutbox(), FakeLog()
    asyncio.run(batching.until_done(run, [event()], outbox, log))
    assert run.calls == 3 and outbox.forgotten == 2
    assert [e for e, _ in log.errors] == ["batch_failed", "batch_failed"]
    assert log.errors[-1][1]["attempt"] == 2


def test_a_cancelled_batch_is_not_retried():
    from shared.runtime import batching

    async def cancelled(events):
        raise asyncio.CancelledError

    try:
        asyncio.run(batching.until_done(cancelled, [], ForgettingOutbox(), FakeLog()))
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("cancellation must propagate")


def test_with_prefix_sees_the_store_and_the_batchs_own_writes():
    """Staged puts are included, staged deletes hide stored keys, other prefixes are not."""
    table = RecordingTable({b"a|1": b"1", b"a|2": b"2", b"b|1": b"3"})
    cache = StateCache(table)
    ev = Event()
    cache.put(b"a|3", 4, ev)
    cache.put(b"a|2", None, ev)
    cache.put(b"b|2", 5, ev)
    assert cache.with_prefix(b"a|", ev) == {b"a|1": 1, b"a|3": 4}


def test_with_prefix_of_a_group_and_of_any_other_prefix_see_the_same_writes():
    """A group prefix (its only ``|`` at the end) reads an index; a key with ``|`` inside its
    owner (a report row's JSON) is found by a scan."""
    cache = StateCache(RecordingTable({b"u|0": b"0"}))
    ev = Event()
    cache.put(b"u|1", 1, ev)
    cache.put(b"u|2|x", 2, ev)
    cache.put(b"uv|1", 3, ev)
    cache.put(b'["a|b"]|c', 4, ev)
    assert cache.with_prefix(b"u|", ev) == {b"u|0": 0, b"u|1": 1, b"u|2|x": 2}
    assert cache.with_prefix(b'["a|b"]|', ev) == {b'["a|b"]|c': 4}
    cache.take_writes()
    assert cache.with_prefix(b"u|", ev) == {b"u|0": 0}


def _takes(**kwargs):
    """The FakeStream an empty run of ``process`` took from, with ``kwargs`` for process."""
    from shared.runtime.batching import process
    from shared.runtime.settings import Settings
    from tests.support.harness import FakeApp, FakeProducer, FakeStream

    settings = Settings(dev_mode=True)
    outbox = Outbox(FakeApp(FakeProducer({})), settings)

    async def handle(_event):
        return None

    stream = FakeStream([])
    asyncio.run(process(stream, settings, outbox, handle, log=FakeLog(), **kwargs))
    return stream


def test_the_batch_window_is_the_settings_unless_the_agent_gives_its_own():
    """Agents off the conversions' path (diagnostics) pass a longer window."""
    from shared.runtime.settings import Settings

    assert _takes().windows == [Settings(dev_mode=True).batch_within_s]
    assert _takes(within_s=0.5).windows == [0.5]


def test_only_agents_on_the_settings_window_end_batches_with_their_fetch():
    """A window of the agent's own asks for larger batches: it keeps Faust's tick."""
    assert _takes().per_fetch == [True] and _takes(within_s=0.5).per_fetch == [False]


def _bundle_event(value):
    from tests.support.harness import FakeEvent, FakeMessage

    return FakeEvent(FakeMessage("t.identity.lookups", b"first", value, partition=5, offset=9))


def _run_handler(events):
    """process() over one batch; what the handler saw and what was dead-lettered."""
    from shared.runtime.batching import process
    from shared.runtime.settings import Settings
    from tests.support.harness import FakeApp, FakeProducer, FakeStream

    settings = Settings(dev_mode=True)
    producer = FakeProducer({})
    outbox = Outbox(FakeApp(producer), settings)
    seen = []

    async def handle(item):
        if item.message.value == b"boom":
            raise ValueError("boom")
        seen.append((item.message.key, item.message.value, item.message.partition))

    asyncio.run(process(FakeStream([events]), settings, outbox, handle, log=FakeLog()))
    dead = [orjson.loads(sent.value) for sent in producer.sent]
    return seen, dead, outbox.metrics


def test_each_item_of_a_bundle_is_handled_as_its_own_record_in_the_bundles_partition():
    from shared.kafka import bundles

    ((_, value),) = bundles.pack([(b"a", b"1"), (b"b", b"2")])
    event = _bundle_event(value)
    seen, dead, _ = _run_handler([event])
    assert seen == [(b"a", b"1", 5), (b"b", b"2", 5)]
    assert dead == [] and event.message.acked


def test_a_failing_item_is_dead_lettered_alone():
    from shared.kafka import bundles

    ((_, value),) = bundles.pack([(b"a", b"1"), (b"b", b"boom"), (b"c", b"3")])
    seen, dead, _ = _run_handler([_bundle_event(value)])
    assert [key for key, _, _ in seen] == [b"a", b"c"]
    assert [(d["reason"], d["offset"]) for d in dead] == [("processing_error", 9)]


def test_a_bundle_cut_short_is_dead_lettered_whole_and_the_batch_goes_on():
    from shared.kafka import bundles
    from tests.support.harness import FakeEvent, FakeMessage

    ((_, value),) = bundles.pack([(b"a", b"1"), (b"b", b"2")])
    after = FakeEvent(FakeMessage("t.identity.lookups", b"z", b"plain", partition=5, offset=10))
    events = [_bundle_event(value[:-1]), after]
    seen, dead, _ = _run_handler(events)
    assert seen == [(b"z", b"plain", 5)]
    assert [d["offset"] for d in dead] == [9]
    assert all(event.message.acked for event in events)


def test_records_in_count_a_bundles_items():
    """convmesh_records_in_total counts records as the handlers see them, like records out."""
    from shared.kafka import bundles

    ((_, value),) = bundles.pack([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    _, _, metrics = _run_handler([_bundle_event(value)])
    assert b'convmesh_records_in_total{topic="t.identity.lookups"} 3.0' in metrics.exposition()


def test_a_take_of_bundles_is_processed_in_batches_of_at_most_the_batch_size():
    """A take of bundles once held a whole full-speed push in one batch (714 MB RSS)."""
    from shared.kafka import bundles
    from shared.runtime.batching import chunks_by_items

    def bundle_of(n):
        ((_, value),) = bundles.pack([(b"k", b"v")] * n)
        return _bundle_event(value)

    events = [bundle_of(3), bundle_of(3), event(b"{}"), bundle_of(9), bundle_of(2)]
    chunks = chunks_by_items(events, 7)
    assert [len(chunk) for chunk in chunks] == [3, 1, 1]  # 3+3+1, then 9 alone, then 2
    assert [e for chunk in chunks for e in chunk] == events


def test_bundling_follows_topics_yaml_and_can_be_turned_off_for_an_upgrade():
    """CONVMESH_BUNDLE_RECORDS=false sends plain records (docs/operations.md)."""
    from shared.runtime.settings import Settings
    from tests.support.harness import FakeApp, FakeProducer

    def bundled(settings):
        box = Outbox(FakeApp(FakeProducer({})), settings, "identity.lookups", "privacy.receipts")
        return box._bundled

    on = Settings(dev_mode=True)
    assert bundled(on) == {on.topic_name("identity.lookups")}
    assert bundled(Settings(dev_mode=True, bundle_records=False)) == frozenset()


def _outbox():
    from shared.runtime.settings import Settings
    from tests.support.harness import FakeApp, FakeProducer

    return Outbox(FakeApp(FakeProducer({})), Settings(dev_mode=True), "conversions.valid")


def _records_out(outbox):
    text = outbox.metrics.exposition()
    line = b'convmesh_records_out_total{topic="conversions.valid"} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


def test_a_batchs_outputs_count_as_sent_when_the_batch_hands_them_on():
    outbox = _outbox()
    for n in range(3):
        asyncio.run(outbox.send("conversions.valid", f"k{n}", {"received_at_ms": 1}))
    assert _records_out(outbox) == 0.0
    assert len(outbox.take_staged()) == 3
    assert _records_out(outbox) == 3.0
    count = b'convmesh_end_to_end_latency_seconds_count{topic="conversions.valid"} 3.0'
    assert count in outbox.metrics.exposition().splitlines()


def test_the_sends_of_a_failed_batch_are_not_counted():
    outbox = _outbox()
    asyncio.run(outbox.send("conversions.valid", "k", {"received_at_ms": 1}))
    outbox.forget_pending()
    asyncio.run(outbox.send("conversions.valid", "k", {"received_at_ms": 1}))
    outbox.take_staged()
    assert _records_out(outbox) == 1.0


def test_an_agent_given_several_tables_refuses_one_without_the_write_ahead_log():
    from shared.runtime.app import refuse_tables_without_wal
    from shared.runtime.errors import ConfigError

    logged = SimpleNamespace(name="keys", needs_wal=True)
    alone = SimpleNamespace(name="conversions", needs_wal=False)
    refuse_tables_without_wal((alone,))  # written alone: fine
    refuse_tables_without_wal((logged, logged))
    with pytest.raises(ConfigError, match="conversions"):
        refuse_tables_without_wal((logged, alone))


def test_a_dead_letter_of_a_failed_batch_is_not_counted_as_a_reject():
    outbox = _outbox()
    message = SimpleNamespace(
        topic="t.conversions.valid", partition=0, offset=1, key=b"k", value=b"x"
    )
    asyncio.run(outbox.dead_letter("bad_json", "text", message, FakeLog()))
    outbox.forget_pending()
    asyncio.run(outbox.dead_letter("bad_json", "text", message, FakeLog()))
    outbox.take_staged()
    rejects = [
        row
        for row in outbox.metrics.exposition().splitlines()
        if row.startswith(b"convmesh_rejects_total{")
    ]
    assert len(rejects) == 1 and rejects[0].endswith(b" 1.0")
