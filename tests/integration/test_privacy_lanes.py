"""The privacy lanes on the real broker: an aggregate worker fed what attribute's
publisher sends for conversions.attributed records (tests.integration.helpers.as_published).

(a) with a huge ε and K = 1 the protected rows are the bounded exact sums and
    the modeled rows follow the formula;
(b) with the default ε and K, small rows are suppressed and the ledger
    refuses the release that would overspend the week;
(c) a kill of the worker between charge and publish neither publishes twice
    nor loses the charge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.contract import privacy_lanes as pl
from shared.kafka.topic_io import latest_by_key, produce, read_all
from shared.runtime.settings import REPO_ROOT
from tests.integration.helpers import as_published, cli_env, convmesh, kafka

ACCOUNT = "549755885175"
NOW_S = int(time.time())
#: Released by `convmesh privacy release` only: the release check waits 30 days.
DELAY_S = str(30 * 86_400)
HUGE = "1000000000"
TIMEOUT_S = 120.0


def day(days_ago: int) -> tuple[int, str]:
    """A noon event_time ``days_ago`` days back and its date."""
    date = dt.datetime.fromtimestamp(NOW_S, tz=dt.UTC).date() - dt.timedelta(days=days_ago)
    noon = int(dt.datetime.combine(date, dt.time(12), tzinfo=dt.UTC).timestamp())
    return noon, date.isoformat()


def attributed(
    n: int,
    event_time: int,
    *,
    user: str | None,
    status: str = "attributed",
    campaign: str = "c1",
    value: float | None = 10.0,
    event_name: str = "checkout",
) -> dict[str, Any]:
    return {
        "conversion_key": f"{ACCOUNT}:{event_name}:ev-{n}:online",
        "ad_account_id": ACCOUNT,
        "event_id": f"ev-{n}",
        "event_name": event_name,
        "action_source": "web",
        "source": "api",
        "event_time": event_time,
        "value": value,
        "currency": "USD",
        "status": status,
        "unidentified_reason": "no_match" if status == "unidentified" else None,
        "match": {"key_type": "em", "user": user} if user else None,
        "touch": (
            {
                "engagement_id": f"e{n}",
                "campaign_id": campaign,
                "ad_group_id": "g1",
                "ad_id": "a1",
                "type": "click",
                "ts_ms": event_time * 1000 - 1000,
            }
            if status == "attributed"
            else None
        ),
        "version": 1,
        "processed_at_ms": NOW_S * 1000,
    }


@pytest.fixture
def env(bootstrap: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(tmp_path / "data"),
        CONVMESH_WEB_PORT_BASE=os.environ.get("CONVMESH_TEST_WEB_PORT_BASE", "8100"),
        CONVMESH_PRIVACY_RELEASE_DELAY_S=DELAY_S,
    )
    applied = convmesh("topics", "apply", env=env, timeout=120)
    assert applied.returncode == 0, applied.stderr
    return env


class Worker:
    """One aggregate worker process of ours (stopped by its own pid)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.aggregate"],
            env=env,
            cwd=REPO_ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(env: dict[str, str], **extra: str) -> Worker:
        worker = Worker({**env, **extra}, tmp_path / "aggregate.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def feed(env: dict[str, str], records: list[dict[str, Any]]) -> None:
    rows = as_published(env["CONVMESH_NAMESPACE"], records)
    asyncio.run(produce(kafka(env["KAFKA_BOOTSTRAP"]), rows))


def latest(env: dict[str, str], topic: str) -> dict[str, Any]:
    real = f"{env['CONVMESH_NAMESPACE']}.{topic}"
    return latest_by_key(asyncio.run(read_all(kafka(env["KAFKA_BOOTSTRAP"]), real)))


def every_record(env: dict[str, str], topic: str) -> dict[str, list[bytes | None]]:
    real = f"{env['CONVMESH_NAMESPACE']}.{topic}"
    out: dict[str, list[bytes | None]] = defaultdict(list)
    for read in asyncio.run(read_all(kafka(env["KAFKA_BOOTSTRAP"]), real)):
        out[(read.key or b"").decode()].append(read.value)
    return out


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)  # polling interval, not a wait for a condition
    raise AssertionError(f"timed out waiting for {what}")


def sentinel(n: int) -> dict[str, Any]:
    """An unidentified conversion of its own stratum, fed last: once its modeled
    row is out, every earlier delta of the account (one partition) is applied."""
    event_time, _ = day(2)
    return attributed(n, event_time, user=None, status="unidentified", event_name="sentinel")


def sentinel_done(env: dict[str, str]) -> bool:
    _, date = day(2)
    return f"{ACCOUNT}:sentinel:web:{date}" in latest(env, "reports.conversions.modeled")


def release(env: dict[str, str], before: str) -> None:
    done = convmesh("privacy", "release", "--before", before, "--ad-account", ACCOUNT, env=env)
    assert done.returncode == 0, done.stderr


def test_huge_epsilon_gives_bounded_exact_rows_and_the_modeled_formula(env, workers) -> None:
    t, date = day(5)
    records = [
        # u1: two conversions, only the earliest (c2) counts; its value is clipped.
        attributed(1, t + 100, user="u1", campaign="c1", value=50.0),
        attributed(2, t, user="u1", campaign="c2", value=5000.0),
        attributed(3, t, user="u2", campaign="c1", value=20.5),
        attributed(4, t, user="u3", campaign="c1", value=None),
        attributed(5, t, user="u4", status="unattributed"),
        attributed(6, t, user=None, status="unidentified"),
        attributed(7, t, user=None, status="unidentified"),
        sentinel(99),
    ]
    feed(env, records)
    workers(
        env,
        CONVMESH_PRIVACY_EPSILON_PER_RELEASE=HUGE,
        CONVMESH_PRIVACY_EPSILON_PER_WEEK=HUGE,
        CONVMESH_PRIVACY_K="1",
    )
    wait_for("the deltas", lambda: sentinel_done(env))
    modeled = latest(env, "reports.conversions.modeled")[f"{ACCOUNT}:checkout:web:{date}"]
    assert (modeled["identified"], modeled["identified_attributed"], modeled["unidentified"]) == (
        5,
        4,
        2,
    )
    expected = pl.modeled_estimate(5, 4, 2, k=1)
    assert modeled["modeled_attributed"] == expected.modeled_attributed == 1.6
    assert modeled["ci95"] == list(expected.ci95)

    release(env, day(0)[1])
    wait_for("protected rows", lambda: len(latest(env, "reports.conversions.protected")) == 2)
    protected = latest(env, "reports.conversions.protected")
    assert {k: (v["conversions"], v["value"]) for k, v in protected.items()} == {
        f"{ACCOUNT}:c1:checkout:click:{date}": (2, {"USD": 20.5}),
        f"{ACCOUNT}:c2:checkout:click:{date}": (1, {"USD": 1000.0}),
    }
    ledger = latest(env, "privacy.ledger")[f"{ACCOUNT}:{pl.iso_week(int(time.time() * 1000))}"]
    assert date in ledger["released"]


def test_defaults_suppress_small_rows_and_the_ledger_refuses_past_the_budget(env, workers) -> None:
    records: list[dict[str, Any]] = []
    dates = []
    for days_ago in range(5, 10):  # five dates: the weekly budget (4.0) pays for four
        t, date = day(days_ago)
        dates.append(date)
        records += [attributed(days_ago * 1000 + i, t, user=f"s{i}") for i in range(3)]
    t, big_date = day(9)
    records += [attributed(50_000 + i, t, user=f"b{i}", campaign="big") for i in range(300)]
    feed(env, [*records, sentinel(99)])
    workers(env)
    wait_for("the deltas", lambda: sentinel_done(env))
    release(env, day(0)[1])
    week = pl.iso_week(int(time.time() * 1000))

    def ledger_done() -> Any:
        doc = latest(env, "privacy.ledger").get(f"{ACCOUNT}:{week}")
        return doc if doc and doc["refused"] else None

    ledger = wait_for("the refusal", ledger_done)
    assert ledger["spent"] == 4.0 and ledger["budget"] == 4.0
    assert sorted(ledger["released"] + ledger["refused"]) == sorted(dates)
    assert ledger["refused"] == [max(dates)]  # released in date order: the newest waits
    protected = wait_for("the big row", lambda: latest(env, "reports.conversions.protected"))
    # 3 users per small row: under K = 50 once noised (scale 2); 300 in the big row.
    assert list(protected) == [f"{ACCOUNT}:big:checkout:click:{big_date}"]
    assert protected[f"{ACCOUNT}:big:checkout:click:{big_date}"]["epsilon"] == 1.0


def test_a_crash_between_charge_and_publish_publishes_once_with_the_charge(env, workers) -> None:
    t, date = day(5)
    records = [attributed(i, t, user=f"u{i}", campaign=f"c{i % 2}") for i in range(40)]
    feed(env, [*records, sentinel(99)])
    settings = {
        "CONVMESH_PRIVACY_EPSILON_PER_RELEASE": "2.0",  # noisy: a second draw would differ
        "CONVMESH_PRIVACY_EPSILON_PER_WEEK": "100",
        "CONVMESH_PRIVACY_K": "1",
    }
    first = workers(env, CONVMESH_X_CRASH_AFTER_CHARGE="1", **settings)
    wait_for("the deltas", lambda: sentinel_done(env))
    release(env, day(0)[1])
    assert first.proc.wait(timeout=TIMEOUT_S) == 70  # died after the charge, before publishing
    week_key = f"{ACCOUNT}:{pl.iso_week(int(time.time() * 1000))}"
    assert latest(env, "privacy.ledger")[week_key]["spent"] == 2.0
    assert latest(env, "reports.conversions.protected") == {}

    workers(env, **settings)
    wait_for("protected rows", lambda: len(latest(env, "reports.conversions.protected")) == 2)
    release(env, day(0)[1])  # asked again: nothing more may happen
    wait_for("the ledger", lambda: latest(env, "privacy.ledger").get(week_key))
    records_per_key = every_record(env, "reports.conversions.protected")
    for key, values in records_per_key.items():
        assert len(set(values)) == 1, f"{key} was published with different values"
    ledger = latest(env, "privacy.ledger")[week_key]
    assert ledger["spent"] == 2.0 and ledger["released"] == [date]
