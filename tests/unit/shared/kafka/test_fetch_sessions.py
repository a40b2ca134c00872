"""Incremental fetch sessions: the client's bookkeeping, the request it builds, the answers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest, FetchRequest_v4, FetchRequest_v11
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka.fetch_sessions import (
    FETCH_SESSION_ID_NOT_FOUND,
    MAX_EPOCH,
    FetchSession,
    SessionClient,
    SessionFetchRequest,
    use_fetch_sessions,
)

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
INVALID_FETCH_SESSION_EPOCH = 71


def opened(session_id: int = 7) -> FetchSession:
    """A session whose first, full request the broker answered with ``session_id``."""
    session = FetchSession()
    plan = session.plan({A0: (10, 100), A1: (20, 100), B0: (30, 100)})
    assert session.answered(plan, 0, session_id, [A0, A1, B0])
    return session


def test_the_first_request_is_full_and_names_every_partition() -> None:
    plan = FetchSession().plan({A0: (10, 100), B0: (30, 100)})
    assert plan.full and plan.session_id == 0
    assert plan.send == {A0: (10, 100), B0: (30, 100)} and plan.forget == []


def test_a_request_in_a_session_names_only_moved_partitions_and_forgets_dropped_ones() -> None:
    plan = opened().plan({A0: (15, 100), A1: (20, 100)})
    assert not plan.full and (plan.session_id, plan.epoch) == (7, 1)
    assert plan.send == {A0: (15, 100)}
    assert plan.forget == [B0]
    assert plan.fetched == {A0: (15, 100), A1: (20, 100)}


def test_a_partition_added_to_the_session_is_named() -> None:
    c2 = TopicPartition("c", 2)
    plan = opened().plan({A0: (10, 100), A1: (20, 100), B0: (30, 100), c2: (0, 9)})
    assert plan.send == {c2: (0, 9)}


def test_nothing_moved_makes_an_empty_request() -> None:
    session = opened()
    assert session.plan(dict(session.partitions)).send == {}


def test_each_answered_request_counts_the_epoch_up() -> None:
    session = opened()
    for epoch in (1, 2, 3):
        plan = session.plan(dict(session.partitions))
        assert plan.epoch == epoch
        assert session.answered(plan, 0, 7, [])


def test_the_epoch_starts_again_at_one_after_its_largest_value() -> None:
    session = opened()
    session.epoch = MAX_EPOCH
    assert session.answered(session.plan(dict(session.partitions)), 0, 7, [])
    assert session.epoch == 1


def test_an_unknown_session_is_not_used_and_the_next_request_opens_a_new_one() -> None:
    session = opened()
    plan = session.plan(dict(session.partitions))
    assert not session.answered(plan, FETCH_SESSION_ID_NOT_FOUND, 0, [])
    again = session.plan(dict(session.partitions))
    assert again.full and again.session_id == 0
    assert again.send == session.partitions


def test_a_wrong_epoch_closes_the_session_with_a_full_request() -> None:
    session = opened()
    assert not session.answered(
        session.plan(dict(session.partitions)), INVALID_FETCH_SESSION_EPOCH, 0, []
    )
    again = session.plan(dict(session.partitions))
    assert again.full and again.session_id == 7  # epoch 0 with its id closes it


def test_a_request_without_an_answer_makes_the_next_one_full() -> None:
    session = opened()
    session.plan({A0: (11, 100)})
    session.failed()
    again = session.plan({A0: (11, 100), A1: (20, 100)})
    assert again.full and again.send == {A0: (11, 100), A1: (20, 100)}


def test_an_answer_naming_a_partition_outside_the_session_is_not_used() -> None:
    session = opened()
    plan = session.plan({A0: (10, 100)})
    assert not session.answered(plan, 0, 7, [B0])
    assert session.plan({A0: (10, 100)}).full


def test_a_broker_that_keeps_no_session_gets_full_requests() -> None:
    session = FetchSession()
    assert session.answered(session.plan({A0: (1, 9)}), 0, 0, [A0])
    assert session.plan({A0: (1, 9)}).full


def test_a_session_the_broker_closed_is_opened_again() -> None:
    session = opened()
    assert session.answered(session.plan(dict(session.partitions)), 0, 0, [])
    again = session.plan(dict(session.partitions))
    assert again.full and again.session_id == 0


offsets = st.dictionaries(
    st.sampled_from([A0, A1, B0, TopicPartition("c", 0)]),
    st.tuples(st.integers(0, 5), st.just(100)),
)
answers = st.sampled_from(["ok", "closed", "failed", "unknown session", "wrong epoch"])


class Broker:
    """The broker's side of one session, as KIP-227 has it: a full request (epoch 0)
    replaces the session and opens one, an incremental one must carry the session's id
    and next epoch, and applies its named and forgotten partitions."""

    def __init__(self) -> None:
        self.session_id = 0
        self.epoch = 0
        self.partitions: dict[TopicPartition, tuple[int, int]] = {}

    def receive(self, plan: Any) -> None:
        if plan.full:
            self.session_id += 1
            self.epoch = 1
            self.partitions = dict(plan.send)
            return
        assert (plan.session_id, plan.epoch) == (self.session_id, self.epoch)
        self.epoch += 1
        self.partitions.update(plan.send)
        for tp in plan.forget:
            del self.partitions[tp]


@given(st.lists(st.tuples(offsets, answers), min_size=1, max_size=30))
def test_the_broker_always_fetches_exactly_what_the_client_wants(steps: list[Any]) -> None:
    """Whatever the broker answers, each request the client makes is one the broker
    accepts (the right id and epoch, or full) and leaves the broker fetching exactly
    the partitions and offsets the client wants. After a request without a good answer
    the broker's state is unknown, and the next request must be full."""
    session, broker, known = FetchSession(), Broker(), True
    for wanted, answer in steps:
        plan = session.plan(wanted)
        assert plan.full or known
        broker.receive(plan)
        assert broker.partitions == wanted
        assert plan.fetched == wanted
        if answer == "ok":
            assert session.answered(plan, 0, broker.session_id, list(plan.send))
        elif answer == "closed":  # the broker keeps no session (closed, or its cache full)
            assert session.answered(plan, 0, 0, list(plan.send))
            known = False
        elif answer == "failed":
            session.failed()
            known = False
        else:
            code = FETCH_SESSION_ID_NOT_FOUND if answer == "unknown session" else 71
            assert not session.answered(plan, code, 0, [])
            known = False
        if known:
            continue
        assert session.plan(dict(session.partitions)).full
        session.failed()  # that probe's plan went nowhere: the next one stays full
        known = True


def base_request() -> FetchRequest:
    return FetchRequest(30, 1024, 50_000_000, 0, [("a", [(0, 10, 100)])], rack_id="r1")


def test_the_request_carries_the_session_and_names_only_the_moved_partitions() -> None:
    session = opened()
    plan = session.plan({A0: (15, 100), A1: (20, 100)})
    struct = SessionFetchRequest(base_request(), session, plan).build(FetchRequest_v11)
    assert (struct.session_id, struct.session_epoch) == (7, 1)
    assert struct.forgotten_topics_data == [("b", [0])]
    assert [(t, [p[0] for p in parts]) for t, parts in struct.topics] == [("a", [0])]
    assert struct.max_wait_time == 30 and struct.min_bytes == 1024 and struct.rack_id == "r1"
    struct.encode()  # well-formed on the wire


def test_the_request_matches_answers_against_every_partition_of_the_session() -> None:
    session = opened()
    plan = session.plan({A0: (15, 100), A1: (20, 100)})
    request = SessionFetchRequest(base_request(), session, plan)
    assert {(t, p, o) for t, parts in request.topics for p, o, _ in parts} == {
        ("a", 0, 15),
        ("a", 1, 20),
    }


def test_a_broker_without_sessions_gets_the_full_first_request_as_it_is() -> None:
    session = FetchSession()
    plan = session.plan({A0: (10, 100)})
    struct = SessionFetchRequest(base_request(), session, plan).build(FetchRequest_v4)
    assert struct.encode() == base_request().build(FetchRequest_v4).encode()
    assert "session_id" not in vars(struct)


class Answering:
    """A client whose send answers with ``response``, or raises ``error``."""

    def __init__(self, response: Any = None, error: BaseException | None = None) -> None:
        self.response, self.error = response, error
        self.other = "the client's own"

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.response


def answer(error_code: int, session_id: int, *partitions: TopicPartition) -> Any:
    topics = [(tp.topic, [(tp.partition, 0, 5, 5, 0, [], -1, b"")]) for tp in partitions]
    return SimpleNamespace(error_code=error_code, session_id=session_id, topics=topics)


def session_request(session: FetchSession) -> SessionFetchRequest:
    return SessionFetchRequest(base_request(), session, session.plan(dict(session.partitions)))


def test_the_client_passes_a_good_answer_on_and_the_session_moves_on() -> None:
    session = opened()
    client = SessionClient(Answering(answer(0, 7, A0)))
    response = asyncio.run(client.send(1, session_request(session)))
    assert [t for t, _ in response.topics] == ["a"]
    assert session.epoch == 2


def test_the_client_empties_an_answer_that_cannot_be_used() -> None:
    session = opened()
    client = SessionClient(Answering(answer(INVALID_FETCH_SESSION_EPOCH, 0, A0)))
    assert asyncio.run(client.send(1, session_request(session))).topics == []
    assert session.plan(dict(session.partitions)).full


def test_a_request_lost_on_the_way_makes_the_next_one_full() -> None:
    session = opened()
    client = SessionClient(Answering(error=ConnectionError("gone")))
    with pytest.raises(ConnectionError):
        asyncio.run(client.send(1, session_request(session)))
    assert session.plan(dict(session.partitions)).full


def test_the_client_is_the_wrapped_one_for_everything_else() -> None:
    inner = Answering(response="plain")
    client = SessionClient(inner)
    assert asyncio.run(client.send(1, object())) == "plain"
    assert client.other == "the client's own"


def session_fetcher(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fetcher made a SessionFetcher, its plain requests one for node 1 over A0."""
    monkeypatch.setattr(
        Fetcher,
        "_get_actions_per_node",
        lambda self, assignment: ([(1, base_request())], {}, 0.2, False, []),
    )
    fetcher = object.__new__(Fetcher)
    fetcher._client = Answering()
    use_fetch_sessions(fetcher)
    return fetcher


def test_the_fetcher_sends_its_requests_in_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    fetcher = session_fetcher(monkeypatch)
    [(node_id, request)], *_ = fetcher._get_actions_per_node("assignment")
    assert node_id == 1 and isinstance(request, SessionFetchRequest)
    assert request.plan.full and request.plan.send == {A0: (10, 100)}


def test_a_new_assignment_starts_every_session_with_a_full_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new assignment's partitions know no high watermark until a full answer."""
    fetcher = session_fetcher(monkeypatch)
    [(_, first)], *_ = fetcher._get_actions_per_node("first")
    assert fetcher._sessions[1].answered(first.plan, 0, 7, [A0])
    [(_, same)], *_ = fetcher._get_actions_per_node("first")
    assert not same.plan.full
    fetcher._sessions[1].answered(same.plan, 0, 7, [])
    [(_, after)], *_ = fetcher._get_actions_per_node("second")
    assert after.plan.full and after.plan.session_id == 7


def test_fetch_sessions_are_put_in_place_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fetcher = session_fetcher(monkeypatch)
    client = fetcher._client
    use_fetch_sessions(fetcher)
    assert fetcher._client is client


def test_a_request_abandoned_before_it_left_makes_the_next_one_full() -> None:
    """The pace (shared.kafka.fetch_pacing) may drop a request it held: the broker's
    session never saw what that request changed."""
    session = opened()
    session_request(session).abandoned()
    assert session.plan(dict(session.partitions)).full
