"""End to end on the real broker: a generated workload through the five services,
compared exactly with the reference model, for two arrival orders.

* context first: identity signals, engagements and privacy requests are
  produced (and consumed) before any conversion;
* conversions first: every conversion is processed before any context exists,
  so each match and attribution comes from late data (re-matching and
  re-attribution with new versions, reports retracting and re-adding).

Then crashes, on an interleaved workload: every stateful worker killed -9 at
once mid-stream, and one random worker killed -9 at a time, several times.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from ops.workload import CONTEXT_TOPICS, RAW, generate
from shared.kafka import bundles
from shared.kafka.topic_io import latest_by_key, produce, read_all
from shared.runtime.settings import SERVICES
from tests.integration.helpers import (
    cli_env,
    convmesh,
    convmesh_json,
    free_web_port_base,
    group_lags,
    kafka,
    log_digest,
    machine_digest,
)
from tests.support.reference import Expected, reference

CONVERSIONS = int(os.environ.get("CONVMESH_E2E_CONVERSIONS", "2000"))
SETTLE_TIMEOUT_S = float(os.environ.get("CONVMESH_E2E_TIMEOUT_S", "300"))
WORKERS = os.environ.get("CONVMESH_E2E_WORKERS", "1")  # workers per service
# The kill comes once results flow out of the pipeline (5 % of them), plus this delay.
KILL_AFTER_S = float(os.environ.get("CONVMESH_E2E_KILL_AFTER_S", "0"))
POISONED_TOPICS = (
    "conversions.valid",
    "identity.lookups",
    "attribution.assignments",
    "reports.deltas",
)


@pytest.fixture
def mesh(bootstrap: str, namespace: str, tmp_path: Path):
    """Five services up in their own namespace, data dir and ports; down afterwards."""
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(tmp_path / "mesh"),
        CONVMESH_WEB_PORT_BASE=str(free_web_port_base(7300, workers=int(WORKERS))),
    )
    up = convmesh("up", "--workers", WORKERS, env=env, timeout=300)
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        yield env
    finally:
        down = convmesh("down", env=env, timeout=120)
        assert down.returncode == 0, down.stderr


def real(namespace: str, topic: str) -> str:
    return f"{namespace}.{topic}"


async def outputs(bootstrap: str, namespace: str) -> dict[str, Any]:
    attributed, reports, dlq, duplicates, facts = await asyncio.gather(
        read_all(kafka(bootstrap), real(namespace, "conversions.attributed")),
        read_all(kafka(bootstrap), real(namespace, "reports.conversions")),
        read_all(kafka(bootstrap), real(namespace, "conversions.dlq")),
        read_all(kafka(bootstrap), real(namespace, "conversions.duplicates")),
        read_all(kafka(bootstrap), real(namespace, "diagnostics.facts")),
    )
    return {
        "attributed_reads": attributed,
        "attributed": latest_by_key(attributed),
        "reports": latest_by_key(reports),
        "dlq": [orjson.loads(r.value) for r in dlq],
        "duplicates": [orjson.loads(r.value) for r in duplicates],
        "facts": [
            orjson.loads(value)
            for r in facts
            for _key, value in bundles.expand(r.key, r.value)
            if value is not None
        ],
    }


def differences(expected: Expected, out: dict[str, Any]) -> list[str]:
    return expected.diff_attributed(out["attributed"]) + expected.diff_reports(
        out["reports"].values()
    )


async def settle(
    bootstrap: str, namespace: str, expected: Expected, env: dict[str, str]
) -> dict[str, Any]:
    """Poll the outputs until they equal the expectation, or time out with the diff
    and what the mesh was doing (its groups' lag, its workers' last warnings)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        out = await outputs(bootstrap, namespace)
        problems = differences(expected, out)
        if not problems or time.monotonic() > deadline:
            break
        await asyncio.sleep(3)
    if problems:
        lags = await group_lags(bootstrap, namespace, list(SERVICES))
        status = convmesh("status", env=env).stdout
        diagnosis = [f"lag {where}: {behind}" for where, behind in lags.items()]
        diagnosis += log_digest(Path(env["CONVMESH_DATA_DIR"]))
        diagnosis += machine_digest(Path(env["CONVMESH_DATA_DIR"]))
        pytest.fail(
            f"{len(problems)} differences, first ones:\n"
            + "\n".join(problems[:25])
            + f"\n\nstatus:\n{status}\n"
            + "\n".join(diagnosis),
            pytrace=False,
        )
    return out


async def wait_for_keys(bootstrap: str, namespace: str, count: int, poll_s: float = 2) -> int:
    """Wait until conversions.attributed holds ``count`` keys; how many it holds."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        out = latest_by_key(
            await read_all(kafka(bootstrap), real(namespace, "conversions.attributed"))
        )
        if len(out) >= count:
            return len(out)
        await asyncio.sleep(poll_s)
    raise AssertionError(f"only {len(out)} of {count} conversions were processed in time")


async def run_order(
    bootstrap: str, namespace: str, order: str, env: dict[str, str], now_ms: int | None = None
) -> None:
    workload = generate(seed=7, conversions=CONVERSIONS, now_ms=now_ms)
    records = workload.ordered(order)
    # One ad account chooses its own windows (views off, a 7-day click window).
    account = workload.ad_accounts[0].ad_account_id
    windows = {account: {"click": 7, "engagement": 14, "view": 0}}
    chosen = convmesh(
        "accounts",
        "set-windows",
        "--ad-account",
        account,
        "--click",
        "7",
        "--engagement",
        "14",
        "--view",
        "0",
        env=env,
    )
    assert chosen.returncode == 0, chosen.stderr
    expected = reference(records, now_ms=workload.now_ms, windows=windows)
    context = [(real(namespace, r.topic), r.key, r.value) for r in records if r.topic != RAW]
    raws = [(real(namespace, r.topic), r.key, r.value) for r in records if r.topic == RAW]
    started = time.monotonic()
    if order == "context_first":
        # Poison on internal topics must be dead-lettered, not stop a service.
        await produce(
            kafka(bootstrap), [(real(namespace, t), b"k", b"\xffnot json") for t in POISONED_TOPICS]
        )
        await produce(kafka(bootstrap), context)
        await asyncio.sleep(5)  # let the context be consumed before any conversion
        positions = await produce(kafka(bootstrap), raws)
    else:
        positions = await produce(kafka(bootstrap), raws)
        await wait_for_keys(bootstrap, namespace, len(expected.attributed))
        await produce(kafka(bootstrap), context)
    out = await settle(bootstrap, namespace, expected, env)
    elapsed = time.monotonic() - started

    if order == "context_first":
        poisoned = {d["source_topic"] for d in out["dlq"] if d["reason"] == "processing_error"}
        assert poisoned == {real(namespace, t) for t in POISONED_TOPICS}
    # conversions.dlq holds exactly the rejected inputs, once each, with the reason.
    raw_dlq = [d for d in out["dlq"] if d["source_topic"] == real(namespace, RAW)]
    dlq = Counter((d["partition"], d["offset"]) for d in raw_dlq)
    rejected = {
        (positions[o.index].partition, positions[o.index].offset): o.reason
        for o in expected.outcomes
        if o.outcome == "rejected"
    }
    assert set(dlq) == set(rejected) and set(dlq.values()) == {1}
    reasons = {(d["partition"], d["offset"]): d["reason"] for d in raw_dlq}
    wrong = {
        pos: (want, reasons[pos]) for pos, want in rejected.items() if want and reasons[pos] != want
    }
    assert not wrong, f"DLQ reasons differ (expected, got): {list(wrong.items())[:10]}"
    # Nothing lost or counted twice: received = accepted + duplicates + rejected.
    duplicate_refs = {d["raw_ref"] for d in out["duplicates"]}
    assert len(duplicate_refs) == sum(o.outcome == "duplicate" for o in expected.outcomes)
    assert len(out["attributed"]) == len(expected.attributed)
    # Every valid input (accepted or duplicate) has its setup-diagnostics fact from ingest.
    valid_refs = {f["ref"] for f in out["facts"] if f["kind"] == "valid"}
    assert valid_refs == {
        f"{real(namespace, RAW)}:{positions[o.index].partition}:{positions[o.index].offset}"
        for o in expected.outcomes
        if o.outcome != "rejected"
    }
    print(
        f"\n[{order}] {len(records)} input records ({len(raws)} conversions.raw, "
        f"{expected.accepted} accepted), {len(out['attributed_reads'])} attributed records "
        f"for {len(out['attributed'])} keys, {len(out['reports'])} report rows: exact in "
        f"{elapsed:.1f} s"
    )
    for topic in CONTEXT_TOPICS:
        assert any(r.topic == topic for r in records)


def test_context_first_gives_exact_results(bootstrap: str, namespace: str, mesh) -> None:
    asyncio.run(run_order(bootstrap, namespace, "context_first", mesh))


def test_conversions_first_gives_exact_results(bootstrap: str, namespace: str, mesh) -> None:
    asyncio.run(run_order(bootstrap, namespace, "conversions_first", mesh))


def test_a_backfill_of_last_years_events_gives_exact_results(
    bootstrap: str, namespace: str, mesh
) -> None:
    """Events valid relative to their own received_at_ms, a year before the clock: the
    state is trimmed by the data's time, so engagements and dedup keys are still there."""
    year_ago_ms = int(time.time() * 1000) - 365 * 86_400_000
    asyncio.run(run_order(bootstrap, namespace, "conversions_first", mesh, now_ms=year_ago_ms))


def test_kill_9_of_every_stateful_worker_mid_stream_stays_exact(
    bootstrap: str, namespace: str, mesh
) -> None:
    """At-least-once redelivery after SIGKILL neither loses nor double-counts anything."""
    asyncio.run(run_with_crash(bootstrap, namespace, mesh))


async def run_with_crash(bootstrap: str, namespace: str, env: dict[str, str]) -> None:
    workload = generate(seed=11, conversions=CONVERSIONS)
    records = workload.ordered("interleaved")
    expected = reference(records, now_ms=workload.now_ms)
    real_records = [(real(namespace, r.topic), r.key, r.value) for r in records]
    half = len(real_records) // 2
    await produce(kafka(bootstrap), real_records[:half])
    # Mid-stream: every service is busy with the first half when the kill comes.
    flowing = max(1, len(expected.attributed) // 20)
    out_at_kill = await wait_for_keys(bootstrap, namespace, flowing, poll_s=0.2)
    await asyncio.sleep(KILL_AFTER_S)
    status = convmesh_json("status", "--json", env=env)
    victims = [s["pid"] for s in status["services"] if s["name"] != "ingest"]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    await produce(kafka(bootstrap), real_records[half:])
    restarted = convmesh("up", "--workers", WORKERS, env=env, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    after = convmesh_json("status", "--json", env=env)
    assert not set(victims) & {s["pid"] for s in after["services"]}
    out = await settle(bootstrap, namespace, expected, env)
    duplicate_refs = {d["raw_ref"] for d in out["duplicates"]}
    assert len(duplicate_refs) == sum(o.outcome == "duplicate" for o in expected.outcomes)
    print(
        f"\n[kill -9] {len(victims)} workers killed with {out_at_kill} of "
        f"{len(expected.attributed)} results out; "
        f"{len(out['attributed'])} conversions exact after restart"
    )


def test_repeated_kill_9_of_random_workers_between_slices_stays_exact(
    bootstrap: str, namespace: str, mesh
) -> None:
    """Several crashes of one service at a time, at random points, still give exact results.

    Each kill lands while the previous restart's redelivery may still be under
    way, so recomputed state meets outputs made before the crash (the case that
    needs versions to be stamps, see shared/contract/versions.py).
    """
    asyncio.run(run_with_crashes(bootstrap, namespace, mesh, kills=REPEATED_KILLS))


REPEATED_KILLS = int(os.environ.get("CONVMESH_E2E_KILLS", "4"))


async def run_with_crashes(bootstrap: str, namespace: str, env: dict[str, str], kills: int) -> None:
    rng = random.Random(6)  # kills dedupe, attribute, identity_match, aggregate, in that order
    workload = generate(seed=23, conversions=CONVERSIONS)
    records = workload.ordered("interleaved")
    expected = reference(records, now_ms=workload.now_ms)
    real_records = [(real(namespace, r.topic), r.key, r.value) for r in records]
    step = len(real_records) // (kills + 1)
    victims = []
    for kill in range(kills):
        await produce(kafka(bootstrap), real_records[kill * step : (kill + 1) * step])
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        status = convmesh_json("status", "--json", env=env)
        victim = rng.choice([s for s in status["services"] if s["name"] != "ingest"])
        os.kill(victim["pid"], signal.SIGKILL)
        victims.append(victim["name"])
        restarted = convmesh("up", "--workers", WORKERS, env=env, timeout=300)
        assert restarted.returncode == 0, restarted.stderr
    await produce(kafka(bootstrap), real_records[kills * step :])
    out = await settle(bootstrap, namespace, expected, env)
    print(
        f"\n[kill -9 x{kills}] killed {victims}; "
        f"{len(out['attributed'])} conversions exact after the restarts"
    )
