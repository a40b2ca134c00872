"""Fixtures shared by every test.

Integration tests (everything under tests/integration) need a Kafka broker at
KAFKA_BOOTSTRAP (default 127.0.0.1:9092; `make test` starts one when none
answers). An unreachable broker FAILS them: a skipped suite would look green.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from aiokafka.admin import AIOKafkaAdminClient

from ops.broker import reachable
from shared.runtime.settings import Settings

INTEGRATION_DIR = Path(__file__).parent / "integration"

# The tests run the services in development mode: the public development keys
# stand in for the secrets that production must set (every subprocess inherits it).
os.environ.setdefault("CONVMESH_DEV_MODE", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test, marked or not."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item (``rep_call``): fixtures ask whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Detach structlog from a test's captured stderr (e.g. after ``cli.main``).

    ``configure_logging`` binds structlog to the ``sys.stderr`` of the moment,
    which under ``capsys`` is a capture stream closed after that test: the next
    test to log would fail with "I/O operation on closed file". Only the logger
    factory changes (looked up per logger): processors stay as they are, so
    ``structlog.testing.capture_logs`` keeps working for loggers bound earlier.
    """
    yield
    structlog.configure(logger_factory=_stderr_logger, cache_logger_on_first_use=False)


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)  # the stderr of the moment, not of import


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The broker of the integration tests; fails (never skips) when it is down."""
    address = os.environ.get("KAFKA_BOOTSTRAP") or "127.0.0.1:9092"
    if not reachable(Settings(bootstrap=address), timeout_s=10.0):
        pytest.fail(f"no Kafka broker answers at {address}: run `make test` or set KAFKA_BOOTSTRAP")
    return address


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique CONVMESH_NAMESPACE: the test's topics and groups clash with nobody's.

    Topics created under it are deleted afterwards when a broker answers, so
    repeated runs do not pile partitions up on a shared dev broker.
    CONVMESH_TEST_KEEP_TOPICS=1 keeps them all, =failed only those of a failed
    test (to chase a rare failure in a loop).
    """
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    address = os.environ.get("KAFKA_BOOTSTRAP") or "127.0.0.1:9092"
    keep_mode = os.environ.get("CONVMESH_TEST_KEEP_TOPICS", "")
    call = getattr(request.node, "rep_call", None)
    failed = call is not None and call.failed
    keep = keep_mode == "1" or (keep_mode == "failed" and failed)
    if keep and failed:
        print(f"\n[namespace] the failed test's topics are kept: {ns}.*", file=sys.stderr)
    if (
        not keep
        and "bootstrap" in request.fixturenames
        and reachable(Settings(bootstrap=address), 5.0)
    ):
        asyncio.run(delete_namespace_topics(address, ns))


async def delete_namespace_topics(bootstrap: str, ns: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith((f"{ns}.", f"{ns}-"))]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
