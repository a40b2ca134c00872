"""Agents of identity_match.

* ``clicks``: click engagements re-keyed by click_id (the click index input).
* ``keys``: per identifier (co-partitioned with identity.signals): signal
  history, clicks and the conversions watching the identifier; answers them,
  and re-answers when a late signal or click changes what they resolve to.
* ``owner``: per conversion_key: combines the answers in priority order and
  assigns the conversion to its user (or publishes it as unidentified).
* ``user_index``: per user_id: the identifiers a user was seen with, so that a
  deletion reaches all of them.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.identity_match import rules
from shared.contract import versions
from shared.contract.errors import InvalidEvent
from shared.contract.inputs import decode_engagement, decode_privacy_request, decode_signal
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

CLICK_FIELDS = ("click_id", "user_id", "engagement_id", "ts_ms")


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    keys_table = raw_table(app, settings, "keys")
    conversions = raw_table(app, settings, "conversions")
    index_table = raw_table(app, settings, "user_index")
    horizon_ms = settings.late_horizon_s * 1000
    key_names = ("identity.signals", "identity.clicks", "identity.lookups")
    key_topics = {settings.topic_name(n): n for n in key_names}

    @app.agent(raw_topic(app, settings, "ads.engagements"), name="clicks")
    async def clicks(stream: Any) -> None:
        outbox = Outbox(app, settings, "identity.clicks")

        async def handle(event: Any) -> None:
            try:
                eng = decode_engagement(event.message.value)
            except InvalidEvent:
                return  # attribute, the other consumer, dead-letters it once
            if eng["type"] == "click" and isinstance(eng.get("click_id"), str):
                click = {k: eng[k] for k in CLICK_FIELDS}
                await outbox.send("identity.clicks", eng["click_id"], click)

        await process(stream, settings, outbox, handle, log=log, user_keyed=True)

    @app.agent(raw_topic(app, settings, *key_topics.values()), name="keys")
    async def keys(stream: Any) -> None:
        outbox = Outbox(app, settings, "identity.answers", "identity.user_keys")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            kind = key_topics[message.topic]
            try:
                is_signal = kind == "identity.signals"
                payload = decode_signal(message.value) if is_signal else orjson.loads(message.value)
            except InvalidEvent as exc:
                await outbox.dead_letter(exc.reason, exc.message, message, log)
                return
            state = cache.get(message.key, event) or rules.new_key_state()
            now_ms = versions.now_ms()
            if kind == "identity.lookups" and payload.get("op") == "forget_user":
                for scrub in rules.forget_user(state, payload["user_id"]):
                    await outbox.send("identity.answers", scrub["conversion_key"], scrub)
                cache.put(message.key, state if rules.holds_links(state) else None, event)
                return
            known_users = rules.users_of(state)
            if kind == "identity.lookups":
                watchers = [rules.watch(state, payload, now_ms + horizon_ms)]
            elif is_signal and rules.add_signal(state, payload, message.offset):
                watchers = rules.touched_watchers(state, int(payload["ts_ms"]))
            elif kind == "identity.clicks" and rules.add_click(state, payload):
                watchers = rules.touched_watchers(state, int(payload["ts_ms"]))
            else:
                cache.rewrite(message.key, event)  # folded already: a redelivery
                return
            for user_id in rules.users_of(state) - known_users:
                entry = {"user_id": user_id, "key": message.key.decode()}
                await outbox.send("identity.user_keys", user_id, entry)
            for reply in rules.answers(state, watchers, always=kind == "identity.lookups"):
                await outbox.send("identity.answers", reply["conversion_key"], reply)
            rules.prune_watchers(state, now_ms)
            cache.put(message.key, state, event)

        await process(stream, settings, outbox, handle, keys_table, log=log)

    accepted_topic = settings.topic_name("conversions.accepted")
    owner_source = raw_topic(app, settings, "conversions.accepted", "identity.answers")

    @app.agent(owner_source, name="owner")
    async def owner(stream: Any) -> None:
        outbox = Outbox(
            app, settings, "identity.lookups", "attribution.assignments", "attribution.results"
        )

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            key = message.key
            conversion_key = key.decode()
            state = cache.get(key, event)
            payload = orjson.loads(message.value)
            if message.topic == accepted_topic:
                if state is not None and state["conv"]["raw_ref"] == payload["raw_ref"]:
                    cache.rewrite(key, event)  # owned already: a redelivery
                    return
                state = rules.new_owner_state(payload, state)
                state["dirty"] = True
                for identifier, request in rules.lookup_requests(state, conversion_key):
                    await outbox.send("identity.lookups", identifier, request)
            elif payload.get("op") == "forget_user":
                if state is not None:
                    rules.forget_user_in_owner(state, payload["user_id"])
                    cache.put(key, state, event)
                return
            else:
                if state is None or payload["gen"] != state["gen"]:
                    return  # an answer for a superseded acceptance
                state["answers"][payload["slot"]] = payload["user_id"]
            result = rules.combine(state)
            if result is not None:
                sends = rules.on_result(state, result, conversion_key, versions.now_ms())
                for topic, send_key, value in sends:
                    await outbox.send(topic, send_key, value)
            cache.put(key, state, event)

        await process(stream, settings, outbox, handle, conversions, log=log)

    user_keys_topic = settings.topic_name("identity.user_keys")
    index_source = raw_topic(app, settings, "identity.user_keys", "privacy.requests")

    @app.agent(index_source, name="user_index")
    async def user_index(stream: Any) -> None:
        outbox = Outbox(app, settings, "identity.lookups")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            known = cache.get(message.key, event) or []
            if message.topic == user_keys_topic:
                entry = orjson.loads(message.value)
                if entry["key"] not in known:
                    cache.put(message.key, [*known, entry["key"]], event)
                else:
                    cache.rewrite(message.key, event)
                return
            try:
                request = decode_privacy_request(message.value)
            except InvalidEvent:
                return  # attribute, the other consumer, dead-letters it once
            if request["kind"] != "delete":
                return
            forget = {"op": "forget_user", "user_id": request["user_id"]}
            for identifier in known:
                await outbox.send("identity.lookups", identifier, forget)
            cache.put(message.key, None, event)
            fields = message_fields(message, user_keyed=True)
            log.info("user_forgotten", identifiers=len(known), **fields)

        await process(stream, settings, outbox, handle, index_table, log=log, user_keyed=True)
