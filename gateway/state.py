"""The wired objects of one gateway process, kept on the app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.backends import Backends, Bus
from gateway.delivery.fanout import Fanout
from gateway.delivery.heartbeat import Heartbeats
from gateway.delivery.streams import Streams
from gateway.guard.http import FrontDoor
from gateway.ingest.upstream import FirstLooks, UpstreamClient
from gateway.ingest.watch import Watches
from gateway.ops.metrics import Metrics
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    upstream: UpstreamClient
    first_looks: FirstLooks
    backends: Backends
    fanout: Fanout
    watches: Watches
    heartbeats: Heartbeats
    door: FrontDoor
    metrics: Metrics
    # Open SSE streams and WebSockets (those without subscriptions too), ended on shutdown.
    streams: Streams = field(default_factory=Streams)

    @property
    def bus(self) -> Bus:
        return self.backends.bus


STATE = web.AppKey("state", GatewayState)
