"""Real Thunderbird, one profile: first through the untrusted listener, then through the trusted one.

The INBOX holds the sample mail of every level (public, internal, confidential, secret). A headless
Thunderbird whose account points at ``cafe`` (clearance internal) downloads INBOX for offline use:
its store must hold exactly the public and internal messages, each our header block followed by
Dovecot's bytes, and its summary exactly their UIDs. While it is connected a secret message and a
visible one arrive: the visible one is stored, the secret one is never heard of (not in the store,
the summary or anything the proxy sent, which Thunderbird's protocol log records).

Then Thunderbird is stopped and the same profile is pointed at ``trusted`` (clearance secret) by
its port alone, and started again. The messages hidden until now have UIDs below ones Thunderbird
already knows; it finds them because, without CONDSTORE, the first SELECT of a session is followed
by a full ``UID FETCH 1:* (FLAGS)`` whose answer Thunderbird compares with its summary, and it
fetches whatever UIDs it lacks. (With CONDSTORE it would ask only ``CHANGEDSINCE`` its stored
modification sequence, and old messages that merely became visible would never come.) So the store
must end up with every message, nothing lost or duplicated, and the protocol log must show that
CONDSTORE was never offered.

Switching by port works because Thunderbird keys what it keeps by host, not port: the offline
store and summaries live in ``ImapMail/<host>`` (``directory-rel``), the password in the login
store under ``imap://<host>``, the folder URIs are ``imap://user@host/INBOX``. ``user.js`` is read
after ``prefs.js`` at every start, so a new ``mail.server.server1.port`` there takes effect.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest

from caliproxy.demo.run import DEMO_POLICY
from caliproxy.demo.seed import samples
from caliproxy.privacy.header import HEADER_LENGTH, HEADER_NAME, parse_header
from tests.clients.thunderbird import (
    ThunderbirdResult,
    read_summary,
    sync_mailbox,
    thunderbird_available,
)
from tests.hiding.conftest import POLICY, USERS, HidingFactory, Secret, message, secret_message

pytestmark = [
    pytest.mark.client,
    pytest.mark.skipif(not thunderbird_available(),
                       reason="thunderbird is not installed (apt-get install thunderbird "
                              "libnss3-tools; see .ci/install-deps)"),
]

# Every sample gets the level it was written for (the demo's policy), and a Subject with SECRET
# makes a message secret (the hiding tests' rule), for the mail that arrives during the test.
EVERY_LEVEL_POLICY: dict[str, Any] = {**DEMO_POLICY, "rules": [*DEMO_POLICY["rules"], *POLICY["rules"]]}
VISIBLE_LEVELS = {"public", "internal"}  # the cafe listener's clearance is internal

# Lines Thunderbird's IMAP log (MOZ_LOG=IMAP:5) writes for what the server sent.
_SERVER_LINE = re.compile(rb"CreateNewLineFromSocket: ([^\r\n]*)")
_FETCH_UID = re.compile(rb"^\* \d+ FETCH \(.*?\bUID (\d+)", re.IGNORECASE)
_CAPABILITIES = re.compile(rb"\bCAPABILITY ([^\]\r\n]*)", re.IGNORECASE)
# Thunderbird's log of its own commands, e.g. "SendData: 5 select "INBOX""
_CLIENT_LINE = re.compile(rb"SendData: ([^\r\n]*)")


def _upstream_messages(port: int, ca_pem: Path) -> dict[int, bytes]:
    """UID -> message bytes, straight from Dovecot."""
    context = ssl.create_default_context(cafile=str(ca_pem))
    with imaplib.IMAP4_SSL("localhost", port, ssl_context=context) as imap:
        imap.login("alice", USERS["alice"])
        imap.select("INBOX", readonly=True)
        status, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert status == "OK"
    found = {}
    for item in data:
        if isinstance(item, tuple):
            uid = re.search(rb"\bUID (\d+)", item[0])
            assert uid is not None
            found[int(uid.group(1))] = item[1]
    return found


def _message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"]).strip()


def _stored(result: ThunderbirdResult) -> dict[int, bytes]:
    """UID -> stored message; every message in the store is one the summary knows, once."""
    assert result.uids is not None, result.notes
    assert len(set(result.uids)) == len(result.uids), f"stored twice: {result.uids}"
    return dict(zip(result.uids, result.messages))


def _assert_tagged_copies(stored: dict[int, bytes], upstream: dict[int, bytes]) -> dict[str, str]:
    """Each stored message is our header block then Dovecot's bytes; returns Message-ID -> level."""
    spoofed = HEADER_NAME.encode() + b":"
    levels = {}
    for uid, got in sorted(stored.items()):
        block, rest = got[:HEADER_LENGTH], got[HEADER_LENGTH:]
        assert block.startswith(spoofed) and block.endswith(b"\r\n"), uid
        # any forged header of our name in the original is renamed in place
        assert rest == upstream[uid].replace(spoofed, b"X-Caliproxy-Spoofed:"), uid
        levels[_message_id(rest)] = parse_header(block).level
    return levels


def _run_log(result: ThunderbirdResult) -> bytes:
    """This run's part of Thunderbird's log (the IMAP protocol log included)."""
    with open(result.log_path, "rb") as log:
        log.seek(result.log_offset)
        return log.read()


def _assert_no_condstore(result: ThunderbirdResult) -> None:
    text = _run_log(result)
    server, client = _SERVER_LINE.findall(text), _CLIENT_LINE.findall(text)
    offered = [m.group(1).upper().split() for line in server for m in [_CAPABILITIES.search(line)] if m]
    assert offered, "the log shows no capability list"
    for caps in offered:
        assert b"IMAP4REV1" in caps
        assert b"CONDSTORE" not in caps and b"QRESYNC" not in caps, caps
    for line in client:
        assert not re.search(rb"CONDSTORE|QRESYNC|CHANGEDSINCE|MODSEQ", line, re.IGNORECASE), line


def test_thunderbird_sees_the_visible_subset_then_everything_on_the_trusted_listener(
        hiding_factory: HidingFactory, tmp_path: Path) -> None:
    hiding = hiding_factory(policy=EVERY_LEVEL_POLICY)
    # hidden mail between visible mail, the first UID hidden: holes below UIDs Thunderbird knows
    visible = [s for s in samples() if s.level in VISIBLE_LEVELS]
    hidden = [s for s in samples() if s.level not in VISIBLE_LEVELS]
    assert len(visible) == 2 * len(hidden) and {s.level for s in hidden} == {"confidential", "secret"}
    for i, sample in enumerate(hidden):
        for delivered in (sample, *visible[2 * i : 2 * i + 2]):
            hiding.dovecot.deliver("alice", delivered.raw)
    upstream = _upstream_messages(hiding.dovecot.imaps_port, hiding.proxy.ca_pem)
    visible_ids = {_message_id(s.raw) for s in visible}
    assert len(visible_ids) == len(visible) and len(upstream) == len(samples())
    intended = {_message_id(s.raw): s.level for s in samples()}

    arrived: list[Secret] = []
    news = message("visible news while connected", "fresh", size=900)

    def deliver_meanwhile() -> int:
        # secret first: a visible message stored after it shows Thunderbird heard of both
        arrived.append(secret_message(size=1500))
        hiding.save("alice", arrived[0].raw)
        hiding.save("alice", news)
        return 1

    def thunderbird(listener: str, expect: int, **options: Any) -> ThunderbirdResult:
        # one work directory, so one profile: the second run reuses the first one's
        return sync_mailbox(tmp_path, host="localhost", port=hiding.proxy.ports[listener], security="tls",
                            user="alice", password=USERS["alice"], ca_pem=hiding.proxy.ca_pem,
                            expect_messages=expect, **options)

    cafe = thunderbird("cafe", len(visible_ids), after_sync=deliver_meanwhile)
    upstream = _upstream_messages(hiding.dovecot.imaps_port, hiding.proxy.ca_pem)
    intended[_message_id(arrived[0].raw)] = "secret"
    intended[_message_id(news)] = "internal"
    visible_ids.add(_message_id(news))
    visible_uids = {uid for uid, raw in upstream.items() if _message_id(raw) in visible_ids}
    assert len(visible_uids) == len(visible_ids) and min(upstream) not in visible_uids

    stored = _stored(cafe)
    assert set(stored) == visible_uids
    assert _assert_tagged_copies(stored, upstream) == {mid: intended[mid] for mid in visible_ids}
    assert set(read_summary(cafe.mbox_path.with_name("INBOX.msf"))) == visible_uids
    # nothing of the hidden messages reached Thunderbird: no UID in any FETCH the proxy sent (the
    # flags of every visible one were fetched), no byte of the new secret in its log or store
    log = _run_log(cafe)
    seen_uids = {int(m.group(1)) for line in _SERVER_LINE.findall(log) for m in [_FETCH_UID.search(line)] if m}
    assert seen_uids == visible_uids
    for marker in arrived[0].markers:
        assert marker not in log and marker not in cafe.mbox_path.read_bytes()
    _assert_no_condstore(cafe)

    # the same profile on the trusted listener: every message, the ones stored before unchanged
    trusted = thunderbird("trusted", len(upstream), reuse_profile=True)
    stored_now = _stored(trusted)
    assert set(stored_now) == set(upstream)
    assert {uid: stored_now[uid] for uid in stored} == stored
    assert _assert_tagged_copies(stored_now, upstream) == intended
    assert set(read_summary(trusted.mbox_path.with_name("INBOX.msf"))) == set(upstream)
    _assert_no_condstore(trusted)
