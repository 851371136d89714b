"""A partition's own events (`GET /api/v1/partitions/{ref}/events`), asked of the upstream at
most once per ref every FRESH seconds for the whole deployment, whatever the viewers.

Concurrent askers in one process share one load (single flight). A load reads the
shared cache (`gateway.backends.base.Cache`: this process's, or Redis for every
replica). When the answer there is no longer fresh, the one replica that claims the
ref asks the upstream and stores what it got, while the others wait for it. What the
upstream says is stored too when it is an error: a 404 as a 404; a failure as the
last good answer (its `fetchedAtMs` tells how old it is), or as a 503 when there is
none. So a failing upstream is asked no more often than a healthy one.

A load that may ask the upstream (no fresh answer is cached) costs its client a token
(`new_builds_per_second` of them a second, as for first looks at builds), and at most
`first_looks` loads ask the upstream at once: a flood of made-up refs cannot crowd out
the pollers of watched builds. A fresh answer costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from gateway.aio import now
from gateway.backends.base import Cache, Cached
from gateway.errors import (
    BadRequest,
    TooMany,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotFound,
)
from gateway.guard.limits import Buckets
from gateway.ingest.upstream import UpstreamClient
from gateway.ingest.views import event_view
from gateway.protocol import codec
from gateway.protocol.rules import PARTITION_REF_RULE, Code, is_partition_ref
from gateway.settings import Settings

FRESH = 10.0
"""Seconds an answer is served before the upstream is asked again."""

KEEP = 600.0
"""Seconds the last answer is kept: served, with its age, while the upstream fails."""

WAIT_STEP = 0.05
"""Seconds between looks at the cache while another replica asks the upstream."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What every asker of a ref gets: the JSON body, or an error's code and message."""

    body: bytes
    code: Code | None = None

    def encode(self) -> bytes:
        return (self.code or "").encode() + b"\n" + self.body

    @classmethod
    def decode(cls, stored: bytes) -> Answer:
        code, _, body = stored.partition(b"\n")
        return cls(body, Code(code.decode()) if code else None)


class PartitionEvents:
    def __init__(self, settings: Settings, upstream: UpstreamClient, cache: Cache) -> None:
        self._upstream = upstream
        self._cache = cache
        self._claim_for = settings.upstream_deadline + 1.0  # no fetch lasts longer
        self._asking = asyncio.Semaphore(settings.first_looks)
        self._new_loads = Buckets(settings.new_builds_per_second, settings.new_builds_per_second)
        self._loads: dict[str, asyncio.Task[Answer]] = {}

    async def answer(self, ref: str, client: str | None = None) -> Answer:
        """The ref's events (or its error), loaded once for every asker of this process."""
        if not is_partition_ref(ref):
            raise BadRequest(PARTITION_REF_RULE)
        if ref not in self._loads:
            found = await self._cache.get(_key(ref))
            if found is not None and found.fresh:
                return Answer.decode(found.value)
        if (load := self._loads.get(ref)) is None:  # looked again: the get let others run
            if client is not None and (wait := self._new_loads.take(client)):
                raise TooMany("too many partitions asked for from this address", wait)
            load = asyncio.create_task(self._load(ref), name=f"partition events {ref}")
            self._loads[ref] = load
            load.add_done_callback(lambda done: self._loaded(ref, done))
        # Shielded: an asker who leaves does not cancel the load the others wait for.
        return await asyncio.shield(load)

    def _loaded(self, ref: str, load: asyncio.Task[Answer]) -> None:
        if self._loads.get(ref) is load:
            del self._loads[ref]
        if not load.cancelled():
            load.exception()  # retrieved: every asker may have left

    async def _load(self, ref: str) -> Answer:
        key = _key(ref)
        deadline = now() + self._claim_for
        last: Cached | None = None
        while True:
            found = await self._cache.get(key)
            last = found or last
            if found is not None and found.fresh:
                return Answer.decode(found.value)
            if await self._cache.claim(key, self._claim_for):
                return await self._fetch(key, ref, last)
            if now() >= deadline:  # the replica that claimed it died: what there is
                return _stale(last, "no answer from the upstream in time")
            await asyncio.sleep(WAIT_STEP)

    async def _fetch(self, key: str, ref: str, last: Cached | None) -> Answer:
        """Ask the upstream (this replica holds the claim) and store its answer for all."""
        try:
            # Another replica may have stored an answer and let its claim go just now.
            if (found := await self._cache.get(key)) is not None and found.fresh:
                await self._cache.release(key)
                return Answer.decode(found.value)
            async with self._asking:
                answer = await self._ask(ref, found or last)
            await self._cache.put(key, answer.encode(), FRESH, KEEP)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._cache.release(key)
            raise
        return answer

    async def _ask(self, ref: str, last: Cached | None) -> Answer:
        fetched_at = int(time.time() * 1000)
        try:
            response = await self._upstream.partition_events(ref)
        except UpstreamNotFound:
            return Answer(f"no partition {ref} upstream".encode(), Code.NOT_FOUND)
        except UpstreamBadRequest:
            return Answer(b"the upstream refused the partition ref", Code.BAD_REQUEST)
        except UpstreamError as exc:
            return _stale(last, str(exc))
        events = sorted((event_view(e) for e in response.events), key=lambda e: e["timestampMs"])
        body = {"partitionRef": ref, "events": events, "fetchedAtMs": fetched_at}
        return Answer(codec.dumps(body))


def _key(ref: str) -> str:
    return f"partition-events:{ref}"


def _stale(last: Cached | None, why: str) -> Answer:
    """The last good answer, however old; else the upstream's failure."""
    if last is not None and (answer := Answer.decode(last.value)).code is None:
        return answer
    return Answer(why.encode(), Code.UPSTREAM_UNAVAILABLE)
