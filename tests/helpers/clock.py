"""A fake clock for cadence and timeout logic: minutes of polling in milliseconds, exactly.

`in_fake_time(scenario)` runs a coroutine on an event loop whose clock
(looptime's) stands still while anything can run and jumps to the next timer
when nothing can: every `asyncio.sleep`, `asyncio.timeout` and `loop.time()`
of the gateway and of the test see the same virtual seconds. So a test asserts
"5 polls in 1 s at a 0.2 s pace" exactly, whatever the machine's load. Only
code without sockets runs here (an httpx MockTransport for the upstream, the
in-process bus): real I/O would take no virtual time at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import looptime

T = TypeVar("T")


def in_fake_time(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `scenario()` on its own loop in fake time, from 0.0; its result."""
    loop = looptime.new_event_loop(start=0.0)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(scenario())


def now() -> float:
    """The running loop's time: fake in `in_fake_time`."""
    return asyncio.get_running_loop().time()
