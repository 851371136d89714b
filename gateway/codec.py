"""Wire encodings of messages: the JSON clients receive and its SSE framing.

The only importer of orjson. Each message is encoded once, when it is made;
each of its wire forms (an SSE frame, that frame as an HTTP/1.1 chunk, a
WebSocket frame) is built once per message, and the same bytes go to every
subscriber of that build.

SSE framing risk: a CR or LF inside a field would end it early and let text
inject fields of its own. `data` is compact JSON, which escapes every control
character; `id` is a resume token of `[0-9a-z.]`; `event` is one of three
fixed names. So no untrusted text can reach the frame unescaped.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import orjson

from gateway.resume import token

if TYPE_CHECKING:
    from gateway.messages import Message

HEARTBEAT = b": heartbeat\n\n"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def _snapshot_prefix(build_id: str, seq: int) -> bytes:
    return b'{"type":"snapshot","buildId":%b,"seq":%d,"view":' % (orjson.dumps(build_id), seq)


def encode_snapshot(build_id: str, seq: int, view: dict[str, Any]) -> bytes:
    """`{"type":"snapshot",...,"view":VIEW}`, laid out so the view can be sliced back out."""
    return wrap_snapshot(build_id, seq, orjson.dumps(view))


def wrap_snapshot(build_id: str, seq: int, view_json: bytes) -> bytes:
    """A snapshot message around a view already encoded (a stored one): no re-encoding."""
    return _snapshot_prefix(build_id, seq) + view_json + b"}"


def snapshot_view(message: Message) -> bytes:
    """The view's JSON inside a snapshot message, without decoding or re-encoding it."""
    return message.data[len(_snapshot_prefix(message.build_id, message.seq)) : -1]


def sse_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def sse_frame(message: Message) -> bytes:
    """The message's frame in its own build's stream: its `id:` is its position's token."""
    return sse_event(token(message.build_id, message.position), message)


def sse_event(event_id: str, message: Message) -> bytes:
    """The message's frame with an `id:` of the stream's own (a cursor of `[0-9a-z.~]`)."""
    return b"id: %b\nevent: %b\ndata: %b\n\n" % (
        event_id.encode(),
        message.kind.encode(),
        message.data,
    )


def ws_message(event_id: str, message: Message) -> bytes:
    """The message's WebSocket text: its JSON with the resume token as a first `id` field."""
    return b'{"id":"%b",%b' % (event_id.encode(), message.data[1:])


def http_chunk(body: bytes) -> bytes:
    """`body` as one chunk of a chunked HTTP/1.1 response, as aiohttp itself would frame it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


_WS_TEXT = 0x81  # FIN, no RSV bits (frames are not compressed), opcode text


def ws_text_frame(text: bytes) -> bytes:
    """RFC 6455 server frame of `text`: unmasked, so one encoding serves every socket."""
    size = len(text)
    if size < 126:
        header = struct.pack("!BB", _WS_TEXT, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _WS_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _WS_TEXT, 127, size)
    return header + text
