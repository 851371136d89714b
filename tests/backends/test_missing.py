"""The Missing contract (`gateway.backends.base.Missing`): what the upstream said of an id.

In memory, on fakeredis and on a real redis-server: a verdict is shared by every
replica of the backend, and forgotten once its time is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.backends.base import Missing
from gateway.backends.memory import MemoryMissing
from gateway.backends.redis.missing import RedisMissing
from tests.helpers.backends import redis_connection


@pytest.fixture(
    params=["memory", "fakeredis", pytest.param("redis-server", marks=pytest.mark.integration)]
)
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Missing, Missing]]:
    """Two replicas' views of one backend."""
    if request.param == "memory":
        shared = MemoryMissing()  # one process: its replicas share the object
        yield shared, shared
        return
    connection = await redis_connection(request)
    yield RedisMissing(connection), RedisMissing(connection)
    await connection.close()


async def test_a_verdict_is_shared_and_forgotten_in_time(replicas: tuple[Missing, Missing]) -> None:
    a, b = replicas
    assert await b.recall("br-x") is None
    await a.remember("br-x", "not_found", "no build request br-x upstream", 0.3)
    await a.remember("a b%", "invalid_build_id", "upstream rejected it", 0.3)
    assert await b.recall("br-x") == ("not_found", "no build request br-x upstream")
    assert await b.recall("a b%") == ("invalid_build_id", "upstream rejected it")
    await asyncio.sleep(0.45)
    assert await b.recall("br-x") is None
