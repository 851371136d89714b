"""The poller's cadence: grace period, no overlapping polls, stale state, unknown ids."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends.memory import MemoryBus
from gateway.ingest.payloads import BuildStatusResponse
from gateway.ingest.poller import Poller
from gateway.ingest.upstream import UpstreamClient
from gateway.ingest.views import build_view, partitions_from_events
from gateway.protocol import codec
from gateway.protocol.diff import apply
from gateway.protocol.messages import Kind, Message
from gateway.settings import Settings
from gateway.simulator import Simulator
from tests.helpers.gateways import StartGateway, Upstream, stream_url
from tests.helpers.sse import Viewer


async def build_requests(control: Upstream, build_id: str) -> int:
    return int((await control.stats())["builds"].get(build_id, 0))


@pytest.mark.parametrize(
    "fault",
    [{"status": 503}, {"body": "<html>not json</html>"}, {"delay": 1.0}],
    ids=["5xx", "garbage", "timeout"],
)
async def test_an_upstream_outage_marks_the_view_stale_and_recovers(
    sim: Simulator,
    start_gateway: StartGateway,
    session: aiohttp.ClientSession,
    control: Upstream,
    fault: dict[str, object],
) -> None:
    gateway = await start_gateway(upstream_timeout=0.3)
    build_id = sim.create_build(2)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    await control.faults(**fault)
    await viewer.follow(lambda view: view["stale"], timeout=5)
    assert viewer.view is not None and viewer.view["status"] == "BuildRequestReceived", (
        "last good state kept"
    )
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert (await response.json())["stale"] is True
    await control.clear_faults()
    sim.advance(build_id)
    await viewer.follow(
        lambda view: not view["stale"] and view["status"] != "BuildRequestReceived", timeout=40
    )
    assert viewer.gaps == []


async def test_first_look_during_an_outage_answers_503(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    build_id = sim.create_build(2)
    await control.faults(status=500)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}/stream")) as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "upstream_unavailable"


async def test_a_storm_of_unknown_ids_costs_one_upstream_request(
    gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    async def ask() -> int:
        async with session.get(gateway.make_url("/api/v1/builds/br-nope/stream")) as response:
            return response.status

    assert await asyncio.gather(*(ask() for _ in range(50))) == [404] * 50
    assert await ask() == 404
    assert (await control.stats())["builds"].get("br-nope") == 1


def known(view: dict[str, Any]) -> bool:
    return all(p["status"] is not None for p in view["partitions"].values())


async def test_a_large_build_is_shown_before_its_partitions_are_read(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(200)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(known)
    first = viewer.messages[0]
    assert first.event == "snapshot" and not known(first.data["view"]), "at once, statuses to come"
    assert viewer.messages[-1].event == "delta" and not viewer.gaps


async def test_a_client_that_leaves_during_the_first_look_releases_the_build(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession, control: Upstream
) -> None:
    gateway = await start_gateway(grace=0.3)
    build_id = sim.create_build(2)
    await control.faults(delay=0.8, count=1)
    with suppress(TimeoutError):
        async with asyncio.timeout(0.2), session.get(stream_url(gateway, build_id)) as response:
            await response.read()
    await asyncio.sleep(1.5)
    settled = await build_requests(control, build_id)
    await asyncio.sleep(0.5)
    assert await build_requests(control, build_id) == settled, "nobody watches: no more polls"


def long_build(events: int, rewritten: int | None = None) -> dict[str, Any]:
    """A build of `events` job events; the one numbered `rewritten` says so."""
    listed = [
        {
            "event_id": f"ev-{n}",
            "timestamp": 1795766400000000000 + n * 1_000_000,
            "message": f"step {n}",
            "job": {"job_run_id": f"jr-{n}", "target_partitions": [{"str": f"p{n % 3}"}]},
        }
        for n in range(events)
    ]
    if rewritten is not None:
        listed[rewritten] = {**listed[rewritten], "message": "rewritten upstream"}
    return {
        "build_request_id": "br-long",
        "status": "BuildRequestExecuting",
        "requested_partitions": [{"str": "p0"}, {"str": "p1"}, {"str": "p2"}],
        "created_at": 1795766400000000000,
        "updated_at": listed[-1]["timestamp"],
        "events": listed,
    }


Answer = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@contextlib.asynccontextmanager
async def polling(upstream: Answer, poll_active: float) -> AsyncIterator[list[Message]]:
    """A poller of br-long against `upstream` (httpx's MockTransport); what the bus delivers."""
    bus = MemoryBus()
    got: list[Message] = []
    await bus.start(got.append)
    await bus.subscribe("br-long")
    settings = Settings(upstream="http://bgs.test", poll_active=poll_active)
    async with UpstreamClient(settings.upstream, transport=httpx.MockTransport(upstream)) as client:
        task = asyncio.create_task(Poller("br-long", client, bus, settings).run())
        try:
            yield got
        finally:
            task.cancel()


async def test_a_long_build_is_followed_with_deltas_of_its_new_events() -> None:
    """Poll after poll, the poller reads only the new events, and says only them."""
    bodies = [
        long_build(2_000),
        long_build(2_005),
        long_build(2_010),
        long_build(2_010, rewritten=2_009),
        long_build(2_015, rewritten=2_009),
    ]
    served = iter(bodies)

    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v1/partitions/"):
            return httpx.Response(404)
        return httpx.Response(200, json=next(served, bodies[-1]))

    async with polling(upstream, poll_active=0.001) as got, asyncio.timeout(10):
        while len(got) < len(bodies):
            await asyncio.sleep(0.01)
    assert [(m.kind, m.seq) for m in got] == [
        (Kind.SNAPSHOT, 1),
        (Kind.DELTA, 2),
        (Kind.DELTA, 3),
        (Kind.SNAPSHOT, 4),
        (Kind.DELTA, 5),
    ], "a rewritten event cannot be said as a delta"
    deltas = [codec.loads(m.data)["changes"] for m in got if m.kind is Kind.DELTA]
    assert [[e["eventId"] for e in d["events"]] for d in deltas] == [
        [f"ev-{n}" for n in range(first, first + 5)] for first in (2_000, 2_005, 2_010)
    ]
    client_view = apply(codec.loads(got[3].view_json), 5, deltas[-1])
    expected = BuildStatusResponse.model_validate(bodies[-1])
    assert client_view == build_view(expected, partitions_from_events(expected), seq=5, stale=False)
    assert client_view["events"][2_009]["message"] == "rewritten upstream"


async def test_new_events_go_out_before_the_partitions_they_name_are_read() -> None:
    """A viewer sees a poll's new events at once; reads of the partitions they name follow."""
    served = {"body": long_build(3)}
    held: list[str] = []  # partition reads waiting for `release`
    release = asyncio.Event()

    async def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v1/partitions/"):
            if served["body"]["events"][-1]["event_id"] == "ev-3":  # after the first look
                held.append(request.url.path)
                await release.wait()
            return httpx.Response(404)
        return httpx.Response(200, json=served["body"])

    async with polling(upstream, poll_active=0.01) as got:
        try:
            async with asyncio.timeout(10):
                while not got:
                    await asyncio.sleep(0.01)
                served["body"] = long_build(4)  # ev-3 names p0, whose read now hangs
                while len(got) < 2:
                    await asyncio.sleep(0.01)
            assert held, "the partition read is still in flight"
            [event] = codec.loads(got[1].data)["changes"]["events"]
            assert event["eventId"] == "ev-3"
        finally:
            release.set()
