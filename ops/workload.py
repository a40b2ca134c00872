"""A deterministic, realistic workload for the pipeline's input topics (pure: no Kafka).

``generate(seed, conversions, now_ms=...)`` builds users with hashed identifiers,
ad accounts with campaigns, ad groups and ads, onsite engagements, identity
signals, privacy requests and Conversions API envelopes on ``conversions.raw``
(including duplicates, resends outside the deduplication window, restricted
events, events that match nobody and invalid inputs). The same seed and
``now_ms`` always give the same bytes.

Every record is a :class:`Record` ``(topic, key, value)`` with ``key`` bytes or
``None`` and ``value`` bytes (registry topic names, not namespaced). Records are
kept per topic in production order; :meth:`Workload.ordered` interleaves the
topics for one arrival order while keeping every topic's own order.

Ground truth for ``conversions.raw`` is kept in :class:`RawLabel` (one per raw
record, aligned with ``Workload.records["conversions.raw"]``): the expected
outcome (``accepted`` / ``duplicate`` / ``rejected``), the kind of case it was
generated as, and for rejected records the expected dead-letter reason code
(codes of services/ingest/validation.py and services/ingest/rules.py).

``conversions`` is the number of distinct valid conversions generated as
originals; duplicates, resends, other-scope copies and invalid records come on
top of it (their share is a fraction of ``conversions``).
"""

from __future__ import annotations

import copy
import random
import string
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from services.dedupe import rules as dedupe_rules
from services.dedupe.state import Seen
from services.ingest.validation import EVENT_NAMES as API_EVENT_NAMES
from shared.contract import keys
from shared.contract.identifiers import (
    hash_email,
    hash_external_id,
    hash_maid,
    hash_phone,
    sha256_hex,
)
from shared.contract.keys import ip_ua_hash, scope_of
from shared.contract.limits import DAY_MS, DAY_S, MAX_EVENT_AGE_MS
from shared.runtime.settings import default_of

HOUR_MS = 3_600_000

RAW = "conversions.raw"
ENGAGEMENTS = "ads.engagements"
SIGNALS = "identity.signals"
PRIVACY = "privacy.requests"
CONTEXT_TOPICS: tuple[str, ...] = (SIGNALS, ENGAGEMENTS, PRIVACY)
INPUT_TOPICS: tuple[str, ...] = (*CONTEXT_TOPICS, RAW)
ORDERS: tuple[str, ...] = ("context_first", "conversions_first", "interleaved")

#: The Conversions API event names, in a stable order for seeded choices.
EVENT_NAMES: tuple[str, ...] = tuple(sorted(API_EVENT_NAMES))
VALUE_EVENTS: frozenset[str] = frozenset(
    {
        "checkout",
        "add_to_cart",
        "add_payment_info",
        "initiate_checkout",
        "lead",
        "signup",
        "start_trial",
        "subscribe",
    }
)
ACTION_SOURCES: tuple[str, ...] = ("app_android", "app_ios", "web", "offline")
SOURCES: tuple[str, ...] = ("api", "tag", "topic", "batch")
CURRENCIES: tuple[str, ...] = ("USD", "USD", "USD", "EUR", "GBP", "JPY")

#: The outcomes a raw record can have.
ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"

_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
)
_FIRST = (
    "ana",
    "ben",
    "chloe",
    "dev",
    "emma",
    "felix",
    "grace",
    "hugo",
    "ines",
    "jon",
    "kai",
    "lena",
    "maya",
    "noah",
    "olga",
    "pia",
    "quinn",
    "raj",
    "sara",
    "tom",
)
_LAST = (
    "smith",
    "garcia",
    "muller",
    "rossi",
    "tanaka",
    "kowalski",
    "dubois",
    "silva",
    "nguyen",
    "okafor",
    "larsen",
    "novak",
)
_DOMAINS = ("gmail.com", "example.com", "mail.example.org", "yahoo.co.uk", "outlook.com")


class Record(NamedTuple):
    """One Kafka record to produce: registry topic name, key bytes or None, value bytes."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class RawLabel:
    """Ground truth about one record of ``conversions.raw``.

    ``kind``: ``original``, ``duplicate`` (same key resent within the window),
    ``other_scope`` (same event_id/event_name, offline vs online: a new key),
    ``supersede`` (same key resent outside the window), ``edge_valid`` (valid at
    a validation limit) or, for rejected records, the invalid case generated
    (``not_json``, ``not_object``, ``missing_field``, ``ms_event_time``, ...).
    ``reason``: the expected conversions.dlq reason code of a rejected record.
    ``source``: the per-source bucket the record counts in (``topic`` when the
    envelope cannot be read). ``conversion_key`` is None for rejected records.
    """

    index: int
    expect: str
    kind: str
    source: str
    ad_account_id: str | None
    conversion_key: str | None = None
    reason: str | None = None
    restricted: str | None = None


@dataclass(slots=True)
class AdAccount:
    ad_account_id: str
    #: campaign_id -> ad_group_id -> [ad_id]
    campaigns: dict[str, dict[str, list[str]]]

    def ads(self) -> list[tuple[str, str, str]]:
        return [
            (c, g, a)
            for c, groups in self.campaigns.items()
            for g, ads in groups.items()
            for a in ads
        ]


@dataclass(slots=True)
class User:
    user_id: str
    emails: list[str]  # plaintext as typed (the hash is of the normalised form)
    phones: list[str]
    maids: list[str]
    #: ad_account_id -> the advertiser's own customer id of this user
    external_ids: dict[str, str]
    #: (ip, ua, ts_ms of the session's ip_ua link)
    sessions: list[tuple[str, str, int]]
    ad_accounts: list[str]
    #: (ad_account_id, click_id, ts_ms) of this user's clicks
    clicks: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass(slots=True)
class Workload:
    seed: int
    now_ms: int
    #: registry topic name -> records in production order
    records: dict[str, list[Record]]
    #: one label per record of records["conversions.raw"], same order
    raw_labels: list[RawLabel]
    ad_accounts: list[AdAccount]
    users: list[User]
    _index: dict[bytes, int] | None = field(default=None, repr=False, compare=False)

    def ordered(
        self, order: str = "context_first", shuffle_seed: int | None = None
    ) -> list[Record]:
        """Every record in production order for one arrival order.

        ``context_first``: identity signals, engagements and privacy requests,
        then conversions. ``conversions_first``: the reverse. ``interleaved``:
        the topics merged at random (``shuffle_seed``, default the workload's
        seed). Each topic's own order is kept in all of them.
        """
        if order == "context_first":
            topics = (*CONTEXT_TOPICS, RAW)
        elif order == "conversions_first":
            topics = (RAW, *CONTEXT_TOPICS)
        elif order == "interleaved":
            return self._interleaved(self.seed if shuffle_seed is None else shuffle_seed)
        else:
            raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")
        return [r for t in topics for r in self.records.get(t, [])]

    def _interleaved(self, shuffle_seed: int) -> list[Record]:
        rng = random.Random(shuffle_seed)
        queues = {t: list(reversed(self.records.get(t, []))) for t in INPUT_TOPICS}
        out: list[Record] = []
        while True:
            live = [t for t in INPUT_TOPICS if queues[t]]
            if not live:
                return out
            weights = [len(queues[t]) for t in live]
            topic = rng.choices(live, weights)[0]
            out.append(queues[topic].pop())

    def all_records(self) -> list[Record]:
        return [r for t in INPUT_TOPICS for r in self.records.get(t, [])]

    def label(self, record: Record) -> RawLabel:
        """The label of one conversions.raw record (values are unique in a workload)."""
        if self._index is None:
            self._index = {r.value: i for i, r in enumerate(self.records[RAW])}
        index = self._index.get(record.value)
        if record.topic != RAW or index is None:
            raise KeyError("not a conversions.raw record of this workload")
        return self.raw_labels[index]

    def counts(self) -> dict[str, int]:
        """Records per topic, and raw outcomes (accepted / duplicate / rejected)."""
        out = {t: len(self.records.get(t, [])) for t in INPUT_TOPICS}
        outcomes = Counter(lbl.expect for lbl in self.raw_labels)
        out.update({f"raw_{k}": outcomes.get(k, 0) for k in (ACCEPTED, DUPLICATE, REJECTED)})
        return out

    def expected_counts_by_source(self) -> dict[str, dict[str, int]]:
        """Per source: received / accepted / duplicates / rejected, from the labels."""
        out: dict[str, dict[str, int]] = {}
        for lbl in self.raw_labels:
            row = out.setdefault(
                lbl.source, {"received": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
            )
            row["received"] += 1
            row[
                {"accepted": "accepted", "duplicate": "duplicates", "rejected": "rejected"}[
                    lbl.expect
                ]
            ] += 1
        return out


def default_now_ms() -> int:
    """The current time rounded down to the minute."""
    return int(time.time()) // 60 * 60_000


def generate(
    seed: int,
    conversions: int = 2000,
    *,
    now_ms: int | None = None,
    ad_accounts: int = 3,
    users: int | None = None,
    span_days: float = 6.0,
    duplicate_fraction: float = 0.08,
    other_scope_fraction: float = 0.03,
    supersede_fraction: float = 0.02,
    invalid_fraction: float = 0.04,
    unknown_user_fraction: float = 0.12,
    restricted_fraction: float = 0.05,
    opt_out_user_fraction: float = 0.06,
    dedup_window_s: int = default_of("dedup_window_s"),
) -> Workload:
    """Generate a workload. Deterministic for a given (seed, now_ms and parameters).

    Conversion ``event_time`` values lie within ``span_days`` before ``now_ms``;
    engagements and identity signals reach up to ~60 days further back.
    Duplicates and supersedes are made for the deduplication window
    ``dedup_window_s`` (the mesh's CONVMESH_DEDUP_WINDOW_S).
    """
    if conversions < 0:
        raise ValueError("conversions must be >= 0")
    now = default_now_ms() if now_ms is None else now_ms
    return _Generator(
        random.Random(seed),
        seed,
        now,
        n_conversions=conversions,
        n_accounts=max(1, ad_accounts),
        n_users=users if users is not None else max(20, conversions // 4),
        span_ms=int(span_days * DAY_MS),
        fractions={
            "duplicate": duplicate_fraction,
            "other_scope": other_scope_fraction,
            "supersede": supersede_fraction,
            "invalid": invalid_fraction,
            "unknown_user": unknown_user_fraction,
            "restricted": restricted_fraction,
            "opt_out_user": opt_out_user_fraction,
        },
        window_s=dedup_window_s,
    ).run()


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


class _Generator:
    def __init__(
        self,
        rng: random.Random,
        seed: int,
        now: int,
        *,
        n_conversions: int,
        n_accounts: int,
        n_users: int,
        span_ms: int,
        fractions: dict[str, float],
        window_s: int,
    ):
        self.rng = rng
        self.seed = seed
        self.now = now
        self.n_conversions = n_conversions
        self.n_accounts = n_accounts
        self.n_users = max(1, n_users)
        self.span = max(span_ms, 10 * 60_000)
        self.f = fractions
        self.window_s = window_s
        self.accounts: list[AdAccount] = []
        self.users: list[User] = []
        # (delivery_sort_key, seq, Record) per context topic
        self.signals: list[tuple[int, int, Record]] = []
        self.engagements: list[tuple[int, int, Record]] = []
        self.privacy: list[tuple[int, int, Record]] = []
        # (received_at_ms, seq, Record, label fields)
        self.raw: list[tuple[int, int, Record, dict[str, Any]]] = []
        self.raw_values: set[bytes] = set()
        self.by_account: dict[str, list[User]] | None = None
        self.keys_used: set[str] = set()
        self.seq = 0
        self.counter: Counter[str] = Counter()

    # ------------------------------------------------------------------ helpers
    def next_id(self, prefix: str, width: int = 6) -> str:
        self.counter[prefix] += 1
        return f"{prefix}-{self.counter[prefix]:0{width}d}"

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def token(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def uniform_ms(self, lo: int, hi: int) -> int:
        return self.rng.randint(min(lo, hi), max(lo, hi))

    # -------------------------------------------------------------------- world
    def run(self) -> Workload:
        self.make_accounts()
        self.make_users()
        self.make_identity_signals()
        self.make_engagements()
        self.make_privacy_requests()
        self.make_conversions()
        return self.finish()

    def make_accounts(self) -> None:
        ids: set[str] = set()
        while len(ids) < self.n_accounts:
            ids.add(str(self.rng.randrange(10**11, 10**12)))
        for acct in sorted(ids):
            campaigns: dict[str, dict[str, list[str]]] = {}
            for _ in range(self.rng.randint(2, 4)):
                groups: dict[str, list[str]] = {}
                for _ in range(self.rng.randint(1, 3)):
                    groups[self.next_id("g")] = [
                        self.next_id("a") for _ in range(self.rng.randint(1, 3))
                    ]
                campaigns[self.next_id("c")] = groups
            self.accounts.append(AdAccount(acct, campaigns))

    def make_users(self) -> None:
        acct_ids = [a.ad_account_id for a in self.accounts]
        customer_seq = Counter[str]()
        for i in range(self.n_users):
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            emails = [self._email_variant(f"{first}.{last}{i}@{self.rng.choice(_DOMAINS)}")]
            if self.rng.random() < 0.3:
                emails.append(self._email_variant(f"{first[0]}{last}.{i}@work.example.com"))
            phones = []
            if self.rng.random() < 0.5:
                n = self.rng.randrange(2_000_000, 9_999_999)
                phones.append(
                    self.rng.choice(
                        (
                            f"+1 (415) {n // 10_000:03d}-{n % 10_000:04d}",
                            f"+44 07{n:07d}"[:16],
                            f"001-212-{n:07d}",
                        )
                    )
                )
            maids = [self._maid() for _ in range(self.rng.choice((0, 0, 1, 1, 2)))]
            accounts = self.rng.sample(acct_ids, k=min(len(acct_ids), self.rng.choice((1, 1, 2))))
            external_ids: dict[str, str] = {}
            for acct in accounts:
                if self.rng.random() < 0.5:
                    # Sequential customer numbers per advertiser: the same text is a
                    # different person at another advertiser (external_id is scoped).
                    customer_seq[acct] += 1
                    external_ids[acct] = f"{100_000 + customer_seq[acct]}"
            sessions = []
            for _ in range(self.rng.randint(1, 3)):
                ts = self.now - self.uniform_ms(0, self.span + 10 * DAY_MS)
                sessions.append((self._ip(), self.rng.choice(_UAS), ts))
            self.users.append(
                User(f"u-{i:05d}", emails, phones, maids, external_ids, sessions, accounts)
            )

    def _email_variant(self, email: str) -> str:
        r = self.rng.random()
        if r < 0.2:
            return f"  {email.upper()} "
        if r < 0.4:
            return email.capitalize()
        return email

    def _maid(self) -> str:
        hexd = "0123456789abcdef"
        parts = [self.token(n, hexd) for n in (8, 4, 4, 4, 12)]
        maid = "-".join(parts)
        return maid.upper() if self.rng.random() < 0.5 else maid

    def _ip(self) -> str:
        if self.rng.random() < 0.2:
            return "2001:db8:{:x}:{:x}::{:x}".format(
                *(self.rng.randrange(1, 0xFFFF) for _ in range(3))
            )
        return ".".join(str(self.rng.randrange(1, 255)) for _ in range(4))

    # ------------------------------------------------------------ identity.signals
    def signal(
        self,
        user_id: str,
        key_type: str,
        key: str,
        op: str,
        ts_ms: int,
        ad_account_id: str | None = None,
        delay_ms: int = 0,
    ) -> None:
        value = {
            "user_id": user_id,
            "key_type": key_type,
            "key": key,
            "ad_account_id": ad_account_id,
            "op": op,
            "ts_ms": ts_ms,
        }
        rec = Record(SIGNALS, key.encode(), dumps(value))
        self.signals.append((ts_ms + delay_ms, self.next_seq(), rec))

    def user_keys(self, user: User) -> list[tuple[str, str, str | None]]:
        keys: list[tuple[str, str, str | None]] = []
        keys += [("em", hash_email(e), None) for e in user.emails]
        keys += [("ph", hash_phone(p), None) for p in user.phones]
        keys += [("hashed_maid", hash_maid(m), None) for m in user.maids]
        keys += [("external_id", hash_external_id(x), a) for a, x in user.external_ids.items()]
        return keys

    def make_identity_signals(self) -> None:
        rng, now, span = self.rng, self.now, self.span
        old_lo, old_hi = now - span - 60 * DAY_MS, now - span - DAY_MS
        for user in self.users:
            for key_type, key, acct in self.user_keys(user):
                r = rng.random()
                if r < 0.88:
                    ts = self.uniform_ms(old_lo, old_hi)
                else:
                    # A link made during the conversions' span: it must not claim
                    # the conversions before it.
                    ts = self.uniform_ms(now - span, now)
                # Some signals are delivered late (out of ts order on the topic).
                delay = rng.choice((0,) * 9 + (2 * DAY_MS,))
                self.signal(user.user_id, key_type, key, "link", ts, acct, delay)
                self._history(user, key_type, key, acct, ts)
            for ip, ua, ts in user.sessions:
                self.signal(user.user_id, "ip_ua", ip_ua_hash(ip, ua), "link", ts)

    def _history(self, user: User, key_type: str, key: str, acct: str | None, link_ts: int) -> None:
        """Unlinks, re-links to the same user and moves to another user."""
        rng, now = self.rng, self.now
        r = rng.random()
        if r < 0.05:  # unlink during the span
            ts = self.uniform_ms(min(now, max(link_ts + 1, now - self.span)), now)
            self.signal(user.user_id, key_type, key, "unlink", ts, acct)
            if rng.random() < 0.5:  # ... and linked again later
                self.signal(
                    user.user_id,
                    key_type,
                    key,
                    "link",
                    self.uniform_ms(min(now, ts + 1), now),
                    acct,
                )
        elif r < 0.10 and len(self.users) > 1:  # moves to another user
            other = rng.choice([u for u in self.users[:50] if u is not user] or [user])
            ts = self.uniform_ms(min(now, max(link_ts + 1, now - self.span)), now)
            style = rng.random()
            if style < 0.4:
                # unlink then link at the SAME ts_ms: the arrival order decides.
                self.signal(user.user_id, key_type, key, "unlink", ts, acct)
                self.signal(other.user_id, key_type, key, "link", ts, acct)
            elif style < 0.7:
                # link to the other user, then a stale unlink of the first user at
                # the same ts: a no-op, the key stays with the other user.
                self.signal(other.user_id, key_type, key, "link", ts, acct)
                self.signal(user.user_id, key_type, key, "unlink", ts, acct)
            else:
                self.signal(other.user_id, key_type, key, "link", ts, acct)
        elif r < 0.12:  # unlink of another user: a no-op
            other = rng.choice(self.users)
            if other is not user:
                self.signal(
                    other.user_id, key_type, key, "unlink", self.uniform_ms(link_ts, now), acct
                )

    # -------------------------------------------------------------- ads.engagements
    def make_engagements(self) -> None:
        rng, now = self.rng, self.now
        acct_by_id = {a.ad_account_id: a for a in self.accounts}
        for user in self.users:
            for _ in range(rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 10))):
                acct = acct_by_id[rng.choice(user.ad_accounts)]
                ts = now - self.uniform_ms(0, self.span + 45 * DAY_MS)
                self._engagement(
                    user,
                    acct,
                    rng.choices(("view", "engagement", "click"), (0.55, 0.2, 0.25))[0],
                    ts,
                )
                if rng.random() < 0.04:
                    # Same user, account, class and ts_ms: engagement_id decides.
                    self._engagement(user, acct, rng.choice(("view", "click")), ts)

    def _engagement(self, user: User, acct: AdAccount, kind: str, ts: int) -> None:
        campaign, group, ad = self.rng.choice(acct.ads())
        click_id = None
        if kind == "click":
            click_id = "epik" + self.token(40, string.ascii_letters + string.digits + "-_")
            user.clicks.append((acct.ad_account_id, click_id, ts))
        value = {
            "engagement_id": self.next_id("e", 7),
            "user_id": user.user_id,
            "ad_account_id": acct.ad_account_id,
            "campaign_id": campaign,
            "ad_group_id": group,
            "ad_id": ad,
            "type": kind,
            "ts_ms": ts,
            "click_id": click_id,
        }
        delay = self.rng.choice((0,) * 19 + (DAY_MS,))
        self.engagements.append(
            (ts + delay, self.next_seq(), Record(ENGAGEMENTS, user.user_id.encode(), dumps(value)))
        )

    # ------------------------------------------------------------- privacy.requests
    def make_privacy_requests(self) -> None:
        rng, now = self.rng, self.now
        for user in self.users:
            if rng.random() >= self.f["opt_out_user"]:
                continue
            ts = now - self.uniform_ms(10_000, self.span + 10 * DAY_MS)
            self._privacy(user, "opt_out", ts)
            if rng.random() < 0.35:
                self._privacy(user, "opt_in", self.uniform_ms(ts + 1, now - 5_000))
                if rng.random() < 0.3:
                    self._privacy(user, "opt_out", now)

    def _privacy(self, user: User, kind: str, ts: int) -> None:
        value = {
            "request_id": self.next_id("r"),
            "user_id": user.user_id,
            "kind": kind,
            "ts_ms": ts,
        }
        self.privacy.append(
            (ts, self.next_seq(), Record(PRIVACY, user.user_id.encode(), dumps(value)))
        )

    # ------------------------------------------------------------ conversions.raw
    def envelope(
        self,
        acct: str | None,
        source: str,
        received: int,
        event: Any,
        label: dict[str, Any],
        key: bytes | None = None,
        raw: bytes | None = None,
    ) -> None:
        if raw is None:
            while True:  # every raw value is unique (a resend arrives 1 ms later)
                raw = dumps(
                    {
                        "ad_account_id": acct,
                        "source": source,
                        "received_at_ms": received,
                        "event": event,
                    }
                )
                if raw not in self.raw_values:
                    break
                received += 1
        self.raw_values.add(raw)
        if key is None and acct is not None:
            key = acct.encode()
        label = {"source": source, "ad_account_id": acct, **label}
        self.raw.append((received, self.next_seq(), Record(RAW, key, raw), label))
        if label.get("conversion_key"):
            self.keys_used.add(label["conversion_key"])

    def make_conversions(self) -> None:
        rng = self.rng
        originals: list[tuple[str, str, int, dict[str, Any]]] = []
        for _ in range(self.n_conversions):
            acct, source, received, event, restricted = self.conversion()
            key = conversion_key(acct, event)
            self.envelope(
                acct,
                source,
                received,
                event,
                {
                    "expect": ACCEPTED,
                    "kind": "original",
                    "conversion_key": key,
                    "restricted": restricted,
                },
            )
            originals.append((acct, source, received, event))
        if not originals:
            self.make_invalid(0)
            return
        n = len(originals)
        for _ in range(round(n * self.f["duplicate"])):
            self.duplicate(rng.choice(originals))
        for _ in range(round(n * self.f["other_scope"])):
            self.other_scope(rng.choice(originals))
        for orig in rng.sample(originals, k=min(n, round(n * self.f["supersede"]))):
            self.supersede(orig)
        self.make_invalid(max(1, round(n * self.f["invalid"])) if n >= 20 else 0)
        for _ in range(2 if n >= 20 else 0):
            self.edge_valid()

    def pick_user(self, acct: str, unknown: bool = False) -> User | None:
        if self.rng.random() < self.f["unknown_user"] or unknown:
            return None
        if self.by_account is None:
            self.by_account = {}
            for u in self.users:
                for a in u.ad_accounts:
                    self.by_account.setdefault(a, []).append(u)
        return self.rng.choice(self.by_account.get(acct) or self.users)

    def conversion(self, unknown: bool = False) -> tuple[str, str, int, dict[str, Any], str | None]:
        rng = self.rng
        acct = rng.choice(self.accounts).ad_account_id
        user = self.pick_user(acct, unknown)
        event_time = (self.now - self.uniform_ms(60_000, self.span)) // 1000
        source = rng.choices(SOURCES, (0.35, 0.3, 0.15, 0.2))[0]
        if source == "batch":
            action_source = "offline" if rng.random() < 0.8 else "web"
        elif source == "tag":
            action_source = "web"
        elif source == "api":
            action_source = rng.choices(("web", "app_android", "app_ios"), (0.6, 0.2, 0.2))[0]
        else:
            action_source = rng.choice(ACTION_SOURCES)
        received = self.received_at(source, event_time)
        event_name = rng.choices(EVENT_NAMES, [6 if n in VALUE_EVENTS else 1 for n in EVENT_NAMES])[
            0
        ]
        event_id = rng.choice(("ev-", "order-", "")) + self.token(12, string.hexdigits.lower())
        event = self.event(acct, user, event_name, event_id, action_source, event_time)
        restricted = None
        r = rng.random()
        if r < self.f["restricted"] / 2:
            event["opt_out"] = True
            restricted = "opt_out"
        elif r < self.f["restricted"]:
            custom = event.get("custom_data") or {}
            custom["opt_out_type"] = rng.choice(("LDP", "LDP", "CCPA,LDP"))
            event["custom_data"] = custom
            restricted = "ldp"
        return acct, source, received, event, restricted

    def received_at(self, source: str, event_time: int) -> int:
        base = event_time * 1000
        if source in ("api", "tag"):
            delay = self.uniform_ms(0, 120_000)
        elif source == "topic":
            delay = self.uniform_ms(0, 600_000)
        else:
            delay = self.uniform_ms(HOUR_MS, 2 * DAY_MS)
        return min(self.now, base + delay)

    def event(
        self,
        acct: str,
        user: User | None,
        event_name: str,
        event_id: str,
        action_source: str,
        event_time: int,
    ) -> dict[str, Any]:
        rng = self.rng
        event: dict[str, Any] = {
            "event_name": event_name,
            "action_source": action_source,
            "event_time": event_time,
            "event_id": event_id,
        }
        if action_source == "web":
            event["event_source_url"] = f"https://shop{acct[-3:]}.example.com/p/{event_id}"
        elif action_source.startswith("app_"):
            event["app_id"] = "com.example.shop"
            event["app_version"] = rng.choice(("5.2.1", "5.3.0", None))
            event["device_brand"] = "Google" if action_source == "app_android" else "Apple"
        if rng.random() < 0.3:  # the SDK sends explicit nulls
            event.update({"partner_name": None, "opt_out": False, "wifi": None, "language": "en"})
        event["user_data"] = self.user_data(acct, user, action_source, event_time)
        event["custom_data"] = self.custom_data(event_name)
        if event["custom_data"] is None and rng.random() < 0.5:
            del event["custom_data"]
        return event

    def custom_data(self, event_name: str) -> dict[str, Any] | None:
        rng = self.rng
        if event_name not in VALUE_EVENTS or rng.random() < 0.1:
            return rng.choice((None, {}, {"content_ids": ["sku-1"]}))
        currency = rng.choice(CURRENCIES)
        if currency == "JPY":
            value = str(rng.randrange(300, 60_000))
        else:
            value = f"{rng.randrange(99, 50_000) / 100:.2f}"
            if rng.random() < 0.1:
                value = rng.choice((value + "0", "0.10", "0", "1000000.5"))
        custom: dict[str, Any] = {"currency": currency, "value": value}
        if rng.random() < 0.5:
            qty = rng.randint(1, 3)
            custom.update(
                {
                    "content_ids": [f"sku-{rng.randrange(1000)}"],
                    "num_items": qty,
                    "order_id": f"o-{self.token(8, string.digits)}",
                    "contents": [{"id": "sku-1", "item_price": value, "quantity": qty}],
                }
            )
        return custom

    def user_data(
        self, acct: str, user: User | None, action_source: str, event_time: int
    ) -> dict[str, Any]:
        rng = self.rng
        t_ms = event_time * 1000
        ud: dict[str, Any] = {}
        if user is None:
            # Nobody we know: identifiers that no signal links.
            ud["em"] = [hash_email(f"stranger.{self.token(10)}@example.net")]
            if rng.random() < 0.3:
                ud["ph"] = [hash_phone(f"+1 650 {rng.randrange(10**6, 10**7)}")]
            if rng.random() < 0.3:
                ud["client_ip_address"] = self._ip()
                ud["client_user_agent"] = rng.choice(_UAS)
            if rng.random() < 0.2:
                ud["click_id"] = "epik" + self.token(40)
            if rng.random() < 0.2:
                ud["external_id"] = [hash_external_id(str(rng.randrange(100_001, 100_400)))]
            return ud
        clicks = [c for c in user.clicks if c[0] == acct and c[2] <= t_ms]
        if clicks and rng.random() < 0.35:
            ud["click_id"] = rng.choice(clicks)[1]
        elif rng.random() < 0.05:
            ud["click_id"] = "epik" + self.token(40)  # a click we never saw
        if rng.random() < 0.3:
            ext = user.external_ids.get(acct)
            if ext is None and user.external_ids:
                # This user's customer id at ANOTHER advertiser: must be ignored here.
                ext = next(iter(user.external_ids.values()))
            if ext is not None:
                ud["external_id"] = [hash_external_id(ext)]
        if rng.random() < 0.75:
            ems = [hash_email(e) for e in user.emails]
            if rng.random() < 0.2:
                ems.insert(0, hash_email(f"old.{self.token(8)}@example.net"))
            ud["em"] = ems
        if user.phones and rng.random() < 0.4:
            ud["ph"] = [hash_phone(p) for p in user.phones]
        if user.maids and (action_source.startswith("app_") or rng.random() < 0.1):
            ud["hashed_maids"] = [hash_maid(m) for m in user.maids]
        if action_source == "web" and rng.random() < 0.6:
            ip, ua, _ts = rng.choice(user.sessions)
            ud["client_ip_address"] = ip
            ud["client_user_agent"] = ua
        if "em" not in ud and "hashed_maids" not in ud and "client_ip_address" not in ud:
            ud["em"] = [hash_email(user.emails[0])]
        if rng.random() < 0.2:
            ud["country"] = [sha256_hex("us")]
            ud["ge"] = [sha256_hex(rng.choice("fmn"))]
        if rng.random() < 0.2:
            ud["partner_id"] = None
            ud.setdefault("click_id", None)
        return ud

    def resend_received(self, received: int, event_time: int) -> int:
        lo = max(received + 1, event_time * 1000 - HOUR_MS)
        return min(self.now, lo + self.uniform_ms(0, DAY_MS))

    def duplicate(self, orig: tuple[str, str, int, dict[str, Any]]) -> None:
        acct, source, received, event = orig
        rng = self.rng
        dup = copy.deepcopy(event)
        r = rng.random()
        if r < 0.5:
            shift = 0
        elif r < 0.6:
            shift = rng.choice((self.window_s, -self.window_s))  # exactly the window: a duplicate
        else:
            shift = rng.randint(-self.window_s, self.window_s)
        if event["event_time"] + shift > (self.now - 60_000) // 1000:
            shift = -abs(shift)
        dup["event_time"] = event["event_time"] + shift
        if isinstance(dup.get("custom_data"), dict) and "value" in dup["custom_data"]:
            if rng.random() < 0.5:  # a different value: the first one must win
                dup["custom_data"]["value"] = "1.00"
        new_source = rng.choice([s for s in SOURCES if s != "batch"] + [source])
        if dup["action_source"] == "offline":
            new_source = rng.choice(("batch", "topic"))
        received2 = self.resend_received(received, dup["event_time"])
        self.envelope(
            acct,
            new_source,
            received2,
            dup,
            {"expect": DUPLICATE, "kind": "duplicate", "conversion_key": conversion_key(acct, dup)},
        )

    def other_scope(self, orig: tuple[str, str, int, dict[str, Any]]) -> None:
        acct, _source, received, event = orig
        copy_ = copy.deepcopy(event)
        if event["action_source"] == "offline":
            copy_["action_source"] = "web"
            source = self.rng.choice(("tag", "api"))
        else:
            copy_["action_source"] = "offline"
            source = "batch"
        key = conversion_key(acct, copy_)
        # At most one other-scope copy per original: a second would be a duplicate.
        if key in self.keys_used:
            return
        received2 = self.resend_received(received, copy_["event_time"])
        self.envelope(
            acct,
            source,
            received2,
            copy_,
            {
                "expect": ACCEPTED,
                "kind": "other_scope",
                "conversion_key": key,
                "restricted": _restriction(copy_),
            },
        )

    def supersede(self, orig: tuple[str, str, int, dict[str, Any]]) -> None:
        """A resend outside the window, keeping event_time inside the span."""
        acct, source, received, event = orig
        rng = self.rng
        t = event["event_time"]
        room_up = (self.now - 60_000) // 1000 - t
        room_down = t - (self.now - self.span) // 1000
        sides = [d for d, room in ((1, room_up), (-1, room_down)) if room >= self.window_s + 1]
        if not sides:  # a span shorter than twice the window: go back in time
            sides, room_down = [-1], self.window_s * 5 // 2
        side = rng.choice(sides)
        room = room_up if side == 1 else room_down
        outside = self.window_s + 1
        far = max(outside, min(self.window_s * 5 // 2, room))
        shift = side * rng.choice((outside, rng.randint(outside, far)))
        again = copy.deepcopy(event)
        again["event_time"] = event["event_time"] + shift
        received2 = self.resend_received(received, again["event_time"])
        self.envelope(
            acct,
            source,
            received2,
            again,
            {
                "expect": ACCEPTED,
                "kind": "supersede",
                "conversion_key": conversion_key(acct, again),
                "restricted": _restriction(again),
            },
        )

    def edge_valid(self) -> None:
        """Valid at a validation limit: exactly 1 h in the future / exactly 67 days old.

        By a user nobody knows, so that its result (no_match, or restricted)
        does not depend on how long the pipeline waits for late context."""
        acct, source, _received, event, restricted = self.conversion(unknown=True)
        if self.rng.random() < 0.5:
            received = event["event_time"] * 1000 - HOUR_MS
        else:
            received = event["event_time"] * 1000 + MAX_EVENT_AGE_MS
            if received > self.now:
                event["event_time"] = (self.now - MAX_EVENT_AGE_MS) // 1000
                received = event["event_time"] * 1000 + MAX_EVENT_AGE_MS
        self.envelope(
            acct,
            source,
            received,
            event,
            {
                "expect": ACCEPTED,
                "kind": "edge_valid",
                "conversion_key": conversion_key(acct, event),
                "restricted": restricted,
            },
        )

    # -------------------------------------------------------------------- invalid
    def make_invalid(self, n: int) -> None:
        kinds = list(_INVALID_KINDS)
        self.rng.shuffle(kinds)
        for i in range(n):
            self.invalid(kinds[i % len(kinds)])

    def invalid(self, kind: str) -> None:
        rng = self.rng
        acct, source, received, event, _r = self.conversion()
        reason = _INVALID_KINDS[kind]
        label = {"expect": REJECTED, "kind": kind, "reason": reason}
        if kind == "not_json":
            raw = rng.choice(
                (
                    b"{not json",
                    b"\xff\xfe\x00garbage",
                    b'{"ad_account_id": "' + acct.encode() + b'", "event": {',
                )
            )
            raw += b" #" + str(self.next_seq()).encode()  # every raw value is unique
            self.envelope(
                None, "topic", received, None, label, key=rng.choice((None, acct.encode())), raw=raw
            )
            return
        if kind == "not_object":
            raw = rng.choice((b"[1, 2, %d]", b'"conversion %d"', b"%d")) % self.next_seq()
            self.envelope(None, "topic", received, None, label, key=acct.encode(), raw=raw)
            return
        if kind in _ENVELOPE_KINDS:
            self.invalid_envelope(kind, acct, source, received, event, label)
            return
        t = event["event_time"]
        ud = event["user_data"]
        if kind == "missing_field":
            del event[
                rng.choice(("event_id", "event_name", "event_time", "user_data", "action_source"))
            ]
        elif kind == "ms_event_time":
            event["event_time"] = t * 1000
        elif kind == "plaintext_email":
            ud["em"] = [f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}@example.com"]
        elif kind == "future_event_time":
            event["event_time"] = received // 1000 + 3600 + rng.choice((2, 60, DAY_S))
        elif kind == "old_event_time":
            received = self.now
            event["event_time"] = (received - MAX_EVENT_AGE_MS) // 1000 - rng.choice(
                (1, DAY_S * 30)
            )
        elif kind == "bad_currency":
            event["custom_data"] = {
                "currency": rng.choice(("US", "EURO", "U$D", "12A")),
                "value": "10.00",
            }
        elif kind == "bad_value":
            event["custom_data"] = {
                "currency": "USD",
                "value": rng.choice(("abc", "12,50", "NaN", "Infinity", "")),
            }
        elif kind == "unknown_field":
            if rng.random() < 0.5:
                event["user_id"] = "u-42"
            else:
                event["custom_data"] = {"currency": "USD", "value": "5.00", "price": "5.00"}
        elif kind == "bad_event_name":
            event["event_name"] = rng.choice(("purchase", "Checkout", "add-to-cart"))
        elif kind == "bad_action_source":
            event["action_source"] = rng.choice(("email", "phone_call", "WEB"))
        elif kind == "no_identifiers":
            event["user_data"] = {"ph": [hash_phone("+1 415 555 0100")]}
        elif kind == "short_hash":
            ud["em"] = [sha256_hex("x@example.com")[:40]]
        else:  # pragma: no cover - the table and this code are kept together
            raise AssertionError(kind)
        self.envelope(acct, source, received, event, label)

    def invalid_envelope(
        self,
        kind: str,
        acct: str,
        source: str,
        received: int,
        event: dict[str, Any],
        label: dict[str, Any],
    ) -> None:
        env: dict[str, Any] = {
            "ad_account_id": acct,
            "source": source,
            "received_at_ms": received,
            "event": event,
        }
        key: bytes | None = acct.encode()
        label_acct: str | None = acct
        if kind == "key_mismatch":
            others = [a.ad_account_id for a in self.accounts if a.ad_account_id != acct]
            key = self.rng.choice(others).encode() if others else b"0"
        elif kind == "unknown_envelope_field":
            env["recieved_at_ms"] = env.pop("received_at_ms")  # a typo
        elif kind == "invalid_source":
            env["source"] = self.rng.choice(("web", "API", "offline"))
            source = "topic"  # the bucket of a source that cannot be read
        elif kind == "invalid_ad_account_id":
            env["ad_account_id"] = self.rng.choice((f"act_{acct}", acct + "0" * 7, ""))
            label_acct = None
        elif kind == "missing_event":
            env["received_at_ms"] = received + self.next_seq()  # unique bytes
            env["event"] = self.rng.choice((None, "missing"))
            if env["event"] == "missing":
                del env["event"]
        else:  # pragma: no cover
            raise AssertionError(kind)
        self.envelope(label_acct, source, received, None, label, key=key, raw=dumps(env))

    # --------------------------------------------------------------------- finish
    def finish(self) -> Workload:
        records: dict[str, list[Record]] = {
            SIGNALS: [r for *_k, r in sorted(self.signals, key=lambda x: x[:2])],
            ENGAGEMENTS: [r for *_k, r in sorted(self.engagements, key=lambda x: x[:2])],
            PRIVACY: [r for *_k, r in sorted(self.privacy, key=lambda x: x[:2])],
        }
        raw_sorted = sorted(self.raw, key=lambda x: x[:2])
        records[RAW] = [r for _t, _s, r, _l in raw_sorted]
        labels = [
            RawLabel(
                index=i,
                expect=lbl["expect"],
                kind=lbl["kind"],
                source=lbl["source"],
                ad_account_id=lbl["ad_account_id"],
                conversion_key=lbl.get("conversion_key"),
                reason=lbl.get("reason"),
                restricted=lbl.get("restricted"),
            )
            for i, (_t, _s, _r, lbl) in enumerate(raw_sorted)
        ]
        _fix_labels_by_arrival(records[RAW], labels, self.window_s)
        values = [r.value for r in records[RAW]]
        if len(set(values)) != len(values):  # pragma: no cover - guarded by construction
            raise AssertionError("two conversions.raw records have the same bytes")
        return Workload(self.seed, self.now, records, labels, self.accounts, self.users)


#: invalid case -> expected conversions.dlq reason code
_INVALID_KINDS: dict[str, str] = {
    "not_json": "invalid_json",
    "not_object": "not_an_object",
    "missing_field": "missing_required_field",
    "ms_event_time": "event_time_in_milliseconds",
    "plaintext_email": "unhashed_identifier",
    "future_event_time": "event_time_in_future",
    "old_event_time": "event_time_too_old",
    "bad_currency": "invalid_currency",
    "bad_value": "invalid_value",
    "unknown_field": "unknown_field",
    "bad_event_name": "invalid_event_name",
    "bad_action_source": "invalid_action_source",
    "no_identifiers": "missing_user_identifiers",
    "short_hash": "unhashed_identifier",
    "key_mismatch": "key_mismatch",
    "unknown_envelope_field": "unknown_envelope_field",
    "invalid_source": "invalid_source",
    "invalid_ad_account_id": "invalid_ad_account_id",
    "missing_event": "missing_event",
}
_ENVELOPE_KINDS = frozenset(
    {
        "key_mismatch",
        "unknown_envelope_field",
        "invalid_source",
        "invalid_ad_account_id",
        "missing_event",
    }
)
INVALID_KINDS: tuple[str, ...] = tuple(_INVALID_KINDS)
ENVELOPE_KINDS: tuple[str, ...] = tuple(sorted(_ENVELOPE_KINDS))


def conversion_key(ad_account_id: str, event: dict[str, Any]) -> str:
    """The contract's conversion key of one generated event."""
    scope = scope_of(event["action_source"])
    return keys.conversion_key(ad_account_id, event["event_name"], event["event_id"], scope)


def _restriction(event: dict[str, Any]) -> str | None:
    if event.get("opt_out") is True:
        return "opt_out"
    custom = event.get("custom_data") or {}
    kinds = str(custom.get("opt_out_type") or "").split(",")
    return "ldp" if "LDP" in (k.strip() for k in kinds) else None


def _fix_labels_by_arrival(records: list[Record], labels: list[RawLabel], window_s: int) -> None:
    """Resends are generated after their original but sorted by received_at_ms;
    re-derive which of a key's valid records comes first in arrival order so that
    the labels follow the contract (first accepted wins, window against every
    accepted event of the key). Rejected records are left as generated."""
    accepted: dict[str, Seen] = {}
    for i, (rec, lbl) in enumerate(zip(records, labels, strict=True)):
        if lbl.expect == REJECTED or lbl.conversion_key is None:
            continue
        event_time = orjson.loads(rec.value)["event"]["event_time"]
        before = accepted.get(lbl.conversion_key, ())
        outcome = dedupe_rules.decide(before, event_time, f"raw:{i}", window_s)
        accepted[lbl.conversion_key] = outcome.state
        if outcome.decision is dedupe_rules.Decision.DUPLICATE:
            expect, kind = DUPLICATE, ("duplicate" if lbl.kind != "duplicate" else lbl.kind)
        else:
            expect = ACCEPTED
            kind = lbl.kind if lbl.kind != "duplicate" else "original"
            if before and kind == "original":
                kind = "supersede"
        if (expect, kind) != (lbl.expect, lbl.kind):
            labels[i] = RawLabel(
                lbl.index,
                expect,
                kind,
                lbl.source,
                lbl.ad_account_id,
                lbl.conversion_key,
                lbl.reason,
                lbl.restricted,
            )


def iter_values(records: Iterable[Record], topic: str) -> Iterable[Any]:
    """The decoded values of one topic's records (skipping undecodable ones)."""
    for rec in records:
        if rec.topic == topic:
            try:
                yield orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                continue
