"""Static checks of the container files: hadolint, `docker compose config`, Grafana vs a live /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.support.liveserver import ROOT, LiveServer, free_port
from tests.support.machine import require_program
from tests.support.stack import (
    DASHBOARD,
    METRIC,
    PROMETHEUS_CONFIG,
    VARIANTS,
    compose_binary,
    dashboard_exprs,
    send_traffic,
)

DOCKERFILES = ("Dockerfile", "docker/trainer.Dockerfile")
# The panels the dashboard must have, each by the metric family it must read.
REQUIRED_FAMILIES = {
    "mnist_request_duration_seconds",  # request rate, p50/p95/p99
    "mnist_errors",  # errors by code
    "mnist_batch_size",
    "mnist_queue_depth",
    "mnist_predictions",  # per digit
    "mnist_prediction_confidence",
    "mnist_model_info",  # active provider
}


def names(requirements: list[str]) -> set[str]:
    """Normalized distribution names of requirement strings (extras, versions and markers dropped)."""
    bare = (re.match(r"[A-Za-z0-9_.-]+", item).group() for item in requirements)
    return {re.sub(r"[-_.]+", "-", name).lower() for name in bare}


def locked(variant: str) -> set[str]:
    lines = (ROOT / "docker" / "requirements" / f"{variant}.txt").read_text().splitlines()
    pins = [line for line in lines if re.match(r"^[a-z0-9]", line)]
    assert pins and all(line.endswith("\\") for line in pins), "every pin carries its --hash lines"
    return names(pins)


def test_image_locks_pin_every_project_dependency() -> None:
    """Regenerate with docker/requirements/lock.sh when pyproject.toml's dependencies change."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving, extras = names(project["dependencies"]), project["optional-dependencies"]
    assert serving | names(extras["cuda"]) | {"nvidia-cudnn-cu13", "nvidia-cublas"} <= locked("gpu")
    cpu = locked("cpu")
    assert serving - {"onnxruntime-gpu"} | {"onnxruntime"} <= cpu and "onnxruntime-gpu" not in cpu
    assert serving | names(extras["train"]) <= locked("train")
    assert "setuptools" in locked("build")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile: str) -> None:
    hadolint = require_program("hadolint")
    result = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def compose_config(**variables: str) -> dict:
    """The rendered services (train profile included) with only `variables` set in the environment."""
    result = subprocess.run(
        [str(compose_binary()), "--profile", "train", "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **variables},  # no MNIST_* or *_PORT of the caller leaks in
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_config_is_valid() -> None:
    """`docker compose config -q` for each variant, with and without the train profile."""
    for variant in VARIANTS:
        for extra in ([], ["--profile", "train"]):
            result = subprocess.run(
                [str(compose_binary()), *extra, "config", "-q"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                env={"PATH": "/usr/bin:/bin", "MNIST_VARIANT": variant},
            )
            assert result.returncode == 0, (variant, extra, result.stderr)


def test_compose_cpu_by_default_gpu_by_one_variable() -> None:
    """`docker compose up --build` runs anywhere; MNIST_VARIANT=gpu alone switches image and GPU reservation;
    MNIST_WHEELS=wheelhouse alone makes both image builds offline."""
    cpu = compose_config()
    assert "deploy" not in cpu["api"] and "deploy" not in cpu["trainer"]
    assert cpu["api"]["build"]["args"] == {"VARIANT": "cpu", "WHEELS": "index"}
    assert cpu["api"]["image"] == "mnist-serve:cpu"
    assert float(cpu["api"]["environment"]["MNIST_MODEL_POLL_S"]) > 0  # a trained model loads without restart
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", dockerfile, re.MULTILINE), "docker build . builds the same default"

    gpu = compose_config(MNIST_VARIANT="gpu")
    for name in ("api", "trainer"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia", name
    assert gpu["api"]["build"]["args"]["VARIANT"] == "gpu" and gpu["api"]["image"] == "mnist-serve:gpu"

    offline = compose_config(MNIST_WHEELS="wheelhouse")
    assert offline["api"]["build"]["args"]["WHEELS"] == offline["trainer"]["build"]["args"]["WHEELS"]
    assert offline["api"]["build"]["args"]["WHEELS"] == "wheelhouse"

    # Each variant has its hardware file and its image lock.
    assert {path.stem for path in (ROOT / "docker" / "compose").glob("*.yml")} == set(VARIANTS)
    assert all((ROOT / "docker" / "requirements" / f"{variant}.txt").is_file() for variant in VARIANTS)


def test_compose_services_are_healthchecked_ordered_and_restarted() -> None:
    services = compose_config()
    assert set(services) == {"api", "prometheus", "grafana", "trainer"}
    for name in ("prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("api", "prometheus", "grafana"):
        assert services[name]["restart"] == "unless-stopped", name
        for port in services[name]["ports"]:
            assert port["host_ip"] == "127.0.0.1", f"{name} must not listen on every interface"
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # The api healthcheck is the image's (readiness, not mere liveness); compose only tunes its timing.
    assert "test" not in services["api"]["healthcheck"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?\n(?=\S)", dockerfile, re.MULTILINE | re.DOTALL).group()
    assert '"-m", "service.healthcheck"' in healthcheck
    published = {port["target"]: port["published"] for port in services["api"]["ports"]}
    assert published == {8000: "8000", 8001: "8001"}  # HTTP and gRPC, as the image exposes them
    # The trainer only runs on demand and writes into the repository's models/.
    assert services["trainer"]["profiles"] == ["train"]
    mounts = {volume["target"]: volume["source"] for volume in services["trainer"]["volumes"]}
    assert mounts["/app/models"] == str(ROOT / "models")


def test_compose_file_holds_no_secrets() -> None:
    """Keys and passwords come from the caller's environment, never from a value written in the file."""
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = {
        key: value
        for service in yaml.safe_load(text)["services"].values()
        for key, value in (service.get("environment") or {}).items()
        if re.search(r"KEY|PASSWORD|SECRET|TOKEN", key)
    }
    assert {"MNIST_API_KEY", "MNIST_ADMIN_KEY"} <= secrets.keys()  # passed through from the caller
    for key, value in secrets.items():
        assert value is None, f"{key} has a value in docker-compose.yml"


def test_prometheus_scrapes_the_api_port() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    expose = re.search(r"^EXPOSE\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert static["targets"] == [f"api:{expose}"]
    assert job["metrics_path"] == "/metrics"


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    grafana = ROOT / "docker" / "grafana"
    datasources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((grafana / "provisioning/dashboards/mnist.yml").read_text())["providers"]
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = dict(volume.rsplit(":", 2)[:2][::-1] for volume in services["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "./docker/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_reads_only_metrics_the_service_exports(live_server: LiveServer) -> None:
    send_traffic(live_server.url, predictions=3)
    exposition = httpx.get(f"{live_server.url}/metrics", timeout=10).text
    samples = [line for line in exposition.splitlines() if line.startswith("mnist_")]
    exported = {line.split("{")[0].split(" ")[0] for line in samples}
    used = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert used, "no PromQL in the dashboard"
    assert used <= exported, f"not exported by the service: {sorted(used - exported)}"
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in used}
    assert families >= REQUIRED_FAMILIES, f"no panel for {sorted(REQUIRED_FAMILIES - families)}"


def test_the_image_health_check_asks_http_and_grpc(live_server: LiveServer, tmp_path: Path) -> None:
    """service.healthcheck passes on a ready server, and fails when its gRPC port does not answer."""

    def check(grpc_port: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "service.healthcheck", "--port", live_server.url.rsplit(":", 1)[1]]
        environment = {**os.environ, "MNIST_GRPC_PORT": grpc_port}
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)

    assert check(live_server.grpc.rsplit(":", 1)[1]).returncode == 0
    nobody = check(str(free_port()))
    assert nobody.returncode == 1 and "gRPC health" in nobody.stderr and "UNAVAILABLE" in nobody.stderr
    assert check("0").returncode == 0  # gRPC off: HTTP readiness alone
