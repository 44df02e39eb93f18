"""The process that starts the worker processes, restarts dead ones, and keeps /metrics right after."""

from __future__ import annotations

from socket import socket

from prometheus_client import multiprocess
from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which also retires the live gauges of every worker it has seen end.

    A worker that dies (or is replaced on SIGHUP, or dropped on SIGTTOU) leaves its `livesum` gauge files
    (requests in flight, queue depth) behind, and /metrics would add them in for good. uvicorn joins a
    worker before it drops it from `processes`, so a pid gone from that list is a dead one. Its counters
    and histograms stay: they are what it did.
    """

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        self._pids: set[int] = set()

    def init_processes(self) -> None:
        super().init_processes()
        self._retire_dead()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._retire_dead()

    def handle_signals(self) -> None:
        super().handle_signals()
        self._retire_dead()

    def _retire_dead(self) -> None:
        alive = {process.pid for process in self.processes if process.pid is not None}
        for pid in self._pids - alive:
            multiprocess.mark_process_dead(pid)
        self._pids = alive
