"""Agents of the aggregate service.

* ``RowsHandler`` (reports.deltas and privacy.releases, both keyed by ad
  account): applies deltas to the rows' members and totals and publishes
  every changed row to reports.conversions once per batch (a tombstone when
  a row empties); the same for the privacy lanes (modeled strata, protected
  buckets, releases: docs/privacy.md).

The deltas come from attribute's publisher, sent with each result it publishes
(``shared.contract.report_deltas``): aggregate reads no compacted topic.

The handlers are the agents' per-record steps; ``register`` only wires them
to Faust, so they run in-process in unit tests (``tests/support/harness.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from services.aggregate import lanes, rules, state
from services.aggregate.noise import OpenDPNoise
from shared.contract import versions
from shared.contract.report_deltas import ops_of
from shared.kafka.partitioner import partition_of
from shared.kafka.registry_access import registry_for
from shared.runtime.app import raw_tables, raw_topic
from shared.runtime.batching import Outbox, StateCache, process
from shared.runtime.logging import get_logger, message_fields
from shared.runtime.settings import Settings

ROWS_OUTPUTS = (
    "reports.conversions",
    "reports.conversions.modeled",
    "reports.conversions.protected",
    "privacy.ledger",
    "privacy.releases",
)
#: The rows agent's tables, in the order a batch writes them (see ``register``).
TABLES = ("privacy", "row_members", "rows", "stratum_members", "strata", "buckets")
#: The protected lane checks for closed dates at least every minute.
RELEASE_CHECK_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class MemberSets:
    """One kind of member set the rows agent keeps: observed rows, modeled strata.

    Members are one key each (``{owner}|{conversion_key}``) in one table, the
    owner's totals one key in another, written after the members' table
    (``TABLES``): a crash between the two can leave members newer than their
    totals, never the reverse, and ``RowsHandler.recount`` mends that.
    """

    #: The delta's field naming the owner (a row key, a stratum key).
    field: str
    member_of: Callable[[int, dict[str, Any]], Any]
    decode_member: Callable[[Any], Any]
    encode_member: Callable[[Any], Any]
    decode_totals: Callable[[Any], Any]
    encode_totals: Callable[[Any], Any]
    totals_of: Callable[[Iterable[Any], int], Any]
    #: A layout-1 value's members (conversion_key -> member) and version.
    layout_1: Callable[[Any], tuple[dict[str, Any], int]]


def _row_layout_1(value: Any) -> tuple[dict[str, Any], int]:
    row = state.decode_row(value)
    return row.members, row.version


def _stratum_layout_1(value: Any) -> tuple[dict[str, Any], int]:
    stratum = state.decode_stratum(value)
    return stratum.members, stratum.version


ROWS = MemberSets(
    "row",
    rules.row_member,
    state.decode_row_member,
    state.encode_row_member,
    state.decode_row_totals,
    state.encode_row_totals,
    state.row_totals_of,
    _row_layout_1,
)
STRATA = MemberSets(
    "stratum",
    lanes.stratum_member,
    state.decode_stratum_member,
    state.encode_stratum_member,
    state.decode_stratum_totals,
    state.encode_stratum_totals,
    state.stratum_totals_of,
    _stratum_layout_1,
)


class RowsHandler:
    """One reports.deltas or privacy.releases record of an ad account.

    * a delta's ops (``shared.contract.report_deltas``), in order: observed
      (no ``lane``) -> ``row_members`` and ``rows``; modeled ->
      ``stratum_members`` and ``strata``; protected -> ``buckets`` (and the
      account's open dates in ``privacy``). Changed rows and strata are
      published by ``publish_changed`` after the batch, once each.
    * release request -> the ledger charge (or refusal) and the noisy rows,
      stored together in ``privacy``; publish request -> the stored rows.
    """

    def __init__(
        self, settings: Settings, outbox: Outbox, log: Any, noise: lanes.Noise | None = None
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.log = log
        self.noise = noise or OpenDPNoise()
        self.releases_topic = settings.topic_name("privacy.releases")
        self.partitions = registry_for(settings).topic("privacy.releases").partitions
        #: The rows and strata the batch changed, in order (published by
        #: ``publish_changed``).
        self.changed: dict[str, None] = {}
        self.changed_strata: dict[str, None] = {}
        self.params = lanes.LaneParams(
            epsilon=settings.privacy_epsilon_per_release,
            budget=settings.privacy_epsilon_per_week,
            k=settings.privacy_k,
            user_cap=settings.privacy_user_cap,
            value_cap=settings.privacy_value_cap,
            delay_s=settings.privacy_release_delay_s,
        )

    async def __call__(
        self,
        event: Any,
        privacy: StateCache,
        row_members: StateCache,
        rows: StateCache,
        stratum_members: StateCache,
        strata: StateCache,
        buckets: StateCache,
    ) -> None:
        doc = orjson.loads(event.message.value)
        if event.message.topic == self.releases_topic:
            if doc["op"] == "publish":
                await self.on_publish(event, doc, privacy, buckets)
            else:
                await self.on_release(event, doc, buckets, privacy)
            return
        for op in ops_of(doc):
            lane = op.get("lane", "observed")
            if lane == "observed":
                self.on_member_delta(event, op, ROWS, row_members, rows, self.changed)
            elif lane == "modeled":
                self.on_member_delta(
                    event, op, STRATA, stratum_members, strata, self.changed_strata
                )
            else:
                self.on_bucket_delta(event, op, buckets, privacy)

    def on_member_delta(
        self,
        event: Any,
        delta: dict[str, Any],
        sets: MemberSets,
        members: StateCache,
        totals: StateCache,
        changed: dict[str, None],
    ) -> None:
        """One observed or modeled op: its member, then its owner's totals."""
        owner = delta[sets.field]
        owner_key = owner.encode()
        stored = totals.get(owner_key, event)
        if state.is_layout_1(stored):
            stored = self.split_layout_1(event, owner, stored, sets, members, totals)
        key = state.member_key(owner, delta["conversion_key"]).encode()
        tally = sets.decode_totals(stored)
        current = sets.decode_member(members.get(key, event))
        member = rules.on_delta(current, tally, delta, versions.now_ms(), sets.member_of)
        if member is None:  # applied already (a redelivery), or older
            members.rewrite(key, event)
            self.recount(event, owner, sets, members, totals, changed)
            return
        members.put(key, sets.encode_member(member), event)
        totals.put(owner_key, sets.encode_totals(tally), event)
        changed[owner] = None

    def recount(
        self,
        event: Any,
        owner: str,
        sets: MemberSets,
        members: StateCache,
        totals: StateCache,
        changed: dict[str, None],
    ) -> None:
        """An owner's totals counted again from its members, once per batch.

        A delta found applied already is a redelivery after a crash, which
        may have come between the members' write and the totals' (or between
        the store and the changelog): the totals are made whole again and
        written, before any new delta of the batch adds to them. A batch
        that wrote the totals already saw them whole.
        """
        owner_key = owner.encode()
        if totals.staged(owner_key):
            return
        stored = sets.decode_totals(totals.get(owner_key, event))
        found = members.with_prefix(state.members_prefix(owner).encode(), event)
        counted = sets.totals_of(map(sets.decode_member, found.values()), stored.version)
        if counted == stored:
            totals.rewrite(owner_key, event)
            return
        counted.version = versions.next_stamp(stored.version, versions.now_ms())
        totals.put(owner_key, sets.encode_totals(counted), event)
        changed[owner] = None
        fields = message_fields(event.message)
        self.log.warning("totals_recounted", owner=sets.field, members=len(found), **fields)

    def split_layout_1(
        self,
        event: Any,
        owner: str,
        stored: Any,
        sets: MemberSets,
        members: StateCache,
        totals: StateCache,
    ) -> Any:
        """A layout-1 value's members moved to their own keys, its totals counted:
        the new stored value of the owner."""
        held, version = sets.layout_1(stored)
        for conversion_key, member in held.items():
            key = state.member_key(owner, conversion_key).encode()
            current = sets.decode_member(members.get(key, event))
            if current is None or current.version < member.version:
                members.put(key, sets.encode_member(member), event)
        found = members.with_prefix(state.members_prefix(owner).encode(), event)
        counted = sets.totals_of(map(sets.decode_member, found.values()), version)
        value = sets.encode_totals(counted)
        totals.put(owner.encode(), value, event)
        return value

    def on_bucket_delta(
        self, event: Any, delta: dict[str, Any], buckets: StateCache, privacy: StateCache
    ) -> None:
        conversion_key = delta["conversion_key"]
        key = state.member_key(delta["bucket"], conversion_key).encode()
        account_key = event.message.key
        account = state.decode_privacy(privacy.get(account_key, event))
        current = state.decode_member(buckets.get(key, event))
        bucket = state.Bucket({conversion_key: current} if current is not None else {})
        if lanes.on_bucket_delta(account, bucket, delta):
            buckets.put(key, state.encode_member(bucket.members[conversion_key]), event)
            privacy.put(account_key, state.encode_privacy(account), event)
        else:
            buckets.rewrite(key, event)

    def bucket_of(self, event: Any, account_id: str, date: str, buckets: StateCache) -> Any:
        """A date's members: one key each, plus a whole bucket of layout 1 if one is left."""
        name = f"{account_id}:{date}"
        bucket = state.decode_bucket(buckets.get(name.encode(), event))
        for key, value in buckets.with_prefix(state.members_prefix(name).encode(), event).items():
            member = state.decode_member(value)
            conversion_key = key.decode().split("|", 1)[1]
            older = bucket.members.get(conversion_key)  # in a layout-1 value
            if member is not None and (older is None or member.version >= older.version):
                bucket.members[conversion_key] = member
        return bucket

    def drop_bucket(self, event: Any, account_id: str, date: str, buckets: StateCache) -> None:
        """A released date's members go (their tombstones reach the changelog)."""
        name = f"{account_id}:{date}"
        buckets.put(name.encode(), None, event)
        for key in buckets.with_prefix(state.members_prefix(name).encode(), event):
            buckets.put(key, None, event)

    async def on_release(
        self, event: Any, request: dict[str, Any], buckets: StateCache, privacy: StateCache
    ) -> None:
        account_id = request.get("ad_account_id")
        if account_id is None:
            await self.fan_out(event, request, privacy)
            return
        account_key = account_id.encode()
        account = state.decode_privacy(privacy.get(account_key, event))
        dates = lanes.due_dates(account, request)
        bucket_of = {d: self.bucket_of(event, account_id, d, buckets) for d in dates}
        now_ms = versions.now_ms()
        outcome, sends = lanes.release(
            account, account_id, bucket_of, request, self.params, self.noise, _release_id, now_ms
        )
        for date in outcome.released:
            self.drop_bucket(event, account_id, date, buckets)
            self.log.info("privacy_release_charged", ad_account_id=account_id, date=date)
            self.outbox.metrics.outcome("privacy_release_charged")
        for date in outcome.refused:
            self.log.warning(
                "privacy_release_refused",
                ad_account_id=account_id,
                date=date,
                reason="weekly privacy budget would be exceeded",
            )
            self.outbox.metrics.outcome("privacy_release_refused")
        lanes.prune(account, now_ms, self.params.delay_s)
        # Written even when unchanged: a redelivered request may meet a state
        # this store kept through a kill -9 but the changelog never got.
        privacy.put(account_key, state.encode_privacy(account), event)
        await self.outbox.send_all(sends)

    async def fan_out(self, event: Any, request: dict[str, Any], privacy: StateCache) -> None:
        """A request for every ad account: one request per account of this partition."""
        partition = event.message.partition
        # The accounts of this partition as the batch sees them: the store and
        # the batches still in flight (an account they created is not stored yet).
        for key in list(privacy.with_prefix(b"", event)):
            if partition_of(key, self.partitions) != partition:
                continue
            account_id = key.decode()
            await self.outbox.send(
                "privacy.releases", account_id, {**request, "ad_account_id": account_id}
            )

    async def on_publish(
        self, event: Any, request: dict[str, Any], privacy: StateCache, buckets: StateCache
    ) -> None:
        account_key = request["ad_account_id"].encode()
        account = state.decode_privacy(privacy.get(account_key, event))
        if request["date"] in account.released:
            # Members a kill -9 left behind after the charge was written (privacy is
            # written before buckets): the date's rows are drawn, the members go.
            self.drop_bucket(event, request["ad_account_id"], request["date"], buckets)
        sends = lanes.publish(account, request)
        if not sends:
            privacy.rewrite(account_key, event)
            return
        if self.settings.extra.get("CONVMESH_X_CRASH_AFTER_CHARGE") == "1":
            # Test hook: the charge and the noisy rows are in the changelog
            # (an earlier batch); die before publishing them.
            self.log.warning("crash_after_charge", ad_account_id=request["ad_account_id"])
            os._exit(70)
        privacy.put(account_key, state.encode_privacy(account), event)
        await self.outbox.send_all(sends)
        self.log.info(
            "privacy_release_published",
            ad_account_id=request["ad_account_id"],
            date=request["date"],
            rows=len(sends),
        )

    async def publish_changed(self, *caches: StateCache) -> None:
        """Publish every row and stratum this batch changed, once, as the batch writes it.

        Only owners whose totals this attempt of the batch writes: an attempt that
        failed as a whole left its owners in ``changed``, and the attempt run again
        may not change them all (an item dead-lettered this time).
        """
        by_table = dict(zip(TABLES, caches, strict=True))
        rows, strata = by_table["rows"], by_table["strata"]
        changed, self.changed = self.changed, {}
        await self.outbox.send_all(
            rules.publish_row(key, ROWS.decode_totals(rows.staged_value(key.encode())))
            for key in changed
            if rows.staged(key.encode())
        )
        changed_strata, self.changed_strata = self.changed_strata, {}
        k = self.params.k
        await self.outbox.send_all(
            lanes.publish_stratum(key, STRATA.decode_totals(strata.staged_value(key.encode())), k)
            for key in changed_strata
            if strata.staged(key.encode())
        )


def _release_id() -> str:
    return uuid.uuid4().hex


def register(app: faust.App, settings: Settings) -> None:
    log = get_logger()
    # In this order the batch's state is written: the account's privacy value (open
    # dates, charges) before the buckets, so that a kill -9 between two tables can
    # leave a bucket member of a charged date (deleted at publish), never the reverse.
    tables = raw_tables(app, settings, *TABLES)
    privacy = tables[0]

    @app.agent(raw_topic(app, settings, "reports.deltas", "privacy.releases"), name="rows")
    async def rows_agent(stream: Any) -> None:
        outbox = Outbox(app, settings, *ROWS_OUTPUTS)
        handler = RowsHandler(settings, outbox, log)
        await process(
            stream,
            settings,
            outbox,
            handler,
            *tables,
            log=log,
            after_batch=handler.publish_changed,
            within_s=settings.reports_batch_within_s,
        )

    @app.timer(RELEASE_CHECK_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def request_due_releases() -> None:
        """Ask the owning partitions to release every closed date.

        Releases must happen inside the stream (state and changelog belong to
        the account's partition), so the check only sends requests.
        """
        now_ms = versions.now_ms()
        topic = raw_topic(app, settings, "privacy.releases")
        for key, raw in list(privacy.items()):
            account = state.decode_privacy(orjson.loads(raw))
            dates = lanes.dates_to_request(account, now_ms, settings.privacy_release_delay_s)
            if dates:
                request = {
                    "op": "release",
                    "ad_account_id": key.decode(),
                    "dates": dates,
                    "requested_at_ms": now_ms,
                }
                await topic.send(key=key, value=orjson.dumps(request))
