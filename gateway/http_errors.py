"""PROTOCOL.md's JSON error bodies, and the translation of Buildcast errors to them."""

from __future__ import annotations

import re

from aiohttp import web

from gateway import codec
from gateway.errors import (
    BadRequest,
    BuildcastError,
    BusUnavailable,
    Forbidden,
    InvalidBuildId,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamUnavailable,
)

# PROTOCOL.md: 1 to 200 characters, no `/`, no whitespace, no control characters.
_BUILD_ID = re.compile(r"[^/\s\x00-\x1f\x7f-\x9f]{1,200}")


def check_build_id(build_id: str) -> str:
    if not _BUILD_ID.fullmatch(build_id):
        raise InvalidBuildId(
            "a build id is 1 to 200 characters with no '/', whitespace or control characters"
        )
    return build_id


def check_build_ids(build_ids: list[str], limit: int) -> list[str]:
    """Several builds of one stream: each valid, each once, 1 to `limit` of them."""
    if not 1 <= len(build_ids) <= limit:
        raise BadRequest(f"name 1 to {limit} builds, as ?build=A&build=B")
    return list(dict.fromkeys(check_build_id(b) for b in build_ids))


def error_response(status: int, code: str, message: str) -> web.Response:
    body = codec.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json")


def from_error(exc: BuildcastError) -> web.Response:
    if isinstance(exc, InvalidBuildId | UpstreamBadRequest):
        return error_response(400, "invalid_build_id", str(exc))
    if isinstance(exc, BadRequest):
        return error_response(400, "bad_request", str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, "forbidden", str(exc))
    if isinstance(exc, UpstreamNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, UpstreamUnavailable):
        return error_response(503, "upstream_unavailable", str(exc))
    if isinstance(exc, BusUnavailable):
        return error_response(503, "upstream_unavailable", f"live updates unavailable: {exc}")
    return error_response(500, "internal", "internal error")


def from_http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (405, 413, ...) in the same JSON form, their headers kept."""
    response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    if allow := exc.headers.get("Allow"):
        response.headers["Allow"] = allow
    return response
