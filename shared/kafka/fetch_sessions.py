"""Incremental fetch sessions (KIP-227) for aiokafka's fetcher.

aiokafka 0.14 sends every fetch without a session: the request lists every
partition the worker reads, and the answer lists them all again, data or not.
identity_match reads 80 partitions, and an idle worker fetches 17-33 times a
second (a 60 or 30 ms fetch wait), so most of a worker's CPU with nothing to
do went to encoding and decoding those lists (docs/benchmarks.md, "What a batch costs").

With a session, the broker keeps the list. A request names only the
partitions whose fetch offset changed since the last one (those that brought
records and were read on), and names those to drop; the answer names only
the partitions with records, an error or a new high watermark. The rules are
the Java client's (``FetchSessionHandler``):

* a full request (epoch 0) lists everything and opens a session; the answer
  gives its id, and the epoch then counts up with every answered request;
* a request that failed, or was cancelled on the way, leaves the broker's
  epoch unknown: the next request is full, closing the old session;
* an answer with an error (an unknown session, a wrong epoch, the broker's
  cache full) or naming a partition outside the session is not used, and the
  next request is full. Its partitions are fetched again from the same
  positions, so nothing is lost or repeated.

``FetchSession`` is that bookkeeping, without I/O. ``use_fetch_sessions``
puts it under a started aiokafka consumer's fetcher.

An idle partition is named in no answer, so aiokafka's per-partition fetch
time (``tp_state.timestamp``) stays at its last news; Faust only compares it
with its own clock to warn of a stalled event path, which an idle partition
does not trigger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

from shared.runtime.logging import get_logger

INITIAL_EPOCH = 0
#: An answer's error code: the broker no longer has the session.
FETCH_SESSION_ID_NOT_FOUND = 70
#: Epochs count up to this and start again at 1 (0 would open a new session).
MAX_EPOCH = 2**31 - 1

_log = get_logger(component="fetch-sessions")

#: Per partition: (fetch offset, most bytes to fetch).
Wanted = Mapping[TopicPartition, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """One request of a session: what it names, and what the broker will fetch."""

    session_id: int
    epoch: int
    send: dict[TopicPartition, tuple[int, int]]
    forget: list[TopicPartition]
    #: Every partition of the session, as the broker will fetch it.
    fetched: dict[TopicPartition, tuple[int, int]]

    @property
    def full(self) -> bool:
        return self.epoch == INITIAL_EPOCH


class FetchSession:
    """The client's side of one broker's fetch session."""

    def __init__(self) -> None:
        self.session_id = 0
        self.epoch = INITIAL_EPOCH
        self.partitions: dict[TopicPartition, tuple[int, int]] = {}

    def plan(self, wanted: Wanted) -> FetchPlan:
        """The next request for ``wanted``; the session then holds exactly ``wanted``."""
        previous, fetched = self.partitions, dict(wanted)
        self.partitions = fetched
        if self.epoch == INITIAL_EPOCH:
            return FetchPlan(self.session_id, self.epoch, fetched, [], fetched)
        send = {tp: data for tp, data in fetched.items() if previous.get(tp) != data}
        forget = [tp for tp in previous if tp not in fetched]
        return FetchPlan(self.session_id, self.epoch, send, forget, fetched)

    def answered(
        self, plan: FetchPlan, error_code: int, session_id: int, named: Iterable[TopicPartition]
    ) -> bool:
        """Take the broker's answer to ``plan``; whether its partition data may be used."""
        if error_code:
            if error_code == FETCH_SESSION_ID_NOT_FOUND:
                self.session_id = 0
            self.epoch = INITIAL_EPOCH
            return False
        if plan.full:
            # No session id: the broker keeps none (its cache is full); ask again next time.
            self.session_id = session_id
            self.epoch = 1 if session_id else INITIAL_EPOCH
            return True
        if any(tp not in self.partitions for tp in named):
            self.epoch = INITIAL_EPOCH
            return False
        if not session_id:  # the broker closed the session
            self.session_id, self.epoch = 0, INITIAL_EPOCH
            return True
        self.epoch = self.epoch + 1 if self.epoch < MAX_EPOCH else 1
        return True

    def failed(self) -> None:
        """The request got no answer: the next one is full and replaces the session."""
        self.epoch = INITIAL_EPOCH


def _by_topic(
    partitions: Mapping[TopicPartition, tuple[int, int]],
) -> list[tuple[str, list[tuple[int, int, int]]]]:
    topics: dict[str, list[tuple[int, int, int]]] = {}
    for tp, (offset, max_bytes) in partitions.items():
        topics.setdefault(tp.topic, []).append((tp.partition, offset, max_bytes))
    return list(topics.items())


class SessionFetchRequest(FetchRequest):  # type: ignore[misc]
    """A fetch request of a session: it names ``plan.send``, while ``topics`` gives every
    partition the broker will fetch (aiokafka matches the answer against it)."""

    def __init__(self, base: FetchRequest, session: FetchSession, plan: FetchPlan) -> None:
        super().__init__(
            base._max_wait_ms,
            base._min_bytes,
            base._max_bytes,
            base._isolation_level,
            _by_topic(plan.send),
            rack_id=base._rack_id,
        )
        self.session = session
        self.plan = plan
        self._fetched = _by_topic(plan.fetched)

    @property
    def topics(self) -> list[tuple[str, list[tuple[int, int, int]]]]:
        return self._fetched

    def abandoned(self) -> None:
        """Never sent (``shared.kafka.fetch_pacing``): the broker's session does not
        know what this request changed, so the next request is a full one."""
        self.session.failed()

    def build(self, request_struct_class: Any) -> Any:
        struct = super().build(request_struct_class)
        if request_struct_class.API_VERSION >= 7:  # older brokers know no sessions
            forgotten: dict[str, list[int]] = {}
            for tp in self.plan.forget:
                forgotten.setdefault(tp.topic, []).append(tp.partition)
            struct.session_id = self.plan.session_id
            struct.session_epoch = self.plan.epoch
            struct.forgotten_topics_data = list(forgotten.items())
        return struct


class ClientWrapper:
    """aiokafka's client as its fetcher sees it, with ``send`` to override: every other
    attribute is the wrapped client's own."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class SessionClient(ClientWrapper):
    """A session's answers go through its ``FetchSession`` first."""

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, SessionFetchRequest):
            return await self._client.send(node_id, request, **kwargs)
        try:
            response = await self._client.send(node_id, request, **kwargs)
        except BaseException:  # an error, or cancelled on the way: the epoch is unknown
            request.session.failed()
            raise
        # Answers before version 7 carry neither: no error, no session.
        error_code = getattr(response, "error_code", 0)
        named = [TopicPartition(t, p[0]) for t, partitions in response.topics for p in partitions]
        if not request.session.answered(
            request.plan, error_code, getattr(response, "session_id", 0), named
        ):
            reason = "broker_error" if error_code else "partition_outside_session"
            _log.info("fetch_session_restarted", node=node_id, reason=reason, error_code=error_code)
            response.topics = []  # fetched again, in full, by the next request
        return response


class SessionFetcher(Fetcher):  # type: ignore[misc]
    """aiokafka's fetcher, its requests made in fetch sessions, one per broker."""

    _sessions: dict[int, FetchSession]
    _assignment: Any

    def _get_actions_per_node(self, assignment: Any) -> Any:
        if assignment is not self._assignment:
            # A new assignment's partition states know no high watermark yet; a full
            # request per broker gives every partition one, idle or not.
            self._assignment = assignment
            for session in self._sessions.values():
                session.failed()
        requests, *rest = super()._get_actions_per_node(assignment)
        return (
            [(node_id, self._in_session(node_id, request)) for node_id, request in requests],
            *rest,
        )

    def _in_session(self, node_id: int, request: FetchRequest) -> SessionFetchRequest:
        session = self._sessions.setdefault(node_id, FetchSession())
        wanted = {
            TopicPartition(topic, partition): (offset, max_bytes)
            for topic, partitions in request.topics
            for partition, offset, max_bytes in partitions
        }
        return SessionFetchRequest(request, session, session.plan(wanted))


def use_fetch_sessions(fetcher: Fetcher) -> None:
    """Make a started consumer's fetcher fetch in sessions from its next request on.

    aiokafka builds its fetcher inside ``AIOKafkaConsumer.start``, so the
    fetcher becomes a ``SessionFetcher`` in place, right after ``start``
    returns. A request already out then is a plain one, and each broker's
    session starts with a full request.
    """
    if isinstance(fetcher, SessionFetcher):
        return
    fetcher.__class__ = SessionFetcher
    fetcher._sessions = {}
    fetcher._assignment = None
    fetcher._client = SessionClient(fetcher._client)
