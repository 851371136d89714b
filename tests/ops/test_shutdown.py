"""A replica that stops: not ready at once, no new streams, its own streams ended over the
drain window, and out as soon as the last one has gone; a second signal ends it at once.

The first test drives the drain in process (`gateway.ops.drain`) to look at each step;
the second runs `buildcast serve` and signals it as an orchestrator would. Figures are
bounds a user would notice (the window), never timings of the machine.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import metrics_app
from gateway.ops.drain import drain
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartGateway, gateway_view, stream_url
from tests.helpers.procs import Procs
from tests.helpers.sse import events

WINDOW = 2.0


async def test_a_draining_replica_is_not_ready_takes_no_stream_and_ends_its_own_in_the_window(
    start_gateway: StartGateway,
    aiohttp_server: Callable[..., Any],
    sim: Simulator,
    session: aiohttp.ClientSession,
) -> None:
    gateway = await start_gateway()
    probes: TestServer = await aiohttp_server(metrics_app(gateway.app))
    build_id = sim.create_build(2)
    await gateway_view(session, gateway, build_id)
    kept = await asyncio.open_connection(gateway.host, gateway.port)  # opened before the drain
    async with session.get(stream_url(gateway, build_id)) as stream:
        first = await anext(aiter(events(stream)))
        assert first.event == "snapshot"
        began = time.monotonic()
        draining = asyncio.create_task(drain(gateway.app, gateway.runner, WINDOW))
        await asyncio.sleep(0)

        async with session.get(probes.make_url("/readyz")) as ready:
            assert ready.status == 503
            assert (await ready.json())["error"]["code"] == "not_ready"
        async with session.get(probes.make_url("/healthz")) as alive:
            assert alive.status == 200, "still alive: an orchestrator must not kill it early"
        # What still reaches it on a connection opened before is sent elsewhere, and the
        # connection closes with the answer.
        head, body = await ask(kept, f"/api/v1/builds/{build_id}/stream")
        assert head[0] == "HTTP/1.1 503 Service Unavailable", head
        assert "retry-after: 1" in head and "connection: close" in head, head
        assert json.loads(body)["error"]["code"] == "not_ready"
        with pytest.raises(aiohttp.ClientConnectorError):  # the listener is closed
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(stream_url(gateway, build_id))

        async for _ in events(stream):
            pass  # the stream ends (the client would resume elsewhere with Last-Event-ID)
        ended = time.monotonic() - began
    await draining
    assert ended < WINDOW
    assert not gateway.app[STATE].streams


async def ask(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> Any:
    """A GET on an open connection: the answer's head (lowercased fields) and its body."""
    reader, writer = connection
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    length = next(int(h.split(":")[1]) for h in head if h.lower().startswith("content-length"))
    body = await reader.readexactly(length)
    writer.close()
    return [head[0], *(h.lower() for h in head[1:] if h)], body


SERVE_LINE = re.compile(r"metrics on port (\d+)")


async def test_serve_drains_on_sigterm_and_a_second_signal_stops_it_at_once(
    procs: Procs,
) -> None:
    simulator = procs.simulate("--tick", "3600", "--keep-active", "0")
    gateway = procs.serve(
        simulator.url, "--drain-seconds", "60", "--metrics-port", "0", "--log-format", "json"
    )
    printed = next(line for line in gateway.stdout if "buildcast gateway on" in line)
    match = SERVE_LINE.search(printed)
    assert match, printed
    metrics = f"http://127.0.0.1:{match[1]}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{simulator.url}/_sim/builds", json={"partitions": 3}) as made:
            build_id = (await made.json())["build_request_id"]
        async with session.get(f"{metrics}/metrics") as scraped:
            assert scraped.status == 200 and "buildcast_connections" in await scraped.text()
        async with session.get(f"{gateway.url}/metrics") as public:
            assert public.status == 404, "--metrics-port moves the metrics off the public port"
        url = f"{gateway.url}/api/v1/builds/{build_id}/stream"
        # Two streams: the drain ends them in two halves of the window, so the second one
        # is open for at least 27 s.
        async with session.get(url) as one, session.get(url) as two:
            for stream in (one, two):
                assert (await anext(aiter(events(stream)))).event == "snapshot"
            gateway.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with session.get(f"{metrics}/readyz") as ready:
                assert ready.status == 503
            assert gateway.alive, "it waits for its streams"
            began = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(gateway.terminate, 10)
    assert status == 0, gateway.describe()
    assert time.monotonic() - began < 5, "the second signal: at once"
    log = gateway.stderr().splitlines()
    records = [json.loads(line) for line in log]  # every line one JSON object
    assert all({"ts", "level", "logger", "msg"} <= record.keys() for record in records)
    assert any(r["msg"] == "a second signal: stopping now" for r in records)
    streams = [r for r in records if r.get("route") == "/api/v1/builds/{build_id}/stream"]
    assert len(streams) == 2, log
    assert {r["ended"] for r in streams} <= {"shutdown"}
    assert all(r["builds"] == [build_id] and r["status"] == 200 for r in streams)
