"""What the backends promise: the Bus, the Lease, the Registry, and the smaller stores.

Each has an in-process implementation (`memory`, for one replica) and a Redis
one (`redis/`, for many); `gateway.backends.create` picks them. The contract
suites in `tests/backends/` run every guarantee below against the in-process
backend, fakeredis and a real redis-server.

## Bus: what a poller publishes to and what a replica's fan-out hears

Guarantees:

- Ordering: per build, messages are delivered in publish order, which is seq
  order. Different builds are independent.
- Delivery: while a process is subscribed to a build, each message published
  for it is handed to that process's `deliver` callback at most once. A
  message can be lost (a dropped connection to Redis); the receiver notices
  the seq gap and repairs it from `history`, or from `latest` when history no
  longer reaches back.
- Atomicity: when `publish` returns True, `latest` and `history` already
  include the message; a reader never sees a message it cannot resume after.
- Fencing: `publish` accepts a snapshot or delta only if it follows the stored
  latest one (seq + 1 in the same epoch), or is a snapshot that starts the
  build's sequence where none is stored (its first, or after the store lost
  it: a new epoch). Otherwise it stores nothing and answers False: another
  poller published first, and the caller continues from `latest`.
- Resume: `history(build, since)` gives every kept message after `since` in
  order, [] when `since` is the latest, or None when the epoch differs or the
  history no longer reaches back: the reader must then take `latest`.
- Errors are delivered but never stored: they belong to no position.
- Cost: a publish costs about the size of its message, not of the build's view
  (a build may hold 10,000 events): the view passed along is kept by reference
  or encoded only now and then, never once per message. `latest` may cost the
  whole view, once per seq; what it makes is reused while it is current.
- Faults: a bus that cannot reach its store raises BusUnavailable from any
  call but `start`, `close`, `subscribe` and `unsubscribe`, which never raise:
  the bus keeps what was asked and resubscribes by itself when it can. While
  it is cut off it delivers a `paused` notice for each subscribed build, and
  once back, the `latest` snapshot of each: receivers resynchronise from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.protocol.messages import Message
from gateway.protocol.resume import Position
from gateway.protocol.view import View

Deliver = Callable[[Message], None]
Released = Callable[[str], None]


class Bus(Protocol):
    async def start(self, deliver: Deliver, released: Released | None = None) -> None:
        """Begin handing messages of subscribed builds to `deliver` (not awaited, never raises),
        and telling `released` of each such build whose lease its holder let go (Redis only: a
        lone replica has nobody to hear it), so that a replica following it takes over now."""

    async def close(self) -> None: ...

    async def subscribe(self, build_id: str) -> None:
        """This process wants `build_id`'s messages from now on."""

    async def unsubscribe(self, build_id: str) -> None: ...

    async def publish(self, message: Message, view: View | None) -> bool:
        """Store and deliver `message`; `view` is the build's view at its seq (None for errors).

        The bus may keep `view` as it is: the caller never mutates it afterwards.
        """

    async def latest(self, build_id: str) -> Message | None:
        """A snapshot message at the build's newest position, or None if none is stored."""

    async def position(self, build_id: str) -> Position | None:
        """The build's newest stored position (cheap: no view), or None."""

    async def retain(self, build_id: str) -> Position | None:
        """Keep the build's stored state alive (its poller runs); its position, None if lost."""

    async def summaries(self, build_ids: list[str]) -> dict[str, View]:
        """`view.summarize` of each build's stored view, for those that have one."""

    async def history(self, build_id: str, since: Position) -> list[Message] | None:
        """Kept messages after `since`, oldest first; None if they no longer all exist."""

    async def ready(self) -> bool:
        """Whether the bus can take publishes now (readiness probe)."""

    def up(self) -> bool:
        """What this process last saw of the bus: True while nothing says it is cut off
        (cheap, for a metric: no round trip)."""


class Lease(Protocol):
    """Which replica polls a build: one holder at a time, for the whole deployment.

    - At most one holder: `acquire` succeeds for one replica while nobody else
      holds the build's lease (and again for the replica that holds it: a second
      watch of the build while the first is ending); the holder `renew`s it every
      third of its time to live, and a holder that stops renewing (it died) loses
      it within that time.
    - `renew` answers False once another replica took the lease; it takes back a
      lease that lapsed while nobody else took it (a Redis restart, a pause).
    - `release` lets it go at once, and says so on the bus (`Bus.start`'s `released`), so
      a replica following the build takes over now instead of at its next try.
    - Interest: a replica with viewers of a build shows interest while it has
      them, so the holder keeps polling for viewers it does not serve itself.
    """

    async def acquire(self, build_id: str) -> bool:
        """Take the build's lease if nobody else holds it."""

    async def renew(self, build_id: str) -> bool:
        """Extend a lease this replica holds (or take it back if it lapsed); False if lost."""

    async def release(self, build_id: str) -> None:
        """Let the lease go now, if this replica holds it, so another takes over at once."""

    async def show_interest(self, build_id: str) -> None:
        """This replica has viewers of the build (refreshed while it has)."""

    async def withdraw_interest(self, build_id: str) -> None: ...

    async def interest_elsewhere(self, build_id: str) -> bool:
        """Whether another replica has shown interest within the lease's time to live."""


Viewers = dict[str, int]
"""Build id -> viewers; a build kept for its grace period counts 0."""

Report = dict[str, Any]
"""What a replica tells the others of itself: `{"replica": {id, host, pid, startedAtMs,
connections, pollers}, "viewers": Viewers, "polls": {build id: {pollInterval,
lastPollAtMs, answeredAtMs, stale}}}` (`gateway.ops.status` makes and reads it)."""


def empty_report() -> Report:
    return {"replica": {}, "viewers": {}, "polls": {}}


class Registry(Protocol):
    """Who watches what across the deployment: behind `/api/v1/watched` and `/api/v1/status`.

    - Each replica reports itself (`local`, read on every report): its viewers per
      build and the builds it polls. `viewers` sums every live replica's viewers and
      `reports` lists every live replica's report, its own read fresh.
    - A replica that closes drops out at once; one that dies, within twice the
      report period.
    """

    async def start(self, local: Callable[[], Report]) -> None: ...

    async def close(self) -> None: ...

    async def viewers(self) -> Viewers:
        """Every build watched anywhere in the deployment, with its viewers summed."""

    async def reports(self) -> list[Report]:
        """Every live replica's report, this replica's first."""


class Missing(Protocol):
    """Ids the upstream called unknown (404) or malformed (400), remembered for a while.

    - `remember` keeps the verdict `ttl` seconds, for every replica that shares the
      backend: a storm of requests for an unknown id, spread over the replicas, costs
      the upstream one request per `ttl`.
    - `recall` answers the code and message remembered, or None once they expired.
    """

    async def remember(self, build_id: str, code: str, message: str, ttl: float) -> None: ...

    async def recall(self, build_id: str) -> tuple[str, str] | None: ...


@dataclass(frozen=True, slots=True)
class Cached:
    value: bytes
    fresh: bool  # within the time it was stored fresh for


class Cache(Protocol):
    """Answers of the upstream shared by every replica for a while, and who fetches the next.

    - `put` stores a value under a key for `keep` seconds, fresh for the first `fresh` of
      them, for every replica that shares the backend; it ends the key's claim.
    - `get` answers the value and whether it is still fresh, or None once it is gone.
    - `claim` is granted to one caller at a time, across the replicas, until `put`,
      `release` or `ttl` seconds: the one that asks the upstream while the others wait for
      what it stores (`ttl` bounds their wait when it dies mid-way).
    - Bounded: a flood of keys forgets the oldest (in process) or expires (Redis).
    """

    async def get(self, key: str) -> Cached | None: ...

    async def put(self, key: str, value: bytes, fresh: float, keep: float) -> None: ...

    async def claim(self, key: str, ttl: float) -> bool: ...

    async def release(self, key: str) -> None: ...


RECENT_BUILDS = 1000
"""Builds the deployment remembers at most: those watched last, within a day."""


class Recent(Protocol):
    """The builds the deployment watched lately, behind `/api/v1/recent`.

    - `record` notes that a build is watched now (by the wall clock); a build recorded again
      moves to the front with its new time.
    - `recent` lists the builds recorded within the last `max_age` seconds, newest first,
      with when they were last recorded (epoch milliseconds), at most `max_builds` of them:
      older and further ones are forgotten. Every replica of the backend sees every record.
    """

    async def record(self, build_id: str) -> None: ...

    async def recent(self) -> list[tuple[str, int]]: ...
