"""Every tunable of the gateway, with its default, in one frozen object.

The CLI (`gateway.cli`) is the one place that reads options and environment
variables and builds a `Settings`; everything else receives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
API_DOCUMENT = WEB_ROOT.parent / "docs" / "openapi.yaml"


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str
    redis: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # The seed page's cadence: 2 s while a build runs, 10 s once it ended.
    poll_active: float = 2.0
    poll_idle: float = 10.0
    # How long a poller outlives its last viewer: a page reload must not restart it.
    grace: float = 30.0
    # Each not-yet-final partition is re-read at least this often even when no
    # event mentions it (delegated partitions change without this build's events).
    partition_refresh: float = 60.0
    # Upstream requests one poller may have in flight for partition statuses.
    partition_concurrency: int = 8
    upstream_timeout: float = 5.0
    # Longest wait after an upstream failure, doubling from the poll interval.
    max_backoff: float = 30.0
    # An unknown build id is remembered this long, so a storm of requests for it
    # costs the upstream one request, not one per request.
    not_found_ttl: float = 5.0
    # PROTOCOL.md: a heartbeat at least every 15 s.
    heartbeat: float = 15.0
    # The client's EventSource reconnect delay, sent once as `retry:`.
    retry_ms: int = 2000
    # Browser Origins besides the gateway's own that may open a WebSocket.
    allowed_origins: tuple[str, ...] = ()
    # Builds one multi-build stream may follow (a wall of 24 fits with room).
    stream_builds: int = 50
    # Messages queued for one client before it counts as too slow and is cut off.
    subscriber_buffer: int = 256
    # A write that cannot finish in this time means a stalled client.
    write_timeout: float = 10.0
    # Messages per build kept for resume; older resumes get a snapshot.
    history: int = 1000
    # Builds whose state the in-process bus keeps, the least recently changed forgotten first.
    retained_builds: int = 10_000
    # Redis only: a poller's lease on its build. Another replica with viewers takes
    # the build over within about this time after its owner died.
    lease_ttl: float = 5.0
    # Redis only: how long a build's stored state outlives its last poller.
    retention: float = 86_400.0
    # How long a viewer waits for the first view of a build before a 503.
    first_view_timeout: float = 15.0
    web_root: Path = WEB_ROOT
    api_document: Path = API_DOCUMENT
