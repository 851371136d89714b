"""Every encoding of the protocol: JSON, SSE frames, WebSocket frames, the Redis envelope.

The only importer of orjson and of msgspec's raw JSON slicing. Functions take
plain values (a kind, a token, the JSON bytes), not messages: `messages`
builds each wire form once per message from these, and the same bytes go to
every subscriber of that build.

SSE framing risk: a CR or LF inside a field would end it early and let text
inject fields of its own. `data` is compact JSON, which escapes every control
character; `id` is a resume token or cursor of `[0-9a-z.~]`; `event` is one of
three fixed names. So no untrusted text can reach a frame unescaped.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

HEARTBEAT = b": heartbeat\n\n"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def error_body(code: str, message: str) -> bytes:
    """An HTTP answer's error: `{"error": {"code": ..., "message": ...}}`."""
    return orjson.dumps({"error": {"code": code, "message": message}})


# --- snapshots: the view is kept as its own bytes inside the message


def _snapshot_prefix(build_id: str, seq: int) -> bytes:
    return b'{"type":"snapshot","buildId":%b,"seq":%d,"view":' % (orjson.dumps(build_id), seq)


def wrap_snapshot(build_id: str, seq: int, view_json: bytes) -> bytes:
    """A snapshot message around a view already encoded (a stored one): no re-encoding."""
    return _snapshot_prefix(build_id, seq) + view_json + b"}"


def unwrap_snapshot(data: bytes, build_id: str, seq: int) -> bytes:
    """The view's JSON inside a snapshot message, without decoding or re-encoding it."""
    return data[len(_snapshot_prefix(build_id, seq)) : -1]


# --- SSE and HTTP


def sse_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def sse_event(event_id: str, kind: str, data: bytes) -> bytes:
    """One SSE message: its `id:` (a token or cursor), its `event:` and its JSON."""
    return b"id: %b\nevent: %b\ndata: %b\n\n" % (event_id.encode(), kind.encode(), data)


def http_chunk(body: bytes) -> bytes:
    """`body` as one chunk of a chunked HTTP/1.1 response, as aiohttp itself would frame it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


# --- WebSocket


def ws_text(event_id: str, data: bytes) -> bytes:
    """A message's WebSocket text: its JSON with the resume token as a first `id` field."""
    return b'{"id":"%b",%b' % (event_id.encode(), data[1:])


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


# --- the Redis envelope: a message's position around the JSON clients receive


def envelope(kind: str, epoch: str, seq: int, code: str | None, data: bytes) -> bytes:
    """`KIND EPOCH SEQ CODE DATA`, so a reader learns the position without decoding the JSON."""
    return f"{kind} {epoch} {seq} {code or '-'} ".encode() + data


def open_envelope(payload: bytes) -> tuple[str, str, int, str | None, bytes]:
    """What `envelope` wrapped: kind, epoch, seq, code (or None) and the JSON."""
    kind, epoch, seq, code, data = payload.split(b" ", 4)
    return kind.decode(), epoch.decode(), int(seq), None if code == b"-" else code.decode(), data


# --- editing encoded JSON without decoding what does not change

Encoded = bytes | msgspec.Raw
"""A JSON value: encoded anew, or sliced from a larger document."""

_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def fields(obj: bytes | msgspec.Raw) -> dict[str, Encoded]:
    """A JSON object's members, each left encoded (a slice: nothing inside is decoded)."""
    return dict(_FIELDS.decode(obj))


def join_fields(members: Mapping[str, Encoded]) -> bytes:
    """The JSON object of encoded members: `fields`'s inverse, compact as `dumps`."""
    return b"{" + b",".join(dumps(key) + b":" + value for key, value in members.items()) + b"}"


def extend_array(array: Encoded, items: list[Any]) -> bytes:
    """The JSON array `array` with `items` appended, its existing elements copied as they are."""
    if not items:
        return bytes(array)
    kept = memoryview(array)[:-1]  # `[e1,e2`, or `[` when it was empty
    return b"".join([kept, b"," if len(kept) > 1 else b"", dumps(items)[1:]])
