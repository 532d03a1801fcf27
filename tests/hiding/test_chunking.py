"""Message sets too long for one upstream line: commands in pieces, search keys widened.

Transcripts on the mailbox of ``test_transcripts`` (upstream UIDs 1-4, 2 and 4 secret, client
sequence numbers 1 and 2 for UIDs 1 and 3), with the longest upstream set cut down so that the
visible set ``1,3`` no longer fits: every piece is then one range of it. Dovecot's real limit is
exercised by ``test_scale``.
"""

from __future__ import annotations

import pytest

from caliproxy.imap.classify import Tagged
from caliproxy.imap.selected import SelectedMailbox
from caliproxy.imap.view import MailboxView, format_sequence_set, split_sequence_set
from tests.hiding.test_transcripts import (
    BYE_CLOSE,
    SELECT_SCRIPT,
    SubjectClassifier,
    header_fetch,
    session_play,
)
from tests.imap.playbook import Playbook


@pytest.fixture
def selected(monkeypatch: pytest.MonkeyPatch) -> Playbook:
    play = session_play()
    play(SELECT_SCRIPT)
    monkeypatch.setattr("caliproxy.imap.selected.MAX_UPSTREAM_SET", 2)
    return play


# -- commands in pieces ------------------------------------------------------------------------------


def test_a_fetch_in_pieces_completes_once(selected: Playbook) -> None:
    selected([
        b"C: b UID FETCH 1:* (UID FLAGS)",
        b">S: b UID FETCH 1 (UID FLAGS)",
        b"S: * 1 FETCH (UID 1 FLAGS ())",
        b">C: * 1 FETCH (UID 1 FLAGS ())",
        b"S: b OK Fetch completed.",  # the first piece: the client hears nothing of its end
        b">S: b UID FETCH 3 (UID FLAGS)",
        b"S: * 3 FETCH (UID 3 FLAGS (\\Seen))",
        b">C: * 2 FETCH (UID 3 FLAGS (\\Seen))",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
    ])
    assert selected.statuses[-1] == ("UID FETCH", "OK", False)
    assert len(selected.statuses) == 2  # SELECT, and the FETCH once


def test_a_piece_answered_no_ends_the_command_there(selected: Playbook) -> None:
    selected([
        b"C: b UID STORE 1:* +FLAGS.SILENT (\\Deleted)",
        b">S: b UID STORE 1 +FLAGS.SILENT (\\Deleted)",
        b"S: b NO [CANNOT] Mailbox is read-only.",
        b">C: b NO [CANNOT] Mailbox is read-only.",  # and UID 3 is not asked for
        b"C: c NOOP",
        b">S: c NOOP",
    ])


def test_a_piece_answered_no_after_one_answered_ok(selected: Playbook) -> None:
    selected([
        b"C: b UID COPY 1:* Trash",
        b">S: b UID COPY 1 Trash",
        b"S: b OK [COPYUID 11 1 7] Copy completed.",
        b">S: b UID COPY 3 Trash",
        b"S: b NO [OVERQUOTA] Quota exceeded",
        b">C: b NO [OVERQUOTA] Quota exceeded",
    ])
    assert selected.statuses[-1] == ("UID COPY", "NO", False)


def test_copyuid_of_the_pieces_is_merged_into_one(selected: Playbook) -> None:
    selected([
        b"C: b UID COPY 1:* Trash",
        b">S: b UID COPY 1 Trash",
        b"S: b OK [COPYUID 11 1 7] Copy completed.",
        b">S: b UID COPY 3 Trash",
        b"S: b OK [COPYUID 11 3 8] Copy completed.",
        b">C: b OK [COPYUID 11 1,3 7,8] Copy completed.",
    ])


def test_copyuid_is_left_out_when_a_piece_did_not_report_one(selected: Playbook) -> None:
    selected([
        b"C: b UID COPY 1:* Trash",
        b">S: b UID COPY 1 Trash",
        b"S: b OK Copy completed.",
        b">S: b UID COPY 3 Trash",
        b"S: b OK [COPYUID 11 3 8] Copy completed.",
        b">C: b OK Copy completed.",
    ])


def test_a_move_by_sequence_numbers_goes_in_uid_pieces(selected: Playbook) -> None:
    """The EXPUNGEs of the first piece renumber the mailbox: the pieces name UIDs. The client
    hears each EXPUNGE as it comes, renumbered, and one COPYUID for the whole move."""
    selected([
        b"C: b MOVE 1:2 Trash",
        b">S: b UID MOVE 1 Trash",
        b"S: * OK [COPYUID 11 1 7] Moved UIDs.",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK Move completed.",
        b">S: b UID MOVE 3 Trash",
        b"S: * OK [COPYUID 11 3 8] Moved UIDs.",
        b"S: * 2 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK Move completed.",
        b">C: * OK [COPYUID 11 1,3 7,8] Moved UIDs.",
        b">C: b OK Move completed.",
        b"C: c UID FETCH 1:* (UID)",
        b">S: c UID FETCH 4294967295 (UID)",  # only hidden mail is left
    ])


def test_a_fetch_by_sequence_numbers_keeps_them_from_piece_to_piece(selected: Playbook) -> None:
    selected([
        b"C: b FETCH 1:* (FLAGS)",
        b">S: b FETCH 1 (FLAGS)",
        b"S: * 1 FETCH (FLAGS ())",
        b">C: * 1 FETCH (FLAGS ())",
        b"S: b OK Fetch completed.",
        b">S: b FETCH 3 (FLAGS)",
        b"S: * 3 FETCH (FLAGS (\\Seen))",
        b">C: * 2 FETCH (FLAGS (\\Seen))",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
    ])


def test_an_expunge_between_pieces_of_a_store_by_sequence_number_ends_the_session(
        selected: Playbook) -> None:
    """RFC 3501 §7.4.1 forbids it; were it sent, the next piece's number could be a hidden one's."""
    selected([
        b"C: b STORE 1:2 +FLAGS (\\Flagged)",
        b">S: b STORE 1 +FLAGS (\\Flagged)",
        b"S: * 1 EXPUNGE",
        b">C: * BYE upstream protocol error: EXPUNGE during a FETCH or STORE by sequence number",
        *BYE_CLOSE,
    ])


def test_commands_pipelined_around_one_in_pieces_keep_their_order(selected: Playbook) -> None:
    """It waits for the commands before it (it needs the upstream to itself), and the ones after
    it wait for its last piece."""
    selected([
        b"C| x UID FETCH 3 (UID)\r\nb UID STORE 1:* +FLAGS.SILENT (\\Seen)\r\nc UID FETCH 1 (UID)\r\n",
        b">S| x UID FETCH 3 (UID)\r\n",
        b"S: * 3 FETCH (UID 3)",
        b">C: * 2 FETCH (UID 3)",
        b"S: x OK Fetch completed.",
        b">C: x OK Fetch completed.",
        b">S: b UID STORE 1 +FLAGS.SILENT (\\Seen)",
        b"S: b OK Store completed.",
        b">S: b UID STORE 3 +FLAGS.SILENT (\\Seen)",
        b"S: b OK Store completed.",
        b">C: b OK Store completed.",
        b">S: c UID FETCH 1 (UID)",
        b"S: * 1 FETCH (UID 1)",
        b">C: * 1 FETCH (UID 1)",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
    ])


def test_new_mail_during_a_command_in_pieces_is_announced_before_it_completes(
        selected: Playbook) -> None:
    selected([
        b"C: b UID FETCH 1:* (UID)",
        b">S: b UID FETCH 1 (UID)",
        b"S: * 5 EXISTS",
        b"S: * 1 FETCH (UID 1)",
        b">C: * 1 FETCH (UID 1)",
        b"S: b OK Fetch completed.",
        b">S: b UID FETCH 3 (UID)",
        b"S: * 3 FETCH (UID 3)",
        b">C: * 2 FETCH (UID 3)",
        b"S: b OK Fetch completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "news"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: b OK Fetch completed.",
    ])


def test_expunge_in_pieces_and_its_expunges_renumbered(selected: Playbook) -> None:
    selected([
        b"C: b EXPUNGE",
        b">S: b UID EXPUNGE 1",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK Expunge completed.",
        b">S: b UID EXPUNGE 3",
        b"S: * 2 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK Expunge completed.",
        b">C: b OK Expunge completed.",
    ])


def test_close_expunges_in_pieces_silently(selected: Playbook) -> None:
    selected([
        b"C: b CLOSE",
        b">S: cp.5 UID EXPUNGE 1",
        b"S: * 1 EXPUNGE",
        b"S: cp.5 OK Expunge completed.",
        b">S: cp.6 UID EXPUNGE 3",
        b"S: * 2 EXPUNGE",
        b"S: cp.6 OK Expunge completed.",
        b">S: b UNSELECT",
        b"S: b OK Unselect completed.",
        b">C: b OK Close completed.",
    ])


def test_close_stops_expunging_after_a_piece_that_failed(selected: Playbook) -> None:
    selected([
        b"C: b CLOSE",
        b">S: cp.5 UID EXPUNGE 1",
        b"S: cp.5 NO Internal error",
        b">S: b UNSELECT",
        b"S: b OK Unselect completed.",
        b">C: b OK Close completed.",
    ])


# -- search keys widened -------------------------------------------------------------------------------


def test_a_search_set_too_long_is_widened_over_hidden_messages(selected: Playbook) -> None:
    """``1,3`` does not fit: ``1:3`` takes in only the hidden UID 2, and the result is confined
    to visible mail as always."""
    selected([
        b"C: b UID SEARCH UID 1:* NOT DELETED",
        b">S: b UID SEARCH UID 1:3 NOT DELETED",
        b"S: * SEARCH 1 2 3",
        b">C: * SEARCH 1 3",
        b"S: b OK Search completed.",
        b">C: b OK Search completed.",
        b"C: c SEARCH NOT 1:2",
        b">S: c SEARCH NOT 1:3",
        b"S: * SEARCH 2 4",
        b">C: * SEARCH",
        b"S: c OK Search completed.",
        b">C: c OK Search completed.",
    ])


def _mailbox(uids: list[int], hidden: set[int]) -> SelectedMailbox:
    classifier = SubjectClassifier()
    mailbox = SelectedMailbox("INBOX", 1, False, classifier)  # type: ignore[arg-type]
    mailbox.view = MailboxView(uids, hidden)
    mailbox.tags = {uid: Tagged("secret" if uid in hidden else "internal", b"", ()) for uid in uids}
    return mailbox


def test_a_widened_search_set_takes_in_no_visible_message_the_client_did_not_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("caliproxy.imap.selected.MAX_UPSTREAM_SET", 0)
    # upstream UIDs 10..19, the odd ones hidden; the client names 10, 12 (neighbours among the
    # visible: 11 between them is hidden) and 16, 18 (14 between them is visible, not named)
    mailbox = _mailbox(list(range(10, 20)), {11, 13, 15, 17, 19})
    assert mailbox._search_set([10, 12, 16, 18], uid=True) == b"10:12,16:18"
    # the same by upstream sequence numbers (UID 10 is number 1)
    assert mailbox._search_set([10, 12, 16, 18], uid=False) == b"1:3,7:9"


def test_split_sequence_set_names_exactly_the_numbers_in_order() -> None:
    numbers = list(range(1, 30_000, 2)) + list(range(40_000, 40_100))
    pieces = split_sequence_set(numbers, 1000)
    assert len(pieces) > 1
    assert all(len(piece) <= 1000 for piece in pieces)
    assert b",".join(pieces) == format_sequence_set(numbers)
    assert split_sequence_set([1, 2, 3, 5], 1000) == [b"1:3,5"]
