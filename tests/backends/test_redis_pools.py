"""A crowd of viewers on one replica: Redis calls are shared and queued, never the lease's."""

from __future__ import annotations

import asyncio

import pytest

from gateway.backends.redis.bus import RedisBus
from gateway.backends.redis.connection import POOL_SIZE, connect
from gateway.backends.redis.lease import RedisLease
from gateway.protocol import messages
from tests.helpers.redis_servers import RedisServer
from tests.helpers.views import a_view

pytestmark = pytest.mark.integration


async def test_viewers_arriving_at_once_share_one_read_of_the_view(
    redis_server: RedisServer,
) -> None:
    connection = await connect(redis_server.url)
    try:
        bus = RedisBus(connection)
        view = a_view("b", 1)
        assert await bus.publish(messages.snapshot("b", "e", 1, view), view)
        crowd = await asyncio.gather(*(bus.latest("b") for _ in range(200)))
        assert all(snapshot is crowd[0] for snapshot in crowd), "one read, handed to all"
        assert crowd[0] is not None and crowd[0].seq == 1
        later = await bus.latest("b")
        assert later is not None and later.position == crowd[0].position
    finally:
        await connection.close()


async def test_the_lease_renews_while_viewers_hold_every_read_connection(
    redis_server: RedisServer,
) -> None:
    connection = await connect(redis_server.url)
    try:
        lease = RedisLease(connection, "replica-a", ttl=5.0)
        assert await lease.acquire("b")
        # Every connection of the viewers' pool busy for 2 s (a crowd reading large views).
        busy = [
            asyncio.create_task(connection.commands.blpop([f"nothing-{n}"], timeout=2))
            for n in range(POOL_SIZE)
        ]
        await asyncio.sleep(0.3)
        assert await lease.renew("b")
        assert not any(task.done() for task in busy), "renewed while the crowd held them all"
        await asyncio.gather(*busy)
    finally:
        await connection.close()
