"""The Registry contract (`gateway.backends.base.Registry`), on every backend that has one.

Two replicas report their own viewers; either one's `viewers()` is the sum for
the whole deployment, its own part fresh, and a replica that leaves or dies
drops out of the sums.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from gateway.backends.base import Registry, Report, Viewers
from gateway.backends.memory import MemoryRegistry, Shared
from gateway.backends.redis.connection import RedisConnection, connect
from gateway.backends.redis.registry import RedisRegistry
from tests.helpers.gateways import eventually
from tests.helpers.redis_servers import RedisServer

TTL = 0.3  # the Redis registry reports every TTL / 3 and is forgotten after 2 TTL


def reporting(viewers: Viewers, polls: dict[str, Any] | None = None) -> Report:
    return {"replica": {"id": "x"}, "viewers": viewers, "polls": polls or {}}


@dataclass
class Replicas:
    a: Registry
    b: Registry


REDIS = ["fakeredis", pytest.param("redis-server", marks=pytest.mark.integration)]


@contextlib.asynccontextmanager
async def replicas_on(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    """Two replicas' registries on one backend."""
    if backend == "memory":
        shared = Shared()
        yield Replicas(MemoryRegistry("a", shared), MemoryRegistry("b", shared))
        return
    if backend == "fakeredis":
        connection = RedisConnection(fakeredis.FakeAsyncRedis(), [])
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        connection = await connect(server.url)
    replicas = Replicas(RedisRegistry(connection, "a", TTL), RedisRegistry(connection, "b", TTL))
    yield replicas
    await replicas.a.close()
    await replicas.b.close()
    await connection.close()


@pytest.fixture(params=["memory", *REDIS])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    async with replicas_on(request.param, request) as found:
        yield found


@pytest.fixture(params=REDIS)
async def on_redis(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    """Replicas in separate processes, as far as the registry can tell."""
    async with replicas_on(request.param, request) as found:
        yield found


async def test_viewers_are_summed_over_the_replicas(replicas: Replicas) -> None:
    here: Viewers = {"br-1": 2}
    there: Viewers = {"br-1": 3, "br-2": 1}
    await replicas.a.start(lambda: reporting(here))
    await replicas.b.start(lambda: reporting(there))
    await eventually(replicas.a.viewers, lambda v: v == {"br-1": 5, "br-2": 1}, what="summed")
    here["br-3"] = 0  # a build in its grace period here: listed, with no viewer
    assert (await replicas.a.viewers())["br-3"] == 0, "its own part is read fresh, not a tick old"


async def test_a_replica_that_closes_drops_out_at_once(replicas: Replicas) -> None:
    await replicas.a.start(lambda: reporting({"br-1": 1}))
    await replicas.b.start(lambda: reporting({"br-1": 4}))
    await eventually(replicas.a.viewers, lambda v: v == {"br-1": 5}, what="summed")
    await replicas.b.close()
    assert await replicas.a.viewers() == {"br-1": 1}


async def test_a_replica_that_dies_drops_out_within_twice_its_period(on_redis: Replicas) -> None:
    """Only across processes: replicas in one process die together."""
    a, b = on_redis.a, on_redis.b
    await a.start(lambda: reporting({"br-1": 1}))
    await b.start(lambda: reporting({"br-1": 4}))
    await eventually(a.viewers, lambda v: v == {"br-1": 5}, what="summed")
    b._task.cancel()  # noqa: B009: it stops reporting, as a killed process does
    await asyncio.sleep(2 * TTL + 0.1)
    assert await a.viewers() == {"br-1": 1}


async def test_every_live_replica_reports_what_it_polls(replicas: Replicas) -> None:
    polls = {"br-1": {"pollInterval": 2.0, "lastPollAtMs": 1, "answeredAtMs": 1, "stale": False}}
    await replicas.a.start(lambda: reporting({"br-1": 1}))
    await replicas.b.start(lambda: reporting({"br-1": 4}, polls))

    def polled(reports: list[Report]) -> list[dict[str, Any]]:
        return [r["polls"] for r in reports]

    found = await eventually(replicas.a.reports, lambda r: len(r) == 2, what="both reports")
    assert polled(found) == [{}, polls], "its own first, read fresh"
    await replicas.b.close()
    assert polled(await replicas.a.reports()) == [{}]
