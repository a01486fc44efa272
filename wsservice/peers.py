"""PeerLimits: connections and connection rate per peer address and overall, from TCP accept.

A peer is an IPv4 address, an IPv6 /64 (one host is commonly given a whole /64, so single
IPv6 addresses would be free for an attacker to vary), or ``unix`` for every local socket
client. Behind a ``--trusted-proxy`` the peer is the client that proxy names in
``X-Forwarded-For``: the proxy itself is never limited as one peer.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime

UNIX = "unix"
# A sweep of idle rate buckets runs when this many peers have buckets: the map stays bounded
# by the peers seen in the last (burst / rate) seconds, not by every address ever seen.
_SWEEP_AT = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_key(host: str) -> str:
    """The key limits are counted under for an address: the IPv4 address, the IPv6 /64,
    or ``unix`` for anything that is not an IP address (unix sockets, pipes).

    ``host`` comes from Twisted's address or ``PeerLimits.client`` (which checks what it
    takes from a header), so a dotted IPv4 address is taken as it is, without a parse: this
    runs at every accept."""
    if ":" not in host:
        return host if host[:1].isdigit() else UNIX
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return UNIX
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


def peer_host(peer: str) -> str:
    """The address in an Autobahn peer string (``tcp4:1.2.3.4:5678``, ``tcp6:::1:5678``,
    ``unix:/path``): the host part, or ``unix``."""
    kind, _, rest = peer.partition(":")
    if kind in ("tcp4", "tcp6"):
        return rest.rsplit(":", 1)[0]
    return UNIX


def address_host(address: IAddress) -> str:
    """The IP address of a Twisted address as text, or ``unix`` for any other kind (the
    accept-time twin of ``peer_host``)."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return UNIX


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values (addresses or CIDR networks); ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


class PeerLimits:
    """Counts open connections per peer and overall and each peer's connection rate (a token
    bucket); refuses what goes past them. Process-wide: every listener shares one."""

    def __init__(self, clock: IReactorTime, max_connections: int = 10000,
                 per_peer: int = 1000, rate: float = 100.0, burst: int = 1000,
                 trusted: Iterable[Network] = ()) -> None:
        self._clock = clock
        self.max_connections = max_connections
        self.per_peer = per_peer
        self._rate = float(rate)
        self._burst = float(burst)
        self.trusted = tuple(trusted)
        self.total = 0
        self._open: dict[str, int] = {}
        self._buckets: dict[str, list[float]] = {}  # peer -> [tokens, when last filled]
        self._sweep_at = _SWEEP_AT
        self.refused: dict[str, int] = {"connections": 0, "peer_connections": 0, "rate": 0}

    def isTrusted(self, host: str) -> bool:
        """Whether ``host`` is a trusted proxy (its clients are named in X-Forwarded-For)."""
        if not self.trusted or host == UNIX:
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def client(self, host: str, headers: Mapping[str, str]) -> str:
        """The client's address: ``host``, or behind a trusted proxy the nearest address in
        ``X-Forwarded-For`` that is not a trusted proxy (earlier entries are the client's
        own claims and can be forged)."""
        if not self.isTrusted(host):
            return host
        forwarded = headers.get("x-forwarded-for", "")
        for entry in reversed(forwarded.split(",")):
            entry = entry.strip()
            if not entry or self.isTrusted(entry):
                continue
            try:
                return str(ipaddress.ip_address(entry.strip("[]")))
            except ValueError:
                return host  # not an address: the proxy's word is all there is
        return host

    def connected(self, host: str) -> bool:
        """A TCP connection from ``host`` was accepted: count it and return True, or False
        when it goes past a limit (then it is not counted and must be closed).

        A trusted proxy's connections count in the total only: its clients are counted
        by ``forwarded()`` once the service learns who they are (X-Forwarded-For)."""
        if self.total >= self.max_connections:
            self.refused["connections"] += 1
            return False
        if not self.isTrusted(host) and not self.forwarded(host):
            return False
        self.total += 1
        return True

    def disconnected(self, host: str) -> None:
        """A connection counted by ``connected(host)`` is gone."""
        self.total -= 1
        if not self.isTrusted(host):
            self.unforwarded(host)

    def forwarded(self, host: str) -> bool:
        """Count one more connection of the peer of ``host`` (and spend from its rate), or
        return False when that goes past ``per_peer`` or the rate."""
        key = peer_key(host)
        count = self._open.get(key, 0)
        if count >= self.per_peer:
            self.refused["peer_connections"] += 1
            return False
        if not self._spend(key):
            self.refused["rate"] += 1
            return False
        self._open[key] = count + 1
        return True

    def unforwarded(self, host: str) -> None:
        """A connection counted by ``forwarded(host)`` is gone."""
        key = peer_key(host)
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def connections(self, host: str) -> int:
        """Connections now counted for the peer of ``host``."""
        return self._open.get(peer_key(host), 0)

    def _spend(self, key: str) -> bool:
        now = self._clock.seconds()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[key] = [self._burst, now]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _sweep(self, now: float) -> None:
        # a bucket that has refilled is the same as no bucket: forget it
        full = self._burst
        rate = self._rate
        for key, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * rate >= full:
                del self._buckets[key]
        # many peers at once: sweep again only when their number has doubled (amortised O(1))
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._buckets))
