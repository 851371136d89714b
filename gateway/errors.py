"""The one error tree of the gateway; each error names the protocol code it answers with.

    BuildcastError
    ├── InvalidBuildId          a build id that breaks the rule            invalid_build_id
    ├── BadRequest              any other request a client should not send  bad_request
    ├── TooMany                 more than a limit allows, maybe for now      too_many
    ├── Unauthorized            no token, or a bad or expired one           unauthorized
    ├── Forbidden               a build outside the token, a foreign Origin forbidden
    ├── Draining                a new stream on a replica shutting down     not_ready
    ├── BusUnavailable          Redis cannot be reached: transient          upstream_unavailable
    └── UpstreamError           anything the Build Graph Service did
        ├── BuildGone           the build can never be followed: its streams end
        │   ├── UpstreamNotFound    404: no such build or partition         not_found
        │   └── UpstreamBadRequest  400: the upstream refused the id        invalid_build_id
        └── UpstreamUnavailable 5xx, refused connection: transient          upstream_unavailable
            ├── UpstreamTimeout no answer in time (a read, or the whole request)
            └── UpstreamInvalid a body that is not the documented JSON: transient
                                too (the last good state stays), logged

Upstream errors are translated at the upstream boundary (`gateway.ingest.upstream`);
nothing above it sees an httpx or pydantic exception. The HTTP status of each
code is `gateway.protocol.rules.HTTP_STATUS`.
"""

from gateway.protocol.rules import Code


class BuildcastError(Exception):
    """Base of every error Buildcast raises on purpose."""

    code = Code.INTERNAL
    retry_after: float | None = None  # seconds, sent as Retry-After: the refusal is for now
    status: int | None = None  # an HTTP status other than the code's


class InvalidBuildId(BuildcastError):
    """A build id the protocol does not allow (`gateway.protocol.rules.is_build_id`)."""

    code = Code.INVALID_BUILD_ID


class BadRequest(BuildcastError):
    """A request that breaks the API's rules other than a build id's (no builds named...)."""

    code = Code.BAD_REQUEST


class TooMany(BuildcastError):
    """A request for more than a limit allows: for good (51 builds on one stream) or, with
    `retry_after` seconds, for now (a replica watching its most builds, a flood of ids)."""

    code = Code.TOO_MANY

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status  # 503 when the whole process is full, not this client


class Unauthorized(BuildcastError):
    """No access token where one is needed, or one that is forged, expired or malformed."""

    code = Code.UNAUTHORIZED


class Forbidden(BuildcastError):
    """A request this client may not make: a build its token does not name, a WebSocket
    from a foreign browser Origin."""

    code = Code.FORBIDDEN


class Draining(BuildcastError):
    """A stream asked of a replica that is shutting down: another replica serves it."""

    code = Code.NOT_READY
    retry_after = 1.0


class BusUnavailable(BuildcastError):
    """The bus (Redis) cannot be reached; callers keep what they have and retry later."""

    code = Code.UPSTREAM_UNAVAILABLE


class UpstreamError(BuildcastError):
    """The Build Graph Service could not give what was asked."""

    code = Code.UPSTREAM_UNAVAILABLE


class BuildGone(UpstreamError):
    """The upstream's word that a build can never be followed: its streams end with its code."""


class UpstreamNotFound(BuildGone):
    """The build or partition does not exist upstream (HTTP 404)."""

    code = Code.NOT_FOUND


class UpstreamBadRequest(BuildGone):
    """The upstream called the id malformed (HTTP 400)."""

    code = Code.INVALID_BUILD_ID


class UpstreamUnavailable(UpstreamError):
    """A transient failure: 5xx, timeout, refused or reset connection."""


class UpstreamTimeout(UpstreamUnavailable):
    """No answer in time: a connection, a read, or the whole request past its deadline."""


class UpstreamInvalid(UpstreamUnavailable):
    """The upstream answered 2xx with a body that does not fit its documented schema.

    A subclass of UpstreamUnavailable because the caller's remedy is the same:
    keep the last good state, mark it stale, try again later.
    """
