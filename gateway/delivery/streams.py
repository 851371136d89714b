"""Every open SSE stream and WebSocket of this process, and how to end each one.

A replica that stops ends them either all at once (a second signal, a test's
shutdown) or spread over a window (`spread`, the drain of `gateway.ops.drain`):
the viewers of a replica going away then come back to the others a few at a
time, not as one herd. Once closing, no new stream starts here (`Draining`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from gateway.errors import Draining

End = Callable[[], None]
"""Ends one stream or socket: its connection says goodbye and closes by itself, soon after."""


class Streams:
    def __init__(self) -> None:
        self._open: dict[object, End] = {}
        self._none_open = asyncio.Event()
        self._none_open.set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._open)

    def add(self, key: object, end: End) -> None:
        """A stream starts; refused (`Draining`, a 503) once the process is closing."""
        if self.closing:
            raise Draining("this replica is shutting down: connect again")
        self._open[key] = end
        self._none_open.clear()

    def discard(self, key: object) -> None:
        if self._open.pop(key, None) is not None and not self._open:
            self._none_open.set()

    def end_all(self) -> None:
        self.closing = True
        for end in list(self._open.values()):
            end()

    async def spread(self, window: float) -> None:
        """End every stream within `window` seconds, in random order at an even pace; return
        once none is open, or when the window is over.

        The ends are spread over the window's first nine tenths, so that the last
        ones have time to say goodbye; each falls at a random point of its own slot.
        """
        self.closing = True
        ends = list(self._open.values())
        random.shuffle(ends)
        loop = asyncio.get_running_loop()
        start, span = loop.time(), window * 0.9
        timers = [
            loop.call_at(start + span * (i + random.random()) / len(ends), end)
            for i, end in enumerate(ends)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(window):
                    await self._none_open.wait()
        finally:
            for timer in timers:
                timer.cancel()
