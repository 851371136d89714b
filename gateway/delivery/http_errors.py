"""Error answers before any stream starts: the protocol's JSON body with its HTTP status."""

from __future__ import annotations

import math

from aiohttp import web

from gateway.errors import BadRequest, BuildcastError, BusUnavailable, InvalidBuildId, TooMany
from gateway.protocol import codec
from gateway.protocol.rules import BUILD_ID_RULE, HTTP_STATUS, Code, is_build_id


def check_build_id(build_id: str) -> str:
    if not is_build_id(build_id):
        raise InvalidBuildId(BUILD_ID_RULE)
    return build_id


def check_build_ids(build_ids: list[str], limit: int) -> list[str]:
    """Several builds of one stream: each valid, each once, 1 to `limit` of them."""
    if not build_ids:
        raise BadRequest(f"name 1 to {limit} builds, as ?build=A&build=B")
    unique = list(dict.fromkeys(check_build_id(b) for b in build_ids))
    if len(unique) > limit:
        raise TooMany(f"a stream follows at most {limit} builds; {len(unique)} were named")
    return unique


def error_response(code: Code, message: str, status: int | None = None) -> web.Response:
    return web.Response(
        status=status or HTTP_STATUS[code],
        body=codec.error_body(code, message),
        content_type="application/json",
    )


def from_error(exc: BuildcastError) -> web.Response:
    if isinstance(exc, BusUnavailable):
        return error_response(exc.code, f"live updates unavailable: {exc}")
    if exc.code is Code.INTERNAL:
        return error_response(Code.INTERNAL, "internal error")
    if exc.retry_after is not None:
        response = error_response(exc.code, str(exc), exc.status)
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response
    return error_response(exc.code, str(exc))


def from_http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (405, 413, ...) in the same JSON form, their headers kept."""
    code = exc.reason.lower().replace(" ", "_")
    response = web.Response(
        status=exc.status, body=codec.error_body(code, exc.reason), content_type="application/json"
    )
    if allow := exc.headers.get("Allow"):
        response.headers["Allow"] = allow
    return response
