"""HAProxy PROXY protocol, versions 1 and 2, on listeners behind a load balancer.

A load balancer that accepts the client's TCP connection opens its own to us and first sends a
PROXY header naming the client's real address. This module reads that header and hands everything
after it to the listener's own protocol (plain IMAP, or TLS for an implicit-TLS listener, since the
header always travels before the TLS handshake), whose transport then reports the client's address
from ``getPeer()``.

The header is believed only from the configured load-balancer addresses: a connection from anyone
else is closed before a byte is read, so nobody can claim an address by sending a header of their
own. A malformed header, or none within the time limit, closes the connection too.

IO shell: a small sans-IO parser (:class:`HeaderParser`) and a Twisted wrapping protocol.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from caliproxy.errors import ClientProtocolError

log = logging.getLogger("caliproxy.proxy_protocol")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# proxy-protocol.txt §2.1: "PROXY" SP ("TCP4" / "TCP6" / "UNKNOWN")
#   [SP src-addr SP dst-addr SP src-port SP dst-port] CRLF, 107 bytes at most with the CRLF.
V1_PREFIX = b"PROXY "
V1_MAX = 107
# §2.2: a 12-byte signature, then ver_cmd, fam, a 16-bit length (network order), the addresses
# and any TLVs.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
_V2_INET = 0x11  # AF_INET, STREAM: 4 + 4 + 2 + 2 bytes of addresses
_V2_INET6 = 0x21  # AF_INET6, STREAM: 16 + 16 + 2 + 2

HEADER_TIMEOUT = 10.0


class ProxyProtocolError(ClientProtocolError):
    """The PROXY header is malformed."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` is the client's (address, port), or None when the sender
    declared no address (v1 ``UNKNOWN``, v2 ``LOCAL`` or a non-TCP family): then the connection's
    own address stands, as the specification says."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")):
        raise ProxyProtocolError("bad port in PROXY header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("bad port in PROXY header")
    return port


def _parse_v1(line: bytes) -> ProxyHeader:
    fields = line.split(b" ")
    if fields[0] != b"PROXY" or len(fields) < 2:
        raise ProxyProtocolError("bad PROXY v1 header")
    family = fields[1]
    if family == b"UNKNOWN":
        return ProxyHeader(1, None, None)
    if family not in (b"TCP4", b"TCP6") or len(fields) != 6:
        raise ProxyProtocolError("bad PROXY v1 header")
    kind = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    try:
        source = kind(fields[2].decode("ascii"))
        destination = kind(fields[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError("bad address in PROXY v1 header") from None
    return ProxyHeader(1, (str(source), _port(fields[4])), (str(destination), _port(fields[5])))


def _parse_v2(header: bytes) -> ProxyHeader:
    ver_cmd, family = header[12], header[13]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = ver_cmd & 0x0F
    if command == 0x0:  # LOCAL: the balancer's own connection (health check)
        return ProxyHeader(2, None, None)
    if command != 0x1:
        raise ProxyProtocolError("unknown PROXY v2 command")
    body = header[V2_FIXED:]
    if family == _V2_INET:
        if len(body) < 12:
            raise ProxyProtocolError("PROXY v2 address block too short")
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyHeader(2, (str(ipaddress.IPv4Address(src)), sport),
                           (str(ipaddress.IPv4Address(dst)), dport))
    if family == _V2_INET6:
        if len(body) < 36:
            raise ProxyProtocolError("PROXY v2 address block too short")
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyHeader(2, (str(ipaddress.IPv6Address(src)), sport),
                           (str(ipaddress.IPv6Address(dst)), dport))
    # UNSPEC, UNIX sockets or datagrams: no TCP client address to take (§2.2: use the real one).
    return ProxyHeader(2, None, None)


class HeaderParser:
    """Accumulates bytes until one whole PROXY header (v1 or v2) has arrived.

    ``feed(data)`` returns None while more is needed, then ``(header, rest)`` where ``rest`` is
    what followed the header; it raises :class:`ProxyProtocolError` as soon as the bytes cannot
    be a header. The buffer is bounded by the header's own maximum size.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        buffer = self._buffer + data
        self._buffer = buffer
        if buffer[:1] == b"\r":
            if len(buffer) < V2_FIXED:
                if not V2_SIGNATURE.startswith(buffer[:12]):
                    raise ProxyProtocolError("not a PROXY header")
                return None
            if buffer[:12] != V2_SIGNATURE:
                raise ProxyProtocolError("not a PROXY header")
            total = V2_FIXED + struct.unpack("!H", buffer[14:16])[0]
            if len(buffer) < total:
                return None
            self._buffer = b""
            return _parse_v2(buffer[:total]), buffer[total:]
        if not (buffer.startswith(V1_PREFIX) or V1_PREFIX.startswith(buffer)):
            raise ProxyProtocolError("not a PROXY header")
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buffer) >= V1_MAX:
                raise ProxyProtocolError("PROXY v1 header too long")
            return None
        self._buffer = b""
        return _parse_v1(buffer[:end]), buffer[end + 2:]


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks (or single addresses) from configuration strings; ValueError if invalid."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _address_in(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


@implementer(IHandshakeListener)
class ProxyProtocolWrapper(ProtocolWrapper):
    """Reads the PROXY header, then connects the wrapped protocol with itself as the transport.

    ``getPeer()`` answers the client's address from the header; ``proxy_peer`` is the load
    balancer's. Everything else (writes, producers, ``startTLS``) goes to the real transport.
    """

    factory: ProxyProtocolFactory

    def __init__(self, factory: ProxyProtocolFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._parser: HeaderParser | None = HeaderParser()
        self._client: IPv4Address | IPv6Address | None = None
        self._timer: Any = None
        self._connected_inner = False
        self.proxy_peer: str = "?"
        self.proxy_header: ProxyHeader | None = None

    def makeConnection(self, transport: Any) -> None:
        # Unlike ProtocolWrapper, the wrapped protocol is connected only once the header is read.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.proxy_peer = str(getattr(peer, "host", "?"))
        if not _address_in(self.proxy_peer, self.factory.allowed_from):
            log.warning("PROXY protocol listener %s: connection from %s refused (not an allowed "
                        "load balancer)", self.factory.listener, self.proxy_peer)
            self._parser = None
            self.transport.abortConnection()
            return
        self.factory.registerProtocol(self)
        self._timer = self.factory.reactor.callLater(self.factory.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse("no PROXY header in time")

    def _refuse(self, why: str) -> None:
        log.warning("PROXY protocol listener %s: connection from %s closed: %s",
                    self.factory.listener, self.proxy_peer, why)
        self._parser = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._connected_inner:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            return  # refused; the connection is closing
        try:
            result = self._parser.feed(data)
        except ProxyProtocolError as exc:
            self._refuse(str(exc))
            return
        if result is None:
            return
        header, rest = result
        self._parser = None
        self._cancel_timer()
        self.proxy_header = header
        if header.source is not None:
            host, port = header.source
            self._client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        self._connected_inner = True
        self.wrappedProtocol.makeConnection(self)
        if rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(rest)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self in self.factory.protocols:
            self.factory.unregisterProtocol(self)
        if self._connected_inner and self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None

    def getPeer(self) -> Any:
        return self._client if self._client is not None else self.transport.getPeer()

    def handshakeCompleted(self) -> None:
        # STARTTLS puts the TLS layer outside this wrapper; pass its news inward.
        if self.wrappedProtocol is not None and IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()


class ProxyProtocolFactory(WrappingFactory):
    """Wraps a listener's factory so each connection starts with a PROXY header."""

    protocol = ProxyProtocolWrapper

    def __init__(self, wrapped: Any, *, allowed_from: Iterable[IPNetwork], reactor: Any,
                 listener: str = "?", timeout: float = HEADER_TIMEOUT) -> None:
        super().__init__(wrapped)
        self.allowed_from = tuple(allowed_from)
        self.reactor = reactor
        self.listener = listener
        self.timeout = timeout
