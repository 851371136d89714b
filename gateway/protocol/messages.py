"""The message: one change of one build, at one position, with its wire forms made once.

A build's messages form one sequence: `seq` grows by exactly one per snapshot or
delta. `epoch` names that sequence; when a history is lost (a fresh in-process
bus, Redis restarted empty) the next message starts a new epoch, so a client
can never mistake a restarted count for a continuation. Errors are not part of
the sequence: they carry the position they were raised at and are not kept.
An error ends its build's stream, except the `paused` notice (`rules.PAUSED`).

The JSON a client receives and its SSE frame are encoded when the message is
made; its other wire forms (the SSE frame as an HTTP chunk, the WebSocket
text and frame, the Redis envelope) on first use. Every subscriber of the
build gets the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gateway.protocol import codec
from gateway.protocol.resume import Position, token
from gateway.protocol.rules import PAUSED, Code, ends_stream
from gateway.protocol.view import Changes, View


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
    # When the poll that made it read the upstream's answer (Unix ms), where known: what
    # the fan-out's latency is measured from. Not part of what clients receive.
    read_ms: int | None = field(default=None, compare=False)
    position: Position = field(init=False, repr=False, compare=False)
    frame: bytes = field(init=False, repr=False, compare=False)  # its SSE frame, built once
    _ws: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _chunk: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _ws_wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", Position(self.epoch, self.seq))
        object.__setattr__(self, "frame", self.sse_event(self.token))

    @property
    def token(self) -> str:
        """The resume token of its position in its own build."""
        return token(self.build_id, self.position)

    def sse_event(self, event_id: str) -> bytes:
        """Its SSE frame under another `id:` (a multi-build stream's cursor)."""
        return codec.sse_event(event_id, self.kind, self.data)

    def ws_text(self, event_id: str) -> bytes:
        """Its WebSocket text under another `id` (an error, at its client's position)."""
        return codec.ws_text(event_id, self.data)

    @property
    def ws_frame(self) -> bytes:
        """Its WebSocket text, built once on first demand (most deployments are SSE only)."""
        text = self._ws
        if text is None:
            text = codec.ws_text(self.token, self.data)
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
        return self.kind is Kind.ERROR and ends_stream(self.code)

    @property
    def view_json(self) -> bytes:
        """A snapshot's view, as the bytes it holds (not decoded)."""
        if self.kind is not Kind.SNAPSHOT:
            raise ValueError(f"a {self.kind} holds no view")
        return codec.unwrap_snapshot(self.data, self.build_id, self.seq)

    def envelope(self) -> bytes:
        """Its form on the Redis bus: the position, then the JSON clients receive.

        A snapshot or delta has no code: its slot carries `@READ_MS` instead, which an
        older replica reading the envelope takes for a code that nothing of it reads."""
        code = self.code
        if self.kind is not Kind.ERROR and self.read_ms is not None:
            code = f"@{self.read_ms}"
        return codec.envelope(self.kind, self.epoch, self.seq, code, self.data)


def from_envelope(build_id: str, payload: bytes) -> Message:
    kind, epoch, seq, code, data = codec.open_envelope(payload)
    read_ms = None
    if code is not None and code.startswith("@"):
        read_ms = int(code[1:])
        code = None
    return Message(Kind(kind), build_id, epoch, seq, data, code, read_ms)


def snapshot(
    build_id: str, epoch: str, seq: int, view: View, read_ms: int | None = None
) -> Message:
    return stored_snapshot(build_id, epoch, seq, codec.dumps(view), read_ms)


def stored_snapshot(
    build_id: str, epoch: str, seq: int, view_json: bytes, read_ms: int | None = None
) -> Message:
    """A snapshot of a view kept encoded (the Redis bus's latest): it is not decoded."""
    data = codec.wrap_snapshot(build_id, seq, view_json)
    return Message(Kind.SNAPSHOT, build_id, epoch, seq, data, None, read_ms)


def delta(
    build_id: str, epoch: str, seq: int, changes: Changes, read_ms: int | None = None
) -> Message:
    data = codec.dumps({"type": "delta", "buildId": build_id, "seq": seq, "changes": changes})
    return Message(Kind.DELTA, build_id, epoch, seq, data, None, read_ms)


def error(build_id: str, at: Position, code: Code, text: str) -> Message:
    data = codec.dumps({"type": "error", "buildId": build_id, "code": code, "message": text})
    return Message(Kind.ERROR, build_id, at.epoch, at.seq, data, code)


def paused(build_id: str, at: Position) -> Message:
    """The notice that this replica lost its bus: the view may be stale until a resync."""
    text = "live updates paused: the gateway lost its connection to Redis and is reconnecting"
    return error(build_id, at, PAUSED, text)
