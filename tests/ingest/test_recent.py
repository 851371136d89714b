"""`GET /api/v1/recent`: the builds the deployment watched in the last day, with their final
state, newest first, after nobody watches them any more; on every replica; only those a
token names. And, in fake time (tests/helpers/clock.py), for how long a build stays there."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends.base import RECENT_BUILDS
from gateway.backends.memory import MemoryBus, MemoryLease, MemoryRecent
from gateway.guard.tokens import mint
from gateway.ingest.watch import RECORD_EVERY, Watches
from gateway.settings import Settings
from gateway.simulator import Simulator
from tests.helpers.clock import in_fake_time
from tests.helpers.fake_upstream import BASE, FakeUpstream
from tests.helpers.gateways import (
    StartGateway,
    StartReplica,
    drive,
    eventually,
    gateway_view,
)
from tests.test_openapi import CONTRACT


async def listed(
    session: aiohttp.ClientSession, gateway: TestServer, route: str, **kwargs: Any
) -> list[Any]:
    async with session.get(gateway.make_url(f"/api/v1/{route}"), **kwargs) as response:
        assert response.status == 200, await response.text()
        builds: list[Any] = (await CONTRACT.check_response(f"/api/v1/{route}", response))["builds"]
        return builds


async def watched_to_the_end(
    sim: Simulator, session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> None:
    """A viewer watches the build until its end and leaves."""
    await gateway_view(session, gateway, build_id)
    await drive(sim, build_id, every=0.0)

    async def ended() -> bool:
        view = await gateway_view(session, gateway, build_id)
        return view["status"] in ("BuildRequestCompleted", "BuildRequestFailed")

    await eventually(ended, what=f"{build_id} ended in the gateway")


async def test_ended_builds_stay_listed_with_their_final_state_newest_first(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    started = int(time.time() * 1000)
    failed = sim.create_build(["a", "b"], fail=["b"])
    completed = sim.create_build(["c"])
    await watched_to_the_end(sim, session, gateway, failed)
    await watched_to_the_end(sim, session, gateway, completed)

    async def nobody_watches() -> bool:
        return not await listed(session, gateway, "watched")

    await eventually(nobody_watches, what="both watches over (1 s of grace)")
    recent = await listed(session, gateway, "recent")
    assert [b["buildId"] for b in recent] == [completed, failed], "last watched first"
    assert [b["status"] for b in recent] == ["BuildRequestCompleted", "BuildRequestFailed"]
    assert recent[1]["partitions"] == {"total": 2, "available": 1, "failed": 1}
    ended = int(time.time() * 1000)
    assert started <= recent[1]["lastWatchedAtMs"] <= recent[0]["lastWatchedAtMs"] <= ended


async def test_a_build_never_found_is_not_listed(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(gateway.make_url("/api/v1/builds/br-nowhere")) as response:
        assert response.status == 404
    assert await listed(session, gateway, "recent") == []


async def test_a_token_lists_only_the_builds_it_names(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    secret = "a-secret-of-at-least-32-bytes-long"
    gateway = await start_gateway(auth_secret=secret)
    mine, theirs = sim.create_build(2, build_id="team-a-1"), sim.create_build(2)
    everything = {"Authorization": f"Bearer {mint(secret, ['*'], 600)}"}
    for build_id in (mine, theirs):
        async with session.get(
            gateway.make_url(f"/api/v1/builds/{build_id}"), headers=everything
        ) as response:
            assert response.status == 200

    def both(builds: list[Any]) -> bool:
        return len(builds) == 2

    await eventually(
        lambda: listed(session, gateway, "recent", headers=everything), both, what="both recorded"
    )
    async with session.get(gateway.make_url("/api/v1/recent")) as response:
        assert response.status == 401
    team_a = {"Authorization": f"Bearer {mint(secret, ['team-a-*'], 600)}"}
    assert [b["buildId"] for b in await listed(session, gateway, "recent", headers=team_a)] == [
        mine
    ]


@pytest.mark.integration
async def test_every_replica_lists_what_any_replica_watched(
    sim: Simulator, start_replica: StartReplica, session: aiohttp.ClientSession
) -> None:
    one, other = await start_replica(), await start_replica()
    build_id = sim.create_build(["a"], fail=["a"])
    await watched_to_the_end(sim, session, one, build_id)

    def listed_there(builds: list[Any]) -> bool:
        return [(b["buildId"], b["status"]) for b in builds] == [(build_id, "BuildRequestFailed")]

    await eventually(
        lambda: listed(session, other, "recent"), listed_there, what="listed on the other replica"
    )


DAY = 86_400.0
EPOCH = 1_800_000_000.0  # the wall clock when the fake loop's starts


def test_a_build_watched_for_days_stays_recent_until_a_day_after_its_watch_ended() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(2)
    sim.finish(build_id)
    upstream = FakeUpstream(sim)
    config = Settings(upstream=BASE, poll_idle=600.0, partition_refresh=600.0, lease_ttl=300.0)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def wall_ms() -> int:
            return int((EPOCH + loop.time()) * 1000)

        recent = MemoryRecent(DAY, RECENT_BUILDS, lambda: EPOCH + loop.time())
        bus, lease = MemoryBus(), MemoryLease("here", config.lease_ttl)
        async with upstream.client() as client:
            watches = Watches(config, client, bus, lease, recent=recent)
            try:
                async with watches.watching(build_id):  # a wall, for two days
                    await asyncio.sleep(2 * DAY)
                    [(listed, at)] = await recent.recent()
                    assert listed == build_id
                    assert at >= wall_ms() - 1000 * (RECORD_EVERY + config.lease_ttl), "now"
                await asyncio.sleep(config.grace + config.lease_ttl)
                [(_, ended_at)] = await recent.recent()
                assert ended_at >= wall_ms() - 1000 * config.lease_ttl, "noted when it ended"
                await asyncio.sleep((ended_at - wall_ms()) / 1000 + DAY - 60)
                assert await recent.recent() != [], "still there a minute before a day is up"
                await asyncio.sleep(120)
                assert await recent.recent() == [], "a day after: gone"
            finally:
                await watches.close()

    in_fake_time(scenario)
