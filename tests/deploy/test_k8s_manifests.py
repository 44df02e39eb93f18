"""Kubernetes manifests (docker/k8s/): schema-level checks; the probes hit real routes of a live service, and
what they see while a server starts and while a worker is replaced."""

from __future__ import annotations

import os
import re
import signal
import time

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.settings import Settings
from tests.support.liveserver import READY_MARK, ROOT, LiveServer, start_server, stop
from tests.support.procfs import workers

K8S = ROOT / "docker" / "k8s"
REQUIRED_SPEC = {
    "Deployment": ("replicas", "selector", "template"),
    "Service": ("selector", "ports"),
    "HorizontalPodAutoscaler": ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"),
    "PodDisruptionBudget": ("selector",),
    "ServiceMonitor": ("selector", "endpoints"),
}


def load() -> dict[str, dict]:
    """Every manifest by kind (one object of each kind here)."""
    objects: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                assert doc["kind"] not in objects, f"two {doc['kind']} objects"
                objects[doc["kind"]] = doc
    return objects


def dockerfile_instruction(name: str) -> str:
    match = re.search(rf"^{name}\s+(.+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no {name}"
    return match.group(1).strip()


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return load()


@pytest.fixture(scope="module")
def container(objects: dict[str, dict]) -> dict:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_every_object_has_the_required_fields(objects: dict[str, dict]) -> None:
    assert set(objects) == set(REQUIRED_SPEC)
    for kind, fields in REQUIRED_SPEC.items():
        obj = objects[kind]
        assert obj["apiVersion"] and obj["metadata"]["name"] == "mnist-serve"
        missing = [field for field in fields if field not in obj["spec"]]
        assert not missing, f"{kind} lacks spec.{missing}"


def test_kustomization_lists_the_core_objects() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert resources == {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    assert all((K8S / name).is_file() for name in resources)


def test_selectors_match_the_pod_labels(objects: dict[str, dict]) -> None:
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    monitor = objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= objects["Service"]["metadata"]["labels"].items()


def test_ports_match_the_image(objects: dict[str, dict], container: dict) -> None:
    http_port, grpc_port = map(int, dockerfile_instruction("EXPOSE").split())
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (
        ports == {"http": http_port, "grpc": grpc_port}
        and grpc_port == Settings.model_fields["grpc_port"].default
    )
    targets = {port["name"]: port["targetPort"] for port in objects["Service"]["spec"]["ports"]}
    assert targets == {"http": "http", "grpc": "grpc"}
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == http_port
    assert annotations["prometheus.io/path"] == "/metrics"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port  # a gRPC probe takes a number


def test_probes_point_at_real_routes(container: dict, live_server: LiveServer) -> None:
    """Liveness must not depend on the model (a restart would not help); readiness must: the gRPC health
    service of the server as a whole, which serves only from a worker whose model is warm."""
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "service" not in container["readinessProbe"]["grpc"]  # "": the server as a whole
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe(live_server, container[name]) == 200, name


def probe(server: LiveServer, spec: dict) -> int | None:
    """One probe as the kubelet makes it: the HTTP status (a gRPC probe's SERVING as 200, any other
    answer as 503), or None if the connection failed. A gRPC probe goes to the server's own gRPC port."""
    timeout = spec.get("timeoutSeconds", 1)
    if "grpc" in spec:
        try:
            with grpc.insecure_channel(server.grpc) as channel:
                request = health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", ""))
                answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            unreached = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return None if exc.code() in unreached else 503
        return 200 if answer.status == health_pb2.HealthCheckResponse.SERVING else 503
    try:
        return httpx.get(server.url + spec["httpGet"]["path"], timeout=timeout).status_code
    except httpx.TransportError:
        return None


def probes_until(server: LiveServer, container: dict, ready_lines: int, limit_s: float) -> list[tuple]:
    """Every probe of the pod, round after round, until the log holds `ready_lines` ready lines and every
    probe answered 200 after that: (probe, status, whether the log held them when the answer came)."""
    seen, deadline = [], time.monotonic() + limit_s
    names = ("startupProbe", "livenessProbe", "readinessProbe")
    while time.monotonic() < deadline:
        answers = [(name, probe(server, container[name])) for name in names]
        ready = server.log.read_text(errors="replace").count(READY_MARK) >= ready_lines
        seen += [(name, status, ready) for name, status in answers]
        if ready and all(status == 200 for _, status in answers):
            return seen
        time.sleep(0.1)
    raise TimeoutError(f"probes never all 200 within {limit_s} s: {seen[-3:]}")


def test_probes_of_a_starting_pod_and_of_a_replaced_worker(container: dict, model_path, tmp_path) -> None:
    """Warm-up held for 2 s (MNIST_WARMUP_MIN_S): until a worker is ready every probe is refused at
    connect (the startupProbe's failures, which hold off liveness), never a 503; then all three are 200.
    A worker SIGKILLed later: its replacement warms up while the probes reach the other worker, all 200."""
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # a cold GPU start, CUDA and all
    for name in ("livenessProbe", "readinessProbe"):  # the startupProbe holds them off; a delay would only
        assert "initialDelaySeconds" not in container[name], name  # postpone readiness
    env = {"MNIST_MODEL_PATH": str(model_path), "MNIST_PROVIDERS": "cpu", "MNIST_WARMUP_MIN_S": "2"}
    server = start_server(tmp_path / "server.log", workers=2, env=env)
    try:
        starting = probes_until(server, container, ready_lines=1, limit_s=60)
        assert starting[0][1] is None, "probed too late: the start was not seen"
        assert all(status is None for _, status, ready in starting if not ready), starting
        assert {status for _, status, _ in starting} <= {None, 200}, starting
        probes_until(server, container, ready_lines=2, limit_s=60)  # both workers warm
        os.kill(workers(server.process.pid)[0], signal.SIGKILL)
        replacing = probes_until(server, container, ready_lines=3, limit_s=60)
        assert {status for _, status, _ in replacing} == {200}, replacing
    finally:
        stop(server.process)


def test_pod_runs_as_the_image_user_without_privileges(objects: dict[str, dict], container: dict) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    uid = int(dockerfile_instruction("USER").split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    # A read-only root still needs a writable /tmp (Prometheus multiprocess files).
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_gpu_and_resources(container: dict) -> None:
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    env = {item["name"]: item for item in container["env"]}
    # One worker process per requested CPU, not the node's core count.
    assert int(env["MNIST_WORKERS"]["value"]) == int(resources["requests"]["cpu"])
    assert env["MNIST_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_graceful_termination(objects: dict[str, dict], container: dict) -> None:
    """The endpoint is removed (preStop) before SIGTERM, and the grace period outlasts a request timeout."""
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    timeout = Settings().request_timeout_s
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + timeout
    strategy = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_autoscaling_and_disruption_budget(objects: dict[str, dict]) -> None:
    hpa, pdb = objects["HorizontalPodAutoscaler"]["spec"], objects["PodDisruptionBudget"]["spec"]
    deployment = objects["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
    # The budget must leave a pod that may be evicted, or node drains block forever.
    assert pdb["minAvailable"] < hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Utilization is relative to the request: the container must request CPU.
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"]
