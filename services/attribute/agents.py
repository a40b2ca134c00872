"""Agents of the attribute service.

* ``users``: per user_id (co-partitioned with ads.engagements): the user's
  engagements, assigned conversions and privacy state; attributes conversions
  on assignment and re-attributes them when a late engagement or a privacy
  request changes the outcome; forgets the user on a deletion.
* ``publisher``: per conversion_key: writes a result to conversions.attributed
  only if its version is newer than the last one published, so the latest
  record of every key is its newest result even when two user partitions race.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson

from services.attribute import logic
from shared.contract import versions
from shared.contract.errors import InvalidEvent
from shared.contract.inputs import decode_engagement, decode_privacy_request
from shared.contract.pseudonyms import pseudonym
from shared.contract.records import attributed_record
from shared.kafka.compacted_view import CompactedView
from shared.runtime.app import raw_table, raw_topic
from shared.runtime.batching import Outbox, process
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

DECODERS = {
    "ads.engagements": decode_engagement,
    "privacy.requests": decode_privacy_request,
    "attribution.assignments": orjson.loads,
}


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    users = raw_table(app, settings, "users")
    published = raw_table(app, settings, "published")
    names = {settings.topic_name(n): n for n in DECODERS}
    accounts = CompactedView(
        settings, settings.topic_name("accounts.settings"), logic.parse_account_settings
    )

    def windows(ad_account_id: str) -> Any:
        return accounts.get(ad_account_id) or logic.DEFAULT_WINDOWS_MS

    @app.task
    async def follow_account_settings() -> None:
        await accounts.run()

    def as_result(user_id: str, result: dict[str, Any]) -> dict[str, Any]:
        matched = result["status"] != "unidentified"
        user = pseudonym(user_id, settings.active_pseudonym_keys) if matched else None
        return {
            "conv": result["conv"],
            "status": result["status"],
            "reason": result["reason"],
            "touch": result["touch"],
            "match": {"key_type": result["key_type"], "user": user} if matched else None,
            "order": result["order"],
        }

    async def forget(outbox: Outbox, user_id: str, conversion_keys: list[str]) -> None:
        """A deleted user: results that named them are re-published without them,
        and each conversion's owner in identity_match scrubs the user id."""
        scrub = {"op": "scrub", "user": pseudonym(user_id, settings.active_pseudonym_keys)}
        for conversion_key in conversion_keys:
            await outbox.send("attribution.results", conversion_key, scrub)
            forget_msg = {"op": "forget_user", "conversion_key": conversion_key, "user_id": user_id}
            await outbox.send("identity.answers", conversion_key, forget_msg)

    @app.agent(raw_topic(app, settings, *DECODERS), name="users")
    async def users_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, "attribution.results", "identity.answers")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            kind = names[message.topic]
            try:
                payload = DECODERS[kind](message.value)
            except InvalidEvent as exc:
                await outbox.dead_letter(exc.reason, exc.message, message, log, user_keyed=True)
                return
            user_id = message.key.decode()
            state = cache.get(message.key, event) or logic.new_user_state()
            now_ms = versions.now_ms()
            if kind == "privacy.requests" and payload["kind"] == "delete":
                await forget(outbox, user_id, logic.delete_user(state))
                cache.put(message.key, None, event)  # a tombstone in the changelog
                return
            changed: list[tuple[str, dict[str, Any]]] = []
            if kind == "ads.engagements":
                changed = logic.add_engagement(state, payload, windows, now_ms)
            elif kind == "privacy.requests":
                changed = logic.add_privacy_request(state, payload, message.offset, windows, now_ms)
            elif payload["op"] == "assign":
                expires_ms = now_ms + settings.late_horizon_s * 1000
                result = logic.assign(state, payload, windows, expires_ms, now_ms)
                if result is not None:
                    changed = [(payload["conversion_key"], result)]
            else:
                logic.retract(state, payload)
            for conversion_key, result in changed:
                await outbox.send("attribution.results", conversion_key, as_result(user_id, result))
            logic.trim(state, now_ms)
            cache.put(message.key, state, event)

        await accounts.ready.wait()  # never attribute with windows not yet read
        await process(stream, settings, outbox, handle, users, log=log, user_keyed=True)

    @app.agent(raw_topic(app, settings, "attribution.results"), name="publisher")
    async def publisher(stream: Any) -> None:
        outbox = Outbox(app, settings, "conversions.attributed")

        async def handle(event: Any, cache: Any) -> None:
            message = event.message
            result = orjson.loads(message.value)
            # {"order": [mv, seq] of the result published, "record": what was published}
            last = cache.get(message.key, event)
            last_record = last["record"] if last else None
            now_ms = versions.now_ms()
            if result.get("op") == "scrub":
                record = logic.scrubbed(last_record, result["user"], now_ms)
                order = last["order"] if last else None
            elif logic.is_newer(result["order"], last):
                record = attributed_record(
                    message.key.decode(),
                    result["conv"],
                    status=result["status"],
                    reason=result["reason"],
                    match=result.get("match"),
                    touch=result.get("touch"),
                    # A stamp: grows even if this table came back older after a crash.
                    version=versions.next_stamp(last_record and last_record["version"], now_ms),
                    processed_at_ms=now_ms,
                )
                order = result["order"]
            else:
                cache.rewrite(message.key, event)  # not newer than what was published
                return
            if record is not None:
                record["processed_at_ms"] = now_ms
                await outbox.send("conversions.attributed", message.key, record)
                cache.put(message.key, {"order": order, "record": record}, event)

        await process(stream, settings, outbox, handle, published, log=log)
