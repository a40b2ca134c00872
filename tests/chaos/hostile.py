"""Hostile records for every consumed topic, and a fuzz run of the decoders.

A record is hostile when it is what the contract does not allow: random bytes,
JSON of the wrong type, a valid record with a field dropped or of the wrong
type, unknown fields, huge values, deep nesting. Each decoder must answer such
a record with ``InvalidEvent`` (a stable reason code, then a dead letter) and
never with any other exception (which would be a ``processing_error``) or a hang.

    python -m tests.chaos.hostile [--inputs 100000] [--seed 1]

runs the fuzz over every decoder and prints the reasons it saw (`make fuzz`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from shared.contract.errors import InvalidEvent
from shared.contract.inputs import decode_engagement, decode_privacy_request, decode_signal

Decoder = Callable[[bytes | None], Any]

#: One valid record per consumed input topic (the shape of ops/workload.py).
VALID: dict[str, dict[str, Any]] = {
    "identity.signals": {
        "user_id": "u000001",
        "key_type": "em",
        "key": "a@example.com",
        "op": "link",
        "ts_ms": 1_700_000_000_000,
    },
    "ads.engagements": {
        "engagement_id": "e000001",
        "user_id": "u000001",
        "ad_account_id": "1000001",
        "campaign_id": "c1",
        "ad_id": "a1",
        "type": "click",
        "ts_ms": 1_700_000_000_000,
    },
    "privacy.requests": {"user_id": "u000001", "kind": "delete", "ts_ms": 1_700_000_000_000},
    "accounts.settings": {"windows": {"click": 7, "engagement": 14, "view": 1}},
}

#: The decoders of the topics the pipeline consumes with a dead-letter path.
DECODERS: dict[str, Decoder] = {
    "identity.signals": decode_signal,
    "ads.engagements": decode_engagement,
    "privacy.requests": decode_privacy_request,
}

HUGE = 1_200_000  # above the broker's default message.max.bytes of ~1 MB once framed


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, nested a little."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(10**15), 10**15)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return rng.choice(["", " ", "link", "click", "delete", "em", "\u0000", "é" * 3])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {
        rng.choice(["a", "user_id", "ts_ms", "type", ""]): random_json(rng, depth + 1)
        for _ in range(rng.randrange(0, 4))
    }


def hostile(rng: random.Random, topic: str) -> bytes:
    """One hostile value for ``topic``; a mutation may by chance still be valid
    (unknown fields are allowed), which the decoder must then accept."""
    valid = VALID[topic]
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 64))
    if kind == 1:
        return orjson.dumps(random_json(rng))
    if kind == 2:  # a field dropped
        drop = rng.choice(list(valid))
        return orjson.dumps({k: v for k, v in valid.items() if k != drop})
    if kind in (3, 4):  # a field of the wrong type
        field = rng.choice(list(valid))
        return orjson.dumps({**valid, field: random_json(rng)})
    if kind == 5:  # unknown fields (allowed: the record stays valid)
        return orjson.dumps({**valid, "x_unknown": random_json(rng), "": 1})
    if kind == 6:  # deep nesting, beyond orjson's recursion limit
        depth = rng.choice([10, 600, 2000])
        return b"[" * depth + b"]" * depth
    if kind == 7:  # truncated JSON
        text = orjson.dumps(valid)
        return text[: rng.randrange(0, len(text))]
    if kind == 8:  # a huge string field
        field = rng.choice(list(valid))
        return orjson.dumps({**valid, field: "x" * rng.choice([1000, 100_000])})
    # numbers orjson cannot hold, BOM, NaN
    return rng.choice([b'{"ts_ms": 1e999}', b"\xef\xbb\xbf{}", b'{"ts_ms": NaN}', b"null"])


def huge(topic: str) -> bytes:
    """A record larger than the broker accepts by default (the producer must refuse it)."""
    return orjson.dumps({**VALID[topic], "x_padding": "x" * HUGE})


def check(decoder: Decoder, raw: bytes | None) -> str:
    """'ok' or the InvalidEvent's reason; any other exception propagates (a bug)."""
    try:
        result = decoder(raw)
    except InvalidEvent as exc:
        return exc.reason
    assert isinstance(result, dict), f"decoder returned {type(result).__name__}"
    return "ok"


def fuzz(inputs: int, seed: int) -> dict[str, Counter[str]]:
    rng = random.Random(seed)
    seen: dict[str, Counter[str]] = {}
    for topic, decoder in DECODERS.items():
        counts: Counter[str] = Counter()
        for _ in range(inputs):
            counts[check(decoder, hostile(rng, topic))] += 1
        counts[check(decoder, None)] += 1
        seen[topic] = counts
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per topic")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    for topic, counts in fuzz(args.inputs, args.seed).items():
        print(
            f"{topic}: {sum(counts.values())} inputs, "
            + ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
        )
    print(f"no decoder raised anything but InvalidEvent ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
