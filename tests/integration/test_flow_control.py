"""Back-pressure and shutdown: a slow client never makes the proxy buffer a mailbox, and a
stopping proxy says BYE to every session.

The first test runs the real process and reads its memory from /proc; the second runs the
service in-process on the asyncio reactor under pytest-twisted.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS

from caliproxy.config import parse_config
from caliproxy.demo.dovecot import free_port
from caliproxy.service import make_service

pytestmark = pytest.mark.integration


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_does_not_make_the_proxy_buffer_the_mailbox(dovecot, proxy_factory):
    big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 20_000  # ~20 MB each
    for _ in range(3):
        dovecot.bulk_load("alice", [big])
    proxy = proxy_factory(dovecot)
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.ports["imaps"]), timeout=30),
                               server_hostname="localhost")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.recv(4096)
    sock.sendall(b"a LOGIN alice alicepw\r\nb SELECT INBOX\r\n")
    time.sleep(0.5)
    sock.recv(65536)
    before = rss_kib(proxy.process.pid)
    sock.sendall(b"c UID FETCH 1:* BODY.PEEK[]\r\n")  # ~60 MB the client does not read yet
    time.sleep(3)
    stalled = rss_kib(proxy.process.pid)
    received, tail = 0, b""
    while b"\r\nc OK" not in tail:  # now read everything: the transfer completes
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed before the FETCH completed"
        received += len(chunk)
        tail = (tail + chunk)[-300:]
    sock.close()
    assert received > 60_000_000
    assert stalled - before < 16 * 1024, f"proxy grew by {stalled - before} KiB while the client stalled"


class _Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = defer.Deferred()
        self.waiting: tuple[bytes, defer.Deferred] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.waiting and self.waiting[0] in self.data:
            waiting, self.waiting = self.waiting, None
            waiting[1].callback(self.data)

    def wait_for(self, marker: bytes) -> defer.Deferred:
        if marker in self.data:
            return defer.succeed(self.data)
        d = defer.Deferred()
        self.waiting = (marker, d)
        return d

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(self.data)


@pytest_twisted.inlineCallbacks
def test_stopping_the_service_says_bye_to_every_session(dovecot, server_cert_files):
    port = free_port()
    config = parse_config(f"""
listeners:
  - {{name: imaps, port: {port}, tls: implicit}}
upstream:
  imap: {{host: 127.0.0.1, port: {dovecot.imaps_port}, tls: implicit,
          ca_file: {server_cert_files.ca_pem}, server_name: localhost}}
tls: {{certificate: {server_cert_files.cert_pem}, key: {server_cert_files.key_pem}}}
""")
    service = make_service(config, reactor)
    service.startService()
    try:
        trust = Certificate.loadPEM(server_cert_files.ca_pem.read_bytes())
        endpoint = wrapClientTLS(optionsForClientTLS("localhost", trust),
                                 TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        clients = []
        for _ in range(2):
            client = yield connectProtocol(endpoint, _Collect())
            yield client.wait_for(b"caliproxy ready.\r\n")
            client.transport.write(b"a LOGIN alice alicepw\r\n")
            yield client.wait_for(b"a OK")
            clients.append(client)
        assert len(service.connections.open) == 2
    finally:
        yield service.stopService()
    for client in clients:
        data = yield client.closed
        assert data.endswith(b"* BYE caliproxy is shutting down\r\n")
