"""The chaos suite: a generated workload through the mesh while faults are injected.

On a broker of its own, the five services run with CONVMESH_CHAOS_WORKERS
workers each. The workload (ops.workload) is produced in slices; after each
slice comes one fault of the schedule: kill -9 of a random worker, kill -9 of
every worker of one service at once, or of every stateful worker at once, a
broker stop and start (the API probed meanwhile), a scale-out or scale-in with
`convmesh scale`, a damaged RocksDB store. Hostile records go to
every consumed input topic. When all is consumed, every output is compared with
the reference model (tests/support/reference.py):

* conversions.attributed (latest per key) and reports.conversions, exactly;
* conversions.dlq: per input (source_topic, partition, offset, the contract's
  dedup id), exactly the rejected conversions.raw records with their reasons and
  every hostile record of the other topics with its decoder's reason;
* the balance received = accepted + duplicates + rejected, counting distinct inputs;
* every event the API answered 200 for is on conversions.raw.

Settings (environment): CONVMESH_CHAOS_CONVERSIONS (1500), CONVMESH_CHAOS_WORKERS
(2), CONVMESH_CHAOS_FAULTS (a comma list of kill, kill_all, kill_stateful, broker_restart,
scale_out, scale_in, damage_store, or random:N), CONVMESH_CHAOS_SEED (1),
CONVMESH_CHAOS_TIMEOUT_S (600). `make chaos-short` and `make chaos` set them.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from ops.summary import pipeline_summary
from ops.workload import RAW, generate
from shared.kafka.topic_io import latest_by_key, produce, read_all
from tests.chaos.hostile import DECODERS, check, hostile
from tests.chaos.mesh import FAULTS, PROBE_AD, ChaosMesh, schedule
from tests.integration.helpers import kafka
from tests.support.reference import Expected, reference

pytestmark = pytest.mark.chaos

CONVERSIONS = int(os.environ.get("CONVMESH_CHAOS_CONVERSIONS", "1500"))
FAULT_SPEC = os.environ.get(
    "CONVMESH_CHAOS_FAULTS",
    "kill,kill_all,scale_out,broker_restart,damage_store,kill_stateful,scale_in,kill",
)
SEED = int(os.environ.get("CONVMESH_CHAOS_SEED", "1"))
SETTLE_TIMEOUT_S = float(os.environ.get("CONVMESH_CHAOS_TIMEOUT_S", "600"))
HOSTILE_PER_TOPIC = 12


def hostile_records(rng: random.Random) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, expected reason) for each consumed topic, rejected ones only;
    plus undecodable accounts.settings records (logged and skipped: no DLQ path)."""
    found = []
    for topic, decoder in DECODERS.items():
        while sum(1 for r in found if r[0] == topic) < HOSTILE_PER_TOPIC:
            value = hostile(rng, topic)
            reason = check(decoder, value)
            if reason != "ok":
                found.append((topic, f"hostile-{rng.randrange(10**6)}".encode(), value, reason))
    for n in range(HOSTILE_PER_TOPIC):
        value = rng.choice(
            [rng.randbytes(20), b"[]", b'{"windows": 7}', hostile(rng, "ads.engagements")]
        )
        found.append(("accounts.settings", f"9{n:08d}".encode(), value, ""))
    return found


async def outputs(mesh: ChaosMesh) -> dict[str, Any]:
    attributed, reports, dlq, duplicates, raw, accepted = await asyncio.gather(
        *(
            read_all(kafka(mesh.bootstrap), mesh.topic(t))
            for t in (
                "conversions.attributed",
                "reports.conversions",
                "conversions.dlq",
                "conversions.duplicates",
                RAW,
                "conversions.accepted",
            )
        )
    )
    return {
        "attributed": {
            k: v for k, v in latest_by_key(attributed).items() if v["ad_account_id"] != PROBE_AD
        },
        "reports": [
            v for v in latest_by_key(reports).values() if v.get("ad_account_id") != PROBE_AD
        ],
        "dlq": [orjson.loads(r.value) for r in dlq],
        "duplicates": [orjson.loads(r.value) for r in duplicates],
        "raw": raw,
        "accepted": [orjson.loads(r.value) for r in accepted],
    }


async def settle(mesh: ChaosMesh, expected: Expected) -> tuple[dict[str, Any], list[str]]:
    """Poll the outputs until they equal the expectation or the time is up."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        out = await outputs(mesh)
        problems = expected.diff_attributed(out["attributed"]) + expected.diff_reports(
            out["reports"]
        )
        if not problems or time.monotonic() > deadline:
            return out, problems
        await asyncio.sleep(3)


TRACED = (
    "conversions.valid",
    "conversions.accepted",
    "conversions.duplicates",
    "identity.lookups",
    "identity.answers",
    "attribution.assignments",
    "attribution.results",
    "conversions.attributed",
    "reports.deltas",
)


async def trace(mesh: ChaosMesh, problems: list[str]) -> str:
    """Where each conversion named in ``problems`` went: its records on every hop.

    A failed run says at which hop a conversion stopped (for example on
    attribution.results but never on conversions.attributed), with partitions
    and offsets to look up in the workers' logs.
    """
    keys = sorted({p.split(": ", 1)[0] for p in problems if not p.startswith("(")})[:10]
    lines = ["[chaos] trace of the conversions that differ:"]
    reads = await asyncio.gather(*(read_all(kafka(mesh.bootstrap), mesh.topic(t)) for t in TRACED))
    for key in keys:
        lines.append(f"  {key}")
        needle = key.encode()
        for topic, records in zip(TRACED, reads, strict=True):
            hits = [r for r in records if r.key == needle or needle in (r.value or b"")]
            where = ", ".join(f"p{r.partition}@{r.offset}" for r in hits[:8]) or "-"
            lines.append(f"    {topic}: {len(hits)} {where}")
    return "\n".join(lines)


def test_results_stay_exact_under_faults(chaos_mesh: ChaosMesh) -> None:
    mesh = chaos_mesh
    rng = random.Random(SEED)
    faults = schedule(FAULT_SPEC, rng)
    workload = generate(seed=SEED, conversions=CONVERSIONS)
    records = workload.ordered("interleaved")
    expected = reference(records, now_ms=workload.now_ms)
    real = [(mesh.topic(r.topic), r.key, r.value) for r in records]
    raw_indexes = [i for i, r in enumerate(records) if r.topic == RAW]
    hostiles = hostile_records(rng)

    started = time.monotonic()
    step = len(real) // (len(faults) + 1)
    positions: list[Any] = []
    hostile_at = asyncio.run(
        produce(kafka(mesh.bootstrap), [(mesh.topic(t), k, v) for t, k, v, _ in hostiles])
    )
    for n, fault in enumerate(faults):
        positions += asyncio.run(produce(kafka(mesh.bootstrap), real[n * step : (n + 1) * step]))
        # The fault lands at a random point of the slice's processing.
        time.sleep(rng.uniform(0.2, 3.0))
        FAULTS[fault](mesh, rng)
        # Progress as it happens: a long run stopped early still shows how far it got.
        print(
            f"\n[chaos] {time.monotonic() - started:.0f} s, fault {n + 1}/{len(faults)}: "
            + mesh.log[-1],
            flush=True,
        )
    positions += asyncio.run(produce(kafka(mesh.bootstrap), real[len(faults) * step :]))
    out, problems = asyncio.run(settle(mesh, expected))
    elapsed = time.monotonic() - started
    print(f"\n[chaos] {len(faults)} faults: " + "; ".join(mesh.log))
    print_stall_reports(mesh)

    if problems:
        print(asyncio.run(trace(mesh, problems)))
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:25])

    # conversions.dlq, per input (source_topic, partition, offset): no input missing,
    # none extra, the right reason. Repeats after a crash are allowed by the contract.
    by_input: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    per_input = Counter()
    for d in out["dlq"]:
        triple = (d["source_topic"], d["partition"], d["offset"])
        by_input[triple].add(d["reason"])
        per_input[triple] += 1
    raw_positions = [positions[i] for i in raw_indexes]
    want_raw = {
        (mesh.topic(RAW), raw_positions[o.index].partition, raw_positions[o.index].offset): o.reason
        for o in expected.outcomes
        if o.outcome == "rejected"
    }
    got_raw = {t: r for t, r in by_input.items() if t[0] == mesh.topic(RAW)}
    assert set(got_raw) == set(want_raw), "conversions.raw rejections differ from the reference"
    wrong = {t: (want, got_raw[t]) for t, want in want_raw.items() if want and {want} != got_raw[t]}
    assert not wrong, f"DLQ reasons differ (expected, got): {list(wrong.items())[:10]}"
    want_hostile = {
        (mesh.topic(t), p.partition, p.offset): reason
        for (t, _, _, reason), p in zip(hostiles, hostile_at, strict=True)
        if t in DECODERS
    }
    got_hostile = {t: r for t, r in by_input.items() if t[0] != mesh.topic(RAW)}
    assert set(got_hostile) == set(want_hostile), "hostile records missing from (or extra in) DLQ"
    assert all(got_hostile[t] == {r} for t, r in want_hostile.items()), got_hostile
    repeats = sum(per_input.values()) - len(per_input)

    # The balance over distinct inputs (ops/summary.py, as `convmesh demo` shows it),
    # API probes included; the workload's duplicates exactly as the reference says.
    summary = pipeline_summary(
        raw_received=len(out["raw"]),
        accepted=out["accepted"],
        duplicates=out["duplicates"],
        dlq=out["dlq"],
        raw_topic=mesh.topic(RAW),
        attributed={},
        reports={},
    )["events"]
    assert summary["balanced"], summary
    assert summary["rejected"] == len(want_raw)
    workload_refs = {f"{mesh.topic(RAW)}:{p.partition}:{p.offset}" for p in raw_positions}
    duplicate_refs = {d["raw_ref"] for d in out["duplicates"]}
    expected_duplicates = sum(o.outcome == "duplicate" for o in expected.outcomes)
    assert len(duplicate_refs & workload_refs) == expected_duplicates

    # Every event the API answered 200 for reached conversions.raw.
    raw_event_ids = {
        e.get("event_id") for r in out["raw"] for e in [_event_of(r.value)] if e is not None
    }
    lost = [e for e in mesh.probes_accepted if e not in raw_event_ids]
    assert not lost, f"events answered 200 but not on conversions.raw: {lost[:5]}"
    assert all(s == 503 for s in mesh.outage_statuses), Counter(mesh.outage_statuses)
    rebuilt = sum(
        log.read_text(errors="replace").count("state_rebuilt_from_changelog")
        for log in (mesh.data_dir / "logs").glob("*.log")
    )
    print(
        f"[chaos] {rebuilt} stores rebuilt from the changelog after damage; "
        f"{CONVERSIONS} conversions ({len(raw_indexes)} conversions.raw records, "
        f"{expected.accepted} accepted), {len(hostiles)} hostile records, "
        f"{len(mesh.probes_accepted)} API probes accepted, outage answers "
        f"{dict(Counter(mesh.outage_statuses))}; {len(out['dlq'])} DLQ records for "
        f"{len(by_input)} inputs ({repeats} repeats); balance {summary['received']} = "
        f"{summary['accepted']} + {summary['duplicates']} + {summary['rejected']}; "
        f"exact in {elapsed:.0f} s"
    )


#: Log lines worth keeping from any run: a stalled recovery's report
#: (shared.runtime.stall_report) and the consumer's repairs of lost deliveries.
KEPT_LOG_LINES = ("recovery_stalled", "changelog_records_lost", "records_lost", "partition_stalled")


def print_stall_reports(mesh: ChaosMesh) -> None:
    """Every kept line (``KEPT_LOG_LINES``) the workers logged: the logs of a passing run
    are deleted with it, and a recovery that hung for minutes and went on, or a repair
    that hid a loss, is worth seeing even when the results came out exact."""
    for log in sorted((mesh.data_dir / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(kept in line for kept in KEPT_LOG_LINES):
                print(f"[chaos] {log.name}: {line}", flush=True)


def _event_of(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    event = doc.get("event", doc)
    return event if isinstance(event, dict) else None
