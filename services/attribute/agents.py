"""Agents of the attribute service.

* ``users``: per user_id (co-partitioned with ads.engagements): the user's
  engagements, assigned conversions and privacy state; attributes conversions
  on assignment and re-attributes them when a late engagement or a privacy
  request changes the outcome.
* ``publisher``: per conversion_key: writes a result to conversions.attributed
  only if its version is newer than the last one published, so the latest
  record of every key is its newest result even when two user partitions race.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from services.attribute import logic
from shared.app import raw_table, raw_topic
from shared.batching import DeadLetterOnError, Outbox, StateCache, finish_batch
from shared.dlq import dlq_record, raw_as_text
from shared.errors import InvalidEvent
from shared.inputs import decode_engagement, decode_privacy_request
from shared.logging import get_logger, message_fields
from shared.privacy import pseudonym
from shared.results import attributed_record
from shared.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    users = raw_table(app, settings, "users")
    published = raw_table(app, settings, "published")
    windows = logic.windows_ms()
    names = {
        settings.topic_name(n): n
        for n in ("ads.engagements", "attribution.assignments", "privacy.requests")
    }

    def as_result(user_id: str, result: dict[str, Any]) -> dict[str, Any]:
        matched = result["status"] != "unidentified"
        user = pseudonym(user_id, settings.pseudonym_keys) if matched else None
        return {
            "conv": result["conv"],
            "status": result["status"],
            "reason": result["reason"],
            "touch": result["touch"],
            "match": {"key_type": result["key_type"], "user": user} if matched else None,
            "version": result["version"],
        }

    @app.agent(raw_topic(app, settings, *names.values()), name="users")
    async def users_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "attribution.results", "conversions.dlq")
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(users)
            now_ms = int(time.time() * 1000)
            expires_ms = now_ms + settings.late_horizon_s * 1000
            for event in events:
                async with guard(event):
                    message = event.message
                    kind = names[message.topic]
                    try:
                        if kind == "ads.engagements":
                            payload = decode_engagement(message.value)
                        elif kind == "privacy.requests":
                            payload = decode_privacy_request(message.value)
                        else:
                            payload = orjson.loads(message.value)
                    except InvalidEvent as exc:
                        log.warning("rejected", reason=exc.reason, **message_fields(message))
                        record = dlq_record(
                            exc.reason, exc.message, message, None, raw_as_text(message.value)
                        )
                        await outbox.send("conversions.dlq", message.key, record)
                        continue
                    user_id = message.key.decode()
                    state = cache.get(message.key, event) or logic.new_user_state()
                    changed: list[tuple[str, dict[str, Any]]] = []
                    if kind == "ads.engagements":
                        changed = logic.add_engagement(state, payload, windows)
                    elif kind == "privacy.requests":
                        changed = logic.add_privacy_request(state, payload, message.offset, windows)
                    elif payload["op"] == "assign":
                        result = logic.assign(state, payload, windows, expires_ms)
                        if result is not None:
                            changed = [(payload["conversion_key"], result)]
                    else:
                        logic.retract(state, payload)
                    for conversion_key, result in changed:
                        await outbox.send(
                            "attribution.results", conversion_key, as_result(user_id, result)
                        )
                    logic.trim(state, now_ms)
                    cache.put(message.key, state, event)
            await finish_batch(outbox, cache)

    @app.agent(raw_topic(app, settings, "attribution.results"), name="publisher")
    async def publisher(stream: Any) -> None:
        outbox = Outbox(app, settings, "conversions.attributed")
        guard = DeadLetterOnError(outbox, log)
        async for events in stream.take_events(settings.batch_size, settings.batch_within_s):
            cache = StateCache(published)
            now_ms = int(time.time() * 1000)
            for event in events:
                async with guard(event):
                    message = event.message
                    result = orjson.loads(message.value)
                    last = cache.get(message.key, event)
                    if last is not None and last >= result["version"]:
                        continue
                    conversion_key = message.key.decode()
                    record = attributed_record(
                        conversion_key,
                        result["conv"],
                        status=result["status"],
                        reason=result["reason"],
                        match=result.get("match"),
                        touch=result.get("touch"),
                        version=result["version"],
                        processed_at_ms=now_ms,
                    )
                    await outbox.send("conversions.attributed", message.key, record)
                    cache.put(message.key, result["version"], event)
            await finish_batch(outbox, cache)
