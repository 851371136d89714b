"""aiohttp's runner, hardened where the application cannot reach: requests it cannot parse.

An over-long request line or header, a header with a control character, TLS
sent to the HTTP port: aiohttp answers these before any middleware runs, with
a body that quotes the request back. Here they get the protocol's JSON error,
which quotes nothing, and the same `Server` header as every other answer; the
log says it in one line (`gateway.logs.server_log`).

The hook is aiohttp's `RequestHandler.handle_error`, reached through its
`Server`: private API, pinned by the test that sends such requests
(tests/guard/test_hostile.py).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.protocol import codec
from gateway.protocol.rules import Code


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and raises if too late
        code = Code.INTERNAL if status >= 500 else Code.BAD_REQUEST
        text = "internal error" if status >= 500 else "malformed HTTP request"
        response = web.Response(
            status=status,
            body=codec.error_body(code, text),
            content_type="application/json",
            headers={
                "Server": "buildcast",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """`web.AppRunner` whose connections answer malformed requests with the protocol's JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same object, making the hardened handler
        return server
