"""The test helpers that run real Redis: what the replica tests rely on them to do."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster as ClusterClient

from tests.helpers.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


def test_a_restart_keeps_what_was_written_just_before(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.set("bc:kept", "yes")
    redis_server.restart()
    with redis_server.client() as client:
        assert client.get("bc:kept") == b"yes"


def test_an_empty_restart_comes_back_blank_on_the_same_url(redis_server: RedisServer) -> None:
    url = redis_server.url
    with redis_server.client() as client:
        client.set("bc:lost", "yes")
    redis_server.restart(empty=True)
    assert redis_server.url == url
    with redis_server.client() as client:
        assert client.get("bc:lost") is None
        assert client.dbsize() == 0


def test_a_killed_server_starts_again(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert redis_server.process is not None and redis_server.process.returncode is not None
    redis_server.start()
    with redis_server.client() as client:
        assert client.ping()


def test_the_cluster_spreads_keys_over_its_masters(redis_cluster: RedisCluster) -> None:
    client = ClusterClient.from_url(redis_cluster.url)
    try:
        keys = [f"bc:{{build-{n}}}:latest" for n in range(20)]
        for key in keys:
            client.set(key, key)
        assert [client.get(key) for key in keys] == [key.encode() for key in keys]
        owners = {client.get_node_from_key(key).port for key in keys}
        assert len(owners) == 3, "20 builds' keys all landed on fewer than three masters"
    finally:
        client.close()
