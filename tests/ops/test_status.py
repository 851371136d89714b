"""`GET /api/v1/status`: every replica, and for every watched build who polls it, how often,
how old its data is and how many watch it; with access control, only the token's builds.

Over real HTTP on loopback; the replicas of the last test share a real redis-server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.guard.tokens import mint
from gateway.settings import Settings
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartGateway, StartReplica, eventually, stream_url
from tests.helpers.sse import Viewer, ended, events
from tests.test_openapi import DOCUMENT, Contract

SECRET = "a-secret-of-at-least-32-bytes-long"
REPLICA_KEYS = {"id", "host", "pid", "startedAtMs", "connections", "pollers"}
BUILD_KEYS = {"buildId", "owner", "pollInterval", "lastPollAtMs", "dataAgeMs", "viewers", "stale"}
CONTRACT = Contract(DOCUMENT)
"""docs/openapi.yaml, strict: every answer fits its documented schema, with no field more."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def status_of(
    session: aiohttp.ClientSession, gateway: TestServer, token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(gateway.make_url("/api/v1/status"), headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        body: dict[str, Any] = await response.json()
    CONTRACT.check(body, "/components/schemas/Status")
    assert set(body) == {"replicas", "builds", "redis"}
    for replica in body["replicas"]:
        assert set(replica) == REPLICA_KEYS, replica
    for build in body["builds"]:
        assert set(build) == BUILD_KEYS, build
    return body


def asking(
    session: aiohttp.ClientSession, gateway: TestServer, token: str | None = None
) -> Callable[[], Awaitable[dict[str, Any]]]:
    return lambda: status_of(session, gateway, token)


def builds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {build["buildId"]: build for build in status["builds"]}


@asynccontextmanager
async def watching(
    session: aiohttp.ClientSession, gateway: TestServer, build_id: str, token: str | None = None
) -> AsyncIterator[None]:
    """An SSE viewer of the build, from its first snapshot until the block ends."""
    query = f"?token={token}" if token else ""
    async with session.get(stream_url(gateway, build_id) + query) as response:
        assert response.status == 200, await response.text()
        assert (await anext(events(response))).event == "snapshot"
        yield


async def test_a_watched_build_shows_its_owner_viewers_cadence_and_data_age(
    sim: Simulator,
    start_gateway: StartGateway,
    settings: Settings,
    session: aiohttp.ClientSession,
) -> None:
    gateway = await start_gateway(grace=0.3)
    replica = gateway.app[STATE].backends.replica
    empty = await status_of(session, gateway)
    assert empty["builds"] == []
    assert empty["redis"] == {"mode": "none", "up": True}
    [me] = empty["replicas"]
    assert me["id"] == replica
    assert (me["host"], me["pid"]) == (socket.gethostname(), os.getpid())
    assert me["startedAtMs"] <= now_ms()
    assert (me["connections"], me["pollers"]) == (0, 0)

    build_id = sim.create_build(["p/0", "p/1"])
    started_ms = now_ms()
    async with AsyncExitStack() as viewers:
        for _ in range(2):
            await viewers.enter_async_context(watching(session, gateway, build_id))
        status = await status_of(session, gateway)
        asked_ms = now_ms()
        [me] = status["replicas"]
        assert (me["connections"], me["pollers"]) == (2, 1)
        assert me["startedAtMs"] == empty["replicas"][0]["startedAtMs"]
        build = builds(status)[build_id]
        assert build["owner"] == replica
        assert build["viewers"] == 2
        assert build["pollInterval"] == settings.poll_active, "a running build: the active pace"
        assert build["stale"] is False
        assert started_ms <= build["lastPollAtMs"] <= asked_ms
        # The upstream answered after this test asked for the build: no older than that.
        assert 0 <= build["dataAgeMs"] <= asked_ms - started_ms

        sim.finish(build_id)
        status = await eventually(
            asking(session, gateway),
            lambda s: builds(s)[build_id]["pollInterval"] == settings.poll_idle,
            what="the idle pace once the build ended",
        )
        assert builds(status)[build_id]["owner"] == replica

    # Its viewers gone, it stays polled for its grace period (0 viewers), then leaves the list.
    status = await eventually(
        asking(session, gateway),
        lambda s: build_id not in builds(s) or builds(s)[build_id]["viewers"] == 0,
        what="the viewers counted out",
    )
    await eventually(
        asking(session, gateway), lambda s: s["builds"] == [], what="the build dropped"
    )
    [me] = (await status_of(session, gateway))["replicas"]
    assert (me["connections"], me["pollers"]) == (0, 0)


async def test_a_build_the_upstream_fails_for_shows_stale_with_its_data_aging(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Any
) -> None:
    build_id = sim.create_build(2)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    following = asyncio.create_task(viewer.follow(lambda view: False, timeout=30))
    try:
        await control.faults(status=503)
        stale = await eventually(
            asking(session, gateway),
            lambda s: builds(s)[build_id]["stale"],
            what="the build marked stale",
        )
        await asyncio.sleep(0.3)
        older = builds(await status_of(session, gateway))[build_id]
        assert older["dataAgeMs"] >= builds(stale)[build_id]["dataAgeMs"] + 300
        assert older["viewers"] == 1
        await control.clear_faults()
        await eventually(
            asking(session, gateway),
            lambda s: not builds(s)[build_id]["stale"],
            what="the build fresh again",
        )
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def test_with_access_control_a_token_sees_only_its_builds(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(auth_secret=SECRET)
    mine, theirs = sim.create_build(1), sim.create_build(1)
    everything = mint(SECRET, ["*"], 600)
    async with (
        watching(session, gateway, mine, mint(SECRET, [mine], 600)),
        watching(session, gateway, theirs, everything),
    ):
        async with session.get(gateway.make_url("/api/v1/status")) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        headers = {"Authorization": "Bearer not-a-token"}
        async with session.get(gateway.make_url("/api/v1/status"), headers=headers) as response:
            assert response.status == 401

        assert set(builds(await status_of(session, gateway, everything))) == {mine, theirs}
        only_mine = await status_of(session, gateway, mint(SECRET, [mine], 600))
        assert list(builds(only_mine)) == [mine]
        assert builds(only_mine)[mine]["viewers"] == 1
        assert [r["connections"] for r in only_mine["replicas"]] == [2]
        nothing = await status_of(session, gateway, mint(SECRET, ["team-b-*"], 600))
        assert nothing["builds"] == []
        cookie = {"Cookie": f"buildcast_token={mint(SECRET, [theirs], 600)}"}
        async with session.get(gateway.make_url("/api/v1/status"), headers=cookie) as response:
            assert [b["buildId"] for b in (await response.json())["builds"]] == [theirs]


# --- two replicas on one Redis


@pytest.mark.integration
async def test_every_replica_lists_every_replica_and_the_one_owner(
    start_replica: StartReplica, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    first, second = await start_replica(), await start_replica()
    names = {r.app[STATE].backends.replica for r in (first, second)}
    assert len(names) == 2
    build_id = sim.create_build(["p/0", "p/1", "p/2"])
    viewers = [
        Viewer(session, stream_url(first, build_id)),
        Viewer(session, stream_url(second, build_id)),
        Viewer(session, stream_url(second, build_id)),
    ]
    follows = [asyncio.create_task(v.follow(ended, timeout=40)) for v in viewers]
    try:
        await eventually(
            lambda: asyncio.sleep(0, viewers),
            lambda vs: all(v.view is not None for v in vs),
            what="every viewer has a view",
        )

        def agreed(status: dict[str, Any]) -> bool:  # each replica reports every lease_ttl / 3
            build = builds(status).get(build_id)
            return (
                {r["id"] for r in status["replicas"]} == names
                and build is not None
                and build["viewers"] == 3
                and build["owner"] in names
                and sum(r["pollers"] for r in status["replicas"]) == 1
                and sum(r["connections"] for r in status["replicas"]) == 3
            )

        seen = [
            await eventually(asking(session, replica), agreed, what="the whole deployment")
            for replica in (first, second)
        ]
        owners = {builds(status)[build_id]["owner"] for status in seen}
        assert len(owners) == 1, "both replicas name the same owner"
        [owner] = owners
        assert any(r.app[STATE].watches.polls(build_id) for r in (first, second))
        polling = next(r for r in (first, second) if r.app[STATE].watches.polls(build_id))
        assert polling.app[STATE].backends.replica == owner, "the owner is the lease holder"
        for status in seen:
            assert status["redis"] == {"mode": "single", "up": True}
            by_id = {r["id"]: r for r in status["replicas"]}
            assert by_id[owner]["pollers"] == 1
            build = builds(status)[build_id]
            assert build["dataAgeMs"] is not None and build["dataAgeMs"] >= 0
            assert build["lastPollAtMs"] is not None
    finally:
        for follow in follows:
            follow.cancel()
        await asyncio.gather(*follows, return_exceptions=True)

    await second.close()  # a replica that closes leaves the list at once
    status = await status_of(session, first)
    assert [r["id"] for r in status["replicas"]] == [first.app[STATE].backends.replica]
