"""The event loop's clock, and stopping tasks reliably when a library swallows their cancellation.

Timing (cadences, grace periods, leases in memory) reads `now()`, the clock
asyncio's sleeps and timeouts measure: one clock for all of it, which tests
can fake (tests/helpers/clock.py).

redis-py can lose a CancelledError that arrives while it reconnects. A loop that
only relies on the exception then runs on after `cancel()`, and a shutdown that
awaits it hangs. So long-lived loops also check `stopping()`, and shutdowns wait
for tasks a bounded time (`stop`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Self

log = logging.getLogger(__name__)


def now() -> float:
    """The running loop's monotonic time, in seconds."""
    return asyncio.get_running_loop().time()


def stopping() -> bool:
    """Whether the running task was asked to stop, even if the exception got lost."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop(tasks: Iterable[asyncio.Task[Any] | None], timeout: float = 3.0) -> None:
    """Cancel the tasks and wait for them at most `timeout` seconds; log what would not end."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    if not running:
        return
    _, stuck = await asyncio.wait(running, timeout=timeout)
    for task in stuck:
        log.warning("task %s did not stop within %.1f s", task.get_name(), timeout)


class Closing:
    """`async with` for an object that closes with `aclose()`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
