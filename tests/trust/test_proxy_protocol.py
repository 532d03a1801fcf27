"""PROXY protocol v1/v2 header parsing (proxy-protocol.txt §2.1, §2.2) and the wrapping protocol
that hands the rest of the stream, and the client's address, to the listener's protocol."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from caliproxy.net.proxy_protocol import (
    V2_SIGNATURE,
    HeaderParser,
    ProxyHeader,
    ProxyProtocolError,
    ProxyProtocolFactory,
    parse_networks,
)


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_inet(src: str, sport: int, dport: int = 993, tlvs: bytes = b"") -> bytes:
    a = ipaddress.ip_address(src)
    b = ipaddress.ip_address("192.0.2.1" if a.version == 4 else "2001:db8::1")
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs)


def parse(data: bytes) -> tuple[ProxyHeader, bytes]:
    result = HeaderParser().feed(data)
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("data", "source", "rest"),
    [
        (b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 993\r\n", ("203.0.113.7", 56324), b""),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 993\r\na LOGIN", ("2001:db8::7", 56324), b"a LOGIN"),
        (b"PROXY UNKNOWN\r\n* rest", None, b"* rest"),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None, b""),
        (v2_inet("203.0.113.7", 56324) + b"\x16\x03\x01", ("203.0.113.7", 56324), b"\x16\x03\x01"),
        (v2_inet("2001:db8::7", 1), ("2001:db8::7", 1), b""),
        (v2_inet("203.0.113.7", 2, tlvs=b"\x01\x00\x02h2\x04\x00\x00"), ("203.0.113.7", 2), b""),
        (v2(0, 0x11, b"\x00" * 12) + b"x", None, b"x"),  # LOCAL: a health check
        (v2(1, 0x00, b""), None, b""),  # UNSPEC
        (v2(1, 0x31, b"\x00" * 216), None, b""),  # a UNIX socket: no TCP address
    ],
)
def test_headers_parse(data: bytes, source: tuple[str, int] | None, rest: bytes) -> None:
    header, remaining = parse(data)
    assert header.source == source and remaining == rest
    assert header.version == (1 if data.startswith(b"PROXY") else 2)


@given(st.data())
def test_any_split_of_the_stream_gives_the_same_result(data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from([
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 993\r\nhello",
        v2_inet("2001:db8::7", 4242, tlvs=b"\x04\x00\x01z") + b"hello",
    ]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser, result = HeaderParser(), None
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    rest = b""
    for piece in pieces:
        if result is None:
            result = parser.feed(piece)
            if result is not None:
                rest = result[1]
        else:
            rest += piece
    assert result is not None and rest == b"hello"
    assert result[0].source in (("203.0.113.7", 56324), ("2001:db8::7", 4242))


@pytest.mark.parametrize(
    "data",
    [
        b"a LOGIN alice secret\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",
        b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",  # family and address disagree
        b"PROXY TCP6 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 993\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 0993 993\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 993\r\n",
        b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY " + b"9" * 120,  # no CRLF within 107 bytes
        b"\r\n\r\n\x00\r\nQUIT\r",  # a bad signature
        V2_SIGNATURE + bytes([0x11, 0x11]) + b"\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x22, 0x11]) + b"\x00\x0c" + b"\x00" * 12,  # unknown command
        v2(1, 0x11, b"\x00" * 11),  # INET block too short
        v2(1, 0x21, b"\x00" * 35),  # INET6 block too short
    ],
)
def test_bad_headers_are_refused_as_soon_as_possible(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        HeaderParser().feed(data)


def test_an_incomplete_header_waits() -> None:
    parser = HeaderParser()
    assert parser.feed(b"PRO") is None
    assert parser.feed(b"XY TCP4 203.0.113.7 ") is None
    assert parser.feed(V2_SIGNATURE[:0]) is None
    assert HeaderParser().feed(V2_SIGNATURE[:7]) is None
    assert HeaderParser().feed(v2_inet("203.0.113.7", 1)[:20]) is None


# -- the wrapping protocol, in process -------------------------------------------------------------


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.peer: object = None
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.transport.write(b"* OK hello\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def _connect(peer: str, allowed: str = "10.0.0.0/8") -> tuple[object, StringTransport, Recorder, Clock]:
    clock = Clock()
    inner = Recorder()
    factory = ProxyProtocolFactory(Factory.forProtocol(lambda: inner), reactor=clock,
                                   allowed_from=parse_networks([allowed]), listener="t", timeout=5)
    protocol = factory.buildProtocol(IPv4Address("TCP", peer, 1234))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 1234))
    protocol.makeConnection(transport)
    return protocol, transport, inner, clock


def test_wrapper_gives_the_inner_protocol_the_declared_peer_and_the_rest() -> None:
    protocol, transport, inner, _ = _connect("10.1.2.3")
    assert inner.peer is None and transport.value() == b""  # nothing before the header
    protocol.dataReceived(b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 993\r\na NOOP")  # type: ignore[attr-defined]
    assert inner.peer == IPv4Address("TCP", "198.51.100.4", 5555)
    assert inner.data == b"a NOOP" and transport.value() == b"* OK hello\r\n"
    assert protocol.proxy_peer == "10.1.2.3"  # type: ignore[attr-defined]
    protocol.dataReceived(b"\r\n")  # type: ignore[attr-defined]
    assert inner.data == b"a NOOP\r\n"


def test_wrapper_keeps_the_real_peer_for_local_headers() -> None:
    protocol, _, inner, _ = _connect("10.1.2.3")
    protocol.dataReceived(v2(0, 0, b""))  # type: ignore[attr-defined]
    assert inner.peer == IPv4Address("TCP", "10.1.2.3", 1234)


def test_wrapper_refuses_unlisted_peers_before_reading() -> None:
    protocol, transport, inner, _ = _connect("192.0.2.9")
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    protocol.dataReceived(b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 993\r\n")  # type: ignore[attr-defined]
    assert inner.peer is None and inner.data == b""


def test_wrapper_closes_on_a_bad_header_or_a_slow_one() -> None:
    protocol, transport, inner, _ = _connect("10.1.2.3")
    protocol.dataReceived(b"a LOGIN x y\r\n")  # type: ignore[attr-defined]
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    assert inner.peer is None
    protocol, transport, inner, clock = _connect("10.1.2.3")
    protocol.dataReceived(b"PROXY TCP4")  # type: ignore[attr-defined]
    clock.advance(5)
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    assert inner.peer is None


def test_ipv4_mapped_balancer_address_is_allowed_by_its_ipv4_network() -> None:
    from twisted.internet.address import IPv6Address

    clock = Clock()
    inner = Recorder()
    factory = ProxyProtocolFactory(Factory.forProtocol(lambda: inner), reactor=clock,
                                   allowed_from=parse_networks(["127.0.0.1/32"]))
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv6Address("TCP", "::ffff:127.0.0.1", 1))
    protocol.makeConnection(transport)
    protocol.dataReceived(b"PROXY TCP4 198.51.100.4 10.0.0.1 5555 993\r\n")
    assert inner.peer == IPv4Address("TCP", "198.51.100.4", 5555)
