"""Pure arithmetic of `convmesh bench`: percentiles, rates, per-conversion record counts,
and parsing of /proc files. No I/O here, so every figure of a report can be unit tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

# Linux reports utime/stime in clock ticks; 100 on every kernel configuration we run on,
# read from the system anyway by the caller (os.sysconf) and passed in.
STAT_UTIME_FIELD = 13  # 0-based index in /proc/<pid>/stat after splitting at ") "
STAT_STIME_FIELD = 14


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (0 < pct <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds and the sample count."""
    return {
        "count": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 50),
        "p95_ms": percentile(latencies_ms, 95),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms) if latencies_ms else math.nan,
    }


def latency_timeline(
    samples: Iterable[tuple[float, float]], bucket_ms: float = 1000.0
) -> list[dict[str, float | None]]:
    """(sent at ms, latency ms) pairs grouped by when they were sent, ``bucket_ms`` a group
    from the first send: per group its start (s from the first send), count, p50 and max.

    A p99 made of a few stalls shows as groups whose max stands out; one made of
    queueing as a p50 that climbs. A group with no sends (the producer stalled) is
    kept, with a count of 0 and no latencies."""
    pairs = sorted(samples)
    if not pairs:
        return []
    start = pairs[0][0]
    groups: dict[int, list[float]] = {}
    for sent, latency in pairs:
        groups.setdefault(int((sent - start) // bucket_ms), []).append(latency)
    return [
        {
            "at_s": round(index * bucket_ms / 1000.0, 3),
            "count": len(groups.get(index, [])),
            "p50_ms": percentile(groups[index], 50) if index in groups else None,
            "max_ms": max(groups[index]) if index in groups else None,
        }
        for index in range(max(groups) + 1)
    ]


def rate_per_s(count: int, first_ms: float, last_ms: float) -> float:
    """Records per second between the first produce and the last result (ms clocks)."""
    span = (last_ms - first_ms) / 1000.0
    return count / span if span > 0 else math.nan


def per_item_ms(cpu_s: float | None, count: int) -> float | None:
    """CPU milliseconds per item, or None when the CPU was not measured."""
    return None if cpu_s is None else round(1000 * cpu_s / max(1, count), 3)


def offset_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Records written per topic between two end-offset snapshots (sum over partitions).

    A topic absent from ``before`` (created meanwhile) counts from zero; topics that
    did not grow are left out."""
    deltas = {t: after[t] - before.get(t, 0) for t in after}
    return {t: d for t, d in sorted(deltas.items()) if d > 0}


def per_conversion(deltas: Mapping[str, int], accepted: int) -> dict[str, float]:
    """Records per accepted conversion on every topic that grew."""
    if accepted <= 0:
        return {}
    return {t: round(d / accepted, 3) for t, d in deltas.items()}


def strip_namespace(topic: str, namespace: str) -> str:
    """``bench-x.conversions.raw`` -> ``conversions.raw``;
    ``bench-x-dedupe-seen-changelog`` -> ``dedupe-seen-changelog``."""
    for sep in (".", "-"):
        prefix = f"{namespace}{sep}"
        if topic.startswith(prefix):
            return topic[len(prefix) :]
    return topic


def cpu_ticks(stat_text: str) -> int:
    """utime + stime of a /proc/<pid>/stat line (the comm field may contain spaces)."""
    rest = stat_text[stat_text.rfind(")") + 2 :].split()
    # ``rest`` starts at field 3 (state); utime/stime are fields 14/15 (1-based).
    return int(rest[STAT_UTIME_FIELD - 2]) + int(rest[STAT_STIME_FIELD - 2])


def machine_ticks(proc_stat_text: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all cores from /proc/stat's "cpu" line; idle and
    iowait are the only ticks not busy."""
    line = next(ln for ln in proc_stat_text.splitlines() if ln.startswith("cpu "))
    ticks = [int(v) for v in line.split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    # already inside user and nice; steal (another tenant's) counts as busy, as it is
    # time this machine's processes could not run.
    total = sum(ticks[:8])
    return total - ticks[3] - ticks[4], total


#: /proc/net/tcp's state of a listening socket.
TCP_LISTEN = "0A"


def listening_inodes(proc_net_tcp_text: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (any address), from the text of
    /proc/net/tcp or /proc/net/tcp6: the way to the process that owns a port."""
    found = set()
    for line in proc_net_tcp_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != TCP_LISTEN:
            continue
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[9] != "0":
            found.add(int(fields[9]))
    return found


def is_loopback(host: str) -> bool:
    """Whether a bootstrap server's host is this machine's loopback address."""
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def busy_cores(before: tuple[int, int], after: tuple[int, int], cores: int) -> float:
    """How many of ``cores`` were busy on average between two ``machine_ticks``."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(cores * busy / total, 2) if total > 0 else 0.0


def status_kb(status_text: str) -> dict[str, int]:
    """Every "Name: N kB" field of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...)."""
    fields = {}
    for line in status_text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


def vm_hwm_kb(status_text: str) -> int:
    """Peak resident set size (VmHWM, kB) from /proc/<pid>/status; 0 when absent."""
    return status_kb(status_text).get("VmHWM", 0)


def io_write_bytes(io_text: str) -> int:
    """Bytes a process caused to be written to storage (``write_bytes`` of
    /proc/<pid>/io): its RocksDB files and logs as they reach the disk, not its socket
    writes; 0 when absent."""
    for line in io_text.splitlines():
        name, _, value = line.partition(":")
        if name == "write_bytes" and value.strip().isdigit():
            return int(value)
    return 0


def sum_by_service(per_worker: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Add up (service, figure) pairs of several workers per service."""
    out: dict[str, float] = {}
    for service, value in per_worker:
        out[service] = out.get(service, 0.0) + value
    return out


def max_by_service(per_worker: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The largest figure per service (peak RSS of its biggest worker)."""
    out: dict[str, float] = {}
    for service, value in per_worker:
        out[service] = max(out.get(service, 0.0), value)
    return out


def parse_workers_of(specs: Sequence[str]) -> dict[str, int]:
    """``["attribute=2", "dedupe=3"]`` -> ``{"attribute": 2, "dedupe": 3}``."""
    out: dict[str, int] = {}
    for spec in specs:
        service, sep, count = spec.partition("=")
        if not sep or not count.isdigit() or not service:
            raise ValueError(f"--workers-of expects SERVICE=N, got {spec!r}")
        out[service.strip()] = int(count)
    return out


def state_sizes(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, float]:
    """Live entries of a changelog and their mean key and value bytes (latest value per
    key; a None value is a deletion): what one table entry costs in RocksDB, before
    RocksDB's own overhead and compression."""
    latest: dict[bytes | None, bytes | None] = {}
    for key, value in records:
        latest[key] = value
    live = [(k or b"", v) for k, v in latest.items() if v is not None]
    if not live:
        return {"entries": 0, "key_bytes": 0.0, "value_bytes": 0.0}
    return {
        "entries": len(live),
        "key_bytes": round(sum(len(k) for k, _ in live) / len(live), 1),
        "value_bytes": round(sum(len(v) for _, v in live) / len(live), 1),
    }
