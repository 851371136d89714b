"""Access control over real HTTP: who may read which build, on every route and transport."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.guard.tokens import mint
from gateway.simulator import Simulator
from tests.helpers.gateways import StartGateway, Upstream, drive, raw_url
from tests.helpers.sse import Viewer, events
from tests.helpers.ws import connect

SECRET = "a-secret-of-at-least-32-bytes-long"


def token(*patterns: str, ttl: float = 600) -> str:
    return mint(SECRET, list(patterns) or ["br-*"], ttl)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def guarded(start_gateway: StartGateway) -> TestServer:
    return await start_gateway(auth_secret=SECRET)


async def status_of(
    session: aiohttp.ClientSession, gateway: TestServer, path: str, **kwargs: Any
) -> tuple[int, str | None]:
    async with session.get(raw_url(gateway, path), **kwargs) as response:
        if response.status < 400:
            return response.status, None
        return response.status, (await response.json())["error"]["code"]


@pytest.mark.parametrize("route", ["/api/v1/builds/{}", "/api/v1/builds/{}/stream"])
async def test_answers_come_in_order_and_before_any_upstream_request(
    route: str,
    sim: Simulator,
    guarded: TestServer,
    session: aiohttp.ClientSession,
    control: Upstream,
) -> None:
    known = sim.create_build(2)
    cases = [
        ("a%20b", {}, (401, "unauthorized")),  # no token: nothing else is looked at
        ("a%20b", bearer("garbage"), (401, "unauthorized")),
        ("a%20b", bearer(token()), (400, "invalid_build_id")),
        (known.replace("br-", "other-"), bearer(token()), (403, "forbidden")),
        ("br-nowhere", bearer(token()), (404, "not_found")),
    ]
    for build_id, headers, answer in cases:
        assert await status_of(session, guarded, route.format(build_id), headers=headers) == (
            answer
        ), build_id
    assert set((await control.stats())["builds"]) == {"br-nowhere"}, "only the allowed id asked"


async def test_a_build_the_token_names_is_served_on_every_route(
    sim: Simulator, guarded: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(2)
    granted = token(build_id)
    view = await status_of(session, guarded, f"/api/v1/builds/{build_id}", headers=bearer(granted))
    assert view == (200, None)
    cookie = {"Cookie": f"buildcast_token={granted}"}  # an SSO proxy's cookie
    assert await status_of(session, guarded, f"/api/v1/builds/{build_id}", headers=cookie) == (
        200,
        None,
    )
    stream = f"/api/v1/builds/{build_id}/stream?token={granted}"  # EventSource sends no headers
    async with session.get(raw_url(guarded, stream)) as response:
        assert response.status == 200
        assert (await anext(events(response))).event == "snapshot"
    rest_with_query = f"/api/v1/builds/{build_id}?token={granted}"
    assert await status_of(session, guarded, rest_with_query) == (401, "unauthorized"), (
        "a token in the query only where headers cannot go: it would sit in every log"
    )


async def test_a_multi_build_stream_is_refused_whole_if_one_build_is_not_allowed(
    sim: Simulator, guarded: TestServer, session: aiohttp.ClientSession
) -> None:
    mine, theirs = sim.create_build(2), sim.create_build(2)
    path = f"/api/v1/stream?build={mine}&build={theirs}&token={token(mine)}"
    assert await status_of(session, guarded, path) == (403, "forbidden")
    path = f"/api/v1/stream?build={mine}&token={token(mine)}"
    async with session.get(raw_url(guarded, path)) as response:
        assert response.status == 200


async def test_lists_show_only_the_builds_the_token_names(
    sim: Simulator, guarded: TestServer, session: aiohttp.ClientSession
) -> None:
    team_a, team_b = sim.create_build(2, build_id="team-a-1"), sim.create_build(2)
    for build_id in (team_a, team_b):
        path = f"/api/v1/builds/{build_id}"
        assert (await status_of(session, guarded, path, headers=bearer(token("*"))))[0] == 200
    assert await status_of(session, guarded, "/api/v1/watched") == (401, "unauthorized")
    async with session.get(
        guarded.make_url("/api/v1/watched"), headers=bearer(token("team-a-*"))
    ) as response:
        listed = [build["buildId"] for build in (await response.json())["builds"]]
    assert listed == [team_a]


async def test_health_readiness_pages_and_the_api_document_need_no_token(
    guarded: TestServer, session: aiohttp.ClientSession
) -> None:
    for path in ("/healthz", "/readyz", "/", "/builds/br-1", "/wall", "/api/v1/openapi.json"):
        async with session.get(guarded.make_url(path)) as response:
            assert response.status == 200, path


async def test_a_websocket_needs_a_token_and_refuses_builds_outside_it(
    sim: Simulator, guarded: TestServer, session: aiohttp.ClientSession
) -> None:
    mine, theirs = sim.create_build(2), sim.create_build(2)
    async with session.get(guarded.make_url("/api/v1/ws")) as response:
        assert response.status == 401, "the upgrade is refused before it happens"
    socket = await connect(session, guarded, headers=bearer(token(mine)))
    await socket.send(op="subscribe", buildId=theirs)
    refused = await socket.next()
    assert (refused["type"], refused["code"], refused["buildId"]) == ("error", "forbidden", theirs)
    await socket.send(op="subscribe", buildId=mine)
    assert (await socket.next())["type"] == "snapshot", "the socket stays open and usable"
    await socket.ws.close()


async def test_an_expired_token_ends_the_stream_and_a_new_one_resumes_it_without_a_gap(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(auth_secret=SECRET, token_leeway=0.0)
    build_id = sim.create_build(3)
    url = str(gateway.make_url(f"/api/v1/builds/{build_id}/stream"))
    viewer = Viewer(session, url)
    short = token(build_id, ttl=2)
    async with asyncio.timeout(20), session.get(url, headers=bearer(short)) as response:
        async for event in events(response):
            viewer.take(event)
            if event.event == "snapshot":
                sim.advance(build_id)
    last = viewer.messages[-1]
    assert (last.event, last.data["code"]) == ("error", "unauthorized"), "said, then closed"
    seen = len(viewer.messages)
    driving = asyncio.create_task(drive(sim, build_id))
    resumed = {"Last-Event-ID": viewer.last_id or "", **bearer(token(build_id))}
    async with asyncio.timeout(20), session.get(url, headers=resumed) as response:
        async for event in events(response):
            viewer.take(event)
            if viewer.view and viewer.view["status"] == "BuildRequestCompleted":
                break
    await driving
    assert [m.event for m in viewer.messages[seen:]] == ["delta"] * (len(viewer.messages) - seen)
    assert viewer.gaps == []


async def test_an_expired_token_closes_a_websocket_after_saying_why(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(auth_secret=SECRET, token_leeway=0.0)
    build_id = sim.create_build(2)
    socket = await connect(session, gateway, headers=bearer(token(build_id, ttl=2)))
    await socket.send(op="subscribe", buildId=build_id)
    assert (await socket.next())["type"] == "snapshot"
    expired = await socket.next()
    assert (expired["type"], expired["code"]) == ("error", "unauthorized")
    closing = await socket.ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1008
