"""`mnist-serve` / `python -m service`: uvicorn workers around the app factory."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE

from service import fleet, logs
from service.runtime import ModelLoadError
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# uvicorn's supervisor kills a worker that does not answer its ping within 5 s; a worker starved of CPU
# (a 2-core host at load 10, bench/reload.py) was killed with requests in flight. gunicorn waits 30 s.
WORKER_HEALTHCHECK_S = 30

log = logging.getLogger("service.cli")


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


class _WorkerListener(socket.socket):
    """The listening address; every worker process uvicorn (re)starts binds its own copy with SO_REUSEPORT.

    With one shared listening socket, whichever worker is awake accepts a whole burst of connections
    (libuv accepts until the queue is empty): 32 keep-alive clients all landed on one of two workers, and
    the other idled. One socket per worker lets the kernel spread connections by address hash. uvicorn
    hands each worker a pickled copy of its sockets; unpickling this one binds a fresh socket.
    """

    def __reduce__(self) -> tuple:
        return _bind, self.getsockname()[:2]


def _bind(host: str, port: int, *, exclusive: bool = False) -> _WorkerListener:
    """A socket on host:port in the SO_REUSEPORT group. `exclusive` binds before joining, so it fails if
    anything (even an older copy of this server) already listens there."""
    sock = _WorkerListener(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not exclusive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


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
    from service.model import load, self_test

    try:
        self_test(load(settings))
    except ModelLoadError as exc:
        _stop(f"mnist-serve: cannot start: {exc}")


def _stop(message: str) -> NoReturn:
    """Exit 1 with the reason, in the configured log format."""
    log.critical(message, extra={"event": "startup_failed"})
    sys.exit(1)


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
        "--settings-table", action="store_true", help="print every setting as a markdown table and exit"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="worker processes (default: MNIST_WORKERS or the number of cores)",
    )
    args = parser.parse_args(argv)
    if args.settings_table:
        print(settings_table())
        return
    # Until a process can reload, SIGHUP waits (pending) instead of ending it: see Supervisor and
    # ModelRepository.start, which unblocks it in each worker once the model serves.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    # Workers build their own Settings from the environment: pass the resolved worker count on.
    os.environ["MNIST_WORKERS"] = str(args.workers)
    settings = _settings()
    logs.configure(settings.log_format, settings.log_level)
    path, owned = _metrics_dir()
    os.environ[MULTIPROC_ENV] = str(path)
    status_dir = Path(tempfile.mkdtemp(prefix="mnist-workers-"))
    os.environ[fleet.STATUS_DIR_ENV] = str(status_dir)
    # Imported only now: they import prometheus_client, which picks its value storage (files shared by the
    # workers, or process memory) once, at import, from PROMETHEUS_MULTIPROC_DIR.
    from service.http_limits import uvicorn_options
    from service.supervisor import Supervisor

    # uvicorn re-raises SIGTERM after a graceful shutdown; exit normally so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        log_config=logs.uvicorn_config(settings.log_format, settings.log_level),
        access_log=False,  # service/app.py's Observe writes one record per request in JSON format
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **uvicorn_options(settings),
    )
    try:
        _check_model(settings)
        log.info(
            "mnist-serve: %d worker(s) x %d onnxruntime thread(s), metrics in %s",
            args.workers,
            settings.threads_per_worker,
            path,
            extra={"event": "startup", "workers": args.workers, "threads": settings.threads_per_worker},
        )
        if args.workers == 1:
            uvicorn.Server(config).run()
        else:
            try:
                listener = _bind(args.host, args.port, exclusive=True)
            except OSError as exc:
                _stop(f"mnist-serve: cannot listen on {args.host}:{args.port}: {exc}")
            os.environ[fleet.SUPERVISOR_ENV] = str(os.getpid())
            supervisor = Supervisor(config, sockets=[listener])
            supervisor.run()
            if supervisor.startup_failed:
                log.critical("mnist-serve: a worker could not serve the model (see above)")
                sys.exit(STARTUP_FAILURE)
    except KeyboardInterrupt:  # Ctrl-C after the graceful shutdown, quiet as in uvicorn.run
        pass
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
        if owned:
            shutil.rmtree(path, ignore_errors=True)
