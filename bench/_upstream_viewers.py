"""SSE viewers for bench/upstream.py: many open streams in one process, read and discarded.

A viewer is a raw asyncio Protocol (uvloop where installed): it sends one GET for
`/api/v1/builds/{id}/stream`, notes when its first snapshot has fully arrived and
counts deltas, and keeps nothing else. That is all the upstream benchmark needs
(the gateway sees a real, live SSE client) at a few hundred bytes per connection,
so 10,000 fit in one process under the 20,000 file-descriptor limit. Like
EventSource, a viewer refused, answered with an error or closed before its
snapshot tries again after a pause; each such retry is counted.

bench/upstream.py runs this as a child process per deployment, so viewers have
their own descriptors and core. Protocol, one JSON line per request: stdin `N`
(a total) opens viewers until N are open, spread round-robin over the gateway
URLs, and answers once each has its snapshot (or `--open-timeout` passed) with
`Pool`'s counters; EOF closes every viewer and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import json
import sys
import time
from typing import cast
from urllib.parse import quote, urlsplit

SNAPSHOT = b"event: snapshot"
DELTA = b"event: delta"
MESSAGE_END = b"\n\n"
STREAMING = b"HTTP/1.1 200 "
ATTEMPTS = 20
_CARRY = max(len(SNAPSHOT), len(DELTA)) - 1  # bytes kept so a marker split over reads is found


class _Stage(enum.Enum):
    """Where a viewer is in its answer until its snapshot has arrived."""

    STATUS = 1
    HEADERS = 2  # and whatever comes before the snapshot
    SNAPSHOT = 3


class Rejected(Exception):
    """The gateway answered with something else than a stream (say a 503)."""


class Pool:
    """Every viewer's counters: kept here, not per viewer, so a viewer stays small."""

    def __init__(self) -> None:
        self.opened = 0
        self.ready = 0  # have had their snapshot
        self.closed_after_ready = 0
        self.refused = 0  # retries after a refused connection
        self.rejected = 0  # retries after an answer that was not a stream
        self.dropped = 0  # retries after a stream closed before its snapshot
        self.failed = 0  # gave up after ATTEMPTS
        self.first_rejection = ""
        self.deltas = 0
        self.bytes = 0

    def counters(self) -> dict[str, int | str]:
        return dict(vars(self))


class Viewer(asyncio.Protocol):
    """One SSE stream: its snapshot awaited, then its deltas counted and every byte dropped."""

    __slots__ = ("_carry", "_pool", "_request", "_stage", "_transport", "ready")

    def __init__(self, pool: Pool, request: bytes, ready: asyncio.Future[None]) -> None:
        self._pool = pool
        self._request = request
        self._transport: asyncio.WriteTransport | None = None
        self._carry = b""
        self._stage = _Stage.STATUS
        self.ready = ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.WriteTransport: no isinstance.
        self._transport = cast(asyncio.WriteTransport, transport)
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._pool.bytes += len(data)
        window = self._carry + data
        fresh = len(self._carry)  # where this read starts in `window`
        self._carry = window[-_CARRY:]
        if self.ready.done():
            # Only markers that end in this read: one wholly in the carry was counted before.
            self._pool.deltas += window.count(DELTA, max(0, fresh - len(DELTA) + 1))
            return
        if self._stage is _Stage.STATUS:
            if len(window) < len(STREAMING):
                return
            if not window.startswith(STREAMING):
                self.ready.set_exception(Rejected(window[:300].decode(errors="replace")))
                self.ready.exception()  # retrieved: the opener may have timed out
                assert self._transport is not None
                self._transport.close()
                return
            self._stage = _Stage.HEADERS
        if self._stage is _Stage.HEADERS:
            start = window.find(SNAPSHOT)
            if start < 0:
                return
            self._stage = _Stage.SNAPSHOT
            window = window[start:]
        if MESSAGE_END in window:
            self._pool.ready += 1
            self.ready.set_result(None)
            self._pool.deltas += window.count(DELTA)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream closed before its snapshot: {exc}"))
            self.ready.exception()
        elif self.ready.exception() is None:
            self._pool.closed_after_ready += 1


class Viewers:
    """Opens viewers on the gateways, at most `parallel` awaiting their snapshot at once."""

    def __init__(self, gateways: list[str], build_id: str, parallel: int) -> None:
        path = f"/api/v1/builds/{quote(build_id, safe='')}/stream"
        self._targets = []
        for gateway in gateways:
            url = urlsplit(gateway)
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
            ).encode()
            self._targets.append((url.hostname or "127.0.0.1", url.port or 80, request))
        self._parallel = asyncio.Semaphore(parallel)
        self._transports: list[asyncio.BaseTransport] = []
        self.pool = Pool()

    async def open_until(self, total: int, timeout: float) -> None:
        """Open viewers until `total` are open; return once all have their snapshot, or after
        `timeout` seconds (the counters then show how many do not)."""
        tasks = [asyncio.create_task(self._open(index)) for index in range(self.pool.opened, total)]
        self.pool.opened = max(total, self.pool.opened)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            task.cancel()

    async def _open(self, index: int) -> None:
        host, port, request = self._targets[index % len(self._targets)]
        loop = asyncio.get_running_loop()
        async with self._parallel:
            for attempt in range(ATTEMPTS):
                if attempt:
                    await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                ready: asyncio.Future[None] = loop.create_future()
                try:
                    transport, _ = await loop.create_connection(
                        functools.partial(Viewer, self.pool, request, ready), host, port
                    )
                except ConnectionRefusedError:  # a burst overflowed the listen backlog
                    self.pool.refused += 1
                    continue
                self._transports.append(transport)
                try:
                    await asyncio.shield(ready)  # a timeout cancels this wait, not the viewer
                    return
                except Rejected as exc:
                    self.pool.rejected += 1
                    self.pool.first_rejection = self.pool.first_rejection or str(exc)
                except ConnectionError:
                    self.pool.dropped += 1
            self.pool.failed += 1

    def close(self) -> None:
        for transport in self._transports:
            transport.abort()


async def serve(gateways: list[str], build_id: str, parallel: int, open_timeout: float) -> None:
    """Answer each total read from stdin with the counters, until stdin ends."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    viewers = Viewers(gateways, build_id, parallel)
    try:
        while line := await reader.readline():
            started = time.monotonic()
            await viewers.open_until(int(line), open_timeout)
            answer = {**viewers.pool.counters(), "open_seconds": time.monotonic() - started}
            print(json.dumps(answer), flush=True)
    finally:
        viewers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_id")
    parser.add_argument("gateways", nargs="+", help="base URLs, e.g. http://127.0.0.1:8080")
    parser.add_argument("--parallel", type=int, default=100, help="viewers opening at once")
    parser.add_argument("--open-timeout", type=float, default=120.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(args.gateways, args.build_id, args.parallel, args.open_timeout))


if __name__ == "__main__":
    main()
