"""The WebSocket transport: several builds per socket, resume with `since`, bad frames."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartGateway, drive
from tests.helpers.ws import connect

ENDED = ("BuildRequestCompleted", "BuildRequestFailed")


async def test_two_builds_on_one_socket_and_unsubscribe_stops_one(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    first, second = sim.create_build(3), sim.create_build(3)
    socket = await connect(session, gateway)
    await socket.send(op="subscribe", buildId=first)
    await socket.send(op="subscribe", buildId=second)
    await socket.until(lambda s: len(s.views) == 2)
    assert all("id" in m and "buildId" in m for m in socket.received)
    await socket.send(op="unsubscribe", buildId=second)
    await socket.send(op="ping")
    await socket.until(lambda s: s.received[-1]["type"] == "pong")
    seen = len(socket.received)
    driving = [asyncio.create_task(drive(sim, b)) for b in (first, second)]
    await socket.until(lambda s: s.views[first]["status"] in ENDED)
    await asyncio.gather(*driving)
    later = socket.received[seen:]
    assert later and all(m["buildId"] == first for m in later), "nothing of the unsubscribed"
    async with session.get(gateway.make_url(f"/api/v1/builds/{first}")) as response:
        assert socket.views[first] == await response.json()
    await socket.ws.close()


async def test_resume_with_since_gets_only_the_missed_deltas(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(3)
    socket = await connect(session, gateway)
    await socket.send(op="subscribe", buildId=build_id)
    snapshot = await socket.next()
    await socket.ws.close()  # the service goes away; the build moves on
    sim.advance(build_id)
    sim.advance(build_id)
    await asyncio.sleep(0.5)
    again = await connect(session, gateway)
    again.views[build_id] = snapshot["view"]
    await again.send(op="subscribe", buildId=build_id, since=snapshot["id"])
    driving = asyncio.create_task(drive(sim, build_id))
    await again.until(lambda s: s.views[build_id]["status"] in ENDED)
    await driving
    kinds = {m["type"] for m in again.received}
    assert kinds == {"delta"}, "resumed: deltas from where it was, no snapshot"
    await again.ws.close()


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"op": "dance"}',
        '{"op": "subscribe"}',
        '{"op": "subscribe", "buildId": "a b"}',
        '{"op": "subscribe", "buildId": "b", "since": 7}',
        '{"op": "ping", "pad": "' + "x" * 5000 + '"}',
        b"\x00binary",
    ],
    ids=[
        "garbage",
        "array",
        "unknown-op",
        "no-build",
        "bad-id",
        "bad-since",
        "oversized",
        "binary",
    ],
)
async def test_bad_frames_get_bad_request_and_the_socket_stays_usable(
    gateway: TestServer, session: aiohttp.ClientSession, frame: str | bytes
) -> None:
    socket = await connect(session, gateway)
    if isinstance(frame, bytes):
        await socket.ws.send_bytes(frame)
    else:
        await socket.ws.send_str(frame)
    error = await socket.next()
    assert (error["type"], error["code"]) == ("error", "bad_request")
    assert error["message"] and "buildId" in error
    await socket.send(op="ping")
    assert (await socket.next())["type"] == "pong"
    await socket.ws.close()


async def test_unknown_builds_and_the_cap_are_answered_per_build(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(stream_builds=2)
    socket = await connect(session, gateway)
    await socket.send(op="subscribe", buildId="br-nowhere")
    error = await socket.next()
    assert (error["code"], error["buildId"]) == ("not_found", "br-nowhere")
    known, other = sim.create_build(2), sim.create_build(2)
    await socket.send(op="subscribe", buildId=known)
    assert (await socket.next())["type"] == "snapshot"
    await socket.send(op="subscribe", buildId=other)
    error = await socket.next()
    assert (error["code"], error["buildId"]) == ("too_many", other), "the refused one counts"
    await socket.ws.close()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(None, True), ("same", True), ("https://wall.example", True), ("https://evil.example", False)],
    ids=["service", "own", "allowed", "foreign"],
)
async def test_a_browser_origin_must_be_ours_or_allowed(
    start_gateway: StartGateway,
    session: aiohttp.ClientSession,
    origin: str | None,
    allowed: bool,
) -> None:
    gateway = await start_gateway(allowed_origins=("https://wall.example",))
    if origin == "same":
        origin = f"http://{gateway.host}:{gateway.port}"
    headers = {"Origin": origin} if origin else {}
    if allowed:
        socket = await connect(session, gateway, headers=headers)
        await socket.send(op="ping")
        assert (await socket.next())["type"] == "pong"
        await socket.ws.close()
        return
    async with session.get(
        gateway.make_url("/api/v1/ws"),
        headers={
            **headers,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "forbidden"


async def test_shutdown_closes_sockets_with_going_away(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway()
    idle = await connect(session, gateway)
    busy = await connect(session, gateway)
    await busy.send(op="subscribe", buildId=sim.create_build(2))
    await busy.next()
    async with asyncio.timeout(10):
        closing = asyncio.create_task(gateway.close())
        for socket in (idle, busy):
            frame = await socket.ws.receive()
            assert frame.type is aiohttp.WSMsgType.CLOSE
            assert frame.data == aiohttp.WSCloseCode.GOING_AWAY, "reconnect, elsewhere"
        await closing


async def test_a_peer_that_stops_answering_pings_is_closed_and_released(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(heartbeat=0.3)
    build_id = sim.create_build(2)
    silent = await connect(session, gateway, autoping=False)  # a peer that vanished
    await silent.send(op="subscribe", buildId=build_id)
    await silent.next()
    state = gateway.app[STATE]
    assert state.fanout.viewers(build_id) == 1
    async with asyncio.timeout(10):
        while state.fanout.viewers(build_id):
            await asyncio.sleep(0.05)
    assert not state.streams, "the dead peer's socket was closed by the server"
