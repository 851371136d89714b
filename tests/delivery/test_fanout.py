"""A slow or stalled client is cut off and never delays the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.backends.memory import MemoryBus
from gateway.delivery.fanout import HIGH_WATER, Direct, Fanout, Subscriber
from gateway.delivery.follow import Follower
from gateway.delivery.heartbeat import Heartbeats
from gateway.protocol import messages
from gateway.protocol.messages import Message
from gateway.protocol.resume import Position
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartGateway, stream_url
from tests.helpers.sse import events


def subscriber(bus: MemoryBus, build_id: str, limit: int, cut: list[str]) -> Subscriber:
    return Subscriber(Follower(bus, build_id), limit, lambda: cut.append(build_id))


async def test_overflow_cuts_off_only_the_slow_subscriber() -> None:
    bus = MemoryBus()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    cut: list[str] = []
    slow, fast = subscriber(bus, "b", 3, cut), subscriber(bus, "b", 3, cut)
    await fanout.attach(slow)
    await fanout.attach(fast)
    sent = [messages.snapshot("b", "e", 1, {})] + [
        messages.delta("b", "e", s, {}) for s in range(2, 9)
    ]
    for message in sent:
        assert await bus.publish(message, {})
        [received] = fast.take()  # the fast one keeps up; the slow one never reads
        assert received.frame is message.frame, "the frame encoded once is the one sent"
    assert cut == ["b"]
    assert slow.overflowed and not slow.pending
    assert not fast.overflowed
    assert fanout.overflows == 1


class Socket(asyncio.WriteTransport):
    """The edge of the process: what a client's socket was handed, and how full its buffer is."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


class Frames(Direct):
    def wire(self, message: Message) -> bytes:
        return message.frame


async def caught_up(bus: MemoryBus, fanout: Fanout, socket: Socket) -> Subscriber:
    """A subscriber whose connection wrote its snapshot and sleeps: the fan-out writes for it."""
    assert await bus.publish(messages.snapshot("b", "e", 1, {}), {})
    sub = subscriber(bus, "b", 3, [])
    await fanout.attach(sub)
    await sub.follower.catch_up(None)
    sub.direct = Frames(socket)
    return sub


def deltas(seqs: range) -> list[Message]:
    return [messages.delta("b", "e", s, {"n": s}) for s in seqs]


async def test_an_idle_connection_gets_each_message_written_to_its_socket() -> None:
    bus, socket = MemoryBus(), Socket()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    sub = await caught_up(bus, fanout, socket)
    sent = deltas(range(2, 12))  # more than its queue could hold: nothing queues
    for message in sent:
        assert await bus.publish(message, {})
        await asyncio.sleep(0)  # the turn ends: what it brought is written
    assert socket.writes == [m.frame for m in sent]
    assert not sub.pending and not sub.wakeup.is_set(), "its connection slept through"
    assert sub.follower.at == sent[-1].position


async def test_a_socket_that_falls_behind_gets_the_rest_through_its_queue_in_order() -> None:
    bus, socket = MemoryBus(), Socket()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    sub = await caught_up(bus, fanout, socket)
    first, *later = deltas(range(2, 5))
    assert await bus.publish(first, {})
    await asyncio.sleep(0)
    socket.buffered = HIGH_WATER  # the client stopped reading for a while
    assert await bus.publish(later[0], {})
    socket.buffered = 0  # it reads again, but the queued message must go first
    assert await bus.publish(later[1], {})
    assert socket.written == first.frame
    assert sub.direct is None and sub.wakeup.is_set(), "its connection writes the rest"
    assert sub.take() == later


async def test_messages_of_one_turn_go_out_in_one_write() -> None:
    bus, socket = MemoryBus(), Socket()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    await caught_up(bus, fanout, socket)
    burst = deltas(range(2, 7))
    for message in burst:  # arrived together: delivered before the loop turns
        fanout.deliver(message)
    assert socket.writes == []
    await asyncio.sleep(0)
    assert socket.writes == [b"".join(m.frame for m in burst)]


async def test_gaps_and_errors_go_to_the_connection_for_repair() -> None:
    bus, socket = MemoryBus(), Socket()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    sub = await caught_up(bus, fanout, socket)
    gap = messages.delta("b", "e", 5, {})  # 2 to 4 never arrived
    fanout.deliver(gap)
    assert socket.written == b"" and sub.take() == [gap]
    sub.direct = Frames(socket)
    notice = messages.paused("b", Position("e", 1))
    fanout.deliver(notice)
    assert socket.written == b"" and sub.take() == [notice]


async def test_a_bug_with_one_subscriber_cuts_off_only_that_one() -> None:
    class Broken(Follower):
        def advance(self, message: Message) -> bool:
            raise RuntimeError("a bug")

    bus, healthy = MemoryBus(), Socket()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    good = await caught_up(bus, fanout, healthy)
    bad = Subscriber(Broken(bus, "b"), 3, lambda: None)
    await fanout.attach(bad)
    bad.direct = Frames(Socket())
    [message] = deltas(range(2, 3))
    assert await bus.publish(message, {})
    await asyncio.sleep(0)
    assert bad.overflowed and not good.overflowed
    assert healthy.written == message.frame


def test_heartbeats_go_to_every_stream_whose_socket_takes_them() -> None:
    beats, idle, full, gone = Heartbeats(15), Socket(), Socket(), Socket()
    full.buffered, gone.closing = HIGH_WATER, True
    for socket in (idle, full, gone):
        beats.add(socket, b": heartbeat\n\n")
    beats.beat()
    beats.discard(idle)
    beats.beat()
    assert (idle.written, full.written, gone.written) == (b": heartbeat\n\n", b"", b"")


@pytest.mark.timeout(60)
async def test_a_stalled_connection_is_dropped_while_a_reader_gets_everything(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway: TestServer = await start_gateway(
        subscriber_buffer=16, poll_active=600.0, write_timeout=2.0
    )
    state = gateway.app[STATE]
    build_id = sim.create_build(2)

    stalled_reader, stalled_writer = await asyncio.open_connection(gateway.host, gateway.port)
    stalled_writer.write(
        f"GET /api/v1/builds/{build_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    await stalled_reader.readuntil(b"\r\n\r\n")  # then never reads again

    received: list[int] = []
    progress = asyncio.Event()

    async def read_all(total: int) -> None:
        async with session.get(stream_url(gateway, build_id)) as response:
            async for event in events(response):
                received.append(event.data["seq"])
                progress.set()
                if len(received) == total:
                    return

    count = 300
    reader = asyncio.create_task(read_all(count + 1))
    await until(lambda: state.fanout.viewers(build_id) == 2)
    latest = await state.bus.latest(build_id)
    assert latest is not None
    padding = "x" * 64_000  # 300 such messages are far more than any socket buffer holds
    for n in range(1, count + 1):
        seq = latest.seq + n
        message = messages.delta(build_id, latest.epoch, seq, {"note": f"{n} {padding}"})
        assert await state.bus.publish(message, {})
        while received[-1] < seq - 4:  # the reader keeps up, whatever the stalled one does
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
    await asyncio.wait_for(reader, 10)
    assert received == list(range(latest.seq, latest.seq + count + 1))
    await until(lambda: state.fanout.viewers(build_id) == 1)
    assert state.fanout.overflows >= 1
    stalled_writer.close()


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)
