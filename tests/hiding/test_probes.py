"""A hostile client with a valid login on the untrusted listener tries every path to secret mail.

It knows the policy, guesses UIDs, searches for words it suspects, counts, acts on UIDs it cannot
see, idles while secret mail arrives and changes, smuggles commands in literals and uses
extensions it was not offered. Every assertion is on the bytes it received: no marker of a secret
message's subject, body or Message-ID, no secret message's size, UID or keyword, no count that
includes one.

``alice``'s INBOX: visible mail at UIDs 1, 3, 5, 7 and secret mail at 2, 4, 6, 8 (the last
message is secret); the secret messages are large and carry the keyword ``$Payroll``. ``Private``
holds one secret message and nothing else.
"""

from __future__ import annotations

import re

import pytest

from tests.hiding.conftest import Hiding, Secret, message, secret_message
from tests.hiding.wire import IDLE_KEEPALIVE, Reply, WireClient

pytestmark = pytest.mark.integration

VISIBLE = [1, 3, 5, 7]
HIDDEN = [2, 4, 6, 8]
HEADER_LENGTH = 256  # our privacy header, added to every size the cafe listener reports


class Mailbox:
    """The seeded account and what must never be seen of it."""

    def __init__(self, hiding: Hiding) -> None:
        self.hiding = hiding
        self.secrets: list[Secret] = []
        for uid in range(1, 9):
            if uid in VISIBLE:
                hiding.save("alice", message(f"visible {uid}", f"hello {uid}"))
            else:
                secret = secret_message(size=40_000 + 1_111 * uid)
                secret.uid = uid
                self.secrets.append(secret)
                hiding.save("alice", secret.raw)
        private = secret_message(size=61_234)
        self.secrets.append(private)
        hiding.save("alice", private.raw, "Private")
        trusted = hiding.trusted()
        assert trusted.command("SELECT INBOX").ok
        assert trusted.command("UID STORE 2:8 +FLAGS ($Payroll)").ok  # visible ones refuse nothing
        assert trusted.command("UID STORE 1:7 -FLAGS ($Payroll)").ok  # ... so take it back
        assert trusted.command("UID STORE 8 +FLAGS ($Payroll)").ok
        trusted.command("LOGOUT")

    def sizes(self) -> set[int]:
        found = set()
        for secret in self.secrets:
            body = secret.raw.split(b"\r\n\r\n", 1)[1]
            found |= {len(secret.raw), len(secret.raw) + HEADER_LENGTH, len(body)}
        return found

    def check(self, client: WireClient) -> None:
        """Nothing of the secret mail in anything ``client`` received."""
        data = bytes(client.received)
        for secret in self.secrets:
            for marker in secret.markers:
                assert marker not in data, f"{marker!r} reached the untrusted client"
        for size in self.sizes():
            assert not re.search(rb"(?<![\d.])%d(?![\d.])" % size, data), f"size {size} leaked"
        for word in (b"$Payroll", b"$Divorce", b"HIGHESTMODSEQ", b"MODSEQ", b"* ESEARCH"):
            assert word not in data, f"{word!r} reached the untrusted client"
        uids = {int(n) for n in re.findall(rb"\bUID (\d+)", data)}
        assert not uids & set(HIDDEN), f"hidden UIDs {uids & set(HIDDEN)} in FETCH data"
        for match in re.finditer(rb"\[COPYUID \d+ ([\d:,]+) ", data):
            assert not _expand(match.group(1)) & set(HIDDEN), match.group(0)
        for count in re.findall(rb"\* (\d+) EXISTS", data):
            assert int(count) <= len(VISIBLE), f"EXISTS {count!r} counts hidden mail"


def _expand(text: bytes) -> set[int]:
    out: set[int] = set()
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        out.update(range(int(low), int(high or low) + 1))
    return out


def _uid_search(reply: Reply) -> list[int]:
    assert reply.ok, reply
    return reply.search()


@pytest.fixture
def mailbox(hiding: Hiding) -> Mailbox:
    return Mailbox(hiding)


@pytest.fixture
def hostile(mailbox: Mailbox) -> WireClient:
    client = mailbox.hiding.cafe()
    select = client.command("SELECT INBOX")
    assert b"* 4 EXISTS" in select.all and b"UIDNEXT 9" in select.all
    return client


def test_guessing_uids_and_ranges(mailbox: Mailbox, hostile: WireClient) -> None:
    items = "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE BODY.PEEK[])"
    for uid in range(12):
        reply = hostile.command(f"UID FETCH {uid} {items}")
        assert reply.fetch_uids() == ([uid] if uid in VISIBLE else [])
    expectations = {
        f"UID FETCH 1:* {items}": VISIBLE,
        "UID FETCH * (UID)": [7],
        "UID FETCH 8:* (UID)": [7],
        "UID FETCH 2:2 (UID RFC822.SIZE)": [],
        "UID FETCH 4294967295:* (UID)": [7],
        "UID FETCH 6,2,8,4 (UID BODY.PEEK[HEADER])": [],
        "UID FETCH 2:4,6:8 (UID)": [3, 7],
        f"FETCH 1:* {items}": VISIBLE,
        "FETCH * (UID RFC822.SIZE)": [7],
        "FETCH 4:* (UID)": [7],
        "FETCH 1:4 (UID BODY.PEEK[]<0.20> BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])": VISIBLE,
        "FETCH 2 (UID RFC822.HEADER RFC822.TEXT)": [3],
    }
    for command, uids in expectations.items():
        reply = hostile.command(command)
        assert reply.ok and reply.fetch_uids() == uids, command
    for command in ("FETCH 5 (UID)", "FETCH 5:* (UID)", "FETCH 1:4294967295 (UID)", "STORE 8 +FLAGS (\\Seen)"):
        assert hostile.command(command).status == b"BAD", command
    mailbox.check(hostile)


def test_searching_for_what_the_secret_mail_says(mailbox: Mailbox, hostile: WireClient) -> None:
    secret = mailbox.secrets[0]
    subject, body, message_id = (m.decode() for m in secret.markers)
    for search in [
        f"SUBJECT {subject}", "SUBJECT SECRET", "SUBJECT payroll", f"HEADER Subject {subject}",
        f'HEADER Message-ID "{message_id}"', f"TEXT {body}", f"BODY {body}", f"TEXT {subject}",
        "LARGER 20000", "HEADER X-Nothing \"\"", f"OR SUBJECT {subject} BODY {body}",
        "UID 2", "UID 2,4,6,8", "NOT UID 1:*", "KEYWORD $Payroll", "UID 8:* NOT UID 7",
        f"NOT NOT SUBJECT {subject}", "(SUBJECT SECRET) (1:* LARGER 40000)",
    ]:
        for verb in ("SEARCH", "UID SEARCH"):
            assert _uid_search(hostile.command(f"{verb} {search}")) == [], f"{verb} {search}"
    # literal forms of the same question, synchronising and not
    hostile.send(b"l1 UID SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(secret.subject_marker))
    assert hostile.read_response().startswith(b"+ ")
    hostile.send(secret.subject_marker + b"\r\n")
    assert hostile.finish(b"l1").search() == []
    hostile.send(b"l2 UID SEARCH BODY {%d+}\r\n%s\r\n" % (len(secret.body_marker), secret.body_marker))
    assert hostile.finish(b"l2").search() == []
    # what it may see, it finds
    assert _uid_search(hostile.command("UID SEARCH ALL")) == VISIBLE
    assert _uid_search(hostile.command("SEARCH ALL")) == [1, 2, 3, 4]
    assert _uid_search(hostile.command("UID SEARCH SUBJECT visible")) == VISIBLE
    assert _uid_search(hostile.command("UID SEARCH UID 4:*")) == [5, 7]
    assert _uid_search(hostile.command("UID SEARCH UID 8:*")) == [7]  # `*` is the last visible
    assert _uid_search(hostile.command("SEARCH 3:*")) == [3, 4]
    assert _uid_search(hostile.command("SEARCH UNSEEN")) == [1, 2, 3, 4]
    mailbox.check(hostile)


def test_counting(mailbox: Mailbox, hostile: WireClient) -> None:
    status = hostile.command("STATUS INBOX (MESSAGES UNSEEN RECENT UIDNEXT)")
    assert status.lines(b"STATUS") == [b"* STATUS INBOX (MESSAGES 4 RECENT 0 UIDNEXT 9 UNSEEN 4)\r\n"]
    for other in ("Private", "Archive", '"Private"'):
        # Private holds only secret mail: as empty as Archive
        counted = hostile.command(f"STATUS {other} (MESSAGES UNSEEN RECENT)")
        assert counted.ok and counted.lines(b"STATUS") == [
            b"* STATUS %s (MESSAGES 0 RECENT 0 UNSEEN 0)\r\n" % other.encode()]
    examine = hostile.command("EXAMINE Private")
    assert b"* 0 EXISTS" in examine.all and b"[UNSEEN" not in examine.all
    assert hostile.command("FETCH 1 (UID)").status == b"BAD"
    assert hostile.command("UID FETCH 1:* (UID)").fetch_uids() == []
    assert _uid_search(hostile.command("UID SEARCH ALL")) == []
    examine = hostile.command("EXAMINE INBOX")
    assert b"* 4 EXISTS" in examine.all and b"* OK [UNSEEN 1]" in examine.all
    mailbox.check(hostile)


def test_acting_on_hidden_uids_changes_nothing(mailbox: Mailbox, hostile: WireClient) -> None:
    for command in [
        "UID STORE 2 +FLAGS (\\Deleted)", "UID STORE 4:8 FLAGS (\\Seen \\Deleted)",
        "UID STORE 1:* +FLAGS.SILENT (\\Flagged)", "UID COPY 2 Archive", "UID COPY 4:6 Archive",
        "COPY 1:* Archive", "UID MOVE 8 Archive", "UID MOVE 6:* Archive", "UID EXPUNGE 2:8",
        "UID EXPUNGE 1:*", "STORE 1:* +FLAGS (\\Deleted)", "EXPUNGE",
    ]:
        assert hostile.command(command).ok, command
    assert hostile.command("CLOSE").ok
    hostile.command("SELECT INBOX")
    assert hostile.command("UID MOVE 1:* Archive").ok
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    reply = trusted.command("UID FETCH 1:* (UID FLAGS)")
    assert reply.fetch_uids() == HIDDEN
    assert all(b"\\Deleted" not in line and b"\\Flagged" not in line and b"\\Seen" not in line
               for line in reply.lines(b"FETCH")), reply.untagged
    assert trusted.command("SELECT Archive").ok
    archived = trusted.command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"SECRET" not in archived.all and archived.lines(b"FETCH")
    mailbox.check(hostile)


def _without_keepalives(lines: list[bytes]) -> list[bytes]:
    # (what the client received: WireClient.pending leaves the keepalive out already)
    return [line for line in lines if line != IDLE_KEEPALIVE]


def test_idle_while_secret_mail_arrives_and_changes(mailbox: Mailbox, hostile: WireClient) -> None:
    """Nothing at all reaches an idling client: not the delivery (over LMTP, as from an MTA), not
    a keyword set on secret mail, not its expunge."""
    hostile.send(b"i IDLE\r\n")
    assert hostile.read_response() == b"+ idling\r\n"
    before = len(hostile.received)
    arriving = secret_message(size=45_678)
    mailbox.secrets.append(arriving)
    mailbox.hiding.dovecot.deliver("alice", arriving.raw)
    assert hostile.pending(1.5) == []
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    assert trusted.command("UID STORE 9 +FLAGS ($Divorce \\Flagged)").ok
    assert trusted.command("UID STORE 2 +FLAGS (\\Deleted)").ok
    assert trusted.command("UID EXPUNGE 2").ok
    trusted.command("LOGOUT")
    assert hostile.pending(1.5) == []
    assert _without_keepalives(bytes(hostile.received[before:]).splitlines(keepends=True)) == []
    hostile.send(b"DONE\r\n")
    done = hostile.finish(b"i")
    assert done.ok and done.untagged == []
    assert hostile.command("NOOP").untagged == []
    assert hostile.command("UID FETCH 1:* (UID)").fetch_uids() == VISIBLE
    mailbox.check(hostile)


def test_expunge_of_secret_mail_elsewhere_is_not_heard(mailbox: Mailbox, hostile: WireClient) -> None:
    """Until this session hears of it, a message expunged elsewhere is still numbered, and a
    SEARCH that must read it is answered with [EXPUNGEISSUED]: not when the message is secret."""
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    assert trusted.command("UID STORE 2,8 +FLAGS.SILENT (\\Deleted)").ok
    assert trusted.command("UID EXPUNGE 2,8").ok
    trusted.command("LOGOUT")
    for command in ("SEARCH SUBJECT SECRET", "UID SEARCH TEXT payroll", "UID SEARCH LARGER 10",
                    "SEARCH HEADER Message-ID hiding", "UID FETCH 1:* (UID BODY.PEEK[TEXT])",
                    "FETCH 1:* (RFC822.SIZE)", "UID SEARCH ALL"):
        reply = hostile.command(command)
        assert reply.tagged.split(b" ", 2)[2].startswith((b"Search completed", b"Fetch completed")), command
    assert hostile.command("NOOP").untagged == []
    mailbox.check(hostile)


def test_secret_mail_expunged_before_it_could_be_read(mailbox: Mailbox, hostile: WireClient) -> None:
    """Secret mail delivered and expunged elsewhere while an expunge of other secret mail is still
    owed to this session: Dovecot must announce it (EXISTS) but cannot show its header. Unjudged,
    it stays hidden; it is not announced as a message of the default level. (The other client
    talks to Dovecot directly, so the proxy never saw the message.)"""
    trusted = mailbox.hiding.direct("alice")
    assert trusted.command("SELECT INBOX").ok
    arriving = secret_message()
    mailbox.secrets.append(arriving)
    mailbox.hiding.dovecot.deliver("alice", arriving.raw)
    assert trusted.command("NOOP").ok
    assert trusted.command("UID STORE 2,9 +FLAGS.SILENT (\\Deleted)").ok
    assert trusted.command("UID EXPUNGE 2,9").ok
    trusted.command("LOGOUT")
    reply = hostile.command("SEARCH ALL")  # no EXPUNGE may come during SEARCH
    assert reply.untagged == [b"* SEARCH 1 2 3 4\r\n"], reply.untagged
    assert hostile.command("FETCH 5 (UID FLAGS)").status == b"BAD"
    assert hostile.command("NOOP").untagged == []
    mailbox.check(hostile)
    assert b"UID 9" not in hostile.received


def test_literal_tricks(mailbox: Mailbox, hostile: WireClient) -> None:
    # a command hidden inside a literal is data, never a command
    payload = b"x\r\nz1 UID FETCH 2 (BODY[])\r\nz2 UID STORE 2 +FLAGS (\\Deleted)"
    hostile.send(b"l1 SEARCH SUBJECT {%d+}\r\n%s\r\n" % (len(payload), payload))
    reply = hostile.finish(b"l1")
    assert not any(line.startswith((b"z1", b"z2")) for line in reply.untagged)
    # a sequence set sent as a literal is not a sequence set
    hostile.send(b"l2 UID FETCH {3+}\r\n2:8 (BODY[])\r\n")
    assert hostile.finish(b"l2").status == b"BAD"
    # literal8 and an oversized literal are refused, the session survives
    hostile.send(b"l3 SEARCH SUBJECT ~{6+}\r\nSECRET\r\n")
    assert hostile.finish(b"l3").status == b"BAD"
    hostile.send(b"l4 SEARCH SUBJECT {99999999}\r\n")
    refused = hostile.read_response()
    assert refused.startswith((b"l4 BAD", b"l4 NO")), refused
    # CATENATE would copy a message by URL without fetching it
    hostile.send(b'l5 APPEND Drafts CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=2")\r\n')
    assert hostile.finish(b"l5").status == b"BAD"
    hostile.send(b"l6 APPEND Drafts (\\Seen) {5+}\r\nhello CATENATE (URL \"/INBOX/;UID=2\")\r\n")
    assert hostile.read_response().startswith((b"* BYE", b"l6 BAD", b"l6 NO"))
    mailbox.check(hostile)
    assert_hidden_untouched(mailbox.hiding)


def test_extensions_that_were_not_offered(mailbox: Mailbox, hostile: WireClient) -> None:
    caps = hostile.command("CAPABILITY").lines(b"CAPABILITY")[0].upper().split()
    for cap in (b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SEARCHRES", b"SORT", b"THREAD=REFERENCES",
                b"COMPRESS=DEFLATE", b"NOTIFY", b"LIST-STATUS", b"STATUS=SIZE", b"BINARY", b"CATENATE",
                b"URLAUTH", b"URL-PARTIAL", b"ESORT", b"CONTEXT=SEARCH", b"IMAP4REV2", b"QUOTA",
                b"METADATA", b"ACL", b"SNIPPET=FUZZY", b"PREVIEW", b"OBJECTID", b"SAVEDATE"):
        assert cap not in caps, cap
    # another client that did use CONDSTORE on this mailbox makes Dovecot send HIGHESTMODSEQ
    direct = mailbox.hiding.direct("alice")
    assert direct.command("ENABLE CONDSTORE").ok and direct.command("SELECT INBOX").ok
    assert b"HIGHESTMODSEQ" in direct.command("SELECT INBOX").all
    enabled = hostile.command("ENABLE CONDSTORE QRESYNC UTF8=ACCEPT IMAP4rev2")
    assert enabled.ok and enabled.untagged == [b"* ENABLED\r\n"]
    for command in ["SELECT INBOX", "EXAMINE INBOX"]:
        assert hostile.command(command).ok
    for command in [
        "COMPRESS DEFLATE", "SELECT INBOX (CONDSTORE)", "SELECT INBOX (QRESYNC (1 1))",
        "FETCH 1:* (MODSEQ)", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", "UID FETCH 1:* (UID) (VANISHED)",
        "UID SEARCH RETURN (COUNT) ALL", "SEARCH RETURN (MIN MAX ALL) ALL", "UID SEARCH RETURN (SAVE) ALL",
        "UID SEARCH MODSEQ 1", "SEARCH $", "UID FETCH $ (UID)", "UID SORT (DATE) UTF-8 ALL",
        "UID THREAD REFERENCES UTF-8 ALL", "ESEARCH IN (mailboxes INBOX) ALL", "GETQUOTAROOT INBOX",
        "GETQUOTA \"\"", "NOTIFY SET (selected MessageNew)", 'LIST "" "*" RETURN (STATUS (MESSAGES))',
        "STATUS INBOX (SIZE)", "STATUS INBOX (DELETED)", "STATUS INBOX (HIGHESTMODSEQ)",
        "FETCH 1 (BINARY[])", "FETCH 1 (BINARY.SIZE[])", "FETCH 1 (SNIPPET)", "FETCH 1 (PREVIEW)",
        "FETCH 1 (EMAILID THREADID)", "FETCH 1 (SAVEDATE)", "UID SEARCH SAVEDSINCE 1-Jan-2000",
        "SEARCH FUZZY SUBJECT SECRET", "SEARCH X-GUID abc", "GETMETADATA INBOX /private/comment",
        "MYRIGHTS INBOX", "GETACL INBOX", 'URLFETCH "/INBOX;UIDVALIDITY=1/;UID=2"',
        'GENURLAUTH "imap://alice@localhost/INBOX/;UID=2;urlauth=anonymous" INTERNAL',
        "RESETKEY", "UNAUTHENTICATE", "XLIST \"\" \"*\"", "UID REPLACE 2 INBOX {1+}\r\nx",
    ]:
        reply = hostile.command(command)
        assert reply.status in (b"BAD", b"NO"), command
        assert not reply.untagged, command
    assert hostile.command("NOOP").ok
    mailbox.check(hostile)


def test_keywords_of_secret_mail(mailbox: Mailbox, hostile: WireClient) -> None:
    hostile.send(b"i IDLE\r\n")
    assert hostile.read_response() == b"+ idling\r\n"
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    assert trusted.command("UID STORE 4 +FLAGS ($Divorce)").ok
    assert hostile.pending(1.0) == []
    assert trusted.command("UID STORE 3 +FLAGS ($Work)").ok
    pushed = hostile.wait_for(b"* 2 FETCH (FLAGS ($Work))\r\n")
    assert pushed[-1] == b"* 2 FETCH (FLAGS ($Work))\r\n" and any(b"$Work" in p and b"FLAGS (" in p
                                                                   for p in pushed[:-1])
    hostile.send(b"DONE\r\n")
    assert hostile.finish(b"i").ok
    select = hostile.command("SELECT INBOX")
    assert b"$Work" in select.all
    mailbox.check(hostile)


def test_pipelined_races_never_reach_hidden_mail(mailbox: Mailbox, hostile: WireClient) -> None:
    """Sequence numbers shift under pipelined commands; none of them lands on a hidden message."""
    hostile.send(b"p1 UID STORE 3 +FLAGS (\\Deleted)\r\np2 UID EXPUNGE 3\r\np3 COPY 2 Archive\r\n"
                 b"p4 STORE 2 +FLAGS (\\Flagged)\r\np5 MOVE 2 Archive\r\np6 FETCH 2:* (UID BODY[])\r\n"
                 b"p7 NOOP\r\n")
    hostile.finish(b"p7")
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    reply = trusted.command("UID FETCH 2:8 (UID FLAGS)")
    assert sorted(set(reply.fetch_uids()) & set(HIDDEN)) == HIDDEN
    assert all(b"\\Flagged" not in line for line in reply.lines(b"FETCH") if b"UID 5" not in line)
    mailbox.check(hostile)


def assert_hidden_untouched(hiding: Hiding) -> None:
    out = hiding.dovecot.doveadm("fetch", "-u", "alice", "uid flags", "mailbox", "INBOX", "all")
    found = dict(re.findall(r"uid: (\d+)\nflags: ([^\n]*)", out))
    for uid in HIDDEN:
        assert "Deleted" not in found[str(uid)] and "Seen" not in found[str(uid)], found


def test_a_second_session_sees_the_same_mailbox(mailbox: Mailbox, hostile: WireClient) -> None:
    """Nothing carries over between untrusted sessions: a fresh one sees the same visible mailbox."""
    second = mailbox.hiding.cafe()
    assert b"* 4 EXISTS" in second.command("SELECT INBOX").all
    assert second.command("UID FETCH 1:* (UID)").fetch_uids() == VISIBLE
    mailbox.check(second)
    mailbox.check(hostile)
