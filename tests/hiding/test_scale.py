"""A mailbox where visible and secret mail alternate: the untrusted view must still be usable.

Every UID set the proxy sends upstream lists the visible messages exactly (so nothing is ever done
to a hidden one); when visible and hidden mail alternate, that list outgrows what Dovecot takes on
one line (``imap_max_line_length``, 64 KiB). The proxy then sends the command in pieces (FETCH,
STORE, COPY, EXPUNGE, CLOSE) or widens a search key's set over hidden messages only (SEARCH).
What is left or changed is checked on a connection straight to Dovecot.
"""

from __future__ import annotations

import re

import pytest

from caliproxy.imap.grammar import parse_sequence_set
from caliproxy.imap.view import format_sequence_set
from tests.hiding.conftest import Hiding
from tests.hiding.wire import WireClient

pytestmark = pytest.mark.integration

MESSAGES = 30_000  # UIDs 1..30000, the even ones secret: the visible set is ~84 KB
VISIBLE = list(range(1, MESSAGES + 1, 2))
HIDDEN = list(range(2, MESSAGES + 1, 2))
DOVECOT_MAX_LINE = 64 * 1024


def _uids(text: bytes) -> list[int]:
    return [uid for low, high in parse_sequence_set(text.decode()) for uid in range(low or 0, (high or 0) + 1)]


def _search(direct: WireClient, keys: str) -> list[int]:
    """A search on the straight connection, after a NOOP (Dovecot's session sees other sessions'
    changes when a command ends, so the search alone would answer from the state before them)."""
    assert direct.command("NOOP").ok
    return direct.command("UID SEARCH " + keys).search()


def test_a_mailbox_where_hidden_and_visible_mail_alternate(hiding: Hiding) -> None:
    # The point of the test: the exact visible set does not fit one Dovecot command line.
    assert len(format_sequence_set(VISIBLE)) > DOVECOT_MAX_LINE
    hiding.dovecot.bulk_load("alice", [
        (f"Subject: {'SECRET' if index % 2 else 'hello'} {index}\r\n"
         f"Message-ID: <{index}@scale.test>\r\n\r\nbody\r\n").encode()
        for index in range(MESSAGES)
    ])
    client = hiding.cafe()
    direct = hiding.direct("alice")
    assert direct.command("SELECT INBOX").ok
    client.sock.settimeout(120)  # (the SELECT judges every header before it answers)
    assert b"* %d EXISTS" % len(VISIBLE) in client.command("SELECT INBOX").all
    client.sock.settimeout(20)

    # FETCH, by UID (Thunderbird's and mbsync's first sync) and by sequence number
    reply = client.command("UID FETCH 1:* (UID FLAGS)")
    assert reply.ok, reply.tagged
    assert reply.fetch_uids() == VISIBLE
    reply = client.command("FETCH 1:* (UID)")
    assert reply.ok, reply.tagged
    assert reply.fetch_uids() == VISIBLE
    assert [int(line.split()[1]) for line in reply.lines(b"FETCH")] == list(range(1, len(VISIBLE) + 1))

    # STORE touches the visible messages only
    assert client.command("UID STORE 1:* +FLAGS.SILENT (\\Seen)").ok
    assert _search(direct, "SEEN") == VISIBLE

    # SEARCH: the set widened upstream, the answer exactly the visible messages
    assert client.command("UID SEARCH UID 1:*").search() == VISIBLE
    assert client.command("UID SEARCH NOT UID 1:*").search() == []
    assert client.command("SEARCH 1:* SEEN").search() == list(range(1, len(VISIBLE) + 1))

    # COPY: exactly the visible messages arrive, with one COPYUID naming them
    assert client.command("CREATE Archive").ok
    reply = client.command("COPY 1:* Archive")
    assert reply.ok, reply.tagged
    copyuid = re.search(rb"\[COPYUID \d+ ([\d:,]+) ([\d:,]+)\]", reply.tagged)
    assert copyuid is not None, reply.tagged
    assert _uids(copyuid.group(1)) == VISIBLE
    assert _uids(copyuid.group(2)) == list(range(1, len(VISIBLE) + 1))
    archive = hiding.direct("alice")
    assert b"* %d EXISTS" % len(VISIBLE) in archive.command("EXAMINE Archive").all
    assert archive.command("SEARCH SUBJECT SECRET").search() == []

    # UID EXPUNGE and CLOSE remove the visible messages only, though every message is \Deleted
    assert direct.command("UID STORE 1:* +FLAGS.SILENT (\\Deleted)").ok
    reply = client.command("UID EXPUNGE 1:12000")
    assert reply.ok, reply.tagged
    assert len(reply.lines(b"EXPUNGE")) == 6000
    assert _search(direct, "ALL") == sorted(HIDDEN + VISIBLE[6000:])
    assert client.command("CLOSE").ok
    assert _search(direct, "ALL") == HIDDEN
    assert _search(direct, "NOT SUBJECT SECRET") == []

    assert b"SECRET" not in bytes(client.received)
