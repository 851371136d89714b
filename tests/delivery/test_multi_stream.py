"""Several builds on one SSE connection (a wall screen), resumable with one cursor."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.protocol.diff import apply
from gateway.protocol.resume import parse_cursor
from gateway.protocol.rules import HTTP_STATUS, Code
from gateway.simulator import Simulator
from tests.helpers.gateways import drive, raw_url
from tests.helpers.sse import Event, events

ENDED = ("BuildRequestCompleted", "BuildRequestFailed")


class Wall:
    """A client of one multi-build stream, keeping a view per build."""

    def __init__(self, session: aiohttp.ClientSession, gateway: TestServer, builds: list[str]):
        self.session = session
        self.url = str(gateway.make_url("/api/v1/stream"))
        self.params = [("build", b) for b in builds]
        self.views: dict[str, dict[str, Any]] = {}
        self.seqs: dict[str, list[int]] = {b: [] for b in builds}
        self.errors: list[dict[str, Any]] = []
        self.last_id: str | None = None

    def take(self, event: Event) -> None:
        self.last_id = event.id
        data = event.data
        build_id = data["buildId"]
        if event.event == "error":
            self.errors.append(data)
            return
        self.seqs[build_id].append(data["seq"])
        if event.event == "snapshot":
            self.views[build_id] = data["view"]
        else:
            view = self.views[build_id]
            assert data["seq"] == view["seq"] + 1, f"a gap in {build_id}"
            self.views[build_id] = apply(view, data["seq"], data["changes"])

    async def read(self, until: Any, timeout: float = 20) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        async with (
            asyncio.timeout(timeout),
            self.session.get(self.url, params=self.params, headers=headers) as response,
        ):
            assert response.status == 200, await response.text()
            async for event in events(response):
                self.take(event)
                if until(self):
                    return


def all_ended(wall: Wall) -> bool:
    return len(wall.views) == len(wall.seqs) and all(
        v["status"] in ENDED for v in wall.views.values()
    )


async def test_two_builds_on_one_connection_resume_from_one_cursor(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    builds = [sim.create_build(3), sim.create_build(4)]
    wall = Wall(session, gateway, builds)
    await wall.read(lambda w: len(w.views) == 2)
    assert wall.last_id is not None
    assert set(parse_cursor(builds, wall.last_id)) == set(builds), "the id resumes both"
    for build_id in builds:  # while the wall is away, both move
        sim.advance(build_id)
        sim.advance(build_id)
    await asyncio.sleep(0.5)
    driving = [asyncio.create_task(drive(sim, b)) for b in builds]
    await wall.read(all_ended)
    await asyncio.gather(*driving)
    for build_id in builds:
        seqs = wall.seqs[build_id]
        assert seqs == list(range(1, seqs[-1] + 1)), "every delta once, in order, no snapshot"
        async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
            assert wall.views[build_id] == await response.json()


async def test_a_resumed_build_with_nothing_new_stays_in_the_cursor(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    quiet, busy = sim.create_build(3), sim.create_build(3)
    wall = Wall(session, gateway, [quiet, busy])
    await wall.read(lambda w: len(w.views) == 2)
    before = parse_cursor([quiet, busy], wall.last_id)
    sim.advance(busy)  # while the wall is away, only one build moves
    await asyncio.sleep(0.5)
    await wall.read(lambda w: len(w.seqs[busy]) > 1)
    after = parse_cursor([quiet, busy], wall.last_id)
    assert after[quiet] == before[quiet], "the quiet build is named where it was"
    assert after[busy].seq > before[busy].seq
    assert wall.seqs[quiet] == wall.seqs[quiet][:1], "and it got no second snapshot"


async def test_an_unknown_build_gets_its_error_and_the_others_go_on(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    known = sim.create_build(2)
    wall = Wall(session, gateway, ["br-nowhere", known])
    await wall.read(lambda w: known in w.views and w.errors)
    assert wall.errors == [
        {
            "type": "error",
            "buildId": "br-nowhere",
            "code": "not_found",
            "message": wall.errors[0]["message"],
        }
    ]
    driving = asyncio.create_task(drive(sim, known))
    await wall.read(lambda w: w.views[known]["status"] in ENDED)
    await driving


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "bad_request"),
        ("?" + "&".join(f"build=b{i}" for i in range(51)), "too_many"),
        ("?build=a%20b", "invalid_build_id"),
    ],
    ids=["none", "too-many", "invalid"],
)
async def test_bad_build_lists_are_refused_before_any_stream(
    gateway: TestServer, session: aiohttp.ClientSession, query: str, code: str
) -> None:
    async with session.get(raw_url(gateway, "/api/v1/stream" + query)) as response:
        assert response.status == HTTP_STATUS[Code(code)]
        assert (await response.json())["error"]["code"] == code
