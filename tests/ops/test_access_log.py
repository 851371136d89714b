"""The access log: one line per request and per stream or socket when it ends, saying who,
what, how it went and why it ended; nothing for probes, scrapes and static files; never a
token. Gateways served the way `buildcast serve` serves them (its access logger, handlers
cancelled when their client leaves), over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.guard.tokens import mint
from gateway.ops import access
from gateway.settings import Settings
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import Upstream, eventually, gateway_view, raw_url, stream_url
from tests.helpers.sse import events
from tests.helpers.ws import connect

SECRET = "an access-log test secret of 32+ bytes"

Lines = Callable[[], list[logging.LogRecord]]


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    caplog.set_level(logging.INFO, logger=access.log.name)
    return lambda: [r for r in caplog.records if r.name == access.log.name]


@pytest.fixture
def serve(aiohttp_server: Any, settings: Settings) -> Callable[..., Any]:
    async def start(**overrides: Any) -> TestServer:
        app = create_app(dataclasses.replace(settings, **overrides))
        server: TestServer = await aiohttp_server(
            app,
            access_log=access.log,
            access_log_class=access.AccessLogger,
        )
        return server

    return start


def field(record: logging.LogRecord, name: str) -> Any:
    return record.__dict__[name]


async def logged(lines: Lines, route: str, count: int = 1) -> list[logging.LogRecord]:
    """The access records of `route`, once there are `count` of them (bounded wait)."""

    async def found() -> list[logging.LogRecord]:
        return [r for r in lines() if field(r, "route") == route]

    return await eventually(found, lambda f: len(f) >= count, what=f"{count} lines of {route}")


async def test_a_request_is_one_line_with_its_client_route_build_status_and_bytes(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    build_id = sim.create_build(2)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        body = await response.read()
    (record,) = await logged(lines, "/api/v1/builds/{build_id}")
    assert field(record, "client") == "127.0.0.1"
    assert field(record, "method") == "GET"
    assert field(record, "builds") == [build_id]
    assert field(record, "status") == 200
    assert field(record, "bytes") >= len(body)
    assert field(record, "seconds") >= 0
    assert "ended" not in record.__dict__
    assert record.getMessage().startswith("127.0.0.1 GET route=/api/v1/builds/{build_id} ")


async def test_probes_scrapes_and_static_files_are_not_logged(
    serve: Callable[..., Any], session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    for path in ("/healthz", "/readyz", "/metrics", "/static/style.css", "/"):
        async with session.get(gateway.make_url(path)) as response:
            assert response.status == 200, path
    (page,) = await logged(lines, "/")
    assert field(page, "status") == 200
    assert [field(r, "route") for r in lines()] == ["/"]


async def test_a_stream_the_client_leaves_says_so_with_the_bytes_it_was_sent(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    build_id = sim.create_build(2)
    async with session.get(stream_url(gateway, build_id)) as response:
        first = await anext(aiter(events(response)))
        assert first.event == "snapshot"
    (record,) = await logged(lines, "/api/v1/builds/{build_id}/stream")
    assert field(record, "ended") == "client left"
    assert field(record, "builds") == [build_id]
    assert field(record, "status") == 200
    assert field(record, "bytes") > 0


async def test_a_multi_build_stream_names_every_build_it_was_asked_for(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    build_id = sim.create_build(2)
    url = gateway.make_url("/api/v1/stream").with_query([("build", build_id), ("build", "br-nope")])
    async with session.get(url) as response:
        async for event in events(response):
            if event.event == "snapshot":
                break
    (record,) = await logged(lines, "/api/v1/stream")
    assert sorted(field(record, "builds")) == sorted([build_id, "br-nope"])
    assert field(record, "ended") == "client left"


async def test_a_socket_names_the_builds_it_followed_and_why_it_ended(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    builds = [sim.create_build(2), sim.create_build(2)]
    socket = await connect(session, gateway)
    for build_id in builds:
        await socket.send(op="subscribe", buildId=build_id)
    await socket.until(lambda s: len(s.views) == 2)
    await socket.ws.close()
    (record,) = await logged(lines, "/api/v1/ws")
    assert field(record, "builds") == builds
    assert field(record, "status") == 101
    assert field(record, "ended") == "client left"
    assert field(record, "bytes") > 0


async def test_a_stream_ended_by_a_shutdown_says_so(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    build_id = sim.create_build(2)
    await gateway_view(session, gateway, build_id)
    async with session.get(stream_url(gateway, build_id)) as response:
        await anext(aiter(events(response)))
        gateway.app[STATE].streams.end_all()
        async for _ in events(response):
            pass
    (record,) = await logged(lines, "/api/v1/builds/{build_id}/stream")
    assert field(record, "ended") == "shutdown"


async def test_a_token_never_reaches_the_log_but_its_subject_does(
    serve: Callable[..., Any], sim: Simulator, session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve(auth_secret=SECRET)
    build_id = sim.create_build(2)
    token = mint(SECRET, (build_id,), 3600, "wall-7")
    forged = token[:-4] + "AAAA"
    url = stream_url(gateway, build_id)
    async with session.get(url, params={"token": token}) as response:
        await anext(aiter(events(response)))
    async with session.get(url, params={"token": forged}) as response:
        assert response.status == 401
    records = await logged(lines, "/api/v1/builds/{build_id}/stream", count=2)
    assert [field(r, "status") for r in records] == [200, 401]
    assert field(records[0], "sub") == "wall-7"
    for record in records:
        text = record.getMessage() + repr(record.__dict__)
        assert token not in text and forged not in text and "token=" not in text


async def test_a_refused_request_is_logged_with_its_status_and_a_bounded_id(
    serve: Callable[..., Any], session: aiohttp.ClientSession, lines: Lines
) -> None:
    gateway = await serve()
    long_id = "x" * 2000 + "%0A"
    async with session.get(raw_url(gateway, f"/api/v1/builds/{long_id}")) as response:
        assert response.status == 400
    (record,) = await logged(lines, "/api/v1/builds/{build_id}")
    assert field(record, "status") == 400
    assert len(field(record, "builds")[0]) <= access.MAX_ID


async def test_a_client_that_leaves_before_its_answer_is_logged_once(
    serve: Callable[..., Any],
    sim: Simulator,
    session: aiohttp.ClientSession,
    control: Upstream,
    lines: Lines,
) -> None:
    """The first look at a build is slow upstream and the client gives up: its handler is
    cancelled, and the middleware logs it, once, as a client that left."""
    gateway = await serve()
    build_id = sim.create_build(2)
    await control.faults(delay=1.0, count=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
                await response.read()
    (record,) = await logged(lines, "/api/v1/builds/{build_id}")
    assert field(record, "ended") == "client left"
    assert field(record, "status") == 499
    await asyncio.sleep(1.0)  # the upstream answers meanwhile: still one line
    assert len([r for r in lines() if field(r, "route") == "/api/v1/builds/{build_id}"]) == 1
