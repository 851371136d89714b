"""A replica's drain on SIGTERM, end to end: two replicas on a real redis-server, 200 streams.

The replica that stops must hand its builds over at once where another replica
follows them, send its viewers to the other replica spread over its drain window
(not as one herd), and exit within the window; every viewer must continue where
it was, with no gap and no fresh snapshot. The measured figures (exit time, the
spread of the returns, lease handover times) go to tests/artifacts/drain.json.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.helpers.procs import LiveViewer, Proc, Procs, ended, wait_all
from tests.helpers.redis_servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ARTIFACT = Path(__file__).parent / "artifacts" / "drain.json"
DRAIN_SECONDS = 4.0
ON_STOPPING = 150  # viewers on the replica that stops, spread over four builds
ON_STAYING = 50  # viewers on the one that stays, of the first two builds only
SLICES = 8  # the window cut in slices, to see how the returns spread
OPTIONS = (
    "--poll-active", "0.1",
    "--poll-idle", "0.3",
    "--grace", "1",
    "--lease-ttl", "1.5",
    "--drain-seconds", str(DRAIN_SECONDS),
)  # fmt: skip
BUILD = {"partitions": 40, "log_lines": 3}  # runs longer than the test: finished by it


@pytest.fixture
async def many() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without aiohttp's default cap of 100 connections."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, json=body) as response:
        assert response.status < 300, await response.text()
        return None if response.status == 204 else await response.json()


def holder(client: redis.Redis, build_id: str, gateways: list[Proc]) -> str | None:
    """The name of the gateway whose id the build's lease holds (replica ids name the PID)."""
    for key in client.scan_iter(match=f"*{build_id}*lease*"):
        value = (client.get(key) or b"").decode()
        for gateway in gateways:
            if f":{gateway.pid}:" in f":{value}:":
                return gateway.name
    return None


async def handovers(
    client: redis.Redis, builds: list[str], gateways: list[Proc], to: str, since: float
) -> dict[str, float]:
    """Seconds from `since` until each build's lease is `to`'s (bounded: the drain window)."""
    taken: dict[str, float] = {}
    deadline = since + DRAIN_SECONDS + 3
    while len(taken) < len(builds) and time.monotonic() < deadline:
        for build_id in builds:
            if build_id not in taken and holder(client, build_id, gateways) == to:
                taken[build_id] = round(time.monotonic() - since, 3)
        await asyncio.sleep(0.02)
    return taken


def exit_of(gateway: Proc, since: float) -> tuple[int, float]:
    """Its exit status, and the seconds from `since` until it exited (bounded)."""
    status = gateway.terminate(DRAIN_SECONDS + 10)
    return status, time.monotonic() - since


async def test_sigterm_sends_viewers_elsewhere_spread_over_the_window(
    redis_server: RedisServer, procs: Procs, many: aiohttp.ClientSession
) -> None:
    sim = procs.simulate("--tick", "0.3", "--keep-active", "0")
    stopping = procs.serve(sim.url, "--redis", redis_server.url, *OPTIONS, name="stopping")
    staying = procs.serve(sim.url, "--redis", redis_server.url, *OPTIONS, name="staying")
    builds = [
        (await call(many, "POST", f"{sim.url}/_sim/builds", BUILD))["build_request_id"]
        for _ in range(4)
    ]
    # The stopping replica's viewers first: it polls (holds the lease of) every build.
    leaving = [
        LiveViewer(many, [stopping.url, staying.url], builds[n % 4], name=f"leaving-{n}")
        for n in range(ON_STOPPING)
    ]
    remaining = [
        LiveViewer(many, [staying.url], builds[n % 2], name=f"staying-{n}")
        for n in range(ON_STAYING)
    ]
    viewers = leaving + remaining
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        for viewer in leaving:
            viewer.start()
        await wait_all(leaving, lambda v: bool(v.snapshots), 30, "given a snapshot")
        for viewer in remaining:
            viewer.start()
        await wait_all(remaining, lambda v: bool(v.snapshots), 30, "given a snapshot")
        await wait_all(viewers, lambda v: bool(v.deltas()), 15, "given a delta")
        gateways = [stopping, staying]
        assert all(holder(client, b, gateways) == "stopping" for b in builds), [
            holder(client, b, gateways) for b in builds
        ]

        began = time.monotonic()
        stopping.signal(signal.SIGTERM)
        followed, moved, (exit_status, exited) = await asyncio.gather(
            handovers(client, builds[:2], gateways, "staying", began),
            handovers(client, builds[2:], gateways, "staying", began),
            asyncio.to_thread(exit_of, stopping, began),
        )
        await wait_all(leaving, lambda v: len(v.connected) > 1, 10, "back on the other replica")

        for build_id in builds:
            await call(many, "POST", f"{sim.url}/_sim/builds/{build_id}/finish")
        await wait_all(viewers, lambda v: ended(v.view), 30, "shown the build's end")
        finals = {b: await call(many, "GET", f"{staying.url}/api/v1/builds/{b}") for b in builds}
    finally:
        client.close()
        for viewer in viewers:
            await viewer.stop()

    assert exit_status == 0, stopping.describe()
    assert "Traceback" not in stopping.stderr(), stopping.describe()
    # It exits once its last viewer has gone, within the window (and the time to exit).
    assert exited < DRAIN_SECONDS + 2, f"exited {exited:.1f} s after SIGTERM"
    # Builds followed on the other replica are handed over at once...
    assert sorted(followed) == sorted(builds[:2]), followed
    assert max(followed.values()) < 1.5, followed
    # ...and the others as soon as their viewers have moved (the lease: never unpolled).
    assert sorted(moved) == sorted(builds[2:]), moved

    returns = sorted(
        at - began for viewer in leaving for at, gateway in viewer.connected if at > began
    )
    assert len(returns) == ON_STOPPING, f"{len(returns)} of {ON_STOPPING} came back"
    assert all(gateway == staying.url for v in leaving for _, gateway in v.connected[1:])
    slices = Counter(min(int(t / DRAIN_SECONDS * SLICES), SLICES - 1) for t in returns)
    # Spread over the window: no slice takes more than twice its even share, so the other
    # replica meets a steady trickle of reconnects, not a herd.
    even = ON_STOPPING / SLICES
    assert max(slices.values()) <= 2 * even, sorted(slices.items())
    assert returns[-1] - returns[0] > DRAIN_SECONDS / 2, (returns[0], returns[-1])

    for viewer in viewers:
        assert viewer.problems == [], viewer.summary()  # every delta after its predecessor
        assert len(viewer.snapshots) == 1, viewer.summary()  # resumed, never started over
        assert viewer.view == finals[viewer.build_id], viewer.summary()

    record(
        {
            "drain_seconds": DRAIN_SECONDS,
            "streams": ON_STOPPING + ON_STAYING,
            "on_the_stopping_replica": ON_STOPPING,
            "exit_after_sigterm_s": round(exited, 2),
            "lease_handover_s": {"followed_elsewhere": followed, "followed_here_only": moved},
            "returns_s": {
                "first": round(returns[0], 2),
                "median": round(statistics.median(returns), 2),
                "last": round(returns[-1], 2),
            },
            "returns_per_slice": [slices.get(n, 0) for n in range(SLICES)],
            "slice_s": DRAIN_SECONDS / SLICES,
        }
    )


def record(figures: dict[str, Any]) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
