"""Follow builds from a Buildcast gateway, from Python: the client, and `tail` and `wait`.

    async with Client("http://127.0.0.1:8080") as client:
        async for update in client.follow("br-7f3a"):        # or ["br-7f3a", "br-6c01"]
            print(update.build_id, update.kind, update.status, update.changes)

    connection.py   Client and Follow: the SSE connection, reconnects and resumes
    updates.py      Update and Connectivity: what a caller reads
    errors.py       the client's error tree
    tail.py         `buildcast tail`: what changed, for people and for jq
    wait.py         `buildcast wait`: the end of a build as an exit status

It imports the protocol (`gateway.protocol`) and httpx, nothing of the server:
a service that follows builds loads neither aiohttp's server, pydantic nor redis.
"""

from gateway.client.connection import Client, Follow
from gateway.client.errors import (
    BuildNotFound,
    ClientError,
    GatewayError,
    InvalidBuildId,
    NotAGateway,
    Unavailable,
)
from gateway.client.updates import Connectivity, OnConnection, Update, UpdateKind, backoff

__all__ = [
    "BuildNotFound",
    "Client",
    "ClientError",
    "Connectivity",
    "Follow",
    "GatewayError",
    "InvalidBuildId",
    "NotAGateway",
    "OnConnection",
    "Unavailable",
    "Update",
    "UpdateKind",
    "backoff",
]
