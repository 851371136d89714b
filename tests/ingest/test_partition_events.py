"""`GET /api/v1/partitions/{ref}/events`: a partition's own events, asked of the upstream at
most once per ref every 10 s, whatever the number of viewers.

In fake time (tests/helpers/clock.py) against the simulator behind an httpx transport:
the cadence, single flight, a failing upstream. Over real HTTP against the simulated
Build Graph Service: the answer's shape, refs with '/', '%', spaces and non-ASCII as
one path segment, the error codes, and that a refused ref never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends.memory import MemoryCache
from gateway.errors import BadRequest
from gateway.guard.tokens import mint
from gateway.ingest.partition_events import FRESH, PartitionEvents
from gateway.settings import Settings
from gateway.simulator import Simulator
from tests.helpers.clock import in_fake_time
from tests.helpers.fake_upstream import BASE, FakeUpstream
from tests.helpers.gateways import (
    StartGateway,
    StartReplica,
    Upstream,
    drive,
    gateway_view,
    raw_url,
)
from tests.test_openapi import CONTRACT

REFS = ["reviews/date=2026-11-27", "odd%25 ref", "ünï/cødé ✓", "a+b c/..", ".."]
"""Refs as people name partitions: '/', '=', '%', '+', spaces, dots, non-ASCII."""


ROUTE = "/api/v1/partitions/{ref}/events"


def events_path(ref: str) -> str:
    """The route for `ref` as one segment; dots encoded too, or `..` would be a path step."""
    return f"/api/v1/partitions/{quote(ref, safe='').replace('.', '%2E')}/events"


async def get(
    session: aiohttp.ClientSession, gateway: TestServer, path: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """The answer's status and JSON, which fit docs/openapi.yaml."""
    async with session.get(raw_url(gateway, path), **kwargs) as response:
        return response.status, await CONTRACT.check_response(ROUTE, response), response


# --- in fake time


async def loaded(upstream: FakeUpstream) -> PartitionEvents:
    """One replica's partition events in front of `upstream`, on the in-process cache."""
    return PartitionEvents(Settings(upstream=BASE), upstream.client(), MemoryCache())


def ended_build(sim: Simulator, refs: list[str]) -> str:
    build_id = sim.create_build(refs)
    sim.finish(build_id)
    return build_id


def test_the_upstream_is_asked_at_most_once_per_ref_every_10_s() -> None:
    sim = Simulator(seed=1)
    ended_build(sim, ["a/b=1", "c"])
    upstream = FakeUpstream(sim, delay=0.5)

    async def scenario() -> None:
        events = await loaded(upstream)
        asked = await asyncio.gather(*(events.answer("a/b=1", f"10.0.0.{n}") for n in range(50)))
        assert upstream.endpoints["partition_events"] == 1, "50 at once: one request"
        assert len({answer.body for answer in asked}) == 1
        for _ in range(59 * 4):  # a viewer every 0.25 s for a minute
            await asyncio.sleep(0.25)
            await events.answer("a/b=1")
        assert upstream.endpoints["partition_events"] == math.ceil(60 / (FRESH + 0.5))
        await events.answer("c")
        assert upstream.endpoints["partition_events"] == 7, "each ref its own cadence"

    in_fake_time(scenario)


def test_a_failing_upstream_is_asked_no_more_often_and_its_last_answer_served() -> None:
    sim = Simulator(seed=1)
    ended_build(sim, ["a"])
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        events = await loaded(upstream)
        first = await events.answer("a")
        assert first.code is None
        upstream.status = 503
        for _ in range(30):  # a viewer a second for 30 s
            await asyncio.sleep(1)
            assert await events.answer("a") == first, "the last good answer, as it was"
        assert upstream.endpoints["partition_events"] == 1 + 3, "asked every 10 s, no more"
        never = await events.answer("nothing-cached")
        assert never.code == "upstream_unavailable"

    in_fake_time(scenario)


def test_a_refused_ref_never_reaches_the_upstream() -> None:
    upstream = FakeUpstream(Simulator(seed=1))

    async def scenario() -> None:
        events = await loaded(upstream)
        for ref in ("", "x" * 1001, "a\nb", "tab\there", "\x7f", "nul\x00"):
            with pytest.raises(BadRequest):
                await events.answer(ref)
        assert upstream.endpoints.total() == 0

    in_fake_time(scenario)


# --- over real HTTP


async def test_a_partitions_events_come_oldest_first_in_the_build_views_shape(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(REFS)
    await drive(sim, build_id, every=0.0)
    view = await gateway_view(session, gateway, build_id)
    by_id = {event["eventId"]: event for event in view["events"]}
    for ref in REFS:
        status, body, response = await get(session, gateway, events_path(ref))
        assert status == 200, body
        assert response.headers["Cache-Control"] == "private, max-age=10"
        assert body["partitionRef"] == ref
        assert isinstance(body["fetchedAtMs"], int)
        events = body["events"]
        assert events, f"{ref} has events"
        assert any(event.get("partitionRef") == ref for event in events)
        stamps = [event["timestampMs"] for event in events]
        assert stamps == sorted(stamps), "oldest first"
        for event in events:
            assert event == by_id[event["eventId"]], "the same event as in the build's view"


async def test_refs_are_one_path_segment_and_bad_ones_are_refused_before_the_upstream(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    sim.create_build(["a/b=1"])
    await control.reset()
    refused = {
        "/api/v1/partitions//events": "empty",
        f"/api/v1/partitions/{'x' * 1001}/events": "too long",
        "/api/v1/partitions/a%0Ab/events": "a newline",
        "/api/v1/partitions/a%00b/events": "a NUL",
        "/api/v1/partitions/%C2%85/events": "a C1 control",
    }
    for path, why in refused.items():
        status, body, _ = await get(session, gateway, path)
        assert (status, body["error"]["code"]) == (400, "bad_request"), why
    assert (await control.stats())["endpoints"]["partition_events"] == 0
    status, body, _ = await get(session, gateway, "/api/v1/partitions/a/b=1/events")
    assert (status, body["error"]["code"]) == (404, "not_found"), "an unencoded '/' is no ref"
    status, body, _ = await get(session, gateway, "/api/v1/partitions/a%2Fb%3D1/events")
    assert (status, body["partitionRef"]) == (200, "a/b=1")
    assert (await control.stats())["endpoints"]["partition_events"] == 1


async def test_an_unknown_ref_is_404_and_a_failing_upstream_503(
    gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    status, body, response = await get(session, gateway, events_path("nowhere/x=1"))
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert "nowhere/x=1" in body["error"]["message"]
    await control.faults(status=500)
    status, body, response = await get(session, gateway, events_path("other"))
    assert (status, body["error"]["code"]) == (503, "upstream_unavailable")
    assert response.headers["Cache-Control"] == "no-store", "an error is not cached by browsers"
    stats = await control.stats()
    assert stats["endpoints"]["partition_events"] == 2
    async with session.get(gateway.make_url("/metrics")) as metrics:
        text = await metrics.text()
    assert (
        'buildcast_upstream_requests_total{endpoint="partition_events",outcome="not_found"} 1.0'
        in text
    )
    assert (
        'buildcast_upstream_requests_total{endpoint="partition_events",outcome="error"} 1.0' in text
    )


async def test_with_access_control_any_valid_token_reads_a_partition(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    secret = "a-secret-of-at-least-32-bytes-long"
    gateway = await start_gateway(auth_secret=secret)
    sim.create_build(["a"])
    status, body, _ = await get(session, gateway, events_path("a"))
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    other_team = mint(secret, ["team-b-*"], 600)
    status, body, _ = await get(
        session, gateway, events_path("a"), headers={"Authorization": f"Bearer {other_team}"}
    )
    assert (status, body["partitionRef"]) == (200, "a")


# --- many replicas on one real redis-server


async def view_partition_events(
    session: aiohttp.ClientSession,
    replicas: list[TestServer],
    ref: str,
    viewers: int,
    seconds: float,
) -> int:
    """`viewers` pages, spread over `replicas`, each asking for `ref`'s events every 0.2 s for
    `seconds`; how many answers they got (each a 200 with the ref's events)."""
    answers = 0

    async def viewer(replica: TestServer) -> None:
        nonlocal answers
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            status, body, _ = await get(session, replica, events_path(ref))
            assert (status, body["partitionRef"]) == (200, ref), body
            answers += 1
            await asyncio.sleep(0.2)

    await asyncio.gather(*(viewer(replicas[n % len(replicas)]) for n in range(viewers)))
    return answers


@pytest.mark.integration
async def test_a_hundred_viewers_on_two_replicas_cost_the_upstream_one_request(
    sim: Simulator, start_replica: StartReplica, session: aiohttp.ClientSession, control: Upstream
) -> None:
    ref = "reviews/date=2026-11-27"
    ended_build(sim, [ref])
    replicas = [await start_replica(), await start_replica()]
    answers = await view_partition_events(session, replicas, ref, viewers=100, seconds=3)
    assert answers >= 200, "every viewer was answered, again and again"
    stats = await control.stats()
    assert stats["endpoints"]["partition_events"] == 1, stats
