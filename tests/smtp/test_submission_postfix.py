"""caliproxy as a real process in front of a real Postfix submission server (which authenticates
against Dovecot and delivers example.test mail into Dovecot over LMTP), driven by real clients:
swaks, msmtp, Python's smtplib and a replay of Thunderbird's own dialogue.

What must hold: a message lands in the recipient's mailbox byte for byte as sent, under our
privacy header and the servers' trace fields; logins are checked by the upstream and passed through;
each recipient gets the upstream's own reply; EHLO offers only what is relayed end to end; nothing
happens before TLS on a STARTTLS listener; the logs carry no credentials, addresses or content.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from caliproxy.demo.dovecot import free_port
from caliproxy.privacy.header import HEADER_LENGTH, HEADER_NAME, parse_header
from tests.fixtures.upstreams import require_binary

pytestmark = pytest.mark.integration

UPSTREAM_SIZE = 52428800  # Postfix's message_size_limit in the harness
ADVERTISED_SIZE = UPSTREAM_SIZE - HEADER_LENGTH

# Fields Postfix and Dovecot's LMTP put above what they received.
_TRACE = re.compile(rb"\A(?:(?:Return-Path|Delivered-To|X-Original-To|Received):[^\r\n]*\r\n"
                    rb"(?:[ \t][^\r\n]*\r\n)*)+")


def start_proxy(proxy_factory, postfix, *, upstream_tls="starttls", extra_listeners=()):
    """caliproxy with a STARTTLS listener ``submission`` and an implicit-TLS listener ``smtps``."""
    listeners = [
        {"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "starttls"},
        {"name": "smtps", "protocol": "smtp", "port": free_port(), "tls": "implicit"},
        *extra_listeners,
    ]
    return proxy_factory(postfix.dovecot, smtp_upstream=postfix, smtp_upstream_tls=upstream_tls,
                         listeners=listeners)


def new_message(subject="hello", body=b"Just a test.\r\n", sender="alice@example.test",
                to="bob@example.test", extra=b""):
    message_id = f"<{uuid.uuid4().hex}@example.test>"
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
           f"Message-ID: {message_id}\r\n").encode() + extra + b"\r\n" + body
    return message_id, raw


def assert_delivered_as_sent(stored: bytes, sent: bytes) -> str:
    """``stored`` is trace fields, then our privacy header, then exactly ``sent``; returns the level."""
    trace = _TRACE.match(stored)
    assert trace is not None, stored[:300]
    rest = stored[trace.end():]
    header, message = rest[:HEADER_LENGTH], rest[HEADER_LENGTH:]
    assert header.startswith(HEADER_NAME.encode() + b": "), rest[:300]
    assert message == sent
    return parse_header(header).level


def tls_client(ca_pem: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_pem))


def submit(port, ca_pem, *, implicit=False):
    """An smtplib client through STARTTLS (or implicit TLS), not yet logged in."""
    if implicit:
        client = smtplib.SMTP_SSL("localhost", port, context=tls_client(ca_pem), timeout=30)
    else:
        client = smtplib.SMTP("localhost", port, timeout=30)
        client.starttls(context=tls_client(ca_pem))
    client.ehlo()
    return client


# -- real clients ---------------------------------------------------------------------------------


def test_swaks_over_starttls_and_implicit_tls_delivers_the_message_byte_identical(
        postfix, proxy_factory, mailbox_reader, tmp_path):
    require_binary("swaks")
    proxy = start_proxy(proxy_factory, postfix)
    runs = [("submission", "--tls", "PLAIN", "alice", "alicepw", "bob"),
            ("smtps", "--tlsc", "LOGIN", "bob", "bobpw", "carol")]
    for listener, tls_flag, mechanism, user, password, recipient in runs:
        message_id, raw = new_message(subject=f"swaks {listener}", sender=f"{user}@example.test",
                                      to=f"{recipient}@example.test",
                                      body=b"Line one\r\n.starts with a dot\r\n\r\nend\r\n")
        data = tmp_path / f"{listener}.eml"
        data.write_bytes(raw[:-2])  # swaks ends the data with CRLF . CRLF itself
        result = subprocess.run(
            ["swaks", "--server", f"localhost:{proxy.ports[listener]}", tls_flag, "--tls-verify",
             "--tls-ca-path", str(proxy.ca_pem), "--auth", mechanism, "--auth-user", user,
             "--auth-password", password, "--from", f"{user}@example.test",
             "--to", f"{recipient}@example.test", "--data", f"@{data}", "--timeout", "30"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert_delivered_as_sent(mailbox_reader(recipient, message_id), raw)


def test_msmtp_over_starttls_and_implicit_tls_with_an_implicit_tls_upstream(
        postfix, proxy_factory, mailbox_reader, tmp_path):
    require_binary("msmtp")
    proxy = start_proxy(proxy_factory, postfix, upstream_tls="implicit")
    rc = tmp_path / "msmtprc"
    rc.write_text(f"""defaults
tls on
tls_trust_file {proxy.ca_pem}
host localhost
account starttls
port {proxy.ports['submission']}
tls_starttls on
auth plain
user alice
password alicepw
from alice@example.test
account smtps
port {proxy.ports['smtps']}
tls_starttls off
auth login
user carol
password carolpw
from carol@example.test
""")
    rc.chmod(0o600)
    for account, recipient in (("starttls", "carol"), ("smtps", "alice")):
        message_id, raw = new_message(subject=f"msmtp {account}", to=f"{recipient}@example.test",
                                      body=b"Bonjour \xc3\xa0 tous\r\n")
        result = subprocess.run(["msmtp", "-C", str(rc), "-a", account, f"{recipient}@example.test"],
                                input=raw, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert_delivered_as_sent(mailbox_reader(recipient, message_id), raw)


def test_thunderbird_dialogue_replayed_byte_for_byte(postfix, proxy_factory, mailbox_reader):
    """The SMTP dialogue Thunderbird had with a test server (reference transcript smtp-send.log),
    replayed against caliproxy: same commands, same reply classes and enhanced codes."""
    proxy = start_proxy(proxy_factory, postfix)
    message_id, raw = new_message(subject="From Thunderbird", to="bob@example.test",
                                  extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8; "
                                        b"format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n",
                                  body=b"Gr\xc3\xbc\xc3\x9fe\r\n")
    raw += b"x" * (411 - len(raw) - 2) + b"\r\n"  # the transcript's message is 411 bytes
    assert len(raw) == 411
    context = tls_client(proxy.ca_pem)
    with socket.create_connection(("127.0.0.1", proxy.ports["smtps"]), timeout=30) as plain, \
            context.wrap_socket(plain, server_hostname="localhost") as sock:
        reader = sock.makefile("rb")

        def reply() -> list[bytes]:
            lines = []
            while True:
                line = reader.readline()
                assert line.endswith(b"\r\n"), lines + [line]
                lines.append(line[:-2])
                if line[3:4] == b" ":
                    return lines

        def say(command: bytes) -> list[bytes]:
            sock.sendall(command + b"\r\n")
            return reply()

        assert reply()[0].startswith(b"220 ")
        ehlo = say(b"EHLO [127.0.0.1]")
        assert [line[4:] for line in ehlo[1:]] == [
            b"PIPELINING", f"SIZE {ADVERTISED_SIZE}".encode(), b"8BITMIME", b"SMTPUTF8",
            b"ENHANCEDSTATUSCODES", b"AUTH PLAIN LOGIN"]
        assert say(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0alicepw"))[0].startswith(b"235 2.7.0")
        assert say(b"MAIL FROM:<alice@example.test> BODY=8BITMIME SIZE=411")[0].startswith(b"250 2.1.0")
        assert say(b"RCPT TO:<bob@example.test>")[0].startswith(b"250 2.1.5")
        assert say(b"DATA")[0].startswith(b"354 ")
        sock.sendall(raw + b".\r\n")
        assert reply()[0].startswith(b"250 2.0.0")
        assert say(b"QUIT")[0].startswith(b"221 2.0.0")
    assert_delivered_as_sent(mailbox_reader("bob", message_id), raw)


# -- AUTH pass-through ----------------------------------------------------------------------------


def test_auth_plain_with_and_without_initial_response_and_login_are_checked_upstream(
        postfix, proxy_factory):
    proxy = start_proxy(proxy_factory, postfix)
    port = proxy.ports["submission"]
    logins = [("PLAIN", True), ("PLAIN", False), ("LOGIN", False)]
    for mechanism, initial_response in logins:
        for password, code in (("alicepw", 235), ("wrong-pw", 535)):
            client = submit(port, proxy.ca_pem)
            client.user, client.password = "alice", password
            method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
            try:
                result = client.auth(mechanism, method, initial_response_ok=initial_response)
                assert result[0] == code == 235
            except smtplib.SMTPAuthenticationError as exc:
                assert (exc.smtp_code, code) == (535, 535), (mechanism, initial_response, exc)
                assert exc.smtp_error.startswith(b"5.7.8")  # the upstream's own meaning
            finally:
                client.close()


def test_wrong_password_gives_535_and_nothing_can_be_sent(postfix, proxy_factory):
    proxy = start_proxy(proxy_factory, postfix)
    client = submit(proxy.ports["smtps"], proxy.ca_pem, implicit=True)
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        client.login("bob", "not-bobs-password")
    assert refused.value.smtp_code == 535
    code, _ = client.mail("bob@example.test")
    assert code == 530  # authentication required: never relayed unauthenticated
    client.login("bob", "bobpw")  # a second try on the same connection works
    assert client.mail("bob@example.test")[0] == 250
    client.quit()
    if have_swaks():
        result = subprocess.run(
            ["swaks", "--server", f"localhost:{proxy.ports['submission']}", "--tls", "--tls-verify",
             "--tls-ca-path", str(proxy.ca_pem), "--auth", "LOGIN", "--auth-user", "alice",
             "--auth-password", "bad", "--to", "bob@example.test", "--silent", "2"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 28, result.stdout + result.stderr  # swaks: AUTH failed
        assert "535 5.7.8" in result.stdout + result.stderr


def have_swaks() -> bool:
    from tests.fixtures.upstreams import have_binary

    return have_binary("swaks")


# -- relay semantics ------------------------------------------------------------------------------


def test_each_recipient_gets_the_upstreams_own_reply(postfix, proxy_factory, mailbox_reader):
    proxy = start_proxy(proxy_factory, postfix)
    client = submit(proxy.ports["submission"], proxy.ca_pem)
    client.login("alice", "alicepw")
    message_id, raw = new_message(subject="several recipients")
    recipients = ["bob@example.test", "nobody@example.test", "later@example.test", "carol@example.test"]
    refused = client.sendmail("alice@example.test", recipients, raw)
    assert refused["nobody@example.test"][0] == 550
    assert refused["nobody@example.test"][1].startswith(b"5.1.1")
    assert refused["later@example.test"][0] == 450
    assert set(refused) == {"nobody@example.test", "later@example.test"}
    # every recipient refused: DATA is not reached, and nothing is sent
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("alice@example.test", ["nobody@example.test"], raw)
    client.quit()
    for user in ("bob", "carol"):
        assert_delivered_as_sent(mailbox_reader(user, message_id), raw)


def test_ehlo_offers_only_what_is_relayed_end_to_end(postfix, proxy_factory):
    proxy = start_proxy(proxy_factory, postfix)
    client = smtplib.SMTP("localhost", proxy.ports["submission"], timeout=30)
    code, _ = client.ehlo()
    assert code == 250
    before = client.esmtp_features
    client.starttls(context=tls_client(proxy.ca_pem))
    client.ehlo()
    after = client.esmtp_features
    handled = {"pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes"}
    assert set(before) == handled | {"starttls"}  # no AUTH before TLS
    assert set(after) == handled | {"auth"}
    assert after["size"] == str(ADVERTISED_SIZE)  # the upstream's limit minus our header
    assert after["auth"].split() == ["PLAIN", "LOGIN"]
    # Postfix offers CHUNKING, DSN, VRFY and ETRN; none of them is passed on or accepted
    assert client.docmd("BDAT", "10 LAST")[0] == 500
    client.login("alice", "alicepw")
    code, _ = client.docmd("MAIL FROM:<alice@example.test> RET=HDRS")
    assert code == 555
    client.quit()


def test_no_auth_and_no_mail_before_tls_on_a_starttls_listener_unless_allowed(postfix, proxy_factory):
    plain = {"name": "plain", "protocol": "smtp", "port": free_port(), "tls": "none",
             "allow_plaintext_login": True}
    proxy = start_proxy(proxy_factory, postfix, extra_listeners=[plain])
    client = smtplib.SMTP("localhost", proxy.ports["submission"], timeout=30)
    client.ehlo()
    for command in ("AUTH PLAIN " + base64.b64encode(b"\0alice\0alicepw").decode(),
                    "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>", "DATA"):
        code, text = client.docmd(command)
        assert code == 530, (command, code, text)
    client.close()
    # a listener that explicitly allows plaintext logins accepts them (and still requires AUTH)
    client = smtplib.SMTP("localhost", proxy.ports["plain"], timeout=30)
    client.ehlo()
    assert "starttls" not in client.esmtp_features
    assert client.mail("alice@example.test")[0] == 530
    client.login("alice", "alicepw")
    assert client.mail("alice@example.test")[0] == 250
    client.quit()


def test_declared_size_over_the_limit_is_refused_with_552_before_data(postfix, proxy_factory):
    proxy = start_proxy(proxy_factory, postfix)
    client = submit(proxy.ports["smtps"], proxy.ca_pem, implicit=True)
    client.login("alice", "alicepw")
    code, text = client.docmd(f"MAIL FROM:<alice@example.test> SIZE={ADVERTISED_SIZE + 1}")
    assert code == 552 and text.startswith(b"5.3.4")
    # exactly at the limit: accepted by us and by Postfix, which sees SIZE plus our header
    code, _ = client.docmd(f"MAIL FROM:<alice@example.test> SIZE={ADVERTISED_SIZE}")
    assert code == 250
    client.rset()
    client.quit()


def test_8bit_body_and_smtputf8_addresses_relay_intact(postfix, proxy_factory):
    proxy = start_proxy(proxy_factory, postfix)
    sender, recipient = "jörg@example.test", "zoë@exämple.net"  # catch-all Maildir: any domain
    message_id, raw = new_message(subject="Grüße", sender=sender, to=recipient,
                                  extra=b"Content-Type: text/plain; charset=utf-8\r\n"
                                        b"Content-Transfer-Encoding: 8bit\r\n",
                                  body="Grüße aus Köln – ça va ? 日本語\r\n".encode())
    client = submit(proxy.ports["submission"], proxy.ca_pem)
    client.login("alice", "alicepw")
    assert client.sendmail(sender, [recipient], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    client.quit()
    stored = _wait_in_sink(postfix, message_id)
    assert stored.replace(b"\n", b"\r\n").endswith(raw)
    assert f"Delivered-To: {recipient}".encode() in stored


def test_a_25_mb_message_relays_intact(postfix, proxy_factory, mailbox_reader):
    proxy = start_proxy(proxy_factory, postfix)
    attachment = base64.encodebytes(os.urandom(25 * 1024 * 1024 * 3 // 4)).replace(b"\n", b"\r\n")
    message_id, raw = new_message(subject="big", body=b"see attachment\r\n" + attachment)
    assert len(raw) > 25 * 1024 * 1024
    client = submit(proxy.ports["smtps"], proxy.ca_pem, implicit=True)
    client.login("alice", "alicepw")
    started = time.monotonic()
    assert client.sendmail("alice@example.test", ["bob@example.test"], raw) == {}
    relayed = time.monotonic() - started
    client.quit()
    stored = mailbox_reader("bob", message_id, timeout=60)
    trace = _TRACE.match(stored)
    assert trace is not None
    body = stored[trace.end() + HEADER_LENGTH:]
    assert hashlib.sha256(body).digest() == hashlib.sha256(raw).digest()
    assert relayed < 20, f"relaying 25 MB took {relayed:.1f} s"


def _wait_in_sink(postfix, message_id: str, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stored in postfix.sink_messages():
            if message_id.encode() in stored:
                return stored
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never reached the catch-all Maildir")


# -- failures before any message --------------------------------------------------------------------


def test_an_unreachable_or_unverifiable_upstream_gives_421_at_ehlo(postfix, proxy_factory, server_cert_files):
    listeners = [{"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "implicit"}]
    closed = socket.socket()  # bound, never listening: connections to it are refused
    closed.bind(("127.0.0.1", 0))
    down = {"host": "127.0.0.1", "port": closed.getsockname()[1], "tls": "implicit",
            "ca_file": str(server_cert_files.ca_pem), "connect_timeout": 5}
    impostor = {"host": "127.0.0.1", "port": postfix.smtps_port, "tls": "implicit",
                "ca_file": str(server_cert_files.ca_pem), "server_name": "smtp.elsewhere.test"}
    for upstream in (down, impostor):
        proxy = proxy_factory(postfix.dovecot, smtp_upstream=upstream, listeners=listeners)
        client = smtplib.SMTP_SSL("localhost", listeners[0]["port"], context=tls_client(proxy.ca_pem),
                                  timeout=30)
        code, text = client.ehlo()
        assert code == 421 and text.startswith(b"4.4.1"), (upstream, code, text)
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError)):
            client.noop()  # the proxy closed the connection after its 421
        proxy.stop()
        reason = "connection refused" if upstream is down else "certificate does not match"
        assert f"unavailable for 127.0.0.1 on submission: upstream {reason}" in proxy.log()
    closed.close()


# -- logs -----------------------------------------------------------------------------------------


def test_logs_hold_no_credentials_addresses_or_message_content(postfix, proxy_factory, mailbox_reader):
    proxy = start_proxy(proxy_factory, postfix)  # the fixture runs it at log level debug
    secret_body = f"confidential-body-{uuid.uuid4().hex}".encode()
    message_id, raw = new_message(subject="Secret subject line", body=secret_body + b"\r\n",
                                  to="carol@example.test")
    client = submit(proxy.ports["submission"], proxy.ca_pem)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("alice", "wrong-secret-pw")
    client.login("alice", "alicepw")
    client.sendmail("alice@example.test", ["carol@example.test"], raw)
    client.quit()
    mailbox_reader("carol", message_id)
    proxy.stop()
    log = proxy.log()
    assert "authenticated as 'alice'" in log  # the log does say who and what happened
    assert "1 recipient(s)" in log
    forbidden = ["alicepw", "wrong-secret-pw", base64.b64encode(b"\0alice\0alicepw").decode(),
                 base64.b64encode(b"alicepw").decode(), secret_body.decode(), "Secret subject",
                 "carol@example.test", "alice@example.test", message_id]
    leaked = [item for item in forbidden if item in log]
    assert not leaked, f"found in the log: {leaked}"


# -- the same verdict on both sides ---------------------------------------------------------------


def test_the_sent_copy_read_through_the_imap_side_shows_the_verdict_stamped_at_submission(
        postfix, proxy_factory, mailbox_reader):
    """Thunderbird sends through the SMTP listener, then APPENDs its copy to Sent through the IMAP
    listener: reading that copy back through caliproxy shows the very header the recipient got."""
    import imaplib

    listeners = [{"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "starttls"},
                 {"name": "imaps", "protocol": "imap", "port": free_port(), "tls": "implicit"}]
    policy = {"rules": [{"name": "hr", "level": "secret",
                         "match": {"header": {"name": "Subject", "regex": "(?i)salary"}}}]}
    proxy = proxy_factory(postfix.dovecot, smtp_upstream=postfix, listeners=listeners,
                          extra_config={"policy": policy})
    message_id, raw = new_message(subject="Salary review 2027", to="bob@example.test")
    client = submit(proxy.ports["submission"], proxy.ca_pem)
    client.login("alice", "alicepw")
    client.sendmail("alice@example.test", ["bob@example.test"], raw)
    client.quit()
    stored = mailbox_reader("bob", message_id)
    assert assert_delivered_as_sent(stored, raw) == "secret"
    stamped = stored[_TRACE.match(stored).end():][:HEADER_LENGTH]

    with imaplib.IMAP4_SSL("localhost", proxy.ports["imaps"], ssl_context=tls_client(proxy.ca_pem)) as imap:
        imap.login("alice", "alicepw")
        assert imap.append("Sent", "(\\Seen)", None, raw)[0] == "OK"
        imap.select("Sent", readonly=True)
        _, found = imap.uid("SEARCH", "HEADER", "Message-ID", message_id)
        [uid] = found[0].split()
        _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)])")
    shown = parts[0][1]
    assert parse_header(shown).level == "secret"
    assert shown.rstrip(b"\r\n") == stamped.rstrip(b"\r\n")


def test_a_reload_gives_new_submissions_the_new_policy(postfix, proxy_factory, mailbox_reader):
    """SIGHUP: the next message is judged by the reloaded policy (the IMAP side uses it too, so
    the level stamped at submission and the one shown for the Sent copy stay the same)."""
    import signal

    from tests.ops.test_operations import rewrite_config, wait_for

    proxy = start_proxy(proxy_factory, postfix)
    levels = []
    for _ in range(2):
        message_id, raw = new_message(subject="Quarterly numbers", to="bob@example.test")
        client = submit(proxy.ports["submission"], proxy.ca_pem)
        client.login("alice", "alicepw")
        client.sendmail("alice@example.test", ["bob@example.test"], raw)
        client.quit()
        levels.append(assert_delivered_as_sent(mailbox_reader("bob", message_id), raw))
        if len(levels) == 1:
            rewrite_config(proxy, lambda c: c.update(policy={"rules": [
                {"name": "numbers", "level": "secret",
                 "match": {"header": {"name": "Subject", "regex": "(?i)quarterly"}}}]}))
            proxy.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in proxy.log())
    assert levels[0] != "secret" and levels[1] == "secret"


def test_metrics_count_submissions_logins_and_connections(postfix, proxy_factory, mailbox_reader):
    """The Prometheus endpoint counts the SMTP side too, with no address or account in a label."""
    import urllib.request

    from tests.ops.test_operations import wait_for

    metrics_port = free_port()
    proxy = proxy_factory(postfix.dovecot, smtp_upstream=postfix, listeners=[
        {"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "starttls"}],
        extra_config={"metrics": {"address": "127.0.0.1", "port": metrics_port}})

    def scrape() -> str:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    client = submit(proxy.ports["submission"], proxy.ca_pem)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("alice", "wrong")
    # (the fixture's readiness probe was a connection too: counted, and gone at once)
    wait_for(lambda: 'caliproxy_connections_active{listener="submission"} 1.0' in scrape())
    client.login("alice", "alicepw")
    message_id, raw = new_message(subject="counted", to="bob@example.test")
    client.sendmail("alice@example.test", ["bob@example.test"], raw)
    client.quit()
    level = assert_delivered_as_sent(mailbox_reader("bob", message_id), raw)
    wait_for(lambda: 'caliproxy_connections_active{listener="submission"} 0.0' in scrape())
    text = scrape()
    for line in ('caliproxy_connections_total{listener="submission"} 2.0',  # (probe, client)
                 'caliproxy_auth_failures_total{protocol="smtp"} 2.0',  # (smtplib tries PLAIN, LOGIN)
                 f'caliproxy_smtp_messages_total{{level="{level}",outcome="accepted"}} 1.0',
                 "caliproxy_smtp_upstream_seconds_count 1.0"):
        assert line in text, line
    assert "alice" not in text and "example.test" not in text
