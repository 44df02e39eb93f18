"""Kubernetes manifests (docker/k8s/): schema-level checks; the probes hit real routes of a live service."""

from __future__ import annotations

import re

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.settings import Settings
from tests.support.liveserver import ROOT, LiveServer

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
    service, which serves only from a worker whose model is warm."""
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(live_server.url + path, timeout=5).status_code == 200, path
    assert "service" not in container["readinessProbe"]["grpc"]  # the server as a whole ("")
    with grpc.insecure_channel(live_server.grpc) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


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
