"""A WebSocket client of the gateway, keeping a view per build as a service would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from gateway.protocol.diff import apply


class Socket:
    """A WebSocket client keeping a view per build, as a service would."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.views: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []

    async def send(self, **op: Any) -> None:
        await self.ws.send_str(orjson.dumps(op).decode())

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            frame = await self.ws.receive()
        assert frame.type is aiohttp.WSMsgType.TEXT, frame
        message: dict[str, Any] = orjson.loads(frame.data)
        self.received.append(message)
        build_id = message.get("buildId")
        if message["type"] == "snapshot":
            self.views[build_id] = message["view"]
        elif message["type"] == "delta":
            view = self.views[build_id]
            assert message["seq"] == view["seq"] + 1, f"a gap in {build_id}"
            self.views[build_id] = apply(view, message["seq"], message["changes"])
        return message

    async def until(self, done: Any, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not done(self):
                await self.next()


async def connect(session: aiohttp.ClientSession, gateway: TestServer, **kwargs: Any) -> Socket:
    ws = await session.ws_connect(gateway.make_url("/api/v1/ws"), **kwargs)
    return Socket(ws)
