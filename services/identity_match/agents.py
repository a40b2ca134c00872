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
from shared.inputs import decode_engagement, decode_signal
from shared.logging import get_logger, message_fields
from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    keys_table = raw_table(app, settings, "keys")
    conversions = raw_table(app, settings, "conversions")
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
        guard = DeadLetterOnError(outbox, log)
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
        outbox = Outbox(app, settings, "identity.answers", "conversions.dlq")
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
