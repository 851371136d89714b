"""Counting what a client may do: token buckets and open connections, per client address.

Both are bounded however many addresses come and go: a flood from a million
spoofed addresses must not grow memory. Buckets are forgotten once full again
(a full bucket is the same as no bucket), counts once they reach zero.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.aio import now

MAX_KEYS = 100_000
"""Buckets kept at once; past it the least recently used go (they start full again)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Buckets:
    """One token bucket per key: `rate` tokens a second, at most `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0.0, or the seconds until one is there."""
        at = now()
        bucket = self._buckets.pop(key, None) or _Bucket(self._burst, at)
        bucket.tokens = min(self._burst, bucket.tokens + (at - bucket.at) * self._rate)
        bucket.at = at
        wait = 0.0
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
        else:
            wait = (1.0 - bucket.tokens) / self._rate
        if bucket.tokens < self._burst:
            self._buckets[key] = bucket
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        return wait


class Bucket:
    """One token bucket, for one connection's frames or one kind of log line."""

    __slots__ = ("_bucket", "_burst", "_clock", "_rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = now) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._bucket = _Bucket(burst, clock())

    def take(self) -> bool:
        """Spend a token if there is one."""
        bucket, at = self._bucket, self._clock()
        bucket.tokens = min(self._burst, bucket.tokens + (at - bucket.at) * self._rate)
        bucket.at = at
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class Connections:
    """Open requests (streams and sockets included) of the process and of each client."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total_limit = total
        self.client_limit = per_client
        self.total = 0
        self._clients: Counter[str] = Counter()

    def full(self, client: str) -> str | None:
        """Why one more for `client` would be too many ("process" or "client"), or None."""
        if self.total >= self.total_limit:
            return "process"
        if self._clients[client] >= self.client_limit:
            return "client"
        return None

    def open(self, client: str) -> None:
        self.total += 1
        self._clients[client] += 1

    def close(self, client: str) -> None:
        self.total -= 1
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]
