"""Model reload: every trigger (KServe V2 load, SIGHUP, polling) against real 2-worker servers, refused
candidates, the admin key, tritonclient, metrics; and in-process, the checks a candidate goes through and
the swap itself (a request finishes on the model it started with)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from bench.reload import SHORT, Reload, Sample, active_intervals, invalid_samples, measure
from service.loading import prepare, references
from service.repository import ModelRepository
from service.runtime import ModelLoadError, ModelRuntime
from service.settings import Settings
from tests.support.liveserver import ROOT, LiveServer, start_server, stop
from tests.support.model import NAME, TEST_ACCURACY, build_model
from tests.support.procfs import workers

ADMIN_KEY = "test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WORKERS = 2
# Answers per check, each over a new connection: the kernel spreads new connections over the workers
# (SO_REUSEPORT), so 40 answers all reach one worker with probability 2**-39.
FRESH = 40
# The polled server's interval. A file copied in place must change within one interval to count as still
# being copied: the copy below writes every 0.1 s, so only a stall of the writer for 0.9 s breaks that.
POLL_S = 1.0
DIGIT = references({})[0][0].tolist()  # a shipped reference digit, 28 x 28 uint8
VERSIONS = (f"2.0.{n}" for n in itertools.count())  # a new version for every model a test installs


# --- observing a live server -----------------------------------------------------------------------------


def fresh_versions(url: str, n: int = FRESH) -> Counter[str]:
    """The model version in n answers, each over its own connection: half GET /v1/models/lenet5, half
    POST /predict (the version that computed the digit)."""
    seen: Counter[str] = Counter()
    for i in range(n):
        if i % 2:
            response = httpx.get(f"{url}/v1/models/{NAME}", timeout=10)
            version = response.json().get("version")
        else:
            response = httpx.post(f"{url}/predict", json={"pixels": DIGIT}, timeout=10)
            version = response.json().get("model", {}).get("version")
        assert response.status_code == 200, response.text
        seen[version] += 1
    return seen


def current_version(url: str) -> str:
    (version,) = fresh_versions(url)  # one version on every worker
    return version


def wait_for_version(url: str, version: str, timeout_s: float = 30.0) -> float:
    """Seconds until FRESH answers in a row all report `version` (bounded)."""
    started = time.monotonic()
    while fresh_versions(url) != Counter({version: FRESH}):
        assert time.monotonic() - started < timeout_s, f"workers not all on {version} after {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of /metrics (summed over the workers by the server), or None if it does not exist."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def reloads(url: str, result: str) -> float:
    return metric(url, "mnist_model_reloads_total", result=result) or 0.0


def model_info(url: str, version: str) -> float | None:
    return metric(url, "mnist_model_info", model=NAME, version=version)


def load(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v2/repository/models/{NAME}/load", headers=headers, timeout=90)


def index(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v2/repository/index", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def copy_in_place(data: bytes, path: Path, parts: int, gap_s: float) -> float:
    """Rewrite `path` with `data` in `parts` writes, one every `gap_s` (as `cp` onto the file over a slow
    disk would); the longest time between two writes as it happened, which a loaded machine stretches."""
    longest, last = 0.0, time.monotonic()
    with path.open("r+b") as file:
        file.truncate(0)
        for part in range(parts):
            file.write(data[part * len(data) // parts : (part + 1) * len(data) // parts])
            file.flush()
            now = time.monotonic()
            longest, last = max(longest, now - last), now
            time.sleep(max(0.0, last + gap_s - time.monotonic()))
    return longest


# --- a server whose model file the tests replace ---------------------------------------------------------


@dataclass
class Served:
    server: LiveServer
    path: Path  # MNIST_MODEL_PATH

    @property
    def url(self) -> str:
        return self.server.url

    def install(self, **model: Any) -> str:
        """Put a new model (tests/support/model.py options) at MNIST_MODEL_PATH atomically; its version."""
        version = model.setdefault("version", next(VERSIONS))
        candidate = build_model(self.path.with_name("candidate.onnx"), **model)
        os.replace(candidate.with_suffix(".json"), self.path.with_suffix(".json"))
        os.replace(candidate, self.path)
        return version

    def install_bytes(self, data: bytes) -> None:
        candidate = self.path.with_name("candidate.onnx")
        candidate.write_bytes(data)
        os.replace(candidate, self.path)


@contextmanager
def serve(
    server_factory: Callable[..., Any], folder: Path, workers: int = WORKERS, **env: str
) -> Iterator[Served]:
    folder.mkdir(exist_ok=True)
    path = build_model(folder / "lenet5.onnx", version=next(VERSIONS))
    environment = {"MNIST_MODEL_PATH": str(path), "MNIST_PROVIDERS": "cpu", **env}
    with server_factory(workers=workers, env=environment) as server:
        yield Served(server, path)


@pytest.fixture(scope="module")
def served(server_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """2 workers, the repository API open with ADMIN_KEY, no polling."""
    with serve(server_factory, tmp_path_factory.mktemp("served"), MNIST_ADMIN_KEY=ADMIN_KEY) as served:
        yield served


@pytest.fixture(scope="module")
def polled(server_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """2 workers polling MNIST_MODEL_PATH every POLL_S; no admin key (the repository API is closed)."""
    with serve(server_factory, tmp_path_factory.mktemp("polled"), MNIST_MODEL_POLL_S=str(POLL_S)) as polled:
        yield polled


# --- the KServe V2 load route ----------------------------------------------------------------------------


def test_http_load_switches_every_worker_and_answers_for_all(served: Served) -> None:
    old = current_version(served.url)
    loaded = reloads(served.url, "loaded")
    new = served.install(seed=11)
    response = load(served.url, ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == NAME
    workers = body["workers"]
    assert len({worker["pid"] for worker in workers}) == WORKERS
    assert {(worker["version"], worker["state"], worker["result"]) for worker in workers} == {
        (new, "READY", "loaded")
    }
    assert fresh_versions(served.url) == Counter({new: FRESH})  # no worker answers with the old model
    assert reloads(served.url, "loaded") == loaded + WORKERS
    assert (model_info(served.url, old), model_info(served.url, new)) == (0.0, 1.0)
    assert index(served.url) == [{"name": NAME, "version": new, "state": "READY", "reason": ""}]
    assert metric(served.url, "mnist_model_reload_duration_seconds_count", result="loaded") >= WORKERS

    again = load(served.url, ADMIN)  # the same file: nothing to do
    assert again.status_code == 200, again.text
    assert {worker["result"] for worker in again.json()["workers"]} == {"unchanged"}
    assert current_version(served.url) == new


REFUSED = {
    "corrupt file": ({"data": os.urandom(4096)}, "cannot load"),
    "wrong input shape": (
        {"side": 32},
        "candidate input {'name': 'image', 'datatype': 'FP32', 'shape': [-1, 1, 32, 32]} differs",
    ),
    "fails its self-test": ({"self_test_labels": "wrong"}, "self-test failed: 0% of 20 reference digits"),
    "another name": ({"name": "digits"}, "candidate is named 'digits'; this server serves 'lenet5'"),
    "fails at batch size 2": ({"fixed_batch": 1}, "warm-up failed"),
}


@pytest.mark.parametrize("candidate", REFUSED, ids=list(REFUSED))
def test_a_bad_candidate_is_refused_and_the_old_model_keeps_serving(served: Served, candidate: str) -> None:
    model, reason = REFUSED[candidate]
    old = current_version(served.url)
    refused = reloads(served.url, "refused")
    if "data" in model:
        served.install_bytes(model["data"])
    else:
        served.install(**model)
    response = load(served.url, ADMIN)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(f"model refused, still serving version {old}: ") and reason in message
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    assert fresh_versions(served.url) == Counter({old: FRESH})
    assert reloads(served.url, "refused") == refused + WORKERS  # each worker checked and refused it
    (entry,) = index(served.url)
    assert (entry["version"], entry["state"]) == (old, "READY") and reason in entry["reason"]
    assert model_info(served.url, old) == 1.0


def test_load_of_another_model_name_is_404(served: Served) -> None:
    response = httpx.post(f"{served.url}/v2/repository/models/resnet/load", headers=ADMIN, timeout=10)
    assert response.status_code == 404 and "unknown model 'resnet'" in response.json()["error"]


def test_the_admin_key_is_required(served: Served, polled: Served) -> None:
    loaded = reloads(served.url, "loaded") + reloads(served.url, "refused")
    served.install(seed=12)  # a load that got through would switch to this
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_KEY}):
        for response in (
            load(served.url, headers),
            httpx.get(f"{served.url}/v2/repository/index", headers=headers),
            httpx.post(f"{served.url}/v2/repository/index", headers=headers),
        ):
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "admin key" in response.json()["error"]
    assert reloads(served.url, "loaded") + reloads(served.url, "refused") == loaded
    # Without MNIST_ADMIN_KEY the repository API is closed, whatever the client sends.
    for headers in (None, ADMIN):
        for response in (load(polled.url, headers), httpx.get(f"{polled.url}/v2/repository/index")):
            assert response.status_code == 403, response.text
            assert "set MNIST_ADMIN_KEY" in response.json()["error"]


def test_tritonclient_loads_and_lists_the_model(served: Served) -> None:
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        new = served.install(seed=13)
        client.load_model(NAME, headers=ADMIN)
        assert client.is_model_ready(NAME, new)
        assert client.get_model_repository_index(headers=ADMIN) == [
            {"name": NAME, "version": new, "state": "READY", "reason": ""}
        ]
        served.install(self_test_labels="wrong")
        with pytest.raises(InferenceServerException, match="self-test failed"):
            client.load_model(NAME, headers=ADMIN)
        assert client.is_model_ready(NAME, new)
        with pytest.raises(InferenceServerException, match="admin key"):
            client.get_model_repository_index()
    finally:
        client.close()


# --- SIGHUP and polling ----------------------------------------------------------------------------------


def test_a_crashed_worker_leaves_no_stale_model_info(served: Served) -> None:
    """A worker killed outright never sets its model-info gauge to 0; its replacement must not leave the
    dead worker's 1 standing for a version no worker serves any more."""
    old = served.install(seed=22)  # the replacement loads the file on disk: it must be the served model
    assert load(served.url, ADMIN).status_code == 200
    victim = workers(served.server.process.pid)[0]
    ready = served.server.log.read_text().count("; ready")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while served.server.log.read_text().count("; ready") <= ready:  # uvicorn started a replacement
        assert time.monotonic() < deadline, served.server.log.read_text()
        time.sleep(0.1)
    assert len(workers(served.server.process.pid)) == WORKERS
    new = served.install(seed=17)
    response = load(served.url, ADMIN)
    assert response.status_code == 200, response.text
    assert victim not in {worker["pid"] for worker in response.json()["workers"]}
    assert (model_info(served.url, old), model_info(served.url, new)) == (0.0, 1.0)


def test_sighup_to_the_main_process_switches_every_worker(served: Served) -> None:
    old = current_version(served.url)
    new = served.install(seed=14)
    os.kill(served.server.process.pid, signal.SIGHUP)
    wait_for_version(served.url, new)
    assert (model_info(served.url, old), model_info(served.url, new)) == (0.0, 1.0)
    assert (index(served.url)[0]["version"], served.server.process.poll()) == (new, None)


def test_polling_picks_up_a_new_file_and_refuses_a_bad_one(polled: Served) -> None:
    old = current_version(polled.url)
    new = polled.install(seed=15)
    wait_for_version(polled.url, new)
    assert (model_info(polled.url, old), model_info(polled.url, new)) == (0.0, 1.0)
    refused = reloads(polled.url, "refused")
    polled.install(side=32)
    deadline = time.monotonic() + 30
    while reloads(polled.url, "refused") < refused + WORKERS:
        assert time.monotonic() < deadline, "the workers did not try the new file"
        time.sleep(0.1)
    assert httpx.get(f"{polled.url}/readyz").status_code == 200
    assert fresh_versions(polled.url) == Counter({new: FRESH})
    newer = polled.install(seed=16)
    wait_for_version(polled.url, newer)


def test_polling_waits_for_a_file_copied_in_place_to_be_complete(polled: Served) -> None:
    """`cp new.onnx models/lenet5.onnx` rewrites the file over a while: a poll in the middle must not
    try (and refuse) the half-written model."""
    for _ in range(3):
        refused = reloads(polled.url, "refused")
        source = build_model(polled.path.with_name("source.onnx"), version=next(VERSIONS), seed=21)
        # in place, in 20 parts 0.1 s apart: every worker polls at least once in the middle
        longest = copy_in_place(source.read_bytes(), polled.path, parts=20, gap_s=0.1)
        wait_for_version(polled.url, ModelRuntime(source, "cpu").version)
        if longest < POLL_S:
            break  # else the machine held the writer for an interval: a poll may rightly have tried the file
    assert longest < POLL_S, f"the copy stalled for {longest:.2f} s in each attempt"
    assert reloads(polled.url, "refused") == refused


def test_one_worker_reloads_by_http_and_sighup_and_a_slow_fleet_gets_504(
    server_factory, tmp_path: Path
) -> None:
    """Without a supervisor the one process reloads itself. With two workers and a reload timeout shorter
    than a reload, the call answers 504 saying how many finished; the reload still completes."""
    env = {"MNIST_ADMIN_KEY": ADMIN_KEY}
    with serve(server_factory, tmp_path / "one", workers=1, **env) as served:
        new = served.install(seed=18)
        response = load(served.url, ADMIN)
        assert response.status_code == 200, response.text
        (worker,) = response.json()["workers"]
        assert (worker["pid"], worker["version"], worker["result"]) == (
            served.server.process.pid,
            new,
            "loaded",
        )
        newer = served.install(seed=19)
        os.kill(served.server.process.pid, signal.SIGHUP)
        wait_for_version(served.url, newer)
        assert served.server.process.poll() is None
    with serve(server_factory, tmp_path / "two", MNIST_RELOAD_TIMEOUT_S="0.001", **env) as served:
        new = served.install(seed=20)
        response = load(served.url, ADMIN)
        assert response.status_code == 504, response.text
        assert "of 2 workers finished the reload within 0.001 s" in response.json()["error"]
        wait_for_version(served.url, new)


def test_sighup_while_the_server_starts_does_not_kill_it(tmp_path: Path) -> None:
    """SIGHUP's default action ends a process: one that arrives before a worker can reload must wait for
    it, not kill the worker (or, before the workers exist, the server)."""
    path = build_model(tmp_path / "lenet5.onnx", version="1")
    env = {"MNIST_MODEL_PATH": str(path), "MNIST_PROVIDERS": "cpu", "MNIST_ADMIN_KEY": ADMIN_KEY}
    server = start_server(tmp_path / "server.log", workers=WORKERS, env=env)
    try:
        deadline = time.monotonic() + 60
        while "mnist-serve: " not in server.log.read_text():  # past the interpreter start, in main()
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.02)
        build_model(tmp_path / "candidate.onnx", version="2")
        os.replace(tmp_path / "candidate.onnx", path)
        while server.log.read_text().count("; ready") < WORKERS:
            assert server.process.poll() is None, server.log.read_text()
            assert time.monotonic() < deadline, server.log.read_text()
            os.kill(server.process.pid, signal.SIGHUP)
            time.sleep(0.05)
        wait_for_version(server.url, "2")
        log = server.log.read_text()
        assert "died" not in log and len(workers(server.process.pid)) == WORKERS, log
        response = load(server.url, ADMIN)  # the HUPs that waited are all handled: this one finds no change
        assert {worker["result"] for worker in response.json()["workers"]} == {"unchanged"}, response.text
    finally:
        stop(server.process)


def test_a_worker_that_cannot_serve_the_model_stops_the_server_with_exit_code_3(tmp_path: Path) -> None:
    """A worker restarted after a crash loads the file on disk; if that model fails warm-up, the worker
    logs why and the whole server stops with uvicorn's startup-failure code (instead of an unready worker)."""
    path = build_model(tmp_path / "lenet5.onnx")
    env = {"MNIST_MODEL_PATH": str(path), "MNIST_PROVIDERS": "cpu"}
    server = start_server(tmp_path / "server.log", workers=WORKERS, env=env)
    try:
        deadline = time.monotonic() + 60
        while server.log.read_text().count("; ready") < WORKERS:
            assert server.process.poll() is None and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        build_model(tmp_path / "candidate.onnx", fixed_batch=1)
        os.replace(tmp_path / "candidate.onnx", path)  # not reloaded: the workers keep the good model
        assert httpx.post(f"{server.url}/predict", json={"pixels": DIGIT}).status_code == 200
        os.kill(workers(server.process.pid)[0], signal.SIGKILL)
        code = server.process.wait(timeout=60)
    finally:
        stop(server.process)
    log = server.log.read_text()
    assert code == 3, log
    assert f"CRITICAL service cannot serve {path}: warm-up failed:" in log
    assert "mnist-serve: a worker could not serve the model (see above)" in log

    # At startup the same model is refused before any worker starts (by the self-test: 20 images at once).
    result = subprocess.run(
        server.process.args,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "mnist-serve: cannot start: self-test failed" in result.stderr


# --- bench/reload.py: reloads under load --------------------------------------------------------------


def test_reload_bench_short_fails_no_request_and_every_answer_comes_from_an_active_model(
    tmp_path: Path,
) -> None:
    """`python -m bench.reload --short`: c=8 mixed load, 3 reloads between two models and the 3 bad
    candidates; the timing and memory targets are left to the full run on a quiet machine."""
    result = measure(SHORT, tmp_path)
    assert not result.failed, result.failed[:3]
    assert not result.invalid, result.invalid[:3]
    assert result.reloads_as_expected == len(result.reloads) == SHORT.reloads + 3
    assert result.pids_before == result.pids_after  # no worker restarted
    kinds = Counter(sample.kind for sample in result.samples)
    assert len(kinds) == 4 and min(kinds.values()) >= 20, kinds
    served = {version for sample in result.samples for version in sample.versions}
    shipped = ModelRuntime(ROOT / "models" / "lenet5.onnx", "cpu").version
    assert served == {shipped, f"{shipped}-reload"}  # both models answered


def test_a_version_counts_only_while_its_model_was_active() -> None:
    """The validity rule of bench/reload.py: the old model until its reload call returned, the new one from
    when the call was made; a refused reload changes nothing."""
    reloads = [
        Reload("b", 200, 10.0, 11.0, 200, frozenset({"b"}), ""),
        Reload("bad", 400, 20.0, 21.0, 400, frozenset(), ""),
        Reload("a", 200, 30.0, 31.0, 200, frozenset({"a"}), ""),
    ]
    assert active_intervals("a", reloads) == [("a", -np.inf, 11.0), ("b", 10.0, 31.0), ("a", 30.0, np.inf)]

    def valid(version: str, sent: float, received: float) -> bool:
        return not invalid_samples("a", reloads, [Sample("json", sent, received, 200, frozenset({version}))])

    assert valid("a", 10.5, 10.6) and valid("b", 10.5, 10.6)  # during the first reload: either
    assert not valid("a", 12.0, 13.0) and valid("b", 12.0, 13.0)
    assert valid("b", 20.5, 25.0) and not valid("a", 20.5, 25.0)  # the refused reload changed nothing
    assert valid("a", 5.0, 12.0)  # started before the swap: finished on the old model
    assert not valid("c", 0.0, 40.0)
    multi = Sample("raw", 10.5, 10.6, 200, frozenset({"a", "b"}))  # one batch answer from two models
    assert invalid_samples("a", reloads, [multi]) == [multi]


# --- in process: the checks and the swap -----------------------------------------------------------------


def test_a_malformed_card_is_a_load_error(tmp_path: Path) -> None:
    path = build_model(tmp_path / "lenet5.onnx")
    path.with_suffix(".json").write_text('{"name": "lenet5", ')
    with pytest.raises(ModelLoadError, match=r"lenet5\.json is not readable JSON"):
        ModelRuntime(path, "cpu")
    path.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="must be a JSON object"):
        ModelRuntime(path, "cpu")


def test_a_card_describing_another_file_is_ignored(tmp_path: Path) -> None:
    path = build_model(tmp_path / "lenet5.onnx")
    card = {"name": NAME, "test_accuracy": 0.99, "onnx_sha256": "0" * 64}
    path.with_suffix(".json").write_text(json.dumps(card))
    runtime = ModelRuntime(path, "cpu")
    assert runtime.card == {} and runtime.describe()["test_accuracy"] == TEST_ACCURACY  # from the metadata
    path.with_suffix(".json").write_text(json.dumps({**card, "onnx_sha256": runtime.sha256}))
    assert ModelRuntime(path, "cpu").describe()["test_accuracy"] == 0.99


def test_without_self_test_metadata_the_shipped_references_are_used(tmp_path: Path) -> None:
    settings = Settings(
        model_path=build_model(tmp_path / "lenet5.onnx", self_test_labels="none"), workers=1, providers="cpu"
    )
    assert "self_test" not in ModelRuntime(settings.model_path, "cpu").metadata
    with pytest.raises(ModelLoadError, match=r"self-test failed: .* of 20 reference digits read right"):
        prepare(settings)  # random weights: the real digits are misread
    # The shipped model without its own references reads the shipped ones right.
    shipped = onnx.load(ROOT / "models" / "lenet5.onnx")
    kept = [prop for prop in shipped.metadata_props if prop.key != "self_test"]
    del shipped.metadata_props[:]
    shipped.metadata_props.extend(kept)
    onnx.save(shipped, tmp_path / "shipped.onnx")
    assert "self_test" not in ModelRuntime(tmp_path / "shipped.onnx", "cpu").metadata
    prepare(Settings(model_path=tmp_path / "shipped.onnx", workers=1, providers="cpu"))


def test_malformed_self_test_metadata_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="self_test metadata is malformed"):
        references({"self_test": '{"labels": [1], "images": "not base64!"}'})


def _off_main_thread(scenario: Callable[[], Any]) -> Any:
    """asyncio.run in a thread: ModelRepository installs its SIGHUP handler only in a worker's main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, scenario()).result(timeout=120)


def test_a_request_finishes_on_the_model_it_started_with(tmp_path: Path) -> None:
    path = build_model(tmp_path / "lenet5.onnx", version="1")
    settings = Settings(model_path=path, workers=1, providers="cpu")
    digits = references({})[0]

    async def scenario() -> None:
        models = ModelRepository(settings)
        await models.start(ModelRuntime(path, "cpu"))
        try:
            with models.lease() as first:
                build_model(tmp_path / "candidate.onnx", version="2", seed=3)
                os.replace(tmp_path / "candidate.onnx", path)
                outcome = await models.reload("test")
                assert (outcome["result"], models.get().version, first.version) == ("loaded", "2", "1")
                old = await first.classify(digits)  # admitted before the swap: still the old model
                new = await models.get().classify(digits)
                assert (old.version, new.version) == ("1", "2")
                assert not np.array_equal(old.probabilities, new.probabilities)
                await asyncio.sleep(0.2)
                assert hasattr(first.runtime, "session")  # not retired while leased
            for _ in range(50):  # released: retired, its session freed
                if not hasattr(first.runtime, "session"):
                    break
                await asyncio.sleep(0.05)
            assert not hasattr(first.runtime, "session")
            path.write_bytes(b"junk")
            outcome = await models.reload("test")
            assert (outcome["result"], models.get().version) == ("refused", "2")
            assert "cannot load" in outcome["error"] and models.status()["state"] == "READY"
        finally:
            await models.stop()

    _off_main_thread(scenario)


def _held_request(path: str, body: bytes, sent: asyncio.Event) -> tuple[dict, Callable[[], Any]]:
    """An ASGI POST whose body arrives only once `sent` is set: the route has admitted it by then."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict:
        await sent.wait()
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive


async def _call(app: Any, scope: dict, receive: Callable[[], Any]) -> tuple[int, dict]:
    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in messages))


FLAT = np.asarray(DIGIT).ravel().tolist()
ROUTES = {
    "/predict": (json.dumps({"pixels": DIGIT}), lambda answer: (answer["model"]["version"], answer)),
    f"/v2/models/{NAME}/infer": (
        json.dumps({"inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8", "data": FLAT}]}),
        lambda answer: (answer["model_version"], answer),
    ),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_reload_between_admission_and_inference_cannot_split_a_request(tmp_path: Path, route: str) -> None:
    """Admitted on model 1 (its body not yet in), then the served model becomes 2: the answer is model 1's,
    computed by model 1 (its probabilities, not model 2's), and names it."""
    from service.app import create_app

    path = build_model(tmp_path / "lenet5.onnx", version="1")
    app = create_app(Settings(model_path=path, workers=1, providers="cpu"))
    body, version_of = ROUTES[route]
    pixels = np.asarray(DIGIT, np.uint8)[None]

    def probabilities(model: Path) -> list[float]:
        return ModelRuntime(model, "cpu").run(pixels[:, None] / np.float32(255))["probabilities"][0].tolist()

    async def scenario() -> tuple[int, dict]:
        async with app.router.lifespan_context(app):
            models = app.state.models
            for _ in range(600):  # bounded: warm-up runs in the background
                if models.current is not None:
                    break
                await asyncio.sleep(0.05)
            sent = asyncio.Event()
            request = asyncio.create_task(_call(app, *_held_request(route, body.encode(), sent)))
            for _ in range(200):  # until the request holds its lease on model 1
                if models.current._leases:
                    break
                await asyncio.sleep(0.01)
            assert models.current._leases == 1
            build_model(tmp_path / "candidate.onnx", version="2", seed=3)
            os.replace(tmp_path / "candidate.onnx", path)
            assert (await models.reload("test"))["result"] == "loaded"
            assert models.get().version == "2"
            sent.set()
            return await asyncio.wait_for(request, 30)

    first = probabilities(path)
    status, answer = _off_main_thread(scenario)
    assert status == 200, answer
    version, answer = version_of(answer)
    assert version == "1"
    if route == "/predict":
        got = answer["probabilities"]
    else:
        got = next(output["data"] for output in answer["outputs"] if output["name"] == "probabilities")
    assert got == pytest.approx(first, abs=1e-6)
    assert got != pytest.approx(probabilities(path), abs=1e-3)  # model 2 reads it otherwise
