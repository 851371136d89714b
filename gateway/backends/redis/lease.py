"""The lease on Redis: which replica polls a build, and the interest that keeps it polled.

The contract is `gateway.backends.base.Lease`; `Watches` decides when to call
what. The lease is a key set with NX and PX, renewed and released only by its
holder (compare-and-renew scripts), and interest is a sorted set of replicas
scored by when their interest expires, on Redis's clock: replicas' clocks never
have to agree.
"""

from __future__ import annotations

from gateway.backends.redis.connection import RELEASED, RedisConnection, build_key, reaching_redis

# KEYS: lease. ARGV: holder, ttl ms. Takes a free lease or extends our own: a lease of ours
# that lapsed (expired while Redis was unreachable, Redis restarted empty) is taken back,
# and a second watch of this replica (the first still ending) gets the lease it holds.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease, the build's channel. ARGV: holder, the notice. Followers take over at once.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
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
        self._take = self._redis.register_script(_TAKE)
        self._release = self._redis.register_script(_RELEASE)
        self._show_interest = self._redis.register_script(_SHOW_INTEREST)
        self._interest_elsewhere = self._redis.register_script(_INTEREST_ELSEWHERE)

    async def acquire(self, build_id: str) -> bool:
        keys = [build_key(build_id, "lease")]
        with reaching_redis():
            return bool(await self._take(keys=keys, args=[self.holder, self._ttl_ms]))

    async def renew(self, build_id: str) -> bool:
        return await self.acquire(build_id)

    async def release(self, build_id: str) -> None:
        with reaching_redis():
            keys = [build_key(build_id, "lease"), build_key(build_id, "msgs")]
            await self._release(keys=keys, args=[self.holder, RELEASED])

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
