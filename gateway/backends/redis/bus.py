"""The Redis bus: one poller's changes reach every replica whose viewers watch the build.

Per build, in one Cluster slot (see `gateway.backends.redis.connection`):

    bc:{TAG}:ID:state   hash: epoch, seq, summary, and `base`: the view's JSON at `base_seq`
    bc:{TAG}:ID:log     stream of the epoch's messages, entry id SEQ-0, trimmed to `history`
    bc:{TAG}:ID:msgs    pub/sub channel: every message as it is published, and an empty
                        one when the build's lease is let go (`RELEASED`)

Publishing is one script: the fencing check, the stored state, the stream entry
and the PUBLISH happen at once, so whoever hears a message can resume after it.

A delta does not store the whole view: a build of 10,000 events would write
megabytes per change of a few hundred bytes. The view at the latest seq is the
base plus the deltas logged since, which `latest` applies (once per seq: its
snapshot is kept while it is current). A snapshot stores its view as the new
base; a delta is refused with "base needed" once the deltas since the base
would outnumber `compact_every` (never beyond `history`: the log must still hold
them all) or outweigh the base itself, and `publish` then sends the view along
to compact them. So a change costs about its own size in writes, amortised,
and `latest` applies a bounded number of deltas.

Stored keys expire `retention` after the last publish or `retain` (the owner
calls it while it polls), so Redis holds only the builds polled recently.

One pub/sub connection per process carries the channels of the builds with
local subscribers. When it breaks (Redis restarted, unreachable), every local
subscriber gets a `paused` notice; the bus reconnects with backoff and jitter,
resubscribes, and delivers each build's `latest` snapshot: receivers skip what
they already have and resynchronise on the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio.client import PubSub

from gateway.aio import stop, stopping
from gateway.backends.base import Deliver, Released
from gateway.backends.redis.connection import (
    FAULTS,
    RELEASED,
    RedisConnection,
    build_key,
    reaching_redis,
)
from gateway.errors import BusUnavailable
from gateway.protocol import messages
from gateway.protocol.codec import dumps, loads
from gateway.protocol.diff import apply_encoded
from gateway.protocol.messages import Kind, Message, from_envelope
from gateway.protocol.resume import Position
from gateway.protocol.view import View, summarize

log = logging.getLogger(__name__)

_HELLO = "bc:hello"
"""A channel subscribed first on every connection: its confirmation means the rest are too."""

# KEYS: state, log. ARGV: kind, epoch, seq, payload, base (the view's JSON, or '' for a
# delta on the stored base), history, retention ms, channel, summary (what lists of
# builds show, read without the view), most deltas on one base, most bytes kept in the log.
# Answers 1 stored (or an error delivered), 0 refused by the fencing, -1 base needed.
# The log is trimmed from its oldest end to `history` messages and `log bytes`, but never
# past the base: `latest` needs every delta since.
_PUBLISH = """
if ARGV[1] ~= 'error' then
  local stored = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'base_seq', 'tail')
  local follows = stored[1] == ARGV[2] and tonumber(stored[2]) + 1 == tonumber(ARGV[3])
  local fresh = ARGV[1] == 'snapshot' and not stored[3]
  if not (follows or fresh) then return 0 end
  if ARGV[5] == '' then
    if not stored[3] or tonumber(ARGV[3]) - tonumber(stored[3]) > tonumber(ARGV[10]) then
      return -1
    end
    local tail = tonumber(stored[4]) + #ARGV[4]
    if tail > redis.call('HSTRLEN', KEYS[1], 'base') then return -1 end
    redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'seq', ARGV[3], 'tail', tail)
  else
    if fresh then
      redis.call('DEL', KEYS[2])
      redis.call('HSET', KEYS[1], 'log_bytes', 0)
    end
    redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'seq', ARGV[3], 'base', ARGV[5],
               'base_seq', ARGV[3], 'tail', 0)
  end
  redis.call('HSET', KEYS[1], 'summary', ARGV[9])
  redis.call('XADD', KEYS[2], ARGV[3] .. '-0', 'm', ARGV[4])
  local kept = redis.call('HINCRBY', KEYS[1], 'log_bytes', #ARGV[4])
  local base = tonumber(redis.call('HGET', KEYS[1], 'base_seq'))
  local count = redis.call('XLEN', KEYS[2])
  while count > 1 and (count > tonumber(ARGV[6]) or kept > tonumber(ARGV[11])) do
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if tonumber(string.match(oldest[1], '^[0-9]+')) > base then break end
    redis.call('XDEL', KEYS[2], oldest[1])
    kept = redis.call('HINCRBY', KEYS[1], 'log_bytes', -#oldest[2][2])
    count = count - 1
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('PUBLISH', ARGV[8], ARGV[4])
return 1
"""

# KEYS: state, log. Answers epoch, seq, base, base seq, then the logged messages after
# the base; nil when no base is stored.
_LATEST = """
local stored = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'base', 'base_seq')
if not stored[4] then return false end
local found = {stored[1], stored[2], stored[3], stored[4]}
if stored[4] ~= stored[2] then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], (stored[4] + 1) .. '-0', '+')) do
    found[#found + 1] = entry[2][2]
  end
end
return found
"""

# KEYS: state, log. ARGV: epoch, since seq, first wanted entry id. Nil: resume impossible.
_HISTORY = """
local stored = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if stored[1] ~= ARGV[1] or tonumber(ARGV[2]) > tonumber(stored[2]) then return false end
if tonumber(ARGV[2]) == tonumber(stored[2]) then return {} end
local entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+')
if #entries == 0 or entries[1][1] ~= ARGV[3] then return false end
local payloads = {}
for i, entry in ipairs(entries) do payloads[i] = entry[2][2] end
return payloads
"""

# KEYS: state, log. ARGV: retention ms.
_RETAIN = """
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return redis.call('HMGET', KEYS[1], 'epoch', 'seq')
"""


Stored = bytes | str | None  # what HMGET answers per field

_STORED, _BASE_NEEDED = 1, -1  # the publish script's answers, besides 0: refused


def _current(build_id: str, base: bytes, base_seq: int, seq: int, logged: list[bytes]) -> bytes:
    """The view's JSON at `seq`: `base` (at `base_seq`) with the logged deltas since applied."""
    if seq == base_seq:
        return base
    deltas = [from_envelope(build_id, payload) for payload in logged]
    if [delta.seq for delta in deltas] != list(range(base_seq + 1, seq + 1)):
        # The publish script keeps every delta since the base; only a foreign writer
        # (an older version, a hand edit) could break that.
        raise BusUnavailable(f"Redis lacks deltas of {build_id} since its stored base")
    return apply_encoded(base, seq, (loads(delta.data)["changes"] for delta in deltas))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _position(stored: Sequence[Stored]) -> Position | None:
    epoch, seq = stored[0], stored[1]
    if epoch is None or seq is None:
        return None
    return Position(_text(epoch), int(seq))


class RedisBus:
    def __init__(
        self,
        connection: RedisConnection,
        *,
        history: int = 1000,
        history_bytes: int = 16 << 20,
        retention: float = 86_400.0,
        max_backoff: float = 2.0,
        compact_every: int = 100,
    ) -> None:
        self._connection = connection
        self._redis = connection.commands
        self._history = history
        self._history_bytes = history_bytes
        self._deltas_per_base = min(compact_every, history)
        self._retention_ms = int(retention * 1000)
        self._max_backoff = max_backoff
        # The poller's writes go through the control pool: a crowd of viewers reading
        # cannot delay them (see `gateway.backends.redis.connection.RedisConnection`).
        self._publish = connection.control.register_script(_PUBLISH)
        self._retain = connection.control.register_script(_RETAIN)
        self._latest = self._redis.register_script(_LATEST)
        self._history_script = self._redis.register_script(_HISTORY)
        self._deliver: Deliver | None = None
        self._released: Released | None = None
        self._channels: dict[str, str] = {}  # channel -> build id, of subscribed builds
        self._at: dict[str, Position] = {}  # the last position delivered, per subscribed build
        self._snapshots: dict[str, Message] = {}  # the latest snapshot read, per subscribed build
        self._reading: dict[str, asyncio.Future[Message | None]] = {}  # latest(), in flight
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._listening = asyncio.Event()  # the pub/sub connection is up and subscribed
        self._cut_off = False
        self._reader: asyncio.Task[None] | None = None
        self._resyncing: set[asyncio.Task[None]] = set()

    async def start(self, deliver: Deliver, released: Released | None = None) -> None:
        """Open the pub/sub connection; wait briefly for it, so a healthy start misses nothing."""
        self._deliver = deliver
        self._released = released
        self._reader = asyncio.create_task(self._listen(), name="redis bus reader")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._listening.wait()

    async def close(self) -> None:
        self._deliver = None
        await stop([self._reader, *self._resyncing])

    async def subscribe(self, build_id: str) -> None:
        channel = build_key(build_id, "msgs")
        self._channels[channel] = build_id
        await self._change_subscription(channel, lambda pubsub: pubsub.subscribe(channel))

    async def unsubscribe(self, build_id: str) -> None:
        channel = build_key(build_id, "msgs")
        self._channels.pop(channel, None)
        self._at.pop(build_id, None)
        self._snapshots.pop(build_id, None)
        await self._change_subscription(channel, lambda pubsub: pubsub.unsubscribe(channel))

    async def _change_subscription(
        self, channel: str, change: Callable[[PubSub], Awaitable[object]]
    ) -> None:
        """Ask for the change and wait for Redis to confirm it, briefly; never raise.

        Waiting matters for a subscribe: a message published after the confirmation
        is sure to arrive, so a viewer who reads `latest` next misses nothing. If
        Redis is unreachable the reader resubscribes everything once it is back.
        """
        pubsub = self._pubsub
        if pubsub is None:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            await change(pubsub)
            async with asyncio.timeout(2.0):
                await confirmed
        except (TimeoutError, *FAULTS):
            pass
        finally:
            if self._confirmations.get(channel) is confirmed:
                del self._confirmations[channel]

    async def publish(self, message: Message, view: View | None) -> bool:
        if message.kind is Kind.ERROR:
            return await self._store(message, b"", b"") == _STORED
        if view is None:
            raise ValueError("a snapshot or delta is published with the view at its seq")
        summary = dumps(summarize(view))
        # A snapshot's view is already encoded in it; a delta's only when the script asks.
        base = message.view_json if message.kind is Kind.SNAPSHOT else b""
        answer = await self._store(message, base, summary)
        if answer == _BASE_NEEDED:
            answer = await self._store(message, dumps(view), summary)
        return answer == _STORED

    async def _store(self, message: Message, base: bytes, summary: bytes) -> int:
        keys = [build_key(message.build_id, "state"), build_key(message.build_id, "log")]
        args: list[bytes | str | int] = [
            str(message.kind),
            message.epoch,
            message.seq,
            message.envelope(),
            base,
            self._history,
            self._retention_ms,
            build_key(message.build_id, "msgs"),
            summary,
            self._deltas_per_base,
            self._history_bytes,
        ]
        with reaching_redis():
            return int(await self._publish(keys=keys, args=args))

    async def position(self, build_id: str) -> Position | None:
        with reaching_redis():
            stored = await self._redis.hmget(build_key(build_id, "state"), ["epoch", "seq"])
        return _position(stored)

    async def retain(self, build_id: str) -> Position | None:
        keys = [build_key(build_id, "state"), build_key(build_id, "log")]
        with reaching_redis():
            stored = await self._retain(keys=keys, args=[self._retention_ms])
        return _position(stored)

    async def latest(self, build_id: str) -> Message | None:
        """The view at the newest seq as a snapshot: the stored base, with the deltas since applied.

        That reads the whole view and copies it once (`diff.apply_encoded` decodes only
        what the deltas touch): the snapshot of a subscribed build is kept and reused
        while it is current, so it is made once per seq. Callers that come while a read
        of the build is in flight share it: ten thousand viewers arriving at once cost
        Redis a handful of reads, not ten thousand.
        """
        reading = self._reading.get(build_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_latest(build_id))
            self._reading[build_id] = reading
            reading.add_done_callback(lambda done: self._read(build_id, done))
        return await asyncio.shield(reading)  # a caller that leaves does not end it for all

    def _read(self, build_id: str, done: asyncio.Future[Message | None]) -> None:
        self._reading.pop(build_id, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have left

    async def _read_latest(self, build_id: str) -> Message | None:
        cached = self._snapshots.get(build_id)
        if cached is not None and await self.position(build_id) == cached.position:
            return cached
        keys = [build_key(build_id, "state"), build_key(build_id, "log")]
        with reaching_redis():
            found = await self._latest(keys=keys)
        if found is None:
            return None
        epoch, seq, base, base_seq, *logged = found
        view = _current(build_id, base, int(base_seq), int(seq), logged)
        snapshot = messages.stored_snapshot(build_id, _text(epoch), int(seq), view)
        if build_key(build_id, "msgs") in self._channels:
            self._snapshots[build_id] = snapshot
        return snapshot

    async def summaries(self, build_ids: list[str]) -> dict[str, View]:
        with reaching_redis():
            async with self._redis.pipeline(transaction=False) as pipe:
                for build_id in build_ids:
                    pipe.hget(build_key(build_id, "state"), "summary")
                found = await pipe.execute()
        return {b: loads(s) for b, s in zip(build_ids, found, strict=True) if s}

    async def history(self, build_id: str, since: Position) -> list[Message] | None:
        keys = [build_key(build_id, "state"), build_key(build_id, "log")]
        args: list[str | int] = [since.epoch, since.seq, f"{since.seq + 1}-0"]
        with reaching_redis():
            payloads = await self._history_script(keys=keys, args=args)
        if payloads is None:
            return None
        return [from_envelope(build_id, payload) for payload in payloads]

    async def ready(self) -> bool:
        if not self._listening.is_set():
            return False
        try:
            with reaching_redis():
                await self._redis.ping()
        except BusUnavailable:
            return False
        return True

    def up(self) -> bool:
        return self._listening.is_set() and not self._cut_off

    async def _listen(self) -> None:
        """The process's one pub/sub connection, re-opened for as long as the bus runs."""
        failures = 0
        while not stopping():
            pubsub = self._connection.pubsub_client().pubsub()
            self._pubsub = pubsub
            try:
                await pubsub.subscribe(*self._channels, _HELLO)
                while True:
                    item = await pubsub.get_message(timeout=1.0)
                    if item is not None:
                        failures = self._handle(item, failures)
            except FAULTS as exc:
                self._lost(exc, failures)
            finally:
                self._pubsub = None
                self._listening.clear()
                with contextlib.suppress(*FAULTS):
                    await pubsub.aclose()
            failures += 1
            backoff = min(self._max_backoff, 0.1 * 2.0 ** min(failures, 10))
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))

    def _handle(self, item: dict[str, object], failures: int) -> int:
        """One item of the pub/sub connection; returns the failure count, reset once subscribed."""
        channel = item["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if item["type"] == "message":
            build_id = self._channels.get(channel)
            data = item["data"]
            if build_id is None or not isinstance(data, bytes):
                pass
            elif data == RELEASED:
                if self._released is not None:
                    self._released(build_id)
            else:
                self._hand_on(from_envelope(build_id, data))
        elif item["type"] in ("subscribe", "unsubscribe"):
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            if channel == _HELLO:
                self._listening.set()
                if self._cut_off:
                    self._cut_off = False
                    log.warning(
                        "reconnected to Redis: resynchronising %d builds", len(self._channels)
                    )
                    task = asyncio.create_task(self._resync(), name="redis bus resync")
                    self._resyncing.add(task)
                    task.add_done_callback(self._resyncing.discard)
                return 0
        return failures

    def _hand_on(self, message: Message) -> None:
        if self._deliver is None:
            return
        if message.kind is not Kind.ERROR:
            self._at[message.build_id] = message.position
        self._deliver(message)

    def _lost(self, exc: BaseException, failures: int) -> None:
        """Tell every local subscriber that live updates pause, once per outage."""
        if not self._cut_off:
            self._cut_off = True
            log.warning("lost Redis pub/sub (%s): live updates paused, reconnecting", exc)
            for build_id in self._channels.values():
                at = self._at.get(build_id, Position("0", 0))
                if self._deliver is not None:
                    self._deliver(messages.paused(build_id, at))
        elif failures % 10 == 0:
            log.warning("Redis still unreachable after %d attempts: %s", failures, exc)

    async def _resync(self) -> None:
        """Hand on every subscribed build's latest snapshot, retrying while Redis is flaky."""
        waiting = list(self._channels.values())
        failures = 0
        while waiting and self._listening.is_set() and not stopping():
            try:
                latest = await self.latest(waiting[0])
            except BusUnavailable:
                failures += 1
                await asyncio.sleep(min(self._max_backoff, 0.05 * 2.0**failures))
                continue
            if latest is not None:
                self._hand_on(latest)
            waiting.pop(0)
