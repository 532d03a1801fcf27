"""The real-upstream harness works: Dovecot starts, speaks TLS, takes mail and stops for good.

Every other integration test stands on these fixtures, so these tests check the harness itself
with a plain client (imaplib) and no proxy in between.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from caliproxy.demo import certs, seed
from caliproxy.demo.dovecot import DovecotError, DovecotServer, _pid_alive
from tests.fixtures.upstreams import DovecotFactory, ServerCertFiles

pytestmark = pytest.mark.integration


@contextmanager
def imap_session(
    server: DovecotServer,
    context: ssl.SSLContext,
    user: str = "alice",
    password: str = "alicepw",
    *,
    implicit_tls: bool = True,
) -> Iterator[imaplib.IMAP4]:
    """A logged-in imaplib client over implicit TLS or plain + STARTTLS."""
    client: imaplib.IMAP4
    if implicit_tls:
        client = imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=context, timeout=10)
    else:
        client = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
        client.starttls(ssl_context=context)
    try:
        client.login(user, password)
        yield client
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def exists(client: imaplib.IMAP4, mailbox: str = "INBOX") -> int:
    status, data = client.select(mailbox)
    assert status == "OK", data
    return int(data[0] or 0)


def fetch_header(client: imaplib.IMAP4, seq: int, field: str) -> str:
    status, data = client.fetch(str(seq), f"(BODY.PEEK[HEADER.FIELDS ({field})])")
    assert status == "OK", data
    return data[0][1].decode().strip()


def test_plain_login_and_starttls_verify_against_the_test_ca(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """Port imap_port offers STARTTLS; the certificate chains to the CA for host 127.0.0.1."""
    client = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    try:
        assert "STARTTLS" in client.capabilities
        client.starttls(ssl_context=server_cert_files.client_context())
        peer = client.sock.getpeercert()
        assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
        assert client.login("alice", "alicepw")[0] == "OK"
    finally:
        client.logout()
    # tests may also log in without TLS (the proxy's plaintext upstream path)
    plain = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    try:
        assert plain.login("bob", "bobpw")[0] == "OK"
    finally:
        plain.logout()


def test_implicit_tls_login_and_no_auth_penalty(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """imaps_port is TLS from the first byte; a failed login does not slow down the next ones."""
    context = server_cert_files.client_context()
    with pytest.raises(imaplib.IMAP4.error), imap_session(dovecot, context, "alice", "wrong"):
        pass
    for user, password in (("alice", "alicepw"), ("bob", "bobpw")):
        started = time.monotonic()
        with imap_session(dovecot, context, user, password) as client:
            assert exists(client) == 0
        # with Dovecot's anvil auth penalty each of these logins would take 2 s and more
        assert time.monotonic() - started < 1.9


def test_untrusted_client_rejects_the_certificate(dovecot: DovecotServer) -> None:
    """The server really presents the test chain: a client trusting only the system CAs fails."""
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port,
                          ssl_context=ssl.create_default_context(), timeout=10)


def test_deliver_to_inbox_and_to_another_mailbox(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """deliver() goes through LMTP for INBOX and doveadm save elsewhere; both land intact."""
    raw = seed.colleague()
    dovecot.deliver("alice", raw)
    dovecot.deliver("alice", seed.company_confidential(), mailbox="Projects/HR")
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client) == 1
        _, data = client.fetch("1", "(BODY.PEEK[])")
        stored = data[0][1]
        # LMTP prepends its own trace lines, then the message follows byte for byte
        assert stored.startswith(b"Return-Path: <>\r\n")
        assert stored.endswith(raw)
        assert re.search(rb"(?m)^Received: from \[127\.0\.0\.1\]\r\n\tby imap\.upstream\.test "
                         rb"with LMTP\r\n\tid ", stored)
        assert exists(client, "Projects/HR") == 1
        assert "Salary review" in fetch_header(client, 1, "SUBJECT")
    with imap_session(dovecot, server_cert_files.client_context(), "bob", "bobpw") as client:
        assert exists(client) == 0  # nothing leaked into another user's mailbox


def _idle_until_exists(client: imaplib.IMAP4, trigger: Callable[[], None]) -> bytes:
    """Enter IDLE (imaplib < 3.14 has no IDLE), call ``trigger``, return the pushed EXISTS line."""
    client.send(b"I1 IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    trigger()
    # A push, not the idle timer's own check (imap_idle_notify_interval, 2 min): Dovecot
    # coalesces change notifications for 0.5 s, a loaded machine may add a few seconds.
    client.sock.settimeout(15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = client.readline()
        if line.endswith(b"EXISTS\r\n"):
            break
    else:
        pytest.fail("no EXISTS pushed while idling")
    client.send(b"DONE\r\n")
    while not (tagged := client.readline()).startswith(b"I1 "):
        pass
    assert tagged.startswith(b"I1 OK")
    return line


def test_deliver_is_pushed_to_a_client_in_idle(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """A delivery appears to an IDLE client as a real new arrival, in INBOX and elsewhere."""
    dovecot.deliver("alice", seed.newsletter(), mailbox="Lists")
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client) == 0
        line = _idle_until_exists(client, lambda: dovecot.deliver("alice", seed.spam()))
        assert line == b"* 1 EXISTS\r\n"
        assert exists(client, "Lists") == 1
        line = _idle_until_exists(
            client, lambda: dovecot.deliver("alice", seed.mailing_list(), mailbox="Lists"))
        assert line == b"* 2 EXISTS\r\n"


def test_bulk_load_of_500_messages(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """bulk_load writes Maildir files directly: 500 messages in order, dated by their Date:."""
    messages = seed.bulk_messages(500, 2048)
    assert dovecot.bulk_load("alice", messages) == 500
    assert dovecot.bulk_load("alice", messages[:10], mailbox="Archive", flags="S") == 10
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client) == 500
        assert fetch_header(client, 1, "SUBJECT").endswith("#0")
        assert fetch_header(client, 500, "SUBJECT").endswith("#499")
        _, data = client.fetch("500", "(UID RFC822.SIZE INTERNALDATE FLAGS BODY.PEEK[])")
        meta, body = data[0]
        assert body == messages[499]
        assert b"UID 500 " in meta
        assert f"RFC822.SIZE {len(messages[499])}".encode() in meta
        # 499 minutes after 1 Jan 2024 00:00 UTC
        assert b'INTERNALDATE "01-Jan-2024 08:19:00 +0000"' in meta
        assert client.search(None, "UNSEEN")[1][0].split()[-1] == b"500"
        assert exists(client, "Archive") == 10
        assert client.search(None, "SEEN")[1][0].split() == [str(i).encode() for i in range(1, 11)]
    # non-ASCII names live on disk in modified UTF-7; a second call in the same second appends
    assert dovecot.bulk_load("alice", messages[:2], mailbox="Entwürfe") == 2
    assert dovecot.bulk_load("alice", messages[2:5], mailbox="Entwürfe") == 5
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client, '"Entw&APw-rfe"') == 5
        assert fetch_header(client, 5, "SUBJECT").endswith("#4")


def test_two_instances_side_by_side(
    dovecot_factory: DovecotFactory, server_cert_files: ServerCertFiles
) -> None:
    """Two instances have their own ports, users, mail, sockets and settings, at the same time."""
    first = dovecot_factory()
    second = dovecot_factory(users={"carol": "carolpw"},
                             extra_config="imap_capability = IMAP4rev1 IDLE")
    assert {first.imap_port, first.imaps_port}.isdisjoint({second.imap_port, second.imaps_port})
    assert first.lmtp_socket != second.lmtp_socket
    assert first.instance_name != second.instance_name
    first.deliver("alice", seed.private())
    second.deliver("carol", seed.pgp_mime())
    second.deliver("carol", seed.smime())
    context = server_cert_files.client_context()
    with imap_session(first, context) as a, imap_session(second, context, "carol", "carolpw") as c:
        assert exists(a) == 1
        assert exists(c) == 2
        # extra_config reached the second only
        assert b"MOVE" in a.capability()[1][0].split()
        assert c.capability()[1][0].split() == [b"IMAP4rev1", b"IDLE"]
    # alice exists only in the first one
    with pytest.raises(imaplib.IMAP4.error), imap_session(second, context):
        pass


def test_stop_really_stops_and_start_again_is_clean(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """After stop() every process is gone and the ports are closed; a restart keeps the mail."""
    dovecot.deliver("alice", seed.colleague())
    master = dovecot._read_pid()
    assert master is not None and dovecot.running
    session = imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port,
                                ssl_context=server_cert_files.client_context(), timeout=10)
    session.login("alice", "alicepw")  # a live session must not keep anything alive
    started = time.monotonic()
    dovecot.stop()
    assert time.monotonic() - started < 10  # (a live session does not hold it up to its timeout)
    assert not dovecot.running and not _pid_alive(master)
    for port in (dovecot.imap_port, dovecot.imaps_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((dovecot.host, port), timeout=2).close()
    with pytest.raises(DovecotError):
        dovecot.deliver("alice", seed.spam())
    dovecot.stop()  # idempotent
    session.shutdown()

    dovecot.start()
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client) == 1


def test_start_takes_over_an_orphaned_instance_of_the_same_data_dir(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """A demo that crashed without stop() leaves Dovecot running; the next start() replaces it."""
    orphan_pid = dovecot._read_pid()
    assert orphan_pid is not None
    again = DovecotServer(dovecot.data_dir, {"alice": "alicepw"},
                          server_cert_files.cert_pem, server_cert_files.key_pem)
    try:
        again.start()
        assert not _pid_alive(orphan_pid)
        assert again.root == dovecot.root  # same mail, same external directory
        with imap_session(again, server_cert_files.client_context()) as client:
            assert exists(client) == 0
    finally:
        again.stop()


def test_refuses_a_dovecot_that_is_not_2_3(
    tmp_path: Path, server_cert_files: ServerCertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dovecot 2.4 would misread the generated 2.3 config: start() says so before trying."""
    monkeypatch.setattr("caliproxy.demo.dovecot.dovecot_version", lambda binary=None: "2.4.1")
    server = DovecotServer(tmp_path / "d", {"alice": "alicepw"},
                           server_cert_files.cert_pem, server_cert_files.key_pem)
    with pytest.raises(DovecotError, match=r"Dovecot 2\.4\.1 found.*2\.3"):
        server.start()


def test_every_seed_sample_survives_delivery(
    dovecot: DovecotServer, server_cert_files: ServerCertFiles
) -> None:
    """The demo's sample mail is valid enough for LMTP and comes back byte for byte."""
    samples = seed.samples()
    assert {s.level for s in samples} == {"public", "internal", "confidential", "secret"}
    for sample in samples:
        assert b"\n" not in sample.raw.replace(b"\r\n", b""), sample.name
        dovecot.deliver("alice", sample.raw, mailbox="Samples")
    with imap_session(dovecot, server_cert_files.client_context()) as client:
        assert exists(client, "Samples") == len(samples)
        for seq, sample in enumerate(samples, start=1):
            _, data = client.fetch(str(seq), "(BODY.PEEK[])")
            assert data[0][1] == sample.raw, sample.name
    by_name = {s.name: email.message_from_bytes(s.raw, policy=email.policy.default)
               for s in samples}
    assert by_name["pgp_mime"].get_content_type() == "multipart/encrypted"
    assert by_name["smime"].get_content_type() == "application/pkcs7-mime"
    assert "X-Caliproxy-Privacy" in by_name["spoofed_privacy_header"]
    assert len(seed.large_attachment()) > 200_000


def test_demo_certificates_serve_tls_for_localhost_and_127_0_0_1(
    dovecot_factory: DovecotFactory, tmp_path: Path
) -> None:
    """caliproxy.demo.certs makes a chain Dovecot serves and clients verify by name and by IP."""
    files = certs.write_demo_certs(tmp_path / "certs")
    assert files.server_key.stat().st_mode & 0o077 == 0
    server = dovecot_factory(cert_pem=files.server_cert, key_pem=files.server_key)
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    for name in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection((server.host, server.imaps_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.recv(64).startswith(b"* OK")
    # a second call keeps the files, so clients that trust the CA keep trusting it
    before = files.ca_cert.read_bytes()
    assert certs.write_demo_certs(tmp_path / "certs") == files
    assert files.ca_cert.read_bytes() == before
