"""Every tunable of the gateway, with its default, in one frozen object.

The one source of options: a field declared with `option()` is a command-line
option (`--poll-active`) and an environment variable (`BUILDCAST_POLL_ACTIVE`)
whose default, help and parser the CLI reads from here. The other fields are
fixed for now, each with the reason for its value. The CLI (`gateway.cli`)
is the one place that reads options and the environment and builds a
`Settings`; everything else receives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway.protocol.rules import HEARTBEAT_SECONDS, STREAM_BUILDS

MIN_SECRET_BYTES = 32
"""HS256 keys shorter than the hash (RFC 7518 3.2) make tokens forgeable by brute force."""

# The pages and the API document: installed from a wheel, they sit inside the package
# (pyproject.toml maps web/ to gateway/web and docs/openapi.yaml to gateway/openapi/);
# in a checkout, and so in an editable install, which runs the checkout, only the source
# folders beside the package exist, and they are served as they are edited.
_PACKAGE = Path(__file__).resolve().parent
if (_PACKAGE / "web").is_dir():
    WEB_ROOT, API_DOCUMENT = _PACKAGE / "web", _PACKAGE / "openapi" / "openapi.yaml"
else:
    WEB_ROOT, API_DOCUMENT = _PACKAGE.parent / "web", _PACKAGE.parent / "docs" / "openapi.yaml"

T = TypeVar("T")

Parse = Callable[[str], Any]
"""Text of an option or variable -> its value; ValueError with a readable reason if bad."""


# --- parsers: one per kind of value, each saying what was wrong in words


def seconds(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not value > 0:
        raise ValueError(f"must be a positive number of seconds, not {text}")
    return value


_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|min|h|d|)\s*", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def window(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not value >= 0:
        raise ValueError(f"must be 0 or more seconds, not {text}")
    return value


def duration(text: str) -> float:
    """Seconds, written as 90, 90s, 30m, 8h or 7d."""
    match = _DURATION.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m or 8h")
    return float(match[1]) * _SECONDS[match[2].lower()]


def tcp_port(text: str) -> int:
    value = _number(text, int, "a TCP port (0 to 65535)")
    if not 0 <= value <= 65535:
        raise ValueError(f"{text} is not a TCP port (0 to 65535)")
    return value


def count(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise ValueError(f"must be 1 or more, not {text}")
    return value


def http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text.rstrip("/")


def redis_url(text: str) -> str:
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{text!r} is not a redis://, rediss:// or unix:// URL")
    return text


def origins(text: str) -> tuple[str, ...]:
    found = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in found:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"{origin!r} is not an Origin like https://host:port")
    return found


def secret(text: str) -> str:
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the secret must be at least {MIN_SECRET_BYTES} bytes (it is {len(text.encode())}):"
            " tokens signed with a short one can be forged by guessing it"
        )
    return text


def networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    found = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        try:
            found.append(ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an address or network like 10.0.0.0/8") from None
    return tuple(found)


_SIZE = re.compile(r"\s*([0-9]+)\s*(|k|kib|m|mib|g|gib)\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}
_UNITS |= {"g": 1 << 30, "gib": 1 << 30}


def size(text: str) -> int:
    """Bytes, written as 65536, 64KiB, 64MiB or 1GiB."""
    match = _SIZE.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise ValueError(f"{text!r} is not a size like 64MiB")
    return int(match[1]) * _UNITS[match[2].lower()]


def _number(text: str, kind: Callable[[str], T], what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None


def option(help: str, parse: Parse, default: Any = MISSING, *, flag: str | None = None) -> Any:
    """A field that is also a command-line option and an environment variable."""
    return field(default=default, metadata={"help": help, "parse": parse, "flag": flag})


def options() -> dict[str, Field[Any]]:
    """The option fields of `Settings`, by field name."""
    return {f.name: f for f in fields(Settings) if "help" in f.metadata}


def flag_of(setting: Field[Any]) -> str:
    """`poll_active` -> `--poll-active`, unless the field names its own flag."""
    return setting.metadata["flag"] or "--" + setting.name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str = option("base URL of the Build Graph Service", http_url)
    redis: str | None = option(
        "Redis (or one node of a Redis Cluster) shared by the replicas; none: one replica",
        redis_url,
        None,
    )
    host: str = option("address to listen on", str, "127.0.0.1")
    port: int = option("port to listen on (0: any free one)", tcp_port, 8080)
    # The seed page's cadence: 2 s while a build runs, 10 s once it ended.
    poll_active: float = option(
        "seconds from one poll of a running build to the next", seconds, 2.0
    )
    poll_idle: float = option("seconds between polls of an ended build", seconds, 10.0)
    # How long a poller outlives its last viewer: a page reload must not restart it.
    grace: float = option("seconds a poller outlives its last viewer", seconds, 30.0)
    # Delegated partitions change without this build's events, so each one not yet
    # final is re-read at least this often even when no event mentions it.
    partition_refresh: float = option(
        "seconds between background reads of an unfinished partition", seconds, 60.0
    )
    lease_ttl: float = option(
        "with --redis: seconds before another replica takes over a dead replica's builds",
        seconds,
        5.0,
    )
    allowed_origins: tuple[str, ...] = option(
        "comma-separated browser Origins, besides the gateway's own, that may open a WebSocket",
        origins,
        (),
        flag="--allow-origin",
    )
    auth_secret: str | None = option(
        "secret that signs access tokens (HS256, at least 32 bytes); none: no access control",
        secret,
        None,
    )
    max_builds: int = option("builds this replica watches at most; more get 429", count, 2000)
    max_connections: int = option(
        "open requests, streams and sockets per process; more get 503", count, 10_000
    )
    max_connections_per_client: int = option(
        "open requests, streams and sockets per client address; more get 429", count, 256
    )
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = option(
        "comma-separated addresses or networks of proxies whose X-Forwarded-For names the client",
        networks,
        (),
        flag="--trusted-proxy",
    )
    upstream_max_bytes: int = option(
        "largest upstream answer read (64MiB, 1GiB, ...); a larger one leaves the view stale",
        size,
        64 << 20,
    )
    drain_seconds: float = option(
        "on SIGTERM, seconds over which viewers are sent to other replicas (0: all at once)",
        window,
        10.0,
    )
    metrics_port: int | None = option(
        "serve /metrics (and the probes) on this port, and not on --port; none: on --port",
        tcp_port,
        None,
    )
    # Upstream requests one poller may have in flight for partition statuses.
    partition_concurrency: int = 8
    # Each read of an upstream answer, and the whole request: a server that answers a byte
    # a second passes the first, never the second.
    upstream_timeout: float = 5.0
    upstream_deadline: float = 10.0
    # First looks at builds nobody watches yet: at most this many upstream requests at
    # once per process, and this many new builds per second per client address, so a flood
    # of random ids never makes the pollers of watched builds late.
    first_looks: int = 16
    new_builds_per_second: float = 20.0
    # Seconds to send a request's headers; also how long an idle keep-alive connection stays.
    header_timeout: float = 10.0
    # A token's `exp` may be this late, for clocks that disagree a little.
    token_leeway: float = 5.0
    # WebSocket client frames: a sustained rate and a burst, and replies queued at most.
    ws_frames_per_second: float = 20.0
    ws_frame_burst: int = 50
    ws_queued_replies: int = 64
    # Memory in bytes, not only counts: one build's resume history, one job run's log.
    history_bytes: int = 16 << 20
    log_lines: int = 5000
    log_bytes: int = 1 << 20
    # Longest wait after an upstream failure, doubling from the poll interval.
    max_backoff: float = 30.0
    # An id the upstream called unknown or malformed is remembered this long (by every
    # replica, on Redis), so a storm of requests for it costs the upstream one request.
    not_found_ttl: float = 60.0
    heartbeat: float = HEARTBEAT_SECONDS
    # The client's EventSource reconnect delay, sent once as `retry:`.
    retry_ms: int = 2000
    stream_builds: int = STREAM_BUILDS
    # Messages queued for one client before it counts as too slow and is cut off.
    subscriber_buffer: int = 256
    # A write that cannot finish in this time means a stalled client.
    write_timeout: float = 10.0
    # Messages per build kept for resume; older resumes get a snapshot.
    history: int = 1000
    # Builds whose state the in-process bus keeps, the least recently changed forgotten first.
    retained_builds: int = 10_000
    # Redis only: how long a build's stored state outlives its last poller.
    retention: float = 86_400.0
    # How long a viewer waits for the first view of a build before a 503.
    first_view_timeout: float = 15.0
    web_root: Path = WEB_ROOT
    api_document: Path = API_DOCUMENT
