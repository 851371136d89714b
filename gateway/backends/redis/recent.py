"""The recent builds on Redis: one sorted set for the deployment, scored by when each build
was last watched (epoch ms, by the recording replica's clock).

The contract is `gateway.backends.base.Recent`. Each record also trims the set by age
and by count, so it never holds more than a day's (`max_age`) builds or `max_builds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from gateway.backends.redis.connection import RedisConnection, reaching_redis

RECENT = "bc:{recent}"

_Scored = list[tuple[bytes, float]]  # members and scores, as the client answers them

# KEYS: the set. ARGV: the build, now ms, oldest ms kept, most builds kept.
_RECORD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
return 1
"""


class RedisRecent:
    def __init__(
        self,
        connection: RedisConnection,
        max_age: float,
        max_builds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._control = connection.control
        self._commands = connection.commands
        self._record = self._control.register_script(_RECORD)
        self._max_age_ms = int(max_age * 1000)
        self._max_builds = max_builds
        self._clock = clock

    async def record(self, build_id: str) -> None:
        at = int(self._clock() * 1000)
        args: list[str | int] = [build_id, at, at - self._max_age_ms, self._max_builds]
        with reaching_redis():
            await self._record(keys=[RECENT], args=args)

    async def recent(self) -> list[tuple[str, int]]:
        since = int(self._clock() * 1000) - self._max_age_ms
        with reaching_redis():
            found = await self._commands.zrevrangebyscore(
                RECENT, "+inf", since, start=0, num=self._max_builds, withscores=True
            )
        return [(build_id.decode(), int(at)) for build_id, at in cast(_Scored, found)]
