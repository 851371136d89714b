"""The wired objects of one gateway process, kept on the app under one typed key."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.bus.base import Bus
from gateway.fanout import Fanout
from gateway.heartbeat import Heartbeats
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from gateway.watch import Watches


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    upstream: UpstreamClient
    bus: Bus
    fanout: Fanout
    watches: Watches
    registry: Registry
    heartbeats: Heartbeats
    # Open WebSockets, closed with 1001 on shutdown (those without subscriptions too).
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


STATE = web.AppKey("state", GatewayState)
