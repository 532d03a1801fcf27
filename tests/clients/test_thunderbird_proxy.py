"""Real Thunderbird through caliproxy: the same messages, byte for byte, as pointed at Dovecot.

With tagging off caliproxy is a transparent relay: Thunderbird's offline store must equal
what Dovecot serves directly, over STARTTLS and over implicit TLS. With tagging on, every
message is our header block followed by the original bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from caliproxy.demo.seed import samples
from caliproxy.privacy.header import HEADER_LENGTH, HEADER_NAME, parse_header
from tests.clients.thunderbird import sync_mailbox, thunderbird_available

pytestmark = [
    pytest.mark.client,
    pytest.mark.skipif(not thunderbird_available(),
                       reason="thunderbird is not installed (apt-get install thunderbird "
                              "libnss3-tools; see .ci/install-deps)"),
]


@pytest.fixture
def seeded(dovecot):
    for sample in samples():
        dovecot.deliver("alice", sample.raw)
    return dovecot


def _direct(seeded, tmp_path: Path, ca: Path) -> list[bytes]:
    return sync_mailbox(tmp_path / "direct", host="localhost", port=seeded.imaps_port, security="tls",
                        user="alice", password="alicepw", ca_pem=ca,
                        expect_messages=len(samples())).messages


@pytest.mark.parametrize("listener,security", [("imap", "starttls"), ("imaps", "tls")])
def test_thunderbird_through_transparent_proxy_gets_dovecots_bytes(seeded, proxy_factory, tmp_path,
                                                                    server_cert_files, listener, security):
    expected = _direct(seeded, tmp_path, server_cert_files.ca_pem)
    proxy = proxy_factory(seeded, tagging=False)
    got = sync_mailbox(tmp_path / "proxy", host="localhost", port=proxy.ports[listener],
                       security=security, user="alice", password="alicepw", ca_pem=proxy.ca_pem,
                       expect_messages=len(samples())).messages
    assert len(expected) == len(samples())
    assert got == expected


def test_thunderbird_through_tagging_proxy_stores_header_then_original(seeded, proxy_factory, tmp_path,
                                                                        server_cert_files):
    expected = _direct(seeded, tmp_path, server_cert_files.ca_pem)
    proxy = proxy_factory(seeded)
    got = sync_mailbox(tmp_path / "proxy", host="localhost", port=proxy.ports["imaps"], security="tls",
                       user="alice", password="alicepw", ca_pem=proxy.ca_pem,
                       expect_messages=len(samples())).messages
    assert len(got) == len(expected)
    spoofed = HEADER_NAME.encode() + b":"
    for original, stored in zip(expected, got):
        block, rest = stored[:HEADER_LENGTH], stored[HEADER_LENGTH:]
        assert block.startswith(spoofed) and block.endswith(b"\r\n")
        parse_header(block)  # a well-formed verdict
        # the original bytes follow, with any forged header of our name renamed in place
        assert len(rest) == len(original)
        assert rest == original.replace(spoofed, b"X-Caliproxy-Spoofed:")
