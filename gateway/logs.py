"""What the gateway's logs may hold and how they look: never a line an attacker wrote,
never a flood of them; plain text for people, or one JSON object a line for collectors.

Build ids, refs, upstream messages and request lines are attacker-chosen text.
`Escape` rewrites every string a log record carries so that a CR or LF cannot
forge a line and a bidi control cannot hide one (`\\x0a`, `\\u202e`).
`Throttle` lets at most a few lines of one kind through per period and says
how many it held back. `server_log` is what aiohttp's server logs with: a
request it could not parse (an over-long line or header, not HTTP at all) is
one WARNING without a traceback; anything else keeps its traceback.

`TEXT` and `JSON` are the two formats of `--log-format`. A JSON line holds
`ts`, `level`, `logger` and `msg`, and the record's fields (the access log's
`client`, `route`, `status`...) as keys of their own.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from pythonjsonlogger.json import JsonFormatter

from gateway.guard.limits import Bucket

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def escape(text: str) -> str:
    """`text` with control and bidi characters written as escapes."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    point = ord(match[0])
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


class Escape(logging.Filter):
    """Escapes the message and string arguments of every record that passes through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(escape(a) if isinstance(a, str) else _safe(a) for a in record.args)
        return True


def _safe(value: Any) -> Any:
    """Other arguments (exceptions, ...) as escaped text: their str() may hold client text."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    return escape(str(value))


TEXT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


class JSON(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "message": "msg"},
            timestamp="ts",  # ISO 8601, in UTC
        )


THROTTLED = "throttled"
"""`extra={THROTTLED: "kind"}` puts a record under its kind's throttle."""


class Throttle(logging.Filter):
    """At most `burst` records of one kind at once, `rate` a second after."""

    def __init__(self, rate: float = 1.0, burst: int = 10) -> None:
        super().__init__()
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, Bucket] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = getattr(record, THROTTLED, None)
        if kind is None:
            return True
        bucket = self._buckets.get(kind) or self._buckets.setdefault(
            kind,
            Bucket(self._rate, self._burst, time.monotonic),  # logs come from any thread
        )
        if not bucket.take():
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        if held := self._held.pop(kind, 0):
            record.msg = f"{record.msg} (and {held} more like it not logged)"
        return True


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log: a request it could not parse is one WARNING line, whichever
    level aiohttp chose for it (it logs non-HTTP bytes at DEBUG, with a traceback)."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._rejected(args, kwargs):
            self.logger.exception(msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._rejected(args, kwargs):
            self.logger.debug(msg, *args, **kwargs)

    def _rejected(self, args: tuple[object, ...], kwargs: dict[str, Any]) -> bool:
        error = kwargs.get("exc_info")
        if not isinstance(error, HttpProcessingError):
            return False
        peer = args[0] if args else "a client"
        self.logger.warning(
            "rejected a malformed request from %s: %s (%d)",
            peer,
            type(error).__name__,
            error.code,
            extra={THROTTLED: "malformed request"},
        )
        return True


server_log = _ServerLog(logging.getLogger("aiohttp.server"), {})
