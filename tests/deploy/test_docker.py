"""The container path for real: a private Docker engine builds the Dockerfile's CPU variant with BuildKit
the offline way (WHEELS=wheelhouse, on a Debian stand-in for python:3.11-slim) and runs it; then
`docker compose up` brings api + Prometheus up. The default online way (pip from the package index) is checked
as far as this machine allows: its locks resolve on the index with the same hashes, and hadolint reads the
Dockerfiles (tests/deploy/test_compose_static.py)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from prometheus_client.parser import text_string_to_metric_families

from tests.support.liveserver import ROOT, free_port
from tests.support.machine import IN_CI, require_program
from tests.support.stack import VARIANTS, one_digit, query, wait_for

pytestmark = pytest.mark.docker
CI_SCRIPTS = ROOT / "docker" / "ci"
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"  # the image's venv
IMAGE = "mnist-serve:cpu"  # the tag docker-compose.yml runs by default, so compose uses the image built here
OFFLINE = ("--build-arg", "WHEELS=wheelhouse")  # no registry here: pip installs from wheelhouse/<variant>/


def run(args: list[str], env: dict[str, str], timeout: float, check: bool = True) -> str:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        raise AssertionError(f"{shlex.join(args)} exited {result.returncode}:\n{output}")
    return result.stdout.strip()


def major_version(cli: Path) -> int:
    text = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"version (\d+)\.", text)
    return int(match.group(1)) if match else 0


def buildkit_cli() -> Path:
    """A docker CLI on PATH that builds with BuildKit (the Dockerfiles' cache mounts need it): one with the
    buildx plugin, or one older than 23, which has a BuildKit client built in (Debian bookworm's docker.io
    CLI, 20.10); a newer CLI without buildx refuses BuildKit builds."""
    clis = [Path(folder) / "docker" for folder in os.environ.get("PATH", "").split(os.pathsep)]
    for cli in dict.fromkeys(cli for cli in clis if cli.is_file() and os.access(cli, os.X_OK)):
        has_buildx = (
            subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=30).returncode == 0
        )
        if has_buildx or 0 < major_version(cli) < 23:
            return cli
    message = "no docker CLI with BuildKit: install docker-buildx, or Debian's docker.io (make system-deps)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def engine() -> Iterator[dict[str, str]]:
    """A Docker engine of this module's own under /tmp, with the stand-in base images and CPU wheelhouse; its
    `docker` is a BuildKit-capable CLI, first on PATH."""
    for program in ("dockerd", "docker", "debootstrap"):
        require_program(program)
    cli = buildkit_cli()
    folder = tempfile.mkdtemp(prefix="mnist-dockerd-", dir="/tmp")  # short: a unix socket path has 108 bytes
    (Path(folder) / "bin").mkdir()
    (Path(folder) / "bin" / "docker").symlink_to(cli)
    path = os.pathsep.join([f"{folder}/bin", os.environ.get("PATH", "")])
    env = {
        **os.environ,
        "PATH": path,
        "DOCKER_BUILDKIT": "1",
        "MNIST_DOCKERD_DIR": folder,
        "PYTHON": sys.executable,
    }
    try:
        exports = run([str(CI_SCRIPTS / "dockerd.sh"), "start"], env, timeout=60)
        env.update(item.split("=", 1) for item in shlex.split(exports.removeprefix("export ")))
        run([str(CI_SCRIPTS / "base-images.sh")], env, timeout=600)
        run([str(CI_SCRIPTS / "wheelhouse.sh"), "cpu"], env, timeout=600)
        yield env
    finally:
        run([str(CI_SCRIPTS / "dockerd.sh"), "stop"], env, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)  # the data root: every image, layer and volume


def build(env: dict[str, str], tag: str, *args: str) -> str:
    """`docker build` the repository's Dockerfile; prints the time it took and the image size."""
    started = time.monotonic()
    run(["docker", "build", *args, "-t", tag, "."], env, timeout=1800)
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], env, timeout=30))
    print(f"\nbuilt {tag} in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return tag


@pytest.fixture(scope="module")
def image(engine: dict[str, str]) -> str:
    return build(engine, IMAGE, "--build-arg", "VARIANT=cpu", *OFFLINE)


def start_container(env: dict[str, str], *options: str, image: str = IMAGE) -> tuple[str, str]:
    """`docker run -d` the image published on a free 127.0.0.1 port; (container id, base url)."""
    port = free_port()
    container = run(
        ["docker", "run", "-d", "-p", f"127.0.0.1:{port}:8000", "--health-interval", "2s", *options, image],
        env,
        timeout=60,
    )
    return container, f"http://127.0.0.1:{port}"


def container_logs(env: dict[str, str], container: str) -> str:
    """Its stdout and stderr (where the service logs)."""
    logs = subprocess.run(["docker", "logs", container], env=env, capture_output=True, text=True, timeout=30)
    return logs.stdout + logs.stderr


def wait_healthy(env: dict[str, str], container: str, timeout: float = 120) -> None:
    def healthy() -> bool:
        state = run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container],
            env,
            timeout=30,
        )
        if state.startswith("exited"):
            raise AssertionError(f"container exited:\n{container_logs(env, container)}")
        return state == "running healthy"

    wait_for(healthy, timeout, "container healthy (its HEALTHCHECK on /readyz)")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def serving_provider(url: str) -> str:
    """The execution provider the service reports in mnist_model_info."""
    (labels,) = [labels for name, labels in scrape(url) if name == "mnist_model_info"]
    return dict(labels)["provider"]


def test_image_serves_and_stops_gracefully(engine: dict[str, str], image: str) -> None:
    """Run as docker/k8s/deployment.yaml does: read-only root, only /tmp writable, no capabilities."""
    container, url = start_container(
        engine, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"
    )
    try:
        wait_healthy(engine, container)
        response = httpx.post(f"{url}/predict", json={"pixels": one_digit()}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["digit"] in range(10) and body["model"]["name"] == "lenet5"
        requests = (("method", "POST"), ("protocol", "http"), ("route", "/predict"), ("status", "200"))
        assert scrape(url)[("mnist_request_duration_seconds_count", requests)] == 1
        assert serving_provider(url) == "CPUExecutionProvider"  # the CPU image says what serves

        assert run(["docker", "exec", container, "id", "-u"], engine, 30) == "10001"
        # Serving only: no torch, no compilers.
        probe = "import importlib.util, shutil; print(importlib.util.find_spec('torch'), shutil.which('cc'))"
        assert run(["docker", "exec", container, "python3", "-c", probe], engine, 30) == "None None"
        # SIGTERM: uvicorn drains and exits 0 well within the grace period (no SIGKILL).
        run(["docker", "stop", "-t", "20", container], engine, timeout=60)
        assert run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container], engine, 30) == "0"
    finally:
        run(["docker", "rm", "-f", container], engine, timeout=60, check=False)


class IndexHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a PEP 503 index folder, records the paths asked for, and marks files cacheable as the real index
    does (pip caches only responses that say so)."""

    requested: list[str]

    def end_headers(self) -> None:
        if self.path.startswith("/files/"):
            self.send_header("Cache-Control", "max-age=31536000, immutable")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path)


@contextmanager
def package_index(wheels: Path, folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A PEP 503 "simple" index of `wheels` on 127.0.0.1 standing in for the package index (which builds
    cannot reach here); (its URL, the paths requested so far)."""
    (folder / "files").mkdir()
    for wheel in wheels.glob("*.whl"):
        (folder / "files" / wheel.name).symlink_to(wheel.resolve())
        project = folder / "simple" / canonicalize_name(parse_wheel_filename(wheel.name)[0])
        project.mkdir(parents=True, exist_ok=True)
        with (project / "index.html").open("a") as page:
            page.write(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')
    requested: list[str] = []
    handler = type("Handler", (IndexHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/simple/", requested
    finally:
        server.shutdown()
        server.server_close()


def installed(env: dict[str, str], image: str) -> list[str]:
    """name==version of every distribution in the image's venv."""
    probe = (
        "import importlib.metadata as m; print(sorted(f'{d.name}=={d.version}' for d in m.distributions()))"
    )
    return run(
        ["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", probe], env, timeout=60
    ).split()


def test_default_build_installs_the_locks_from_the_index(
    engine: dict[str, str], image: str, tmp_path: Path
) -> None:
    """The default (online) build end to end against a package index on 127.0.0.1: pip installs the same
    locked, hash-checked wheels as the offline build, and a rebuild gets them from BuildKit's cache mount."""
    with package_index(ROOT / "wheelhouse" / "cpu", tmp_path) as (url, requested):
        network = ("--network", "host", "--build-arg", "PIP_TRUSTED_HOST=127.0.0.1")
        online = build(engine, "mnist-serve:cpu-index", *network, "--build-arg", f"PIP_INDEX_URL={url}")
        fetched = [path for path in requested if path.startswith("/files/")]
        assert len(fetched) == len(list((ROOT / "wheelhouse" / "cpu").glob("*.whl")))
        requested.clear()
        # The same index written without its trailing slash: a new pip layer, so pip runs again (only the
        # build stage: the rest is the same as above).
        again = ("--target", "build", "--build-arg", f"PIP_INDEX_URL={url.rstrip('/')}")
        build(engine, "mnist-serve:cpu-index-build", *network, *again)
        assert [path for path in requested if path.startswith("/files/")] == [], "wheels came from the cache"
    try:
        assert installed(engine, online) == installed(engine, image)
    finally:
        run(["docker", "rmi", online, "mnist-serve:cpu-index-build"], engine, timeout=120, check=False)


def test_a_mounted_model_overrides_the_shipped_one(
    engine: dict[str, str], image: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "lenet5.onnx", models / "mounted.onnx")
    for path in (tmp_path, models, models / "mounted.onnx"):
        path.chmod(0o755)  # readable by the image's non-root user
    container, url = start_container(
        engine, "-v", f"{models}:/models:ro", "-e", "MNIST_MODEL_PATH=/models/mounted.onnx"
    )
    try:
        wait_healthy(engine, container)
        assert "from /models/mounted.onnx" in container_logs(engine, container)
        assert httpx.post(f"{url}/predict", json={"pixels": one_digit()}, timeout=10).status_code == 200
    finally:
        run(["docker", "rm", "-f", container], engine, timeout=60, check=False)


def test_compose_up_api_and_prometheus(engine: dict[str, str], image: str) -> None:
    """The repository's compose file (the default CPU variant) with the stand-in images; Prometheus scrapes
    the api."""
    ports = {"MNIST_PORT": free_port(), "PROMETHEUS_PORT": free_port()}
    env = {**engine, **{name: str(port) for name, port in ports.items()}}
    env.pop("MNIST_VARIANT", None)
    compose = ["docker", "compose", "-p", f"mnist-ci-{os.getpid()}"]
    try:
        run(
            [
                *compose,
                "up",
                "-d",
                "--no-build",
                "--pull",
                "never",
                "--wait",
                "--wait-timeout",
                "180",
                "api",
                "prometheus",
            ],
            env,
            timeout=240,
        )
        api = f"http://127.0.0.1:{ports['MNIST_PORT']}"
        prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
        assert httpx.post(f"{api}/predict", json={"pixels": one_digit()}, timeout=10).status_code == 200

        def api_target_up() -> bool:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            return [(t["labels"]["job"], t["health"]) for t in targets] == [("mnist-api", "up")]

        wait_for(api_target_up, 60, "Prometheus reports the api target up")
        wait_for(
            lambda: query(prometheus, 'sum(mnist_predictions_total{job="mnist-api"})'),
            60,
            "Prometheus holds the api's prediction counter",
        )
    finally:
        down = [*compose, "down", "--volumes", "--remove-orphans", "--timeout", "20"]
        run(down, env, timeout=120, check=False)


@pytest.mark.skipif(
    os.environ.get("MNIST_TEST_GPU_IMAGE") != "1",
    reason="the GPU image is 2.8 GB and takes minutes: MNIST_TEST_GPU_IMAGE=1 builds it",
)
def test_gpu_image_uses_cuda_where_it_can(engine: dict[str, str]) -> None:
    """NVIDIA runtime: CUDA serves. None: CPU serves, and the CUDA provider lacks only the host's driver."""
    run([str(CI_SCRIPTS / "wheelhouse.sh"), "gpu"], engine, timeout=1800)
    gpu_image = build(engine, "mnist-serve:gpu", "--build-arg", "VARIANT=gpu", *OFFLINE)
    has_gpu = "nvidia" in run(["docker", "info", "-f", "{{json .Runtimes}}"], engine, timeout=30)
    container, url = start_container(engine, *(["--gpus", "all"] if has_gpu else []), image=gpu_image)
    try:
        wait_healthy(engine, container)
        assert httpx.post(f"{url}/predict", json={"pixels": one_digit()}, timeout=10).status_code == 200
        if has_gpu:
            assert serving_provider(url) == "CUDAExecutionProvider"
        else:
            assert serving_provider(url) == "CPUExecutionProvider"
            logs = container_logs(engine, container)  # the fallback is logged once, with the driver's reason
            assert "onnxruntime runs on CPU, not CUDA: no NVIDIA driver (libcuda.so.1" in logs
            library = f"{SITE_PACKAGES}/onnxruntime/capi/libonnxruntime_providers_cuda.so"
            linked = run(["docker", "exec", container, "ldd", library], engine, timeout=30)
            missing = [line.split()[0] for line in linked.splitlines() if "not found" in line]
            assert missing == ["libcuda.so.1"]  # the host driver, mounted by the NVIDIA container toolkit
    finally:
        run(["docker", "rm", "-f", container], engine, timeout=60, check=False)
        run(["docker", "rmi", gpu_image], engine, timeout=120, check=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_locks_resolve_on_the_package_index(variant: str, tmp_path: Path) -> None:
    """The default build's pip step, dry: every pin of the lock exists on the package index this host's pip
    uses, as a file whose hash the lock lists (the index path cannot run inside a build here)."""
    lock = ROOT / "docker" / "requirements" / f"{variant}.txt"
    report = tmp_path / "report.json"
    # Only the index: no local wheel folders or indexes from pip's config, no constraints.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") or key == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps"]
    command += [
        "--require-hashes",
        "--only-binary=:all:",
        "--quiet",
        "--report",
        str(report),
        "-r",
        str(lock),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    hashes: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", lock.read_text()):
        if match := re.match(r"([A-Za-z0-9_.-]+)==", block):
            hashes[canonicalize_name(match.group(1))] = set(
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            )
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["download_info"]
        for item in json.loads(report.read_text())["install"]
    }
    assert set(resolved) == set(hashes)
    for name, download in resolved.items():
        assert download["url"].startswith("https://"), (name, download["url"])  # from the index, not a folder
        assert download["archive_info"]["hashes"]["sha256"] in hashes[name], name
