"""The Cache contract (`gateway.backends.base.Cache`): upstream answers shared for a while.

In memory, on fakeredis, on a real redis-server and on a Redis Cluster: what one
replica stores every replica of the backend reads, fresh for its first seconds, gone
after the rest; one claim at a time across the replicas, ended by `put`, `release` or
its time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.backends.base import Cache
from gateway.backends.memory import MemoryCache
from gateway.backends.redis.cache import RedisCache
from tests.helpers.backends import IMPLEMENTATIONS, redis_connection

KEYS = ["partition-events:a/b=1", "partition-events:{x} %25 ✓", "partition-events:"]
"""Keys as the partition events make them: refs hold '/', '=', '%', braces, spaces, non-ASCII."""


@pytest.fixture(params=IMPLEMENTATIONS)
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Cache, Cache]]:
    """Two replicas' views of one backend."""
    if request.param == "memory":
        shared = MemoryCache()  # one process: its replicas share the object
        yield shared, shared
        return
    connection = await redis_connection(request)
    yield RedisCache(connection), RedisCache(connection)
    await connection.close()


async def test_a_value_is_shared_fresh_then_stale_then_gone(replicas: tuple[Cache, Cache]) -> None:
    a, b = replicas
    for key in KEYS:
        assert await b.get(key) is None
        await a.put(key, f"answer of {key}".encode(), fresh=1.0, keep=2.0)
    for key in KEYS:
        found = await b.get(key)
        assert found is not None and found.fresh
        assert found.value == f"answer of {key}".encode(), "each key its own value"
    await asyncio.sleep(1.1)
    stale = await b.get(KEYS[0])
    assert stale is not None and not stale.fresh and stale.value == b"answer of " + KEYS[0].encode()
    await asyncio.sleep(1.0)
    assert await b.get(KEYS[0]) is None


async def test_a_new_value_replaces_the_old_and_is_fresh_again(
    replicas: tuple[Cache, Cache],
) -> None:
    a, b = replicas
    await a.put("k", b"old", fresh=0.1, keep=5)
    await asyncio.sleep(0.2)
    await b.put("k", b"new\n\x00bytes", fresh=5, keep=5)
    assert (found := await a.get("k")) is not None and found.fresh
    assert found.value == b"new\n\x00bytes"


async def test_one_claim_at_a_time_across_replicas_until_put(
    replicas: tuple[Cache, Cache],
) -> None:
    a, b = replicas
    granted = await asyncio.gather(*(r.claim("k", 5) for r in (a, b, a, b)))
    assert granted.count(True) == 1, granted
    assert not await a.claim("k", 5)
    assert await b.claim("other", 5), "claims are per key"
    await a.put("k", b"v", fresh=5, keep=5)
    assert await b.claim("k", 5), "a put ends the claim"


async def test_a_claim_ends_on_release_or_in_time(replicas: tuple[Cache, Cache]) -> None:
    a, b = replicas
    assert await a.claim("k", 5)
    await a.release("k")
    assert await b.claim("k", 1.0), "released"
    assert not await a.claim("k", 1.0)
    await asyncio.sleep(1.1)
    assert await a.claim("k", 5), "the claimer died: its claim lapsed"


async def test_the_memory_cache_forgets_the_oldest_keys_beyond_its_bound() -> None:
    cache = MemoryCache(max_keys=3)
    for n in range(5):
        await cache.put(f"k{n}", b"v", fresh=60, keep=60)
        assert await cache.claim(f"c{n}", 60)
    assert [await cache.get(f"k{n}") is not None for n in range(5)] == [False, False] + [True] * 3
    assert await cache.claim("c0", 60), "the oldest claims are forgotten too"


async def test_the_memory_cache_forgets_the_oldest_values_beyond_its_bytes() -> None:
    cache = MemoryCache(max_bytes=10)
    for n in range(3):
        await cache.put(f"k{n}", b"1234", fresh=60, keep=60)
    assert [await cache.get(f"k{n}") is not None for n in range(3)] == [False, True, True]
    await cache.put("k1", b"12345678", fresh=60, keep=60)  # replaced: its old bytes freed
    assert [await cache.get(f"k{n}") is not None for n in range(3)] == [False, True, False]
    await cache.put("huge", b"x" * 11, fresh=60, keep=60)
    assert await cache.get("huge") is None and await cache.get("k1") is None
