"""The Recent contract (`gateway.backends.base.Recent`): the builds watched lately.

In memory, on fakeredis, on a real redis-server and on a Redis Cluster, on a clock the
test moves: every replica sees every record, newest first; a build recorded again moves
to the front; builds older than the age or beyond the count are forgotten.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.backends.base import Recent
from gateway.backends.memory import MemoryRecent
from gateway.backends.redis.recent import RedisRecent
from tests.helpers.backends import IMPLEMENTATIONS, redis_connection

DAY = 86_400.0
START = 1_800_000_000.0  # an epoch second: 2027


@dataclass
class Clock:
    at: float = START

    def __call__(self) -> float:
        return self.at


@dataclass
class Replicas:
    a: Recent
    b: Recent
    clock: Clock


@pytest.fixture(params=IMPLEMENTATIONS)
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    """Two replicas' views of one backend remembering a day of at most 3 builds."""
    clock = Clock()
    if request.param == "memory":
        shared = MemoryRecent(DAY, 3, clock)  # one process: its replicas share the object
        yield Replicas(shared, shared, clock)
        return
    connection = await redis_connection(request)
    yield Replicas(
        RedisRecent(connection, DAY, 3, clock), RedisRecent(connection, DAY, 3, clock), clock
    )
    await connection.close()


def ms(seconds: float) -> int:
    return int(seconds * 1000)


async def test_every_replica_sees_every_record_newest_first(replicas: Replicas) -> None:
    a, b, clock = replicas.a, replicas.b, replicas.clock
    assert await a.recent() == []
    await a.record("br-1")
    clock.at += 1
    await b.record("a b/%✓")
    clock.at += 1
    await a.record("{x}")
    expected = [("{x}", ms(START + 2)), ("a b/%✓", ms(START + 1)), ("br-1", ms(START))]
    assert await a.recent() == expected
    assert await b.recent() == expected


async def test_a_build_recorded_again_moves_to_the_front(replicas: Replicas) -> None:
    a, b, clock = replicas.a, replicas.b, replicas.clock
    for build_id in ("br-1", "br-2", "br-3"):
        await a.record(build_id)
        clock.at += 1
    await b.record("br-1")
    assert [b for b, _ in await a.recent()] == ["br-1", "br-3", "br-2"]
    assert (await a.recent())[0] == ("br-1", ms(START + 3))


async def test_the_oldest_builds_beyond_the_count_are_forgotten(replicas: Replicas) -> None:
    a, b, clock = replicas.a, replicas.b, replicas.clock
    for n in range(5):
        await (a if n % 2 else b).record(f"br-{n}")
        clock.at += 1
    assert [b for b, _ in await a.recent()] == ["br-4", "br-3", "br-2"]


async def test_builds_older_than_a_day_are_forgotten(replicas: Replicas) -> None:
    a, b, clock = replicas.a, replicas.b, replicas.clock
    await a.record("br-old")
    clock.at += DAY / 2
    await b.record("br-new")
    clock.at += DAY / 2 + 1
    assert await a.recent() == [("br-new", ms(START + DAY / 2))]
    await a.record("br-old")  # watched again: remembered again
    assert [b for b, _ in await b.recent()] == ["br-old", "br-new"]
