"""Which builds this replica watches, for how many viewers, and whether it polls them.

A build's first viewer here starts a watch: a keeper task that holds the build's
lease while it can and runs the poller while it holds it. Replicas that do not
hold the lease serve the view their owner publishes, show interest in the build
(so the owner keeps polling for them) and try the lease every third of its time
to live: when the owner dies, one of them takes over, and its poller continues
the stored sequence.

When the last viewer leaves, the watch stays for a grace period, so a page
reload or a reconnect does not cost a fresh start; the owner stops only once no
replica has shown interest either. An id the upstream called unknown or
malformed is remembered (by every replica, on Redis) for a minute: a storm of
requests for it, or for a build that vanished while watched, costs the upstream
one request. A replica watches at most `max_builds` builds, and a client address
asks for at most `new_builds_per_second` builds not watched yet: beyond, 429.

A replica that is shutting down hands its builds over (`hand_over`): it lets a
build's lease go as soon as another replica wants the build, takes none that
another wants, and keeps no build past its last viewer here. Its builds that
nobody else wants yet stay polled until their viewers have moved.

A lone replica on the in-process backends always holds every lease: the same
code runs one replica or many.

Each build watched here is noted in the recent builds (`Recent`, behind
`/api/v1/recent`) once it has a view, again every RECORD_EVERY seconds while
it is watched (a wall may watch a build for days), and when its watch ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.aio import now, stop, stopping
from gateway.backends.base import RECENT_BUILDS, Bus, Lease, Missing, Recent
from gateway.backends.memory import MemoryMissing, MemoryRecent
from gateway.errors import (
    BuildGone,
    BusUnavailable,
    TooMany,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from gateway.guard.limits import Buckets
from gateway.ingest.poller import Poller
from gateway.ingest.upstream import FirstLooks, UpstreamClient
from gateway.protocol.rules import Code
from gateway.protocol.view import View
from gateway.settings import Settings

log = logging.getLogger(__name__)

FIRST_LOOK = 0.1
"""Seconds between looks for the owner's first view, while viewers wait for it."""

RECORD_EVERY = 60.0
"""Seconds between notes of a build still watched in the recent builds: its last watched
time is never older than that."""


class _Ended(Exception):
    """The watch a viewer joined ended before it had a view (its grace ran out just then)."""


@dataclass(eq=False, slots=True)
class Watch:
    build_id: str
    viewers: int = 0
    idle_since: float | None = None  # when the last viewer left; None while watched
    poller: Poller | None = None  # while this replica holds the lease
    polling: asyncio.Task[None] | None = None
    stored: bool = False  # the bus holds a view, published by whoever polls
    keeper: asyncio.Task[None] | None = None
    recorded_at: float | None = None  # when last noted in the recent builds (loop time)
    _news: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake whoever waits on this watch: its keeper, viewers waiting for a first view."""
        self._news.set()
        self._news = asyncio.Event()

    async def news(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._news.wait()

    @property
    def view(self) -> View | None:
        return None if self.poller is None else self.poller.view


class Holding:
    """A viewer's hold on a build's watch: a small object, not a generator, as viewers are many."""

    __slots__ = ("_build_id", "_client", "_watch", "_watches")

    def __init__(self, watches: Watches, build_id: str, client: str | None) -> None:
        self._watches = watches
        self._build_id = build_id
        self._client = client
        self._watch: Watch | None = None

    async def __aenter__(self) -> Watch:
        self._watch = await self._watches._acquire(self._build_id, self._client)
        return self._watch

    async def __aexit__(self, *exc_info: object) -> None:
        if self._watch is not None:
            self._watches._release(self._watch)
            self._watch = None


class Watches:
    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        bus: Bus,
        lease: Lease,
        missing: Missing | None = None,
        first_looks: FirstLooks | None = None,
        on_published: Callable[[str], None] | None = None,
        recent: Recent | None = None,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._bus = bus
        self._lease = lease
        self._missing = missing or MemoryMissing()
        self._first_looks = first_looks
        self._on_published = on_published
        self._recent = recent or MemoryRecent(settings.retention, RECENT_BUILDS)
        self._tick = settings.lease_ttl / 3
        self._watches: dict[str, Watch] = {}
        self._closing = False
        self._handing_over = False
        self._new_builds = Buckets(settings.new_builds_per_second, settings.new_builds_per_second)

    def watching(self, build_id: str, client: str | None = None) -> Holding:
        """Hold a build watched for the duration; raises the upstream's error if it has no view.

        `client` (an address) is held to `new_builds_per_second` builds not watched yet."""
        return Holding(self, build_id, client)

    async def _acquire(self, build_id: str, client: str | None) -> Watch:
        if build_id not in self._watches:  # one watched here is not missing: no Redis read
            await self._not_missing(build_id)
        while True:
            watch = self._watches.get(build_id) or self._start(build_id, client)
            watch.viewers += 1
            watch.idle_since = None
            try:
                await self._first_view(watch)
            except _Ended:  # joined a watch in its last moments: start a fresh one
                continue
            except BaseException as exc:  # a client that leaves while waiting releases too
                self._release(watch)
                if isinstance(exc, BuildGone):
                    await self._remember(build_id, exc)
                raise
            return watch

    async def _not_missing(self, build_id: str) -> None:
        """Raise the upstream's remembered verdict on `build_id`, if it has one."""
        try:
            verdict = await self._missing.recall(build_id)
        except BusUnavailable:
            return  # nothing remembered can be read: the upstream answers, as it would
        if verdict is not None:
            code, message = verdict
            # A fresh exception each time: re-raising one would grow its traceback.
            raise (
                UpstreamBadRequest(message)
                if code == Code.INVALID_BUILD_ID
                else UpstreamNotFound(message)
            )

    async def _remember(self, build_id: str, exc: BuildGone) -> None:
        with contextlib.suppress(BusUnavailable):
            await self._missing.remember(build_id, exc.code, str(exc), self._settings.not_found_ttl)

    async def _first_view(self, watch: Watch) -> None:
        """Return once the build has a view here or on the bus; raise why it has none."""
        deadline = now() + self._settings.first_view_timeout
        while True:
            if watch.poller is not None:
                await watch.poller.wait_ready()
                return
            if watch.stored:
                return
            if self._watches.get(watch.build_id) is not watch:
                raise _Ended
            remaining = deadline - now()
            if remaining <= 0:
                raise UpstreamUnavailable(f"no view of {watch.build_id} yet")
            await watch.news(remaining)

    def _start(self, build_id: str, client: str | None) -> Watch:
        """A watch of a build not watched here yet: within the replica's and client's limits."""
        settings = self._settings
        if len(self._watches) >= settings.max_builds:
            raise TooMany(
                f"this replica watches its most builds ({settings.max_builds})", settings.grace
            )
        if client is not None and (wait := self._new_builds.take(client)):
            raise TooMany("too many new builds asked for from this address", wait)
        watch = Watch(build_id)
        self._watches[build_id] = watch
        watch.keeper = asyncio.create_task(self._keep(watch), name=f"watch {build_id}")
        return watch

    def _release(self, watch: Watch) -> None:
        watch.viewers -= 1
        if watch.viewers == 0:
            watch.idle_since = now()
            watch.notify()

    async def _keep(self, watch: Watch) -> None:
        """The watch's life: hold the lease, poll while holding it, end when nobody watches."""
        failing = False
        try:
            while not (self._closing or stopping() or self._poller_ended(watch)):
                try:
                    await self._hold_lease(watch)
                    if not await self._still_wanted(watch):
                        return
                    if watch.poller is None and not watch.stored:
                        watch.stored = await self._bus.position(watch.build_id) is not None
                        if watch.stored:
                            watch.notify()
                    if self._record_due(watch):
                        await self._record(watch)
                    failing = False
                except BusUnavailable as exc:
                    if not failing:
                        log.warning("watch of %s cannot reach the bus: %s", watch.build_id, exc)
                    failing = True
                await watch.news(self._next_look(watch))
        finally:
            if self._watches.get(watch.build_id) is watch:  # new viewers start a new watch
                del self._watches[watch.build_id]
            watch.notify()
            if watch.recorded_at is not None:  # its last watched time: now
                await self._record(watch)
            await self._stop_polling(watch, release=True)

    @staticmethod
    def _record_due(watch: Watch) -> bool:
        if watch.recorded_at is None:
            return watch.stored or watch.view is not None  # a build that exists
        return now() - watch.recorded_at >= RECORD_EVERY

    async def _record(self, watch: Watch) -> None:
        """Note the build in the recent builds; tried again soon if the backend is down."""
        try:
            async with asyncio.timeout(self._tick):
                await self._recent.record(watch.build_id)
        except (BusUnavailable, TimeoutError):
            return
        watch.recorded_at = now()

    async def _hold_lease(self, watch: Watch) -> None:
        build_id = watch.build_id
        if watch.polling is None:
            if await self._may_poll(build_id) and await self._lease.acquire(build_id):
                self._start_polling(watch)
        elif self._handing_over and await self._lease.interest_elsewhere(build_id):
            log.info("handing %s over to a replica that follows it", build_id)
            await self._stop_polling(watch, release=True)
        elif not await self._lease.renew(build_id):
            log.warning("lost the lease of %s: another replica polls it now", build_id)
            await self._stop_polling(watch, release=False)
        elif (poller := watch.poller) and poller.view and await self._bus.retain(build_id) is None:
            await poller.republish()

    async def _may_poll(self, build_id: str) -> bool:
        """Handing over, this replica polls only builds no other replica follows."""
        return not self._handing_over or not await self._lease.interest_elsewhere(build_id)

    async def _still_wanted(self, watch: Watch) -> bool:
        """Whether a viewer here, the grace period, or another replica's viewers want it."""
        grace = 0.0 if self._handing_over else self._settings.grace
        if watch.idle_since is None or now() - watch.idle_since < grace:
            await self._lease.show_interest(watch.build_id)
            return True
        await self._lease.withdraw_interest(watch.build_id)
        return watch.polling is not None and await self._lease.interest_elsewhere(watch.build_id)

    def _next_look(self, watch: Watch) -> float:
        if watch.poller is None and not watch.stored:
            return FIRST_LOOK
        if watch.idle_since is not None:
            left = self._settings.grace - (now() - watch.idle_since)
            if left > 0:
                return min(self._tick, left)
        return self._tick

    def _start_polling(self, watch: Watch) -> None:
        watch.poller = Poller(
            watch.build_id,
            self._upstream,
            self._bus,
            self._settings,
            first_looks=self._first_looks,
            on_gone=lambda exc: self._remember(watch.build_id, exc),
            on_published=self._on_published,
        )
        watch.polling = asyncio.create_task(watch.poller.run(), name=f"poll {watch.build_id}")
        watch.polling.add_done_callback(lambda task: self._polling_ended(watch, task))
        watch.notify()

    def _polling_ended(self, watch: Watch, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("poller of %s crashed", watch.build_id, exc_info=exc)
        watch.notify()

    @staticmethod
    def _poller_ended(watch: Watch) -> bool:
        """The poller stopped by itself: the build is gone upstream (or a bug)."""
        return watch.polling is not None and watch.polling.done()

    async def _stop_polling(self, watch: Watch, *, release: bool) -> None:
        task, watch.polling, watch.poller = watch.polling, None, None
        if task is None:
            return
        await stop([task])
        if release:
            try:
                async with asyncio.timeout(self._settings.lease_ttl):
                    await self._lease.release(watch.build_id)
            except (BusUnavailable, TimeoutError):
                log.info("could not release %s's lease: it expires by itself", watch.build_id)

    def polls(self, build_id: str) -> bool:
        """Whether this replica holds the build's lease and polls it now."""
        watch = self._watches.get(build_id)
        return watch is not None and watch.poller is not None

    def pollers(self) -> list[Poller]:
        """The pollers this replica runs: the builds whose lease it holds."""
        return [watch.poller for watch in self._watches.values() if watch.poller is not None]

    def local_viewers(self) -> dict[str, int]:
        """This replica's viewers per watched build (0 while in its grace period)."""
        return {build_id: watch.viewers for build_id, watch in self._watches.items()}

    def hand_over(self) -> None:
        """The replica is shutting down: from now on its builds go to the replicas that follow
        them (at once, for those already followed elsewhere)."""
        self._handing_over = True
        for watch in self._watches.values():
            watch.notify()

    def lease_released(self, build_id: str) -> None:
        """Another replica let the build's lease go: try to take it now."""
        watch = self._watches.get(build_id)
        if watch is not None and watch.polling is None:
            watch.notify()

    async def close(self) -> None:
        """Stop every poller and release its lease, so other replicas take over at once."""
        self._closing = True
        watches = list(self._watches.values())
        for watch in watches:
            watch.notify()
        await stop((watch.keeper for watch in watches), timeout=2 * self._settings.lease_ttl)
