"""The Build Graph Service client: the only code that speaks HTTP to the upstream.

Every failure leaves this module as a `gateway.errors.UpstreamError` with a short
message and its cause chained; nothing above it sees an httpx or pydantic exception.
The endpoints, and what the gateway relies on of them, are in `docs/upstream.md`.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from gateway import __version__
from gateway.aio import Closing
from gateway.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.ingest.payloads import (
    BuildReader,
    BuildStatusResponse,
    PartitionEventsResponse,
    PartitionStatusResponse,
)

T = TypeVar("T")


# Not `slots=True`: on Python 3.11 a frozen, slotted, generic dataclass cannot be
# built through its subscripted alias (`Fetched[BuildStatusResponse](...)` raises TypeError).
@dataclass(frozen=True)
class Fetched(Generic[T]):
    """A conditional GET's answer: `body` is None when the upstream said 304 Not Modified."""

    body: T | None
    etag: str | None


ENDPOINTS = ("build", "partition_status", "partition_events")
OUTCOMES = ("ok", "not_found", "bad_request", "error", "timeout", "invalid")

Observe = Callable[[str, str, float], None]
"""Told of every request: its endpoint, its outcome and how long it took (seconds)."""


def _endpoint(path: str) -> str:
    if path.startswith("/api/v1/builds/"):
        return "build"
    return "partition_status" if path.endswith("/status") else "partition_events"


def _outcome(exc: UpstreamError) -> str:
    for kind, outcome in (
        (UpstreamNotFound, "not_found"),
        (UpstreamBadRequest, "bad_request"),
        (UpstreamTimeout, "timeout"),
        (UpstreamInvalid, "invalid"),
    ):
        if isinstance(exc, kind):
            return outcome
    return "error"


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    etag: str | None
    body: bytes


def _segment(value: str) -> str:
    """`value` percent-encoded as ONE path segment.

    `quote` leaves dots alone, and httpx removes `.` and `..` segments (RFC 3986
    dot-segment removal): a build id `..` would request `/api/v1`. Their dots are
    encoded as `%2E`, which httpx sends as is.
    """
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in {".", ".."} else quoted


def _describe(exc: ValidationError) -> str:
    """What was wrong with a body, for a log line: never the input itself (it is untrusted)."""
    error = exc.errors(include_input=False)[0]
    if error["type"] == "json_invalid":
        return "not JSON"
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


class UpstreamClient(Closing):
    """One per process: a keep-alive pool shared by every poller."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        deadline: float = 10.0,
        max_bytes: int = 64 << 20,
        connect_timeout: float = 2.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
        observe: Observe | None = None,
    ) -> None:
        """`timeout` bounds each read, `deadline` the whole request: a server that sends a byte
        a second passes the first, never the second. `max_bytes` bounds an answer's body."""
        self._timeout = timeout
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._connect_timeout = connect_timeout
        self._observe = observe
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": f"buildcast/{__version__}", "Accept": "application/json"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def build(
        self, build_id: str, etag: str | None = None, reader: BuildReader | None = None
    ) -> Fetched[BuildStatusResponse]:
        """The build; a poller passes its `reader`: only the events it has not seen are parsed."""
        return await self._fetch(
            f"/api/v1/builds/{_segment(build_id)}",
            (reader or BuildReader()).read,
            f"build request {build_id}",
            etag,
        )

    async def partition_status(
        self, ref: str, etag: str | None = None
    ) -> Fetched[PartitionStatusResponse]:
        return await self._fetch(
            f"/api/v1/partitions/{_segment(ref)}/status",
            PartitionStatusResponse.model_validate_json,
            f"partition {ref}",
            etag,
        )

    async def partition_events(self, ref: str) -> PartitionEventsResponse:
        fetched = await self._fetch(
            f"/api/v1/partitions/{_segment(ref)}/events",
            PartitionEventsResponse.model_validate_json,
            f"partition {ref}",
            None,
        )
        if fetched.body is None:  # only a conditional request may get no body
            raise UpstreamUnavailable(f"upstream sent no body for partition {ref}'s events")
        return fetched.body

    async def _fetch(
        self, path: str, parse: Callable[[bytes], T], what: str, etag: str | None
    ) -> Fetched[T]:
        endpoint = _endpoint(path)
        started = time.perf_counter()
        outcome = "ok"
        try:
            answer = await self._send(path, what, etag)
            if etag is not None and answer.status == httpx.codes.NOT_MODIFIED:
                return Fetched(None, answer.etag or etag)
            return Fetched(self._parse(answer, parse, what), answer.etag)
        except UpstreamError as exc:
            outcome = _outcome(exc)
            raise
        finally:
            if self._observe is not None:
                self._observe(endpoint, outcome, time.perf_counter() - started)

    async def _send(self, path: str, what: str, etag: str | None) -> _Answer:
        """GET `path` within the deadline; transport failures become UpstreamUnavailable."""
        headers = {"If-None-Match": etag} if etag is not None else {}
        try:
            async with (
                asyncio.timeout(self._deadline),
                self._http.stream("GET", path, headers=headers) as response,
            ):
                body = await self._read(response, what) if response.is_success else b""
                return _Answer(
                    response.status_code, response.reason_phrase, response.headers.get("ETag"), body
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"upstream did not answer {what} within its {self._deadline}s deadline"
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise UpstreamTimeout(
                f"upstream did not accept a connection within {self._connect_timeout}s for {what}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream timed out after {self._timeout}s for {what}") from exc
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable(f"cannot connect to upstream for {what}") from exc
        except httpx.RequestError as exc:  # reset, protocol error, undecodable body, ...
            raise UpstreamUnavailable(f"upstream connection failed for {what}") from exc

    async def _read(self, response: httpx.Response, what: str) -> bytes:
        """The body, refused past `max_bytes`: a runaway answer must not exhaust memory."""
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self._max_bytes:
            raise UpstreamInvalid(f"upstream answer for {what} is over {self._max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise UpstreamInvalid(f"upstream answer for {what} is over {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(answer: _Answer, parse: Callable[[bytes], T], what: str) -> T:
        """The body as `parse` reads it, or the error its status or content calls for."""
        status = answer.status
        if status == httpx.codes.NOT_FOUND:
            raise UpstreamNotFound(f"no {what} upstream")
        if status == httpx.codes.BAD_REQUEST:
            raise UpstreamBadRequest(f"upstream rejected {what} as malformed")
        if not 200 <= status < 300:
            raise UpstreamUnavailable(f"upstream answered {status} {answer.reason} for {what}")
        try:
            # From the raw bytes: exact integers beyond 2**53 (no float on the way).
            return parse(answer.body)
        except ValidationError as exc:
            raise UpstreamInvalid(
                f"upstream sent an invalid answer for {what}: {_describe(exc)}"
            ) from exc
        except RecursionError as exc:  # a body nested deeper than any parser goes
            raise UpstreamInvalid(f"upstream sent an answer nested too deep for {what}") from exc


class FirstLooks(Closing):
    """First looks at builds nobody watched yet: on a pool of their own, a few at a time.

    A flood of random ids makes first looks, each one request that finds nothing.
    They queue here for a few slots and their own connections, so the pollers of
    watched builds keep the shared pool and their cadence.
    """

    def __init__(self, client: UpstreamClient, at_once: int) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(at_once)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def build(
        self, build_id: str, etag: str | None = None, reader: BuildReader | None = None
    ) -> Fetched[BuildStatusResponse]:
        async with self._slots:
            return await self._client.build(build_id, etag, reader)
