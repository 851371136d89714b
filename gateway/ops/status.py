"""The deployment at a glance: every replica, and for every watched build who polls it, how
often, and how old its data is (`/api/v1/status`, and the `/status` page that shows it).

Each replica reports itself through the registry (`report`); any replica reads
all the reports and answers for the whole deployment (`status`). A build's owner
is the replica whose report lists it among its polls: the holder of its lease.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any

from gateway.backends import Backends
from gateway.backends.base import Report
from gateway.guard.http import Access
from gateway.ingest.watch import Watches
from gateway.ops.metrics import Tally


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Reporter:
    """This replica's report, made afresh each time the registry asks."""

    def __init__(self, replica: str, watches: Watches, tally: Tally) -> None:
        self._replica = replica
        self._watches = watches
        self._tally = tally
        self._started_ms = now_ms()
        self._host = socket.gethostname()
        self._pid = os.getpid()

    def __call__(self) -> Report:
        pollers = self._watches.pollers()
        return {
            "replica": {
                "id": self._replica,
                "host": self._host,
                "pid": self._pid,
                "startedAtMs": self._started_ms,
                "connections": self._tally.sse + self._tally.ws,
                "pollers": len(pollers),
            },
            "viewers": self._watches.local_viewers(),
            "polls": {
                poller.build_id: {
                    "pollInterval": poller.interval,
                    "lastPollAtMs": poller.last_poll_ms,
                    "answeredAtMs": poller.answered_ms,
                    "stale": bool(poller.view and poller.view["stale"]),
                }
                for poller in pollers
            },
        }


async def status(backends: Backends, who: Access) -> dict[str, Any]:
    """`/api/v1/status`: the builds limited to those `who`'s token names."""
    reports = await backends.registry.reports()
    viewers: Counter[str] = Counter()
    owners: dict[str, tuple[str, dict[str, Any]]] = {}
    for report in reports:
        viewers.update(report["viewers"])
        for build_id, poll in report["polls"].items():
            owners[build_id] = (report["replica"]["id"], poll)
    shown = sorted(b for b in {*viewers, *owners} if who.allows(b))
    stale = {b: s["stale"] for b, s in (await backends.bus.summaries(shown)).items()}
    at = now_ms()
    builds = []
    for build_id in shown:
        owner, poll = owners.get(build_id, (None, {}))
        answered = poll.get("answeredAtMs")
        builds.append(
            {
                "buildId": build_id,
                "owner": owner,
                "pollInterval": poll.get("pollInterval"),
                "lastPollAtMs": poll.get("lastPollAtMs"),
                "dataAgeMs": None if answered is None else max(0, at - answered),
                "viewers": viewers.get(build_id, 0),
                "stale": poll.get("stale", stale.get(build_id, False)),
            }
        )
    return {
        "replicas": sorted((r["replica"] for r in reports), key=lambda r: r["id"]),
        "builds": builds,
        "redis": _redis(backends),
    }


def _redis(backends: Backends) -> dict[str, Any]:
    if backends.redis is None:
        return {"mode": "none", "up": True}
    return {
        "mode": "cluster" if backends.redis.cluster else "single",
        "up": backends.bus.up(),
    }
