"""One client's contiguous path through a build's messages, whatever the transport.

A client first catches up (the deltas after its resume position, or a
snapshot), then takes live messages. Live messages can arrive before the
catch-up is read, twice, or with a gap (a bus that lost one); the follower
drops what the client already has and repairs a gap from the bus's history,
or with a fresh snapshot. So a client sees every delta in order, or a
snapshot: never a silent gap.
"""

from __future__ import annotations

from gateway.backends.base import Bus
from gateway.protocol.messages import Kind, Message
from gateway.protocol.resume import Position

WEIGH_FROM = 64 * 1024
"""Bytes of missed deltas past which they are weighed against the snapshot: a client away
for long would otherwise get more bytes of deltas than of the view they lead to."""


class Follower:
    __slots__ = ("_bus", "_paused", "at", "build_id", "resumed")

    def __init__(self, bus: Bus, build_id: str) -> None:
        self._bus = bus
        self.build_id = build_id
        self.at: Position | None = None
        self._paused = False  # told that live updates paused: the resync snapshot is due
        self.resumed: str | None = None  # how a client that came with a position was served

    async def catch_up(self, since: Position | None) -> list[Message]:
        """What a client at `since` (None: nowhere yet) must get to be current: the deltas it
        missed, or the latest snapshot where they are lost or would outweigh it."""
        latest: Message | None = None
        if since is not None:
            missed = await self._bus.history(self.build_id, since)
            if missed is not None:
                size = sum(len(message.data) for message in missed)
                if size > WEIGH_FROM:
                    latest = await self._bus.latest(self.build_id)
                if latest is None or len(latest.data) >= size:
                    self.at = missed[-1].position if missed else since
                    self.resumed = "deltas"
                    return missed
        latest = latest or await self._bus.latest(self.build_id)
        if since is not None:
            self.resumed = "snapshot"
        if latest is None:
            return []
        self.at = latest.position
        return [latest]

    def advance(self, message: Message) -> bool:
        """Take `message` if it is the next one in sequence: the fan-out's direct write."""
        at = self.at
        if (  # the usual case first, cheaply: the next seq of the same epoch
            at is not None
            and message.seq == at.seq + 1
            and message.epoch == at.epoch
            and message.kind is not Kind.ERROR
        ) or (message.kind is not Kind.ERROR and self._follows(message)):
            self.at, self._paused = message.position, False
            return True
        return False

    async def admit(self, batch: list[Message]) -> list[Message]:
        """The live messages to send, in order, with duplicates dropped and gaps filled."""
        out: list[Message] = []
        for message in batch:
            if message.kind is Kind.ERROR:
                self._paused = self._paused or not message.ends_stream
                out.append(message)
            elif self.advance(message):
                out.append(message)
            elif self._is_ahead(message):
                out.extend(await self.catch_up(self.at))
        return out

    def _follows(self, message: Message) -> bool:
        at = self.at
        if at is None or (message.kind is Kind.SNAPSHOT and message.epoch != at.epoch):
            return True
        if self._paused and message.kind is Kind.SNAPSHOT and message.position == at:
            return True  # the resync after a pause: the client learns it is current again
        return message.epoch == at.epoch and message.seq == at.seq + 1

    def _is_ahead(self, message: Message) -> bool:
        """A gap: this message is past what the client has (a later seq or another epoch)."""
        at = self.at
        return at is not None and (message.epoch != at.epoch or message.seq > at.seq + 1)
