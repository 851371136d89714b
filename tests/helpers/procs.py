"""Real `buildcast` processes for end-to-end tests, and a viewer that follows them like a browser.

`Procs` starts `serve` and `simulate` on port 0 (the port is read from the line each
prints once it listens), drains their stdout so a pipe never blocks them, keeps
their stderr in a file for failure messages, and stops every process it started by
its PID. `LiveViewer` is an EventSource in an asyncio task: it applies snapshots and
deltas, records the position of each message, and reconnects with Last-Event-ID,
moving to the next gateway when one refuses connections (a load balancer's view of
a dead replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from gateway.protocol.diff import apply
from tests.helpers.sse import Event, events

BUILDCAST = [sys.executable, "-m", "gateway.cli"]
ROOT = Path(__file__).resolve().parents[2]

SERVE_READY = re.compile(r"buildcast gateway on (?P<url>http://\S+?)/ following")
SIMULATE_READY = re.compile(r"simulated Build Graph Service on (?P<url>http://\S+?)/api/v1/")

TERMINAL = frozenset({"BuildRequestCompleted", "BuildRequestFailed", "BuildRequestCancelled"})


class Proc:
    """One buildcast process: started at once, usable once `wait_ready()` found its URL."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        ready: re.Pattern[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = [*BUILDCAST, *args]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"{name}.stderr"
        self.stdout: list[str] = []
        self._ready_pattern = ready
        self._ready = threading.Event()
        self._match: re.Match[str] | None = None
        self._signalled = False
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
            )
        self._reader = threading.Thread(target=self._drain, name=f"{name} stdout", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as stdout:
            for line in stdout:
                self.stdout.append(line.rstrip("\n"))
                if self._match is None and (match := self._ready_pattern.search(line)):
                    self._match = match
                    self._ready.set()
        self._ready.set()  # end of output: a waiter wakes and sees there was no ready line

    def _reap(self) -> None:
        """The process has exited: let the reader reach the end of its output and close it."""
        self._reader.join(timeout=5)

    def wait_ready(self, timeout: float = 20.0) -> Proc:
        if not self._ready.wait(timeout) or self._match is None:
            self.kill()
            raise AssertionError(f"{self.name} never said it was ready\n{self.describe()}")
        return self

    @property
    def url(self) -> str:
        """Its base URL, `http://127.0.0.1:PORT`, without a trailing slash."""
        if self._match is None:
            raise RuntimeError(f"{self.name} is not ready")
        return self._match.group("url").rstrip("/")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop), then wait; SIGKILL if it has not exited in `timeout`."""
        if self.alive and not self._signalled:
            self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()
        return self.process.returncode

    def signal(self, signum: signal.Signals) -> None:
        # Once only: a second SIGTERM during shutdown would find Python's default handler.
        self._signalled = True
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: the process dies as in a crash or an OOM kill."""
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reap()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self, lines: int = 60) -> str:
        """Its identity, exit status and the tail of its stderr, for an assertion message."""
        state = "running" if self.alive else f"exited {self.process.returncode}"
        tail = "\n".join(self.stderr().splitlines()[-lines:])
        url = self._match.group("url") if self._match else "-"
        return f"--- {self.name} pid {self.pid} {url} ({state}); stderr:\n{tail}"


class Procs:
    """Every process a test starts; leaving the context stops them all, each by its PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        *args: str,
        ready: re.Pattern[str],
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> Proc:
        proc = Proc(name, args, ready, self.log_dir, env)
        self.started.append(proc)
        return proc.wait_ready() if wait else proc

    def simulate(self, *args: str, name: str = "simulator", wait: bool = True) -> Proc:
        return self.start(name, "simulate", "--port", "0", *args, ready=SIMULATE_READY, wait=wait)

    def serve(self, upstream: str, *args: str, name: str = "gateway", wait: bool = True) -> Proc:
        args = ("serve", "--upstream", upstream, "--port", "0", *args)
        return self.start(name, *args, ready=SERVE_READY, wait=wait)

    def report(self) -> str:
        return "\n".join(proc.describe() for proc in self.started)

    def stop_all(self) -> None:
        # SIGTERM to all first, so their shutdowns overlap; then wait for each.
        for proc in self.started:
            if proc.alive:
                proc.signal(signal.SIGTERM)
        for proc in self.started:
            proc.terminate()

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()


# --- following a build like a browser's EventSource


def ended(view: dict[str, Any] | None) -> bool:
    return view is not None and view["status"] in TERMINAL


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a viewer got it: its kind, position, arrival time and sender."""

    kind: str
    epoch: str | None
    seq: int | None
    at: float  # time.monotonic()
    gateway: str
    code: str | None = None  # an error's code


class _Resync(Exception):
    """The stream broke the protocol (a gap, a foreign epoch): start over from a snapshot."""


class LiveViewer:
    """Follows one build's SSE stream until stopped, as EventSource does.

    Every message is checked against the protocol (a delta's seq is exactly one more
    than the view's, in the same epoch; nothing goes back within an epoch); a
    violation is recorded in `problems` and, as a real client must, the viewer
    resynchronises from a fresh snapshot. An `error` message is a notice: the viewer
    keeps its view and, if the server ends the stream, reconnects.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        gateways: Sequence[str],
        build_id: str,
        *,
        name: str = "viewer",
        retry: float = 0.25,
        max_connects: int = 400,
    ) -> None:
        self.name = name
        self.build_id = build_id
        self._session = session
        self._urls = [f"{gateway}/api/v1/builds/{build_id}/stream" for gateway in gateways]
        self._gateways = list(gateways)
        self._at = 0  # index of the gateway in use
        self._retry = retry
        self._max_connects = max_connects
        self.view: dict[str, Any] | None = None
        self.epoch: str | None = None
        self.last_id: str | None = None
        self.received: list[Received] = []
        self.problems: list[str] = []
        self.resyncs: list[str] = []  # snapshots after the first: "EPOCH.SEQ -> EPOCH.SEQ"
        self.errors: list[dict[str, Any]] = []
        self.connects = 0
        self.connected: list[tuple[float, str]] = []  # (time.monotonic(), gateway) per stream
        self.failures: list[str] = []  # connections that failed or ended, and why
        self._task: asyncio.Task[None] | None = None

    @property
    def gateway(self) -> str:
        """The gateway this viewer reads from now."""
        return self._gateways[self._at]

    @property
    def first_gateway(self) -> str:
        return self._gateways[0]

    def start(self) -> LiveViewer:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        while self.connects < self._max_connects:
            self.connects += 1
            url = self._urls[self._at]
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                async with self._session.get(url, headers=headers, timeout=timeout) as response:
                    if response.status != 200:
                        body = (await response.text())[:200]
                        self.failures.append(f"{url}: HTTP {response.status} {body}")
                    else:
                        self.connected.append((time.monotonic(), self.gateway))
                        async for event in events(response):
                            self._take(event)
                        self.failures.append(f"{url}: the server ended the stream")
            except _Resync:
                self.last_id = None
            except aiohttp.ClientConnectorError as exc:
                self.failures.append(f"{url}: {exc!r}")
                self._at = (self._at + 1) % len(self._urls)  # that replica is gone: the next
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                self.failures.append(f"{url}: {exc!r}")
            await asyncio.sleep(self._retry)
        raise AssertionError(f"{self.name} gave up after {self.connects} connections")

    def _take(self, event: Event) -> None:
        epoch, seq = _position(event.id)
        data = event.data
        self.received.append(
            Received(event.event, epoch, seq, time.monotonic(), self.gateway, data.get("code"))
        )
        if data.get("buildId") != self.build_id:
            self.problems.append(f"{event.event} for {data.get('buildId')!r}")
        if event.event == "error":
            self.errors.append(data)
            self.last_id = event.id or self.last_id
            return
        if event.event not in ("snapshot", "delta"):
            self.problems.append(f"unknown event type {event.event!r}")
            return
        if seq != data["seq"]:
            self.problems.append(f"id {event.id} names seq {seq}, the message {data['seq']}")
        current = None if self.view is None else self.view["seq"]
        if event.event == "snapshot":
            if epoch == self.epoch and current is not None and data["seq"] < current:
                self.problems.append(f"snapshot went back from {current} to {data['seq']}")
            if self.view is not None:
                self.resyncs.append(f"{self.epoch}.{current} -> {epoch}.{data['seq']}")
            self.view, self.epoch = data["view"], epoch
        elif self.view is None or epoch != self.epoch or data["seq"] != current + 1:
            where = "no view" if self.view is None else f"{self.epoch}.{current}"
            self.problems.append(f"delta {epoch}.{data['seq']} after {where}")
            raise _Resync
        else:
            self.view = apply(self.view, data["seq"], data["changes"])
        self.last_id = event.id

    # --- what a test asks

    @property
    def snapshots(self) -> list[Received]:
        return [r for r in self.received if r.kind == "snapshot"]

    def deltas(self, after: float = 0.0) -> list[Received]:
        return [r for r in self.received if r.kind == "delta" and r.at > after]

    @property
    def epochs(self) -> list[str]:
        """Every epoch seen, in order of first appearance."""
        return list(dict.fromkeys(r.epoch for r in self.received if r.epoch and r.kind != "error"))

    @property
    def seq(self) -> int:
        return -1 if self.view is None else int(self.view["seq"])

    async def wait_until(
        self, condition: Callable[[LiveViewer], bool], timeout: float, what: str
    ) -> None:
        """Bounded: fails with what this viewer saw if `condition` is not met in `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if self._task is not None and self._task.done():
                self._task.result()  # raises what ended it
                raise AssertionError(f"{self.name} stopped before {what}: {self.summary()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not {what} in {timeout} s: {self.summary()}")
            await asyncio.sleep(0.05)

    def summary(self) -> str:
        status = None if self.view is None else self.view["status"]
        return (
            f"gateway {self.gateway}, epoch {self.epoch}, seq {self.seq}, status {status}, "
            f"{len(self.received)} messages, {len(self.snapshots)} snapshots, "
            f"problems {self.problems[-5:]}, errors {self.errors[-3:]}, "
            f"connection failures {self.failures[-5:]}"
        )


def _position(token: str | None) -> tuple[str | None, int | None]:
    """EPOCH and SEQ of an `EPOCH.SEQ.TAG` id (the protocol calls it opaque; its format is
    gateway/resume.py's, and these tests check positions across replicas with it)."""
    parts = (token or "").split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None, None
    return parts[0], int(parts[1])


async def wait_all(
    viewers: Sequence[LiveViewer],
    condition: Callable[[LiveViewer], bool],
    timeout: float,
    what: str,
) -> None:
    """Every viewer meets `condition` within one shared, bounded wait; fails naming each laggard."""
    results = await asyncio.gather(
        *(viewer.wait_until(condition, timeout, what) for viewer in viewers),
        return_exceptions=True,
    )
    failures = [str(result) for result in results if isinstance(result, BaseException)]
    if failures:
        raise AssertionError(f"{len(failures)} of {len(viewers)} viewers:\n" + "\n".join(failures))
