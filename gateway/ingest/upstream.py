"""The Build Graph Service client: the only code that speaks HTTP to the upstream.

Every failure leaves this module as a `gateway.errors.UpstreamError` with a short
message and its cause chained; nothing above it sees an httpx or pydantic exception.
The endpoints, and what the gateway relies on of them, are in `docs/upstream.md`.
"""

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
    UpstreamInvalid,
    UpstreamNotFound,
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
        connect_timeout: float = 2.0,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
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
        what = f"partition {ref}"
        response = await self._send(f"/api/v1/partitions/{_segment(ref)}/events", what, None)
        return self._parse(response, PartitionEventsResponse.model_validate_json, what)

    async def _fetch(
        self, path: str, parse: Callable[[bytes], T], what: str, etag: str | None
    ) -> Fetched[T]:
        response = await self._send(path, what, etag)
        if etag is not None and response.status_code == httpx.codes.NOT_MODIFIED:
            return Fetched(None, response.headers.get("ETag", etag))
        return Fetched(self._parse(response, parse, what), response.headers.get("ETag"))

    async def _send(self, path: str, what: str, etag: str | None) -> httpx.Response:
        """GET `path`; transport failures become UpstreamUnavailable."""
        headers = {"If-None-Match": etag} if etag is not None else {}
        try:
            return await self._http.get(path, headers=headers)
        except httpx.ConnectTimeout as exc:
            raise UpstreamUnavailable(
                f"upstream did not accept a connection within {self._connect_timeout}s for {what}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamUnavailable(
                f"upstream timed out after {self._timeout}s for {what}"
            ) from exc
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable(f"cannot connect to upstream for {what}") from exc
        except httpx.RequestError as exc:  # reset, protocol error, undecodable body, ...
            raise UpstreamUnavailable(f"upstream connection failed for {what}") from exc

    @staticmethod
    def _parse(response: httpx.Response, parse: Callable[[bytes], T], what: str) -> T:
        """The body as `parse` reads it, or the error its status or content calls for."""
        status = response.status_code
        if status == httpx.codes.NOT_FOUND:
            raise UpstreamNotFound(f"no {what} upstream")
        if status == httpx.codes.BAD_REQUEST:
            raise UpstreamBadRequest(f"upstream rejected {what} as malformed")
        if not response.is_success:
            raise UpstreamUnavailable(
                f"upstream answered {status} {response.reason_phrase} for {what}"
            )
        try:
            # From the raw bytes: exact integers beyond 2**53 (no float on the way).
            return parse(response.content)
        except ValidationError as exc:
            raise UpstreamInvalid(
                f"upstream sent an invalid answer for {what}: {_describe(exc)}"
            ) from exc
