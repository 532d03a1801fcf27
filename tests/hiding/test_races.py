"""EXPUNGE and EXISTS at every moment the upstream may send them during the proxy's own commands.

Pure transcripts (no servers), from the state of ``test_transcripts.SELECT_SCRIPT`` (UIDs 1-4,
2 and 4 hidden). RFC 3501 §7.4.1 lets the upstream send EXPUNGE during any command but FETCH,
STORE and SEARCH, so also during the UID SEARCHes a SELECT runs after its view is built, and
new mail may be announced at any time. Each test holds the view to the upstream's numbering: a
message number the client uses must never reach a hidden message, and mail that arrived must be
announced.
"""

from __future__ import annotations

from tests.hiding.test_transcripts import SELECT_SCRIPT, header_fetch, session_play

UNTIL_UNSEEN = SELECT_SCRIPT[:22]  # up to the proxy's "cp.3 UID SEARCH UNSEEN"
SELECT_ANSWER = SELECT_SCRIPT[-7:]  # what the client gets for its SELECT
assert UNTIL_UNSEEN[-1] == b">S: cp.3 UID SEARCH UNSEEN"


def test_an_expunge_during_the_selects_last_searches_leaves_the_view() -> None:
    """Hidden UID 2 is expunged during the UNSEEN search: upstream number 2 is now UID 3, and the
    client's message 2 (UID 3) is asked for as upstream 2, never as 3 (hidden UID 4)."""
    play = session_play()
    play(UNTIL_UNSEEN + [
        b"S: * SEARCH 2 3 4",
        b"S: * 2 EXPUNGE",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH 3 4",
        b"S: cp.4 OK Search completed.",
        *SELECT_ANSWER,
        b"C: f FETCH 2 (UID BODY[])",
        b">S: f FETCH 2 (UID BODY[])",
        b"S| * 2 FETCH (UID 3 BODY[] {18}\r\nSubject: lunch\r\n\r\n)\r\n",
        b">C| * 2 FETCH (UID 3 BODY[] {18}\r\nSubject: lunch\r\n\r\n)\r\n",
        b"S: f OK Fetch completed.",
        b">C: f OK Fetch completed.",
    ])


def test_mail_announced_during_the_selects_last_searches_is_fetched_and_announced() -> None:
    play = session_play()
    play(UNTIL_UNSEEN + [
        b"S: * 5 EXISTS",
        b"S: * SEARCH 2 3 4 5",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH 2 3 4 5",
        b"S: cp.4 OK Search completed.",
        *SELECT_ANSWER,
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "hello"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
    ])


def test_mail_announced_before_a_resumed_idle_is_classified_without_waiting_for_done() -> None:
    play = session_play()
    play(SELECT_SCRIPT + [
        b"C: i IDLE", b">S: i IDLE", b"S: + idling", b">C: + idling",
        b"S: * 5 EXISTS", b">S: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "SECRET news"),
        b"S: cp.5 OK Fetch completed.",
        b">S: i IDLE",
        b"S: * 6 EXISTS",  # before the "+" of the resumed IDLE
        b"S: + idling",
        b">S: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.6 FETCH 6:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "lunch"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">S: i IDLE",
    ])


def test_status_of_the_selected_mailbox_counts_after_an_expunge_during_it() -> None:
    play = session_play()
    play(SELECT_SCRIPT + [
        b"C: s STATUS INBOX (MESSAGES UNSEEN)",
        b">S: cp.5 UID SEARCH UNSEEN",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: * SEARCH 2 3 4",
        b"S: cp.5 OK Search completed.",
        b">C: * STATUS INBOX (MESSAGES 1 UNSEEN 1)",
        b">C: s OK Status completed.",
    ])


def test_new_mail_after_a_gap_in_the_upstreams_answer_is_not_admitted() -> None:
    """The upstream left out number 5 (expunged elsewhere meanwhile): UID 6 is not put in its
    place; nothing is announced, and the client's numbers stay those of UIDs 1 and 3. Once the
    upstream reports that EXPUNGE, UID 6 is upstream number 5 and is read and announced."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"S: * 6 EXISTS",
        b">S: cp.5 FETCH 5:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "hello"),
        b"S: cp.5 NO [EXPUNGEISSUED] Some messages were expunged.",
        b"C: f FETCH 2 (UID)",
        b">S: f FETCH 3 (UID)",
        b"S: * 3 FETCH (UID 3)",
        b">C: * 2 FETCH (UID 3)",
        b"S: f OK Fetch completed.",
        b">C: f OK Fetch completed.",
        b"C: n NOOP",
        b">S: n NOOP",
        b"S: * 5 EXPUNGE",
        b"S: n OK NOOP completed.",  # held: the new message is announced first
        b">S: cp.6 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 6, "hello"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: n OK NOOP completed.",
    ])


def test_unseen_after_expunge_during_recent_search() -> None:
    """UID 1 is expunged during the RECENT search, after the first unseen message (UID 3, the
    client's 2 until then) was found: [UNSEEN] is its number after the EXPUNGE, 1."""
    play = session_play()
    play(SELECT_SCRIPT[:25] + [
        b"S: * SEARCH 2 3 4",
        b"S: * 1 EXPUNGE",
        b"S: cp.4 OK Search completed.",
        b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b">C: * 1 EXISTS",
        b">C: * 1 RECENT",
        b">C: * OK [UNSEEN 1] First unseen.",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: * OK [UIDNEXT 5] Predicted next UID",
        b">C: a OK [READ-WRITE] Select completed.",
    ])


def test_unsolicited_fetch_with_uid_during_arrivals_fetch() -> None:
    """A flag update of known message 1 (with UID) during the arrivals FETCH: new UID 5 still announced."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"S: * 5 EXISTS",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        b"S: * 1 FETCH (UID 1 FLAGS (\\Seen))",
        header_fetch(5, 5, "hello"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
    ])


def test_gap_filled_by_expunge_during_status_flow() -> None:
    """The EXPUNGE that closes a gap comes during the proxy's own search of a STATUS: the mail
    behind it is read once the STATUS is answered."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"S: * 6 EXISTS",
        b">S: cp.5 FETCH 5:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "hello"),
        b"S: cp.5 NO [EXPUNGEISSUED] Some messages were expunged.",
        b"C: s STATUS INBOX (MESSAGES UNSEEN)",
        b">S: cp.6 UID SEARCH UNSEEN",
        b"S: * 5 EXPUNGE",
        b"S: * SEARCH 3 6",
        b"S: cp.6 OK Search completed.",
        b">C: * STATUS INBOX (MESSAGES 2 UNSEEN 1)",
        b">C: s OK Status completed.",
        b">S: cp.7 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
    ])


def test_gap_filled_by_expunge_during_idle() -> None:
    """... or while the client idles: the proxy ends the upstream IDLE to read it."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"S: * 6 EXISTS",
        b">S: cp.5 FETCH 5:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "hello"),
        b"S: cp.5 NO [EXPUNGEISSUED] Some messages were expunged.",
        b"C: i IDLE", b">S: i IDLE", b"S: + idling", b">C: + idling",
        b"S: * 5 EXPUNGE", b">S: DONE",
        b"C: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.6 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 6, "hello"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: i OK Idle completed.",
    ])


def test_resuming_client_done_before_plus() -> None:
    """The client's DONE comes before the '+' of the resumed IDLE: one DONE upstream, then the
    mail announced meanwhile is read."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"C: i IDLE", b">S: i IDLE", b"S: + idling", b">C: + idling",
        b"S: * 5 EXISTS", b">S: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "SECRET news"),
        b"S: cp.5 OK Fetch completed.",
        b">S: i IDLE",
        b"S: * 6 EXISTS",
        b"C: DONE",
        b"S: + idling",
        b">S: DONE",
        b"S: i OK Idle completed.",
        b">C: i OK Idle completed.",
        b">S: cp.6 FETCH 6:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "lunch"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
    ])


def test_plus_then_stop_then_client_done() -> None:
    """The proxy ends the resumed IDLE for new mail, then the client sends DONE: still one DONE
    upstream, and the client's IDLE completes after the mail is announced."""
    play = session_play()
    play(SELECT_SCRIPT + [
        b"C: i IDLE", b">S: i IDLE", b"S: + idling", b">C: + idling",
        b"S: * 5 EXISTS", b">S: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "SECRET news"),
        b"S: cp.5 OK Fetch completed.",
        b">S: i IDLE",
        b"S: * 6 EXISTS",
        b"S: + idling",
        b">S: DONE",
        b"C: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.6 FETCH 6:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "lunch"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: i OK Idle completed.",
    ])
