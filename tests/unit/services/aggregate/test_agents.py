"""The aggregate agents' steps, run in-process (tests/support/harness.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2

from services.aggregate.agents import ROWS_OUTPUTS, TABLES, RowsHandler
from services.aggregate.app import build
from services.aggregate.noise import Thresholded
from shared.contract.report_deltas import deltas_of
from shared.runtime.settings import Settings
from tests.support.harness import FakeStream
from tests.support.harness import Harness as BaseHarness

ACCOUNT = "549755885175"
KEY = f"{ACCOUNT}:checkout:ev-1:online"
#: Five days ago: recent enough for the protected lane to take it.
T = int(time.time()) - 5 * 86_400
DATE = dt.datetime.fromtimestamp(T, tz=dt.UTC).date().isoformat()
NEXT_DAY = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat()


def attributed(version: int, ad: str = "a1", value: float | None = 10.0) -> dict[str, Any]:
    return {
        "conversion_key": KEY,
        "ad_account_id": ACCOUNT,
        "event_id": "ev-1",
        "event_name": "checkout",
        "action_source": "web",
        "source": "api",
        "event_time": T,
        "value": value,
        "currency": "USD",
        "status": "attributed",
        "unidentified_reason": None,
        "match": {"key_type": "em", "user": "p-1"},
        "touch": {
            "engagement_id": "e1",
            "campaign_id": "c1",
            "ad_group_id": "g1",
            "ad_id": ad,
            "type": "click",
            "ts_ms": 0,
        },
        "version": version,
        "processed_at_ms": 0,
    }


@dataclasses.dataclass
class Harness(BaseHarness):
    """The harness, plus the last record published per conversion (attribute's publisher)."""

    published: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@pytest.fixture
def h() -> Harness:
    return Harness()


async def count(h: Harness, *records: dict[str, Any]) -> None:
    """Publish records as attribute's publisher does (their deltas), then run the rows step."""
    deltas = []
    for record in records:
        key = record["conversion_key"]
        deltas += deltas_of(h.published.get(key), record)
        h.published[key] = record
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in deltas])


def lane_tables(h: Harness) -> list[Any]:
    return [h.table(name) for name in TABLES]


async def lanes_step(h: Harness, events: list[Any], **settings: Any) -> None:
    """Run the rows step (observed rows and privacy lanes) over its input records."""
    config = dataclasses.replace(h.settings, **settings)
    rows = RowsHandler(config, h.outbox(*ROWS_OUTPUTS), h.log, noise=NoNoise())
    await h.run(rows, events, *lane_tables(h), after_batch=rows.publish_changed)


def ad_of(row_key: bytes) -> str:
    return str(row_key.decode().split(",")[3].strip('"'))


async def test_a_new_version_retracts_the_old_row_and_adds_the_new(h: Harness) -> None:
    await count(h, attributed(1, ad="a1"))
    await count(h, attributed(2, ad="a2"))
    published = h.sent("reports.conversions")
    assert [(ad_of(p.key), p.json and p.json["conversions"]) for p in published] == [
        ("a1", 1),
        ("a1", None),  # the old row emptied: a tombstone
        ("a2", 1),
    ]


async def test_replayed_deltas_change_no_row(h: Harness) -> None:
    """A batch of deltas delivered again (a crash before its commit) publishes nothing new."""
    deltas = deltas_of(None, attributed(1))
    events = [h.record(d.topic, d.key, d.value) for d in deltas]
    await lanes_step(h, events)
    before = len(h.sent("reports.conversions"))
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in deltas])
    assert len(h.sent("reports.conversions")) == before
    [member] = h.table("row_members").data
    assert member.decode().endswith(f"|{KEY}")
    [row] = h.table("rows").data.values()
    assert orjson.loads(row)["conversions"] == 1


async def test_an_older_delta_arriving_late_does_not_undo_a_newer_one(h: Harness) -> None:
    first = deltas_of(None, attributed(1, ad="a1"))
    second = deltas_of(attributed(1, ad="a1"), attributed(2, ad="a2"))
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in second + first])
    present = {
        ad_of(key) for key, raw in h.table("row_members").data.items() if orjson.loads(raw)[1]
    }
    assert present == {"a2"}


async def test_an_undecodable_delta_is_dead_lettered_and_the_batch_goes_on(h: Harness) -> None:
    deltas = deltas_of(None, attributed(1))
    events = [
        h.record("reports.deltas", ACCOUNT, b"not json"),
        *(h.record(d.topic, d.key, d.value) for d in deltas),
    ]
    await lanes_step(h, events)
    [dead] = h.dead_letters()
    assert dead["reason"] == "processing_error" and dead["offset"] == 0
    assert [p.json["conversions"] for p in h.sent("reports.conversions")] == [1]


async def test_a_row_is_published_once_per_batch(h: Harness) -> None:
    """Many deltas of one row in a batch: one reports.conversions record, the last state."""
    await count(h, attributed(1, value=1.0), attributed(2, value=2.0), attributed(3, value=3.0))
    [published] = h.sent("reports.conversions")
    assert published.json["conversions"] == 1 and published.json["value"] == {"USD": 3.0}


class NoNoise:
    """Exact 'noise' (a huge ε): the release rules without randomness."""

    mechanism = "none (test)"

    def thresholded_counts(
        self, counts: dict[str, int], epsilon: float, user_cap: int, threshold: int
    ) -> Thresholded:
        return Thresholded({r: c for r, c in counts.items() if c >= threshold}, epsilon, 0.0)

    def counts(self, values: list[int], epsilon: float, sensitivity: int) -> list[int]:
        return values

    def sums(self, values: list[float], epsilon: float, sensitivity: float) -> list[float]:
        return values


async def test_a_modeled_stratum_is_published_once_per_batch(h: Harness) -> None:
    await count(h, attributed(1), attributed(2))
    [modeled] = h.sent("reports.conversions.modeled")
    assert modeled.key == f"{ACCOUNT}:checkout:web:{DATE}".encode()
    assert (modeled.json["identified"], modeled.json["identified_attributed"]) == (1, 1)
    assert modeled.json["modeled_attributed"] is None  # under K identified


def release_request(**fields: Any) -> dict[str, Any]:
    return {
        "op": "release",
        "ad_account_id": ACCOUNT,
        "requested_at_ms": 1_765_000_000_000,
        **fields,
    }


async def release_and_publish(h: Harness, **settings: Any) -> None:
    """A release request, then the publish requests it sent (as Kafka would deliver them)."""
    before = len(h.sent("privacy.releases"))
    await lanes_step(
        h, [h.record("privacy.releases", ACCOUNT, release_request(before=NEXT_DAY))], **settings
    )
    published = h.sent("privacy.releases")[before:]
    await lanes_step(
        h, [h.record("privacy.releases", p.key, p.value) for p in published], **settings
    )


async def test_a_release_charges_the_ledger_then_publishes_the_stored_rows(h: Harness) -> None:
    await count(h, attributed(1, value=2500.0))
    await release_and_publish(h, privacy_k=1)
    [ledger] = h.sent("privacy.ledger")
    assert ledger.key == f"{ACCOUNT}:2025-W49".encode()
    assert ledger.json["spent"] == 1.0 and ledger.json["released"] == [DATE]
    [row] = h.sent("reports.conversions.protected")
    assert row.key == f"{ACCOUNT}:c1:checkout:click:{DATE}".encode()
    assert row.json["conversions"] == 1 and row.json["value"] == {"USD": 1000.0}  # clipped
    assert h.table("buckets").data == {}  # members dropped


async def test_a_protected_delta_writes_its_member_only(h: Harness) -> None:
    """One key per member: a delta never re-writes the rest of the date's bucket."""
    await count(h, attributed(1))
    assert list(h.table("buckets").data) == [f"{ACCOUNT}:{DATE}|{KEY}".encode()]


async def test_a_release_in_the_batch_of_its_deltas_sees_them(h: Harness) -> None:
    """The members staged earlier in the same batch are part of the release."""
    deltas = deltas_of(None, attributed(1))
    request = release_request(before=NEXT_DAY)
    events = [h.record(d.topic, d.key, d.value) for d in deltas]
    await lanes_step(h, [*events, h.record("privacy.releases", ACCOUNT, request)], privacy_k=1)
    published = h.sent("privacy.releases")
    await lanes_step(h, [h.record("privacy.releases", p.key, p.value) for p in published])
    [row] = h.sent("reports.conversions.protected")
    assert row.json["conversions"] == 1


async def test_a_publish_drops_members_a_crash_left_after_the_charge(h: Harness) -> None:
    """privacy (the charge) is written before buckets: members may outlive a kill -9."""
    await count(h, attributed(1))
    member = dict(h.table("buckets").data)
    await release_and_publish(h, privacy_k=1)
    assert h.table("buckets").data == {}
    h.table("buckets").data.update(member)  # as if the member deletes were lost
    request = {"op": "publish", "ad_account_id": ACCOUNT, "date": DATE, "release_id": "any"}
    await lanes_step(h, [h.record("privacy.releases", ACCOUNT, request)])
    assert h.table("buckets").data == {}
    assert len(h.sent("reports.conversions.protected")) == 1  # published once only


def test_the_batch_writes_privacy_before_the_buckets() -> None:
    assert TABLES.index("privacy") < TABLES.index("buckets")


def test_the_batch_writes_members_before_their_totals() -> None:
    """A crash between the two tables leaves members newer than totals, which a
    recount mends; never totals counting a member that is not there."""
    assert TABLES.index("row_members") < TABLES.index("rows")
    assert TABLES.index("stratum_members") < TABLES.index("strata")


def conversion(n: int, version: int = 1) -> dict[str, Any]:
    """The n-th conversion of the same row and stratum (another event_id each)."""
    key = f"{ACCOUNT}:checkout:ev-{n}:online"
    return {**attributed(version), "conversion_key": key, "event_id": f"ev-{n}"}


async def test_a_row_and_a_stratum_stay_small_as_their_conversions_grow(h: Harness) -> None:
    """Layout 1 kept every member in the value: past about 11,000 conversions a day
    the changelog record passed Kafka's 1 MB and the partition's reports stopped."""
    await count(h, *(conversion(n) for n in range(3000)))
    [row] = h.table("rows").data.values()
    [stratum] = h.table("strata").data.values()
    assert len(row) < 200 and len(stratum) < 200
    assert len(h.table("row_members").data) == len(h.table("stratum_members").data) == 3000
    assert h.sent("reports.conversions")[-1].json["conversions"] == 3000
    assert h.sent("reports.conversions.modeled")[-1].json["identified_attributed"] == 3000


async def test_members_kept_without_their_totals_are_recounted_on_redelivery(
    h: Harness,
) -> None:
    """A kill -9 between the members' write and the totals' (or before the totals
    reached the changelog): the redelivered deltas find their members applied, and
    the totals are counted again from the members, published once with a new version."""
    await count(h, conversion(1))
    deltas = deltas_of(None, conversion(2))
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in deltas])
    first = h.sent("reports.conversions")[-1].json
    assert first["conversions"] == 2
    for name in ("rows", "strata"):  # as if the second batch's totals were lost
        [key] = h.table(name).data
        totals = orjson.loads(h.table(name).data[key])
        totals["version"] -= 1
        totals["conversions" if name == "rows" else "present"] -= 1
        if name == "rows":
            totals["sums"]["USD"] = [1, "10.0"]
        else:
            totals["statuses"]["attributed"] -= 1
        h.table(name).data[key] = orjson.dumps(totals)
    sent = len(h.sent("reports.conversions"))
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in deltas])
    [again] = [s.json for s in h.sent("reports.conversions")[sent:]]
    assert again["conversions"] == 2 and again["value"] == {"USD": 20.0}
    assert again["version"] > first["version"] - 1
    assert h.sent("reports.conversions.modeled")[-1].json["identified_attributed"] == 2
    await lanes_step(h, [h.record(d.topic, d.key, d.value) for d in deltas])
    assert len(h.sent("reports.conversions")) == sent + 1  # whole again: nothing new


async def test_a_batch_publishes_only_what_its_own_attempt_writes(h: Harness) -> None:
    """An attempt that failed as a whole left its owners marked changed; the attempt
    run again publishes only the rows and strata it writes itself, as it writes them."""
    await count(h, conversion(1))
    config = dataclasses.replace(h.settings)
    handler = RowsHandler(config, h.outbox(*ROWS_OUTPUTS), h.log, noise=NoNoise())
    handler.changed['["stale-row"]'] = None  # as a failed attempt leaves it
    handler.changed_strata["1:stale:web:2025-01-01"] = None
    rows_before = len(h.sent("reports.conversions"))
    deltas = deltas_of(None, conversion(2))
    events = [h.record(d.topic, d.key, d.value) for d in deltas]
    await h.run(handler, events, *lane_tables(h), after_batch=handler.publish_changed)
    [row] = [s.json for s in h.sent("reports.conversions")[rows_before:]]
    assert row["conversions"] == 2
    assert all(b"stale" not in s.key for s in h.sent("reports.conversions.modeled"))


async def test_a_row_and_a_stratum_of_layout_1_move_their_members_out_on_first_touch(
    h: Harness,
) -> None:
    """Values written by workers before layout 2 (members inside) are read, and the
    first delta that touches one splits it: members to their keys, totals counted."""
    await count(h, conversion(1), conversion(2))
    for name, members in (("rows", "row_members"), ("strata", "stratum_members")):
        [owner] = h.table(name).data
        held = {
            key.decode().split("|", 1)[1]: orjson.loads(value)
            for key, value in h.table(members).data.items()
        }
        version = orjson.loads(h.table(name).data[owner])["version"]
        h.table(name).data[owner] = orjson.dumps({"members": held, "version": version})
        h.table(members).data.clear()
    await count(h, conversion(3))
    row = h.sent("reports.conversions")[-1].json
    assert row["conversions"] == 3 and row["value"] == {"USD": 30.0}
    assert h.sent("reports.conversions.modeled")[-1].json["identified_attributed"] == 3
    assert len(h.table("row_members").data) == len(h.table("stratum_members").data) == 3
    assert all("members" not in orjson.loads(v) for v in h.table("rows").data.values())


async def test_a_release_reads_a_whole_bucket_of_the_older_layout(h: Harness) -> None:
    """Layout 1 kept a date in one value; a release still counts it, then deletes it."""
    await count(h, attributed(1))
    member = h.table("buckets").data.pop(f"{ACCOUNT}:{DATE}|{KEY}".encode())
    old = {"members": {KEY: orjson.loads(member)}}
    h.table("buckets").data[f"{ACCOUNT}:{DATE}".encode()] = orjson.dumps(old)
    await release_and_publish(h, privacy_k=1)
    [row] = h.sent("reports.conversions.protected")
    assert row.json["conversions"] == 1 and h.table("buckets").data == {}


async def test_a_released_date_is_never_released_nor_published_again(h: Harness) -> None:
    await count(h, attributed(1))
    await release_and_publish(h, privacy_k=1)
    await release_and_publish(h, privacy_k=1)
    assert len(h.sent("reports.conversions.protected")) == 1
    assert h.table("privacy").value(ACCOUNT)["weeks"]["2025-W49"]["spent"] == 1.0


async def test_a_publish_request_of_an_uncharged_draw_publishes_nothing(h: Harness) -> None:
    """A crash can leave a publish request whose charge never reached the state."""
    await count(h, attributed(1))
    request = {"op": "publish", "ad_account_id": ACCOUNT, "date": DATE, "release_id": "x"}
    await lanes_step(h, [h.record("privacy.releases", ACCOUNT, request)])
    assert h.sent("reports.conversions.protected") == []


async def test_a_release_over_the_weekly_budget_is_refused_and_recorded(h: Harness) -> None:
    await count(h, attributed(1))
    await release_and_publish(h, privacy_k=1, privacy_epsilon_per_week=0.5)
    assert h.sent("reports.conversions.protected") == []
    [ledger] = h.sent("privacy.ledger")
    assert ledger.json["refused"] == [DATE] and ledger.json["spent"] == 0.0
    assert h.table("privacy").value(ACCOUNT)["open"] == [DATE]


async def test_a_request_for_every_account_fans_out_per_account(h: Harness) -> None:
    await count(h, attributed(1))
    partition = 0
    for p in range(8):
        request = {
            "op": "release",
            "ad_account_id": None,
            "before": NEXT_DAY,
            "requested_at_ms": 1,
        }
        await lanes_step(h, [h.record("privacy.releases", "*", request, partition=p)])
        if h.sent("privacy.releases"):
            partition = p
            break
    [fanned] = h.sent("privacy.releases")
    assert fanned.key == ACCOUNT.encode() and fanned.json["ad_account_id"] == ACCOUNT
    assert partition == (murmur2(ACCOUNT.encode()) & 0x7FFFFFFF) % 8


@pytest.mark.parametrize(
    ("agent", "window"),
    [("rows", "reports_batch_within_s"), ("diagnostics", "diagnostics_batch_within_s")],
)
def test_agents_after_the_attributed_path_take_their_own_batch_window(
    tmp_path: Any, agent: str, window: str
) -> None:
    """The report rows and the diagnostics wait longer for a batch than the path's agents."""
    settings = Settings(service="aggregate", data_dir=tmp_path, web_port=6197, dev_mode=True)
    app = build(settings)
    stream = FakeStream([])
    fun = next(a.fun for a in app.agents.values() if a.name.rsplit(".", 1)[-1] == agent)
    asyncio.run(fun(stream))
    assert stream.windows == [getattr(settings, window)]
    assert stream.windows != [settings.batch_within_s]


async def test_aggregate_fetches_with_the_reports_fetch_wait(tmp_path: Any) -> None:
    """Every input of aggregate is after conversions.attributed: its consumer waits
    CONVMESH_REPORTS_FETCH_WAIT_MS for a fetch, not the path's shorter wait."""
    settings = Settings(
        service="aggregate",
        data_dir=tmp_path,
        web_port=6197,
        dev_mode=True,
        consumer_fetch_wait_ms=30,
        reports_fetch_wait_ms=150,
    )
    app = build(settings)
    client = app.consumer._thread._create_worker_consumer(app.transport)
    assert client._fetch_max_wait_ms == 150
