"""Local fan-out: one process's subscribers of each build, written to directly.

The bus hands each message to `Fanout.deliver` once, its wire bytes already
encoded (`gateway.messages`). For a subscriber whose connection is idle and
whose socket keeps up, the fan-out writes those bytes to the socket itself:
no task wakes, nothing is copied, and no JSON is made per subscriber. Anything
else (a connection still catching up, a socket whose buffer is full, a message
out of sequence, an error) goes to the subscriber's bounded queue, and its
connection's coroutine drains the queue in one write per batch, repairing any
gap through its `Follower`. Appending never waits, so a slow client cannot
delay anyone else.

Overflow policy, the one place it is decided: a subscriber whose queue holds
`limit` messages not yet written is too slow. It is cut off at once (its
queue dropped, its connection reset through `on_overflow`: see `reset`), the
event is logged and counted, and the client resumes by itself with its last id: from
history if the bus still keeps it, otherwise from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import cast

from gateway.backends.base import Bus
from gateway.delivery.follow import Follower
from gateway.ops.metrics import Metrics
from gateway.protocol.messages import Message

log = logging.getLogger(__name__)

HIGH_WATER = 64 * 1024
"""Bytes a socket's own buffer may hold before its messages queue instead (asyncio's default)."""

_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Close a connection now and drop what the kernel still holds for it: a reset, not a FIN.

    A client cut off for not reading has megabytes unread in its socket's kernel buffer.
    Closed gracefully, the kernel would keep that socket in FIN-WAIT-1 with its buffer for
    minutes; a zero linger makes the close send an RST and free both at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class Direct:
    """A connection's socket, written by the fan-out while the connection has nothing queued.

    What one turn of the event loop brings for a socket goes out at the turn's
    end, in one write: a burst of messages costs one send, not one per message.
    """

    __slots__ = ("_batch", "_transport", "sent")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's subclasses no ABC
        self._batch: list[bytes] = []
        self.sent = 0  # bytes written, for the access log

    def open(self) -> bool:
        """Whether the socket may still be written to (checked when the batch goes out)."""
        return not self._transport.is_closing()

    def ready(self) -> bool:
        """Whether the socket takes a write now: its buffer below the high water (and open)."""
        transport = self._transport
        return not transport.is_closing() and transport.get_write_buffer_size() < HIGH_WATER

    def add(self, message: Message) -> bool:
        """Take the message's bytes for the next flush; True if it is the first since the last."""
        batch = self._batch
        batch.append(self.wire(message))
        return len(batch) == 1

    def flush(self) -> None:
        batch = self._batch
        if not batch:
            return
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        batch.clear()
        if self.open():
            self._transport.write(data)
            self.sent += len(data)

    def wire(self, message: Message) -> bytes:
        """The message's bytes on this connection's wire, encoded once per message."""
        raise NotImplementedError


class Wakeup:
    """An asyncio.Event for one waiter, without the Event's deque: idle connections are many."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None


class Subscriber:
    """One client's hold on one build: written by the fan-out, drained by its connection."""

    __slots__ = (
        "build_id",
        "closed",
        "direct",
        "follower",
        "limit",
        "on_overflow",
        "overflowed",
        "pending",
        "wakeup",
        "ws",
    )

    def __init__(
        self,
        follower: Follower,
        limit: int,
        on_overflow: Callable[[], None],
        wakeup: Wakeup | None = None,
        *,
        ws: bool = False,
    ) -> None:
        self.ws = ws  # its transport, for the delivery counts: a WebSocket, else SSE
        self.build_id = follower.build_id
        self.follower = follower
        self.limit = limit
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False  # the server is shutting down: end the stream, the client reconnects
        self.pending: list[Message] = []
        self.wakeup = wakeup or Wakeup()  # shared by the builds of one connection
        # Set by the connection while it is idle with nothing queued; None while it works.
        self.direct: Direct | None = None

    def offer(self, message: Message, unflushed: list[Direct]) -> bool:
        """Write or queue a message; False when this subscriber just overflowed.

        A direct write joins `unflushed` when it is its socket's first of this turn."""
        if self.overflowed:
            return True
        direct = self.direct
        if direct is not None and direct.ready() and self.follower.advance(message):
            if direct.add(message):
                unflushed.append(direct)
            return True
        self.direct = None  # order: once one message queues, the next ones queue behind it
        if len(self.pending) >= self.limit:
            self.cut_off()
            return False
        self.pending.append(message)
        self.wakeup.set()
        return True

    def cut_off(self) -> None:
        """Drop what is queued and close the connection: the client resumes with its last id."""
        self.overflowed = True
        self.direct = None
        self.pending.clear()
        self.wakeup.set()
        self.on_overflow()

    def take(self) -> list[Message]:
        batch, self.pending = self.pending, []
        self.wakeup.clear()
        return batch


class Fanout:
    def __init__(self, bus: Bus, metrics: Metrics | None = None) -> None:
        self._bus = bus
        self._subscribers: dict[str, set[Subscriber]] = {}
        # Per build, its subscribers on SSE and on WebSocket: a message adds them to the
        # delivery counts, so counting costs two additions per message, none per delivery.
        self._transports: dict[str, list[int]] = {}
        self._unflushed: list[Direct] = []
        self._read: list[int] = []  # read times of the messages the next flush writes
        metrics = metrics or Metrics()
        self._tally = metrics.tally
        self._latency = metrics.fanout_latency

    @property
    def overflows(self) -> int:
        return self._tally.slow_consumers

    def deliver(self, message: Message) -> None:
        unflushed = self._unflushed
        flush_due = not unflushed
        build_id = message.build_id
        for subscriber in tuple(self._subscribers.get(build_id, ())):
            try:
                kept = subscriber.offer(message, unflushed)
            except Exception:  # a bug: it costs this subscriber its connection, no one else
                log.exception("writing to a subscriber of %s failed", build_id)
                subscriber.cut_off()
                continue
            if not kept:
                self._tally.slow_consumers += 1
                log.warning(
                    "cut off a subscriber of %s: %d messages unwritten", build_id, subscriber.limit
                )
        if (counts := self._transports.get(build_id)) is not None:
            tally = self._tally
            tally.delivered_sse += counts[0]
            tally.delivered_ws += counts[1]
            if message.read_ms is not None:
                self._read.append(message.read_ms)
        if flush_due and unflushed:
            # Run once the messages that arrived with this one are delivered too; callbacks
            # run in order, so this comes before any connection woken after it.
            asyncio.get_running_loop().call_soon(self._flush)
        elif not unflushed:
            self._observe_latency()

    def _observe_latency(self) -> None:
        """How long the messages just written took from their poll's read (once per message)."""
        if read := self._read:
            self._read = []
            now_ms = time.time_ns() // 1_000_000
            for read_ms in read:
                self._latency.observe(max(0, now_ms - read_ms) / 1000)

    def _flush(self) -> None:
        self._observe_latency()
        unflushed, self._unflushed = self._unflushed, []
        for direct in unflushed:
            try:
                direct.flush()
            except Exception:  # a bug: that socket misses a write; its client resyncs on the gap
                log.exception("writing to a subscriber's socket failed")

    async def attach(self, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.setdefault(subscriber.build_id, set())
        subscribers.add(subscriber)
        self._transports.setdefault(subscriber.build_id, [0, 0])[subscriber.ws] += 1
        if len(subscribers) == 1:
            await self._bus.subscribe(subscriber.build_id)

    async def detach(self, subscriber: Subscriber) -> None:
        subscriber.direct = None
        subscribers = self._subscribers.get(subscriber.build_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        self._transports[subscriber.build_id][subscriber.ws] -= 1
        if not subscribers:
            del self._subscribers[subscriber.build_id]
            del self._transports[subscriber.build_id]
            await self._bus.unsubscribe(subscriber.build_id)

    def viewers(self, build_id: str) -> int:
        return len(self._subscribers.get(build_id, ()))
