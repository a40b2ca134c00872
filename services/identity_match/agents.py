"""Agents of identity_match.

* ``clicks``: click engagements re-keyed by click_id (the click index input).
* ``keys``: per identifier (co-partitioned with identity.signals): signal
  history, clicks and the conversions watching the identifier; answers them,
  and re-answers when a late signal or click changes what they resolve to.
* ``owner``: per conversion_key: combines the answers in priority order and
  assigns the conversion to its user (or publishes it as unidentified).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from services.identity_match import logic
from shared.app import raw_table, raw_topic
from shared.batching import DeadLetterOnError, Outbox, StateCache, finish_batch
from shared.dlq import dlq_record, raw_as_text
from shared.errors import InvalidEvent
from shared.inputs import decode_engagement, decode_privacy_request, decode_signal
from shared.logging import get_logger, message_fields
from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    keys_table = raw_table(app, settings, "keys")
    conversions = raw_table(app, settings, "conversions")
    index_table = raw_table(app, settings, "user_index")
    names = {
        settings.topic_name(n): n
        for n in ("identity.signals", "identity.clicks", "identity.lookups")
    }

    async def reject(outbox: Outbox, exc: InvalidEvent, message: Any) -> None:
        log.warning("rejected", reason=exc.reason, **message_fields(message))
        record = dlq_record(exc.reason, exc.message, message, None, raw_as_text(message.value))
        await outbox.send("conversions.dlq", message.key, record)

    @app.agent(raw_topic(app, settings, "ads.engagements"), name="clicks")
    async def clicks(stream: Any) -> None:
        outbox = Outbox(app, settings, "identity.clicks")
        guard = DeadLetterOnError(outbox, log, user_keyed=True)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            for event in events:
                async with guard(event):
                    try:
                        eng = decode_engagement(event.message.value)
                    except InvalidEvent:
                        continue  # attribute, the other consumer, dead-letters it once
                    if eng["type"] == "click" and isinstance(eng.get("click_id"), str):
                        fields = ("click_id", "user_id", "engagement_id", "ts_ms")
                        click = {k: eng[k] for k in fields}
                        await outbox.send("identity.clicks", eng["click_id"], click)
            await outbox.drain()

    keys_source = raw_topic(app, settings, *names.values())

    @app.agent(keys_source, name="keys")
    async def keys(stream: Any) -> None:
        outbox = Outbox(app, settings, "identity.answers", "identity.user_keys")
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(keys_table)
            now_ms = int(time.time() * 1000)
            for event in events:
                async with guard(event):
                    message = event.message
                    kind = names[message.topic]
                    try:
                        payload = (
                            decode_signal(message.value)
                            if kind == "identity.signals"
                            else orjson.loads(message.value)
                        )
                    except InvalidEvent as exc:
                        await reject(outbox, exc, message)
                        continue
                    state = cache.get(message.key, event) or logic.new_key_state()
                    if kind == "identity.lookups" and payload.get("op") == "forget_user":
                        for scrub in logic.forget_user(state, payload["user_id"]):
                            await outbox.send("identity.answers", scrub["conversion_key"], scrub)
                        kept = state if logic.holds_links(state) else None
                        cache.put(message.key, kept, event)
                        continue
                    known_users = logic.users_of(state)
                    if kind == "identity.lookups":
                        watchers = [watch(state, payload, now_ms)]
                    elif kind == "identity.signals":
                        if not logic.add_signal(state, payload, message.offset):
                            continue
                        watchers = logic.touched_watchers(state, int(payload["ts_ms"]))
                    else:
                        if not logic.add_click(state, payload):
                            continue
                        watchers = logic.touched_watchers(state, int(payload["ts_ms"]))
                    for user_id in logic.users_of(state) - known_users:
                        entry = {"user_id": user_id, "key": message.key.decode()}
                        await outbox.send("identity.user_keys", user_id, entry)
                    for _name, watcher in watchers:
                        user = logic.answer(state, watcher)
                        if kind != "identity.lookups" and user == watcher["last"]:
                            continue
                        watcher["last"] = user
                        await outbox.send(
                            "identity.answers",
                            watcher["conversion_key"],
                            {
                                "conversion_key": watcher["conversion_key"],
                                "slot": watcher["slot"],
                                "gen": watcher["gen"],
                                "user_id": user,
                            },
                        )
                    logic.prune_watchers(state, now_ms)
                    cache.put(message.key, state, event)
            await finish_batch(outbox, cache)

    def watch(state: dict[str, Any], request: dict[str, Any], now_ms: int) -> tuple[str, Any]:
        name = f"{request['conversion_key']}|{request['slot']}"
        watcher = {**request, "last": None, "expires_ms": now_ms + settings.late_horizon_s * 1000}
        state["watchers"][name] = watcher
        return name, watcher

    owner_source = raw_topic(app, settings, "conversions.accepted", "identity.answers")
    accepted_topic = settings.topic_name("conversions.accepted")

    @app.agent(owner_source, name="owner")
    async def owner(stream: Any) -> None:
        outbox = Outbox(
            app, settings, "identity.lookups", "attribution.assignments", "attribution.results"
        )
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(conversions)
            for event in events:
                async with guard(event):
                    message = event.message
                    key = message.key
                    conversion_key = key.decode()
                    state = cache.get(key, event)
                    payload = orjson.loads(message.value)
                    if message.topic == accepted_topic:
                        if state is not None and state["conv"]["raw_ref"] == payload["raw_ref"]:
                            continue  # redelivered input: already owned
                        state = logic.new_owner_state(payload, state)
                        state["dirty"] = True
                        for identifier, request in logic.lookup_requests(state, conversion_key):
                            await outbox.send("identity.lookups", identifier, request)
                    elif payload.get("op") == "forget_user":
                        if state is not None:
                            logic.forget_user_in_owner(state, payload["user_id"])
                            cache.put(key, state, event)
                        continue
                    else:
                        if state is None or payload["gen"] != state["gen"]:
                            continue  # an answer for a superseded acceptance
                        state["answers"][payload["slot"]] = payload["user_id"]
                    result = logic.combine(state)
                    if result is not None:
                        sends = logic.on_result(state, result, conversion_key)
                        for topic, send_key, value in sends:
                            await outbox.send(topic, send_key, value)
                    cache.put(key, state, event)
            await finish_batch(outbox, cache)

    index_source = raw_topic(app, settings, "identity.user_keys", "privacy.requests")
    user_keys_topic = settings.topic_name("identity.user_keys")

    @app.agent(index_source, name="user_index")
    async def user_index(stream: Any) -> None:
        """user_id -> the identifiers it was seen with; a deletion forgets them all."""
        outbox = Outbox(app, settings, "identity.lookups")
        guard = DeadLetterOnError(outbox, log, user_keyed=True)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(index_table)
            for event in events:
                async with guard(event):
                    message = event.message
                    known = cache.get(message.key, event) or []
                    if message.topic == user_keys_topic:
                        entry = orjson.loads(message.value)
                        if entry["key"] not in known:
                            cache.put(message.key, [*known, entry["key"]], event)
                        continue
                    try:
                        request = decode_privacy_request(message.value)
                    except InvalidEvent:
                        continue  # attribute, the other consumer, dead-letters it once
                    if request["kind"] != "delete":
                        continue
                    forget = {"op": "forget_user", "user_id": request["user_id"]}
                    for identifier in known:
                        await outbox.send("identity.lookups", identifier, forget)
                    cache.put(message.key, None, event)
                    fields = message_fields(message, user_keyed=True)
                    log.info("user_forgotten", identifiers=len(known), **fields)
            await finish_batch(outbox, cache)
