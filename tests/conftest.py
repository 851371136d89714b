"""Real HTTP on loopback: the simulated Build Graph Service and gateways in front of it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.backends.redis.connection import connect
from gateway.settings import Settings
from gateway.simulator import Simulator, create_simulator_app
from tests.helpers.gateways import StartGateway, StartReplica, Upstream
from tests.helpers.procs import Procs
from tests.helpers.redis_servers import Managed, RedisCluster, RedisServer, RedisUnavailable

M = TypeVar("M", bound=Managed)


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
        # Every test client comes from 127.0.0.1: the per-address limits have tests of their own.
        max_connections_per_client=10_000,
        new_builds_per_second=10_000.0,
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
def start_replica(
    aiohttp_server: Any, settings: Settings, redis_server: RedisServer
) -> StartReplica:
    """Replicas of `settings` on one real redis-server: short lease and grace."""
    shared = dataclasses.replace(settings, redis=redis_server.url, lease_ttl=1.0, grace=1.0)

    async def start() -> TestServer:
        server: TestServer = await aiohttp_server(
            create_app(shared, await connect(redis_server.url))
        )
        return server

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


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
