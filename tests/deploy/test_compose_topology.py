"""docker-compose.yml's topology, run as plain processes: no Docker needed.

redis-server, `buildcast simulate`, two `buildcast serve` replicas configured with
the compose file's own environment (its host names swapped for loopback
addresses), and nginx with deploy/nginx.conf in front. Viewers connect only to
nginx, as browsers would.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from tests.helpers.deploy import buildcast_services, running_nginx, service_invocation
from tests.helpers.procs import SERVE_READY, LiveViewer, Proc, Procs, ended, wait_all
from tests.helpers.redis_servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PARTITIONS = 4
VIEWERS = 10
POLL_ACTIVE = 0.25
# Fast cadences, so a test sees many polls in a few seconds.
CADENCE = ("--poll-active", str(POLL_ACTIVE), "--poll-idle", "1", "--grace", "2")
LEASE_TTL = ("--lease-ttl", "2")
DRAIN_SECONDS = 2.0  # compose's is 10 s: the test waits less, the drain is the same
DRAIN = ("--drain-seconds", str(DRAIN_SECONDS))


@dataclass
class Topology:
    simulator: Proc
    gateways: dict[str, Proc]  # by compose service name
    nginx: str  # base URL: where every viewer connects
    access_log: Path

    def address(self, name: str) -> str:
        return urlsplit(self.gateways[name].url).netloc


def on_loopback(value: str, addresses: dict[str, str]) -> str:
    """A compose URL (`http://simulator:8081`) with its service host swapped for loopback."""
    parts = urlsplit(value)
    if parts.hostname not in addresses:
        return value
    return urlunsplit(parts._replace(netloc=addresses[parts.hostname]))


def wait_ready(url: str, timeout: float = 15.0) -> None:
    """Until /readyz answers 200, as compose's health check waits before starting nginx."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}/readyz did not answer 200 in {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def topology(redis_server: RedisServer, procs: Procs, tmp_path: Path) -> Iterator[Topology]:
    # Builds move only when a test says so: every change is one the test made.
    simulator = procs.simulate("--tick", "3600", "--keep-active", "0")
    addresses = {
        "simulator": urlsplit(simulator.url).netloc,
        "redis": f"127.0.0.1:{redis_server.port}",
    }
    gateways: dict[str, Proc] = {}
    for name, service in buildcast_services().items():
        command, env = service_invocation(service)
        if command[0] != "serve":
            continue
        env = {key: on_loopback(value, addresses) for key, value in env.items()}
        args = (*command, "--host", "127.0.0.1", "--port", "0", *CADENCE, *LEASE_TTL, *DRAIN)
        gateways[name] = procs.start(name, *args, ready=SERVE_READY, env=env, wait=False)
    assert set(gateways) == {"gateway-1", "gateway-2"}
    for gateway in gateways.values():
        gateway.wait_ready()
        wait_ready(gateway.url)
    workdir = tmp_path / "nginx"
    upstreams = [urlsplit(gateway.url).netloc for gateway in gateways.values()]
    with running_nginx(workdir, upstreams) as nginx:
        yield Topology(simulator, gateways, nginx, workdir / "access.log")


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


async def create_build(session: aiohttp.ClientSession, simulator: str) -> str:
    created = await call(session, "POST", f"{simulator}/_sim/builds", {"partitions": PARTITIONS})
    build_id: str = created["build_request_id"]
    return build_id


def viewers_of(session: aiohttp.ClientSession, topology: Topology, build_id: str) -> list[Any]:
    return [
        LiveViewer(session, [topology.nginx], build_id, name=f"viewer-{i}").start()
        for i in range(VIEWERS)
    ]


async def stream_upstreams(access_log: Path, build_id: str, count: int) -> list[str]:
    """The gateway address nginx logged for each stream of `build_id` (logged once it ends)."""
    pattern = re.compile(
        rf'"GET /api/v1/builds/{re.escape(build_id)}/stream HTTP/1\.1" \d+ \d+ upstream=(\S+)'
    )
    found: list[str] = []
    deadline = time.monotonic() + 5
    while len(found) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = pattern.findall(access_log.read_text()) if access_log.exists() else []
    return found


async def test_viewers_behind_nginx_get_every_change_at_once_from_one_poller(
    topology: Topology, session: aiohttp.ClientSession
) -> None:
    simulator = topology.simulator.url
    build_id = await create_build(session, simulator)
    await call(session, "POST", f"{simulator}/_sim/stats/reset")
    started = time.monotonic()
    viewers = viewers_of(session, topology, build_id)
    try:
        await wait_all(viewers, lambda v: bool(v.snapshots), 15, "given a snapshot")
        first_look = (await call(session, "GET", f"{simulator}/_sim/stats"))["endpoints"]
        # One first look for the whole deployment: each partition read once, not per replica.
        assert first_look["partition_status"] == PARTITIONS, first_look

        # Unbuffered: one change reaches every viewer through nginx within about a poll,
        # while its stream stays open.
        changed = time.monotonic()
        await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/advance")
        await wait_all(viewers, lambda v: bool(v.deltas(after=changed)), 10, "given the delta")
        latency = max(v.deltas(after=changed)[0].at - changed for v in viewers)
        assert latency < POLL_ACTIVE + 1.5, f"the change took {latency:.2f} s through nginx"
        assert all(v.connects == 1 and not v.failures for v in viewers), [
            v.summary() for v in viewers
        ]

        # Long enough that twice the polls of one poller cannot pass for timing noise.
        for _ in range(8):
            await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/advance")
            await asyncio.sleep(0.4)
        await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/finish")
        await wait_all(viewers, lambda v: ended(v.view), 20, "shown the build's end")
        elapsed = time.monotonic() - started
        stats = await call(session, "GET", f"{simulator}/_sim/stats")
        current = await call(session, "GET", f"{topology.nginx}/api/v1/builds/{build_id}")
    finally:
        for viewer in viewers:
            await viewer.stop()

    for viewer in viewers:
        # A snapshot, then deltas with contiguous seqs, on one connection, to the end.
        assert viewer.received[0].kind == "snapshot", viewer.summary()
        assert len(viewer.snapshots) == 1, viewer.summary()
        assert viewer.problems == [], viewer.summary()
        assert viewer.connects == 1, viewer.summary()
        assert viewer.view == current, viewer.summary()

    # One poller for the deployment: about one build request per --poll-active. Two
    # replicas polling on their own would make about twice as many.
    polls = elapsed / POLL_ACTIVE
    requests = stats["builds"][build_id]
    assert polls * 0.3 <= requests <= polls * 1.3 + 3, (requests, round(polls, 1), stats)
    assert stats["max_concurrent"][build_id] == 1, stats

    # The viewers were spread over both replicas (nginx logs a stream once it ended).
    used = await stream_upstreams(topology.access_log, build_id, VIEWERS)
    assert len(used) == VIEWERS, used
    assert set(used) == {topology.address("gateway-1"), topology.address("gateway-2")}, used


async def test_a_replica_stopped_behind_nginx_costs_its_viewers_nothing(
    topology: Topology, session: aiohttp.ClientSession
) -> None:
    """SIGTERM ends a replica's streams over its drain window; its viewers reconnect through
    nginx, land on the other replica and resume where they were: no error, no gap, no fresh
    snapshot."""
    simulator = topology.simulator.url
    build_id = await create_build(session, simulator)
    viewers = viewers_of(session, topology, build_id)
    try:
        await wait_all(viewers, lambda v: bool(v.snapshots), 15, "given a snapshot")
        await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/advance")
        await wait_all(viewers, lambda v: bool(v.deltas()), 10, "given a delta")

        stopping = topology.gateways["gateway-1"]
        began = time.monotonic()
        status = await asyncio.to_thread(stopping.terminate, 15)
        assert status == 0, stopping.describe()
        took = time.monotonic() - began
        assert took < DRAIN_SECONDS + 3, f"SIGTERM took {took:.1f} s"
        assert "Traceback" not in stopping.stderr(), stopping.describe()

        for _ in range(3):
            await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/advance")
            await asyncio.sleep(0.3)
        await call(session, "POST", f"{simulator}/_sim/builds/{build_id}/finish")
        await wait_all(viewers, lambda v: ended(v.view), 30, "shown the build's end")
        current = await call(session, "GET", f"{topology.nginx}/api/v1/builds/{build_id}")
    finally:
        for viewer in viewers:
            await viewer.stop()

    moved = [v for v in viewers if v.connects > 1]
    assert moved, "no viewer was on the stopped replica"
    for viewer in viewers:
        assert viewer.problems == [], viewer.summary()
        assert len(viewer.snapshots) == 1, viewer.summary()
        # Only "the server ended the stream": nginx never answered an error.
        assert all(f.endswith("the server ended the stream") for f in viewer.failures), (
            viewer.summary()
        )
        assert viewer.view == current, viewer.summary()
