"""Bytes no HTTP client library sends: raw requests, TLS on the HTTP port, headers that never end.

`exchange` writes bytes to a server and reads its whole answer (until the server closes
or goes quiet); `HeldOpen` keeps a connection whose request headers never finish, in
a thread of its own, and notes when the server closes it, so a test can wait out a
10 s header timeout while other checks run. `stalled_client` asks for a stream and
never reads it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """What came back on the socket: all of it, and its status line, headers and body."""

    raw: bytes
    status: int | None
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(raw, status, headers, body)


def exchange(host: str, port: int, data: bytes, timeout: float = 5.0) -> RawAnswer:
    """Send `data`, read until the server closes (or `timeout` s of silence)."""
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return parse(bytes(received))


def client_hello() -> bytes:
    """A TLS 1.3 ClientHello record, as a browser sends to an https:// URL on this port."""
    hello = b"\x03\x03" + os.urandom(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    hello += b"\x00\x00"  # no extensions
    handshake = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


class HeldOpen(threading.Thread):
    """A client that sends `head`, then one byte of `drip` every `every` s, and never ends
    its headers. `closed_after` is the seconds until the server closed the connection
    (None if it was still open after `limit` s); `received` what the server sent."""

    def __init__(
        self,
        host: str,
        port: int,
        head: bytes,
        *,
        drip: bytes = b"",
        every: float = 1.0,
        limit: float = 25.0,
    ) -> None:
        super().__init__(name="held-open client", daemon=True)
        self._address = (host, port)
        self._head = head
        self._drip = drip
        self._every = every
        self._limit = limit
        self.closed_after: float | None = None
        self.received = b""
        self.dripped = 0

    def run(self) -> None:
        with socket.create_connection(self._address, timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(self._head)
            while (elapsed := time.monotonic() - started) < self._limit:
                sock.settimeout(min(self._every, self._limit - elapsed))
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    if self.dripped < len(self._drip):
                        try:
                            sock.sendall(self._drip[self.dripped : self.dripped + 1])
                        except OSError:
                            self.closed_after = time.monotonic() - started
                            return
                        self.dripped += 1
                    continue
                except OSError:  # reset: closed too
                    chunk = b""
                if not chunk:
                    self.closed_after = time.monotonic() - started
                    return
                self.received += chunk


# --- WebSocket by hand: frames written all at once, or one by one while the server closes


def ws_open(host: str, port: int, path: str, headers: dict[str, str]) -> socket.socket:
    """A WebSocket handshake on a fresh connection; the socket, past the server's 101."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket"]
    lines += ["Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"no handshake answer: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    return sock


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 5.2): text unless `opcode` says otherwise."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def ws_read(sock: socket.socket, timeout: float = 5.0) -> tuple[list[tuple[int, bytes]], str]:
    """Every server frame until the connection ends: (opcode, payload) each, and how it
    ended: `eof` (closed in order) or `reset` (the kernel got a TCP RST)."""
    data = bytearray()
    sock.settimeout(timeout)
    ending = "eof"
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        ending = "reset"
    except TimeoutError:
        ending = "timeout"
    frames = []
    at = 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if at + size > len(data):
            break
        frames.append((opcode, bytes(data[at : at + size])))
        at += size
    return frames, ending


def stalled_client(port: int, path: str) -> socket.socket:
    """A client that asks for a stream and then never reads a byte."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return client
