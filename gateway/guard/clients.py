"""Who a client is: its address, told by a proxy only when that proxy is trusted.

Behind nginx every request comes from nginx's address; `X-Forwarded-For`
names the client. Anyone can send that header, so it counts only when the
peer is one of `--trusted-proxy`'s networks, and then its rightmost address
that is not a trusted proxy itself is the client: proxies append, so what a
client wrote is on the left, out of reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Networks = Sequence[IPv4Network | IPv6Network]


def client_address(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str:
    """The client's address, as text (`unknown` for a peer without one, a Unix socket)."""
    if not peer:
        return "unknown"
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _trusted(hop, trusted):
            return hop if _address(hop) is not None else peer
    return peer


def _trusted(text: str, trusted: Networks) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None
