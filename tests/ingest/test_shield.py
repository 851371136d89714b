"""The upstream shield: what a flood of ids, a vanished build or a hostile upstream costs.

Counts come from the simulator (behind an httpx transport in fake time, or over
real HTTP where the gateway's own routes are part of the story).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.backends.memory import MemoryMissing
from gateway.backends.redis.connection import RedisConnection
from gateway.backends.redis.missing import RedisMissing
from gateway.errors import TooMany, UpstreamInvalid, UpstreamNotFound, UpstreamUnavailable
from gateway.ingest.upstream import UpstreamClient
from gateway.ingest.watch import Watches
from gateway.simulator import Simulator
from tests.helpers.clock import in_fake_time
from tests.helpers.fake_upstream import SETTINGS, FakeUpstream, replica
from tests.helpers.gateways import StartGateway, Upstream
from tests.helpers.sse import events


async def ask(watches: Watches, build_id: str, client: str | None = None) -> str:
    """What a viewer asking for `build_id` gets: "view", or the error's class name."""
    try:
        async with watches.watching(build_id, client):
            return "view"
    except (UpstreamNotFound, TooMany, UpstreamUnavailable) as exc:
        return type(exc).__name__


def test_an_unknown_id_is_asked_once_a_minute_however_often_it_is_asked() -> None:
    upstream = FakeUpstream(Simulator(seed=1))

    async def scenario() -> None:
        async with replica(upstream, first_looks=True) as watches:
            for _ in range(50):
                assert await ask(watches, "br-nope") == "UpstreamNotFound"
                await asyncio.sleep(1.0)
        assert upstream.builds["br-nope"] == 1, "50 asks in 50 s: one upstream request"

    in_fake_time(scenario)


async def test_replicas_share_what_the_upstream_said_of_an_id() -> None:
    connection = RedisConnection(fakeredis.FakeAsyncRedis(), [])
    upstream = FakeUpstream(Simulator(seed=1))
    async with replica(upstream, RedisMissing(connection), first_looks=True) as a:
        assert await ask(a, "br-nope") == "UpstreamNotFound"
    async with replica(upstream, RedisMissing(connection), first_looks=True) as b:
        assert await ask(b, "br-nope") == "UpstreamNotFound"
    assert upstream.builds["br-nope"] == 1, "the second replica did not ask"
    await connection.close()


def test_a_replica_watches_at_most_max_builds() -> None:
    sim = Simulator(seed=1)
    builds = [sim.create_build(2) for _ in range(3)]
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with replica(upstream, first_looks=True, max_builds=2) as watches:
            holds = [watches.watching(b) for b in builds[:2]]
            for hold in holds:
                await hold.__aenter__()
            with pytest.raises(TooMany) as refused:
                await watches.watching(builds[2]).__aenter__()
            assert refused.value.retry_after == SETTINGS.grace, "when a slot may be free"
            async with watches.watching(builds[0]):
                pass  # one it watches already is no new build
            for hold in holds:
                await hold.__aexit__(None, None, None)
        assert upstream.builds[builds[2]] == 0

    in_fake_time(scenario)


def test_a_flood_of_random_ids_from_one_address_is_held_to_20_a_second() -> None:
    upstream = FakeUpstream(Simulator(seed=1))

    async def scenario() -> None:
        async with replica(upstream, first_looks=True) as watches:
            answers = [await ask(watches, f"br-random-{n}", "203.0.113.9") for n in range(200)]
            await asyncio.sleep(1.0)
            later = await ask(watches, "br-random-again", "203.0.113.9")
            other = await ask(watches, "br-other", "198.51.100.1")
        assert answers.count("TooMany") >= 175, "a burst of 20, then 429 with Retry-After"
        assert later == other == "UpstreamNotFound", "the next second, and other addresses, go on"
        assert upstream.endpoints["build"] <= 22

    in_fake_time(scenario)


def test_first_looks_queue_for_16_slots_and_watched_builds_keep_their_pace() -> None:
    sim = Simulator(seed=1)
    watched = sim.create_build(2)
    # Unknown ids answer slowly: the first looks a flood makes all hang for a while.
    upstream = FakeUpstream(sim, delay_unknown=5.0)

    async def scenario() -> None:
        async with (
            replica(upstream, first_looks=True, new_builds_per_second=1000.0) as watches,
            watches.watching(watched),
        ):
            polls = upstream.builds[watched]
            flood = [ask(watches, f"br-random-{n}", f"10.0.0.{n}") for n in range(100)]
            await asyncio.gather(*flood)  # 100 ids, 5 s each, 16 at a time: ~35 s
            polls = upstream.builds[watched] - polls
        assert upstream.most_at_once <= 16 + 1, "16 first looks, and the watched build's poll"
        assert polls >= 15, f"{polls} polls of the watched build in the flood: every 2 s"

    in_fake_time(scenario)


async def test_a_build_gone_upstream_answers_404_without_asking_again(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    build_id = sim.create_build(2)
    url = gateway.make_url(f"/api/v1/builds/{build_id}/stream")
    async with asyncio.timeout(10), session.get(url) as response:
        stream = events(response)
        assert (await anext(stream)).event == "snapshot"
        await control.faults(status=404)  # the build is deleted upstream
        last = [event async for event in stream][-1]
    assert (last.event, last.data["code"]) == ("error", "not_found"), "its viewers are told"
    before = (await control.stats())["builds"][build_id]
    for _ in range(10):
        async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
            assert response.status == 404, "no ghost of the last view"
    assert (await control.stats())["builds"][build_id] - before <= 2


async def trickle(request: web.Request) -> web.StreamResponse:
    """An upstream that answers one byte at a time, slowly: every read is quick, none ends."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for byte in b'{"build_request_id": "br-1"':
        await response.write(bytes([byte]))
        await asyncio.sleep(0.2)
    return response


async def flood(request: web.Request) -> web.Response:
    """An upstream whose answer is larger than any build."""
    return web.Response(body=b"[" + b"0," * (1 << 20) + b"0]", content_type="application/json")


@pytest.fixture
async def hostile(aiohttp_server: Any) -> TestServer:
    app = web.Application()
    app.router.add_get("/api/v1/builds/br-slow", trickle)
    app.router.add_get("/api/v1/builds/br-huge", flood)
    server: TestServer = await aiohttp_server(app)
    return server


async def test_an_upstream_that_never_finishes_or_sends_too_much_is_unavailable(
    hostile: TestServer,
) -> None:
    base = str(hostile.make_url("")).rstrip("/")
    async with UpstreamClient(base, timeout=1.0, deadline=1.0, max_bytes=1 << 20) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamUnavailable, match="deadline"):
            await client.build("br-slow")
        assert asyncio.get_running_loop().time() - started < 3, "the deadline, not each read"
        with pytest.raises(UpstreamInvalid, match="over 1048576 bytes"):
            await client.build("br-huge")


def test_a_stale_view_says_when_the_upstream_last_answered() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(2)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with (
            replica(upstream, first_looks=True) as watches,
            watches.watching(build_id) as watch,
        ):
            assert watch.view is not None and watch.view["checkedAtMs"] is None
            upstream.status = 503
            await asyncio.sleep(10.0)
            assert watch.view["stale"] and isinstance(watch.view["checkedAtMs"], int)

    in_fake_time(scenario)


async def test_memory_remembers_for_the_time_asked() -> None:
    clock = [0.0]
    missing = MemoryMissing(clock=lambda: clock[0])
    await missing.remember("br-1", "not_found", "no build request br-1 upstream", 60)
    clock[0] = 59.0
    assert await missing.recall("br-1") == ("not_found", "no build request br-1 upstream")
    clock[0] = 60.0
    assert await missing.recall("br-1") is None


async def test_a_gateway_says_429_with_retry_after_past_its_build_limit(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(max_builds=1)
    first, second = sim.create_build(2), sim.create_build(2)
    held = await session.get(gateway.make_url(f"/api/v1/builds/{first}/stream"))
    try:
        async with session.get(gateway.make_url(f"/api/v1/builds/{second}")) as refused:
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "1"  # the fixture's 1 s grace
            assert (await refused.json())["error"]["code"] == "too_many"
    finally:
        held.close()
