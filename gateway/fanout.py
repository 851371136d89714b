"""Local fan-out: one process's subscribers of each build, and their bounded queues.

The bus hands each message to `Fanout.deliver` once; the fan-out appends the
same Message (its frame already encoded) to every local subscriber's queue.
Appending never waits, so a slow client cannot delay anyone else.

Overflow policy, the one place it is decided: a subscriber whose queue holds
`limit` messages not yet written is too slow. It is cut off at once (its
queue dropped, its connection closed through `on_overflow`), the event is
logged and counted, and the client resumes by itself with its last id: from
history if the bus still keeps it, otherwise from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from gateway.bus.base import Bus
from gateway.messages import Message

log = logging.getLogger(__name__)


class Subscriber:
    """One client's queue for one build: written by the fan-out, drained by its transport."""

    __slots__ = ("build_id", "closed", "limit", "on_overflow", "overflowed", "pending", "wakeup")

    def __init__(
        self,
        build_id: str,
        limit: int,
        on_overflow: Callable[[], None],
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.build_id = build_id
        self.limit = limit
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False  # the server is shutting down: end the stream, the client reconnects
        self.pending: deque[Message] = deque()
        self.wakeup = wakeup or asyncio.Event()  # shared by the builds of one connection

    def offer(self, message: Message) -> bool:
        """Queue a message; False when this subscriber just overflowed and is being cut off."""
        if self.overflowed:
            return True
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending.clear()
            self.wakeup.set()
            self.on_overflow()
            return False
        self.pending.append(message)
        self.wakeup.set()
        return True

    def take(self) -> list[Message]:
        batch = list(self.pending)
        self.pending.clear()
        self.wakeup.clear()
        return batch


class Fanout:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._subscribers: dict[str, set[Subscriber]] = {}
        self.overflows = 0

    def deliver(self, message: Message) -> None:
        for subscriber in tuple(self._subscribers.get(message.build_id, ())):
            if not subscriber.offer(message):
                self.overflows += 1
                log.warning(
                    "cut off a subscriber of %s: %d messages unwritten",
                    message.build_id,
                    subscriber.limit,
                )

    async def attach(self, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.setdefault(subscriber.build_id, set())
        subscribers.add(subscriber)
        if len(subscribers) == 1:
            await self._bus.subscribe(subscriber.build_id)

    async def detach(self, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(subscriber.build_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribers[subscriber.build_id]
            await self._bus.unsubscribe(subscriber.build_id)

    def close(self) -> None:
        """End every local stream, so a shutdown does not wait for clients to leave."""
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.closed = True
                subscriber.wakeup.set()

    def viewers(self, build_id: str) -> int:
        return len(self._subscribers.get(build_id, ()))
