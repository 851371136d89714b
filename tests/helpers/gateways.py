"""Gateways and the simulated upstream as tests drive them, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.simulator import Simulator

T = TypeVar("T")

StartGateway = Callable[..., Awaitable[TestServer]]
StartReplica = Callable[[], Awaitable[TestServer]]


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Figures and screenshots the tests write (not committed; the best go into docs/)."""


def raw_url(server: TestServer, path: str) -> URL:
    """A URL whose path goes on the wire exactly as written (percent-escapes kept)."""
    return URL(f"http://{server.host}:{server.port}{path}", encoded=True)


class Upstream:
    """The simulator's control API, as a test reads it over HTTP."""

    def __init__(self, session: aiohttp.ClientSession, server: TestServer) -> None:
        self._session = session
        self._server = server

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(
            method, self._server.make_url(path), json=body
        ) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_sim/stats")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/_sim/stats/reset")

    async def faults(self, **fault: Any) -> None:
        await self._call("POST", "/_sim/faults", fault)

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_sim/faults")


def stream_url(gateway: TestServer, build_id: str) -> str:
    return str(gateway.make_url(f"/api/v1/builds/{build_id}/stream"))


async def drive(sim: Simulator, build_id: str, every: float = 0.05) -> None:
    """Advance a simulated build to its end, one visible step at a time."""
    while True:
        await asyncio.sleep(every)
        sim.advance(build_id)
        if sim.build_json(build_id)["status"] in ("BuildRequestCompleted", "BuildRequestFailed"):
            return


async def gateway_view(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> Any:
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], object] = bool,
    *,
    what: str = "the condition",
    timeout: float = 10,
) -> T:
    """The first answer of `probe` that is `ok`, asked every 0.05 s for up to `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            while not ok(answer := await probe()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not {what} within {timeout} s") from None
    return answer


async def advanced(
    sim: Simulator, session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> None:
    """One step of the build, and the gateway has published it."""
    before = (await gateway_view(session, gateway, build_id))["seq"]
    sim.advance(build_id)

    async def published() -> bool:
        return bool((await gateway_view(session, gateway, build_id))["seq"] > before)

    await eventually(published, what=f"step of {build_id} published")
