"""The Lease contract (`gateway.backends.base.Lease`), on every backend that has one.

In memory (two replicas sharing one `Shared`, as tests run them), on fakeredis
and on a real redis-server: one holder per build, renewed only by it, taken
over when it dies, and who else watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.backends.base import Lease
from gateway.backends.memory import MemoryLease, Shared
from gateway.backends.redis.lease import RedisLease
from tests.helpers.backends import redis_connection

TTL = 0.3


@pytest.fixture(
    params=["memory", "fakeredis", pytest.param("redis-server", marks=pytest.mark.integration)]
)
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Lease, Lease]]:
    """Two replicas' leases on one backend."""
    if request.param == "memory":
        shared = Shared()
        yield MemoryLease("a", TTL, shared), MemoryLease("b", TTL, shared)
        return
    connection = await redis_connection(request)
    yield RedisLease(connection, "a", TTL), RedisLease(connection, "b", TTL)
    await connection.close()


async def test_one_holder_at_a_time(replicas: tuple[Lease, Lease]) -> None:
    a, b = replicas
    assert await a.acquire("br-1")
    assert not await b.acquire("br-1")
    assert not await b.renew("br-1"), "only the holder renews"
    assert await a.renew("br-1")
    assert await b.acquire("br-2"), "leases are per build"
    assert await a.acquire("br-1"), "its holder gets it again (a second watch of the build)"


async def test_release_hands_over_at_once(replicas: tuple[Lease, Lease]) -> None:
    a, b = replicas
    assert await a.acquire("br-1")
    await b.release("br-1")
    assert not await b.acquire("br-1"), "a non-holder's release changes nothing"
    await a.release("br-1")
    assert await b.acquire("br-1")


async def test_a_dead_holders_lease_runs_out(replicas: tuple[Lease, Lease]) -> None:
    a, b = replicas
    assert await a.acquire("br-1")
    await asyncio.sleep(TTL * 1.5)  # a does not renew: it died
    assert await b.acquire("br-1")
    assert not await a.renew("br-1"), "back from a pause, the old holder learns it lost"


async def test_a_lapsed_lease_is_taken_back_by_its_holder(
    replicas: tuple[Lease, Lease],
) -> None:
    a, _ = replicas
    assert await a.acquire("br-1")
    await asyncio.sleep(TTL * 1.5)  # Redis was unreachable; nobody took it meanwhile
    assert await a.renew("br-1")


async def test_interest_of_other_replicas(replicas: tuple[Lease, Lease]) -> None:
    a, b = replicas
    assert not await a.interest_elsewhere("br-1")
    await a.show_interest("br-1")
    assert not await a.interest_elsewhere("br-1"), "its own interest does not count"
    await b.show_interest("br-1")
    assert await a.interest_elsewhere("br-1")
    await b.withdraw_interest("br-1")
    assert not await a.interest_elsewhere("br-1")
    await b.show_interest("br-1")
    await asyncio.sleep(TTL * 1.5)  # b died without withdrawing
    assert not await a.interest_elsewhere("br-1")
