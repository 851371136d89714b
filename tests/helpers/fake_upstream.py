"""The simulated Build Graph Service as an httpx transport: no socket, so fake time runs it.

The same model as `buildcast simulate` (`gateway.simulator.Simulator`), answered
by a plain function through `httpx.MockTransport`, with what the HTTP simulator's
`/_sim/` API gives: counts per endpoint and build, the most requests of one build
in flight at once, a delay per answer (in the loop's time, fake or not) and
injected failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from gateway.backends.base import Missing
from gateway.backends.memory import MemoryBus, MemoryLease
from gateway.ingest.upstream import FirstLooks, UpstreamClient
from gateway.ingest.watch import Watches
from gateway.settings import Settings
from gateway.simulator import Simulator

BASE = "http://bgs.test"
SETTINGS = Settings(upstream=BASE)  # poll 2 s while running, 10 s once ended, 30 s grace


@dataclass
class FakeUpstream:
    sim: Simulator
    delay: float = 0.0  # seconds before each answer
    delay_unknown: float = 0.0  # seconds before answering 404 for a build it does not have
    status: int | None = None  # answer every request with this status instead
    builds: Counter[str] = field(default_factory=Counter)  # requests per build
    endpoints: Counter[str] = field(default_factory=Counter)  # build, partition_status, ...
    partitions_read: list[str] = field(default_factory=list)  # refs, in order
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)  # per build or ref
    most_at_once: int = 0  # requests in flight at once, all of them

    def client(self, timeout: float = 5.0) -> UpstreamClient:
        return UpstreamClient(BASE, timeout=timeout, transport=httpx.MockTransport(self.answer))

    async def answer(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.raw_path.decode().split("?")[0].split("/")[3:]  # after /api/v1
        if parts[0] == "builds":
            endpoint, key = "build", unquote(parts[1])
        else:
            endpoint, key = f"partition_{parts[2]}", unquote(parts[1])
        self.endpoints[endpoint] += 1
        if endpoint == "build":
            self.builds[key] += 1
        elif endpoint == "partition_status":
            self.partitions_read.append(key)
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        self.most_at_once = max(self.most_at_once, self.in_flight.total())
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status is not None:
                return httpx.Response(self.status)
            return httpx.Response(200, json=self._body(endpoint, key))
        except KeyError:
            if self.delay_unknown:
                await asyncio.sleep(self.delay_unknown)
            return httpx.Response(404, json={"error": f"no {key}"})
        finally:
            self.in_flight[key] -= 1

    def _body(self, endpoint: str, key: str) -> object:
        if endpoint == "build":
            return self.sim.build_json(key)
        if endpoint == "partition_status":
            return self.sim.partition_status_json(key)
        return self.sim.partition_events_json(key)


@contextlib.asynccontextmanager
async def replica(
    upstream: FakeUpstream,
    missing: Missing | None = None,
    *,
    first_looks: bool = False,
    **settings: Any,
) -> AsyncIterator[Watches]:
    """One replica's watches on the in-process bus, in front of `upstream`; with
    `first_looks`, new builds are looked at on a pool of their own, as `create_app` does."""
    config = dataclasses.replace(SETTINGS, **settings)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(upstream.client(config.upstream_timeout))
        looks = None
        if first_looks:
            pool = await stack.enter_async_context(upstream.client(config.upstream_timeout))
            looks = FirstLooks(pool, config.first_looks)
        lease = MemoryLease("here", config.lease_ttl)
        watches = Watches(config, client, MemoryBus(), lease, missing, looks)
        try:
            yield watches
        finally:
            await watches.close()
