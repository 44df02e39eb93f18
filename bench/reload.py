"""Model reloads under load: no failed request, every answer from a model that was active, bounded latency
and memory.

    python -m bench.reload [--concurrency 32] [--reloads 10] [--baseline-s 10] [--gap-s 1.5]
    python -m bench.reload --short      # c=8, 3 reloads (+ the 3 bad candidates): what CI runs

Starts `python -m service` with 2 workers on 127.0.0.1 serving a copy of the shipped model, and keeps
`concurrency` clients (asyncio + httpx, keep-alive) sending a mix back to back: single JSON /predict,
a 28x28 PNG /predict, raw uint8 batches of 64 to /predict/batch (application/octet-stream) and KServe V2
JSON infer of 8 images (the shipped reference digits). After a baseline period it reloads through the
KServe V2 repository route, alternating the shipped model (1.0.0) and a copy with another metadata version;
after each reload it waits `gap-s` (the old model retires) and samples each worker's RSS for 1 s. Then it
tries a corrupt file, a model with a wrong input shape and one that fails its self-test (each must be
refused with 400 while the old version keeps serving). Load runs throughout; ~60 s by default.

Every request's send and receive time and the version(s) in its answer are recorded, and so is each
reload's start and end. A version is valid for a request if that model was active at some point between
send and receive: the old one until its reload call returned, the new one from the moment it was made.
Targets: 0 failed requests (any non-200, 503 included, or a transport error); every version valid (and one
version per batch answer); p99 latency of requests overlapping a reload <= 3 x p99 of the baseline (same
run); RSS of each worker process after the last reload within 10 % of after the first. Exit code 1 if a
target is missed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import orjson
from PIL import Image

from bench.core import SHIPPED_MODEL, Target, parser, print_targets, server, table
from service.loading import references
from tests.support.model import build_model
from tests.support.procfs import status, workers
from trainer.synth.paper import encode

NAME = "lenet5"
RAW_BATCH = 64
V2_BATCH = 8
P99_FACTOR = 3.0
RSS_GROWTH = 0.10


@dataclass(frozen=True)
class Plan:
    concurrency: int = 32
    reloads: int = 10
    baseline_s: float = 10.0
    gap_s: float = 1.5  # between reloads: load continues, the old model retires


SHORT = Plan(concurrency=8, reloads=3, baseline_s=2.0, gap_s=0.5)


@dataclass(frozen=True)
class Workload:
    path: str
    body: bytes
    content_type: str


@dataclass
class Sample:
    kind: str
    sent: float
    received: float
    status: int  # 0: transport error
    versions: frozenset[str] = frozenset()
    error: str = ""


@dataclass
class Reload:
    label: str
    expected: int  # 200 loaded or 400 refused
    started: float
    ended: float
    status: int
    versions: frozenset[str]  # what the workers serve afterwards, as the answer says
    detail: str


@dataclass
class Result:
    plan: Plan
    samples: list[Sample]
    reloads: list[Reload]
    initial_version: str
    rss_kib: dict[str, dict[int, int]]  # when -> worker pid -> VmRSS (median of a few samples)
    pids_before: list[int]
    pids_after: list[int]
    load_average: tuple[float, float]  # 1-min load before and after
    baseline_window: tuple[float, float]
    server_errors: list[str] = field(default_factory=list)  # the server log's warnings and errors

    @property
    def failed(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.status != 200]

    @property
    def invalid(self) -> list[Sample]:
        return invalid_samples(self.initial_version, self.reloads, self.samples)

    @property
    def reloads_as_expected(self) -> int:
        """Good candidates loaded on every worker (one version in the answer), bad ones refused."""
        return sum(r.status == r.expected and (r.status != 200 or len(r.versions) == 1) for r in self.reloads)

    def latencies(self, during_reloads: bool) -> np.ndarray:
        """Seconds per request: overlapping any reload call, or inside the baseline window."""
        if during_reloads:
            chosen = [
                s
                for s in self.samples
                if any(s.sent <= r.ended and s.received >= r.started for r in self.reloads)
            ]
        else:
            start, end = self.baseline_window
            chosen = [s for s in self.samples if s.sent >= start and s.received <= end]
        return np.array([s.received - s.sent for s in chosen if s.status == 200])


def workloads() -> dict[str, Workload]:
    """The four request kinds, from the shipped reference digits (real MNIST digits, uint8 [20, 28, 28])."""
    digits, _ = references({})
    png = encode(Image.fromarray(255 - digits[1]), "PNG")  # dark ink on light paper, as a scan
    raw = np.resize(digits, (RAW_BATCH, 28, 28))
    v2 = {
        "inputs": [
            {
                "name": "image",
                "shape": [V2_BATCH, 784],
                "datatype": "UINT8",
                "data": digits[:V2_BATCH].ravel().tolist(),
            }
        ]
    }
    return {
        "json": Workload("/predict", orjson.dumps({"pixels": digits[0].tolist()}), "application/json"),
        "png": Workload("/predict", png, "image/png"),
        f"raw x{RAW_BATCH}": Workload("/predict/batch", raw.tobytes(), "application/octet-stream"),
        f"v2 x{V2_BATCH}": Workload(f"/v2/models/{NAME}/infer", orjson.dumps(v2), "application/json"),
    }


def versions_in(kind: str, body: dict[str, Any]) -> frozenset[str]:
    """The model version(s) an answer says computed it."""
    if kind.startswith("v2"):
        return frozenset([body["model_version"]])
    return frozenset(p["model"]["version"] for p in body.get("predictions", [body]))


def candidates(folder: Path) -> dict[str, Path]:
    """Two good models with different versions, and the three a reload must refuse."""
    other = onnx.load(SHIPPED_MODEL)
    for prop in other.metadata_props:
        if prop.key == "version":
            prop.value += "-reload"
    onnx.save(other, folder / "other.onnx")
    (folder / "corrupt.onnx").write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    return {
        "shipped": shutil.copyfile(SHIPPED_MODEL, folder / "shipped.onnx"),
        "other version": folder / "other.onnx",
        "corrupt file": folder / "corrupt.onnx",
        "wrong input shape": build_model(folder / "wide.onnx", side=32),
        "fails its self-test": build_model(folder / "wrong.onnx", self_test_labels="wrong"),
    }


def install(source: Path, target: Path) -> None:
    """Replace the served file atomically, as a deployment should."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def rss_kib(pid: int) -> int:
    """VmRSS of a live process; 0 for one that has gone (the no-restart target reports it)."""
    try:
        return status(pid).get("VmRSS", 0) // 1024
    except FileNotFoundError:
        return 0


async def settled_rss(pids: list[int], samples: int = 5, interval_s: float = 0.2) -> dict[int, int]:
    """Each worker's RSS (KiB), the median of a few samples: requests in flight move it by several MiB."""
    seen: dict[int, list[int]] = {pid: [] for pid in pids}
    for _ in range(samples):
        for pid in pids:
            seen[pid].append(rss_kib(pid))
        await asyncio.sleep(interval_s)
    return {pid: int(np.median(values)) for pid, values in seen.items()}


async def client_loop(
    client: httpx.AsyncClient, kinds: dict[str, Workload], offset: int, stop: asyncio.Event, out: list[Sample]
) -> None:
    """One closed-loop client: the next kind as soon as the last answer arrived."""
    names = list(kinds)
    for n in itertools.count(offset):
        if stop.is_set():
            return
        kind = names[n % len(names)]
        work = kinds[kind]
        sent = time.perf_counter()
        try:
            response = await client.post(
                work.path, content=work.body, headers={"Content-Type": work.content_type}
            )
        except httpx.HTTPError as exc:
            out.append(Sample(kind, sent, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}"))
            continue
        received = time.perf_counter()
        if response.status_code != 200:
            out.append(Sample(kind, sent, received, response.status_code, error=response.text[:200]))
            continue
        out.append(Sample(kind, sent, received, 200, versions_in(kind, response.json())))


async def reload(admin: httpx.AsyncClient, label: str, expected: int) -> Reload:
    started = time.perf_counter()
    try:
        response = await admin.post(f"/v2/repository/models/{NAME}/load")
    except httpx.HTTPError as exc:  # counted as not as expected; the run goes on to report it
        return Reload(label, expected, started, time.perf_counter(), 0, frozenset(), repr(exc))
    ended = time.perf_counter()
    body = response.json()
    if response.status_code == 200:
        versions = frozenset(worker["version"] for worker in body["workers"])
        detail = ", ".join(f"{worker['pid']}: {worker['result']}" for worker in body["workers"])
    else:
        versions, detail = frozenset(), body.get("error", response.text)
    return Reload(label, expected, started, ended, response.status_code, versions, detail)


async def drive(
    url: str, served: Path, models: dict[str, Path], plan: Plan, key: str, server_pid: int
) -> Result:
    kinds = workloads()
    samples: list[Sample] = []
    reloads: list[Reload] = []
    rss: dict[str, dict[int, int]] = {}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    timeout = httpx.Timeout(30.0)
    load_before = os.getloadavg()[0]
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120.0) as admin,
    ):
        initial = (await client.get(f"/v1/models/{NAME}")).json()["version"]
        pids_before = workers(server_pid)
        clients = [
            asyncio.create_task(client_loop(client, kinds, i, stop, samples)) for i in range(plan.concurrency)
        ]
        await asyncio.sleep(min(1.0, plan.baseline_s / 4))  # connections open, caches warm
        baseline_start = time.perf_counter()
        rss["baseline"] = await settled_rss(pids_before)
        await asyncio.sleep(max(0.0, plan.baseline_s - (time.perf_counter() - baseline_start)))
        baseline_end = time.perf_counter()
        good = ["other version", "shipped"]
        for i in range(plan.reloads):
            label = good[i % 2]
            install(models[label], served)
            reloads.append(await reload(admin, label, 200))
            await asyncio.sleep(plan.gap_s)  # the old model retires meanwhile
            rss[f"after reload {i + 1}"] = await settled_rss(pids_before)
        for label in ("corrupt file", "wrong input shape", "fails its self-test"):
            install(models[label], served)
            reloads.append(await reload(admin, label, 400))
            await asyncio.sleep(plan.gap_s)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
        pids_after = workers(server_pid)
    return Result(
        plan,
        samples,
        reloads,
        initial,
        rss,
        pids_before,
        pids_after,
        (load_before, os.getloadavg()[0]),
        (baseline_start, baseline_end),
    )


def active_intervals(initial: str, reloads: list[Reload]) -> list[tuple[str, float, float]]:
    """(version, from, to): an old model may answer until its reload call returned, the new one from the
    moment the call was made. A refused reload changes nothing."""
    intervals = []
    serving = {initial: -np.inf}  # version -> active since
    for r in reloads:
        if r.status != 200:
            continue
        intervals += [(version, since, r.ended) for version, since in serving.items()]
        serving = dict.fromkeys(r.versions, r.started)
    return intervals + [(version, since, np.inf) for version, since in serving.items()]


def invalid_samples(initial: str, reloads: list[Reload], samples: list[Sample]) -> list[Sample]:
    """Answers with more than one version, or a version not active at any point while the request ran."""
    intervals = active_intervals(initial, reloads)
    bad = []
    for sample in samples:
        if sample.status != 200:
            continue
        if len(sample.versions) != 1:
            bad.append(sample)
            continue
        (version,) = sample.versions
        if not any(
            v == version and start <= sample.received and end >= sample.sent for v, start, end in intervals
        ):
            bad.append(sample)
    return bad


def measure(plan: Plan, folder: Path) -> Result:
    """Build the candidates, start a 2-worker server on a copy of the shipped model, drive it."""
    models = candidates(folder)
    served = folder / "serving" / "lenet5.onnx"
    served.parent.mkdir()
    install(models["shipped"], served)
    key = secrets.token_urlsafe(16)
    env = {"MNIST_MODEL_PATH": str(served), "MNIST_ADMIN_KEY": key}
    with server(folder=folder, workers=2, env=env) as live:
        result = asyncio.run(drive(live.url, served, models, plan, key, live.process.pid))
    result.server_errors = [
        line
        for line in live.log.read_text(errors="replace").splitlines()
        if any(mark in line for mark in ("ERROR", "CRITICAL", "WARNING", "Traceback", "died"))
        and "refused, still serving" not in line  # the bad candidates, as intended
        and "onnxruntime" not in line  # its CUDA provider failing to load on a machine without a GPU
    ]
    return result


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def report(result: Result) -> bool:
    """Print the reloads and the target table; True if every target is met."""
    plan = result.plan
    print(
        f"{plan.concurrency} clients, 2 workers, baseline {plan.baseline_s:g} s, "
        f"{plan.reloads} reloads {plan.gap_s:g} s apart, then the 3 bad candidates; "
        f"load average (1 min) before {result.load_average[0]:.2f}, after {result.load_average[1]:.2f}"
    )
    print()
    rows = []
    for n, r in enumerate(result.reloads, 1):
        what = ", ".join(sorted(r.versions)) + f" ({r.detail})" if r.status == 200 else r.detail
        when = f"{r.started - result.baseline_window[0]:+.1f} s"
        rows.append([n, r.label, when, r.status, f"{r.ended - r.started:.2f} s", what])
    table(["#", "candidate", "at", "status", "took", "workers now serve / reason"], rows, "llrlrl")
    print()
    kinds = Counter(s.kind for s in result.samples)
    print("requests: " + ", ".join(f"{kind} {count}" for kind, count in kinds.items()))
    start = result.baseline_window[0]
    for sample in result.failed[:10]:
        during = any(sample.sent <= r.ended and sample.received >= r.started for r in result.reloads)
        print(
            f"  failed: {sample.kind} sent at {sample.sent - start:+.2f} s, took "
            f"{sample.received - sample.sent:.2f} s{' (during a reload)' if during else ''}, "
            f"status {sample.status}: {sample.error}"
        )
    for line in result.server_errors[:10]:
        print(f"  server log: {line}")
    for sample in result.invalid[:5]:
        span = f"{sample.sent:.3f}..{sample.received:.3f}"
        print(f"  invalid: {sample.kind} versions {sorted(sample.versions)} at {span}")
    print()
    met = print_targets(targets(result))
    baseline, during = result.latencies(False), result.latencies(True)
    print()
    print(
        f"p50 baseline {percentile(baseline, 50):.1f} ms, during reloads {percentile(during, 50):.1f} ms; "
        "worker RSS before any reload: "
        + ", ".join(f"{kib / 1024:.0f} MiB" for kib in result.rss_kib["baseline"].values())
    )
    for pid in result.pids_before:
        series = [kib[pid] / 1024 for when, kib in result.rss_kib.items() if when.startswith("after reload")]
        print(f"worker {pid} RSS after each reload (MiB): " + " ".join(f"{mib:.0f}" for mib in series))
    return met


def targets(result: Result) -> list[Target]:
    baseline, during = result.latencies(False), result.latencies(True)
    p99_base, p99_during = percentile(baseline, 99), percentile(during, 99)
    first, last = result.rss_kib["after reload 1"], result.rss_kib[f"after reload {result.plan.reloads}"]
    growth = max(last[pid] / first[pid] - 1 if first[pid] else np.inf for pid in first)
    expected = result.reloads_as_expected
    return [
        Target("0 failed requests", f"{len(result.failed)} of {len(result.samples)}", not result.failed),
        Target(
            "every version active while its request ran", f"{len(result.invalid)} invalid", not result.invalid
        ),
        Target(
            "good candidates loaded on both workers, bad ones refused",
            f"{expected} of {len(result.reloads)}",
            expected == len(result.reloads),
        ),
        Target(
            f"p99 during reloads <= {P99_FACTOR:g} x p99 without",
            f"{p99_during:.0f} ms ({len(during)} requests) vs {p99_base:.0f} ms ({len(baseline)}): "
            f"{p99_during / p99_base:.2f} x",
            p99_during <= P99_FACTOR * p99_base,
        ),
        Target(
            f"worker RSS after {result.plan.reloads} reloads within {RSS_GROWTH:.0%} of after the first",
            ", ".join(f"{first[pid] / 1024:.0f} -> {last[pid] / 1024:.0f} MiB" for pid in first)
            + f" (worst {growth:+.1%})",
            growth <= RSS_GROWTH,
        ),
        Target(
            "no worker restarted",
            f"pids {result.pids_before} -> {result.pids_after}",
            result.pids_before == result.pids_after,
        ),
    ]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--short", action="store_true", help="c=8, 3 reloads, 2 s baseline (CI)")
    options.add_argument("--concurrency", type=int, default=Plan.concurrency)
    options.add_argument("--reloads", type=int, default=Plan.reloads)
    options.add_argument("--baseline-s", type=float, default=Plan.baseline_s)
    options.add_argument("--gap-s", type=float, default=Plan.gap_s)
    args = options.parse_args()
    plan = SHORT if args.short else Plan(args.concurrency, args.reloads, args.baseline_s, args.gap_s)
    if plan.reloads < 1:
        options.error("--reloads must be at least 1")
    with tempfile.TemporaryDirectory(prefix="reload-bench-") as tmp:
        result = measure(plan, Path(tmp))
    sys.exit(0 if report(result) else 1)


if __name__ == "__main__":
    main()
