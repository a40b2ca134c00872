"""An in-memory view of a small compacted topic, followed by every worker.

For configuration that every worker of a service needs whole (not
partitioned): each worker reads the topic from the beginning and keeps
following it. ``ready`` is set once the end the topic had at start has been
read, so a restarted worker does not act on a partial view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.client_config import client_kwargs
from shared.kafka.topic_io import partitions_of
from shared.runtime.logging import get_logger
from shared.runtime.settings import Settings

Decoder = Callable[[bytes], Any]
Apply = Callable[[bytes | None, bytes | None], None]


class CompactedView:
    """``values`` holds each key's decoded latest value; or give ``apply`` to keep
    a view of your own (it receives every record's raw key and value)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        decode: Decoder | None = None,
        apply: Apply | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.decode = decode
        self.values: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self._apply = apply or self.apply
        self._log = get_logger(component="compacted-view", view_topic=topic)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:
            self.values.pop(name, None)
            return
        try:
            self.values[name] = self.decode(value) if self.decode else value
        except Exception as exc:  # noqa: BLE001 - a bad config record must not stop the view
            self._log.warning("view_record_skipped", key=name, error=type(exc).__name__)

    def apply_safely(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record; a record the (custom) apply rejects is logged and skipped.

        Raising here would end ``_follow``, and ``run`` would re-read the topic
        from the beginning and meet the same record again: a loop that never
        sets ``ready``.
        """
        try:
            self._apply(key, value)
        except Exception as exc:  # noqa: BLE001 - one hostile record must not stop the view
            self._log.warning("view_record_skipped", error=type(exc).__name__)

    async def run(self) -> None:
        """Follow the topic until cancelled, reconnecting after broker trouble."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following
                self._log.warning("view_follow_error", error=repr(exc)[:300])
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        partitions = await partitions_of(self.settings, self.topic)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                for messages in (await consumer.getmany(*tps, timeout_ms=500)).values():
                    for message in messages:
                        self.apply_safely(message.key, message.value)
                positions = {tp: await consumer.position(tp) for tp in tps}
                if not self.ready.is_set() and all(positions[tp] >= ends[tp] for tp in tps):
                    self.ready.set()
                    self._log.info("view_loaded", entries=len(self.values))
        finally:
            await consumer.stop()
