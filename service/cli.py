"""`mnist-serve` / `python -m service`: uvicorn workers around the app factory."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from service import fleet
from service.runtime import ModelLoadError
from service.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# uvicorn closes a keep-alive connection idle for 5 s: a client or proxy reusing it at that moment gets a
# reset instead of an answer. Keep it longer than the idle timeout of common load balancers (60 s).
KEEP_ALIVE_S = 65
# uvicorn's supervisor kills a worker that does not answer its ping within 5 s; a worker starved of CPU
# (a 2-core host at load 10, bench/reload.py) was killed with requests in flight. gunicorn waits 30 s.
WORKER_HEALTHCHECK_S = 30


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


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP reloads the model in every worker (service/fleet.py)
    instead of restarting them: a restart would fail the requests in flight.

    SIGHUP stays blocked in this process (main() blocks it), so every worker it spawns starts with it
    blocked too: a SIGHUP relayed while a worker boots waits until the worker can reload instead of killing
    it (the default action). Here it is taken from the pending set each turn of the supervisor's loop."""

    def handle_signals(self) -> None:
        if signal.sigtimedwait([signal.SIGHUP], 0) is not None:
            self.handle_hup()
        super().handle_signals()

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def keep_subprocess_alive(self) -> None:
        """uvicorn replaces a worker that died or hung; the replaced one's live gauges (the model it served
        in mnist_model_info, requests in flight, queue depth) must stop counting, or a crashed worker's
        model would read 1 for good. Imported here, once PROMETHEUS_MULTIPROC_DIR is set (_check_model)."""
        from prometheus_client import multiprocess

        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                multiprocess.mark_process_dead(pid)

    @property
    def startup_failed(self) -> bool:
        """A worker exited with uvicorn's startup-failure code (it logged why), which stopped the supervisor;
        without this the server would exit 0 as after a clean shutdown."""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


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
    for name, field in Settings.model_fields.items():
        default = "number of cores" if field.default_factory else field.default
        lines.append(f"  MNIST_{name.upper():<20} {field.description or name} [{default}]")
    return "\n".join(lines)


def _check_model(settings: Settings) -> None:
    """Fail once, clearly, before any worker starts (e.g. MNIST_PROVIDERS=cuda without a working GPU, or a
    model that fails its self-test). Imported here: the metrics module must find PROMETHEUS_MULTIPROC_DIR
    set when it first loads prometheus_client, or this process would count in a registry nobody reads."""
    from service.model import prepare

    try:
        prepare(settings)
    except ModelLoadError as exc:
        sys.exit(f"mnist-serve: cannot start: {exc}")


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
    # Until a process can reload, SIGHUP waits (pending) instead of ending it: see _Supervisor and
    # ModelRepository.start, which unblocks it in each worker once the model serves.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    # Workers build their own Settings from the environment: pass the resolved worker count on.
    os.environ["MNIST_WORKERS"] = str(args.workers)
    settings = _settings()
    path, owned = _metrics_dir()
    os.environ[MULTIPROC_ENV] = str(path)
    status_dir = Path(tempfile.mkdtemp(prefix="mnist-workers-"))
    os.environ[fleet.STATUS_DIR_ENV] = str(status_dir)
    # uvicorn re-raises SIGTERM after a graceful shutdown; exit normally so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    try:
        _check_model(settings)
        print(
            f"mnist-serve: {args.workers} worker(s) x {settings.threads_per_worker} onnxruntime thread(s), "
            f"metrics in {path}",
            file=sys.stderr,
            flush=True,
        )
        if args.workers == 1:
            uvicorn.Server(config).run()
        else:
            try:
                listener = _bind(args.host, args.port, exclusive=True)
            except OSError as exc:
                sys.exit(f"mnist-serve: cannot listen on {args.host}:{args.port}: {exc}")
            os.environ[fleet.SUPERVISOR_ENV] = str(os.getpid())
            supervisor = _Supervisor(config, sockets=[listener])
            supervisor.run()
            if supervisor.startup_failed:
                print("mnist-serve: a worker could not serve the model (see above)", file=sys.stderr)
                sys.exit(STARTUP_FAILURE)
    except KeyboardInterrupt:  # Ctrl-C after the graceful shutdown, quiet as in uvicorn.run
        pass
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
        if owned:
            shutil.rmtree(path, ignore_errors=True)
