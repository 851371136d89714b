"""The client's errors, one tree:

ClientError
├── GatewayError         the gateway refused for good: a 4xx, or an `error` that ends a build
│   ├── BuildNotFound    `not_found`: no such build upstream
│   └── InvalidBuildId   `invalid_build_id`: an id the protocol does not allow
├── NotAGateway          the URL answers, but not with Buildcast's protocol
└── Unavailable          `view()` only: the gateway or its upstream cannot answer now
"""

from __future__ import annotations

from gateway.protocol.rules import Code


class ClientError(Exception):
    """Base of everything this module raises on purpose."""


class GatewayError(ClientError):
    """The gateway refused, and asking again would not change its answer."""

    def __init__(
        self, text: str, *, code: str, status: int | None = None, build_id: str | None = None
    ) -> None:
        super().__init__(text)
        self.code = code
        self.status = status  # None when the refusal came as an `error` message on the stream
        self.build_id = build_id


class BuildNotFound(GatewayError):
    """No such build upstream (404 before the stream, or `not_found` on it)."""


class InvalidBuildId(GatewayError):
    """A build id the protocol does not allow: empty, over 200 characters, `/`, whitespace."""


class NotAGateway(ClientError):
    """The server answered, but not as a Buildcast gateway does: a wrong URL, not an outage."""


class Unavailable(ClientError):
    """The gateway cannot answer now (unreachable, 5xx); `follow()` retries these itself."""


def said(code: str, text: str) -> str:
    """An error code and its message, in words for a person."""
    return f"{code.replace('_', ' ')} ({text})" if text else code.replace("_", " ")


def final(code: str, text: str, status: int | None, build_id: str | None) -> GatewayError:
    """The error for a refusal that asking again will not change."""
    kinds: dict[str, type[GatewayError]] = {
        Code.NOT_FOUND: BuildNotFound,
        Code.INVALID_BUILD_ID: InvalidBuildId,
    }
    return kinds.get(code, GatewayError)(text, code=code, status=status, build_id=build_id)
