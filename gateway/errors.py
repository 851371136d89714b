"""The one error tree of Buildcast.

    BuildcastError
    ├── InvalidBuildId          a client's build id breaks PROTOCOL.md's rules   -> 400
    ├── BadRequest              any other request a client should not have sent  -> 400
    ├── Forbidden               a browser Origin that may not open a WebSocket    -> 403
    ├── BusUnavailable          Redis cannot be reached: transient               -> 503
    └── UpstreamError           anything the Build Graph Service did
        ├── UpstreamNotFound    404: the build or partition does not exist      -> 404
        ├── UpstreamBadRequest  400: the upstream rejected the id as malformed  -> 400
        ├── UpstreamUnavailable 5xx, timeout, refused connection: transient     -> 503
        └── UpstreamInvalid     a body that is not the documented JSON: treated
                                as transient (the last good state stays), logged

Upstream errors are translated at the upstream boundary (`gateway.upstream`);
nothing above it sees an httpx or pydantic exception.
"""


class BuildcastError(Exception):
    """Base of every error Buildcast raises on purpose."""


class InvalidBuildId(BuildcastError):
    """A build id that PROTOCOL.md does not allow (empty, too long, `/`, spaces, controls)."""


class BadRequest(BuildcastError):
    """A request that breaks the API's rules other than a build id's (too many builds...)."""


class Forbidden(BuildcastError):
    """A request this client may not make (a WebSocket from a foreign browser Origin)."""


class BusUnavailable(BuildcastError):
    """The bus (Redis) cannot be reached; callers keep what they have and retry later."""


class UpstreamError(BuildcastError):
    """The Build Graph Service could not give what was asked."""


class UpstreamNotFound(UpstreamError):
    """The build or partition does not exist upstream (HTTP 404)."""


class UpstreamBadRequest(UpstreamError):
    """The upstream called the id malformed (HTTP 400)."""


class UpstreamUnavailable(UpstreamError):
    """A transient failure: 5xx, timeout, refused or reset connection."""


class UpstreamInvalid(UpstreamUnavailable):
    """The upstream answered 2xx with a body that does not fit its documented schema.

    A subclass of UpstreamUnavailable because the caller's remedy is the same:
    keep the last good state, mark it stale, try again later.
    """
