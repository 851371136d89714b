"""The in-process backends: the product for a single replica, not test doubles.

Everything lives in this process's memory, so they serve one replica
(`buildcast serve` without `--redis`, and `buildcast demo`). A fresh process
starts every build in a new epoch: clients of the previous process resume
with a snapshot.

The lease and the registry keep the semantics of their Redis versions: replicas
that share one `Shared` (tests run two in one process) compete for leases and
add up their viewers. A lone replica holds every lease and its own viewers are
the deployment's.

Memory stays bounded: at most `history` messages (and `history_bytes` of them)
per build, and the state of at most `max_builds` builds, the least recently
published forgotten first; leases and interest are forgotten once expired; the
cache and the recent builds hold a fixed number of entries, the oldest out first.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from gateway.aio import now
from gateway.backends.base import Cached, Deliver, Released, Report, Viewers
from gateway.protocol import messages
from gateway.protocol.messages import Kind, Message
from gateway.protocol.resume import Position
from gateway.protocol.view import View, summarize


@dataclass(slots=True)
class _Build:
    epoch: str
    seq: int
    view: View
    history: deque[Message]
    history_bytes: int = 0
    snapshot: Message | None = field(default=None)  # encoded on first demand, per seq


class MemoryBus:
    def __init__(
        self, *, history: int = 1000, history_bytes: int = 16 << 20, max_builds: int = 10_000
    ) -> None:
        self._history = history
        self._history_bytes = history_bytes
        self._max_builds = max_builds
        self._builds: OrderedDict[str, _Build] = OrderedDict()
        self._subscribed: set[str] = set()
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver, released: Released | None = None) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._deliver = None

    async def subscribe(self, build_id: str) -> None:
        self._subscribed.add(build_id)

    async def unsubscribe(self, build_id: str) -> None:
        self._subscribed.discard(build_id)

    async def publish(self, message: Message, view: View | None) -> bool:
        if message.kind is not Kind.ERROR:
            if view is None:
                raise ValueError("a snapshot or delta is published with the view at its seq")
            if not self._store(message, view):
                return False
        if self._deliver is not None and message.build_id in self._subscribed:
            self._deliver(message)
        return True

    def _store(self, message: Message, view: View) -> bool:
        build = self._builds.get(message.build_id)
        follows = build is not None and (
            message.epoch == build.epoch and message.seq == build.seq + 1
        )
        if not (follows or (message.kind is Kind.SNAPSHOT and build is None)):
            return False
        if build is None:
            build = _Build(message.epoch, message.seq, view, deque())
            self._builds[message.build_id] = build
        build.seq, build.view, build.snapshot = message.seq, view, None
        self._keep(build, message)
        self._builds.move_to_end(message.build_id)
        while len(self._builds) > self._max_builds:
            self._builds.popitem(last=False)
        return True

    def _keep(self, build: _Build, message: Message) -> None:
        """Into the history; the oldest out once it holds `history` messages or bytes."""
        history = build.history
        history.append(message)
        build.history_bytes += len(message.data)
        while len(history) > 1 and (
            len(history) > self._history or build.history_bytes > self._history_bytes
        ):
            build.history_bytes -= len(history.popleft().data)

    async def latest(self, build_id: str) -> Message | None:
        build = self._builds.get(build_id)
        if build is None:
            return None
        if build.snapshot is None:
            build.snapshot = messages.snapshot(build_id, build.epoch, build.seq, build.view)
        return build.snapshot

    async def position(self, build_id: str) -> Position | None:
        build = self._builds.get(build_id)
        return None if build is None else Position(build.epoch, build.seq)

    async def retain(self, build_id: str) -> Position | None:
        return await self.position(build_id)

    async def summaries(self, build_ids: list[str]) -> dict[str, View]:
        return {b: summarize(self._builds[b].view) for b in build_ids if b in self._builds}

    async def history(self, build_id: str, since: Position) -> list[Message] | None:
        build = self._builds.get(build_id)
        if build is None or since.epoch != build.epoch or since.seq > build.seq:
            return None
        kept = build.history
        first = kept[0].seq if kept else build.seq + 1
        if since.seq + 1 < first:
            return None
        return list(islice(kept, since.seq + 1 - first, None))

    async def ready(self) -> bool:
        return True

    def up(self) -> bool:
        return True


Clock = Callable[[], float]


@dataclass(slots=True)
class Shared:
    """What replicas in one process share: leases, interest and reported viewers."""

    clock: Clock = now
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # build -> holder, expiry
    interest: dict[str, dict[str, float]] = field(default_factory=dict)  # build -> replica: expiry
    reports: dict[str, Callable[[], Report]] = field(default_factory=dict)  # by replica


class MemoryLease:
    def __init__(self, holder: str, ttl: float, shared: Shared | None = None) -> None:
        self.holder = holder
        self._ttl = ttl
        self._shared = shared or Shared()

    def _holder(self, build_id: str) -> str | None:
        held = self._shared.leases.get(build_id)
        if held is None or held[1] <= self._shared.clock():
            return None
        return held[0]

    def _hold(self, build_id: str) -> bool:
        self._shared.leases[build_id] = (self.holder, self._shared.clock() + self._ttl)
        return True

    async def acquire(self, build_id: str) -> bool:
        return self._holder(build_id) in (None, self.holder) and self._hold(build_id)

    async def renew(self, build_id: str) -> bool:
        return await self.acquire(build_id)

    async def release(self, build_id: str) -> None:
        if self._holder(build_id) == self.holder:
            del self._shared.leases[build_id]

    async def show_interest(self, build_id: str) -> None:
        interest, now = self._shared.interest, self._shared.clock()
        if build_id not in interest:  # forget builds nobody is interested in any more
            for gone in [b for b, replicas in interest.items() if max(replicas.values()) <= now]:
                del interest[gone]
        interest.setdefault(build_id, {})[self.holder] = now + self._ttl

    async def withdraw_interest(self, build_id: str) -> None:
        replicas = self._shared.interest.get(build_id, {})
        replicas.pop(self.holder, None)
        if not replicas:
            self._shared.interest.pop(build_id, None)

    async def interest_elsewhere(self, build_id: str) -> bool:
        now = self._shared.clock()
        replicas = self._shared.interest.get(build_id, {})
        return any(r != self.holder and expiry > now for r, expiry in replicas.items())


class MemoryRegistry:
    def __init__(self, replica: str, shared: Shared | None = None) -> None:
        self._replica = replica
        self._shared = shared or Shared()

    async def start(self, local: Callable[[], Report]) -> None:
        self._shared.reports[self._replica] = local

    async def close(self) -> None:
        self._shared.reports.pop(self._replica, None)

    async def viewers(self) -> Viewers:
        total: Counter[str] = Counter()
        for report in await self.reports():
            total.update(report["viewers"])
        return dict(total)

    async def reports(self) -> list[Report]:
        mine = self._shared.reports.get(self._replica)
        others = [r for name, r in list(self._shared.reports.items()) if name != self._replica]
        return [report() for report in ([mine] if mine else []) + others]


MAX_MISSING = 10_000
"""Unknown ids remembered at once by one process; the oldest are forgotten first."""


class MemoryMissing:
    def __init__(self, clock: Clock = now) -> None:
        self._clock = clock
        self._missing: OrderedDict[str, tuple[float, str, str]] = OrderedDict()

    async def remember(self, build_id: str, code: str, message: str, ttl: float) -> None:
        at = self._clock()
        self._missing.pop(build_id, None)
        self._missing[build_id] = (at + ttl, code, message)
        while len(self._missing) > MAX_MISSING:  # a storm of distinct ids must not grow memory
            self._missing.popitem(last=False)

    async def recall(self, build_id: str) -> tuple[str, str] | None:
        found = self._missing.get(build_id)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._missing[build_id]
            return None
        return found[1], found[2]


MAX_CACHED = 10_000
"""Keys the in-process cache holds at once (and claims): the oldest are forgotten first."""

MAX_CACHED_BYTES = 64 << 20
"""Bytes of values the in-process cache holds at once: the oldest are forgotten first."""


class MemoryCache:
    def __init__(
        self, clock: Clock = now, max_keys: int = MAX_CACHED, max_bytes: int = MAX_CACHED_BYTES
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._bytes = 0
        self._values: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()  # fresh, keep
        self._claims: OrderedDict[str, float] = OrderedDict()  # key -> until

    async def get(self, key: str) -> Cached | None:
        found = self._values.get(key)
        if found is None:
            return None
        fresh_until, keep_until, value = found
        at = self._clock()
        if keep_until <= at:
            self._forget(key)
            return None
        return Cached(value, fresh_until > at)

    async def put(self, key: str, value: bytes, fresh: float, keep: float) -> None:
        at = self._clock()
        self._forget(key)
        self._values[key] = (at + fresh, at + keep, value)
        self._bytes += len(value)
        while len(self._values) > self._max_keys or self._bytes > self._max_bytes:
            self._forget(next(iter(self._values)))
        self._claims.pop(key, None)

    def _forget(self, key: str) -> None:
        if (found := self._values.pop(key, None)) is not None:
            self._bytes -= len(found[2])

    async def claim(self, key: str, ttl: float) -> bool:
        at = self._clock()
        until = self._claims.pop(key, None)
        if until is not None and until > at:
            self._claims[key] = until
            return False
        self._claims[key] = at + ttl
        while len(self._claims) > self._max_keys:
            self._claims.popitem(last=False)
        return True

    async def release(self, key: str) -> None:
        self._claims.pop(key, None)


class MemoryRecent:
    def __init__(self, max_age: float, max_builds: int, clock: Clock = time.time) -> None:
        self._max_age = max_age
        self._max_builds = max_builds
        self._clock = clock
        self._watched: OrderedDict[str, int] = OrderedDict()  # last recorded last

    async def record(self, build_id: str) -> None:
        self._watched.pop(build_id, None)
        self._watched[build_id] = int(self._clock() * 1000)
        while len(self._watched) > self._max_builds:
            self._watched.popitem(last=False)

    async def recent(self) -> list[tuple[str, int]]:
        since = int((self._clock() - self._max_age) * 1000)
        newest_first = reversed(self._watched.items())
        return [(build_id, at) for build_id, at in newest_first if at >= since]
