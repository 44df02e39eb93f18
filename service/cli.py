"""`mnist-serve` / `python -m service`: uvicorn workers around the app factory."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from service import fleet, logs
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("service.cli")


def main(argv: list[str] | None = None) -> None:
    """Check the model once, then run the workers until SIGTERM or Ctrl-C."""
    # Until a process can reload, SIGHUP waits (pending) instead of ending it: see service/supervisor.py and
    # ModelRepository.start, which unblocks it in each worker once the model serves. Blocked before any
    # thread exists (this module imports nothing that starts one; numpy and onnxruntime start threads at
    # import): a thread that did not block it would take SIGHUP's default action and end the server.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    args = _arguments(argv)
    if args.settings_table:
        print(settings_table())
        return
    os.environ["MNIST_WORKERS"] = str(args.workers)  # workers build their own Settings from the environment
    os.environ[fleet.HOST_ENV] = args.host  # gRPC listens where HTTP does
    settings = _settings()
    logs.configure(settings.log_format, settings.log_level)
    # uvicorn re-raises SIGTERM after a graceful shutdown; exit normally so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _shared_folders() as metrics_dir, contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: quiet
        _check_model(settings)
        log.info(
            "mnist-serve: %d worker(s) x %d onnxruntime thread(s), metrics in %s",
            args.workers,
            settings.threads_per_worker,
            metrics_dir,
            extra={"event": "startup", "workers": args.workers, "threads": settings.threads_per_worker},
        )
        # Imported only now: it imports prometheus_client, which picks its value storage (files shared by
        # the workers, or process memory) once, at import, from PROMETHEUS_MULTIPROC_DIR.
        from service.supervisor import serve

        serve(settings, args.host, args.port, args.workers, _stop)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = _settings()
    parser = argparse.ArgumentParser(
        prog="mnist-serve",
        description=__doc__,
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--settings-table", action="store_true", help="print every setting as a markdown table and exit"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="worker processes (default: MNIST_WORKERS or the number of cores)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


@contextlib.contextmanager
def _shared_folders() -> Iterator[Path]:
    """What the workers share with this process, for its lifetime: prometheus-client's metrics folder
    (emptied before use; ours is removed after) and the folder where each publishes what it serves."""
    given = os.environ.get(MULTIPROC_ENV)
    metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="mnist-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    status_dir = Path(tempfile.mkdtemp(prefix="mnist-workers-"))
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    os.environ[fleet.STATUS_DIR_ENV] = str(status_dir)
    try:
        yield metrics_dir
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        sys.exit(f"mnist-serve: invalid settings (MNIST_* environment): {exc}")


def _environment_help() -> str:
    """The settings, from their one definition in service/settings.py."""
    lines = ["environment (every setting):"]
    for variable, default, meaning in Settings.reference():
        lines.append(f"  {variable:<26} {meaning} [{default}]")
    return "\n".join(lines)


def settings_table() -> str:
    """The README's configuration table (tests/system/test_readme.py checks they are equal)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [
        f"| `{variable}` | `{default}` | {meaning} |" for variable, default, meaning in Settings.reference()
    ]
    return "\n".join(lines)


def _check_model(settings: Settings) -> None:
    """Fail once, clearly, before any worker starts (e.g. MNIST_PROVIDERS=cuda without a working GPU, or a
    model that fails its self-test). The warm-up is the workers' (this process serves nothing); one that
    fails there stops the server too. Imported here: the metrics module must find PROMETHEUS_MULTIPROC_DIR
    set when it first loads prometheus_client, or this process would count in a registry nobody reads."""
    from service.loading import load, self_test
    from service.runtime import ModelLoadError

    try:
        self_test(load(settings))
    except ModelLoadError as exc:
        _stop(f"mnist-serve: cannot start: {exc}")


def _stop(message: str, code: int = 1) -> NoReturn:
    """Exit with the reason, in the configured log format."""
    log.critical(message, extra={"event": "startup_failed"})
    sys.exit(code)
