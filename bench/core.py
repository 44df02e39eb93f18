"""What every benchmark script shares: the command line, a real server in a temporary folder, the CPU time a
server's process tree spends on a piece of work, the machine's load, and markdown tables (targets too)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.support.liveserver import ROOT, LiveServer, run_server
from tests.support.procfs import cpu_seconds

SHIPPED_MODEL = ROOT / "models" / "lenet5.onnx"
T = TypeVar("T")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's command line; --help prints its module docstring as written, and usage names the module
    as it is run (`python -m bench.NAME`)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return argparse.ArgumentParser(
        prog=f"python -m {spec.name}" if spec else None,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


@contextmanager
def server(
    *, workers: int = 1, env: dict[str, str] | None = None, folder: Path | None = None, cwd: Path = ROOT
) -> Iterator[LiveServer]:
    """A real `python -m service` on 127.0.0.1, every worker warmed up; stopped afterwards. Its log goes to
    `folder` (kept: for a caller that reads it afterwards), else to a temporary folder. `cwd`: the checkout
    whose service runs (`checkout`)."""
    if folder is not None:
        with run_server(folder, workers=workers, env=env, cwd=cwd) as live:
            yield live
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        run_server(Path(tmp), workers=workers, env=env, cwd=cwd) as live,
    ):
        yield live


@contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """The service as it was at a git revision, in a temporary folder (for a server to run from it)."""
    with tempfile.TemporaryDirectory(prefix="bench-checkout-") as folder:
        archive = subprocess.run(
            ["git", "archive", revision, "service"], cwd=ROOT, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def with_cpu(pid: int, work: Callable[[], T]) -> tuple[T, float]:
    """`work()`'s result and the CPU seconds (user + system) that the process tree of `pid` spent meanwhile:
    per request far less disturbed by other load on the machine than throughput."""
    before = cpu_seconds(pid)
    result = work()
    return result, cpu_seconds(pid) - before


class MachineLoad:
    """The machine's load average when a run started and when it is reported: printed beside wall-time
    figures, which other jobs on shared cores disturb."""

    def __init__(self) -> None:
        self.before = os.getloadavg()

    def report(self) -> str:
        before, after = (" ".join(f"{v:.2f}" for v in load) for load in (self.before, os.getloadavg()))
        return f"{os.cpu_count()} CPUs; load average (1/5/15 min) before {before}, after {after}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> None:
    """Print a markdown table; `align` has one letter per column, "l" or "r" (missing: left)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if align[i : i + 1] == "r" else "---" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)


@dataclass(frozen=True)
class Target:
    """One target of a benchmark, what was measured against it, and whether it was met."""

    target: str
    measured: str
    passed: bool


def print_targets(targets: Sequence[Target]) -> bool:
    """Print the targets as a table; True if every one was met (the script's exit code says so)."""
    table(
        ["target", "measured", "pass"],
        [(t.target, t.measured, "yes" if t.passed else "**no**") for t in targets],
    )
    return all(t.passed for t in targets)
