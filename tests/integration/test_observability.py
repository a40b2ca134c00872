"""What operators see of a running mesh: /metrics, table views, the console.

One mesh (its own namespace, data dir and ports) runs a known workload; the
tests compare what the workers report with the workload's ground truth, and
load the console in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, `make browser`). Without Chromium the console test fails
under CI (``CI`` set) and is skipped only on a developer's machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson
import pytest

from ops.workload import Workload, generate
from services.aggregate.console_data import parse_samples
from shared.kafka.topic_io import produce
from shared.runtime.settings import REPO_ROOT
from tests.conftest import delete_namespace_topics
from tests.integration.helpers import cli_env, convmesh, convmesh_json, free_web_port_base, kafka

CONVERSIONS = 200
SEED = 5
TIMEOUT_S = 240.0
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"


class Mesh:
    def __init__(self, env: dict[str, str], status: dict[str, Any], workload: Workload) -> None:
        self.env = env
        self.status = status
        self.workload = workload
        self.urls = {s["name"]: s["url"] for s in status["services"]}
        self.console_url: str = status["console_url"]
        self.token = unquote(self.console_url.split("#token=", 1)[1])

    def get(self, service: str, path: str, token: str | None = None) -> tuple[int, str]:
        return asyncio.run(self._get(self.urls[service] + path, token or self.token))

    @staticmethod
    async def _get(url: str, token: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, headers=headers) as response:
                return response.status, await response.text()

    def samples(self, service: str) -> list[tuple[str, dict[str, str], float]]:
        status, text = self.get(service, "/metrics")
        assert status == 200, text
        return parse_samples(text)

    def value(self, service: str, name: str, **labels: str) -> float:
        return sum(
            v
            for n, found, v in self.samples(service)
            if n == name and all(found.get(k) == want for k, want in labels.items())
        )


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def mesh(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    namespace = f"t-obs-{uuid.uuid4().hex[:8]}"
    base = int(os.environ.get("CONVMESH_TEST_WEB_PORT_BASE") or free_web_port_base(7500))
    env = cli_env(
        KAFKA_BOOTSTRAP=bootstrap,
        CONVMESH_NAMESPACE=namespace,
        CONVMESH_DATA_DIR=str(tmp_path_factory.mktemp("obs") / "mesh"),
        CONVMESH_WEB_PORT_BASE=str(base),
    )
    up = convmesh("up", env=env, timeout=300)
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        workload = generate(seed=SEED, conversions=CONVERSIONS)
        records = workload.ordered("context_first")
        asyncio.run(
            produce(kafka(bootstrap), [(f"{namespace}.{r.topic}", r.key, r.value) for r in records])
        )
        mesh = Mesh(env, convmesh_json("status", "--json", env=env), workload)
        raw = len(workload.records["conversions.raw"])
        keys = {lbl.conversion_key for lbl in workload.raw_labels if lbl.expect == "accepted"}
        wait_for(
            lambda: (
                mesh.value("ingest", "convmesh_records_in_total", topic="conversions.raw") == raw
                and mesh.value("aggregate", "convmesh_records_in_total", topic="reports.deltas")
                >= len(keys)
            ),
            TIMEOUT_S,
            "the workload to reach aggregate",
        )
        yield mesh
    finally:
        down = convmesh("down", env=env, timeout=120)
        asyncio.run(delete_namespace_topics(bootstrap, namespace))
        assert down.returncode == 0, down.stderr


def test_metrics_require_the_operator_token(mesh: Mesh) -> None:
    assert mesh.get("dedupe", "/metrics", token="wrong")[0] == 401


def test_every_metric_is_named_by_the_conventions(mesh: Mesh) -> None:
    for service in mesh.urls:
        names = {name for name, _, _ in mesh.samples(service)}
        assert names and all(n.startswith("convmesh_") for n in names), service


def test_records_in_on_conversions_raw_are_the_records_produced(mesh: Mesh) -> None:
    produced = len(mesh.workload.records["conversions.raw"])
    got = mesh.value("ingest", "convmesh_records_in_total", topic="conversions.raw")
    assert got == produced


def test_rejects_per_reason_are_the_workloads_invalid_records(mesh: Mesh) -> None:
    expected = Counter(lbl.reason for lbl in mesh.workload.raw_labels if lbl.expect == "rejected")
    got: Counter[str] = Counter()
    for name, labels, value in mesh.samples("ingest"):
        if name == "convmesh_rejects_total" and labels["topic"] == "conversions.raw":
            got[labels["reason"]] += int(value)
    assert got == expected


def test_duplicates_are_the_workloads_duplicates(mesh: Mesh) -> None:
    expected = sum(lbl.expect == "duplicate" for lbl in mesh.workload.raw_labels)
    assert mesh.value("dedupe", "convmesh_duplicates_total") == expected


def test_latency_and_batch_histograms_have_samples(mesh: Mesh) -> None:
    assert mesh.value("dedupe", "convmesh_end_to_end_latency_seconds_count") > 0
    assert mesh.value("attribute", "convmesh_batch_processing_seconds_count") > 0
    assert mesh.value("attribute", "convmesh_attribution_outcomes_total") > 0
    assert mesh.value("identity_match", "convmesh_match_outcomes_total", outcome="matched") > 0


def test_table_listing_pages_and_shows_no_identifier(mesh: Mesh) -> None:
    status, text = mesh.get("attribute", "/tables/users?limit=5")
    assert status == 200, text
    body = orjson.loads(text)
    assert len(body["rows"]) == 5 and body["next"] is not None
    user_ids = {u.user_id for u in mesh.workload.users}
    assert not [u for u in user_ids if u in text]
    status, second = mesh.get("attribute", f"/tables/users?limit=5&after={body['next']}")
    assert orjson.loads(second)["rows"][0]["key"] > body["rows"][-1]["key"]


def test_a_key_is_looked_up_and_shown_as_a_hash(mesh: Mesh) -> None:
    label = next(lbl for lbl in mesh.workload.raw_labels if lbl.expect == "accepted")
    status, text = mesh.get("dedupe", f"/tables/seen/lookup?key={label.conversion_key}")
    assert status == 200, text
    body = orjson.loads(text)
    assert body["found"] and body["key"].startswith("h:")
    assert label.conversion_key not in text


def chromium_driver() -> Any:
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        message = "chromium and chromedriver are not installed: run `make browser`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"convmesh-chromium-{uuid.uuid4().hex[:8]}"
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def test_console_in_headless_chromium(mesh: Mesh) -> None:
    driver = chromium_driver()
    try:
        driver.get(mesh.console_url)
        raw = len(mesh.workload.records["conversions.raw"])

        def shown(element_id: str) -> str:
            return str(driver.find_element("id", element_id).text)

        wait_for(
            lambda: (
                int(driver.execute_script("return Number(document.body.dataset.polls||0)")) >= 2
                and shown("raw-in") == str(raw)
            ),
            60,
            "the console to show the workload",
        )
        # The token left the address bar (it lives in sessionStorage).
        assert "token" not in driver.current_url
        # A number on the page is the one the API gives.
        api_in = mesh.value("ingest", "convmesh_records_in_total", topic="conversions.raw")
        assert shown("raw-in") == str(int(api_in))
        duplicates = mesh.value("dedupe", "convmesh_duplicates_total")
        assert shown("duplicates") == str(int(duplicates))
        # The charts are not empty.
        count = "return document.querySelectorAll(arguments[0]).length"
        assert driver.execute_script(count, "#flow g.stage") == 5
        assert driver.execute_script(count, "#rejects rect") > 0
        assert driver.execute_script(count, "#touches rect") > 0
        assert driver.execute_script(count, "#matches polyline") > 0
        assert driver.execute_script(count, "#lanes rect[data-lane=observed]") > 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "console.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
