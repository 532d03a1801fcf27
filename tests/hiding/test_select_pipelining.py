"""A SELECT or EXAMINE pipelined behind other commands, in a session that hides mail.

Transcripts in the style of ``test_transcripts`` (same mailbox: upstream UIDs 1-4, 2 and 4
secret). The commands before a SELECT are answered in the upstream's numbers of the mailbox
being left, with flag updates and EXPUNGEs of its hidden mail among them; those answers must go
through that mailbox's view, and nothing of them may reach the client raw while the SELECT's own
answer is held. The last test does the same against real Dovecot.
"""

from __future__ import annotations

import re

import pytest

from tests.hiding.test_probes import Mailbox, mailbox  # noqa: F401  # (fixture)
from tests.hiding.test_transcripts import selected  # noqa: F401  # (fixture)
from tests.imap.playbook import Playbook


def test_select_waits_for_the_commands_before_it(selected: Playbook) -> None:  # noqa: F811
    """A flag update and an EXPUNGE of hidden messages, answered to the NOOP before the SELECT,
    reach the client as they would without the SELECT: not at all."""
    selected([
        b"C| n NOOP\r\ns SELECT INBOX\r\n",
        b">S| n NOOP\r\n",
        b"S: * 2 FETCH (FLAGS (\\Seen $Secret))",
        b"S: * 4 EXPUNGE",
        b"S: * 1 FETCH (FLAGS (\\Seen))",
        b">C: * 1 FETCH (FLAGS (\\Seen))",
        b"S: n OK NOOP completed.",
        b">C: n OK NOOP completed.",
        b">S: s SELECT INBOX",
        b"S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Secret)",
        b"S: * 3 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UNSEEN 3] First unseen.",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: s OK [READ-WRITE] Select completed.",
        b">S: cp.5 UID SEARCH ALL",
        b"S: * SEARCH 1 2 3",
        b"S: cp.5 OK Search completed.",
        b">S: cp.6 UID SEARCH KEYWORD $Secret",
        b"S: * SEARCH 2",
        b"S: cp.6 OK Search completed.",
        # (the upstream's [UNSEEN 3] is UID 3, visible, and it said 0 RECENT: nothing to ask)
        b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b">C: * 2 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UNSEEN 2] First unseen.",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: s OK [READ-WRITE] Select completed.",
    ])


def test_message_data_while_a_select_is_answered_is_dropped(selected: Playbook) -> None:  # noqa: F811
    """FETCH and EXPUNGE are never part of a SELECT answer: arriving before its tagged reply,
    they are about the mailbox being left (here an unsolicited update of hidden UID 2, with a
    literal) and reach the client neither at once nor with the held answer."""
    selected([
        b"C: s EXAMINE INBOX",
        b">S: s EXAMINE INBOX",
        b"S| * 2 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: SECRET x\r\n\r\n)\r\n",
        b"S: * 4 EXPUNGE",
        b"S: * 3 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: s OK [READ-ONLY] Examine completed.",
        b">S: cp.5 UID SEARCH ALL",
        b"S: * SEARCH 1 2 3",
        b"S: cp.5 OK Search completed.",
        b">S: cp.6 UID SEARCH UNSEEN",
        b"S: * SEARCH",
        b"S: cp.6 OK Search completed.",
        b">C: * 2 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: s OK [READ-ONLY] Examine completed.",
    ])


def test_a_refused_select_passes_no_counts_of_the_mailbox_left(selected: Playbook) -> None:  # noqa: F811
    """An EXISTS heard before a refused SELECT's reply counts the mailbox being left, hidden
    mail included; the client, now without a selected mailbox, does not hear it."""
    selected([
        b"C: s SELECT Nowhere",
        b">S: s SELECT Nowhere",
        b"S: * 5 EXISTS",
        b"S: s NO [NONEXISTENT] Mailbox doesn't exist: Nowhere",
        b">C: s NO [NONEXISTENT] Mailbox doesn't exist: Nowhere",
    ])


def test_a_fetch_before_a_select_is_answered_through_the_view(selected: Playbook) -> None:  # noqa: F811
    """A message's body fetched just before a pipelined SELECT keeps its client number."""
    selected([
        b"C| f FETCH 2 (BODY.PEEK[TEXT])\r\ns SELECT INBOX\r\n",
        b">S| f FETCH 3 (BODY.PEEK[TEXT])\r\n",
        b"S| * 3 FETCH (BODY[TEXT] {4}\r\nhi\r\n)\r\n",
        b">C| * 2 FETCH (BODY[TEXT] {4}\r\nhi\r\n)\r\n",
        b"S: f OK Fetch completed.",
        b">C: f OK Fetch completed.",
        b">S: s SELECT INBOX",
    ])


@pytest.mark.integration
def test_dovecot_flag_updates_and_expunges_of_hidden_mail_before_a_pipelined_select(
        mailbox: Mailbox) -> None:  # noqa: F811
    """Another session flags hidden UID 2 with a keyword and expunges hidden UID 4; the hostile
    client then sends NOOP and SELECT together. Dovecot answers the NOOP with the flag update and
    the EXPUNGE, in its numbering; the client must hear neither."""
    hostile = mailbox.hiding.cafe()
    assert b"* 4 EXISTS" in hostile.command("SELECT INBOX").all
    trusted = mailbox.hiding.trusted()
    assert trusted.command("SELECT INBOX").ok
    assert trusted.command("UID STORE 2 +FLAGS ($Divorce)").ok
    assert trusted.command("UID STORE 4 +FLAGS (\\Deleted)").ok
    assert trusted.command("UID EXPUNGE 4").ok
    trusted.command("LOGOUT")
    start = len(hostile.received)
    hostile.send(b"n NOOP\r\ns SELECT INBOX\r\n")
    assert hostile.finish(b"n").ok
    select = hostile.finish(b"s")
    assert select.ok and b"* 4 EXISTS" in select.all
    heard = bytes(hostile.received[start:])
    assert not re.search(rb"\* \d+ (FETCH|EXPUNGE)", heard), heard
    mailbox.check(hostile)
