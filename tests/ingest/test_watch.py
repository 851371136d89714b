"""Watches: who polls a build, and a watch's end racing a new viewer."""

from __future__ import annotations

import asyncio
import dataclasses

from gateway.backends.memory import MemoryBus, MemoryLease
from gateway.ingest.upstream import UpstreamClient
from gateway.ingest.watch import Watches
from gateway.settings import Settings
from gateway.simulator import Simulator


class SlowRelease(MemoryLease):
    """A lease whose release takes as long as the test says (a Redis round trip, stretched)."""

    def __init__(self) -> None:
        super().__init__("local", ttl=5.0)
        self.releasing = asyncio.Event()
        self.go_on = asyncio.Event()

    async def release(self, build_id: str) -> None:
        self.releasing.set()
        await self.go_on.wait()


async def test_a_viewer_arriving_while_a_watch_ends_gets_a_fresh_watch(
    sim: Simulator, settings: Settings
) -> None:
    settings = dataclasses.replace(settings, grace=0.05, first_view_timeout=2.0)
    lease = SlowRelease()
    upstream = UpstreamClient(settings.upstream)
    watches = Watches(settings, upstream, MemoryBus(), lease)
    build_id = sim.create_build(2)
    try:
        async with watches.watching(build_id):
            pass
        await asyncio.wait_for(lease.releasing.wait(), 5)  # the grace ran out: it is ending
        async with asyncio.timeout(1), watches.watching(build_id) as watch:
            assert watch.view is not None and watches.polls(build_id)
        lease.go_on.set()
    finally:
        lease.go_on.set()
        await watches.close()
        await upstream.aclose()
