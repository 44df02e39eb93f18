"""The process that starts the worker processes, restarts dead ones, and keeps /metrics right after; the
listening sockets its workers share."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import NoReturn

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess

from service import fleet, logs
from service.http_limits import uvicorn_options
from service.settings import Settings


def serve(settings: Settings, host: str, port: int, workers: int, stop: Callable[..., NoReturn]) -> None:
    """uvicorn on host:port until a graceful shutdown: in this process for one worker, else `workers`
    processes under the Supervisor. `stop(message, code)` ends the server with a reason."""
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        log_config=logs.uvicorn_config(settings.log_format, settings.log_level),
        access_log=False,  # service/middleware.py's Observe writes one record per request in JSON format
        timeout_worker_healthcheck=settings.worker_healthcheck_s,
        **uvicorn_options(settings),
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    try:
        listener = _bind(host, port, exclusive=True)
    except OSError as exc:
        stop(f"mnist-serve: cannot listen on {host}:{port}: {exc}")
    # The workers' gRPC servers join this port's SO_REUSEPORT group; held here (bound, not listening), it is
    # ours before any worker starts, so a port another program uses fails now, as the HTTP port does.
    try:
        grpc_port = _bind(host, settings.grpc_port, exclusive=True) if settings.grpc_port else None
    except OSError as exc:
        stop(f"mnist-serve: cannot listen for gRPC on {host}:{settings.grpc_port}: {exc}")
    os.environ[fleet.SUPERVISOR_ENV] = str(os.getpid())
    supervisor = Supervisor(config, sockets=[listener])
    supervisor.run()
    if grpc_port is not None:
        grpc_port.close()
    if supervisor.startup_failed:
        stop("mnist-serve: a worker could not serve the model (see above)", STARTUP_FAILURE)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which also retires the live gauges of every worker it has seen end,
    notices a worker that dies during its health check at once, and relays SIGHUP to every worker as a
    model reload (service/fleet.py) instead of restarting them: a restart would fail requests in flight.

    A worker that dies (or is dropped on SIGTTOU) leaves its `livesum` gauge files
    (requests in flight, queue depth) behind, and /metrics would add them in for good. uvicorn joins a
    worker before it drops it from `processes`, so a pid gone from that list is a dead one. Its counters
    and histograms stay: they are what it did.

    uvicorn pings each worker over a pipe every 0.5 s and waits up to `timeout_worker_healthcheck` (5 s) for
    the answer. The supervisor keeps its copy of the worker's end of that pipe open (it is pickled into the
    worker at start), so a worker killed between ping and pong was only found dead after those 5 s. Once a
    worker has started, its end is the worker's alone: we close our copy, and its death reads as end-of-file.
    """

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._pids: set[int] = set()

    def init_processes(self) -> None:
        super().init_processes()
        self._track()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._track()

    def handle_signals(self) -> None:
        """SIGHUP stays blocked in this process (cli.main blocks it), so every worker spawned from it starts
        with it blocked too: a SIGHUP relayed while a worker boots waits until the worker can reload
        instead of killing it (the default action). Here it is taken from the pending set each turn."""
        if signal.sigtimedwait([signal.SIGHUP], 0) is not None:
            self.handle_hup()
        super().handle_signals()
        self._track()

    @property
    def startup_failed(self) -> bool:
        """A worker exited with uvicorn's startup-failure code (it logged why), which stopped the supervisor;
        without this the server would exit 0 as after a clean shutdown."""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def _track(self) -> None:
        workers = {process.pid: process for process in self.processes if process.pid is not None}
        for pid in self._pids - workers.keys():
            multiprocess.mark_process_dead(pid)
        for pid in workers.keys() - self._pids:
            workers[pid].child_conn.close()
        self._pids = set(workers)


class _WorkerListener(socket.socket):
    """The listening address; every worker process uvicorn (re)starts binds its own copy with SO_REUSEPORT.

    With one shared listening socket, whichever worker is awake accepts a whole burst of connections
    (libuv accepts until the queue is empty): 32 keep-alive clients all landed on one of two workers, and
    the other idled. One socket per worker lets the kernel spread connections by address hash. uvicorn
    hands each worker a pickled copy of its sockets; unpickling this one binds a fresh socket.

    The kernel picks among the group's listening sockets only: one that is bound but not yet listening gets
    no connection (not even into its backlog), while one that listens gets its share whether or not the app
    accepts them yet. A worker's socket listens once uvicorn starts serving after the app's lifespan, which
    returns only when the model is warm (service/app.py): a starting or replacement worker takes no
    connection before it can serve it, and the others take them all meanwhile. The supervisor's own socket
    only holds the address; it never listens.
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
