"""`python -m bench.stage` on the broker: the instrument works end to end.

Two workers of identity_match decide every conversion of a small push while the
services around them are stopped; the report has every figure. The figures of 300
conversions on a shared machine say nothing, so none is compared to a target.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.helpers import cli_env, free_web_port_base, run_module


def test_stage_bench_decides_every_conversion_with_two_workers(
    bootstrap: str, tmp_path: Path
) -> None:
    report_path = tmp_path / "stage.json"
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap, CONVMESH_WEB_PORT_BASE=str(free_web_port_base(workers=2))
    )
    done = run_module(
        "bench.stage",
        *("--workers", "2", "--conversions", "300"),
        *("--json-out", str(report_path), "--out-dir", str(tmp_path)),
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, f"stage failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    (run,) = json.loads(report_path.read_text())["runs"]
    assert run["workers"] == 2
    assert run["conversions"] == run["decided"] == 300
    assert run["warmup"] == 30  # a tenth of the push went through the whole mesh first
    assert run["last_decision_ms"] >= run["first_accepted_ms"]
    for figure in ("conversions_per_s", "cpu_s", "cpu_ms_per_conversion", "peak_rss_mb"):
        assert run[figure] > 0, figure
    assert 0 < run["release_seconds"] <= run["seconds"]
    assert 0 < run["machine_busy_cores"] <= (os.cpu_count() or 1)
    # The mesh is down and its data folder gone.
    assert not (tmp_path / run["namespace"]).exists()
