"""Heartbeat comments for every open SSE stream, from one timer.

Proxies close a connection that stays silent, and the protocol promises a
comment at least every 15 s (`rules.HEARTBEAT_SECONDS`). One task writes it to
every stream each period, so an idle stream costs no timer and no wake-up of
its own. A comment between two frames changes nothing for the client, so it
is written whatever the stream is doing; a socket whose buffer is already
full has bytes on the way and is skipped.
"""

from __future__ import annotations

import asyncio

from gateway.delivery.fanout import HIGH_WATER


class Heartbeats:
    def __init__(self, period: float) -> None:
        self._period = period
        self._streams: dict[asyncio.WriteTransport, bytes] = {}

    def add(self, transport: asyncio.WriteTransport, comment: bytes) -> None:
        """Beat on `transport` from now on, with `comment` framed as its stream needs."""
        self._streams[transport] = comment

    def discard(self, transport: asyncio.WriteTransport) -> None:
        self._streams.pop(transport, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            self.beat()

    def beat(self) -> None:
        for transport, comment in list(self._streams.items()):
            if not transport.is_closing() and transport.get_write_buffer_size() < HIGH_WATER:
                transport.write(comment)
