"""What the backends' contract suites share: each runs against every implementation.

In memory, on fakeredis (fast, no server), on a real redis-server and on a Redis
Cluster of three masters (`integration`): one suite per contract, so they cannot drift.
"""

from __future__ import annotations

import fakeredis
import pytest

from gateway.backends.redis.connection import RedisConnection, connect
from tests.helpers.redis_servers import RedisCluster, RedisServer

IMPLEMENTATIONS = [
    "memory",
    "fakeredis",
    pytest.param("redis-server", marks=pytest.mark.integration),
    pytest.param("redis-cluster", marks=pytest.mark.integration),
]
"""The parameters of a contract suite's fixture."""


async def redis_connection(request: pytest.FixtureRequest) -> RedisConnection:
    """A connection to the Redis the fixture's parameter names (any but "memory"), empty."""
    if request.param == "fakeredis":
        return RedisConnection(fakeredis.FakeAsyncRedis(), [])
    if request.param == "redis-server":
        server: RedisServer = request.getfixturevalue("redis_server")
        return await connect(server.url)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    for node in cluster.nodes:  # shared by the module's tests: start each one empty
        with node.client() as client:
            client.flushall()
    connection = await connect(cluster.url)
    assert connection.cluster, "the URL of one node is enough to find the cluster"
    return connection
