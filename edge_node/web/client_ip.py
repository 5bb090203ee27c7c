"""Which address a request comes from: the TCP peer, or X-Forwarded-For behind trusted proxies.

Without `abuse.trusted_proxies` the client is always the peer: a client cannot choose its
address by sending a header. When the peer is a trusted proxy, the client is the rightmost
X-Forwarded-For hop that is not itself a trusted proxy (each proxy appends the address it
received from), so a client can prepend whatever it likes and still be seen at its own
address. A hop that is not an IP address ends the walk: the last trusted hop's view is kept.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable

from aiohttp import web

from edge_node.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str], setting: str) -> tuple[Network, ...]:
    """CIDRs (or bare addresses) as networks; ConfigError naming `setting` for a bad one."""
    networks = []
    for i, cidr in enumerate(cidrs):
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{setting}[{i}] must be an IP address or CIDR network, got {cidr!r}"
            ) from None
    return tuple(networks)


def membership(networks: tuple[Network, ...]) -> Callable[[str], bool]:
    """A cached test of whether an address (text) lies in any of `networks`."""

    @functools.lru_cache(maxsize=8192)
    def contains(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in networks)

    return contains


class ClientAddresses:
    """Finds a request's client IP under the configured trusted-proxy rule."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        networks = parse_networks(trusted_proxies, "abuse.trusted_proxies")
        self._trusted = membership(networks) if networks else None

    def of(self, request: web.BaseRequest) -> str:
        peer = request.remote or ""
        if self._trusted is None or not self._trusted(peer):
            return peer
        hops = [
            hop.strip()
            for value in request.headers.getall("X-Forwarded-For", ())
            for hop in value.split(",")
        ]
        client = peer
        for hop in reversed(hops):
            try:
                address = ipaddress.ip_address(hop).compressed
            except ValueError:
                break
            client = address
            if not self._trusted(address):
                break
        return client
