"""A replica's orderly exit (SIGTERM, SIGINT): stop taking work, hand it over, leave.

1. `/readyz` answers 503 and the listener closes: nothing new arrives here.
2. Its builds go to the replicas that follow them (`Watches.hand_over`): at once
   for those followed elsewhere, the others once their viewers have moved.
3. Its streams and sockets end spread over the window (`Streams.spread`): an SSE
   stream ends and its client resumes elsewhere with `Last-Event-ID`; a
   WebSocket closes with 1001. So a replica of 10,000 viewers sends about a
   thousand a second to the others, not ten thousand at once.

The process exits once its last client is gone or the window is over,
whichever comes first; a second signal ends the drain at once (`gateway.cli`).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.state import STATE

log = logging.getLogger(__name__)


async def drain(app: web.Application, runner: web.AppRunner, window: float) -> None:
    state = app[STATE]
    state.streams.closing = True
    for site in list(runner.sites):
        await site.stop()
    state.watches.hand_over()
    loop = asyncio.get_running_loop()
    started, open_ = loop.time(), len(state.streams)
    log.info(
        "shutting down: %d streams and sockets leave over %.0f s (a second signal: at once)",
        open_,
        window,
    )
    await state.streams.spread(window)
    log.info(
        "drained in %.1f s; %d streams and sockets still open end now",
        loop.time() - started,
        len(state.streams),
    )
