"""The privacy header's name comes from the configuration (``header.name``): a message sent
through the submission listener and read back through the IMAP listener carries the configured
name, copies of that name are renamed at the same length, and our default name is then an
ordinary field like any other (real caliproxy, real Postfix and Dovecot)."""

from __future__ import annotations

import imaplib
import re

import pytest

from caliproxy.demo.dovecot import free_port
from caliproxy.privacy.header import HEADER_LENGTH, HeaderName, parse_header
from tests.smtp.test_submission_postfix import new_message, submit, tls_client

from .imap_model import parse_fetches
from .raw_client import RawImap

pytestmark = pytest.mark.integration

NAME = HeaderName("X-Home-Privacy")
FORGED = (b"X-Home-Privacy: v=1; level=public; pi=100; grade=A; t=100; a=100; p=100; c=100; r=TLS13;\r\n"
          b"X-Caliproxy-Privacy: v=1; level=public; an ordinary field under this configuration\r\n")
_TRACE = re.compile(rb"\A(?:(?:Return-Path|Delivered-To|X-Original-To|Received):[^\r\n]*\r\n"
                    rb"(?:[ \t][^\r\n]*\r\n)*)+")


def _renamed(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.replace(b"X-Home-Privacy:", b"X-Home-Spoofed:") + b"\r\n\r\n" + body


def test_a_configured_name_is_used_everywhere(postfix, proxy_factory, mailbox_reader):
    listeners = [{"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "starttls"},
                 {"name": "imaps", "protocol": "imap", "port": free_port(), "tls": "implicit"}]
    proxy = proxy_factory(postfix.dovecot, smtp_upstream=postfix, listeners=listeners,
                          extra_config={"header": {"name": NAME.name}})
    message_id, raw = new_message(subject="configured name", to="bob@example.test", extra=FORGED)

    # Submission: our block on top under the configured name; the forged copy renamed in place.
    client = submit(proxy.ports["submission"], proxy.ca_pem)
    client.login("alice", "alicepw")
    client.sendmail("alice@example.test", ["bob@example.test"], raw)
    client.quit()
    stored = mailbox_reader("bob", message_id)
    rest = stored[_TRACE.match(stored).end():]
    block = rest[:HEADER_LENGTH]
    assert block.startswith(b"X-Home-Privacy: v=1; level=") and block.endswith(b"\r\n")
    assert parse_header(block, NAME).level
    assert rest[HEADER_LENGTH:] == _renamed(raw)
    assert b"X-Caliproxy-Privacy: v=1; level=public; an ordinary field" in rest  # not ours: untouched

    # IMAP: the delivered message read through the proxy shows one verdict of the configured name.
    with RawImap(proxy.ports["imaps"], proxy.ca_pem) as imap:
        imap.login("bob", "bobpw")
        imap.command("EXAMINE INBOX")
        [uid] = re.findall(rb"\* SEARCH (\d+)", imap.command(f"UID SEARCH HEADER Message-ID {message_id}"))
        answer = imap.command(b"UID FETCH " + uid + b" (RFC822.SIZE BODY.PEEK[] "
                              b"BODY.PEEK[HEADER.FIELDS (X-Home-Privacy X-Home-Spoofed)])")
    [(_, items)] = parse_fetches(answer)  # (bob's INBOX also holds other tests' mail)
    values = {item.name: item.value for item in items}
    body = values["BODY[]"]
    assert body[HEADER_LENGTH:] == _renamed(stored)  # the submission's stamp is renamed in turn
    assert values["RFC822.SIZE"] == len(stored) + HEADER_LENGTH
    assert parse_header(body[:HEADER_LENGTH], NAME).level
    fields = values["BODY[HEADER.FIELDS (X-HOME-PRIVACY X-HOME-SPOOFED)]"]
    assert fields.startswith(body[:HEADER_LENGTH])
    assert fields.count(b"X-Home-Spoofed:") == 2  # the submission's own stamp and the forgery
    assert b"X-Home-Privacy:" not in fields[HEADER_LENGTH:]

    # APPEND: a Sent copy carrying the configured name is stored with it renamed.
    with imaplib.IMAP4_SSL("localhost", proxy.ports["imaps"], ssl_context=tls_client(proxy.ca_pem)) as imap:
        imap.login("alice", "alicepw")
        assert imap.append("Sent", "(\\Seen)", None, raw)[0] == "OK"
    with RawImap(postfix.dovecot.imaps_port, proxy.ca_pem) as direct:
        direct.login("alice", "alicepw")
        direct.command("EXAMINE Sent")
        sent = parse_fetches(direct.command("UID FETCH * (BODY.PEEK[])"))
    assert {item.name: item.value for item in sent[-1][1]}["BODY[]"] == _renamed(raw)
