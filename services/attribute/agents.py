"""Agents of the attribute service.

* ``intake`` (``IntakeHandler``): ads.engagements and privacy.requests
  (keyed by raw user id): checked, dead-lettered if they break a rule, and
  forwarded to attribution.user_events keyed by the internal user id
  (``shared.contract.keys.internal_user``), without click id.
* ``users`` (``UsersHandler``): per internal user id (attribution.user_events
  and attribution.assignments, co-partitioned): the user's engagements,
  assigned conversions and privacy
  state; attributes conversions on assignment and re-attributes them when a
  late engagement or a privacy request changes the outcome; forgets the user
  on a deletion (``privacy.deleted`` keeps it from coming back, a receipt goes
  to ``privacy.receipts``).
* ``publisher`` (``PublisherHandler``): per conversion_key: writes a result to
  conversions.attributed only if its order is newer than the last one
  published, so the latest record of every key is its newest result even when
  two user partitions race; with it, the report deltas and the diagnostics
  fact the new record makes (aggregate's inputs).

The handlers are each agent's per-record step (decode, rule, state, sends);
``register`` only wires them to Faust, so they run in-process in unit tests
(``tests/support/harness.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import faust
import orjson

from services.attribute import rules, state
from shared.contract import versions
from shared.contract.errors import InvalidEvent
from shared.contract.inputs import decode_engagement, decode_privacy_request
from shared.kafka.codec import key_bytes
from shared.kafka.compacted_view import CompactedView
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.key_groups import ItemWrites
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

INTAKE_INPUTS = ("ads.engagements", "privacy.requests")
INTAKE_OUTPUTS = (rules.USER_EVENTS,)
USERS_INPUTS = (rules.USER_EVENTS, "attribution.assignments")
USERS_OUTPUTS = ("attribution.results", "identity.answers", "privacy.deleted", "privacy.receipts")
PUBLISHER_OUTPUTS = ("conversions.attributed", "reports.deltas", "diagnostics.facts")
#: The inputs a conversion travels through on its way to conversions.attributed: a
#: fetch that brings their records makes the next one wake (``app``).
PATH_INPUTS = ("attribution.assignments", "attribution.results")


class IntakeHandler:
    """One ads.engagements or privacy.requests record: checked (dead-lettered if
    it breaks a rule), then forwarded by the internal user id."""

    #: Its inputs are keyed by user_id: log keys only as short hashes.
    user_keyed = True

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.identifier_key = settings.active_identifier_key
        self.outbox = outbox
        self.log = log
        self.kinds = {settings.topic_name(name): name for name in INTAKE_INPUTS}

    async def __call__(self, event: Any) -> None:
        message = event.message
        kind = self.kinds[message.topic]
        try:
            if kind == "ads.engagements":
                payload = decode_engagement(message.value)
            else:
                payload = decode_privacy_request(message.value)
                rules.requested_user(message.key, payload)
        except InvalidEvent as exc:
            # No key, no user id in the record.
            await self.outbox.dead_letter(
                exc.reason, exc.message, message, self.log, user_keyed=self.user_keyed
            )
            return
        arrival = (message.partition, message.offset)
        send = rules.forward_user_event(kind, payload, arrival, self.identifier_key)
        await self.outbox.send(send.topic, send.key, send.value)


class UsersHandler:
    """One user event (engagement, privacy request) or assignment against the
    ``users`` table, keyed by the internal user id."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        log: Any,
        deleted: CompactedView,
        windows_of: Callable[[str], Mapping[str, int]] = rules.default_windows,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log
        #: privacy.deleted: global pseudonym -> deleted_at_ms (``deleted_users_view``).
        self.deleted = deleted
        self.windows_of = windows_of
        self.identifier_key = settings.active_identifier_key
        self.kinds = {settings.topic_name(name): name for name in USERS_INPUTS}
        self.dropped = 0

    async def __call__(self, event: Any, users: StateCache) -> None:
        message = event.message
        payload = orjson.loads(message.value)
        arrival = 0
        kind = self.kinds[message.topic]
        if kind == rules.USER_EVENTS:
            # Checked by the intake; ordered by its position in the input topic.
            kind, arrival = payload["topic"], int(payload["arrival"][1])
            payload = payload["event"]
        user_id = message.key.decode()
        keys = self.settings.active_pseudonym_keys
        if kind == "privacy.requests" and payload["kind"] == "delete":
            await self.delete(user_id, payload, users, event)
            return
        deleted_at_ms = self.deleted_at_ms(user_id)
        if rules.predates_deletion(rules.input_time_ms(kind, payload), deleted_at_ms):
            self.dropped += 1  # never the user id in a log line
            self.log.info("deleted_user_input_dropped", topic=kind, dropped_total=self.dropped)
            if kind == "attribution.assignments" and deleted_at_ms is not None:
                now_ms = versions.now_ms()
                ctx = rules.Context(user_id, keys, self.windows_of, now_ms, self.identifier_key)
                expires_ms = now_ms + self.settings.late_horizon_s * 1000
                sends = rules.on_assign_of_deleted_user(payload, ctx, expires_ms)
                await self.outbox.send_all(sends)
            return
        own_name = payload.get("conversion_key") if kind == "attribution.assignments" else None
        stored = read_parts(users, user_id, event, name=own_name)
        user = state.decode_user(users.get(message.key, event), stored)
        now_ms = versions.now_ms()
        ctx = rules.Context(user_id, keys, self.windows_of, now_ms, self.identifier_key)
        concerned = rules.concerned_parts(user, kind, payload, ctx)
        if kind == "ads.engagements":
            user, sends = rules.on_engagement(user, payload, ctx)
        elif kind == "privacy.requests":
            user, sends = rules.on_privacy_request(user, payload, arrival, ctx)
        elif payload["op"] == "assign":
            expires_ms = now_ms + self.settings.late_horizon_s * 1000
            user, sends = rules.on_assign(user, payload, ctx, expires_ms)
        else:
            user, sends = rules.on_retract(user, payload)
        await self.outbox.send_all(sends)
        trimmed = rules.trim(user, now_ms)
        # In the order of state.PART_KINDS, then the user's own value (it says why).
        write_parts(users, user_id, state.part_writes(stored, trimmed, concerned), event)
        # Unchanged (a redelivery) is written again too: see StateCache.rewrite.
        users.put(message.key, state.encode_user(trimmed), event)

    async def delete(self, user_id: str, request: Any, users: StateCache, event: Any) -> None:
        message = event.message
        stored = read_parts(users, user_id, event, every_name=True)
        user = state.decode_user(users.get(message.key, event), stored)
        keys = self.settings.active_pseudonym_keys
        ctx = rules.Context(user_id, keys, self.windows_of, versions.now_ms(), self.identifier_key)
        _, sends = rules.on_delete(user, request, ctx)
        await self.outbox.send_all(sends)
        write_parts(users, user_id, state.part_writes(stored, None, state.Concerned()), event)
        # A tombstone in the changelog, even when a redelivery finds the store without
        # the key (StateCache.put).
        users.put(message.key, None, event, always=True)
        for send in sends:
            if send.topic == rules.DELETED:
                # This worker drops a replay at once, before its view reads the topic.
                self.deleted.apply(key_bytes(send.key), orjson.dumps(send.value))
        self.log.info("user_deleted", conversions_scrubbed=len(rules.named_conversions(user)))

    def deleted_at_ms(self, user_id: str) -> int | None:
        """Up to when the user is deleted, if they are (under any pseudonym key)."""
        found = [
            self.deleted.get(k)
            for k in rules.deleted_keys(user_id, self.settings.active_pseudonym_keys)
        ]
        return max((at for at in found if at is not None), default=None)


def read_parts(
    users: StateCache,
    user_id: str,
    event: Any,
    *,
    name: str | None = None,
    every_name: bool = False,
) -> state.UserParts:
    """The user's parts kept under keys of their own: every engagement and
    conversion (the rules read them all) and of the names, which grow with every
    conversion the user ever had, only ``name`` (an assignment asks whether its
    conversion is known) or, for a deletion, ``every_name``."""

    def items(kind: str) -> dict[str, Any]:
        prefix = state.part_prefix(user_id, kind).encode()
        found = users.with_prefix(prefix, event)
        return {key[len(prefix) :].decode(): value for key, value in found.items()}

    named: frozenset[str] = frozenset()
    if every_name:
        named = frozenset(items("named"))
    elif name is not None:
        known = users.get(state.part_key(user_id, "named", name).encode(), event)
        named = frozenset({name}) if known is not None else frozenset()
    return state.UserParts(
        engagements={k: state.decode_engagement(v) for k, v in items("engagements").items()},
        convs={k: state.decode_assigned(v) for k, v in items("convs").items()},
        named=named,
    )


def write_parts(
    users: StateCache, user_id: str, writes: Mapping[str, ItemWrites], event: Any
) -> None:
    for kind, kind_writes in writes.items():
        for item, value in kind_writes.puts.items():
            users.put(state.part_key(user_id, kind, item).encode(), value, event)
        for item in kind_writes.deletes:
            users.put(state.part_key(user_id, kind, item).encode(), None, event)


class PublisherHandler:
    """One attribution.results message against the ``published`` table."""

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log

    async def __call__(self, event: Any, published: StateCache) -> None:
        message = event.message
        result = orjson.loads(message.value)
        last = state.decode_published(published.get(message.key, event))
        conversion_key = message.key.decode()
        now_ms = versions.now_ms()
        if result.get("op") == "scrub":
            new, sends = rules.on_scrub(last, conversion_key, result, now_ms)
        else:
            new, sends = rules.on_result(last, conversion_key, result, now_ms)
            if not sends:
                published.rewrite(message.key, event)  # not newer than what was published
                return
        if new is not None and sends:
            await self.outbox.send_all(sends)
            await self.tell_aggregate(last, sends[0].value, event, result.get("lane_user"))
            if result.get("op") != "scrub":
                self.outbox.metrics.published_result(sends[0].value)
            published.put(message.key, state.encode_published(new), event)

    async def tell_aggregate(
        self, last: Any, record: Any, event: Any, lane_user: str | None
    ) -> None:
        """The record's report deltas and fact, sent with it.

        A record these cannot be made of is still published; its input is
        dead-lettered (``report_error``) so that the reports' gap is seen.
        """
        try:
            sends = rules.aggregate_inputs(last, record, lane_user)
        except Exception as exc:  # noqa: BLE001 - our own record: a bug, not input
            text = f"{type(exc).__name__} while making the report deltas"
            await self.outbox.dead_letter("report_error", text, event.message, self.log)
            return
        await self.outbox.send_all(sends)


def deleted_users_view(settings: Settings) -> CompactedView:
    """privacy.deleted, read whole by every worker: pseudonym -> deleted_at_ms."""
    topic = settings.topic_name("privacy.deleted")
    return CompactedView(settings, topic, rules.parse_deleted)


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    users = raw_table(app, settings, "users")
    published = raw_table(app, settings, "published")
    accounts = CompactedView(
        settings, settings.topic_name("accounts.settings"), rules.parse_account_settings
    )

    def windows_of(ad_account_id: str) -> Mapping[str, int]:
        windows: Mapping[str, int] | None = accounts.get(ad_account_id)
        return windows or rules.DEFAULT_WINDOWS_MS

    deleted = deleted_users_view(settings)
    app.task(accounts.run)  # follows accounts.settings in every worker
    app.task(deleted.run)  # follows privacy.deleted in every worker

    @app.agent(raw_topic(app, settings, *INTAKE_INPUTS), name="intake")
    async def intake(stream: Any) -> None:
        outbox = Outbox(app, settings, *INTAKE_OUTPUTS)
        handler = IntakeHandler(settings, outbox, log)
        await process(stream, settings, outbox, handler, log=log, user_keyed=handler.user_keyed)

    @app.agent(raw_topic(app, settings, *USERS_INPUTS), name="users")
    async def users_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, *USERS_OUTPUTS)
        handler = UsersHandler(settings, outbox, log, deleted, windows_of)
        await accounts.ready.wait()  # never attribute with windows not yet read
        await deleted.ready.wait()  # nor bring back a user deleted before this start
        await process(stream, settings, outbox, handler, users, log=log, user_keyed=True)

    @app.agent(raw_topic(app, settings, "attribution.results"), name="publisher")
    async def publisher(stream: Any) -> None:
        outbox = Outbox(app, settings, *PUBLISHER_OUTPUTS)
        handler = PublisherHandler(settings, outbox, log)
        await process(stream, settings, outbox, handler, published, log=log)
