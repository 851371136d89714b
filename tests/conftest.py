"""Real HTTP on loopback: the simulated Build Graph Service and gateways in front of it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, async_playwright
from yarl import URL

from gateway.app import create_app
from gateway.settings import Settings
from gateway.simulator import Simulator, create_simulator_app
from tests.procs import Procs
from tests.redis_servers import Managed, RedisCluster, RedisServer, RedisUnavailable

M = TypeVar("M", bound=Managed)

StartGateway = Callable[..., Awaitable[TestServer]]

ARTIFACTS = Path(__file__).parent / "artifacts"
"""Figures and screenshots the tests write (not committed; the best go into docs/)."""

CHROMIUM = "/usr/bin/chromium"
# The flags a root, offline, headless Chromium needs here: no sandbox for root, and no
# background calls to Google's hosts, which this machine's closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def raw_url(server: TestServer, path: str) -> URL:
    """A URL whose path goes on the wire exactly as written (percent-escapes kept)."""
    return URL(f"http://{server.host}:{server.port}{path}", encoded=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (never a downloaded one), driven by Playwright."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=3)


@pytest.fixture
async def upstream(aiohttp_server: Any, sim: Simulator) -> TestServer:
    server: TestServer = await aiohttp_server(create_simulator_app(sim))
    return server


@pytest.fixture
def settings(upstream: TestServer) -> Settings:
    """Fast cadences, so a test sees many polls in little time."""
    return Settings(
        upstream=str(upstream.make_url("")).rstrip("/"),
        poll_active=0.1,
        poll_idle=0.3,
        grace=1.0,
        partition_refresh=30.0,
    )


@pytest.fixture
def start_gateway(aiohttp_server: Any, settings: Settings) -> StartGateway:
    async def start(**overrides: Any) -> TestServer:
        server: TestServer = await aiohttp_server(
            create_app(dataclasses.replace(settings, **overrides))
        )
        return server

    return start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> TestServer:
    return await start_gateway()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


class Upstream:
    """The simulator's control API, as a test reads it over HTTP."""

    def __init__(self, session: aiohttp.ClientSession, server: TestServer) -> None:
        self._session = session
        self._server = server

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(
            method, self._server.make_url(path), json=body
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_sim/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/_sim/stats/reset")

    async def faults(self, **fault: Any) -> None:
        await self._call("POST", "/_sim/faults", fault)

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_sim/faults")


@pytest.fixture
def control(session: aiohttp.ClientSession, upstream: TestServer) -> Upstream:
    return Upstream(session, upstream)


# --- real processes: redis-server, Redis Cluster, buildcast commands


def _running(make: Callable[[], M]) -> Iterator[M]:
    """`make()` started for the test; a missing redis-server fails with how to install it."""
    try:
        managed = make()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with managed:
        yield managed


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server per test (it starts in well under a second)."""
    yield from _running(RedisServer)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters, shared by a module's tests: creating a cluster takes seconds."""
    yield from _running(RedisCluster)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Starts buildcast processes; stops every one by PID after the test, printing their stderr
    (pytest shows it only when the test failed)."""
    with Procs(tmp_path / "procs") as started:
        yield started
    print(started.report())
