"""The SSE stream end to end: simulator -> poller -> bus -> fan-out -> SSE -> viewers."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.delivery.follow import Follower
from gateway.protocol.messages import Message
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartGateway, drive, raw_url, stream_url
from tests.helpers.sse import Viewer, ended, events


async def test_viewers_converge_to_the_upstream_with_contiguous_seqs(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(4, fail=[], delegate=[])
    viewers = [Viewer(session, stream_url(gateway, build_id)) for _ in range(5)]
    driver = asyncio.create_task(drive(sim, build_id))
    await asyncio.gather(*(viewer.follow(ended) for viewer in viewers))
    await driver
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        current = await response.json()
    for viewer in viewers:
        assert viewer.gaps == []
        assert viewer.messages[0].event == "snapshot"
        assert viewer.view is not None
        assert (
            viewer.view["status"] == sim.build_json(build_id)["status"] == "BuildRequestCompleted"
        )
        assert viewer.view == current | {"seq": viewer.view["seq"]}
    upstream_states = {
        ref: sim.partition_status_json(ref)["status"] for ref in current["partitions"]
    }
    assert {ref: p["status"] for ref, p in current["partitions"].items()} == upstream_states


async def test_resume_from_the_middle_gets_the_missed_deltas(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(3)
    viewer = Viewer(session, stream_url(gateway, build_id))
    driver = asyncio.create_task(drive(sim, build_id, every=0.1))
    await viewer.follow(lambda view: view["seq"] >= 3)
    middle = viewer.messages[1]  # the delta at seq 2
    assert middle.event == "delta"
    await driver
    async with session.get(viewer.url, headers={"Last-Event-ID": middle.id or ""}) as response:
        first = await anext(events(response))
    assert (first.event, first.data["seq"]) == ("delta", 3), "resumes right after seq 2"
    # Replaying everything from the start, then the resumed tail, gives the final view.
    full = Viewer(session, viewer.url)
    await full.follow(ended)
    replay = Viewer(session, viewer.url)
    for message in viewer.messages[:2]:
        replay.take(message)
    replay.last_id = middle.id
    await replay.follow(ended)
    assert replay.gaps == []
    assert replay.view == full.view


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_foreign_or_garbage_id_gets_a_snapshot(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, how: str
) -> None:
    build_id, other = sim.create_build(2), sim.create_build(2)
    first_of_other = Viewer(session, stream_url(gateway, other))
    await first_of_other.follow(lambda view: True)
    for token in ("garbage", "1.2.3", first_of_other.last_id or ""):
        headers = {"Last-Event-ID": token} if how == "header" else {}
        params = {"lastEventId": token} if how == "query" else {}
        async with session.get(
            stream_url(gateway, build_id), headers=headers, params=params
        ) as response:
            first = await anext(events(response))
        assert first.event == "snapshot"
        assert first.data["buildId"] == build_id


async def test_stream_headers_retry_and_heartbeat(
    sim: Simulator, start_gateway: object, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(heartbeat=0.2)  # type: ignore[operator]
    build_id = sim.create_build(2)
    async with session.get(stream_url(gateway, build_id)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        lines: list[bytes] = []
        with suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for line in response.content:
                    lines.append(line)
    assert lines[0].startswith(b"retry: ")
    assert b": heartbeat\n" in lines
    frame = [line for line in lines if line.startswith((b"id: ", b"event: ", b"data: "))][:3]
    assert [line.split(b":")[0] for line in frame] == [b"id", b"event", b"data"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/builds/br-does-not-exist/stream", 404, "not_found"),
        ("/api/v1/builds/br-does-not-exist", 404, "not_found"),
        ("/api/v1/builds/a%20b/stream", 400, "invalid_build_id"),
        ("/api/v1/builds/a%2Fb/stream", 400, "invalid_build_id"),
        ("/api/v1/builds/a%07b", 400, "invalid_build_id"),
        (f"/api/v1/builds/{'x' * 201}/stream", 400, "invalid_build_id"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ],
)
async def test_bad_ids_are_refused_before_any_stream(
    gateway: TestServer, session: aiohttp.ClientSession, path: str, status: int, code: str
) -> None:
    async with session.get(raw_url(gateway, path)) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def test_the_rest_view_matches_the_stream(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(["tricky/ref=%41 é", "plain"])
    sim.advance(build_id, 3)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        view = await response.json()
    assert view == viewer.view
    assert view["requestedPartitions"] == ["tricky/ref=%41 é", "plain"]
    assert isinstance(view["createdAtMs"], int) and view["createdAtMs"] > 1_600_000_000_000


async def test_health_and_readiness(gateway: TestServer, session: aiohttp.ClientSession) -> None:
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        async with session.get(gateway.make_url(path)) as response:
            assert response.status == 200
            assert (await response.json())["status"] == status


async def test_viewers_converge_when_the_bus_forgets_builds(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    """A bus that loses a build's history (here: it keeps only one build) costs a new
    epoch and fresh snapshots, never a stuck poller or a wrong view."""
    gateway = await start_gateway(retained_builds=1)
    builds = [sim.create_build(3), sim.create_build(3)]
    viewers = [Viewer(session, stream_url(gateway, b)) for b in builds]
    drivers = [asyncio.create_task(drive(sim, b)) for b in builds]
    await asyncio.gather(*(v.follow(ended) for v in viewers), *drivers)
    for build_id, viewer in zip(builds, viewers, strict=True):
        assert viewer.view is not None
        assert viewer.view["status"] == sim.build_json(build_id)["status"]
        snapshots = [m for m in viewer.messages if m.event == "snapshot"]
        assert len(snapshots) > 1, "the forgotten sequence was restarted with a snapshot"


async def test_other_http_errors_are_json_too(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(gateway.make_url(f"/api/v1/builds/{sim.create_build(1)}")) as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_a_bug_answers_json_500_without_a_traceback(
    gateway: TestServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(gateway.app[STATE].backends.registry, "viewers", broken)
    async with session.get(gateway.make_url("/api/v1/watched")) as response:
        assert response.status == 500
        body = await response.text()
    assert "internal" in body
    assert "secret" not in body and "Traceback" not in body


async def test_a_bug_inside_an_open_stream_closes_it_so_the_client_reconnects(
    sim: Simulator,
    gateway: TestServer,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Follower, message: Message) -> bool:
        raise RuntimeError("secret internals")

    async def broken_batch(self: Follower, batch: list[Message]) -> list[Message]:
        raise RuntimeError("secret internals")

    build_id = sim.create_build(2)
    monkeypatch.setattr(Follower, "advance", broken)  # the fan-out's direct write
    monkeypatch.setattr(Follower, "admit", broken_batch)  # the stream's own queue
    async with asyncio.timeout(10), session.get(stream_url(gateway, build_id)) as response:
        got = []
        with suppress(aiohttp.ClientPayloadError):
            async for event in events(response):
                got.append(event.event)
                sim.advance(build_id)  # the next live message meets the bug
    assert got == ["snapshot"], "the stream ended instead of hanging silent"
