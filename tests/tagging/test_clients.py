"""Real clients through the tagging proxy: what they store is our block followed by the upstream's
bytes (fields of our name renamed in place), for every message.

* mbsync (isync) pulls INBOX into a Maildir;
* Thunderbird, headless, downloads INBOX for offline use (``tests/clients/thunderbird.py``).

The upstream bytes are read from Dovecot directly for comparison.
"""

from __future__ import annotations

import imaplib
import re
import ssl
import subprocess
from pathlib import Path

import pytest

from caliproxy.demo.seed import sample_messages
from caliproxy.privacy.header import HEADER_LENGTH, parse_header
from tests.clients.thunderbird import sync_mailbox, thunderbird_available
from tests.fixtures.upstreams import have_binary

from .imap_model import renamed
from .test_views_dovecot import FORGED_FIELDS

pytestmark = pytest.mark.client

FORGED = (b"From: Mallory <mallory@example.test>\r\nTo: Alice <alice@example.test>\r\n"
          b"Subject: trust me\r\n" + FORGED_FIELDS + b"Date: Tue, 04 Jun 2024 08:00:00 +0000\r\n"
          b"Message-ID: <forged@tagging.test>\r\n\r\nThis message claims to be public.\r\n")
LARGE = (b"From: Carol <carol@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: large\r\n"
         b"Date: Tue, 04 Jun 2024 09:00:00 +0000\r\nMessage-ID: <large@tagging.test>\r\n\r\n"
         + b"a line of a large message body, repeated to about 300 kB ...\r\n" * 5000)


@pytest.fixture
def mailbox(dovecot):
    """INBOX: the sample mail (delivered by LMTP), a forged verdict and a large message."""
    for raw in sample_messages():
        dovecot.deliver("alice", raw)
    dovecot.deliver("alice", FORGED)
    dovecot.deliver("alice", LARGE)
    return dovecot


def _upstream_bodies(dovecot, ca_pem: Path) -> dict[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca_pem))
    with imaplib.IMAP4_SSL("localhost", dovecot.imaps_port, ssl_context=context, timeout=30) as client:
        client.login("alice", "alicepw")
        client.select("INBOX", readonly=True)
        typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert typ == "OK"
    return {int(re.search(rb"UID (\d+)", item[0]).group(1)): item[1] for item in data if isinstance(item, tuple)}


def _check_tagged(stored: bytes, original: bytes, *, newline: bytes = b"\r\n") -> None:
    """``stored`` is our block (``HEADER_LENGTH`` bytes with CRLF) and then ``original`` with
    fields of our name renamed in place."""
    size = HEADER_LENGTH - 2 + len(newline)
    block, rest = stored[:size], stored[size:]
    assert block.startswith(b"X-Caliproxy-Privacy: ") and block.endswith(newline), block
    parse_header(block)
    assert rest == renamed(original)


# -- mbsync ---------------------------------------------------------------------------------------


def _mbsync(directory: Path, port: int, ca_pem: Path) -> list[bytes]:
    mail = directory / "mail"
    mail.mkdir(parents=True)
    config = directory / "mbsyncrc"
    config.write_text(f"""\
IMAPAccount alice
Host localhost
Port {port}
User alice
Pass alicepw
SSLType IMAPS
CertificateFile {ca_pem}
SystemCertificates no

IMAPStore remote
Account alice

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX

Channel alice
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""")
    result = subprocess.run(["mbsync", "-c", str(config), "-a"], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    files = sorted((mail / "INBOX").glob("*/*"), key=lambda p: int(re.search(r",U=(\d+)", p.name).group(1)))
    return [path.read_bytes() for path in files]


@pytest.mark.skipif(not have_binary("mbsync"), reason="mbsync is not installed (apt-get install isync)")
def test_mbsync_stores_our_block_then_the_upstream_bytes(mailbox, proxy_factory, server_cert_files, tmp_path):
    upstream = _upstream_bodies(mailbox, server_cert_files.ca_pem)
    proxy = proxy_factory(mailbox)
    stored = _mbsync(tmp_path, proxy.ports["imaps"], proxy.ca_pem)
    assert len(stored) == len(upstream) == len(sample_messages()) + 2
    for data, uid in zip(stored, sorted(upstream)):
        # mbsync 1.4 stores LF line ends and, even when only pulling, adds one "X-TUID:" line at
        # the end of the header (its transaction id); everything else is the server's bytes.
        head, blank, body = data.partition(b"\n\n")
        lines = head.split(b"\n")
        tuid = [line for line in lines if line.startswith(b"X-TUID: ")]
        assert len(tuid) == 1 and lines[-1] == tuid[0]
        data = b"\n".join(lines[:-1]) + blank + body
        _check_tagged(data, upstream[uid].replace(b"\r\n", b"\n"), newline=b"\n")


# -- Thunderbird ----------------------------------------------------------------------------------


@pytest.mark.skipif(not thunderbird_available(),
                    reason="thunderbird is not installed (apt-get install thunderbird libnss3-tools)")
def test_thunderbird_stores_every_message_with_our_block_on_top(mailbox, proxy_factory, server_cert_files,
                                                                 tmp_path):
    upstream = _upstream_bodies(mailbox, server_cert_files.ca_pem)
    proxy = proxy_factory(mailbox)
    result = sync_mailbox(tmp_path / "thunderbird", host="localhost", port=proxy.ports["imaps"], security="tls",
                          user="alice", password="alicepw", ca_pem=proxy.ca_pem, expect_messages=len(upstream))
    assert result.uids == sorted(upstream)
    for uid, stored in zip(result.uids, result.messages):
        _check_tagged(stored, upstream[uid])
