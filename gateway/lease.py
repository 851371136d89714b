"""Which replica polls a build: a lease per build, and the interest that keeps it polled.

One replica holds a build's lease and runs its poller; it renews the lease every
third of its time to live. Every replica whose viewers watch the build shows
interest in it, so the owner keeps polling for viewers it does not serve itself,
and each one tries to take the lease: when the owner dies, its lease runs out and
one of them takes over (`Watches` decides when to call what).

The in-process bus serves one replica, whose lease is always granted
(`LocalLease`). On Redis, the lease is a key set with NX and PX, renewed and
released only by its holder (compare-and-renew scripts), and interest is a sorted
set of replicas scored by when their interest expires, on Redis's clock: replicas'
clocks never have to agree.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Protocol

from gateway.redis_client import RedisConnection, build_key, reaching_redis


def replica_name() -> str:
    """Who holds a lease: readable in Redis, and unique even for a restarted process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease(Protocol):
    async def acquire(self, build_id: str) -> bool:
        """Take the build's lease if nobody holds it."""

    async def renew(self, build_id: str) -> bool:
        """Extend a lease this replica holds (or take it back if it lapsed); False if lost."""

    async def release(self, build_id: str) -> None:
        """Let the lease go now, if this replica holds it, so another takes over at once."""

    async def show_interest(self, build_id: str) -> None:
        """This replica has viewers of the build (refreshed while it has)."""

    async def withdraw_interest(self, build_id: str) -> None: ...

    async def interest_elsewhere(self, build_id: str) -> bool:
        """Whether another replica has shown interest within the lease's time to live."""


class LocalLease:
    """One replica: every lease is granted, and there is nobody else to be interested."""

    async def acquire(self, build_id: str) -> bool:
        return True

    async def renew(self, build_id: str) -> bool:
        return True

    async def release(self, build_id: str) -> None:
        pass

    async def show_interest(self, build_id: str) -> None:
        pass

    async def withdraw_interest(self, build_id: str) -> None:
        pass

    async def interest_elsewhere(self, build_id: str) -> bool:
        return False


# KEYS: lease. ARGV: holder, ttl ms. Extends our own lease; takes it back if it lapsed
# (expired while Redis was unreachable, or Redis restarted empty).
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: interest. ARGV: replica, ttl ms. Scores are expiry times on Redis's clock.
_SHOW_INTEREST = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: interest. ARGV: replica. Whether a replica other than ARGV[1] is still interested.
_INTEREST_ELSEWHERE = """
local now = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(now[1]) * 1000)
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then others = others - 1 end
return others
"""


class RedisLease:
    def __init__(self, connection: RedisConnection, holder: str, ttl: float) -> None:
        self.holder = holder
        self._redis = connection.control
        self._ttl_ms = max(1, int(ttl * 1000))
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._show_interest = self._redis.register_script(_SHOW_INTEREST)
        self._interest_elsewhere = self._redis.register_script(_INTEREST_ELSEWHERE)

    async def acquire(self, build_id: str) -> bool:
        with reaching_redis():
            key = build_key(build_id, "lease")
            return bool(await self._redis.set(key, self.holder, nx=True, px=self._ttl_ms))

    async def renew(self, build_id: str) -> bool:
        keys = [build_key(build_id, "lease")]
        with reaching_redis():
            return bool(await self._renew(keys=keys, args=[self.holder, self._ttl_ms]))

    async def release(self, build_id: str) -> None:
        with reaching_redis():
            await self._release(keys=[build_key(build_id, "lease")], args=[self.holder])

    async def show_interest(self, build_id: str) -> None:
        keys = [build_key(build_id, "interest")]
        with reaching_redis():
            await self._show_interest(keys=keys, args=[self.holder, self._ttl_ms])

    async def withdraw_interest(self, build_id: str) -> None:
        with reaching_redis():
            await self._redis.zrem(build_key(build_id, "interest"), self.holder)

    async def interest_elsewhere(self, build_id: str) -> bool:
        keys = [build_key(build_id, "interest")]
        with reaching_redis():
            return int(await self._interest_elsewhere(keys=keys, args=[self.holder])) > 0
