"""A `delete` privacy request reaches every store (contract: Deletion).

After it is processed no service's state holds the user's id, identifiers or
engagements (the changelogs' latest records), and every conversions.attributed
record that named the user is re-emitted with ``match.user = null``.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from shared.contract.identifiers import hash_email
from shared.contract.keys import internal_click, internal_user
from shared.contract.pseudonyms import pseudonym
from shared.kafka.registry_access import registry_for
from shared.kafka.topic_io import latest_by_key, produce, read_all
from shared.runtime.settings import SERVICES, Settings
from tests.integration.helpers import kafka
from tests.integration.test_pipeline import mesh  # noqa: F401  (the fixture)

ACCOUNT = "549755885175"
DELETED, KEPT = "u-deleted-17", "u-kept-18"


def envelope(event_id: str, event_time: int, user_data: dict) -> bytes:
    return orjson.dumps(
        {
            "ad_account_id": ACCOUNT,
            "source": "api",
            "received_at_ms": event_time * 1000,
            "event": {
                "event_name": "checkout",
                "action_source": "web",
                "event_time": event_time,
                "event_id": event_id,
                "user_data": user_data,
                "custom_data": {"currency": "USD", "value": "12.50"},
            },
        }
    )


def engagement(eid: str, user: str, ts_ms: int, click_id: str | None) -> bytes:
    return orjson.dumps(
        {
            "engagement_id": eid,
            "user_id": user,
            "ad_account_id": ACCOUNT,
            "campaign_id": "c-1",
            "ad_group_id": "g-1",
            "ad_id": "a-1",
            "type": "click",
            "ts_ms": ts_ms,
            "click_id": click_id,
        }
    )


def link(user: str, key: str, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "user_id": user,
            "key_type": "em",
            "key": key,
            "ad_account_id": None,
            "op": "link",
            "ts_ms": ts_ms,
        }
    )


async def latest(bootstrap: str, topic: str) -> dict:
    return latest_by_key(await read_all(kafka(bootstrap), topic))


async def wait_until(check, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(1.0)


async def scenario(bootstrap: str, ns: str) -> None:
    now = int(time.time())
    now_ms = now * 1000
    em_deleted, em_kept = hash_email("gone@example.com"), hash_email("stays@example.com")
    other_em = hash_email("nobody@example.com")
    t = lambda name: f"{ns}.{name}"  # noqa: E731
    await produce(
        kafka(bootstrap),
        [
            (
                t("identity.signals"),
                em_deleted.encode(),
                link(DELETED, em_deleted, now_ms - 900_000),
            ),
            (t("identity.signals"), em_kept.encode(), link(KEPT, em_kept, now_ms - 900_000)),
            (
                t("ads.engagements"),
                DELETED.encode(),
                engagement("e-1", DELETED, (now - 800) * 1000, "epik-del"),
            ),
            (
                t("ads.engagements"),
                KEPT.encode(),
                engagement("e-2", KEPT, (now - 800) * 1000, None),
            ),
        ],
    )
    await asyncio.sleep(3)
    await produce(
        kafka(bootstrap),
        [
            (
                t("conversions.raw"),
                ACCOUNT.encode(),
                envelope("by-email", now - 100, {"em": [em_deleted]}),
            ),
            (
                t("conversions.raw"),
                ACCOUNT.encode(),
                envelope("by-click", now - 100, {"em": [other_em], "click_id": "epik-del"}),
            ),
            (
                t("conversions.raw"),
                ACCOUNT.encode(),
                envelope("kept", now - 100, {"em": [em_kept]}),
            ),
        ],
    )
    keys = {f"{ACCOUNT}:checkout:{e}:online" for e in ("by-email", "by-click", "kept")}

    async def attributed():
        out = await latest(bootstrap, t("conversions.attributed"))
        return out if keys <= set(out) and all(out[k]["match"] for k in keys) else None

    before = await wait_until(attributed)
    assert before, "the three conversions were not attributed in time"
    dev = Settings(dev_mode=True)
    internal = internal_user(DELETED, dev.active_identifier_key)
    by_email = before[f"{ACCOUNT}:checkout:by-email:online"]
    assert by_email["match"]["user"] == pseudonym(ACCOUNT, internal, dev.active_pseudonym_keys)
    assert before[f"{ACCOUNT}:checkout:by-click:online"]["match"]["key_type"] == "click_id"

    await produce(
        kafka(bootstrap),
        [
            (
                t("privacy.requests"),
                DELETED.encode(),
                orjson.dumps(
                    {"request_id": "r-1", "user_id": DELETED, "kind": "delete", "ts_ms": now * 1000}
                ),
            )
        ],
    )

    async def scrubbed():
        out = await latest(bootstrap, t("conversions.attributed"))
        named = [out[k] for k in keys if "kept" not in k]
        return out if all(r["match"]["user"] is None for r in named) else None

    after = await wait_until(scrubbed)
    assert after, "the deleted user's results were not re-emitted without them"
    for key in keys - {f"{ACCOUNT}:checkout:kept:online"}:
        assert after[key]["version"] > before[key]["version"]
        assert after[key]["status"] == before[key]["status"]
        assert after[key]["match"]["key_type"] == before[key]["match"]["key_type"]
    assert after[f"{ACCOUNT}:checkout:kept:online"] == before[f"{ACCOUNT}:checkout:kept:online"]

    # The user's raw and internal ids, email hash and click id (raw and internal).
    click = internal_click("epik-del", dev.active_identifier_key)
    names_of_the_user = (DELETED, internal, em_deleted, "epik-del", click)

    async def no_state_names_the_user():
        changelogs = []
        for service in SERVICES:
            settings = Settings(service=service, namespace=ns)
            for spec in registry_for(settings).tables_of(service):
                changelogs.append(spec.changelog_name(settings.app_id))
        found = []
        for topic in changelogs:
            for key, value in (await latest(bootstrap, topic)).items():
                text = key + orjson.dumps(value).decode()
                if any(name in text for name in names_of_the_user):
                    found.append(topic)
        return None if found else True

    assert await wait_until(no_state_names_the_user, 60), "a changelog still names the user"

    async def attribute_receipt():
        receipts = await read_all(kafka(bootstrap), t("privacy.receipts"))
        mine = [orjson.loads(r.value) for r in receipts if r.key == b"r-1"]
        return [r for r in mine if r["service"] == "attribute"]

    [receipt] = await wait_until(attribute_receipt, 30)
    assert set(receipt) == {"request_id", "service", "completed_at_ms", "conversions_scrubbed"}
    assert receipt["request_id"] == "r-1" and receipt["conversions_scrubbed"] == 2
    assert receipt["completed_at_ms"] >= now_ms
    await replayed_engagement_does_not_resurrect_the_user(bootstrap, ns, now, after)


async def replayed_engagement_does_not_resurrect_the_user(
    bootstrap: str, ns: str, now: int, after: dict
) -> None:
    """The user's pre-deletion engagement (a click) and link come again (a
    replay); then new ones, after the deletion, on the same keys.

    Same key, same partition (in ads.engagements, then by internal user id in
    attribution.user_events): once attribute's state holds the new engagement,
    the replay before it has been processed, and it must not be there. In
    identity_match the replayed click and link do reach their identifiers; the
    user index, which remembers the deletion, has them forgotten again, and
    only the new click and link stay (the user's return).
    """
    t = lambda name: f"{ns}.{name}"  # noqa: E731
    new_ms = int(time.time() * 1000) + 60_000  # after the deletion: new data
    replay = engagement("e-1", DELETED, (now - 800) * 1000, "epik-del")
    fresh = engagement("e-new", DELETED, new_ms, "epik-del")
    em_deleted = hash_email("gone@example.com")
    await produce(
        kafka(bootstrap),
        [
            *[(t("ads.engagements"), DELETED.encode(), v) for v in (replay, fresh)],
            *[
                (t("identity.signals"), em_deleted.encode(), link(DELETED, em_deleted, ts_ms))
                for ts_ms in ((now - 900) * 1000, new_ms)
            ],
        ],
    )
    settings = Settings(service="attribute", namespace=ns)
    changelog = registry_for(settings).table("attribute", "users").changelog_name(settings.app_id)
    # A user's parts are keyed "{internal user id}|{kind}|{item}" (development key).
    dev = Settings(dev_mode=True)
    user = internal_user(DELETED, dev.active_identifier_key)

    async def items_of_the_user(kind: str) -> list[str]:
        prefix = f"{user}|{kind}|"
        found = (await latest(bootstrap, changelog)).items()
        return sorted(k[len(prefix) :] for k, v in found if k.startswith(prefix) and v is not None)

    async def engagements_after_the_fresh_one():
        items = await items_of_the_user("e")
        return items if "e-new" in items else None

    items = await wait_until(engagements_after_the_fresh_one, 60)
    assert items, "the engagement after the deletion was not processed"
    assert items == ["e-new"] and await items_of_the_user("n") == []
    out = await latest(bootstrap, t("conversions.attributed"))
    assert out == after, "a replay changed a published result"

    im = Settings(service="identity_match", namespace=ns)
    keys = registry_for(im).table("identity_match", "keys").changelog_name(im.app_id)
    click = internal_click("epik-del", dev.active_identifier_key)

    async def only_the_new_links():
        latest_keys = await latest(bootstrap, keys)
        link_times = [s[0] for s in (latest_keys.get(em_deleted) or {}).get("signals", [])]
        clicks = [c[2] for c in (latest_keys.get(click) or {}).get("clicks", [])]
        return latest_keys if link_times == [new_ms] and clicks == ["e-new"] else None

    assert await wait_until(only_the_new_links, 60), "a replayed link or click was kept"


def test_delete_request_reaches_every_store(bootstrap: str, namespace: str, mesh) -> None:  # noqa: F811
    asyncio.run(scenario(bootstrap, namespace))
