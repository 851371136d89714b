"""A test-side SSE reader and a viewer that applies messages the way a client must."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import aiohttp
import orjson

from gateway.protocol.diff import apply


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """Parse an SSE body as the HTML spec says (comments skipped, `retry` noted, not yielded)."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                yield Event(
                    fields.get("id"), fields.get("event", "message"), orjson.loads(fields["data"])
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")


@dataclass
class Viewer:
    """Follows one build's stream, applying messages and recording what it saw."""

    session: aiohttp.ClientSession
    url: str
    view: dict[str, Any] | None = None
    last_id: str | None = None
    messages: list[Event] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)  # errors that did not end it
    positions: list[tuple[str, int]] = field(default_factory=list)  # (epoch, seq) of each id

    def take(self, event: Event) -> None:
        self.messages.append(event)
        self.last_id = event.id
        data = event.data
        if event.event != "error" and event.id:
            epoch, seq, _ = event.id.split(".")
            self.positions.append((epoch, int(seq)))
        if event.event == "error" and data["code"] == "upstream_unavailable":
            self.notices.append(data)
        if event.event == "snapshot":
            self.view = data["view"]
        elif event.event == "delta":
            assert self.view is not None, "a delta before any snapshot"
            if data["seq"] != self.view["seq"] + 1:
                self.gaps.append((self.view["seq"], data["seq"]))
            self.view = apply(self.view, data["seq"], data["changes"])

    async def follow(
        self, until: Callable[[dict[str, Any]], bool], timeout: float = 20, patient: bool = False
    ) -> None:
        """Read (reconnecting with Last-Event-ID when the server closes) until `until(view)`.

        `patient`: like a page that retries, take refusals (503 while Redis is down) and
        dropped connections as a reason to try again shortly, not as a failure.
        """
        async with asyncio.timeout(timeout):
            while True:
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                try:
                    async with self.session.get(self.url, headers=headers) as response:
                        if patient and response.status != 200:
                            await asyncio.sleep(0.2)
                            continue
                        assert response.status == 200, await response.text()
                        async for event in events(response):
                            self.take(event)
                            if self.view is not None and until(self.view):
                                return
                except (aiohttp.ClientError, ConnectionError):
                    if not patient:
                        raise
                    await asyncio.sleep(0.2)

    def epochs_never_go_back(self) -> bool:
        """Within an epoch, seqs never go back (a resync may repeat one); new epochs start anew."""
        return all(a[0] != b[0] or b[1] >= a[1] for a, b in pairwise(self.positions))


def ended(view: dict[str, Any]) -> bool:
    return view["status"] in (
        "BuildRequestCompleted",
        "BuildRequestFailed",
        "BuildRequestCancelled",
    )
