"""The advertiser API on the real broker: one aggregate worker fed a known workload.

Setup diagnostics and reports are read over HTTP with the account's API token
(401 without, 403 with another account's), as JSON and CSV, and compared with
the numbers the workload implies (docs/diagnostics.md).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shared.contract.diagnostic_facts import fact_of_valid
from shared.kafka.topic_io import produce
from shared.runtime.settings import BASE_WEB_PORTS, DEFAULT_WEB_PORT_BASE
from tests.integration.helpers import as_published, convmesh, convmesh_json, kafka, topics_env
from tests.integration.test_privacy_lanes import workers  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

ACCOUNT = "549755885175"
OTHER = "111222333"
NOW_MS = int(time.time() * 1000)
EVENT_TIME = NOW_MS // 1000 - 50  # received 50-51 s late: the (15, 60] s bin
TIMEOUT_S = 120.0


@pytest.fixture
def env(bootstrap: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    return topics_env(bootstrap, namespace, tmp_path / "data", 8700)


def base_url(env: dict[str, str]) -> str:
    port = BASE_WEB_PORTS["aggregate"] - DEFAULT_WEB_PORT_BASE + int(env["CONVMESH_WEB_PORT_BASE"])
    return f"http://127.0.0.1:{port}"


def token_for(env: dict[str, str], account: str) -> str:
    return str(
        convmesh_json("tokens", "create", "--ad-account", account, "--json", env=env)["token"]
    )


def valid(n: int, source: str, ids: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversion_key": f"{ACCOUNT}:checkout:ev-{n}:online",
        "ad_account_id": ACCOUNT,
        "source": source,
        "received_at_ms": NOW_MS,
        "raw_ref": f"conversions.raw:0:{n}{source}",
        "event_name": "checkout",
        "event_id": f"ev-{n}",
        "action_source": "web",
        "event_time": EVENT_TIME,
        "scope": "online",
        "value": 10.0,
        "currency": "USD",
        "ids": {
            "click_id": None,
            "external_id": [],
            "em": [],
            "ph": [],
            "hashed_maids": [],
            "ip_ua": None,
            **ids,
        },
    }


def attributed(n: int, key_type: str | None, campaign: str | None) -> dict[str, Any]:
    status = "attributed" if campaign else "unidentified"
    return {
        "conversion_key": f"{ACCOUNT}:checkout:ev-{n}:online",
        "ad_account_id": ACCOUNT,
        "event_id": f"ev-{n}",
        "event_name": "checkout",
        "action_source": "web",
        "source": "api",
        "event_time": EVENT_TIME,
        "value": 10.0,
        "currency": "USD",
        "status": status,
        "unidentified_reason": None if campaign else "no_match",
        "match": {"key_type": key_type, "user": f"u{n}"} if key_type else None,
        "touch": {
            "engagement_id": f"e{n}",
            "campaign_id": campaign,
            "ad_group_id": "g1",
            "ad_id": "a1",
            "type": "click",
            "ts_ms": EVENT_TIME * 1000 - 1000,
        }
        if campaign
        else None,
        "version": 1,
        "processed_at_ms": NOW_MS,
    }


def feed(env: dict[str, str]) -> None:
    """api ev-0..3 (em on 0..2), tag ev-0 (a duplicate) and ev-4; one reject; 3 results.

    The valid conversions come as the facts ingest sends with them."""
    ns = env["CONVMESH_NAMESPACE"]
    em = {"em": ["e" * 64]}
    valids = [valid(n, "api", em if n < 3 else {}) for n in range(4)]
    valids += [valid(0, "tag", {"click_id": "c"}), valid(4, "tag", {})]
    duplicate = {
        "conversion_key": f"{ACCOUNT}:checkout:ev-0:online",
        "raw_ref": "conversions.raw:0:0tag",
        "source": "tag",
        "ad_account_id": ACCOUNT,
        "event_time": EVENT_TIME,
        "original_event_time": EVENT_TIME,
    }
    raw = orjson.dumps(
        {"source": "tag", "received_at_ms": NOW_MS, "event": {"event_name": "checkout"}}
    )
    dead = {
        "reason": "invalid_event_time",
        "message": "event_time is too old",
        "source_topic": f"{ns}.conversions.raw",
        "partition": 0,
        "offset": 77,
        "ad_account_id": ACCOUNT,
        "raw": raw.decode(),
    }
    downstream = {**dead, "reason": "processing_error", "source_topic": f"{ns}.conversions.valid"}
    results = [
        attributed(0, "em", "c1"),
        attributed(1, None, None),
        attributed(2, "click_id", "c2"),
    ]
    # The facts ingest sends with each conversions.valid record (aggregate does not read it).
    records = [
        (f"{ns}.diagnostics.facts", ACCOUNT.encode(), orjson.dumps(fact_of_valid(v)))
        for v in valids
    ]
    records.append(
        (
            f"{ns}.conversions.duplicates",
            duplicate["conversion_key"].encode(),
            orjson.dumps(duplicate),
        )
    )
    records += [
        (f"{ns}.conversions.dlq", ACCOUNT.encode(), orjson.dumps(d)) for d in (dead, downstream)
    ]
    records += as_published(ns, results)
    asyncio.run(produce(kafka(env["KAFKA_BOOTSTRAP"]), records))


def get(url: str, token: str | None, accept: str = "application/json") -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            try:
                async with session.get(url, headers=headers) as resp:
                    return resp.status, await resp.text()
            except aiohttp.ClientConnectionError:
                return 0, ""

    return asyncio.run(go())


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)  # polling interval, not a wait for a condition
    raise AssertionError(f"timed out waiting for {what}")


def test_diagnostics_and_reports_with_token_checks(env, workers) -> None:  # noqa: F811
    mine, other = token_for(env, ACCOUNT), token_for(env, OTHER)
    feed(env)
    workers(env)
    base = base_url(env)
    diagnostics_url = f"{base}/v5/ad_accounts/{ACCOUNT}/events/diagnostics"

    def diagnostics_done() -> Any:
        status, text = get(diagnostics_url, mine)
        if status != 200:
            return None
        day = orjson.loads(text)["windows"]["1d"]
        return day if day["received"] == 7 and day["match_rate"]["results"] == 3 else None

    day = wait_for("the workload's diagnostics", diagnostics_done)
    assert (day["accepted"], day["duplicate"], day["rejected"]) == (5, 1, 1)
    assert day["by_source"]["tag"]["received"] == 3 and day["by_source"]["api"]["received"] == 4
    assert day["identifier_coverage"]["em"] == 0.5  # 3 of 6 valid events
    assert day["match_rate"] == {
        "results": 3,
        "overall": 0.6667,
        "by_key_type": {"click_id": 0.3333, "em": 0.3333},
    }
    assert day["redundancy"] == {"tag_keys": 2, "api_keys": 4, "both": 1, "share": 0.2}
    [reason] = day["top_reject_reasons"]
    assert reason["reason"] == "invalid_event_time" and reason["count"] == 1
    assert day["freshness_s"]["p50"] == 60 and day["freshness_s"]["p95"] == 60

    assert get(diagnostics_url, None)[0] == 401
    status, text = get(diagnostics_url, other)
    assert status == 403 and orjson.loads(text)["code"] == 29
    assert orjson.loads(get(diagnostics_url, "not-a-token")[1])["code"] == 2

    reports_url = f"{base}/v5/ad_accounts/{ACCOUNT}/reports?level=campaign"

    def reports_done() -> Any:
        status, text = get(reports_url, mine)
        report = orjson.loads(text) if status == 200 else None
        return report if report and sum(r["conversions"] for r in report["rows"]) == 3 else None

    report = wait_for("the workload's report rows", reports_done)
    by_campaign = {r["campaign_id"]: r for r in report["rows"]}
    assert by_campaign["c1"]["conversions"] == 1 and by_campaign["c1"]["value"] == {"USD": 10.0}
    assert by_campaign[None]["attribution_type"] == "unidentified"
    status, text = get(reports_url, mine, accept="text/csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["conversions"] for r in rows) == ["1", "1", "1"]
    assert {r["value.USD"] for r in rows} == {"10.0"}
    assert get(reports_url, None)[0] == 401 and get(reports_url, other)[0] == 403
    assert get(f"{base}/reports?ad_account_id={ACCOUNT}", other)[0] == 403
    assert get(f"{base}/reports?ad_account_id={ACCOUNT}", mine)[0] == 200

    done = convmesh("report", "--ad-account", ACCOUNT, "--token", mine, "--csv", env=env)
    assert done.returncode == 0 and done.stdout == text
    shown = convmesh("diagnostics", "--ad-account", ACCOUNT, "--token", mine, env=env)
    assert shown.returncode == 0 and "Setup diagnostics" in shown.stdout, shown.stderr
    rejects = convmesh_json("dlq", "--since", "1h", "--json", env=env)
    assert {(g["reason"], g["count"]) for g in rejects} == {
        ("invalid_event_time", 1),
        ("processing_error", 1),
    }


def test_any_worker_answers_for_any_account(env, workers) -> None:  # noqa: F811
    """With two workers, one owns the account's partition; the other forwards to it."""
    mine = token_for(env, ACCOUNT)
    feed(env)
    workers(env, CONVMESH_WORKER="0")
    workers(
        env, CONVMESH_WORKER="1", CONVMESH_WEB_PORT=str(int(base_url(env).rsplit(":", 1)[1]) + 1)
    )
    port = int(base_url(env).rsplit(":", 1)[1])
    urls = [
        f"http://127.0.0.1:{p}/v5/ad_accounts/{ACCOUNT}/events/diagnostics"
        for p in (port, port + 1)
    ]

    def both_answer() -> Any:
        answers = []
        for url in urls:
            status, text = get(url, mine)
            if status != 200:
                return None
            answers.append(orjson.loads(text)["windows"]["1d"])
        return (
            answers
            if all(a["received"] == 7 and a["match_rate"]["results"] == 3 for a in answers)
            else None
        )

    first, second = wait_for("both workers to answer with the workload's numbers", both_answer, 180)
    assert first == second
    assert get(urls[1], None)[0] == 401
