"""Reproducible Conversions API benchmark (not a test): workers, token, load, clean-up.

    .venv/bin/python bench/api_suite.py --workers 2 --duration 20

1. applies the topics under a fresh namespace ``bench<hex>`` on the running broker;
2. starts ``--workers`` ingest workers (``python -m services.ingest``) sharing one API
   port with SO_REUSEPORT (``CONVMESH_API_PORT``), rate limit off, logs at WARNING;
3. creates a conversion token;
4. runs ``bench/api_load.py`` in a second process: open loop at each ``--rate``
   (events/s, latency measured from the scheduled send time), then closed loop (the
   maximum accepted events/s), then with ``--half``, once the workers' consumers have
   drained the backlog of the closed loop, open loop at half that maximum;
5. stops the workers and deletes the namespace's topics.

Prints one JSON document (also the 1-minute load average before every run, since the
machine may be shared) that docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.kafka.admin import apply_topics  # noqa: E402
from shared.kafka.api_tokens import new_token, publish_record  # noqa: E402
from shared.kafka.client_config import client_kwargs  # noqa: E402
from shared.runtime.settings import Settings  # noqa: E402

AD = "549755885175"


#: The caller's CONVMESH_* settings that the bench's workers keep: how to reach
#: the cluster (TLS / SASL) and the secrets; every other one is the bench's to set.
WORKER_KEEPS = (
    "CONVMESH_KAFKA_",
    "CONVMESH_DEV_MODE",
    "CONVMESH_PSEUDONYM_KEYS",
    "CONVMESH_OPERATOR_TOKEN",
    "CONVMESH_TOKEN_SECRET",
)


def kept_for_worker(name: str) -> bool:
    return not name.startswith("CONVMESH_") or name.startswith(WORKER_KEEPS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, token: str, timeout_s: float = 90) -> None:
    body = json.dumps(
        {
            "data": [
                {
                    "event_name": "checkout",
                    "action_source": "web",
                    "event_time": int(time.time()),
                    "event_id": "probe",
                    "user_data": {"em": ["a" * 64]},
                }
            ]
        }
    ).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v5/ad_accounts/{AD}/events?test=true",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"worker on port {port} did not become ready")


async def consumer_lag(settings: Settings) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    consumer = AIOKafkaConsumer(**client_kwargs(settings))
    await admin.start()
    await consumer.start()
    try:
        group = Settings(service="ingest", namespace=settings.namespace).app_id
        committed = await admin.list_consumer_group_offsets(group)
        topic = settings.topic_name("conversions.raw")
        tps = [tp for tp in committed if tp.topic == topic]
        if not tps:
            return -1
        ends = await consumer.end_offsets(tps)
        return sum(max(0, ends[tp] - committed[tp].offset) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def delete_topics(settings: Settings, ns: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith((f"{ns}.", f"{ns}-"))]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def wait_drained(settings: Settings, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        # Faust may leave the last offset of each partition uncommitted until more arrive
        if 0 <= asyncio.run(consumer_lag(settings)) <= 8:
            break
        time.sleep(2)
    time.sleep(3)
    return round(time.monotonic() - started, 1)


def load(url: str, token: str, args: argparse.Namespace, rate: float, pids: list[int]) -> dict:
    cpu_before = [cpu_seconds(p) for p in pids]
    load_avg = os.getloadavg()[0]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "api_load.py"),
            "--url",
            url,
            "--token",
            token,
            "--ad-account",
            AD,
            "--connections",
            str(args.connections),
            "--duration",
            str(args.duration),
            "--rate",
            str(rate),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_avg_1m_before"] = round(load_avg, 2)
    result["worker_cpu_s"] = [
        round(cpu_seconds(p) - b, 1) for p, b in zip(pids, cpu_before, strict=True)
    ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        default=[],
        help="extra fixed rates (events/s) to measure; repeatable",
    )
    parser.add_argument(
        "--half", action="store_true", help="after the closed loop, also run at half its rate"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args()

    ns = f"bench{uuid.uuid4().hex[:8]}"
    base = Settings.from_env("ingest")
    settings = dataclasses.replace(base, namespace=ns)  # keeps the Kafka TLS / SASL settings
    asyncio.run(apply_topics(settings))
    token, record = new_token(AD)
    asyncio.run(publish_record(settings, record))
    api_port = free_port()
    data_dir = tempfile.mkdtemp(prefix="convmesh-bench-")
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    report: dict = {"namespace": ns, "workers": args.workers, "cores": os.cpu_count()}
    try:
        for worker in range(args.workers):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if kept_for_worker(k)}
            env.update(
                CONVMESH_NAMESPACE=ns,
                CONVMESH_DEV_MODE="true",
                CONVMESH_DATA_DIR=data_dir,
                CONVMESH_WORKER=str(worker),
                CONVMESH_WEB_PORT=str(port),
                CONVMESH_API_PORT=str(api_port),
                CONVMESH_API_RATE_PER_MINUTE="0",
                CONVMESH_LOG_LEVEL="WARNING",
                KAFKA_BOOTSTRAP=settings.bootstrap,
            )
            log = open(Path(data_dir) / f"ingest-{worker}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.ingest"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        for port in ports:
            wait_ready(port, token)
        time.sleep(5)  # let the consumer group settle
        url = f"http://127.0.0.1:{api_port}"
        pids = [p.pid for p in procs]
        # fixed rates first, while no backlog competes for the workers' CPU
        runs = [load(url, token, args, rate, pids) for rate in args.rate]
        runs.append(load(url, token, args, 0, pids))
        if args.half:
            # the consumers of the workers must first drain the closed loop's backlog
            drained = wait_drained(settings, args.drain_timeout)
            result = load(url, token, args, round(runs[-1]["events_accepted_per_s"] / 2, -2), pids)
            result["waited_for_consumers_s"] = drained
            runs.append(result)
        report["runs"] = runs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        asyncio.run(delete_topics(settings, ns))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
