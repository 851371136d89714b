"""Messages and their wire forms: made once, the same bytes for every subscriber."""

from __future__ import annotations

import struct

from gateway.protocol import codec, messages
from gateway.protocol.messages import Kind, from_envelope
from gateway.protocol.resume import Position, parse_token
from gateway.protocol.rules import Code
from tests.helpers.views import a_view

SAMPLES = [
    messages.snapshot("br-1", "e1", 4, a_view("br-1", 4)),
    messages.delta("br-1", "e1", 5, {"stale": True, "events": [{"message": "a\nb"}]}),
    messages.error("br-1", Position("e1", 5), Code.NOT_FOUND, "no build request br-1"),
    messages.paused("br-1", Position("e1", 5)),
]


def test_the_redis_envelope_round_trips_every_kind() -> None:
    for message in SAMPLES:
        again = from_envelope(message.build_id, message.envelope())
        assert again == message and again.frame == message.frame


def test_an_sse_frame_is_three_fields_whatever_the_text_holds() -> None:
    for message in SAMPLES:
        lines = message.frame.decode().split("\n")
        assert lines[3:] == ["", ""], "one event: no CR/LF of the text splits it"
        assert lines[0] == f"id: {message.token}" and parse_token("br-1", message.token)
        assert lines[1] == f"event: {message.kind}"
        assert codec.loads(lines[2].removeprefix("data: ")) == codec.loads(message.data)


def test_a_websocket_frame_carries_the_token_first() -> None:
    message = SAMPLES[1]
    text = codec.loads(message.ws_frame)
    assert next(iter(text)) == "id" and text["id"] == message.token
    assert message.ws_wire[:2] == struct.pack("!BB", 0x81, len(message.ws_frame))


def test_a_snapshot_holds_its_view_as_bytes() -> None:
    snapshot = SAMPLES[0]
    assert snapshot.kind is Kind.SNAPSHOT
    assert codec.loads(snapshot.view_json) == a_view("br-1", 4)
    assert not SAMPLES[3].ends_stream and SAMPLES[2].ends_stream
