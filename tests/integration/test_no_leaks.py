"""Nothing identifying leaks: a whole run scanned for what it must never keep.

A generated workload runs through the five services with real (non-development)
secrets. Then every topic the pipeline writes (internal topics, outputs and
every table's changelog), every RocksDB store of every worker and every log
line are scanned for the run's plaintext identifiers (emails, phones, mobile
ad ids, IP addresses, user agents, external ids as typed), its user ids and
click ids, and its secrets (pseudonym keys, the ip_ua key, the operator token,
the token-signing secret). None may appear.

The input topics are not scanned: they hold what the outside world sent
(ads.engagements is keyed by user id by contract).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from rocksdict import AccessType, Rdict

from ops.workload import CONTEXT_TOPICS, INPUT_TOPICS, RAW, Workload, generate
from shared.kafka.topic_io import latest_by_key, produce, read_all
from tests.integration.helpers import cli_env, convmesh, free_web_port_base, kafka

#: Topics written by the outside world (the contract's inputs and configuration).
OUTSIDE_TOPICS = frozenset({*INPUT_TOPICS, "accounts.settings", "api.tokens"})
SETTLE_TIMEOUT_S = 300.0


def run_secrets() -> dict[str, str]:
    return {
        "CONVMESH_PSEUDONYM_KEYS": f"k2:{secrets.token_hex(24)},k1:{secrets.token_hex(24)}",
        "CONVMESH_IDENTIFIER_KEY": secrets.token_hex(24),
        "CONVMESH_OPERATOR_TOKEN": secrets.token_hex(24),
        "CONVMESH_TOKEN_SECRET": secrets.token_hex(24),
    }


def forbidden(workload: Workload, env: dict[str, str]) -> set[str]:
    """Every string of this run that no output, store or log may contain."""
    found: set[str] = set()
    for user in workload.users:
        found.add(user.user_id)
        found.update(user.emails, user.phones, user.maids, user.external_ids.values())
        for ip, ua, _ts in user.sessions:
            found.update((ip, ua))
        found.update(click_id for _account, click_id, _ts in user.clicks)
    for name in ("CONVMESH_IDENTIFIER_KEY", "CONVMESH_OPERATOR_TOKEN", "CONVMESH_TOKEN_SECRET"):
        found.add(env[name])
    for part in env["CONVMESH_PSEUDONYM_KEYS"].split(","):
        found.add(part.split(":", 1)[1])
    # Very short strings (a 6-digit phone typed oddly) would match by chance.
    return {s for s in found if len(s) >= 7}


def hits(blob: bytes, needles: set[str], where: str) -> list[str]:
    return [f"{where}: {needle!r}" for needle in needles if needle.encode() in blob]


async def scan_topics(bootstrap: str, namespace: str, needles: set[str]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [
            t for t in await admin.list_topics() if t.startswith((f"{namespace}.", f"{namespace}-"))
        ]
    finally:
        await admin.close()
    outside = {f"{namespace}.{t}" for t in OUTSIDE_TOPICS}
    found: list[str] = []
    for name in sorted(set(names) - outside):
        for record in await read_all(kafka(bootstrap), name):
            blob = (record.key or b"") + b"\0" + (record.value or b"")
            found += hits(blob, needles, f"topic {name}")
    return found


def scan_stores(data_dir: Path, needles: set[str]) -> list[str]:
    found: list[str] = []
    stores = {p.parent for p in data_dir.rglob("CURRENT")}
    assert stores, f"no RocksDB store under {data_dir}"
    for store in sorted(stores):
        db = Rdict(str(store), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                blob = bytes(key) + b"\0" + bytes(value)
                found += hits(blob, needles, f"store {store.relative_to(data_dir)}")
        finally:
            db.close()
    return found


def scan_logs(data_dir: Path, needles: set[str]) -> list[str]:
    logs = list(data_dir.rglob("*.log"))
    assert logs, f"no log under {data_dir}"
    return [hit for log in logs for hit in hits(log.read_bytes(), needles, f"log {log.name}")]


def summary(found: list[str], workload: Workload) -> str:
    """Leaks counted per place and kind of value (partitions folded together)."""
    kinds = {u.user_id: "user id" for u in workload.users}
    for user in workload.users:
        kinds.update({c: "click id" for _a, c, _t in user.clicks})
        kinds.update({e: "email" for e in user.emails})
        kinds.update({p: "phone" for p in user.phones})
        kinds.update({ip: "ip" for ip, _ua, _t in user.sessions})
        kinds.update({ua: "user agent" for _ip, ua, _t in user.sessions})
    counts: Counter[str] = Counter()
    for hit in found:
        where, needle = hit.rsplit(": ", 1)
        place = re.sub(r"-\d+\.db$", "", re.sub(r"^topic t[0-9a-f]+[.-]", "topic ", where))
        counts[f"{place}: {kinds.get(needle.strip(chr(39)), 'other')}"] += 1
    return "\n".join(f"{n:6d}  {what}" for what, n in counts.most_common())


async def wait_for_results(bootstrap: str, namespace: str, count: int) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    held = 0
    while time.monotonic() < deadline:
        held = len(
            latest_by_key(await read_all(kafka(bootstrap), f"{namespace}.conversions.attributed"))
        )
        if held >= count:
            return
        await asyncio.sleep(2)
    raise AssertionError(f"only {held} of {count} conversions were processed in time")


def test_no_identifier_id_or_secret_in_any_topic_store_or_log(
    bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "mesh"
    keys = run_secrets()
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(data_dir),
        CONVMESH_WEB_PORT_BASE=str(free_web_port_base(8300)),
        CONVMESH_DEV_MODE="false",
        **keys,
    )
    workload = generate(seed=11, conversions=400)
    accepted = {lbl.conversion_key for lbl in workload.raw_labels if lbl.expect == "accepted"}
    up = convmesh("up", env=env, timeout=300)
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        records = [r._replace(topic=f"{namespace}.{r.topic}") for r in workload.ordered()]
        asyncio.run(produce(kafka(bootstrap), records))
        asyncio.run(wait_for_results(bootstrap, namespace, len(accepted)))
    finally:
        down = convmesh("down", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    needles = forbidden(workload, keys)
    assert len(needles) > 100  # the scan looks for something
    found = asyncio.run(scan_topics(bootstrap, namespace, needles))
    found += scan_stores(data_dir, needles)
    found += scan_logs(data_dir, needles)
    assert not found, f"{len(found)} leaks:\n" + summary(found, workload)


def test_the_input_topics_named_here_are_the_contracts() -> None:
    """The scan skips exactly the topics the outside world writes."""
    assert RAW in OUTSIDE_TOPICS and set(CONTEXT_TOPICS) <= OUTSIDE_TOPICS
