"""Unknown ids on Redis: one replica's 404 from the upstream spares the others the request.

The contract is `gateway.backends.base.Missing`. One key per id,
`bc:{TAG}:ID:missing`, holding `CODE MESSAGE` and expiring by itself.
"""

from __future__ import annotations

from gateway.backends.redis.connection import RedisConnection, build_key, reaching_redis


class RedisMissing:
    def __init__(self, connection: RedisConnection) -> None:
        self._redis = connection.commands

    async def remember(self, build_id: str, code: str, message: str, ttl: float) -> None:
        with reaching_redis():
            await self._redis.set(
                build_key(build_id, "missing"), f"{code} {message}", px=max(1, int(ttl * 1000))
            )

    async def recall(self, build_id: str) -> tuple[str, str] | None:
        with reaching_redis():
            found = await self._redis.get(build_key(build_id, "missing"))
        if found is None:
            return None
        code, _, message = (found.decode() if isinstance(found, bytes) else found).partition(" ")
        return code, message
