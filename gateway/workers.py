"""`buildcast serve --workers N`: N gateway processes on one port, one per core.

Each worker is a whole replica: its own event loop, its own bus subscription
and its own viewers; the kernel spreads new connections over the workers
(SO_REUSEPORT). They share builds through Redis exactly as replicas on several
machines do, which is why workers need `--redis`.

The parent only supervises. It holds the port, so that `--port 0` names one
port for every worker and a port taken by someone else is refused at once; it
restarts a worker that dies; on SIGTERM or SIGINT it asks them all to stop
(each drains its viewers), passes a second signal on, and kills those that
have not stopped in time. Workers have a process group of their own, so a
terminal's Ctrl+C reaches them once, through the parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
"""Seconds before a dead worker is started again: a crash loop stays slow."""

STOP_TIMEOUT = 10.0
"""Seconds workers get to stop after their drain window before they are killed."""

USAGE_ERROR = 2
"""A worker's exit status for a bad option or an unreachable dependency: restarting won't help."""


def reserve(host: str, port: int) -> socket.socket:
    """A bound (not listening) socket on the workers' port; each worker binds it again."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def supervise(count: int, target: Callable[[int], None], stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run `target(number)` in `count` processes until a signal; the exit status to return.

    On the signal each worker drains (`gateway.ops.drain`); those still running after
    `stop_timeout` seconds are killed. A second signal is passed on: they stop at once."""
    context = multiprocessing.get_context("spawn")  # no inherited event loop or sockets
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def start(number: int) -> BaseProcess:
        process = context.Process(target=target, args=(number,), name=f"buildcast worker {number}")
        process.start()
        return process

    workers = {number: start(number) for number in range(1, count + 1)}
    status = 0
    try:
        while not stopping:
            wait([process.sentinel for process in workers.values()], timeout=0.5)
            for number, process in workers.items():
                if process.exitcode is None or stopping:
                    continue
                if process.exitcode == USAGE_ERROR:
                    stopping.append(0)  # it said why in one line; the others would too
                    status = USAGE_ERROR
                    break
                log.warning(
                    "worker %d (pid %s) exited with status %s; starting it again",
                    number,
                    process.pid,
                    process.exitcode,
                )
                time.sleep(RESTART_DELAY)
                workers[number] = start(number)
    finally:
        _stop(list(workers.values()), stop_timeout, stopping)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _stop(processes: list[BaseProcess], timeout: float, signals: list[int]) -> None:
    """SIGTERM every worker, again on each further signal; kill those left after `timeout`."""
    passed_on = -1
    deadline = time.monotonic() + timeout
    while (running := [p for p in processes if p.exitcode is None]) and (
        time.monotonic() < deadline
    ):
        if len(signals) > passed_on:
            passed_on = len(signals)
            for process in running:
                process.terminate()
        wait([process.sentinel for process in running], timeout=0.2)
    for process in running:
        log.warning("worker pid %s did not stop in %.0f s; killing it", process.pid, timeout)
        process.kill()
        process.join()
