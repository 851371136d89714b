"""The connection to Redis that the bus and the leases share: one server or a Cluster.

A `--redis` URL names one server or any node of a Redis Cluster; which one it is
is asked of the server (`INFO cluster`), so an operator gives the same kind of
URL either way.

Every key of a build starts with `bc:{TAG}:ID:`. The hash tag is a short hash of
the build id, not the id itself: an id may hold braces, which would otherwise
choose the Cluster slot. So each build's keys live in one slot, and the scripts
that touch several of them run on a Cluster as on a single server.

Pub/sub needs a plain connection to one node: classic PUBLISH reaches every
subscriber of a Cluster, whichever node each is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from gateway.errors import BusUnavailable
from gateway.protocol.resume import build_tag

# Short timeouts: a Redis that does not answer is treated as down, and callers
# keep what they have; the next attempt comes soon.
# One quick retry: it replaces a pooled connection that a Redis restart left dead.
_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 5,
    "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
}
POOL_SIZE = 64
CONTROL_POOL_SIZE = 8
POOL_WAIT = 5.0
"""Connections per process to a plain Redis. A burst of viewers (a wall screen
reloading, a replica's clients reconnecting) makes more calls at once than
that: they wait up to POOL_WAIT seconds for a connection rather than fail."""

FAULTS = (
    exceptions.ConnectionError,  # also BusyLoadingError: a restarted Redis reading its data
    exceptions.TimeoutError,
    exceptions.ClusterError,  # also ClusterDownError: slots moving, a master lost
    exceptions.ReadOnlyError,  # a failover under way
    exceptions.MasterDownError,
    exceptions.OutOfMemoryError,  # full at maxmemory with noeviction: writes refused for now
    OSError,
)
"""What Redis calls raise when Redis is down, busy or full: transient. Anything else is a bug."""


@contextlib.contextmanager
def reaching_redis() -> Iterator[None]:
    """Translate Redis's transient faults to BusUnavailable, the one error callers handle."""
    try:
        yield
    except FAULTS as exc:
        raise BusUnavailable(f"Redis is unreachable ({type(exc).__name__}: {exc})") from exc


def redacted(url: str) -> str:
    """`url` as logs may show it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


RELEASED = b""
"""Published on a build's channel when its lease is let go: no message is empty."""


def build_key(build_id: str, name: str) -> str:
    return f"bc:{{{build_tag(build_id)}}}:{build_id}:{name}"


class RedisConnection:
    """The command clients (plain or Cluster) and where to open pub/sub connections.

    `commands` serves viewers' reads; `control` (a pool of its own on a plain Redis)
    the leases, the registry and the poller's publishes. A crowd of viewers arriving
    can use every connection of `commands` for seconds; were the lease's renewal
    among them, the replica would lose its builds' leases to another.
    """

    def __init__(
        self,
        commands: Redis | RedisCluster,
        nodes: list[tuple[str, int]],
        control: Redis | RedisCluster | None = None,
    ) -> None:
        self.commands = commands
        self.control = control or commands
        self.cluster = isinstance(commands, RedisCluster)
        self._nodes = itertools.cycle(nodes)
        self._node_clients: dict[tuple[str, int], Redis] = {}

    def pubsub_client(self) -> Redis:
        """A plain client to open pub/sub on; on a Cluster each call tries the next node."""
        if isinstance(self.commands, Redis):
            return self.commands
        node = next(self._nodes)
        if node not in self._node_clients:
            self._node_clients[node] = Redis(host=node[0], port=node[1], **_OPTIONS)
        return self._node_clients[node]

    async def close(self) -> None:
        for client in self._node_clients.values():
            await client.aclose()
        if self.control is not self.commands:
            await self.control.aclose()
        await self.commands.aclose()


def _pooled(url: str, size: int) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=size, timeout=POOL_WAIT, **_OPTIONS)
    return Redis.from_pool(pool)


async def connect(url: str, within: float = 0.0) -> RedisConnection:
    """Connect and find out whether `url` names a Cluster; BusUnavailable if unreachable
    `within` seconds (Redis may start a moment after the gateway: compose, a restart)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            async with asyncio.timeout(max(1.0, deadline - loop.time())):
                return await _connect(url)
        except (BusUnavailable, TimeoutError) as exc:
            if loop.time() + RETRY_CONNECT >= deadline:
                reason = str(exc) if exc.args else f"no answer from Redis at {redacted(url)}"
                tried = f" (tried for {within:.0f} s)" if within else ""
                raise BusUnavailable(reason + tried) from exc
        await asyncio.sleep(RETRY_CONNECT)


RETRY_CONNECT = 0.5
"""Seconds between attempts to reach Redis at start."""


async def _connect(url: str) -> RedisConnection:
    probe = _pooled(url, POOL_SIZE)
    try:
        info = await probe.info("cluster")
    except FAULTS as exc:
        await probe.aclose()
        raise BusUnavailable(f"cannot reach Redis at {redacted(url)}: {exc}") from exc
    if not info.get("cluster_enabled"):
        return RedisConnection(probe, [], control=_pooled(url, CONTROL_POOL_SIZE))
    await probe.aclose()
    cluster = RedisCluster.from_url(url, **_OPTIONS)
    try:
        await cluster.initialize()
    except FAULTS as exc:
        await cluster.aclose()
        raise BusUnavailable(f"cannot reach the Redis Cluster at {redacted(url)}: {exc}") from exc
    nodes = [(node.host, int(node.port)) for node in cluster.get_nodes()]
    return RedisConnection(cluster, nodes)
