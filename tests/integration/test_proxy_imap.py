"""The transparent proxy against a real Dovecot: every command a real client uses, both TLS modes.

Each test starts Dovecot on loopback (tests/fixtures/upstreams.py) and the real caliproxy process
in front of it (tests/fixtures/proxy.py), then drives it with imaplib and compares with what
Dovecot itself answers directly.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import threading
import time

import pytest

from caliproxy.demo.seed import sample_messages

pytestmark = pytest.mark.integration


def connect(proxy, listener: str = "imaps") -> imaplib.IMAP4:
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    port = proxy.ports[listener]
    if listener == "imaps":
        return imaplib.IMAP4_SSL("localhost", port, ssl_context=context, timeout=20)
    client = imaplib.IMAP4("localhost", port, timeout=20)
    client.starttls(ssl_context=context)
    return client


def direct(dovecot, ca_pem) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(ca_pem))
    return imaplib.IMAP4_SSL("localhost", dovecot.imaps_port, ssl_context=context, timeout=20)


def fetch_bodies(client: imaplib.IMAP4, mailbox: str = "INBOX") -> dict[int, bytes]:
    client.select(mailbox, readonly=True)
    typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    assert typ == "OK", data
    bodies = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            bodies[uid] = item[1]
    return bodies


@pytest.fixture
def seeded(dovecot):
    for raw in sample_messages():
        dovecot.deliver("alice", raw)
    return dovecot


@pytest.mark.parametrize("upstream_tls", ["implicit", "starttls"])
@pytest.mark.parametrize("listener", ["imaps", "imap"])
def test_bodies_through_proxy_are_byte_identical_to_direct(seeded, proxy_factory, server_cert_files,
                                                           upstream_tls, listener):
    proxy = proxy_factory(seeded, upstream_tls=upstream_tls, tagging=False)
    with direct(seeded, server_cert_files.ca_pem) as client:
        client.login("alice", "alicepw")
        expected = fetch_bodies(client)
    with connect(proxy, listener) as client:
        client.login("alice", "alicepw")
        got = fetch_bodies(client)
    assert len(expected) == len(sample_messages())
    assert got == expected


def test_capabilities_are_the_allow_list_in_greeting_capability_and_login(seeded, proxy_factory):
    proxy = proxy_factory(seeded)
    with connect(proxy) as client:
        greeting_caps = set(client.capabilities)
        assert "COMPRESS=DEFLATE" not in greeting_caps and "STARTTLS" not in greeting_caps
        assert {"IMAP4REV1", "LITERAL+", "AUTH=PLAIN"} <= greeting_caps
        typ, data = client.login("alice", "alicepw")
        assert typ == "OK"
        typ, data = client.capability()
        caps = set(data[0].decode().upper().split())
        forbidden = {"COMPRESS=DEFLATE", "CONDSTORE", "QRESYNC", "ESEARCH", "SORT", "THREAD=REFERENCES",
                     "CATENATE", "URL-PARTIAL", "BINARY", "NOTIFY", "LIST-STATUS", "STATUS=SIZE"}
        assert not caps & forbidden
        assert {"IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "SPECIAL-USE", "UNSELECT"} <= caps
        # commands of extensions that were not offered are refused, not forwarded
        for command in ("COMPRESS DEFLATE", "GETQUOTAROOT INBOX", "SELECT INBOX (CONDSTORE)"):
            tag = client._new_tag()
            client.send(tag + b" " + command.encode() + b"\r\n")
            line = client.readline()
            assert line.startswith(tag + b" BAD"), line


def test_plain_listener_refuses_login_before_starttls(seeded, proxy_factory):
    proxy = proxy_factory(seeded)
    client = imaplib.IMAP4("localhost", proxy.ports["imap"], timeout=20)
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    assert not any(cap.startswith("AUTH=") for cap in client.capabilities)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("alice", "alicepw")
    client.shutdown()


def test_starttls_discards_bytes_pipelined_before_the_handshake(seeded, proxy_factory):
    proxy = proxy_factory(seeded)
    raw = socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=10)
    assert raw.recv(4096).startswith(b"* OK")
    raw.sendall(b"a STARTTLS\r\nb LOGIN alice alicepw\r\n")
    assert raw.recv(4096).startswith(b"a OK")
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"c NOOP\r\n")
    answer = tls.recv(4096)
    assert answer.startswith(b"c OK"), answer  # "b LOGIN" never reached the upstream
    tls.close()


def test_mailbox_commands_through_proxy(seeded, proxy_factory):
    proxy = proxy_factory(seeded)
    with connect(proxy) as client:
        client.login("alice", "alicepw")
        typ, data = client.list('""', "*")
        assert typ == "OK" and any(b"INBOX" in line for line in data)
        typ, data = client._simple_command("LIST", "(SUBSCRIBED)", '""', "*", "RETURN", "(SPECIAL-USE)")
        assert typ == "OK"
        assert client.create("Projects")[0] == "OK"
        assert client.subscribe("Projects")[0] == "OK"
        assert client.rename("Projects", "Projects2")[0] == "OK"
        typ, data = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)")
        assert typ == "OK" and b"MESSAGES %d" % len(sample_messages()) in data[0]
        typ, data = client.select("INBOX")
        assert typ == "OK" and int(data[0]) == len(sample_messages())
        typ, data = client.search(None, "ALL")
        assert data[0].split() == [str(i).encode() for i in range(1, len(sample_messages()) + 1)]
        typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", "quarterly")
        assert typ == "OK"
        assert client.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        typ, data = client.fetch("1", "(FLAGS)")
        assert b"\\Flagged" in data[0]
        assert client.copy("1:2", "Projects2")[0] == "OK"
        typ, data = client.uid("MOVE", "3", "Projects2")
        assert typ == "OK"
        assert client.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        typ, data = client.expunge()
        assert typ == "OK" and data[-1] == b"1"  # earlier entries: the EXPUNGE caused by MOVE
        assert client.unsubscribe("Projects2")[0] == "OK"
        client.close()
        typ, data = client.select("Projects2")
        assert int(data[0]) == 3
        client.unselect() if hasattr(client, "unselect") else client.close()
        assert client.delete("Projects2")[0] == "OK"
        client.select("INBOX")
        assert client.noop()[0] == "OK" and client.check()[0] == "OK"
        typ, data = client._simple_command("NAMESPACE")
        assert typ == "OK"
        typ, data = client.xatom("ID", '("name" "caliproxy-test")')
        assert typ == "OK"


def test_append_of_10_mb_message_round_trips(dovecot, proxy_factory):
    proxy = proxy_factory(dovecot, tagging=False)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijkl\r\n"
    body = line * (10 * 1024 * 1024 // len(line))
    message = b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: big\r\n\r\n" + body
    with connect(proxy) as client:
        client.login("alice", "alicepw")
        typ, data = client.append("INBOX", "(\\Seen)", None, message)
        assert typ == "OK", data
        got = fetch_bodies(client)
    assert list(got.values()) == [message]


def test_idle_receives_delivery_through_proxy(dovecot, proxy_factory):
    proxy = proxy_factory(dovecot)
    client = connect(proxy)
    client.login("alice", "alicepw")
    client.select("INBOX")
    tag = client._new_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+")
    threading.Timer(0.3, dovecot.deliver, args=("alice", sample_messages()[0])).start()
    deadline = time.monotonic() + 15
    seen = b""
    while b"EXISTS" not in seen and time.monotonic() < deadline:
        seen = client.readline()
    assert seen == b"* 1 EXISTS\r\n"
    client.send(b"DONE\r\n")
    while True:
        line = client.readline()
        if line.startswith(tag):
            assert line.startswith(tag + b" OK")
            break
    client.logout()


def test_literal_plus_from_client_toward_upstream_without_literal_plus(dovecot_factory, proxy_factory):
    # Dovecot told to advertise no LITERAL+: the proxy must wait for its "+" before each literal.
    upstream = dovecot_factory(extra_config="imap_capability = IMAP4rev1 SASL-IR ID ENABLE IDLE "
                                            "UIDPLUS MOVE NAMESPACE UNSELECT")
    proxy = proxy_factory(upstream, tagging=False)
    with connect(proxy) as client:
        client.login("alice", "alicepw")
        tag = client._new_tag()
        message = b"Subject: lit\r\n\r\nhello\r\n"
        client.send(tag + b" APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
        line = client.readline()
        assert line.startswith(tag + b" OK"), line
        tag = client._new_tag()
        client.send(tag + b" LOGIN {5+}\r\nalice {7+}\r\nalicepw\r\n")
        line = client.readline()
        assert line.startswith(tag + b" NO"), line  # already authenticated; framing stayed in step
        assert list(fetch_bodies(client).values()) == [message]


def test_wrong_upstream_certificate_is_refused_with_bye(seeded, proxy_factory, tls_ca, tmp_path):
    import trustme

    other = trustme.CA()
    other_ca = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_ca))
    proxy = proxy_factory(seeded, upstream_ca=other_ca)
    greeting = _greeting_until_close(proxy)
    assert greeting.startswith(b"* BYE") and b"certificate" in greeting, greeting


def test_upstream_name_mismatch_is_refused(seeded, proxy_factory):
    proxy = proxy_factory(seeded, upstream_server_name="imap.wrong-name.test")
    greeting = _greeting_until_close(proxy)
    assert greeting.startswith(b"* BYE"), greeting


def _greeting_until_close(proxy) -> bytes:
    context = ssl.create_default_context(cafile=str(proxy.ca_pem))
    raw = context.wrap_socket(socket.create_connection(("127.0.0.1", proxy.ports["imaps"]), timeout=10),
                              server_hostname="localhost")
    data = b""
    try:
        while chunk := raw.recv(4096):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    raw.close()
    return data
