"""The benchmarks' load client: thousands of SSE or WebSocket subscribers in one process.

An idiomatic client (aiohttp, httpx-sse) spends more CPU per frame than the server
under test, so the benchmark would measure its own client. This one is a raw
asyncio Protocol per connection on uvloop: it de-chunks the HTTP body or cuts
WebSocket frames with `bytes.find` and header arithmetic, never decodes JSON, and
reads each message's send time (an integer after a marker such as `"sentNs":`)
with one regex search. Latencies go into a preallocated histogram of 10 µs
buckets, deliveries into a counter per connection.

A message is one SSE `data:` line or one WebSocket text frame; snapshots are not
deliveries. Both servers under test write whole SSE frames in each HTTP chunk
(aiohttp sends one chunk per write), so a chunk is parsed once it is complete.

Run as a child process (`python bench/load.py --help`), driven by JSON lines on
stdin, each answered on stdout (`LoadClient` is the driver's side):

    {"op": "connect", "count": N}  {"progress": k} lines, then {"connected": n, "failed": f}
    {"op": "begin"}                resets the counters: {"ok": true}
    {"op": "count"}                {"delivered": n, "closed": c}
    {"op": "end"}                  the window's figures (see `Client.window`)
    {"op": "quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any, cast

import uvloop

BUCKET_NS = 10_000
"""Histogram resolution: 10 µs."""
BUCKETS = 1_000_001
"""10 s of 10 µs buckets; the last one holds everything slower."""
CONCURRENT_OPENS = 50
"""Connections being opened at once: below the server's listen backlog (128), and below
redis-py's default pool (100), which fails a command beyond it instead of waiting."""
OPEN_TIMEOUT = 30.0
"""Seconds for one connection to be accepted and deliver its first snapshot."""

_SNAPSHOT = b'"type":"snapshot"'
_SNAPSHOT_SPAN = 160  # the type is near the start of a message, after at most an `id`
_SSE_DATA = b"\ndata: "
_WS_MASK = b"\x5a\x3c\x96\xe1"


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client-to-server WebSocket frame (RFC 6455 requires clients to mask)."""
    if len(payload) > 125:
        raise ValueError("client frames here are small control and op frames")
    body = bytes(b ^ _WS_MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + _WS_MASK + body


class Recorder:
    """Every connection's shared latency histogram and snapshot count."""

    def __init__(self, marker: str, scale: int) -> None:
        self._marker = f'"{marker}":'.encode()
        self._scale = scale  # nanoseconds per unit of the marker's integer
        self.hist = array("Q", bytes(8 * BUCKETS))
        self.max_ns = 0
        self.samples = 0
        self.snapshots = 0

    def reset(self) -> None:
        self.hist = array("Q", bytes(8 * BUCKETS))
        self.max_ns = self.samples = self.snapshots = 0

    @staticmethod
    def is_snapshot(data: bytes, start: int, end: int) -> bool:
        span = start + _SNAPSHOT_SPAN
        return data.find(_SNAPSHOT, start, span if span < end else end) >= 0

    def message(self, data: bytes, start: int, end: int, now: int) -> int:
        """Account for the message in `data[start:end]`, read at `now`; 1 if it is a delivery.

        The send time is the integer after the first marker, up to the comma that must
        follow it (two `find`s and an `int`: a regex costs several times more here).
        """
        if self.is_snapshot(data, start, end):
            self.snapshots += 1  # a resynchronisation: not a delivery
            return 0
        at = data.find(self._marker, start, end)
        digits = at + len(self._marker)
        comma = data.find(b",", digits, digits + 24) if at >= 0 else -1
        if comma > 0:
            latency = now - int(data[digits:comma]) * self._scale
            bucket = latency // BUCKET_NS
            self.hist[0 if bucket < 0 else min(bucket, BUCKETS - 1)] += 1
            self.samples += 1
            if latency > self.max_ns:
                self.max_ns = latency
        return 1


class _Subscriber(asyncio.Protocol):
    """One connection: sends its request, reads the response head, then messages."""

    def __init__(self, request: bytes, recorder: Recorder, ready: asyncio.Future[None]) -> None:
        self._request = request
        self._recorder = recorder
        self._ready = ready
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()  # the response head, until it is complete
        self._streaming = False
        self._partial = bytearray()  # an incomplete chunk or frame
        self._need = 0  # bytes `_partial` must hold before it is worth parsing again
        self.delivered = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._ready.done():
            self._ready.set_exception(ConnectionError(f"closed before a snapshot: {exc}"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._streaming:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = bytes(self._head[:end]).lower(), bytes(self._head[end + 4 :])
            self._head.clear()
            problem = self._accept(head)
            if problem:
                self._fail(problem)
                return
            self._streaming = True
            self.started()
        if self._partial:
            self._partial += data
            if len(self._partial) < self._need:
                return
            data = bytes(self._partial)
            self._partial.clear()
        used = self.messages(data, time.time_ns())
        if used < len(data):
            self._partial += data[used:]

    def _fail(self, problem: str) -> None:
        if not self._ready.done():
            self._ready.set_exception(ConnectionError(problem))
        self.close()

    def _message(self, data: bytes, start: int, end: int, now: int) -> int:
        """Account for one message; the first must be the snapshot that makes us ready."""
        if self._ready.done():
            return self._recorder.message(data, start, end, now)
        if self._recorder.is_snapshot(data, start, end):
            self._ready.set_result(None)
        else:
            self._fail(f"the first message is no snapshot: {data[start:end][:200]!r}")
        return 0

    def _accept(self, head: bytes) -> str | None:
        """Why the response head is not the stream we asked for, or None."""
        raise NotImplementedError

    def started(self) -> None:
        """The response head was accepted."""

    def messages(self, data: bytes, now: int) -> int:
        """Handle every complete unit at the start of `data`; return how many bytes it used."""
        raise NotImplementedError


class SseSubscriber(_Subscriber):
    """`GET` an SSE stream; each complete HTTP chunk holds whole SSE messages."""

    def _accept(self, head: bytes) -> str | None:
        if not head.startswith(b"http/1.1 200"):
            return head.split(b"\r\n", 1)[0].decode(errors="replace")
        if b"transfer-encoding: chunked" not in head:
            return "expected a chunked SSE body"
        return None

    def messages(self, data: bytes, now: int) -> int:
        size, pos, count = len(data), 0, 0
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self._need = 0
                break
            start = eol + 2
            end = start + int(data[pos:eol], 16)
            if end + 2 > size:
                self._need = end + 2 - pos
                break
            if end == start:  # the last chunk: the server ended the stream
                self.close()
                pos = size
                break
            at = data.find(_SSE_DATA, start, end)
            while at >= 0:
                following = data.find(_SSE_DATA, at + 7, end)
                count += self._message(data, at + 7, end if following < 0 else following, now)
                at = following
            pos = end + 2
        self.delivered += count
        return pos


class WsSubscriber(_Subscriber):
    """Upgrade to a WebSocket, subscribe to one build, read unmasked server frames."""

    def __init__(self, subscribe: bytes, *args: Any) -> None:
        super().__init__(*args)
        self._subscribe = subscribe

    def _accept(self, head: bytes) -> str | None:
        if not head.startswith(b"http/1.1 101"):
            return head.split(b"\r\n", 1)[0].decode(errors="replace")
        return None

    def started(self) -> None:
        assert self._transport is not None
        self._transport.write(self._subscribe)

    def messages(self, data: bytes, now: int) -> int:
        size, pos, count = len(data), 0, 0
        while True:
            if size - pos < 2:
                self._need = 2
                break
            length, start = data[pos + 1] & 0x7F, pos + 2
            if length >= 126:
                start += 2 if length == 126 else 8
                if start > size:
                    self._need = start - pos
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            end = start + length
            if end > size:
                self._need = end - pos
                break
            opcode = data[pos] & 0x0F
            if opcode in (0x0, 0x1):  # text, or a continuation of one
                count += self._message(data, start, end, now)
            elif opcode == 0x9 and self._transport is not None:  # ping: aiohttp's heartbeat
                self._transport.write(_masked(0xA, data[start:end]))
            elif opcode == 0x8:
                self.close()
            pos = end
        self.delivered += count
        return pos


class Client:
    """The connections of one load process, and the figures of the current window."""

    def __init__(
        self,
        host: str,
        port: int,
        build_id: str,
        transport: str,
        marker: str,
        scale: int,
        token: str | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.recorder = Recorder(marker, scale)
        self.subscribers: list[_Subscriber] = []
        self.failures: dict[str, int] = {}
        self._make = self._factory(build_id, transport)
        self._window_start = (0, 0)  # (wall ns, CPU ns) at `begin`

    def _factory(
        self, build_id: str, transport: str
    ) -> Callable[[asyncio.Future[None]], _Subscriber]:
        host = f"{self._host}:{self._port}"
        if transport == "sse":
            request = (
                f"GET /api/v1/builds/{build_id}/stream HTTP/1.1\r\nHost: {host}\r\n"
                f"Accept: text/event-stream\r\n{self._auth}\r\n"
            ).encode()
            return lambda ready: SseSubscriber(request, self.recorder, ready)
        key = base64.b64encode(os.urandom(16)).decode()
        upgrade = (
            f"GET /api/v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{self._auth}\r\n"
        ).encode()
        subscribe = _masked(0x1, json.dumps({"op": "subscribe", "buildId": build_id}).encode())
        return lambda ready: WsSubscriber(subscribe, upgrade, self.recorder, ready)

    async def connect(self, count: int, progress: Callable[[int], None]) -> dict[str, Any]:
        """Open `count` more connections, each done once its first snapshot is read."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONCURRENT_OPENS)

        async def open_one() -> None:
            async with gate:
                ready = loop.create_future()
                subscriber = self._make(ready)
                try:
                    async with asyncio.timeout(OPEN_TIMEOUT):
                        await loop.create_connection(lambda: subscriber, self._host, self._port)
                        await ready
                except (OSError, TimeoutError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"[:120]
                    self.failures[reason] = self.failures.get(reason, 0) + 1
                    subscriber.close()
                    return
                self.subscribers.append(subscriber)

        async def report() -> None:
            while True:
                await asyncio.sleep(0.5)
                progress(len(self.subscribers))

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*(open_one() for _ in range(count)))
        finally:
            reporter.cancel()
        return {"connected": len(self.subscribers), "failed": self.failures}

    def begin(self) -> None:
        self.recorder.reset()
        for subscriber in self.subscribers:
            subscriber.delivered = 0
        self._window_start = (time.monotonic_ns(), time.process_time_ns())

    def count(self) -> dict[str, int]:
        return {
            "delivered": sum(s.delivered for s in self.subscribers),
            "closed": sum(s.closed for s in self.subscribers),
        }

    def window(self) -> dict[str, Any]:
        """Deliveries, latency histogram (sparse: bucket -> count), and this process's CPU."""
        wall = time.monotonic_ns() - self._window_start[0]
        cpu = time.process_time_ns() - self._window_start[1]
        per_connection = [s.delivered for s in self.subscribers] or [0]
        recorder = self.recorder
        return {
            **self.count(),
            "connections": len(self.subscribers),
            "per_connection_min": min(per_connection),
            "per_connection_max": max(per_connection),
            "samples": recorder.samples,
            "snapshots": recorder.snapshots,
            "max_ns": recorder.max_ns,
            "hist": {str(i): n for i, n in enumerate(recorder.hist) if n},
            "wall_ns": wall,
            "cpu_ns": cpu,
        }

    def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()


def _say(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def _serve(client: Client) -> None:
    """Carry out the driver's commands until `quit` or the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            op = command["op"]
            if op == "connect":
                _say(await client.connect(command["count"], lambda n: _say({"progress": n})))
            elif op == "begin":
                client.begin()
                _say({"ok": True})
            elif op == "count":
                _say(client.count())
            elif op == "end":
                _say(client.window())
            elif op == "quit":
                break
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--build", required=True, help="the build id to follow")
    parser.add_argument("--transport", choices=("sse", "ws"), default="sse")
    parser.add_argument("--marker", default="sentNs", help="JSON key of the send time")
    parser.add_argument("--scale", type=int, default=1, help="nanoseconds per marker unit")
    parser.add_argument("--token", help="an access token, sent as Authorization: Bearer")
    args = parser.parse_args()
    client = Client(
        args.host, args.port, args.build, args.transport, args.marker, args.scale, args.token
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(client))


class LoadClient:
    """The driver's side of one load process: a command out, its JSON answer in."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("the load process needs pipes on stdin and stdout")
        self.process = process
        self._stdin, self._stdout = process.stdin, process.stdout

    async def _send(self, op: str, **args: Any) -> None:
        self._stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await self._stdin.drain()

    async def _answer(self) -> dict[str, Any]:
        line = await self._stdout.readline()
        if not line:
            raise ConnectionError(f"load process {self.process.pid} ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, op: str) -> dict[str, Any]:
        await self._send(op)
        return await self._answer()

    async def connect(self, count: int, progress: Callable[[int], None]) -> dict[str, Any]:
        await self._send("connect", count=count)
        while "progress" in (answer := await self._answer()):
            progress(answer["progress"])
        return answer

    async def quit(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send("quit")


def merge(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One window's figures from several load processes: sums, extremes, one histogram."""
    hist: dict[int, int] = {}
    for window in windows:
        for bucket, n in window["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + n
    total = sum(hist.values())

    def percentile(q: float) -> float | None:
        if not total:
            return None
        rank, seen = q * total, 0
        for bucket in sorted(hist):
            seen += hist[bucket]
            if seen >= rank:
                return (bucket + 1) * BUCKET_NS / 1e6  # the bucket's upper edge, in ms
        return None

    summed = ("delivered", "closed", "connections", "samples", "snapshots", "cpu_ns")
    return {
        **{key: sum(w[key] for w in windows) for key in summed},
        "per_connection_min": min(w["per_connection_min"] for w in windows),
        "per_connection_max": max(w["per_connection_max"] for w in windows),
        "wall_ns": max(w["wall_ns"] for w in windows),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": max(w["max_ns"] for w in windows) / 1e6 if total else None,
    }


if __name__ == "__main__":
    main()
