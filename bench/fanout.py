"""Fan-out benchmark: N subscribers of one build, R updates/s, Buildcast against a baseline.

    python bench/fanout.py [--quick] [--out PATH] [--profile]

Each server under test runs alone on core 0 (`taskset -c 0`) with a private
redis-server; the load client (`bench/load.py`), Redis and this process (the
publisher) share core 1. The baseline (`bench/baseline.py`: aiohttp +
aiohttp-sse, a queue and a task per client) is measured in the same run, so
the ratios compare like with like on whatever the machine is doing.

The bench build is fed through Buildcast's real bus (`RedisBus.publish`) by this
process, which holds the build's lease in Redis (`RedisLease`, the real key): the
gateway's watch finds a stored view and a lease it cannot take, so it serves
what the bus holds and never polls. Its `--upstream` is a trap in this process
that answers 503 and counts requests: the report shows the count (0), so that is
checked, not assumed. The end-to-end section is the other way round: the gateway
polls a `buildcast simulate` (`--poll-active 0.05`) and this process only
advances the build there.

Sections: steady load (N=1000, R=20), many subscribers (N=5000), the highest
deliveries/s that held (p99 < 250 ms, no loss), RSS per idle connection, end to
end through the poller. Tables go to stdout, progress to stderr, every figure
to the JSON file (default bench/results/fanout.json). Each window also records
how busy both cores were with processes that are not the bench's: a shared
machine shows up as "contended" instead of as a slow server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from load import BUCKET_NS, BUCKETS, LoadClient, merge
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.backends.redis.bus import RedisBus
from gateway.backends.redis.connection import RedisConnection, build_key, connect
from gateway.backends.redis.lease import RedisLease
from gateway.guard.tokens import mint
from gateway.protocol import messages
from gateway.protocol.messages import Message
from gateway.protocol.resume import new_epoch
from gateway.protocol.view import View

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SERVER_CORE, CLIENT_CORE = 0, 1
BUILD_ID = "br-fanout-bench"
LEASE_HOLDER = "bench/fanout.py"
LEASE_TTL = 30.0
P99_LIMIT_MS = 250.0
SATURATED = 0.9
"""A core this busy (share of one core) limits the run."""
CONTENDED = 0.1
"""Other processes using this share of a bench core make the window's figures suspect."""
PROFILE_N = 1000
"""Subscribers of the profiled run, in the quick run too."""
STOP_TIMEOUT = 5.0
"""Seconds a process gets to end after SIGTERM before SIGKILL."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    """The sizes of one invocation: the full run, or the quick smoke run."""

    window: float  # seconds of publishing per measured window
    n_steady: int
    n_large: int  # 0: no such section
    rate: int
    sweep_n: int
    sweep_window: float
    sweep_rates: tuple[int, ...]  # updates/s tried in order, until one does not hold
    idle_counts: tuple[int, ...]  # connections; 0: as many as the server's fd limit allows
    e2e_n: int


FULL = Plan(
    10.0, 1000, 5000, 20, 1000, 5.0, (5, 10, 20, 40, 70, 100, 140, 200, 280, 400), (10_000, 0), 1000
)
QUICK = Plan(2.0, 200, 0, 20, 500, 1.5, (20, 200), (1000,), 200)


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[fanout {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- processes


class Children:
    """Every process the bench starts, pinned to a core and ended by PID."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._running: dict[asyncio.subprocess.Process, int] = {}  # process -> its core

    async def start(
        self, name: str, argv: list[str], core: int, *, pipes: bool = False
    ) -> asyncio.subprocess.Process:
        """Start `argv` on `core`; stderr goes to logs/NAME.log, stdout too unless `pipes`."""
        self._logs.mkdir(parents=True, exist_ok=True)
        with open(self._logs / f"{name}.log", "ab") as log:
            process = await asyncio.create_subprocess_exec(
                *("taskset", "-c", str(core), *argv),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                limit=1 << 24,  # a load process's answer holds a latency histogram
            )
        self._running[process] = core
        return process

    async def stop(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; shielded, so Ctrl-C cannot skip it."""
        self._running.pop(process, None)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.shield(asyncio.wait_for(process.wait(), STOP_TIMEOUT))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.shield(process.wait())

    async def close(self) -> None:
        for process in reversed(list(self._running)):
            await self.stop(process)

    def cpu(self, core: int) -> float:
        """CPU seconds used by the bench's processes on `core` (this one is on CLIENT_CORE)."""
        pids = [p.pid for p, c in self._running.items() if c == core and p.returncode is None]
        if core == CLIENT_CORE:
            pids.append(os.getpid())
        return sum(process_cpu(pid) for pid in pids)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(
    check: Callable[[], Awaitable[object]], what: str, timeout: float = 20.0
) -> None:
    """Retry `check` until it succeeds; a process that does not come up ends the run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await check()
            return
        except (OSError, aiohttp.ClientError, RedisConnectionError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout:.0f} s: {exc}") from exc
            await asyncio.sleep(0.1)


async def http_ready(port: int, path: str) -> None:
    async def check() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}") as response,
        ):
            response.raise_for_status()

    await wait_ready(check, f"the server on port {port}")


# --- what /proc says


def process_cpu(pid: int) -> float:
    """Seconds of CPU (utime + stime, every thread) the process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per core."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return times


def rss_kb(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) if found else 0


def open_files(pid: int) -> tuple[int, int]:
    """(descriptors open now, the soft limit)."""
    limits = Path(f"/proc/{pid}/limits").read_text()
    found = re.search(r"Max open files\s+(\d+)", limits)
    return len(os.listdir(f"/proc/{pid}/fd")), int(found[1]) if found else 1024


async def settled_rss(pid: int, timeout: float = 6.0) -> int:
    """VmRSS once two reads half a second apart agree within 0.5% (or at the timeout)."""
    deadline, last = time.monotonic() + timeout, rss_kb(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


class Cores:
    """How busy each bench core was over a window, and how much of that was not the bench."""

    def __init__(self, children: Children) -> None:
        self._children = children
        self._times = core_times()
        self._ours = {core: children.cpu(core) for core in (SERVER_CORE, CLIENT_CORE)}

    def since(self) -> dict[str, float]:
        times, out = core_times(), {}
        for core, name in ((SERVER_CORE, "server"), (CLIENT_CORE, "client")):
            busy = times[core][0] - self._times[core][0]
            total = (times[core][1] - self._times[core][1]) or 1
            ours = (self._children.cpu(core) - self._ours[core]) * CLK_TCK
            out[f"{name}_core_busy"] = round(busy / total, 3)
            out[f"{name}_core_others"] = round(max(0.0, busy - ours) / total, 3)
        return out


# --- the servers under test


@dataclass
class Server:
    kind: str  # "buildcast" or "baseline"
    pid: int
    port: int
    redis_url: str
    trap: Trap | None  # Buildcast's upstream when the bench feeds its bus


class Trap:
    """An upstream for a gateway that must not poll: answers 503 and counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=503)

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls) -> AsyncIterator[Trap]:
        trap = cls()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", trap._answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            trap.url = f"http://127.0.0.1:{port}"
            yield trap
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def started(
    children: Children, name: str, argv: list[str], core: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await children.start(name, argv, core)
    try:
        yield process
    finally:
        await children.stop(process)


@contextlib.asynccontextmanager
async def redis_server(children: Children) -> AsyncIterator[str]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    async with started(children, "redis", [*argv, "--save", "", "--appendonly", "no"], CLIENT_CORE):
        url = f"redis://127.0.0.1:{port}"
        async with Redis.from_url(url) as probe:
            await wait_ready(probe.ping, "redis-server")
        yield url


@contextlib.asynccontextmanager
async def simulator(children: Children) -> AsyncIterator[str]:
    """`buildcast simulate` on the client core; nothing moves in it unless the bench asks."""
    port = free_port()
    argv = [PYTHON, "-m", "gateway.cli", "simulate", "--port", str(port)]
    async with started(
        children, "simulator", [*argv, "--tick", "3600", "--keep-active", "0"], CLIENT_CORE
    ):
        await http_ready(port, "/_sim/stats")
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def stack(
    children: Children, kind: str, *, upstream: str | None = None, poll_active: float | None = None
) -> AsyncIterator[Server]:
    """A private redis-server, then the server under test alone on its core."""
    async with contextlib.AsyncExitStack() as exits:
        redis_url = await exits.enter_async_context(redis_server(children))
        port, trap = free_port(), None
        if kind == "baseline":
            argv = [PYTHON, str(BENCH / "baseline.py"), "--redis", redis_url, "--port", str(port)]
        else:
            if upstream is None:
                trap = await exits.enter_async_context(Trap.serving())
                upstream = trap.url
            argv = [PYTHON, "-m", "gateway.cli", "--log-level", "WARNING", "serve", "--redis"]
            argv += [redis_url, "--upstream", upstream, "--port", str(port)]
            argv += ["--poll-active", str(poll_active)] if poll_active else []
            # Every load client comes from 127.0.0.1: lift the per-address and process caps.
            argv += ["--max-connections", "1000000", "--max-connections-per-client", "1000000"]
            argv += ["--auth-secret", AUTH_SECRET] if kind == AUTHENTICATED else []
        process = await exits.enter_async_context(started(children, kind, argv, SERVER_CORE))
        await http_ready(port, "/healthz")
        yield Server(kind, process.pid, port, redis_url, trap)


# --- what is published


class Updates:
    """The bench build: a snapshot, then deltas shaped like a running build's (~570 bytes).

    Each delta carries its send time first in its changes, `"sentNs": INT,`, where
    the load client finds it quickly (it reads the integer up to the comma). The
    view stored with each delta moves its partition entries and times but keeps
    its first events only: these clients never resume, and a growing view would
    make the publisher's cost grow through the run.
    """

    REFS = tuple(
        f"reviews/date=2026-11-{d}/region={r}"
        for d in (26, 27)
        for r in ("eu", "us", "apac", "latam", "emea")
    )

    def __init__(self, build_id: str) -> None:
        self.build_id = build_id
        self.epoch = new_epoch()
        self.seq = 1
        now = time.time_ns() // 1_000_000
        entry = {"status": "PartitionRequested", "updatedAtMs": now, "delegatedTo": None}
        requested = [
            {
                "eventId": f"ev-{i}",
                "timestampMs": now,
                "eventType": "PartitionEvent",
                "message": "Partition requested",
                "partitionRef": ref,
                "partitionStatus": "PartitionRequested",
            }
            for i, ref in enumerate(self.REFS)
        ]
        self.view: View = {
            "buildId": build_id,
            "seq": 1,
            "status": "BuildRequestExecuting",
            "createdAtMs": now,
            "updatedAtMs": now,
            "requestedPartitions": list(self.REFS),
            "partitions": {ref: dict(entry) for ref in self.REFS},
            "events": requested,
            "stale": False,
        }

    def snapshot(self) -> Message:
        return messages.snapshot(self.build_id, self.epoch, self.seq, self.view)

    def next(self) -> tuple[Message, View]:
        self.seq += 1
        sent = time.time_ns()
        ms = sent // 1_000_000
        ref = self.REFS[self.seq % len(self.REFS)]
        entry = {"status": "PartitionBuilding", "updatedAtMs": ms, "delegatedTo": None}
        job = {
            "jobRunId": f"jr-{self.seq}",
            "jobLabel": "//jobs:ingest_reviews",
            "status": "JobRunning",
            "targetPartitions": [ref],
            "logLines": [f"read {self.seq * 7919 % 100_000:,} rows from {ref}"],
        }
        event = {
            "eventId": f"ev-{self.seq}",
            "timestampMs": ms,
            "eventType": "JobEvent",
            "message": "Job running",
            "job": job,
        }
        changes = {"sentNs": sent, "updatedAtMs": ms, "partitions": {ref: entry}, "events": [event]}
        self.view["seq"], self.view["updatedAtMs"] = self.seq, ms
        self.view["partitions"][ref] = entry
        return messages.delta(self.build_id, self.epoch, self.seq, changes), self.view


class Feed(Protocol):
    """What changes the bench build: one `update` per tick of the publisher."""

    marker: tuple[str, int]  # the JSON key of each message's time, and its nanoseconds per unit

    async def begin(self) -> None: ...

    async def update(self) -> None: ...

    async def updates(self) -> int:
        """Messages of the build published since `begin` (once they all are)."""


class BusFeed:
    """Buildcast: publish through the real Redis bus, holding the build's lease meanwhile."""

    marker = ("sentNs", 1)

    def __init__(self, connection: RedisConnection) -> None:
        self._bus = RedisBus(connection)
        self._lease = RedisLease(connection, LEASE_HOLDER, LEASE_TTL)
        self._updates = Updates(BUILD_ID)
        self._since = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, server: Server) -> AsyncIterator[BusFeed]:
        connection = await connect(server.redis_url)
        feed = cls(connection)
        renewing: asyncio.Task[None] | None = None
        try:
            if not await feed._lease.acquire(BUILD_ID):
                raise RuntimeError(f"the lease of {BUILD_ID} is held already")
            renewing = asyncio.create_task(feed._renew())
            if not await feed._bus.publish(feed._updates.snapshot(), feed._updates.view):
                raise RuntimeError("the bus refused the bench build's first snapshot")
            yield feed
        finally:
            if renewing is not None:
                renewing.cancel()
            with contextlib.suppress(Exception):
                await feed._lease.release(BUILD_ID)
            await connection.close()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            if not await self._lease.renew(BUILD_ID):
                say("lost the bench build's lease: the gateway may poll it now")

    async def begin(self) -> None:
        self._since = self._updates.seq

    async def update(self) -> None:
        message, view = self._updates.next()
        if not await self._bus.publish(message, view):
            raise RuntimeError(f"the bus refused seq {message.seq}")

    async def updates(self) -> int:
        return self._updates.seq - self._since


class ChannelFeed:
    """The baseline: the same message bytes, PUBLISHed on its channel."""

    marker = ("sentNs", 1)

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._updates = Updates(BUILD_ID)
        self._since = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, server: Server) -> AsyncIterator[ChannelFeed]:
        async with Redis.from_url(server.redis_url) as redis:
            feed = cls(redis)
            await redis.set(f"baseline:{BUILD_ID}:snapshot", feed._updates.snapshot().data)
            yield feed

    async def begin(self) -> None:
        self._since = self._updates.seq

    async def update(self) -> None:
        message, _ = self._updates.next()
        await self._redis.publish(f"baseline:{BUILD_ID}", message.data)

    async def updates(self) -> int:
        return self._updates.seq - self._since


class SimulatorFeed:
    """End to end: advance a build in the simulator; the gateway's poller finds the change.

    A delta's latency is read from its first new event's `timestampMs`, the time
    the simulator made the change (milliseconds: up to 1 ms too high).
    """

    marker = ("timestampMs", 1_000_000)
    BUILD = "br-e2e-bench"

    def __init__(self, upstream: str, session: aiohttp.ClientSession, redis: Redis) -> None:
        self._advance = f"{upstream}/_sim/builds/{self.BUILD}/advance"
        self._session = session
        self._redis = redis
        self._since = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, server: Server, upstream: str) -> AsyncIterator[SimulatorFeed]:
        """A 200-partition build (it lasts ~460 steps), taken to Executing."""
        async with aiohttp.ClientSession() as session, Redis.from_url(server.redis_url) as redis:
            spec = {"id": cls.BUILD, "partitions": 200, "log_lines": 5}
            async with session.post(f"{upstream}/_sim/builds", json=spec) as response:
                response.raise_for_status()
            feed = cls(upstream, session, redis)
            await feed.update()
            await feed.update()
            yield feed

    async def _seq(self) -> int:
        return int(await self._redis.hget(build_key(self.BUILD, "state"), "seq") or 0)

    async def begin(self) -> None:
        self._since = await self._seq()

    async def update(self) -> None:
        async with self._session.post(self._advance, json={"steps": 1}) as response:
            response.raise_for_status()

    async def updates(self) -> int:
        """Once the poller has published the last change (its seq stays put for 0.3 s)."""
        seq, still, deadline = await self._seq(), 0.0, time.monotonic() + 5.0
        while still < 0.3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = await self._seq()
            seq, still = now, (still + 0.05 if now == seq else 0.0)
        return seq - self._since


AUTHENTICATED = "buildcast+auth"
"""Buildcast with access control on: every connection opens with a token."""

AUTH_SECRET = "bench-secret-of-at-least-32-bytes"

FEEDS: dict[str, Callable[[Server], contextlib.AbstractAsyncContextManager[Feed]]] = {
    "buildcast": BusFeed.serving,
    AUTHENTICATED: BusFeed.serving,
    "baseline": ChannelFeed.serving,
}


# --- the load processes


class Load:
    """One or more load processes on the client core, following one build."""

    def __init__(self, clients: list[LoadClient], label: str) -> None:
        self._clients = clients
        self._label = label
        self.connections = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        children: Children,
        server: Server,
        transport: str,
        marker: tuple[str, int],
        *,
        processes: int = 1,
        build_id: str = BUILD_ID,
    ) -> AsyncIterator[Load]:
        argv = [PYTHON, str(BENCH / "load.py"), "--port", str(server.port), "--build", build_id]
        argv += ["--transport", transport, "--marker", marker[0], "--scale", str(marker[1])]
        if server.kind == AUTHENTICATED:
            argv += ["--token", mint(AUTH_SECRET, [build_id], ttl=24 * 3600)]
        started = [
            await children.start(f"load-{i}", argv, CLIENT_CORE, pipes=True)
            for i in range(processes)
        ]
        load = cls([LoadClient(p) for p in started], f"{server.kind} {transport}")
        try:
            yield load
        finally:
            for client in load._clients:
                await client.quit()
            for process in started:
                await children.stop(process)

    async def connect(self, total: int) -> dict[str, int]:
        """Have `total` connections open, each past its first snapshot; bounded in time."""
        missing = total - self.connections
        shares = [missing // len(self._clients)] * len(self._clients)
        shares[0] += missing - sum(shares)
        seen = [0] * len(self._clients)
        shown = [time.monotonic()]

        def progress(i: int, count: int) -> None:
            seen[i] = count
            if time.monotonic() - shown[0] > 2.0:
                shown[0] = time.monotonic()
                say(f"{self._label}: {sum(seen):,} of {total:,} connections open")

        # One process at a time: the server sees at most one process's concurrent opens.
        async with asyncio.timeout(60 + missing / 200):
            answers = [
                await client.connect(share, lambda n, i=i: progress(i, n))
                for i, (client, share) in enumerate(zip(self._clients, shares, strict=True))
            ]
        self.connections = sum(a["connected"] for a in answers)
        failed: dict[str, int] = {}
        for answer in answers:
            for reason, n in answer["failed"].items():
                failed[reason] = failed.get(reason, 0) + n
        if failed:
            say(f"{self._label}: connections failed: {failed}")
        say(f"{self._label}: {self.connections:,} connections open")
        return failed

    async def _all(self, op: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(30):
            return list(await asyncio.gather(*(c.ask(op) for c in self._clients)))

    async def begin(self) -> None:
        await self._all("begin")

    async def count(self) -> dict[str, int]:
        answers = await self._all("count")
        return {key: sum(a[key] for a in answers) for key in ("delivered", "closed")}

    async def end(self) -> dict[str, Any]:
        return merge(await self._all("end"))

    async def drain(self, expected: int, timeout: float = 10.0) -> None:
        """Wait until `expected` deliveries arrived, or none came for a second."""
        deadline, stalled_since, last = time.monotonic() + timeout, time.monotonic(), -1
        while time.monotonic() < deadline:
            delivered = (await self.count())["delivered"]
            if delivered >= expected:
                return
            if delivered != last:
                stalled_since, last = time.monotonic(), delivered
            elif time.monotonic() - stalled_since > 1.0:
                return
            await asyncio.sleep(0.05)


# --- one measured window


async def measure(
    children: Children, server: Server, feed: Feed, load: Load, rate: float, window: float
) -> dict[str, Any]:
    """Publish at `rate` for `window` seconds; what arrived, how late, at what CPU cost."""
    await load.begin()
    await feed.begin()
    loop = asyncio.get_running_loop()
    cores, cpu, started = Cores(children), process_cpu(server.pid), loop.time()
    count = max(1, round(rate * window))
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - loop.time()))
        await feed.update()
    publishing = loop.time() - started
    updates = await feed.updates()
    expected = updates * load.connections
    await load.drain(expected)
    cpu, busy = process_cpu(server.pid) - cpu, cores.since()
    got = await load.end()
    delivered = got["delivered"]
    result = {
        "n": load.connections,
        "rate": rate,
        "rate_achieved": round(count / publishing, 1),
        "updates": updates,
        "expected": expected,
        **{k: got[k] for k in ("delivered", "closed", "snapshots", "samples")},
        "per_connection": [got["per_connection_min"], got["per_connection_max"]],
        **{k: got[k] for k in ("p50_ms", "p99_ms", "max_ms")},
        "deliveries_per_s": round(delivered / publishing),
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_delivery": round(cpu * 1e6 / delivered, 2) if delivered else None,
        "client_us_per_delivery": round(got["cpu_ns"] / 1e3 / delivered, 2) if delivered else None,
        **busy,
        "window_s": round(loop.time() - started, 2),
    }
    p99 = got["p99_ms"]
    result["held"] = (
        delivered == expected > 0 and not got["closed"] and p99 is not None and p99 < P99_LIMIT_MS
    )
    result["client_limited"] = busy["client_core_busy"] >= SATURATED
    result["contended"] = max(busy["server_core_others"], busy["client_core_others"]) >= CONTENDED
    return result


# --- the sections


@dataclass
class Bench:
    plan: Plan
    children: Children
    results: dict[str, Any]

    async def windows(
        self,
        kind: str,
        transport: str,
        n: int,
        rates: tuple[int, ...],
        window: float,
        *,
        until_fails: bool = False,
        profile_to: Path | None = None,
    ) -> list[dict[str, Any]]:
        """One server with `n` subscribers, measured at each rate in turn."""
        say(f"{kind} {transport}: N={n:,}, R={list(rates)}")
        out = []
        async with (
            stack(self.children, kind) as server,
            FEEDS[kind](server) as feed,
            Load.running(self.children, server, transport, feed.marker) as load,
        ):
            failed = await load.connect(n)
            for rate in rates:
                spy = await self._profile(server, window, profile_to) if profile_to else None
                result = await measure(self.children, server, feed, load, rate, window)
                if until_fails and not result["held"] and result["contended"]:
                    say("that step ran while other processes used the bench's cores: once more")
                    await asyncio.sleep(2.0)
                    result = await measure(self.children, server, feed, load, rate, window)
                if spy is not None:
                    result["profile"] = await spy
                result.update(server=kind, transport=transport, failed=failed)
                result["upstream_requests"] = server.trap.requests if server.trap else None
                say(f"{kind} {transport} N={n} R={rate}: {_short(result)}")
                out.append(result)
                if until_fails and not result["held"]:
                    break
        return out

    async def _profile(self, server: Server, window: float, out: Path) -> Awaitable[dict[str, str]]:
        """Start py-spy on the server for the coming window; await the result for its files."""
        speedscope = out.with_suffix(".speedscope.json")
        argv = [str(Path(PYTHON).with_name("py-spy")), "record", "--pid", str(server.pid)]
        argv += ["--duration", str(round(window + 1)), "--rate", "250", "--nonblocking"]
        spy = await self.children.start(
            "py-spy", [*argv, "--format", "speedscope", "--output", str(speedscope)], CLIENT_CORE
        )

        async def finished() -> dict[str, str]:
            try:
                async with asyncio.timeout(window + 30):
                    await spy.wait()
            finally:
                await self.children.stop(spy)
            summary = out.with_suffix(".txt")
            summary.write_text(profile_summary(json.loads(speedscope.read_text())))
            return {"speedscope": str(speedscope), "summary": str(summary)}

        await asyncio.sleep(0.5)  # py-spy attaches before the window starts
        return finished()

    async def steady(self) -> None:
        p, runs = (
            self.plan,
            [("buildcast", "sse"), ("buildcast", "ws"), ("baseline", "sse"), ("baseline", "ws")],
        )
        self.results["steady"] = [
            r
            for kind, tr in runs
            for r in await self.windows(kind, tr, p.n_steady, (p.rate,), p.window)
        ]

    async def auth(self) -> None:
        """Access control costs nothing per delivery: it is checked when a connection opens."""
        p = self.plan
        runs = [(kind, tr) for tr in ("sse", "ws") for kind in ("buildcast", AUTHENTICATED)]
        n = p.n_large or p.n_steady
        self.results["auth"] = [
            r for kind, tr in runs for r in await self.windows(kind, tr, n, (p.rate,), p.window)
        ]

    async def large(self) -> None:
        p, runs = self.plan, [("buildcast", "sse"), ("buildcast", "ws"), ("baseline", "sse")]
        self.results["large"] = [
            r
            for kind, tr in runs
            for r in await self.windows(kind, tr, p.n_large, (p.rate,), p.window)
        ]

    async def sweep(self) -> None:
        p, out = self.plan, []
        for kind, transport in [("buildcast", "sse"), ("buildcast", "ws"), ("baseline", "sse")]:
            steps = await self.windows(
                kind, transport, p.sweep_n, p.sweep_rates, p.sweep_window, until_fails=True
            )
            best = max((s["deliveries_per_s"] for s in steps if s["held"]), default=None)
            last = steps[-1]
            stopped = "the sweep's top rate held" if last["held"] else _limit(last)
            out.append(
                {
                    "server": kind,
                    "transport": transport,
                    "steps": steps,
                    "max_deliveries_per_s": best,
                    "stopped_by": stopped,
                }
            )
        self.results["sweep"] = out

    async def idle(self) -> None:
        self.results["idle"] = [
            await self._idle(kind, transport)
            for kind, transport in [("buildcast", "sse"), ("buildcast", "ws"), ("baseline", "sse")]
        ]

    async def _idle(self, kind: str, transport: str) -> dict[str, Any]:
        """Server RSS with a few connections, then with many more idle ones: per connection."""
        say(f"{kind} {transport}: idle connections {self.plan.idle_counts} (0: fd limit)")
        warm = 10
        async with (
            stack(self.children, kind) as server,
            FEEDS[kind](server) as feed,
            Load.running(self.children, server, transport, feed.marker, processes=2) as load,
        ):
            await load.connect(warm)
            base = await settled_rss(server.pid)
            fds, limit = open_files(server.pid)
            # One descriptor per connection; Redis pools may grow while many connections open.
            most = limit - (fds - warm) - 250
            points = []
            for count in self.plan.idle_counts:
                wanted = min(count, most) if count else most
                failed = await load.connect(wanted)
                rss = await settled_rss(server.pid)
                held = load.connections - (await load.count())["closed"]
                per = round((rss - base) / max(1, held - warm), 2)
                points.append(
                    {
                        "wanted": wanted,
                        "held": held,
                        "failed": failed,
                        "rss_kb": rss,
                        "kb_per_connection": per,
                    }
                )
                say(f"{kind} {transport}: {held:,} idle connections, RSS {rss / 1024:.0f} MB")
        return {
            "server": kind,
            "transport": transport,
            "warm": warm,
            "rss_warm_kb": base,
            "fd_limit": limit,
            "points": points,
        }

    async def end_to_end(self) -> None:
        p = self.plan
        say(f"end to end: buildcast sse through the poller, N={p.e2e_n:,}, R={p.rate}")
        async with (
            simulator(self.children) as upstream,
            stack(self.children, "buildcast", upstream=upstream, poll_active=0.05) as server,
            SimulatorFeed.serving(server, upstream) as feed,
            Load.running(self.children, server, "sse", feed.marker, build_id=feed.BUILD) as load,
        ):
            failed = await load.connect(p.e2e_n)
            result = await measure(self.children, server, feed, load, p.rate, p.window)
            result.update(server="buildcast", transport="sse", poll_active=0.05, failed=failed)
        say(f"end to end: {_short(result)}")
        self.results["end_to_end"] = [result]

    async def profile(self, out: Path) -> None:
        p = self.plan
        runs = await self.windows(
            "buildcast", "sse", PROFILE_N, (p.rate,), p.window, profile_to=out
        )
        self.results["profile"] = runs[0]


def _short(r: dict[str, Any]) -> str:
    return (
        f"{r['delivered']:,}/{r['expected']:,} delivered, p99 {_ms(r['p99_ms'])}, "
        f"{r['cpu_us_per_delivery']} µs/delivery, cores {r['server_core_busy']:.0%} "
        f"(others {r['server_core_others']:.0%}) / {r['client_core_busy']:.0%} "
        f"(others {r['client_core_others']:.0%})"
    )


def _limit(step: dict[str, Any]) -> str:
    why = []
    if step["client_limited"]:
        why.append("client-limited (the load client's core was saturated)")
    if step["server_core_busy"] >= SATURATED:
        why.append("the server's core was saturated")
    if step["contended"]:
        why.append("other processes used the bench's cores")
    return "; ".join(why) or "latency or loss with neither core saturated"


def profile_summary(speedscope: dict[str, Any]) -> str:
    """A `py-spy top`-like table of a speedscope profile: own and total share per function."""
    frames = speedscope["shared"]["frames"]
    own: dict[int, float] = {}
    total: dict[int, float] = {}
    weight, samples = 0.0, 0
    for profile in speedscope["profiles"]:
        samples += len(profile["samples"])
        for stack_, w in zip(profile["samples"], profile["weights"], strict=True):
            weight += w
            if stack_:
                own[stack_[-1]] = own.get(stack_[-1], 0.0) + w
            for frame in set(stack_):
                total[frame] = total.get(frame, 0.0) + w

    def rows(order: dict[int, float]) -> list[str]:
        top = sorted(order, key=order.__getitem__, reverse=True)[:30]
        return [
            f"{own.get(i, 0.0) / weight:6.1%} {total[i] / weight:7.1%}  {frames[i]['name']} "
            f"({frames[i].get('file', '?')}:{frames[i].get('line', '?')})"
            for i in top
        ]

    header = "  %Own  %Total  function (file:line)"
    return "\n".join(
        [
            f"{samples} samples, {weight:.2f} s of the server's CPU time",
            "",
            "By own time:",
            header,
            *rows(own),
            "",
            "By total (inclusive) time:",
            header,
            *rows(total),
            "",
        ]
    )


# --- the report


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "≥10 s" if value >= BUCKET_NS * BUCKETS / 1e6 else f"{value:.1f} ms"


def _x(better: float | None, worse: float | None) -> str:
    """How many times `worse` is `better` (e.g. CPU 36 vs 6: 6.0x)."""
    return "-" if not better or not worse else f"{worse / better:.1f}x"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def window_table(results: list[dict[str, Any]]) -> str:
    headers = [
        "server",
        "transport",
        "N",
        "R/s",
        "delivered/expected",
        "p50",
        "p99",
        "max",
        "server µs/dlv",
        "client µs/dlv",
        "server core",
        "client core",
        "note",
    ]
    rows = []
    for r in results:
        note = [] if r["held"] else ["did not hold"]
        note += ["client-limited"] if r["client_limited"] else []
        note += [f"{r['closed']} closed"] if r["closed"] else []
        note += ["contended"] if r["contended"] else []
        rows.append(
            [
                r["server"],
                r["transport"],
                f"{r['n']:,}",
                f"{r['rate']:g}",
                f"{r['delivered']:,}/{r['expected']:,}",
                _ms(r["p50_ms"]),
                _ms(r["p99_ms"]),
                _ms(r["max_ms"]),
                str(r["cpu_us_per_delivery"]),
                str(r["client_us_per_delivery"]),
                f"{r['server_core_busy']:.0%} ({r['server_core_others']:.0%})",
                f"{r['client_core_busy']:.0%} ({r['client_core_others']:.0%})",
                ", ".join(note),
            ]
        )
    return table(headers, rows)


def ratios(results: list[dict[str, Any]]) -> list[str]:
    """Buildcast against the baseline on each transport, and its WebSocket against its SSE."""
    by = {(r["server"], r["transport"]): r for r in results}
    lines = []
    for transport in ("sse", "ws"):
        ours, base = by.get(("buildcast", transport)), by.get(("baseline", transport))
        if ours and base:
            cpu, base_cpu = ours["cpu_us_per_delivery"], base["cpu_us_per_delivery"]
            lines.append(
                f"{transport.upper()}: CPU/delivery {cpu} µs vs baseline {base_cpu} µs: "
                f"{_x(cpu, base_cpu)} lower; p99 {_ms(ours['p99_ms'])} vs {_ms(base['p99_ms'])}"
            )
    sse, ws = by.get(("buildcast", "sse")), by.get(("buildcast", "ws"))
    if sse and ws:
        cpu = _x(sse["cpu_us_per_delivery"], ws["cpu_us_per_delivery"])
        lines.append(f"Buildcast WS/SSE: CPU/delivery {cpu}, p99 {_x(sse['p99_ms'], ws['p99_ms'])}")
    return lines


def auth_ratios(results: list[dict[str, Any]]) -> list[str]:
    by = {(r["server"], r["transport"]): r for r in results}
    lines = []
    for transport in ("sse", "ws"):
        plain, guarded = by.get(("buildcast", transport)), by.get((AUTHENTICATED, transport))
        if plain and guarded:
            ratio = guarded["cpu_us_per_delivery"] / plain["cpu_us_per_delivery"]
            lines.append(
                f"{transport.upper()}: CPU/delivery {guarded['cpu_us_per_delivery']} µs with "
                f"tokens vs {plain['cpu_us_per_delivery']} µs without: {ratio:.3f}x; "
                f"p99 {_ms(guarded['p99_ms'])} vs {_ms(plain['p99_ms'])}"
            )
    return lines


def report(results: dict[str, Any]) -> str:
    out = [
        "server/client core: busy share of the core (in parentheses: processes not the bench's)",
        "",
    ]
    for key, title in (("steady", "Steady load"), ("large", "Many subscribers")):
        if results.get(key):
            out += [f"== {title} ==", window_table(results[key]), *ratios(results[key]), ""]
    if results.get("auth"):
        out += ["== With and without --auth-secret ==", window_table(results["auth"])]
        out += [*auth_ratios(results["auth"]), ""]
    if sweeps := results.get("sweep"):
        out.append(f"== Highest deliveries/s on one core (p99 < {P99_LIMIT_MS:g} ms, no loss) ==")
        out.append(window_table([s for sweep in sweeps for s in sweep["steps"]]))
        best = {(s["server"], s["transport"]): s["max_deliveries_per_s"] for s in sweeps}
        for s in sweeps:
            out.append(
                f"{s['server']} {s['transport']}: {s['max_deliveries_per_s'] or 0:,}/s held; "
                f"then stopped by: {s['stopped_by']}"
            )
        ours, base = best.get(("buildcast", "sse")), best.get(("baseline", "sse"))
        ws = best.get(("buildcast", "ws"))
        out.append(
            f"SSE: {_x(base, ours)} the baseline's deliveries/s; WS/SSE {_x(ws, ours)}"
            if base
            else "SSE: the baseline held no step"
        )
        out.append("")
    if idle := results.get("idle"):
        out.append("== RSS per idle connection ==")
        rows = [
            [
                i["server"],
                i["transport"],
                f"{p['held']:,}",
                f"{p['rss_kb'] / 1024:.0f} MB",
                f"{p['kb_per_connection']:.2f} KB",
            ]
            for i in idle
            for p in i["points"]
        ]
        out.append(
            table(["server", "transport", "idle connections", "RSS", "per connection"], rows)
        )
        by = {(i["server"], i["transport"]): i["points"][-1]["kb_per_connection"] for i in idle}
        ours, base, ws = (
            by.get(("buildcast", "sse")),
            by.get(("baseline", "sse")),
            by.get(("buildcast", "ws")),
        )
        out.append(
            f"SSE: {ours} KB vs baseline {base} KB: {_x(ours, base)} lower; WS/SSE {_x(ours, ws)}"
        )
        out.append("")
    if e2e := results.get("end_to_end"):
        r = e2e[0]
        out += ["== End to end through the poller (--poll-active 0.05) ==", window_table(e2e)]
        out.append(
            f"latency: from the simulator's event time (ms resolution) to the client's read; "
            f"{r['samples']:,} of {r['delivered']:,} deltas carried an event"
        )
        out.append("")
    if prof := results.get("profile"):
        out += ["== Profiled run (py-spy attached: not a measurement) ==", window_table([prof])]
        out.append(
            f"profile: {prof['profile']['speedscope']}\nsummary: {prof['profile']['summary']}"
        )
        out.append("")
    polled = [r["upstream_requests"] for k in ("steady", "large") for r in results.get(k, [])]
    out.append(f"upstream requests by bus-fed gateways (must be 0): {sum(filter(None, polled))}")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()

    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu": model[1].strip() if model else platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: version(name) for name in ("uvloop", "aiohttp", "aiohttp-sse", "redis")},
        "redis-server": run("redis-server", "--version"),
        "commit": run("git", "-C", str(BENCH.parent), "rev-parse", "HEAD"),
        "uncommitted_files": len(
            run("git", "-C", str(BENCH.parent), "status", "--porcelain").splitlines()
        ),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    out: Path = args.out
    results: dict[str, Any] = {"machine": machine(), "plan": asdict(plan), "quick": args.quick}
    children = Children(out.parent / "logs")
    bench = Bench(plan, children, results)
    started = time.monotonic()
    sections = {
        "steady": bench.steady,
        "large": bench.large if plan.n_large else None,
        "sweep": bench.sweep,
        "idle": bench.idle,
        "e2e": bench.end_to_end,
        "auth": bench.auth,
    }
    try:
        for name, section in sections.items():
            if section is not None and name in args.only:
                await section()
        if args.profile:
            await bench.profile(out.with_name(out.stem + "-profile"))
    finally:
        await children.close()
        results["duration_s"] = round(time.monotonic() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


SECTIONS = ("steady", "large", "sweep", "idle", "e2e", "auth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "fanout.json")
    parser.add_argument(
        "--profile", action="store_true", help="also py-spy the server at N=1000 R=20 (SSE)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    args = parser.parse_args()
    if unknown := args.only - set(SECTIONS):
        parser.error(f"no such section: {', '.join(sorted(unknown))}")
    if (os.cpu_count() or 1) < 2:
        sys.exit("fanout.py needs 2 cores: the server on one, the load client on the other")
    os.sched_setaffinity(0, {CLIENT_CORE})  # the publisher stays off the server's core
    results = asyncio.run(run(args))
    print(report(results))
    print(f"\n{results['duration_s']} s; every figure in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
