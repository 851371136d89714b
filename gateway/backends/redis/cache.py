"""The cache on Redis: one replica asks the upstream, every replica serves its answer.

The contract is `gateway.backends.base.Cache`. Per key, three Redis keys under one
hash tag (so the scripts run on a Redis Cluster too): the value (expiring after
`keep`), a marker that it is fresh (expiring after `fresh`) and the claim (`SET NX`,
expiring after its ttl). Every expiry is Redis's own: replicas' clocks do not matter.
"""

from __future__ import annotations

from gateway.backends.base import Cached
from gateway.backends.redis.connection import RedisConnection, reaching_redis
from gateway.protocol.resume import build_tag

# KEYS: value, fresh marker. The value (or nothing) and whether the marker is there.
_GET = """
return {redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}
"""

# KEYS: value, fresh marker, claim. ARGV: value, fresh ms, keep ms.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCache:
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection.commands
        self._get = self._redis.register_script(_GET)
        self._put = self._redis.register_script(_PUT)

    @staticmethod
    def _keys(key: str, *names: str) -> list[str]:
        return [f"bc:cache:{{{build_tag(key)}}}:{name}:{key}" for name in names]

    async def get(self, key: str) -> Cached | None:
        with reaching_redis():
            value, fresh = await self._get(keys=self._keys(key, "value", "fresh"))
        return None if value is None else Cached(bytes(value), bool(fresh))

    async def put(self, key: str, value: bytes, fresh: float, keep: float) -> None:
        keys = self._keys(key, "value", "fresh", "claim")
        with reaching_redis():
            await self._put(keys=keys, args=[value, _ms(fresh), _ms(keep)])

    async def claim(self, key: str, ttl: float) -> bool:
        (claim,) = self._keys(key, "claim")
        with reaching_redis():
            return bool(await self._redis.set(claim, b"1", nx=True, px=_ms(ttl)))

    async def release(self, key: str) -> None:
        (claim,) = self._keys(key, "claim")
        with reaching_redis():
            await self._redis.delete(claim)
