"""Which builds this process watches, for how many viewers; it owns their pollers.

The first viewer of a build starts its poller and waits for the first view
(or the upstream's answer that the build does not exist); later viewers
share it. When the last viewer leaves, the poller keeps running for a grace
period, so a page reload or a reconnect does not cost a fresh start.

An unknown build id is remembered for a few seconds: a storm of requests for
it costs the upstream one request, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.bus.base import Bus
from gateway.errors import UpstreamNotFound
from gateway.models import PartitionState
from gateway.poller import Poller
from gateway.settings import Settings
from gateway.upstream import UpstreamClient

log = logging.getLogger(__name__)

MAX_MISSING = 10_000
"""Unknown build ids remembered at once; the oldest are forgotten first."""


@dataclass(eq=False, slots=True)
class Watch:
    poller: Poller
    task: asyncio.Task[None]
    viewers: int = 0
    grace: asyncio.TimerHandle | None = field(default=None)


class Watches:
    def __init__(self, settings: Settings, upstream: UpstreamClient, bus: Bus) -> None:
        self._settings = settings
        self._upstream = upstream
        self._bus = bus
        self._watches: dict[str, Watch] = {}
        self._missing: dict[str, tuple[float, str]] = {}  # build id -> (expiry, message)

    @contextlib.asynccontextmanager
    async def watching(self, build_id: str) -> AsyncIterator[Watch]:
        """Hold a build watched for the duration; raises the upstream's error if it has no view."""
        watch = await self._acquire(build_id)
        try:
            yield watch
        finally:
            self._release(watch)

    async def _acquire(self, build_id: str) -> Watch:
        missing = self._missing.get(build_id)
        if missing is not None:
            if missing[0] > time.monotonic():
                # A fresh exception each time: re-raising one would grow its traceback.
                raise UpstreamNotFound(missing[1])
            del self._missing[build_id]
        watch = self._watches.get(build_id)
        if watch is None:
            watch = self._start(build_id)
        watch.viewers += 1
        if watch.grace is not None:
            watch.grace.cancel()
            watch.grace = None
        try:
            await watch.poller.wait_ready()
        except BaseException as exc:  # a client that leaves while waiting releases too
            self._release(watch)
            if isinstance(exc, UpstreamNotFound):
                self._remember_missing(build_id, str(exc))
            raise
        return watch

    def _remember_missing(self, build_id: str, message: str) -> None:
        now = time.monotonic()
        if len(self._missing) >= MAX_MISSING:  # a storm of distinct ids must not grow memory
            self._missing = {k: v for k, v in self._missing.items() if v[0] > now}
            while len(self._missing) >= MAX_MISSING:
                del self._missing[next(iter(self._missing))]
        self._missing[build_id] = (now + self._settings.not_found_ttl, message)

    def _start(self, build_id: str) -> Watch:
        poller = Poller(build_id, self._upstream, self._bus, self._settings)
        task = asyncio.create_task(poller.run(), name=f"poll {build_id}")
        watch = Watch(poller, task)
        self._watches[build_id] = watch
        task.add_done_callback(lambda t: self._ended(build_id, watch, t))
        return watch

    def _release(self, watch: Watch) -> None:
        watch.viewers -= 1
        if watch.viewers == 0 and not watch.task.done():
            loop = asyncio.get_running_loop()
            watch.grace = loop.call_later(self._settings.grace, watch.task.cancel)

    def _ended(self, build_id: str, watch: Watch, task: asyncio.Task[None]) -> None:
        if self._watches.get(build_id) is watch:
            del self._watches[build_id]
        if watch.grace is not None:
            watch.grace.cancel()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("poller of %s crashed", build_id, exc_info=exc)

    def watched(self) -> list[dict[str, Any]]:
        """The builds polled now, with their progress and local viewer counts."""
        return [
            _summary(build_id, watch)
            for build_id, watch in self._watches.items()
            if watch.poller.view is not None
        ]

    async def close(self) -> None:
        tasks = [watch.task for watch in self._watches.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _summary(build_id: str, watch: Watch) -> dict[str, Any]:
    view = watch.poller.view or {}
    statuses = [p["status"] for p in view.get("partitions", {}).values()]
    return {
        "buildId": build_id,
        "status": view.get("status"),
        "updatedAtMs": view.get("updatedAtMs"),
        "stale": view.get("stale", False),
        "viewers": watch.viewers,
        "partitions": {
            "total": len(statuses),
            "available": statuses.count(PartitionState.AVAILABLE),
            "failed": statuses.count(PartitionState.FAILED),
        },
    }
