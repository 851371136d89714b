"""The message that crosses the bus: one change of one build, at one position.

A build's messages form one sequence: `seq` grows by exactly one per snapshot or
delta. `epoch` names that sequence; when a history is lost (a fresh in-process
bus, Redis restarted empty) the next message starts a new epoch, so a client
can never mistake a restarted count for a continuation. Errors are not part of
the sequence: they carry the position they were raised at and are not kept.
Most errors end a stream (the build is gone upstream); `upstream_unavailable`
is a notice that live updates are paused, and the stream goes on.

The JSON a client receives and its SSE frame are encoded once, when the
message is made (`gateway.codec`), and the same bytes go to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway import codec
from gateway.errors import UpstreamBadRequest, UpstreamNotFound
from gateway.models import View
from gateway.resume import Position, token

Changes = dict[str, Any]


class Kind(StrEnum):
    SNAPSHOT = "snapshot"
    DELTA = "delta"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    build_id: str
    epoch: str
    seq: int
    data: bytes  # the JSON object clients receive
    code: str | None = None  # an error's code
    position: Position = field(init=False, repr=False, compare=False)
    frame: bytes = field(init=False, repr=False, compare=False)  # its SSE frame, built once
    _ws: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _chunk: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _ws_wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", Position(self.epoch, self.seq))
        object.__setattr__(self, "frame", codec.sse_frame(self))

    @property
    def ws_frame(self) -> bytes:
        """Its WebSocket text, built once on first demand (most deployments are SSE only)."""
        text = self._ws
        if text is None:
            text = codec.ws_message(token(self.build_id, self.position), self)
            object.__setattr__(self, "_ws", text)
        return text

    @property
    def sse_chunk(self) -> bytes:
        """Its SSE frame as an HTTP/1.1 chunk: what the fan-out writes to a stream's socket."""
        chunk = self._chunk
        if chunk is None:
            chunk = codec.http_chunk(self.frame)
            object.__setattr__(self, "_chunk", chunk)
        return chunk

    @property
    def ws_wire(self) -> bytes:
        """Its WebSocket frame with the header: what the fan-out writes to a socket."""
        wire = self._ws_wire
        if wire is None:
            wire = codec.ws_text_frame(self.ws_frame)
            object.__setattr__(self, "_ws_wire", wire)
        return wire

    @property
    def ends_stream(self) -> bool:
        return self.kind is Kind.ERROR and self.code != PAUSED


PAUSED = "upstream_unavailable"
"""The code of the notice that live updates are paused (the bus is unreachable)."""


def snapshot(build_id: str, epoch: str, seq: int, view: View) -> Message:
    return Message(Kind.SNAPSHOT, build_id, epoch, seq, codec.encode_snapshot(build_id, seq, view))


def stored_snapshot(build_id: str, epoch: str, seq: int, view_json: bytes) -> Message:
    """A snapshot of a view kept encoded (the Redis bus's latest): it is not decoded."""
    return Message(
        Kind.SNAPSHOT, build_id, epoch, seq, codec.wrap_snapshot(build_id, seq, view_json)
    )


def delta(build_id: str, epoch: str, seq: int, changes: Changes) -> Message:
    data = codec.dumps({"type": "delta", "buildId": build_id, "seq": seq, "changes": changes})
    return Message(Kind.DELTA, build_id, epoch, seq, data)


def error(build_id: str, at: Position, code: str, text: str) -> Message:
    data = codec.dumps({"type": "error", "buildId": build_id, "code": code, "message": text})
    return Message(Kind.ERROR, build_id, at.epoch, at.seq, data, code)


def gone_code(exc: UpstreamNotFound | UpstreamBadRequest) -> str:
    """The error code that ends a build's streams: unknown upstream, or an id it refused."""
    return "not_found" if isinstance(exc, UpstreamNotFound) else "invalid_build_id"


def paused(build_id: str, at: Position) -> Message:
    """The notice that this replica lost its bus: the view may be stale until a resync."""
    text = "live updates paused: the gateway lost its connection to Redis and is reconnecting"
    return error(build_id, at, PAUSED, text)
