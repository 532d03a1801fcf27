"""Every rewritten command against real Dovecot: the untrusted view of a mailbox with secret mail
answers byte for byte as Dovecot answers for the same mailbox without it.

``alice`` holds visible mail at UIDs 1, 3, 5 and secret mail at 2, 4, 6 (the last message is
secret, and the first unseen one is). ``bob`` got the same visible messages and placeholders at
2, 4 and 6 that were expunged before anyone looked, so his mailbox is what ``alice``'s must look
like: same UIDs, same UIDNEXT, no secret mail. ``alice`` is read through the proxy's ``cafe-plain``
listener (clearance internal, no header added), ``bob`` straight from Dovecot. Only Dovecot's
timing text and the UIDVALIDITY values (which differ per mailbox) are normalised away.
"""

from __future__ import annotations

import re

import pytest

from tests.hiding.conftest import Hiding, Secret, assert_no_leak, message, secret_message
from tests.hiding.wire import Reply, WireClient, without_timing

pytestmark = pytest.mark.integration


def normalised(reply: Reply) -> bytes:
    text = without_timing(reply.all)
    return re.sub(rb"(UIDVALIDITY|COPYUID|APPENDUID) \d+", rb"\1 V", text)


class Twins:
    """alice with secret mail (through the proxy) and bob without it (direct)."""

    def __init__(self, hiding: Hiding) -> None:
        self.hiding = hiding
        self.secrets: list[Secret] = []
        for index in range(1, 7):
            if index % 2:
                raw = message(f"visible {index}", f"body {index}", size=300 * index)
                hiding.save("alice", raw)
                hiding.save("bob", raw)
            else:
                secret = secret_message(size=1000 + 97 * index)
                secret.uid = index
                self.secrets.append(secret)
                hiding.save("alice", secret.raw)
                hiding.save("bob", message("placeholder", "gone"))
        hiding.dovecot.doveadm("expunge", "-u", "bob", "mailbox", "INBOX", "uid", "2,4,6")
        for user in ("alice", "bob"):
            hiding.dovecot.doveadm("flags", "add", "-u", user, "\\Seen", "mailbox", "INBOX", "uid", "1")
        self.alice = hiding.connect("cafe-plain", "alice")
        self.bob = hiding.direct("bob")

    def both(self, command: str) -> tuple[Reply, Reply]:
        return self.alice.command(command), self.bob.command(command)

    def same(self, command: str) -> Reply:
        got, want = self.both(command)
        assert normalised(got) == normalised(want), command
        return got

    def assert_no_leak(self) -> None:
        assert_no_leak(self.alice.received, *self.secrets)


@pytest.fixture
def twins(hiding: Hiding) -> Twins:
    return Twins(hiding)


def _uids_of(hiding: Hiding, user: str = "alice") -> list[int]:
    out = hiding.dovecot.doveadm("search", "-u", user, "mailbox", "INBOX", "all")
    return sorted(int(line.split()[1]) for line in out.splitlines() if line.strip())


def test_select_examine_and_fetch_answer_as_a_mailbox_without_the_secret_mail(twins: Twins) -> None:
    """EXISTS, RECENT, [UNSEEN n] (upstream's first unseen is secret), UIDNEXT; FETCH by sequence
    number and by UID, `*`, `n:*` past a secret last message, UIDs naming only secret mail."""
    select = twins.same("SELECT INBOX")
    assert b"* 3 EXISTS" in select.all and b"[UNSEEN 2]" in select.all
    for command in [
        "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        "UID FETCH 1:* (FLAGS RFC822.SIZE)",
        "UID FETCH 6:* (UID)",
        "UID FETCH 7:* (UID)",
        "UID FETCH 4000000000:* (UID)",
        "UID FETCH 2 (UID FLAGS BODY.PEEK[])",
        "UID FETCH 2,4,6 (BODY.PEEK[TEXT])",
        "UID FETCH 2:4 (UID)",
        "UID FETCH 4:6 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        "FETCH 4 (UID)",
        "FETCH 3:* (UID)",
        "FETCH * (UID RFC822.SIZE)",
        "FETCH 2:4 (UID)",
    ]:
        twins.same(command)
    twins.same("EXAMINE INBOX")
    twins.same("UID FETCH 1:* (UID FLAGS)")
    twins.assert_no_leak()


def test_search_with_sequence_sets_uid_keys_and_hidden_subjects(twins: Twins) -> None:
    twins.same("SELECT INBOX")
    marker = twins.secrets[0]
    for command in [
        "SEARCH ALL",
        "SEARCH UNSEEN",
        "UID SEARCH ALL",
        "UID SEARCH UID 2,4,6",
        "UID SEARCH UID 6:*",
        "UID SEARCH UID 2:4",
        "SEARCH 2:*",
        "SEARCH *",
        "SEARCH 1,3 UNSEEN",
        "SEARCH SUBJECT SECRET",
        f"UID SEARCH SUBJECT {marker.subject_marker.decode()}",
        f"UID SEARCH BODY {marker.body_marker.decode()}",
        f"SEARCH TEXT {marker.body_marker.decode()}",
        f'UID SEARCH HEADER Message-ID "{marker.message_id.decode()}"',
        "UID SEARCH LARGER 1100",
        "UID SEARCH NOT UID 1:*",
        "UID SEARCH OR UID 2 UID 3",
        "SEARCH NOT 1:2",
    ]:
        twins.same(command)
    twins.assert_no_leak()


def test_store_copy_move_naming_hidden_uids_act_on_nothing(twins: Twins) -> None:
    twins.same("SELECT INBOX")
    for command in [
        "UID STORE 2 +FLAGS (\\Flagged)",
        "UID STORE 2:3 +FLAGS (\\Flagged)",
        "STORE 2 -FLAGS (\\Flagged)",
        "STORE 4 +FLAGS (\\Seen)",
        "UID STORE 6 FLAGS (\\Deleted)",
        "UID COPY 2 Archive",
        "UID COPY 2,4 Archive",
        "UID MOVE 6 Archive",
        "UID MOVE 4:6 Archive",
        "COPY 1 Archive",
        "COPY 4 Archive",
        "MOVE 4 Archive",
        "FETCH 1:* (UID FLAGS)",
    ]:
        twins.same(command)
    twins.same("SELECT Archive")
    twins.same("UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    twins.assert_no_leak()
    # nothing happened to the secret mail
    assert _uids_of(twins.hiding) == [1, 2, 3, 4, 6]
    flags = twins.hiding.dovecot.doveadm("fetch", "-u", "alice", "flags", "mailbox", "INBOX", "uid", "2,4,6")
    assert "Flagged" not in flags and "Deleted" not in flags and "Seen" not in flags


def test_expunge_uid_expunge_and_close_never_remove_hidden_messages(twins: Twins) -> None:
    """A trusted session marks the secret messages \\Deleted; the untrusted EXPUNGE, UID EXPUNGE
    and CLOSE remove only the visible \\Deleted ones (and answer as Dovecot does)."""
    for user in ("alice", "bob"):
        # (bob's session takes \Recent as alice's does: RECENT counts are per session)
        trusted = twins.hiding.trusted(user)
        assert trusted.command("SELECT INBOX").ok
        assert trusted.command("UID STORE 2,4,6 +FLAGS (\\Deleted)").ok
        trusted.command("LOGOUT")
    twins.same("SELECT INBOX")
    twins.same("UID STORE 1 +FLAGS (\\Deleted)")
    twins.same("UID EXPUNGE 1:2")
    twins.same("UID EXPUNGE 4,6")
    twins.same("STORE 1 +FLAGS (\\Deleted)")
    twins.same("EXPUNGE")
    assert _uids_of(twins.hiding) == [2, 4, 5, 6]
    twins.same("STORE 1 +FLAGS (\\Deleted)")
    twins.same("CLOSE")
    assert _uids_of(twins.hiding) == [2, 4, 6]
    twins.same("SELECT INBOX")
    twins.same("EXPUNGE")
    twins.same("UID EXPUNGE 1:*")
    assert _uids_of(twins.hiding) == [2, 4, 6]
    twins.assert_no_leak()


def _answers(client: WireClient, batch: bytes, last: bytes) -> tuple[list[bytes], list[bytes]]:
    """Send pipelined commands; their tagged answers in order and the untagged data, sorted.

    Dovecot runs pipelined commands in parallel where it can, so which command's untagged data
    comes first is timing, and so is whether it repeats a flag change one command made in an
    unsolicited ``FETCH (FLAGS ...)`` for another (the final flags are compared afterwards);
    what each command answers is not."""
    client.send(batch)
    reply = client.finish(last)
    lines = [without_timing(line) for line in [*reply.untagged, reply.tagged]]
    tagged = [line for line in lines if not line.startswith(b"* ")]
    untagged = [line for line in lines if line.startswith(b"* ")
                and not re.fullmatch(rb"\* \d+ FETCH \(FLAGS \([^)]*\)\)\r\n", line)]
    return sorted(tagged), sorted(untagged)


def test_pipelined_commands_answer_as_dovecot_does(twins: Twins) -> None:
    """Commands sent without waiting, some answered by the proxy itself (hidden UIDs), some
    numbered by sequence, some changing flags and expunging: every command gets Dovecot's
    answer and the untagged data is the same."""
    twins.same("SELECT INBOX")
    batches = [
        ((b"p1 FETCH 2 (UID FLAGS)\r\np2 UID FETCH 4 (UID)\r\np3 UID FETCH 2:* (UID)\r\n"
         b"p4 SEARCH ALL\r\np5 UID STORE 6 +FLAGS (\\Seen)\r\np6 FETCH * (UID)\r\n"
         b"p7 UID SEARCH UID 4:*\r\np8 NOOP\r\n"), b"p8"),
        ((b"q1 UID STORE 3 +FLAGS (\\Deleted)\r\nq2 UID STORE 2:4 +FLAGS (\\Flagged)\r\n"
         b"q3 UID EXPUNGE 2:3\r\nq4 STORE 1 +FLAGS (\\Answered)\r\nq5 UID EXPUNGE 4\r\n"
         b"q6 NOOP\r\n"), b"q6"),
    ]
    for batch, last in batches:
        assert _answers(twins.alice, batch, last) == _answers(twins.bob, batch, last)
    twins.same("UID FETCH 1:* (UID FLAGS)")
    assert _uids_of(twins.hiding) == [1, 2, 4, 5, 6]
    twins.assert_no_leak()


def test_status_counts_the_selected_mailbox_as_the_client_sees_it(twins: Twins) -> None:
    twins.same("SELECT INBOX")
    got, want = twins.both("STATUS INBOX (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)")
    def items(reply: Reply) -> dict[bytes, bytes]:
        found = dict(re.findall(rb"([A-Z]+) (\d+)", reply.lines(b"STATUS")[0].split(b"(", 1)[1]))
        del found[b"UIDVALIDITY"]  # each mailbox has its own
        return found

    assert got.ok and items(got) == items(want) and items(got)[b"MESSAGES"] == b"3"
    # another mailbox: counted on the proxy's own connection (tests/hiding/test_status_counts.py)
    twins.same("STATUS Archive (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)")
    twins.same("STATUS Nowhere (MESSAGES)")
    plain = twins.alice.command("STATUS Archive (UIDNEXT UIDVALIDITY)")
    assert plain.ok
    twins.assert_no_leak()


def test_delete_of_a_mailbox_holding_hidden_mail_is_refused_and_loses_nothing(twins: Twins) -> None:
    hiding = twins.hiding
    secret = secret_message()
    twins.secrets.append(secret)
    hiding.save("alice", secret.raw, "Private")
    assert twins.alice.command("SELECT Private").ok
    refused = twins.alice.command("DELETE Private")
    assert refused.status == b"NO" and b"[CANNOT]" in refused.tagged
    assert "messages=1" in hiding.dovecot.doveadm("mailbox", "status", "-u", "alice", "messages", "Private")
    # an empty mailbox goes as usual
    assert twins.alice.command("CREATE Scratch").ok
    assert twins.alice.command("DELETE Scratch").ok
    twins.assert_no_leak()


def test_idle_secret_arrival_is_silent_visible_arrival_and_expunge_are_pushed(twins: Twins) -> None:
    """While idling: a secret delivery produces nothing at all, a visible one `EXISTS`, a trusted
    session's flag change on secret mail nothing, and its expunge of visible mail the renumbered
    EXPUNGE that Dovecot pushes to bob."""
    hiding = twins.hiding
    twins.same("SELECT INBOX")
    for client in (twins.alice, twins.bob):
        client.send(b"i IDLE\r\n")
        assert client.read_response() == b"+ idling\r\n"
    secret = secret_message()
    twins.secrets.append(secret)
    hiding.save("alice", secret.raw)
    hiding.save("bob", message("placeholder", "gone"))
    hiding.dovecot.doveadm("expunge", "-u", "bob", "mailbox", "INBOX", "uid", "7")
    assert twins.alice.pending(1.5) == []
    twins.bob.pending(1.0)  # (whatever Dovecot tells bob of the placeholder)
    raw = message("visible 8", "body 8")
    hiding.save("alice", raw)
    hiding.save("bob", raw)
    arrival = (b"* 4 EXISTS\r\n", b"* 4 RECENT\r\n")
    got = twins.alice.wait_for(*arrival)
    assert got == twins.bob.wait_for(*arrival)
    assert got == list(arrival)
    for user, client in (("alice", twins.alice), ("bob", twins.bob)):
        trusted = hiding.trusted(user)
        assert trusted.command("SELECT INBOX").ok
        if user == "alice":
            assert trusted.command("UID STORE 2 +FLAGS (\\Deleted)").ok
            assert trusted.command("UID EXPUNGE 2").ok  # not \Deleted... now it is: gone for good
        assert trusted.command("UID STORE 3 +FLAGS (\\Deleted)").ok
        assert trusted.command("UID EXPUNGE 3").ok
        trusted.command("LOGOUT")
    # (each expunge may come in its own push: a second's quiet after the first)
    got = twins.alice.wait_for(b"* 2 EXPUNGE\r\n", settle=1.0)
    want = twins.bob.wait_for(b"* 2 EXPUNGE\r\n", settle=1.0)
    assert got == want
    for client in (twins.alice, twins.bob):
        client.send(b"DONE\r\n")
    got, want = twins.alice.finish(b"i"), twins.bob.finish(b"i")
    assert normalised(got) == normalised(want)
    twins.same("UID FETCH 1:* (UID FLAGS)")
    twins.assert_no_leak()


def test_fetch_of_a_message_expunged_elsewhere_answers_as_dovecot(hiding: Hiding) -> None:
    """A message expunged by another session is still numbered until this session hears the
    EXPUNGE; Dovecot answers a body fetch of it with NIL and [EXPUNGEISSUED]. Through the
    header-adding listener the client must get the same answer, with our header's length added to
    the size, and keep its session."""
    for index in range(1, 4):
        hiding.save("alice", message(f"visible {index}", f"body {index}"))
    client = hiding.cafe("alice")
    assert client.command("SELECT INBOX").ok
    other = hiding.trusted("alice")
    assert other.command("SELECT INBOX").ok
    assert other.command("UID STORE 3 +FLAGS.SILENT (\\Deleted)").ok
    assert other.command("UID EXPUNGE 3").ok
    reply = client.command("UID FETCH 3 (UID RFC822.SIZE BODY.PEEK[]<0.300>)")
    assert b"[EXPUNGEISSUED]" in reply.tagged
    assert reply.lines(b"FETCH") == [b"* 3 FETCH (UID 3 RFC822.SIZE 256 BODY[]<0> NIL)\r\n"]
    assert client.command("NOOP").ok
