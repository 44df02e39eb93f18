"""A real Prometheus (Debian's binary) scrapes a real service with the repo's config; PromQL sees traffic."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.liveserver import LiveServer, free_port, stop
from tests.support.machine import require_program
from tests.support.stack import (
    PROMETHEUS_CONFIG,
    as_prometheus_query,
    dashboard_exprs,
    query,
    send_traffic,
    wait_for,
)

PREDICTIONS = 20
PREDICT_COUNT = 'sum(mnist_request_duration_seconds_count{route="/predict", status="200"})'


def scrape_config_for(target: str) -> dict:
    """docker/prometheus/prometheus.yml, its target swapped for the local service, scraped every second."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return config


@pytest.fixture(scope="module")
def service(server_factory) -> Iterator[LiveServer]:
    """A server of its own, so the request counters hold exactly this module's traffic."""
    with server_factory(workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(service: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_program("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config_for(service.url.removeprefix("http://"))))
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(url, process, log), 30, "Prometheus ready")
        yield url
    finally:
        stop(process)


def ready(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def scraped_value(prometheus: str, expr: str) -> float | None:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_traffic_sent(prometheus: str, service: LiveServer) -> None:
    # One scrape must see the series before the burst, so that rate() over the burst is defined.
    send_traffic(service.url, predictions=1)
    wait_for(lambda: scraped_value(prometheus, PREDICT_COUNT) == 1, 30, "first request scraped")
    send_traffic(service.url, predictions=PREDICTIONS)
    wait_for(
        lambda: scraped_value(prometheus, PREDICT_COUNT) == 1 + PREDICTIONS,
        30,
        f"{1 + PREDICTIONS} requests scraped",
    )

    (target,) = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert target["health"] == "up" and target["labels"]["job"] == "mnist-api"
    buckets = 'rate(mnist_request_duration_seconds_bucket{route="/predict"}[1m])'
    p99 = scraped_value(prometheus, f"histogram_quantile(0.99, sum by (le) ({buckets}))")
    assert p99 is not None and math.isfinite(p99) and 0 < p99 <= 10
    predicted = scraped_value(prometheus, "sum(mnist_predictions_total)")
    assert predicted == 1 + PREDICTIONS
    refused = scraped_value(prometheus, 'sum(mnist_errors_total{status="422"})')
    assert refused == 2


def test_every_dashboard_query_returns_data(prometheus: str, service: LiveServer) -> None:
    """The Grafana panels' PromQL parses in Prometheus and finds series once the service has seen traffic."""
    before = scraped_value(prometheus, PREDICT_COUNT) or 0
    send_traffic(service.url, predictions=2)
    wait_for(lambda: scraped_value(prometheus, PREDICT_COUNT) == before + 2, 30, "traffic scraped")
    empty = [expr for expr in dashboard_exprs() if not query(prometheus, as_prometheus_query(expr))]
    assert not empty, f"no data for: {empty}"
