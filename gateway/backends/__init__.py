"""Where the watched builds' state lives: in this process, or in Redis for many replicas.

    base.py          the contracts: Bus, Lease, Registry, Missing, Cache, Recent
    memory.py        one replica: everything in this process
    redis/           many replicas: connection.py, bus.py, lease.py, registry.py, missing.py,
                     cache.py, recent.py

`create` is the one factory: the gateway asks for its backends and gets a
matching set, never a Redis bus beside an in-process lease.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from gateway.backends.base import RECENT_BUILDS, Bus, Cache, Lease, Missing, Recent, Registry
from gateway.backends.memory import (
    MemoryBus,
    MemoryCache,
    MemoryLease,
    MemoryMissing,
    MemoryRecent,
    MemoryRegistry,
)
from gateway.backends.redis.bus import RedisBus
from gateway.backends.redis.cache import RedisCache
from gateway.backends.redis.connection import RedisConnection
from gateway.backends.redis.lease import RedisLease
from gateway.backends.redis.missing import RedisMissing
from gateway.backends.redis.recent import RedisRecent
from gateway.backends.redis.registry import RedisRegistry
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Backends:
    bus: Bus
    lease: Lease
    registry: Registry
    missing: Missing
    cache: Cache
    recent: Recent
    replica: str  # who this process is to the others: the lease holder's name
    redis: RedisConnection | None  # owned: closed with the backends

    async def close(self) -> None:
        await self.registry.close()
        await self.bus.close()
        if self.redis is not None:
            await self.redis.close()


def replica_name() -> str:
    """Who holds a lease: readable in Redis, and unique even for a restarted process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def create(settings: Settings, redis: RedisConnection | None = None) -> Backends:
    """The in-process backends, or the Redis ones on `redis` (which they then own)."""
    replica = replica_name()
    if redis is None:
        return Backends(
            MemoryBus(
                history=settings.history,
                history_bytes=settings.history_bytes,
                max_builds=settings.retained_builds,
            ),
            MemoryLease(replica, settings.lease_ttl),
            MemoryRegistry(replica),
            MemoryMissing(),
            MemoryCache(),
            MemoryRecent(settings.retention, RECENT_BUILDS),
            replica,
            None,
        )
    return Backends(
        RedisBus(
            redis,
            history=settings.history,
            history_bytes=settings.history_bytes,
            retention=settings.retention,
        ),
        RedisLease(redis, replica, settings.lease_ttl),
        RedisRegistry(redis, replica, settings.lease_ttl),
        RedisMissing(redis),
        RedisCache(redis),
        RedisRecent(redis, settings.retention, RECENT_BUILDS),
        replica,
        redis,
    )


__all__ = ["Backends", "Bus", "Cache", "Lease", "Missing", "Recent", "Registry", "create"]
