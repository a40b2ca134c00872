"""RocksDB alone under the workers' shared memory budgets: does its RSS stay flat?

    .venv/bin/python -m bench.rocksdb_memory --keys 1200000 --dbs 24 --steps 6

Opens ``--dbs`` databases with the options every worker uses
(``shared.runtime.rocksdb_memory``: one block cache and one memtable budget
for all of them, ``CONVMESH_ROCKSDB_CACHE_MB`` / ``_MEMTABLES_MB`` sizes),
writes ``--keys`` keys of ``--value-bytes`` spread over them in ``--steps``
slices, reads random keys back after each slice, and prints the process's
anonymous resident memory (``RssAnon``) after each. A worker whose RSS grows
while this stays flat grows outside RocksDB (docs/benchmarks.md, "State and
memory").
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile

import rocksdict

from bench.state import rss_mb
from shared.runtime.rocksdb_memory import SharedMemory, SharedMemoryOptions


def anon_mb() -> float:
    """This process's anonymous resident memory, MB (``bench.state.rss_mb``)."""
    return rss_mb([("self", os.getpid())])["self"]["anon"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_200_000)
    parser.add_argument("--dbs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--value-bytes", type=int, default=600)
    parser.add_argument("--cache-mb", type=int, default=32)
    parser.add_argument("--memtables-mb", type=int, default=32)
    args = parser.parse_args(argv)
    memory = SharedMemory.of_size(args.cache_mb, args.memtables_mb)
    options = SharedMemoryOptions(memory).as_options()
    rnd = random.Random(1)
    value = rnd.randbytes(args.value_bytes)
    with tempfile.TemporaryDirectory(prefix="convmesh-rocksdb-") as folder:
        dbs = [rocksdict.Rdict(f"{folder}/db{i}", options=options) for i in range(args.dbs)]
        print(f"{args.dbs} databases open: RssAnon {anon_mb()} MB", flush=True)
        per_step = args.keys // args.steps
        for step in range(args.steps):
            for n in range(step * per_step, (step + 1) * per_step):
                dbs[n % args.dbs][b"%016x" % n] = value
            written = (step + 1) * per_step
            for _ in range(min(written, 50_000)):
                n = rnd.randrange(written)
                dbs[n % args.dbs].get(b"%016x" % n)
            print(f"{written:,} keys: RssAnon {anon_mb()} MB", flush=True)
        for db in dbs:
            db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
