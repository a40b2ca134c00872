"""The pure parts of bench/stage.py: which conversions were decided, the stage's window
and the CPU samples that enclose it."""

from __future__ import annotations

import orjson
import pytest

from bench import stage
from bench.kafka_probe import Item
from bench.pipeline import consumer_groups
from shared.kafka import bundles
from shared.kafka.topic_io import Read
from shared.runtime.settings import SERVICES, Settings


def _read(value: bytes | None, ts: int = 0, key: bytes | None = b"k") -> Read:
    return Read(0, 0, key, value, ts)


def _assign(conversion_key: str) -> bytes:
    return orjson.dumps({"op": "assign", "conversion_key": conversion_key, "mv": [1, 0]})


def test_decided_conversions_unpack_assignment_bundles() -> None:
    (bundle,) = bundles.pack([(b"u1", _assign("c1")), (b"u2", _assign("c2"))])
    reads = [_read(bundle[1]), _read(_assign("c3"))]
    assert stage.decided_conversions(reads, "attribution.assignments") == {"c1", "c2", "c3"}


def test_decided_conversions_of_results_are_their_keys() -> None:
    (bundle,) = bundles.pack([(b"c7", b'{"status":"unidentified"}'), (b"c8", b"{}")])
    assert stage.decided_conversions([_read(bundle[1])], "attribution.results") == {"c7", "c8"}


def test_decided_conversions_skip_records_without_a_value() -> None:
    assert stage.decided_conversions([_read(None)], "attribution.assignments") == set()


def test_the_window_starts_at_the_first_conversion_accepted_after_the_stage_began() -> None:
    """Records written before the stage (an earlier phase) are not part of it."""
    accepted = [_read(b"x", ts=50), _read(b"x", ts=120), _read(b"x", ts=110)]
    decisions = [_read(b"x", ts=90), _read(b"x", ts=400), _read(b"x", ts=300)]
    window = stage.stage_window(accepted, decisions, since_ms=100)
    assert window == stage.Window(110, 120, 400)
    assert window.seconds == pytest.approx(0.29)
    assert window.release_seconds == pytest.approx(0.01)


def test_a_stage_without_decisions_is_an_error_not_a_rate() -> None:
    with pytest.raises(ValueError):
        stage.stage_window([_read(b"x", ts=120)], [_read(b"x", ts=90)], since_ms=100)


def _sample(at_ms: int, cpu_s: float) -> stage.Sample:
    return stage.Sample(at_ms, cpu_s, (at_ms, 2 * at_ms))


def test_the_cpu_window_is_enclosed_by_the_nearest_samples() -> None:
    samples = [_sample(t, t / 100) for t in (0, 100, 200, 300, 400)]
    first, last = stage.window_of(samples, 150, 310)
    assert (first.at_ms, last.at_ms) == (100, 400)


@pytest.mark.parametrize(("start", "end"), [(50, 150), (150, 900), (50, 900)])
def test_samples_that_do_not_enclose_the_window_are_an_error(start: int, end: int) -> None:
    """The CPU between them would not be the stage's."""
    samples = [_sample(t, 0.0) for t in (100, 200)]
    with pytest.raises(ValueError):
        stage.window_of(samples, start, end)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        stage.window_of([], 0, 1)


def _items(*keys: str) -> list[Item]:
    return [Item(b"k", {}, key) for key in keys]


def test_figures_of_a_stage_rate_its_conversions_over_the_window() -> None:
    accepted = [_read(b"x", ts=1_000), _read(b"x", ts=1_200)]
    decisions = [_read(b"x", ts=3_000)]
    samples = [_sample(900, 1.0), _sample(2_000, 2.0), _sample(3_100, 3.0)]
    out = stage.figures_of(_items("c1", "c2"), samples, (accepted, decisions, {"c1", "c2"}), 500)
    assert out["conversions_per_s"] == 1.0  # 2 conversions over 2 s
    assert out["cpu_s"] == 2.0 and out["cpu_ms_per_conversion"] == 1000.0
    assert out["release_seconds"] == pytest.approx(0.2)


def test_a_conversion_not_decided_is_an_error_not_a_rate() -> None:
    reads = ([_read(b"x", ts=1_000)], [_read(b"x", ts=3_000)], {"c1"})
    samples = [_sample(900, 1.0), _sample(3_100, 3.0)]
    with pytest.raises(RuntimeError, match="1 of 2"):
        stage.figures_of(_items("c1", "c2"), samples, reads, 500)


def test_groups_of_picks_the_named_services_groups() -> None:
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": "stage-x"})
    groups = stage.groups_of(settings, ["ingest", "identity_match"])
    assert set(groups) == {"stage-x-convmesh-ingest", "stage-x-convmesh-identity_match"}
    assert "stage-x.conversions.accepted" in groups["stage-x-convmesh-identity_match"]


def test_the_groups_of_every_service_are_every_consumer_group() -> None:
    """What the context waits for: no group left out."""
    settings = Settings.from_env(env={"CONVMESH_NAMESPACE": "stage-x"})
    assert stage.groups_of(settings, SERVICES) == consumer_groups(settings)


@pytest.mark.parametrize("warmup", ["-1", "300", "301"])
def test_a_warmup_outside_the_push_is_refused_before_any_mesh_starts(
    warmup: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        stage.main(["--conversions", "300", "--warmup", warmup, "--workers", "1"])
    assert refused.value.code == 2
    assert "--warmup must be at least 0 and less than a push" in capsys.readouterr().err
