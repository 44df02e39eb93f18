"""The readiness targets, against real 2-worker servers (the shipped model, default settings): no 503 "model
is loading" from a server that says it is ready, and a quiet CPU start; one table.

    python -m bench.readiness [--starts 10] [--hogs 2] [--window 1.5] [--kills 3] [--clients 32]

1. --starts starts while --hogs processes spin on the CPU (a busy machine): from each start's first
   GET /readyz 200, --clients clients post single JSON digits for --window seconds, every request on a new
   connection (placed anew among the listening workers) and none retried; every 503 "model is loading" is
   counted. Each start's log is read too: how many lines mention CUDA (on a host without a usable GPU).
2. --kills times, a fresh server under --clients clients, half as above and half through mnist_client
   (keep-alive, its retries): one worker SIGKILLed, traffic until its replacement has logged ready and
   1.5 s after. Counted: 503s "loading" (by the clients and by the server's mnist_errors_total), the raw
   clients' transport errors (allowed: the killed worker's in-flight requests, at the kill), mnist_client
   calls that failed anyway, and whether the replacement listened before its ready line (/proc).

A few minutes with the defaults. A short check: python -m bench.readiness --starts 1 --kills 1 --clients 8
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.core import MachineLoad, Target, parser, print_targets
from service import gpu
from tests.support.liveserver import metric_sum, run_server, start_server, stop
from tests.support.readiness import Replacement, after_first_ready, replace_killed_worker

MAX_CUDA_LINES = 3
KILL_SLACK_S = 2.0  # a transport error this long after the kill still counts as one at the kill


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """`count` processes that spin on the CPU for the length of the block."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def starts(folder: Path, count: int, hogs: int, clients: int, window_s: float) -> list[Target]:
    statuses: Counter[int] = Counter()
    loading, errors, cuda_lines = 0, 0, []
    with cpu_hogs(hogs):
        for index in range(count):
            server = start_server(folder / f"start-{index}.log", workers=2)
            try:
                seen = asyncio.run(after_first_ready(server.url, clients, window_s))
            finally:
                stop(server.process)
            statuses += seen.statuses
            loading += seen.loading
            errors += len(seen.errors)
            lines = server.log.read_text(errors="replace").splitlines()
            cuda_lines.append(sum("cuda" in line.lower() for line in lines))
    answers = sum(statuses.values())
    others = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()) if status != 200)
    targets = [
        Target(
            f"0 answers 503 'loading' in the {window_s:g} s after the first /readyz 200, over {count} starts "
            f"with {hogs} CPU hogs, {clients} clients",
            f"{loading} of {answers:,} answers (other than 200: {others or 'none'}; "
            f"{errors} transport errors)",
            loading == 0,
        )
    ]
    problem = gpu.problem()
    targets.append(
        Target(
            f"a CPU-only start of 2 workers prints at most {MAX_CUDA_LINES} lines that mention CUDA",
            "not measured: the driver sees a GPU here"
            if problem is None
            else f"{max(cuda_lines)} at most over {count} starts ({problem})",
            problem is None or max(cuda_lines) <= MAX_CUDA_LINES,
        )
    )
    return targets


def kills(folder: Path, count: int, clients: int) -> list[Target]:
    runs: list[Replacement] = []
    not_ready = 0.0
    for _ in range(count):
        with run_server(folder, workers=2) as server:
            runs.append(asyncio.run(replace_killed_worker(server, clients)))
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            not_ready += metric_sum(text, "mnist_errors_total", reason="not_ready")
    loading = sum(run.seen.loading for run in runs)
    answers = sum(run.seen.answers for run in runs)
    errors = [at - run.killed_at for run in runs for at, _ in run.seen.errors]
    per_kill = max(len(run.seen.errors) for run in runs)
    at_kill = all(0 <= delay < KILL_SLACK_S for delay in errors) and per_kill <= clients // 2
    calls = sum(run.library_calls for run in runs)
    failures = sum(len(run.library_failures) for run in runs)
    early = sum(run.listened_early for run in runs)
    ready = ", ".join(f"{run.ready_s:.1f}" for run in runs)
    return [
        Target(
            f"0 answers 503 'loading' while a SIGKILLed worker is replaced "
            f"({count} kills, {clients} clients)",
            f"{loading} of {answers:,} raw answers; the server counted {not_ready:g} not_ready refusals",
            loading == 0 and not_ready == 0,
        ),
        Target(
            "only the killed worker's in-flight requests fail at the transport level; "
            "mnist_client retries them",
            f"{len(errors)} raw transport errors (at most {per_kill} a kill, all within "
            f"{KILL_SLACK_S:g} s of it: {'yes' if at_kill else 'no'}); "
            f"{failures} of {calls:,} mnist_client calls failed",
            at_kill and failures == 0,
        ),
        Target(
            "the replacement takes no connection before it is warm",
            f"listened before its ready line in {early} of {count} kills (ready {ready} s after the kill)",
            early == 0 and all(run.listened_after for run in runs),
        ),
    ]


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--starts", type=int, default=10)
    options.add_argument("--hogs", type=int, default=2, help="CPU-spinning processes during the starts")
    options.add_argument("--window", type=float, default=1.5, help="seconds of traffic after /readyz 200")
    options.add_argument("--kills", type=int, default=3)
    options.add_argument("--clients", type=int, default=32)
    args = options.parse_args()
    load = MachineLoad()
    with tempfile.TemporaryDirectory(prefix="bench-readiness-") as tmp:
        targets = starts(Path(tmp), args.starts, args.hogs, args.clients, args.window)
        targets += kills(Path(tmp), args.kills, args.clients)
    print(load.report() + "\n")
    sys.exit(0 if print_targets(targets) else 1)


if __name__ == "__main__":
    main()
