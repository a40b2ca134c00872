"""The Conversions API end to end: a live ingest worker, the official Pinterest SDK, raw HTTP.

One ``python -m services.ingest`` runs for the module in its own namespace, data folder and
web port; tokens are made with ``convmesh tokens create`` (a subprocess, as an operator
would). The SDK runs in a subprocess whose working directory is an empty folder and whose
environment holds only what it needs, so that no ``config.json`` above it is loaded.
Processed events are read back from ``<ns>.conversions.raw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka.admin import apply_topics
from shared.kafka.registry_access import registry_for
from shared.runtime.settings import REPO_ROOT, Settings
from tests.conftest import delete_namespace_topics
from tests.integration.helpers import free_port

pytestmark = pytest.mark.integration

AD = "549755885175"
OTHER_AD = "111222333"
LIMITED_AD = "424242"
RATE_PER_MINUTE = 20
EMAIL = "dana.plaintext@example.net"
H1 = hashlib.sha256(b"dana@example.net").hexdigest()
START_TIMEOUT_S = 90
#: Short, so that the slow-client test waits little; long enough for every other request.
HEADER_TIMEOUT_S = 2.0


class Service:
    def __init__(self, *, ns: str, bootstrap: str, port: int, log: Path, tokens: dict) -> None:
        self.ns = ns
        self.bootstrap = bootstrap
        self.port = port
        self.log = log
        self.tokens = tokens
        self.url = f"http://127.0.0.1:{port}"
        self.topic = f"{ns}.conversions.raw"

    def events_url(self, ad: str = AD) -> str:
        return f"{self.url}/v5/ad_accounts/{ad}/events"


def _env(ns: str, bootstrap: str, **extra: str) -> dict[str, str]:
    # a clean convmesh configuration, but keep CONVMESH_CI_RUN_ID (CI finds leftovers by
    # it) and CONVMESH_DEV_MODE (without it, or real secrets, the worker refuses to start)
    kept = ("CONVMESH_CI_RUN_ID", "CONVMESH_DEV_MODE")
    env = {
        k: v
        for k, v in os.environ.items()
        if k in kept or not k.startswith(("CONVMESH_", "PINTEREST_"))
    }
    env.update(CONVMESH_NAMESPACE=ns, KAFKA_BOOTSTRAP=bootstrap, CONVMESH_DEV_MODE="true", **extra)
    return env


def _tokens_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "tokens", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()) - 60,
        "event_id": event_id,
        "event_source_url": None,
        "user_data": {"em": [H1], "client_ip_address": "203.0.113.9", "client_user_agent": "UA/1"},
        "custom_data": {"currency": "USD", "value": "19.99"},
    }
    base.update(overrides)
    return base


async def _wait_ready(url: str, token: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    body = orjson.dumps({"data": [event("ready-probe")]})
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the ingest worker exited during start-up"
            try:
                async with session.post(
                    f"{url}?test=true", data=body, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError("the ingest worker did not serve the API in time")


@pytest.fixture(scope="module")
def service(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    ns = f"t{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("api")
    asyncio.run(apply_topics(Settings(namespace=ns, bootstrap=bootstrap)))
    cli_env = _env(ns, bootstrap, CONVMESH_DATA_DIR=str(tmp / "cli"))
    tokens: dict[str, Any] = {}
    for name, ad in (("main", AD), ("other", OTHER_AD), ("limited", LIMITED_AD), ("old", AD)):
        tokens[name] = json.loads(
            _tokens_cli(cli_env, "create", "--ad-account", ad, "--json").stdout
        )
    _tokens_cli(cli_env, "revoke", tokens["old"]["token_id"])
    listing = json.loads(_tokens_cli(cli_env, "list", "--json").stdout)
    port = free_port()
    api_port = free_port()
    log = tmp / "ingest.log"
    env = _env(
        ns,
        bootstrap,
        CONVMESH_DATA_DIR=str(tmp / "data"),
        CONVMESH_WEB_PORT=str(port),
        CONVMESH_API_PORT=str(api_port),
        CONVMESH_API_RATE_PER_MINUTE=str(RATE_PER_MINUTE),
        CONVMESH_API_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    svc = Service(ns=ns, bootstrap=bootstrap, port=port, log=log, tokens=tokens)
    svc.listing = listing  # type: ignore[attr-defined]
    svc.api_port = api_port  # type: ignore[attr-defined]
    try:
        asyncio.run(_wait_ready(svc.events_url(), tokens["main"]["token"], proc))
        yield svc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        asyncio.run(delete_namespace_topics(bootstrap, ns))
    assert proc.returncode is not None


async def read_raw(svc: Service) -> list[tuple[bytes, dict[str, Any]]]:
    """Every record of ``<ns>.conversions.raw`` up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=svc.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        count = registry_for(Settings()).topic("conversions.raw").partitions
        parts = [TopicPartition(svc.topic, p) for p in range(count)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[bytes, dict[str, Any]]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(*parts, timeout_ms=1000)
            for messages in batches.values():
                out.extend((m.key, orjson.loads(m.value)) for m in messages)
        return out
    finally:
        await consumer.stop()


async def post(
    url: str, token: str | None, body: bytes | dict, query: str = ""
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as session:
        async with session.post(url + query, data=data, headers=headers) as response:
            return response.status, orjson.loads(await response.read())


# ------------------------------------------------------------------ the official SDK

SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pinterest.ads.conversion_events import Conversion
    from pinterest.client import PinterestSDKClient
    from openapi_generated.pinterest_client.exceptions import ApiException

    args = json.loads(sys.argv[1])
    client = None
    if args.get("token"):
        client = PinterestSDKClient.create_client_with_token(args["token"])
    events = [
        Conversion.create_conversion_event(
            event_name="checkout",
            action_source="web",
            event_time=e["event_time"],
            event_id=e["event_id"],
            user_data=e["user_data"],
            custom_data={"currency": "USD", "value": "12.30", "content_ids": ["sku-1"]},
            event_source_url="https://shop.example.com/checkout",
        )
        for e in args["events"]
    ]
    try:
        response = Conversion.send_conversion_events(
            ad_account_id=args["ad"], conversion_events=events, test=args["test"], client=client
        )
    except ApiException as exc:
        print(json.dumps({"exception": type(exc).__name__, "status": exc.status,
                          "body": json.loads(exc.body) if exc.body else None}))
    else:
        print(json.dumps({"status": 200,
                          "num_events_received": response.num_events_received,
                          "num_events_processed": response.num_events_processed,
                          "events": [e.status for e in response.events]}))
    """
)


def run_sdk(
    svc: Service,
    tmp_path: Path,
    events: list[dict[str, Any]],
    *,
    ad: str = AD,
    test: bool = False,
    token: str | None = None,
) -> dict[str, Any]:
    # the SDK loads the first config.json found under the parent of its working directory
    work = tmp_path / f"sdk-{uuid.uuid4().hex[:8]}" / "work"
    work.mkdir(parents=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "PINTEREST_API_URI": f"{svc.url}/v5",
        "PINTEREST_ACCESS_TOKEN": svc.tokens["main"]["token"],
    }
    if "CONVMESH_CI_RUN_ID" in os.environ:
        env["CONVMESH_CI_RUN_ID"] = os.environ["CONVMESH_CI_RUN_ID"]
    args = {"ad": ad, "test": test, "token": token, "events": events}
    done = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, json.dumps(args)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def sdk_event(event_id: str, **overrides: Any) -> dict[str, Any]:
    base = {"event_time": int(time.time()) - 120, "event_id": event_id, "user_data": {"em": [H1]}}
    base.update(overrides)
    return base


def test_tokens_cli_lists_tokens_without_secrets(service: Service) -> None:
    ids = {row["token_id"]: row for row in service.listing}  # type: ignore[attr-defined]
    assert ids[service.tokens["main"]["token_id"]]["ad_account_id"] == AD
    assert ids[service.tokens["old"]["token_id"]]["revoked"] is True
    dumped = json.dumps(service.listing)  # type: ignore[attr-defined]
    assert all(t["token"] not in dumped for t in service.tokens.values())


def test_sdk_all_processed_is_200_and_events_are_on_the_topic(service, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    events = [sdk_event(f"sdk-{run}-{i}") for i in range(3)]
    result = run_sdk(service, tmp_path, events)
    assert result == {
        "status": 200,
        "num_events_received": 3,
        "num_events_processed": 3,
        "events": ["processed"] * 3,
    }
    records = [
        (k, v)
        for k, v in asyncio.run(read_raw(service))
        if v["event"]["event_id"].startswith(f"sdk-{run}-")
    ]
    assert [v["event"]["event_id"] for _, v in records] == [e["event_id"] for e in events]
    for key, value in records:
        assert key == AD.encode()
        assert set(value) == {"ad_account_id", "source", "received_at_ms", "event"}
        assert value["ad_account_id"] == AD and value["source"] == "api"
        assert abs(value["received_at_ms"] - time.time() * 1000) < 120_000
        # the event as the SDK sent it: explicit nulls included
        assert value["event"]["custom_data"]["value"] == "12.30"
        assert "partner_name" in value["event"] and value["event"]["partner_name"] is None


def test_sdk_partly_failed_is_an_api_exception_422(service, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    events = [
        sdk_event(f"p-{run}-0"),
        sdk_event(f"p-{run}-1", event_time=int(time.time() * 1000)),
        sdk_event(f"p-{run}-2"),
    ]
    result = run_sdk(service, tmp_path, events)
    assert result["exception"] == "ApiException" and result["status"] == 422
    details = result["body"]["details"]
    assert details["num_events_received"] == 3 and details["num_events_processed"] == 2
    assert [e["status"] for e in details["events"]] == ["processed", "failed", "processed"]
    assert "milliseconds" in details["events"][1]["error_message"]
    published = {v["event"]["event_id"] for _, v in asyncio.run(read_raw(service))} & {
        e["event_id"] for e in events
    }
    assert published == {f"p-{run}-0", f"p-{run}-2"}


def test_sdk_wrong_token_is_unauthorized_401(service, tmp_path) -> None:
    result = run_sdk(service, tmp_path, [sdk_event("x")], token="cvm_0123456789ab_" + "A" * 43)
    assert result["exception"] == "UnauthorizedException" and result["status"] == 401
    assert result["body"]["code"] == 2


def test_sdk_revoked_token_is_401(service, tmp_path) -> None:
    result = run_sdk(service, tmp_path, [sdk_event("x")], token=service.tokens["old"]["token"])
    assert result["status"] == 401


def test_sdk_token_of_another_ad_account_is_forbidden_403(service, tmp_path) -> None:
    result = run_sdk(service, tmp_path, [sdk_event("x")], token=service.tokens["other"]["token"])
    assert result["exception"] == "ForbiddenException" and result["status"] == 403
    assert result["body"]["code"] == 29


def test_sdk_test_mode_answers_but_publishes_nothing(service, tmp_path) -> None:
    run = uuid.uuid4().hex[:8]
    result = run_sdk(service, tmp_path, [sdk_event(f"t-{run}-0")], test=True)
    assert result["status"] == 200 and result["events"] == ["processed"]
    marker = run_sdk(service, tmp_path, [sdk_event(f"m-{run}")], test=False)
    assert marker["status"] == 200
    ids = {v["event"]["event_id"] for _, v in asyncio.run(read_raw(service))}
    assert f"m-{run}" in ids  # acknowledged after the test call...
    assert f"t-{run}-0" not in ids  # ...which left nothing on the topic


# ------------------------------------------------------------------ raw HTTP


def test_raw_event_is_published_exactly_as_received(service) -> None:
    ev = event(f"raw-{uuid.uuid4().hex[:8]}", opt_out=None, custom_data={})
    status, body = asyncio.run(
        post(service.events_url(), service.tokens["main"]["token"], {"data": [ev]})
    )
    assert status == 200 and body["num_events_processed"] == 1
    found = [
        v for _, v in asyncio.run(read_raw(service)) if v["event"]["event_id"] == ev["event_id"]
    ]
    assert [f["event"] for f in found] == [ev]


def test_1001_events_is_400(service) -> None:
    body = {"data": [event(f"big-{i}") for i in range(1001)]}
    status, answer = asyncio.run(post(service.events_url(), service.tokens["main"]["token"], body))
    assert status == 400 and answer["code"] == 4196 and "1001" in answer["message"]


def raw_event_ids(service, prefix: str) -> list[str]:
    """The event_ids on conversions.raw that start with ``prefix``, in topic order."""
    return [
        v["event"]["event_id"]
        for _, v in asyncio.run(read_raw(service))
        if v["event"]["event_id"].startswith(prefix)
    ]


def test_1000_events_is_200(service) -> None:
    run = uuid.uuid4().hex[:8]
    body = {"data": [event(f"k-{run}-{i}") for i in range(1000)]}
    status, answer = asyncio.run(post(service.events_url(), service.tokens["main"]["token"], body))
    assert status == 200 and answer["num_events_processed"] == 1000
    # one partition, request order
    assert raw_event_ids(service, f"k-{run}-") == [f"k-{run}-{i}" for i in range(1000)]


def test_large_request_over_several_record_batches_keeps_every_event_in_order(service) -> None:
    """~1.8 MB of events: more than aiohttp's default 1 MiB body and than one record batch."""
    run = uuid.uuid4().hex[:8]
    pad = "p" * 1500
    body = {"data": [event(f"L-{run}-{i}", custom_data={"content_name": pad}) for i in range(1000)]}
    assert len(orjson.dumps(body)) > 1_500_000
    status, answer = asyncio.run(post(service.events_url(), service.tokens["main"]["token"], body))
    assert status == 200 and answer["num_events_processed"] == 1000
    assert raw_event_ids(service, f"L-{run}-") == [f"L-{run}-{i}" for i in range(1000)]


def test_non_json_body_is_400(service) -> None:
    status, answer = asyncio.run(
        post(service.events_url(), service.tokens["main"]["token"], b"data=not-json")
    )
    assert status == 400 and answer["code"] == 4196


def test_a_get_on_the_events_route_is_405_in_the_apis_json_form(service) -> None:
    """On the worker's own web server, where the operator views live too."""

    async def get() -> tuple[int, str, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            async with session.get(service.events_url()) as response:
                return response.status, response.content_type, orjson.loads(await response.read())

    status, content_type, answer = asyncio.run(get())
    assert (status, content_type, answer["code"]) == (405, "application/json", 4203)


def test_millisecond_timestamp_and_plaintext_email_fail_per_event(service) -> None:
    run = uuid.uuid4().hex[:8]
    data = [
        event(f"ms-{run}", event_time=int(time.time() * 1000)),
        event(f"pt-{run}", user_data={"em": [EMAIL]}),
        event(f"ok-{run}"),
    ]
    status, answer = asyncio.run(
        post(service.events_url(), service.tokens["main"]["token"], {"data": data})
    )
    assert status == 422
    events = answer["details"]["events"]
    assert [e["status"] for e in events] == ["failed", "failed", "processed"]
    assert "milliseconds" in events[0]["error_message"]
    assert "must be hashed" in events[1]["error_message"]
    assert EMAIL not in json.dumps(answer)
    ids = {v["event"]["event_id"] for _, v in asyncio.run(read_raw(service))}
    assert f"ok-{run}" in ids and f"pt-{run}" not in ids and f"ms-{run}" not in ids


def test_body_over_the_limit_is_413(service) -> None:
    filler = "x" * 1000
    body = {"data": [event(f"h-{i}", custom_data={"content_name": filler}) for i in range(4500)]}
    status, answer = asyncio.run(post(service.events_url(), service.tokens["main"]["token"], body))
    assert status == 413 and answer["code"] == 4199


def test_rate_limit_is_429_code_8(service) -> None:
    token = service.tokens["limited"]["token"]
    url = service.events_url(LIMITED_AD)

    async def burst() -> list[int]:
        statuses = []
        for i in range(RATE_PER_MINUTE + 3):
            status, answer = await post(url, token, {"data": [event(f"r-{i}")]}, query="?test=true")
            statuses.append(status)
            if status == 429:
                assert answer["code"] == 8
        return statuses

    statuses = asyncio.run(burst())
    assert statuses[:RATE_PER_MINUTE] == [200] * RATE_PER_MINUTE
    assert statuses[RATE_PER_MINUTE:] == [429] * 3
    # another ad account is not limited by this one's bucket
    status, _ = asyncio.run(
        post(
            service.events_url(),
            service.tokens["main"]["token"],
            {"data": [event("n")]},
            query="?test=true",
        )
    )
    assert status == 200


def test_an_event_nested_too_deeply_fails_alone(service) -> None:
    """orjson reads 1,024 levels but writes ~255: that event fails, not the request."""
    run = uuid.uuid4().hex[:8]
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    nested = orjson.dumps(event(f"deep-{run}", action_source="app_ios"))
    body = b'{"data": [%s, %s]}' % (
        orjson.dumps(event(f"ok-{run}")),
        nested[:-1] + b', "app_info": ' + deep + b"}",
    )
    status, answer = asyncio.run(post(service.events_url(), service.tokens["main"]["token"], body))
    assert status == 422
    assert [e["status"] for e in answer["details"]["events"]] == ["processed", "failed"]
    assert raw_event_ids(service, f"ok-{run}") == [f"ok-{run}"]


@pytest.mark.parametrize("which", ["web port", "shared API port"])
def test_unfinished_headers_are_closed_after_the_header_timeout(service, which) -> None:
    """Both servers of the worker (Faust's web server and the SO_REUSEPORT one)."""
    port = service.port if which == "web port" else service.api_port

    async def half_headers() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(f"POST /v5/ad_accounts/{AD}/events HTTP/1.1\r\nHost: x\r\n".encode())
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + 10), (
                time.monotonic() - started
            )
        finally:
            writer.close()

    data, waited = asyncio.run(half_headers())
    assert data == b""
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 5


def test_zz_logs_never_hold_tokens_or_plaintext(service) -> None:
    """Runs last in this module: everything above has been logged by now."""
    text = service.log.read_text(encoding="utf-8", errors="replace")
    assert "api_started" in text  # the log is the worker's and is not empty
    assert EMAIL not in text
    for token in service.tokens.values():
        secret = token["token"].split("_", 2)[2]
        assert token["token"] not in text and secret not in text
