"""Topic creation (shared/kafka/admin.py): refusals are errors, not silence."""

from types import SimpleNamespace

import pytest

from shared.kafka.admin import TOPIC_ALREADY_EXISTS, _raise_on_create_errors
from shared.kafka.errors import TopicsError


def test_a_topic_the_broker_refused_to_create_is_an_error():
    response = SimpleNamespace(
        topic_errors=[("t.ok", 0, None), ("t.bad", 37, "Number of partitions is invalid.")]
    )
    with pytest.raises(TopicsError, match="t.bad"):
        _raise_on_create_errors(response)


def test_created_or_already_existing_topics_are_fine():
    response = SimpleNamespace(topic_errors=[("a", 0), ("b", TOPIC_ALREADY_EXISTS)])
    _raise_on_create_errors(response)  # v0 responses carry no message
