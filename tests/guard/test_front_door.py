"""The front door: headers every answer carries, CORS, connection caps, who a client is."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.guard.clients import client_address
from gateway.simulator import Simulator
from tests.helpers.gateways import StartGateway

WALL = "https://wall.example"


async def test_pages_forbid_inline_script_framing_and_sniffing(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    for path in ("/", "/builds/br-1", "/wall"):
        async with session.get(gateway.make_url(path)) as response:
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "'unsafe-inline'" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["Server"] == "buildcast", "no version to look up exploits by"


async def test_api_answers_are_never_cached_and_streams_are_not_buffered(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(2)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert response.headers["Cache-Control"] == "no-store"
    async with session.get(gateway.make_url("/api/v1/builds/a%20b")) as response:
        assert response.headers["Cache-Control"] == "no-store", "errors too"
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}/stream")) as response:
        assert response.headers["Cache-Control"] == "no-cache"  # what SSE proxies expect


async def test_allowed_origins_may_read_the_api_and_streams(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(allowed_origins=(WALL,))
    build_id = sim.create_build(2)
    for path in (f"/api/v1/builds/{build_id}", f"/api/v1/builds/{build_id}/stream"):
        async with session.get(gateway.make_url(path), headers={"Origin": WALL}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == WALL
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            assert "Origin" in response.headers["Vary"]
        foreign = {"Origin": "https://evil.example"}
        async with session.get(gateway.make_url(path), headers=foreign) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
    preflight = {"Origin": WALL, "Access-Control-Request-Headers": "authorization"}
    async with session.options(
        gateway.make_url(f"/api/v1/builds/{build_id}"), headers=preflight
    ) as response:
        assert response.status == 204
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert response.headers["Access-Control-Allow-Origin"] == WALL


async def test_open_connections_are_capped_per_client_and_per_process(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(max_connections=4, max_connections_per_client=2)
    build_id = sim.create_build(2)
    url = gateway.make_url(f"/api/v1/builds/{build_id}/stream")
    held = [await session.get(url) for _ in range(2)]
    try:
        async with session.get(url) as refused:
            assert refused.status == 429 and refused.headers["Retry-After"].isdigit()
            assert (await refused.json())["error"]["code"] == "too_many"
        async with session.get(gateway.make_url("/healthz")) as health:
            assert health.status == 200, "a full client or process still says it lives"
        proxied = {"X-Forwarded-For": "203.0.113.9"}  # no trusted proxy: it changes nothing
        async with session.get(url, headers=proxied) as refused:
            assert refused.status == 429
    finally:
        for response in held:
            response.close()
    await asyncio.sleep(0.1)
    async with session.get(url) as again:
        assert again.status == 200, "a closed stream frees its place"


async def test_a_full_process_answers_503(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        max_connections=2, max_connections_per_client=5, trusted_proxies=(ip_network("127.0.0.1"),)
    )
    build_id = sim.create_build(2)
    url = gateway.make_url(f"/api/v1/builds/{build_id}/stream")
    held = [await session.get(url, headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in (1, 2)]
    try:
        async with session.get(url, headers={"X-Forwarded-For": "198.51.100.3"}) as refused:
            assert refused.status == 503 and refused.headers["Retry-After"].isdigit()
    finally:
        for response in held:
            response.close()


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.5", "1.2.3.4, 203.0.113.9", "203.0.113.9"),  # what the client wrote is left
        ("10.0.0.5", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # through two trusted proxies
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),  # an untrusted peer's header: ignored
        ("10.0.0.5", "not an address", "10.0.0.5"),
        (None, "203.0.113.9", "unknown"),
    ],
)
def test_a_client_is_named_by_a_trusted_proxy_only(
    peer: str | None, forwarded: str | None, client: str
) -> None:
    assert client_address(peer, forwarded, [ip_network("10.0.0.0/8")]) == client
