"""`convmesh bench` argument handling and its summary table (no broker needed)."""

from __future__ import annotations

import argparse

import pytest

from ops.cli import build_parser
from ops.commands import bench
from shared.runtime.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv])


def test_defaults_push_twenty_thousand_conversions_with_one_worker_each() -> None:
    config = bench.config_from(parse())
    assert config.conversions == 20_000
    assert config.workers_per_service() == {
        "ingest": 1,
        "dedupe": 1,
        "identity_match": 1,
        "attribute": 1,
        "aggregate": 1,
    }
    assert config.baseline and config.fixed_rate


def test_warmup_is_a_tenth_of_a_push_at_most_a_thousand_unless_given() -> None:
    assert bench.config_from(parse()).warmup_size() == 1_000
    assert bench.config_from(parse("--conversions", "5000")).warmup_size() == 500
    assert bench.config_from(parse("--smoke")).warmup_size() == 30
    assert bench.config_from(parse("--warmup", "0")).warmup_size() == 0


def test_smoke_is_tiny_whatever_conversions_says() -> None:
    assert bench.config_from(parse("--smoke", "--conversions", "50000")).conversions == 300


def test_workers_of_scales_one_service_only() -> None:
    config = bench.config_from(parse("--workers-of", "attribute=4"))
    assert config.workers_per_service()["attribute"] == 4
    assert config.workers_per_service()["dedupe"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("--workers-of", "nosuch=2"),
        ("--workers-of", "attribute"),
        ("--workers", "2", "--workers-of", "attribute=1"),
        ("--profile", "nosuch"),
        ("--conversions", "0"),
        ("--warmup", "-1"),
        ("--conversions", "100", "--warmup", "100"),
    ],
)
def test_bad_options_are_config_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        bench.config_from(parse(*argv))


def test_table_rows_show_both_pushes_and_the_ratio() -> None:
    run = {
        "conversions_per_s": 500.0,
        "offered_per_s": None,
        "ratio_to_baseline": 0.1,
        "latency_attributed_ms": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0},
        "latency_reports_ms": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0},
        "records_per_conversion_total": 24.0,
        "cpu_s": {"attribute": 9.5},
        "load_1m": 0.6,
        "machine_busy_cores": 1.7,
        "cpu_ms_per_conversion": 1.2345,
        "bench_cpu_s": 2.5,
        "broker_cpu_ms_per_conversion": 0.25,
    }
    report = {
        "baseline": {"records_per_s": 5000.0, "broker_cpu_ms_per_record": 0.04},
        "pipeline": {
            "max_rate": run,
            "fixed_rate": {**run, "offered_per_s": 250.0, "conversions_per_s": 249.0},
            "peak_rss_mb": {"attribute": 80.0},
        },
    }
    rows = {name: rest for name, *rest in bench.table_rows(report)}
    assert rows["conversions/s end to end"] == ["500.0", "249.0"]
    assert rows["ratio to bare relays"][0] == "0.100"
    assert rows["broker CPU ms/conversion"] == ["0.250", "0.250"]
    assert rows["broker CPU ms/relayed record"] == ["0.040", ""]
    assert rows["cpu s attribute"] == ["9.5", "9.5"]
    assert rows["cpu s dedupe"] == ["-", "-"]
    assert rows["machine's busy cores"] == ["1.7", "1.7"]
    assert rows["bench's own CPU s"] == ["2.5", "2.5"]
    # Ratios and CPU ms per item to three decimals, every other figure to one.
    assert rows["mesh CPU ms/conversion"] == ["1.234", "1.234"]
    assert rows["load 1m before"] == ["0.6", "0.6"]


def test_the_cli_builds_without_the_bench_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops image (Dockerfile) has ops/ but no bench/: `convmesh` must still start."""
    import sys

    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bench", None)  # makes `import bench` fail
    monkeypatch.delitem(sys.modules, "ops.commands.bench", raising=False)
    assert build_parser().parse_args(["bench", "--smoke"]).smoke
