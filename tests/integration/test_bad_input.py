"""Hostile and broken clients: each gets a clear error or a clean close, and nobody else notices.

Every test keeps a well-behaved session open on the same proxy process while the bad client
misbehaves, and asserts that session still works afterwards.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import time

import pytest

pytestmark = pytest.mark.integration


def tls_socket(proxy) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.ports["imaps"]), timeout=10),
                               server_hostname="localhost")
    greeting = sock.recv(4096)
    assert greeting.startswith(b"* OK [CAPABILITY"), greeting
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


@pytest.fixture
def bystander(dovecot, proxy_factory):
    """A proxy plus one logged-in, selected session that must survive everything."""
    proxy = proxy_factory(dovecot, limits={"max_line_length": 4096, "max_literal_size": 1_000_000})
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    client = imaplib.IMAP4_SSL("localhost", proxy.ports["imaps"], ssl_context=context, timeout=20)
    client.login("alice", "alicepw")
    client.select("INBOX")
    yield proxy, client
    assert client.noop()[0] == "OK", "the well-behaved session was disturbed"
    assert proxy.alive()
    client.logout()


def test_over_long_line_gets_bye(bystander):
    proxy, _ = bystander
    sock = tls_socket(proxy)
    sock.sendall(b"a NOOP " + b"x" * 10000)
    reply = read_to_close(sock)
    assert reply.startswith(b"* BYE") and b"too long" in reply


def test_oversized_sync_literal_gets_bad_and_the_session_continues(bystander):
    proxy, _ = bystander
    sock = tls_socket(proxy)
    sock.sendall(b"a LOGIN alice {99999}\r\n")
    assert read_until(sock, b"\r\n").startswith(b"a BAD")
    sock.sendall(b"b NOOP\r\n")
    assert read_until(sock, b"\r\n").startswith(b"b OK")
    sock.close()


def test_oversized_append_is_refused_before_any_byte_is_sent(bystander):
    proxy, _ = bystander
    sock = tls_socket(proxy)
    sock.sendall(b"a LOGIN alice alicepw\r\n")
    assert b"a OK" in read_until(sock, b"a OK")
    sock.sendall(b"b APPEND INBOX {2000000}\r\n")
    assert read_until(sock, b"\r\n").startswith(b"b BAD")
    sock.sendall(b"c APPEND INBOX {5000000+}\r\n" + b"x" * 100)
    assert read_to_close(sock).startswith(b"* BYE")


def test_garbage_bytes_get_bad_then_bye_on_binary_noise(bystander):
    proxy, _ = bystander
    sock = tls_socket(proxy)
    sock.sendall(b"\x00\xff\xfe garbage\r\n")
    assert read_until(sock, b"\r\n").startswith(b"* BAD")
    sock.sendall(b"+ not a tag\r\n(((\r\na1 FETCH ((((\r\n")
    replies = read_until(sock, b"a1 BAD")
    assert replies.count(b"BAD") == 3
    sock.sendall(b"a2 NOOP\r\n")
    assert read_until(sock, b"\r\n").startswith(b"a2 OK")
    sock.close()


def test_client_vanishing_mid_literal_closes_cleanly(bystander, dovecot):
    proxy, client = bystander
    sock = tls_socket(proxy)
    sock.sendall(b"a LOGIN alice alicepw\r\n")
    read_until(sock, b"a OK")
    sock.sendall(b"b APPEND INBOX {500000+}\r\n" + b"y" * 1000)
    sock.close()
    # nothing half-appended appears, and the proxy keeps serving
    typ, data = client.status("INBOX", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 0" in data[0]


def test_plaintext_tls_mismatch_is_closed(bystander):
    proxy, _ = bystander
    sock = socket.create_connection(("127.0.0.1", proxy.ports["imaps"]), timeout=10)
    sock.sendall(b"a LOGIN alice alicepw\r\n")  # plaintext to an implicit-TLS listener
    assert b"alicepw" not in read_to_close(sock)


def test_preauth_timeout_closes_silent_connections(dovecot, proxy_factory):
    proxy = proxy_factory(dovecot, limits={"preauth_timeout": 1})
    sock = tls_socket(proxy)
    started = time.monotonic()
    reply = read_to_close(sock)
    assert reply.startswith(b"* BYE Autologout")
    assert time.monotonic() - started < 10


def test_upstream_loss_ends_the_session_with_bye(dovecot, proxy_factory):
    proxy = proxy_factory(dovecot)
    sock = tls_socket(proxy)
    sock.sendall(b"a LOGIN alice alicepw\r\n")
    read_until(sock, b"a OK")
    dovecot.stop()
    reply = read_to_close(sock)
    assert reply.startswith(b"* BYE"), reply
    assert proxy.alive()


def test_upstream_down_gives_bye_at_connect(dovecot, proxy_factory):
    proxy = proxy_factory(dovecot)
    dovecot.stop()
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.ports["imaps"]), timeout=10),
                               server_hostname="localhost")
    assert read_to_close(sock) == b"* BYE upstream connection lost: connection refused\r\n"
