"""The agents' failure policy (shared/batching.py: DeadLetterOnError)."""

import asyncio
from types import SimpleNamespace

from shared.batching import DLQ, DeadLetterOnError, Outbox


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
    message = SimpleNamespace(topic="t.conversions.valid", partition=3, offset=42, key=b"k",
                              value=value)
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
        "t.conversions.valid", 3, 42)
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
