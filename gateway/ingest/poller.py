"""One poller per watched build: read the upstream, compute what changed, publish it.

A poller is one task running one loop, so two polls of the same build can
never overlap, however slow the upstream is: the next poll is scheduled only
after the previous one ended.

Upstream economy (`docs/upstream.md`, "The load it can take"): the build is read
with its ETag; partition statuses are all read once, for the first snapshot,
then only for the refs that new events mention, plus a slow background
refresh of the partitions that are not final yet (a delegated partition
changes without any event of this build). So a 1,000-partition build costs
about one request per poll, not 1,001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from gateway.aio import now, stopping
from gateway.backends.base import Bus
from gateway.errors import (
    BuildcastError,
    BuildGone,
    BusUnavailable,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.ingest.payloads import BuildEvent, BuildReader, BuildStatusResponse
from gateway.ingest.upstream import FirstLooks, UpstreamClient
from gateway.ingest.views import EventViews, build_view, partition_view
from gateway.logs import THROTTLED
from gateway.protocol import codec, messages
from gateway.protocol.diff import diff
from gateway.protocol.messages import Message
from gateway.protocol.resume import Position, new_epoch
from gateway.protocol.view import (
    FINAL_PARTITION_STATUSES,
    TERMINAL_BUILD_STATUSES,
    UNKNOWN_PARTITION,
    View,
)
from gateway.settings import Settings

log = logging.getLogger(__name__)

BUS_RETRY = 2.0
"""Longest wait before publishing again after a bus failure, however long the outage."""


OnGone = Callable[[BuildGone], Awaitable[None]]


class Poller:
    def __init__(
        self,
        build_id: str,
        upstream: UpstreamClient,
        bus: Bus,
        settings: Settings,
        *,
        first_looks: FirstLooks | None = None,
        on_gone: OnGone | None = None,
        on_published: Callable[[str], None] | None = None,
    ) -> None:
        """`first_looks` reads the build until it is found; `on_gone` hears why it never will;
        `on_published` hears the kind of each message it published."""
        self.build_id = build_id
        self._upstream = upstream
        self._first_looks = first_looks or upstream
        self._on_gone = on_gone
        self._on_published = on_published
        self._bus = bus
        self._settings = settings
        self._limit = asyncio.Semaphore(settings.partition_concurrency)
        self.view: View | None = None
        self._epoch = new_epoch()
        self._seq = 0
        self._build: BuildStatusResponse | None = None
        self._etag: str | None = None
        # A large build's poll costs its new events, not all of them (both keep what they saw).
        self._reader = BuildReader()
        self._events = EventViews()
        self._events_seen = 0
        self._partitions: dict[str, View] = {}
        self._partition_etags: dict[str, str] = {}
        self._refresh_queue: deque[str] = deque()
        self._refresh_credit = 0.0
        self._last_poll = now()
        self._answered_at: int | None = None  # Unix ms of the upstream's last answer
        self.last_poll_ms: int | None = None  # Unix ms its last poll started
        self._outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def interval(self) -> float:
        """Seconds between its polls now: the build's pace, before any backoff."""
        return self._delay(0)

    @property
    def answered_ms(self) -> int | None:
        """When the upstream last answered it (Unix ms): how old its data is."""
        return self._answered_at

    async def wait_ready(self) -> None:
        """Return once a view exists; raise the error of the latest attempt if it failed."""
        if self.view is None:
            await asyncio.shield(self._outcome)

    async def run(self) -> None:
        """Poll until cancelled (the lease moved, nobody watches) or the build is gone upstream."""
        try:
            await self._loop()
        finally:
            if not self._outcome.done():  # nobody may wait forever on a poller that ended
                self._settle(UpstreamUnavailable(f"polling {self.build_id} stopped"))

    async def _loop(self) -> None:
        failures = 0
        resumed = False
        while not stopping():
            started = now()
            self.last_poll_ms = time.time_ns() // 1_000_000
            try:
                if not resumed:
                    await self._resume()
                    resumed = True
                await self._poll()
                failures = 0
                self._settle(None)
            except BuildGone as exc:
                await self._gone(exc)
                return
            except UpstreamUnavailable as exc:
                failures += 1
                log.warning("polling %s failed (%d in a row): %s", self.build_id, failures, exc)
                with contextlib.suppress(BusUnavailable):  # marked at the next failure then
                    await self._mark_stale()
                self._settle(exc)
            except BusUnavailable as exc:
                # The upstream was read, but nobody can hear it: keep the last published
                # view (the next publish diffs against it) and try again soon, not after
                # an upstream's backoff: viewers want the news once Redis is back.
                failures += 1
                log.warning("cannot publish %s (%d in a row): %s", self.build_id, failures, exc)
                self._settle(exc)
                await asyncio.sleep(min(self._delay(failures), BUS_RETRY))
                continue
            # Polls start every interval (the poll's own time is part of it), so a change
            # waits at most one interval for its poll, however long reading the build took.
            spent = now() - started if not failures else 0.0
            await asyncio.sleep(max(0.0, self._delay(failures) - spent))

    async def _resume(self) -> None:
        """Continue the stored sequence, if the bus has one: clients see no reset.

        The stored view also tells which partitions and events are known, so a
        takeover costs reads of what changed since, not of every partition.
        """
        latest = await self._bus.latest(self.build_id)
        if latest is not None:
            view = self._adopt(latest)
            self._partitions = dict(view["partitions"])
            self._events_seen = len(view["events"])

    def _adopt(self, stored: Message) -> View:
        view: View = codec.loads(stored.view_json)
        self._epoch, self._seq, self.view = stored.epoch, stored.seq, view
        return view

    def _settle(self, error: BuildcastError | None) -> None:
        """Resolve `wait_ready` with this attempt's outcome, while nobody has a view yet."""
        if self._outcome.done():
            if self.view is not None:
                return
            self._outcome = asyncio.get_running_loop().create_future()
        if error is None:
            self._outcome.set_result(None)
        else:
            self._outcome.set_exception(error)
            self._outcome.exception()  # marked retrieved: every waiter may have left already

    def _delay(self, failures: int) -> float:
        status = self.view["status"] if self.view else None
        interval: float = (
            self._settings.poll_idle
            if status in TERMINAL_BUILD_STATUSES
            else self._settings.poll_active
        )
        if not failures:
            return interval
        backoff = min(self._settings.max_backoff, interval * 2.0 ** min(failures, 16))
        return backoff * random.uniform(0.5, 1.0)  # jitter: pollers must not retry in step

    async def _poll(self) -> None:
        fetch = self._upstream.build if self._build is not None else self._first_looks.build
        fetched = await fetch(self.build_id, etag=self._etag, reader=self._reader)
        self._answered_at = time.time_ns() // 1_000_000
        if fetched.body is not None:
            self._build, self._etag = fetched.body, fetched.etag
        build = self._build
        if build is None:  # a 304 before any body: only if the upstream ignores our missing ETag
            raise UpstreamUnavailable(f"upstream sent 304 for {self.build_id} without a body")
        refs = self._refs_to_read(build)
        if self.view is None and len(refs) > self._settings.partition_concurrency:
            # A first look at a large build: show what its events tell now, rather than
            # after thousands of partition reads; the statuses read follow as a delta.
            await self._publish(self._view(build), self._answered_at)
            self._settle(None)
        first_look = not self._partitions
        if refs and self.view is not None:
            # What the body tells (new events, the statuses they imply) goes out now;
            # what the partitions' own reads add follows, only if it adds anything.
            await self._publish(self._view(build), self._answered_at)
        await self._refresh_partitions(refs)
        if first_look:  # every status was just read: the background refresh starts from now
            self._last_poll = now()
        await self._publish(self._view(build), self._answered_at)

    def _view(self, build: BuildStatusResponse) -> View:
        self._events.update(build.events)
        derived = self._events.partitions(build.requested_partitions)
        partitions = {
            ref: _newest(self._partitions.get(ref), derived.get(ref)) or UNKNOWN_PARTITION
            for ref in build.requested_partitions
        }
        return build_view(
            build, partitions, seq=self._seq + 1, stale=False, events=self._events.views
        )

    def _refs_to_read(self, build: BuildStatusResponse) -> list[str]:
        requested = build.requested_partitions
        if not self._partitions:
            self._events_seen = len(build.events)
            return list(requested)
        wanted = set(requested)
        new_events = build.events[self._events_seen :]
        self._events_seen = len(build.events)
        refs = dict.fromkeys(ref for ref in _mentioned(new_events) if ref in wanted)
        for ref in self._due_for_refresh(requested):
            refs.setdefault(ref)
        return list(refs)

    def _due_for_refresh(self, requested: list[str]) -> list[str]:
        """Refs whose background refresh is due: each unfinished one about once per period."""
        at = now()
        elapsed, self._last_poll = at - self._last_poll, at
        unfinished = [
            ref
            for ref in requested
            if self._partitions.get(ref, UNKNOWN_PARTITION)["status"]
            not in FINAL_PARTITION_STATUSES
        ]
        if not unfinished:
            self._refresh_credit = 0.0
            return []
        self._refresh_credit += len(unfinished) * elapsed / self._settings.partition_refresh
        due = min(int(self._refresh_credit), len(unfinished))
        self._refresh_credit -= due
        if len(self._refresh_queue) < due:
            self._refresh_queue.extend(unfinished)
        return [self._refresh_queue.popleft() for _ in range(due)]

    async def _refresh_partitions(self, refs: list[str]) -> None:
        await asyncio.gather(*(self._read_partition(ref) for ref in refs))

    async def _read_partition(self, ref: str) -> None:
        async with self._limit:
            try:
                fetched = await self._upstream.partition_status(
                    ref, etag=self._partition_etags.get(ref)
                )
            except UpstreamError as exc:
                # One partition's failure must not stall the build's view: its last
                # known status (or the one its events imply) stays.
                log.info("partition %s of %s not read: %s", ref, self.build_id, exc)
                return
        if fetched.body is not None:
            self._partitions[ref] = partition_view(fetched.body)
            if fetched.etag:
                self._partition_etags[ref] = fetched.etag

    async def _publish(self, view: View, read_ms: int | None) -> None:
        """Publish `view` as the build's next message: its seq is stamped here. `read_ms`:
        when the upstream answer it comes from was read (the fan-out times its delivery from
        there); None for what no answer brought (a stale mark, a new sequence)."""
        seq = self._seq + 1
        view["seq"] = seq
        changes = None if self.view is None else diff(self.view, view)
        if changes == {}:
            return
        message: Message
        if changes is None:
            message = messages.snapshot(self.build_id, self._epoch, seq, view, read_ms)
        else:
            message = messages.delta(self.build_id, self._epoch, seq, changes, read_ms)
        if await self._bus.publish(message, view):
            self.view, self._seq = view, seq
            if self._on_published is not None:
                self._on_published(message.kind)
        elif await self._realign():
            await self._publish(view, read_ms)

    async def _realign(self) -> bool:
        """After a refused publish, take the bus's position; True if `_publish` should retry.

        The bus holds another position when a second poller published too (a lease
        that lapsed while its owner was paused): continue after it, the lease settles
        who stays. A bus that forgot the build (Redis restarted empty, an evicted
        build) has no sequence to continue: start a new epoch with a snapshot.
        """
        stored = await self._bus.latest(self.build_id)
        if stored is not None:
            if stored.position == Position(self._epoch, self._seq):
                return False  # refused for no reason we can fix: the next poll tries again
            log.warning("%s was published elsewhere: continuing after it", self.build_id)
            self._adopt(stored)
        else:
            log.warning("the bus lost %s's history: starting a new sequence", self.build_id)
            self._epoch, self._seq, self.view = new_epoch(), 0, None
        return True

    async def republish(self) -> None:
        """Start a new sequence from the current view: the bus lost the build meanwhile."""
        if self.view is not None:
            log.warning("the bus lost %s's history: starting a new sequence", self.build_id)
            view, self._epoch, self._seq, self.view = self.view, new_epoch(), 0, None
            await self._publish(view, None)

    async def _mark_stale(self) -> None:
        """The last good view, said to be stale since the upstream's last answer."""
        if self.view is not None and not self.view["stale"]:
            stale = {**self.view, "stale": True, "checkedAtMs": self._answered_at}
            await self._publish(stale, None)

    async def _gone(self, exc: BuildGone) -> None:
        log.info("stopped polling %s: %s", self.build_id, exc, extra={THROTTLED: "gone"})
        at = Position(self._epoch, self._seq)
        self._settle(exc)
        if self._on_gone is not None:
            await self._on_gone(exc)
        try:
            await self._bus.publish(messages.error(self.build_id, at, exc.code, str(exc)), None)
        except BusUnavailable:
            log.info(
                "could not tell %s's viewers it is gone: they learn on reconnecting", self.build_id
            )


def _mentioned(events: Iterable[BuildEvent]) -> Iterable[str]:
    """Partition refs named by events: a partition event's ref, a job's targets."""
    for event in events:
        if event.partition_ref is not None:
            yield event.partition_ref
        if event.job is not None:
            yield from event.job.target_partitions


def _newest(read: View | None, implied: View | None) -> View | None:
    """The fresher of a partition's read status and the one its events imply (read wins ties)."""
    if read is None or implied is None:
        return read or implied
    return implied if (implied["updatedAtMs"] or 0) > (read["updatedAtMs"] or 0) else read
