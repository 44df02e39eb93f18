"""The process that starts the worker processes, restarts dead ones, and keeps /metrics right after."""

from __future__ import annotations

import os
import signal
from socket import socket

from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess


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

    def __init__(self, config: Config, sockets: list[socket]) -> None:
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
