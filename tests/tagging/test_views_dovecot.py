"""Every view of a tagged message through the real caliproxy process in front of a real Dovecot.

The oracle is Dovecot itself: the test reads each message's virtual form through the proxy,
checks it is our block followed by the upstream bytes (fields of our name renamed in place),
stores those virtual messages in a second mailbox, and then asks the proxy (INBOX) and Dovecot
directly (the stored virtual copies) the same FETCH: the untagged answers must be the same bytes —
sections, partials across the block's end echoing the client's origin, header lists naming our
header or not, sizes. Items that do not depend on the top-level header (TEXT, BODYSTRUCTURE,
ENVELOPE, FLAGS, INTERNALDATE) are compared with Dovecot's answer for the original messages.
"""

from __future__ import annotations

import re

import pytest

from caliproxy.privacy.header import HEADER_LENGTH, parse_header

from .imap_model import parse_fetches, renamed, virtual_message
from .raw_client import RawImap

pytestmark = pytest.mark.integration

ORACLE = "Oracle"
MEGABYTE = 1 << 20


def _plain(subject: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"From: Carol <carol@example.test>\r\nTo: Alice <alice@example.test>\r\n"
            b"Subject: " + subject.encode() + b"\r\nDate: Mon, 03 Jun 2024 10:00:00 +0000\r\n"
            b"Message-ID: <" + subject.replace(" ", ".").encode() + b"@tagging.test>\r\n" + extra
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body)


FORGED_FIELDS = (b"X-Caliproxy-Privacy: v=1; level=public; pi=100; grade=A; t=100; a=100; p=100; c=100;\r\n"
                 b"\tr=TLS13 DMARC+;\r\nX-Caliproxy-Spoofed: an older renamed one\r\n"
                 b"x-caliproxy-privacy : level=public;\r\n")

MESSAGES = [
    _plain("plain note", b"Hello Alice,\r\nsee you.\r\n" * 60),
    _plain("forged verdict", b"X-Caliproxy-Privacy: level=public; (in the body: left alone)\r\n" * 5,
           FORGED_FIELDS),
    _plain("one megabyte", (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-\r\n"
                            * (MEGABYTE // 66 + 1))[:MEGABYTE], FORGED_FIELDS[:91]),
    (b"From: Dave <dave@example.test>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n"
     b"Content-Type: text/plain\r\n\r\nfirst part\r\n--b1\r\nContent-Type: text/html\r\n\r\n"
     b"<p>second</p>\r\n--b1--\r\n"),
    b"Subject: header only, no empty line\r\nFrom: eve@example.test\r\n",
    b"\r\nA message without a header.\r\nX-Caliproxy-Privacy: not a header here\r\n",
    b"Subject: tiny\r\n\r\nx",
    # 8-bit subject: Dovecot sends it as a literal inside ENVELOPE
    _plain("caf\u00e9 cr\u00e8me", b"Bonjour.\r\n"),
]

# The views whose bytes depend on our header: compared with Dovecot's answer for the stored
# virtual messages.
VIEWS = [
    "BODY.PEEK[]", "RFC822.SIZE", "RFC822.HEADER", "BODY.PEEK[HEADER]",
    "BODY.PEEK[HEADER.FIELDS (Subject X-Caliproxy-Privacy)]",
    "BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)]",
    'BODY.PEEK[HEADER.FIELDS ("x-caliproxy-privacy" From)]',
    "BODY.PEEK[HEADER.FIELDS (Subject From)]",
    "BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Spoofed)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy X-Caliproxy-Spoofed)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Spoofed Received)]",
    "BODY.PEEK[]<0.100>", "BODY.PEEK[]<0.256>", "BODY.PEEK[]<200.100>", "BODY.PEEK[]<250.20>",
    "BODY.PEEK[]<255.1>", "BODY.PEEK[]<256.64>", "BODY.PEEK[]<100.1000>", "BODY.PEEK[]<300.5000>",
    "BODY.PEEK[]<1048000.65536>", "BODY.PEEK[]<5000000.10>",
    "BODY.PEEK[HEADER]<0.300>", "BODY.PEEK[HEADER]<255.2>", "BODY.PEEK[HEADER]<400.100>",
    "BODY.PEEK[HEADER.FIELDS (Subject X-Caliproxy-Privacy)]<250.30>",
    "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]<10.400>",
    "BODY.PEEK[HEADER.FIELDS (Subject)]<2.5>",
    # several sections in one command, two of them starting at the same upstream offset
    "UID RFC822.SIZE BODY.PEEK[]<0.100> BODY.PEEK[]<100.200> BODY.PEEK[HEADER]",
    # a literal inside ENVELOPE, then sections to rewrite after it in the same response
    "UID ENVELOPE BODY.PEEK[HEADER] BODYSTRUCTURE BODY.PEEK[]<200.300> RFC822.SIZE",
    # Thunderbird's header sync with a custom column on our header
    ("UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority "
    "X-Priority References Newsgroups In-Reply-To Content-Type Reply-To X-Caliproxy-Privacy)]"),
]
# Views that set \Seen: compared once every message is \Seen on both sides.
SEEN_VIEWS = ["BODY[]", "RFC822", "BODY[HEADER]", "BODY[]<240.40>"]
# Views that do not depend on our header: the proxy's answer is Dovecot's for the original.
UNCHANGED = ["BODY.PEEK[TEXT]", "BODY.PEEK[TEXT]<3.50>", "BODYSTRUCTURE", "BODY", "ENVELOPE", "FLAGS",
             "INTERNALDATE", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "UID"]
SEEN_UNCHANGED = ["RFC822.TEXT", "BODY[TEXT]", "FLAGS"]


@pytest.fixture
def tagged_and_oracle(dovecot, proxy_factory, server_cert_files):
    """Dovecot with MESSAGES in INBOX and their virtual forms (read through the proxy) in ORACLE."""
    assert dovecot.bulk_load("alice", MESSAGES) == len(MESSAGES)
    proxy = proxy_factory(dovecot)
    with RawImap(proxy.ports["imaps"], proxy.ca_pem) as client:
        client.login()
        client.command("EXAMINE INBOX")
        answers = parse_fetches(client.command("UID FETCH 1:* (UID BODY.PEEK[])"))
    bodies = {next(a.value for a in items if a.name == "UID"): next(a.value for a in items if a.name == "BODY[]")
              for _, items in answers}
    virtual = [bodies[uid] for uid in sorted(bodies)]
    assert len(virtual) == len(MESSAGES)
    for original, seen in zip(MESSAGES, virtual):
        block = seen[:HEADER_LENGTH]
        assert block.startswith(b"X-Caliproxy-Privacy: ") and block.endswith(b"\r\n")
        parse_header(block)
        assert seen == virtual_message(block, original)
    assert dovecot.bulk_load("alice", virtual, ORACLE) == len(MESSAGES)
    with RawImap(dovecot.imaps_port, server_cert_files.ca_pem) as client:
        client.login()  # \Recent goes to this session, so the test's sessions see the same flags
        client.command("SELECT INBOX")
        client.command(f"SELECT {ORACLE}")
    return dovecot, proxy, server_cert_files.ca_pem, virtual


def _compare(proxied: RawImap, direct: RawImap, views: list[str], what: str) -> list[str]:
    wrong = []
    for view in views:
        command = f"UID FETCH 1:* ({view})" if " " in view else f"UID FETCH 1:* {view}"
        got = proxied.command(command)
        want = direct.command(command)
        if got != want:
            for (n, g), (_, w) in zip(parse_fetches(got), parse_fetches(want)):
                if g != w:
                    wrong.append(f"{view} of message {n} differs from {what}: {str(g)[:300]} != {str(w)[:300]}")
                    break
            else:
                at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                wrong.append(f"{view}: at byte {at}: {got[at - 80:at + 80]!r} != {want[at - 80:at + 80]!r}")
    return wrong


def test_every_view_is_byte_exact(tagged_and_oracle):
    dovecot, proxy, ca_pem, _virtual = tagged_and_oracle
    with RawImap(proxy.ports["imaps"], ca_pem) as proxied, \
            RawImap(dovecot.imaps_port, ca_pem) as oracle, RawImap(dovecot.imaps_port, ca_pem) as original:
        for client in (proxied, oracle, original):
            client.login()
        proxied.command("SELECT INBOX")
        oracle.command(f"SELECT {ORACLE}")
        original.command("SELECT INBOX")
        wrong = _compare(proxied, oracle, VIEWS, "Dovecot's answer for the virtual message")
        wrong += _compare(proxied, original, UNCHANGED, "Dovecot's answer for the original")
        for client in (proxied, oracle, original):
            client.command("UID STORE 1:* +FLAGS.SILENT (\\Seen)")
        wrong += _compare(proxied, oracle, SEEN_VIEWS, "Dovecot's answer for the virtual message")
        wrong += _compare(proxied, original, SEEN_UNCHANGED, "Dovecot's answer for the original")
    assert not wrong, "\n".join(wrong)


def test_thunderbird_chunked_display_fetch_reassembles_a_megabyte_message(tagged_and_oracle):
    """Thunderbird sizes ``BODY[]<start.len>`` chunks from RFC822.SIZE; a short size truncates."""
    _dovecot, proxy, ca_pem, virtual = tagged_and_oracle
    uid = 3
    expected = virtual[uid - 1]
    assert len(MESSAGES[uid - 1]) > MEGABYTE
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.command("select INBOX")
        [(_, items)] = parse_fetches(client.command(f"UID fetch {uid} (UID RFC822.SIZE FLAGS)"))
        size = {a.name: a.value for a in items}["RFC822.SIZE"]
        assert size == len(MESSAGES[uid - 1]) + HEADER_LENGTH == len(expected)
        pieces = []
        start, chunk = 0, 65536
        while start < size:
            [(_, items)] = parse_fetches(client.command(f"UID fetch {uid} (UID RFC822.SIZE BODY[]<{start}.{chunk}>)"))
            answer = {a.name: a.value for a in items}
            assert answer["RFC822.SIZE"] == size and answer["UID"] == uid
            piece = answer[f"BODY[]<{start}>"]
            assert len(piece) == min(chunk, size - start)
            pieces.append(piece)
            start += chunk
            chunk = 73728 if start >= 131072 else 65536  # Thunderbird grows its chunks
        [(_, items)] = parse_fetches(client.command(f"UID fetch {uid} (BODY.PEEK[]<{size}.65536>)"))
        assert {a.name: a.value for a in items}[f"BODY[]<{size}>"] == b""
    assert b"".join(pieces) == expected


def test_a_forged_privacy_header_arrives_neutralised_under_ours(tagged_and_oracle):
    _dovecot, proxy, ca_pem, _virtual = tagged_and_oracle
    forged = MESSAGES[1]
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.command("EXAMINE INBOX")
        [(_, items)] = parse_fetches(client.command(
            "UID FETCH 2 (BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)])"))
    answer = {a.name: a.value for a in items}
    body, ours = answer["BODY[]"], answer["BODY[HEADER.FIELDS (X-CALIPROXY-PRIVACY)]"]
    block = body[:HEADER_LENGTH]
    assert ours == block + b"\r\n"  # only ours answers to our name
    verdict = parse_header(block)
    assert b"level=%s;" % verdict.level.encode() in block
    rest = body[HEADER_LENGTH:]
    assert len(rest) == len(forged) and rest == renamed(forged)
    assert re.findall(rb"(?im)^x-caliproxy-(\w+)\s*:", rest.split(b"\r\n\r\n")[0]) == [
        b"Spoofed", b"Spoofed", b"Spoofed"]
    # the body is not the header: a line of our name there stays as it is
    assert rest.endswith(b"X-Caliproxy-Privacy: level=public; (in the body: left alone)\r\n")
