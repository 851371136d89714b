"""The in-process bus: the product for a single replica, not a test double.

Everything lives in this process's memory, so it serves one replica only
(`buildcast serve` without `--redis`, and `buildcast demo`). A fresh process
starts every build in a new epoch: clients of the previous process resume
with a snapshot.

Memory stays bounded: at most `history` messages per build, and the state of at
most `max_builds` builds, the least recently published forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import islice

from gateway import messages
from gateway.bus.base import Deliver
from gateway.messages import Kind, Message
from gateway.models import View, summarize
from gateway.resume import Position


@dataclass(slots=True)
class _Build:
    epoch: str
    seq: int
    view: View
    history: deque[Message]
    snapshot: Message | None = field(default=None)  # encoded on first demand, per seq


class MemoryBus:
    def __init__(self, *, history: int = 1000, max_builds: int = 10_000) -> None:
        self._history = history
        self._max_builds = max_builds
        self._builds: OrderedDict[str, _Build] = OrderedDict()
        self._subscribed: set[str] = set()
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
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
            build = _Build(message.epoch, message.seq, view, deque(maxlen=self._history))
            self._builds[message.build_id] = build
        build.seq, build.view, build.snapshot = message.seq, view, None
        build.history.append(message)
        self._builds.move_to_end(message.build_id)
        while len(self._builds) > self._max_builds:
            self._builds.popitem(last=False)
        return True

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
