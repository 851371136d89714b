"""A slow or stalled client is cut off and never delays the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway import messages
from gateway.bus import MemoryBus
from gateway.fanout import Fanout, Subscriber
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.conftest import StartGateway
from tests.sse import events
from tests.test_sse import stream_url


def subscriber(build_id: str, limit: int, cut: list[str]) -> Subscriber:
    return Subscriber(build_id, limit, lambda: cut.append(build_id))


async def test_overflow_cuts_off_only_the_slow_subscriber() -> None:
    bus = MemoryBus()
    fanout = Fanout(bus)
    await bus.start(fanout.deliver)
    cut: list[str] = []
    slow, fast = subscriber("b", 3, cut), subscriber("b", 3, cut)
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
