"""The registry on Redis: every replica's viewers, behind `/api/v1/watched`.

The contract is `gateway.backends.base.Registry`. Every replica writes its map
of viewers every third of the lease's time to live into a key of its own, and
lists itself in a sorted set scored by when that key expires (on Redis's
clock); any replica reads every live replica's map and adds them up. The keys
share one hash tag, so one script reads them all on a Redis Cluster too. A
replica that dies drops out of the sums within twice the lease time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from gateway.aio import stop, stopping
from gateway.backends.base import Report, Viewers, empty_report
from gateway.backends.redis.connection import RedisConnection, reaching_redis
from gateway.errors import BusUnavailable
from gateway.protocol import codec

log = logging.getLogger(__name__)

_REPLICAS = "bc:{replicas}"

# KEYS: the replicas set, this replica's viewers key, its report key. ARGV: replica, its
# viewers, its report, ttl ms. The viewers stay a key of their own, as replicas of the
# version before reports read them.
_REPORT = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
return 1
"""

# KEYS: the replicas set. ARGV: the key prefix of replicas' keys, the suffix of the one to
# read. Each live replica's name and that key.
_READ = """
local now = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(now[1]) * 1000)
local found = {}
for _, replica in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.call('GET', ARGV[1] .. replica .. ARGV[2])
  if value then found[#found + 1] = replica; found[#found + 1] = value end
end
return found
"""


class RedisRegistry:
    def __init__(self, connection: RedisConnection, replica: str, ttl: float) -> None:
        self._replica = replica
        self._redis = connection.control
        self._ttl = ttl
        self._report = self._redis.register_script(_REPORT)
        self._read = self._redis.register_script(_READ)
        self._local: Callable[[], Report] = empty_report
        self._task: asyncio.Task[None] | None = None

    async def start(self, local: Callable[[], Report]) -> None:
        self._local = local
        self._task = asyncio.create_task(self._keep_reporting(), name="registry")

    async def close(self) -> None:
        await stop([self._task])
        # Gone from the sums now, not after the ttl.
        with contextlib.suppress(BusUnavailable), reaching_redis():
            await self._redis.zrem(_REPLICAS, self._replica)

    async def _keep_reporting(self) -> None:
        failing = False
        while not stopping():
            try:
                report = self._local()
                keys = [_REPLICAS, self._key(self._replica), self._key(self._replica, REPORT)]
                args: list[str | bytes | int] = [
                    self._replica,
                    codec.dumps(report["viewers"]),
                    codec.dumps(report),
                    int(self._ttl * 2000),
                ]
                with reaching_redis():
                    await self._report(keys=keys, args=args)
                failing = False
            except BusUnavailable as exc:
                if not failing:
                    log.warning("cannot report this replica's viewers: %s", exc)
                failing = True
            await asyncio.sleep(self._ttl / 3)

    async def _others(self, suffix: str) -> list[bytes]:
        """The key `suffix` of every other live replica (our own is read fresh instead)."""
        with reaching_redis():
            found = await self._read(keys=[_REPLICAS], args=[self._key(""), suffix])
        return [
            body
            for replica, body in zip(found[::2], found[1::2], strict=True)
            if replica.decode() != self._replica
        ]

    async def viewers(self) -> Viewers:
        total: Counter[str] = Counter()
        for body in await self._others(""):
            total.update(codec.loads(body))
        total.update(self._local()["viewers"])
        return dict(total)

    async def reports(self) -> list[Report]:
        others = [codec.loads(body) for body in await self._others(REPORT)]
        return [self._local(), *others]

    @staticmethod
    def _key(replica: str, suffix: str = "") -> str:
        return f"{_REPLICAS}:{replica}{suffix}"


REPORT = ":report"
