"""The message that crosses the bus: one change of one build, at one position.

A build's messages form one sequence: `seq` grows by exactly one per snapshot or
delta. `epoch` names that sequence; when a history is lost (a fresh in-process
bus, Redis restarted empty) the next message starts a new epoch, so a client
can never mistake a restarted count for a continuation. Errors are not part of
the sequence: they carry the position they were raised at and are not kept.

The JSON a client receives and its SSE frame are encoded once, when the
message is made (`gateway.codec`), and the same bytes go to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway import codec
from gateway.models import View
from gateway.resume import Position

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
    frame: bytes = field(init=False, repr=False, compare=False)  # its SSE frame, built once

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", codec.sse_frame(self))

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)


def snapshot(build_id: str, epoch: str, seq: int, view: View) -> Message:
    return Message(Kind.SNAPSHOT, build_id, epoch, seq, codec.encode_snapshot(build_id, seq, view))


def delta(build_id: str, epoch: str, seq: int, changes: Changes) -> Message:
    data = codec.dumps({"type": "delta", "buildId": build_id, "seq": seq, "changes": changes})
    return Message(Kind.DELTA, build_id, epoch, seq, data)


def error(build_id: str, at: Position, code: str, text: str) -> Message:
    data = codec.dumps({"type": "error", "buildId": build_id, "code": code, "message": text})
    return Message(Kind.ERROR, build_id, at.epoch, at.seq, data)
