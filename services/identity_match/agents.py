"""Agents of identity_match.

Inside identity_match every click id and user id is the internal (keyed) one
(``shared.contract.keys``): the forwarders replace them before anything is
stored or sent.

* ``clicks``: click engagements re-keyed by internal click id (identity.clicks).
* ``deletions``: delete requests of privacy.requests re-keyed by internal user
  id (identity.deletions), the partitioning of the user index.
* ``signals``: identity signals re-keyed by their internal identifier
  (identity.key_signals): an ip_ua key becomes its keyed form, so that the
  plain hash is never stored and the signal lands in the partition of the
  keyed lookups.
* ``keys``: per identifier: signal history and clicks (``keys`` table), and
  the conversions watching the identifier (``watchers`` table, one key each);
  answers them, and re-answers when a late signal or click changes what they
  resolve to.
* ``owner``: per conversion_key: combines the answers in priority order and
  assigns the conversion to its user (or publishes it as unidentified).
* ``user_index``: per internal user id: the identifiers a user was seen with, so that a
  deletion reaches all of them; a receipt per delete request.

Each agent's per-record step is a handler class (decode, rule, state, sends);
``register`` only wires them to Faust, so the steps run in-process in unit
tests (``tests/support/harness.py``).

No log line or dead letter carries a click id, a user id or an unkeyed
ip_ua hash: a handler whose input keys can be one says so (``user_keyed``),
and its keys are logged only as short hashes (and left out of dead letters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import faust
import orjson

from services.identity_match import rules, state
from shared.contract import versions
from shared.contract.errors import InvalidEvent
from shared.contract.inputs import decode_engagement, decode_privacy_request, decode_signal
from shared.contract.records import Send
from shared.runtime.app import raw_table, raw_tables, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.metrics import Metrics
from shared.runtime.settings import Settings

Clock = Callable[[], int]

CLICKS_OUTPUTS = ("identity.clicks",)
SIGNALS_OUTPUTS = ("identity.key_signals",)
KEYS_INPUTS = ("identity.key_signals", "identity.clicks", "identity.lookups")
KEYS_OUTPUTS = ("identity.answers", "identity.user_keys")
#: The keys agent's tables, in the order a batch writes them: watchers first
#: (KeysHandler says why).
KEYS_TABLES = ("watchers", "keys")
OWNER_INPUTS = ("conversions.accepted", "identity.answers")
OWNER_OUTPUTS = ("identity.lookups", "attribution.assignments", "attribution.results")
DELETIONS_OUTPUTS = ("identity.deletions",)
INDEX_INPUTS = ("identity.user_keys", "identity.deletions")
INDEX_OUTPUTS = ("identity.lookups", "privacy.receipts")
#: The inputs a conversion travels through (owner -> keys -> owner): a fetch that
#: brings their records makes the next one wake (``app``).
PATH_INPUTS = ("conversions.accepted", "identity.lookups", "identity.answers")


class SkippingForwarder:
    """One record of an input attribute also reads: decoded and forwarded under
    its internal key, or skipped when it does not decode (attribute, the other
    consumer, dead-letters it once)."""

    #: Its inputs are keyed by user_id: log keys only as short hashes.
    user_keyed: ClassVar[bool] = True

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        log: Any,
        decode: Callable[[bytes | None], dict[str, Any]],
        forward: Callable[[dict[str, Any], str], list[Send]],
    ) -> None:
        self.identifier_key = settings.active_identifier_key
        self.outbox = outbox
        self.log = log
        self.decode = decode
        self.forward = forward

    async def __call__(self, event: Any) -> None:
        try:
            item = self.decode(event.message.value)
        except InvalidEvent:
            return
        await self.outbox.send_all(self.forward(item, self.identifier_key))


def ClickForwarder(settings: Settings, outbox: Outbox, log: Any) -> SkippingForwarder:  # noqa: N802
    """ads.engagements: a click goes on, keyed by its internal click id."""
    return SkippingForwarder(settings, outbox, log, decode_engagement, rules.forward_click)


def DeletionForwarder(settings: Settings, outbox: Outbox, log: Any) -> SkippingForwarder:  # noqa: N802
    """privacy.requests: a delete request goes on, keyed by the internal user id."""
    return SkippingForwarder(settings, outbox, log, decode_privacy_request, rules.forward_deletion)


class SignalForwarder:
    """One identity.signals record: checked, then forwarded by its internal key."""

    #: Its inputs are keyed by identifier hashes, unkeyed ip_ua hashes among
    #: them: log keys only as short hashes.
    user_keyed: ClassVar[bool] = True

    def __init__(self, settings: Settings, outbox: Outbox, log: Any) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log

    async def __call__(self, event: Any) -> None:
        message = event.message
        try:
            signal = decode_signal(message.value)
        except InvalidEvent as exc:
            await self.outbox.dead_letter(
                exc.reason, exc.message, message, self.log, user_keyed=self.user_keyed
            )
            return
        identifier_key = self.settings.active_identifier_key
        send = rules.forward_signal(signal, message.partition, message.offset, identifier_key)
        await self.outbox.send_all([send])


class KeysHandler:
    """One identity.key_signals, identity.clicks or identity.lookups record
    against the ``keys`` table (per identifier)."""

    #: Its inputs are keyed by identifiers, click_ids among them: log keys only as short hashes.
    user_keyed: ClassVar[bool] = True

    def __init__(
        self, settings: Settings, outbox: Outbox, log: Any, clock: Clock = versions.now_ms
    ) -> None:
        self.outbox = outbox
        self.log = log
        self.clock = clock
        self.horizon_ms = settings.late_horizon_s * 1000
        self.kinds = {settings.topic_name(name): name for name in KEYS_INPUTS}

    async def __call__(self, event: Any, watchers: StateCache, keys: StateCache) -> None:
        message = event.message
        topic = self.kinds[message.topic]
        payload = orjson.loads(message.value)
        key = message.key.decode()
        kind = input_kind(topic, payload)
        stored = stored_watchers(watchers, key, kind, payload, event)
        current = state.decode_keys(keys.get(message.key, event), stored)
        now_ms = self.clock()
        new: state.KeyState | None
        if kind == "signal":
            new, sends = rules.on_signal(current, key, payload, now_ms)
        elif kind == "click":
            new, sends = rules.on_click(current, key, payload, now_ms)
        elif kind == "forget":
            up_to_ms = payload.get("up_to_ms")
            new, sends = rules.on_forget(current, key, payload["user_id"], up_to_ms)
        else:
            new, sends = rules.on_lookup(current, payload, now_ms, self.horizon_ms)
        await self.outbox.send_all(sends)
        # The watchers before the keys value (the tables' order in ``register``),
        # each acked before the next: a crash leaves watchers newer than the
        # signals they were answered from, and a redelivery writes them again.
        puts, deletes = rules.watcher_writes(stored, new, rules.concerned_watchers(kind, payload))
        for name, watcher in puts.items():
            encoded = state.encode_watcher(watcher)
            watchers.put(state.watcher_key(key, name).encode(), encoded, event)
        # A forget's tombstones are always logged (see StateCache.put).
        forget = kind == "forget"
        for name in deletes:
            watchers.put(state.watcher_key(key, name).encode(), None, event, always=forget)
        value = state.encode_keys(new)
        if kind == "lookup" and value == keys.get(message.key, event):
            # A lookup folds no signal or click: its effect is its watcher (written
            # above). The identifier's value is written only when the lookup moves
            # watchers of the old layout out of it (a redelivered lookup finding that
            # move already in the store does not write it again: until the next signal,
            # click or forget, the changelog may keep the old layout). Unchanged by a
            # signal, click or forget (a redelivery) is written again: StateCache.rewrite.
            return
        keys.put(message.key, value, event, always=forget)


def input_kind(topic: str, payload: dict[str, Any]) -> str:
    """signal, click, forget (a forget_user lookup) or lookup."""
    if topic == "identity.key_signals":
        return "signal"
    if topic == "identity.clicks":
        return "click"
    return "forget" if payload.get("op") == "forget_user" else "lookup"


def stored_watchers(
    watchers: StateCache, key: str, kind: str, payload: dict[str, Any], event: Any
) -> dict[str, state.Watcher]:
    """The identifier's watchers the input needs, by name, as the table has them."""
    if not rules.reads_every_watcher(kind, payload):
        name = state.watcher_name(payload["conversion_key"], payload["slot"])
        value = watchers.get(state.watcher_key(key, name).encode(), event)
        return {name: state.decode_watcher(value)} if value is not None else {}
    prefix = state.watcher_prefix(key).encode()
    return {
        stored[len(prefix) :].decode(): state.decode_watcher(value)
        for stored, value in watchers.with_prefix(prefix, event).items()
    }


class OwnerHandler:
    """One conversions.accepted or identity.answers record against the
    ``conversions`` table (per conversion_key)."""

    #: Its inputs are keyed by conversion_key, logged as they are.
    user_keyed: ClassVar[bool] = False

    def __init__(
        self, settings: Settings, outbox: Outbox, log: Any, clock: Clock = versions.now_ms
    ) -> None:
        self.outbox = outbox
        self.log = log
        self.clock = clock
        self.accepted_topic = settings.topic_name("conversions.accepted")

    async def __call__(self, event: Any, conversions: StateCache) -> None:
        message = event.message
        conversion_key = message.key.decode()
        current = state.decode_owner(conversions.get(message.key, event))
        payload = orjson.loads(message.value)
        sends: list[Send] = []
        new: state.OwnerState | None
        if message.topic == self.accepted_topic:
            new, sends = rules.on_accepted(current, conversion_key, payload, self.clock())
        elif payload.get("op") == "forget_user":
            new = rules.on_owner_forget(current, payload["user_id"])
        else:
            new, sends = rules.on_answer(current, conversion_key, payload, self.clock())
        await self.outbox.send_all(sends)
        count_match_decisions(self.outbox.metrics, sends)
        # Unchanged (a redelivery, a stale answer) is written again too: see
        # StateCache.rewrite; nothing is written for a key without state.
        conversions.put(message.key, state.encode_owner(new), event)


def count_match_decisions(metrics: Metrics, sends: list[Any]) -> None:
    """A conversion's match, decided: matched per key type, or unidentified."""
    for send in sends:
        value = send.value if isinstance(send.value, dict) else {}
        if send.topic == "attribution.assignments" and value.get("op") == "assign":
            metrics.match(str(value.get("key_type")), "matched")
        elif send.topic == "attribution.results" and value.get("status") == "unidentified":
            metrics.match("none", "unidentified")


class UserIndexHandler:
    """One identity.user_keys or identity.deletions record against the
    ``user_index`` table (per internal user id)."""

    #: Its inputs are keyed by user_id: log keys only as short hashes.
    user_keyed: ClassVar[bool] = True

    def __init__(
        self, settings: Settings, outbox: Outbox, log: Any, clock: Clock = versions.now_ms
    ) -> None:
        self.outbox = outbox
        self.log = log
        self.clock = clock
        self.user_keys_topic = settings.topic_name("identity.user_keys")
        self.identifier_key = settings.active_identifier_key

    async def __call__(self, event: Any, index: StateCache) -> None:
        message = event.message
        known = state.decode_user_index(index.get(message.key, event))
        payload = orjson.loads(message.value)
        marker_key = state.deletion_marker_key(payload["user_id"], self.identifier_key)
        deleted_at_ms = state.decode_deletion_marker(index.get(marker_key, event))
        if message.topic == self.user_keys_topic:
            grown, sends = rules.on_user_key(known, deleted_at_ms, payload)
            if sends:
                # A link from before the user's deletion: forgotten, not indexed.
                await self.outbox.send_all(sends)
                fields = message_fields(message, user_keyed=self.user_keyed)
                self.log.info("deleted_user_link_forgotten", **fields)
                return
            index.put(message.key, state.encode_user_index(grown), event)
            return
        # identity.deletions: checked and keyed by DeletionForwarder.
        request_id = payload.get("request_id")
        now_ms = self.clock()
        marker = rules.deleted_up_to(deleted_at_ms, int(payload.get("ts_ms") or 0), now_ms)
        new, sends = rules.on_delete(known, payload["user_id"], request_id, now_ms)
        await self.outbox.send_all(sends)
        # Always logged: a redelivery may find the store without the index while
        # the changelog still has it (StateCache.put).
        index.put(message.key, state.encode_user_index(new), event, always=True)
        index.put(marker_key, state.encode_deletion_marker(marker), event)
        fields = message_fields(message, user_keyed=self.user_keyed)
        self.log.info("user_forgotten", identifiers=len(known), receipt=bool(request_id), **fields)


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    keys_tables = raw_tables(app, settings, *KEYS_TABLES)
    conversions = raw_table(app, settings, "conversions")
    index_table = raw_table(app, settings, "user_index")

    @app.agent(raw_topic(app, settings, "ads.engagements"), name="clicks")
    async def clicks(stream: Any) -> None:
        outbox = Outbox(app, settings, *CLICKS_OUTPUTS)
        handler = ClickForwarder(settings, outbox, log)
        await process(stream, settings, outbox, handler, log=log, user_keyed=handler.user_keyed)

    @app.agent(raw_topic(app, settings, "identity.signals"), name="signals")
    async def signals(stream: Any) -> None:
        outbox = Outbox(app, settings, *SIGNALS_OUTPUTS)
        handler = SignalForwarder(settings, outbox, log)
        await process(stream, settings, outbox, handler, log=log, user_keyed=handler.user_keyed)

    @app.agent(raw_topic(app, settings, "privacy.requests"), name="deletions")
    async def deletions(stream: Any) -> None:
        outbox = Outbox(app, settings, *DELETIONS_OUTPUTS)
        handler = DeletionForwarder(settings, outbox, log)
        await process(stream, settings, outbox, handler, log=log, user_keyed=handler.user_keyed)

    @app.agent(raw_topic(app, settings, *KEYS_INPUTS), name="keys")
    async def keys(stream: Any) -> None:
        outbox = Outbox(app, settings, *KEYS_OUTPUTS)
        handler = KeysHandler(settings, outbox, log)
        await process(
            stream,
            settings,
            outbox,
            handler,
            *keys_tables,
            log=log,
            user_keyed=handler.user_keyed,
        )

    @app.agent(raw_topic(app, settings, *OWNER_INPUTS), name="owner")
    async def owner(stream: Any) -> None:
        outbox = Outbox(app, settings, *OWNER_OUTPUTS)
        handler = OwnerHandler(settings, outbox, log)
        await process(
            stream, settings, outbox, handler, conversions, log=log, user_keyed=handler.user_keyed
        )

    @app.agent(raw_topic(app, settings, *INDEX_INPUTS), name="user_index")
    async def user_index(stream: Any) -> None:
        outbox = Outbox(app, settings, *INDEX_OUTPUTS)
        handler = UserIndexHandler(settings, outbox, log)
        await process(
            stream, settings, outbox, handler, index_table, log=log, user_keyed=handler.user_keyed
        )
