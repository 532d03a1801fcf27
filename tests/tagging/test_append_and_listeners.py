"""APPEND through a tagging listener stores no verdict of the client's making, and a listener with
``tagging: false`` is a transparent relay for reading and for APPEND (real caliproxy, real
Dovecot)."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from caliproxy.demo.dovecot import free_port
from caliproxy.privacy.header import HEADER_LENGTH

from .imap_model import parse_fetches, renamed
from .raw_client import RawImap

pytestmark = pytest.mark.integration

# A Sent copy with a verdict of its own (a client filter copying a header, or a forgery).
SENT = (b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: sent copy\r\n"
        b"X-Caliproxy-Privacy: v=1; level=public; pi=100; grade=A; t=100; a=100; p=100; c=100;\r\n"
        b"\tr=TLS13;\r\nDate: Tue, 04 Jun 2024 08:00:00 +0000\r\nx-caliproxy-privacy : stale=yes;\r\n"
        b"Message-ID: <sent@tagging.test>\r\n\r\nHello Bob.\r\n"
        b"X-Caliproxy-Privacy: a line of the body, kept as it is\r\n")
SENT_2 = SENT.replace(b"sent copy", b"second copy").replace(b"<sent@", b"<sent2@")


@pytest.fixture
def proxy(dovecot, proxy_factory):
    """caliproxy with a tagging listener ``imaps`` and a transparent one ``relay``."""
    return proxy_factory(dovecot, listeners=[
        {"name": "imaps", "port": free_port(), "tls": "implicit", "tagging": True},
        {"name": "relay", "port": free_port(), "tls": "implicit", "tagging": False},
    ])


def _stored(dovecot, ca_pem, mailbox: str = "Sent") -> list[bytes]:
    with RawImap(dovecot.imaps_port, ca_pem) as client:
        client.login()
        client.command(f"EXAMINE {mailbox}")
        answers = parse_fetches(client.command("UID FETCH 1:* (UID BODY.PEEK[])"))
    return [{a.name: a.value for a in items}["BODY[]"] for _, items in answers]


def _append_in_pieces(client: RawImap, message: bytes, cuts: list[int], *, sync: bool) -> bytes:
    """APPEND with the literal sent in several writes (each its own TLS record)."""
    client.counter += 1
    tag = b"A%d" % client.counter
    marker = b"{%d}" % len(message) if sync else b"{%d+}" % len(message)
    client.send(tag + b" APPEND Sent (\\Seen) " + marker + b"\r\n")
    if sync:
        assert client._line().startswith(b"+")
    bounds = [0, *cuts, len(message)]
    for start, end in itertools.pairwise(bounds):
        client.send(message[start:end])
        time.sleep(0.02)
    client.send(b"\r\n")
    _, tagged = client.read_until(tag)
    assert tagged.startswith(tag + b" OK"), tagged
    return tagged


@pytest.mark.parametrize("sync", [True, False], ids=["synchronizing", "literal+"])
def test_append_through_a_tagging_listener_renames_our_fields_across_chunks(dovecot, proxy, server_cert_files,
                                                                            sync):
    ca_pem = server_cert_files.ca_pem
    first = SENT.index(b"X-Caliproxy-Privacy")
    second = SENT.index(b"x-caliproxy-privacy")
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        # cut inside both names, and right before the header's end
        tagged = _append_in_pieces(client, SENT, [first + 7, first + 15, second + 18, SENT.index(b"\r\n\r\n") + 3],
                                   sync=sync)
        assert re.search(rb"\[APPENDUID \d+ \d+\]", tagged)
        client.command("EXAMINE Sent")
        [(_, items)] = parse_fetches(client.command("FETCH 1 (BODY.PEEK[] RFC822.SIZE)"))
    [stored] = _stored(dovecot, ca_pem)
    assert len(stored) == len(SENT)
    assert stored == renamed(SENT)
    assert stored.count(b"X-Caliproxy-Spoofed") == 2
    assert stored.endswith(b"X-Caliproxy-Privacy: a line of the body, kept as it is\r\n")
    # read back through the proxy: one verdict, ours, on top
    answer = {a.name: a.value for a in items}
    assert answer["BODY[]"][HEADER_LENGTH:] == stored
    assert answer["RFC822.SIZE"] == len(stored) + HEADER_LENGTH
    assert re.findall(rb"(?im)^x-caliproxy-privacy\s*:", answer["BODY[]"].split(b"\r\n\r\n")[0]) == [
        b"X-Caliproxy-Privacy:"]


def test_multiappend_renames_in_every_message(dovecot, proxy, server_cert_files):
    ca_pem = server_cert_files.ca_pem
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.send(b"M1 APPEND Sent (\\Seen) {%d+}\r\n" % len(SENT) + SENT
                    + b" () {%d+}\r\n" % len(SENT_2) + SENT_2 + b"\r\n")
        _, tagged = client.read_until(b"M1")
        assert tagged.startswith(b"M1 OK"), tagged
    assert _stored(dovecot, ca_pem) == [renamed(SENT), renamed(SENT_2)]


def test_a_listener_without_tagging_is_a_transparent_relay(dovecot, proxy, server_cert_files):
    ca_pem = server_cert_files.ca_pem
    dovecot.bulk_load("alice", [SENT, b"Subject: plain\r\n\r\nno verdict here\r\n"])
    items = "(UID RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (Subject X-Caliproxy-Privacy)] BODY.PEEK[]<0.300>)"
    answers = {}
    for name, port in (("direct", dovecot.imaps_port), ("relay", proxy.ports["relay"]),
                       ("tagging", proxy.ports["imaps"])):
        with RawImap(port, ca_pem) as client:
            client.login()
            client.command("EXAMINE INBOX")
            answers[name] = client.command(f"UID FETCH 1:* {items}")
    assert answers["relay"] == answers["direct"]
    assert answers["tagging"] != answers["direct"]
    tagged = {n: {a.name: a.value for a in items} for n, items in parse_fetches(answers["tagging"])}
    assert tagged[1]["BODY[]"].startswith(b"X-Caliproxy-Privacy: ") and tagged[1]["RFC822.SIZE"] == len(SENT) + 256

    # APPEND through the relay stores the client's bytes as they are
    with RawImap(proxy.ports["relay"], ca_pem) as client:
        client.login()
        client.command(b"APPEND Sent {%d+}\r\n" % len(SENT) + SENT)
    assert _stored(dovecot, ca_pem) == [SENT]
