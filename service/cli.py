"""`mnist-serve` / `python -m service`: uvicorn workers around the app factory."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from service.runtime import ModelLoadError, ModelRuntime
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_dir() -> tuple[Path, bool]:
    """prometheus-client's shared directory for worker metrics: emptied before use; ours is removed after."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    return Path(tempfile.mkdtemp(prefix="mnist-metrics-")), True


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        sys.exit(f"mnist-serve: invalid settings (MNIST_* environment): {exc}")


def _environment_help() -> str:
    """The settings, from their one definition in service/settings.py."""
    lines = ["environment (every setting):"]
    for name, field in Settings.model_fields.items():
        default = "number of cores" if field.default_factory else field.default
        lines.append(f"  MNIST_{name.upper():<20} {field.description or name} [{default}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
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
        "--workers",
        type=int,
        default=defaults.workers,
        help="worker processes (default: MNIST_WORKERS or the number of cores)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    # Workers build their own Settings from the environment: pass the resolved worker count on.
    os.environ["MNIST_WORKERS"] = str(args.workers)
    settings = _settings()
    try:  # fail once, clearly, before any worker starts (e.g. MNIST_PROVIDERS=cuda without a working GPU)
        ModelRuntime(settings.model_path, settings.providers, settings.threads_per_worker)
    except ModelLoadError as exc:
        sys.exit(f"mnist-serve: cannot start: {exc}")
    path, owned = _metrics_dir()
    os.environ[MULTIPROC_ENV] = str(path)
    print(
        f"mnist-serve: {args.workers} worker(s) x {settings.threads_per_worker} onnxruntime thread(s), "
        f"metrics in {path}",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn re-raises SIGTERM after a graceful shutdown; exit normally so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        if owned:
            shutil.rmtree(path, ignore_errors=True)
