"""A SELECT has the headers the cache does not know judged on the proxy's own connection.

Pure transcripts (no servers), on ``test_transcripts.SELECT_SCRIPT`` (UIDs 1-4, 2 and 4 secret,
hidden): the client's upstream connection carries no header fetch when the side connection
answers (``~ side_judged``); what it leaves unjudged is read on the client's connection, and a
UID without a verdict stays hidden. The side connection's own exchange is in
``tests/imap/test_side_session.py``; the real one against Dovecot in ``tests/tagging``.
"""

from __future__ import annotations

from tests.hiding.test_transcripts import SELECT_SCRIPT, header_fetch, session_play

_ASKED = SELECT_SCRIPT.index(b"! ClassifyMessages INBOX 1:4") + 1
UNTIL_ASKED = SELECT_SCRIPT[:_ASKED]  # the SELECT waits for the side connection
# after the headers: the searches the hiding SELECT runs, and the client's answer
AFTER_HEADERS = SELECT_SCRIPT[SELECT_SCRIPT.index(b">S: cp.3 UID SEARCH UNSEEN"):]


def searches_from(tag: int) -> list[bytes]:
    """``AFTER_HEADERS`` with the proxy's internal tags counted from ``cp.<tag>``."""
    return [line.replace(b"cp.3", b"cp.%d" % tag).replace(b"cp.4", b"cp.%d" % (tag + 1))
            for line in AFTER_HEADERS]


def unseen_and_recent(tag: int, unseen: bytes, recent: bytes) -> list[bytes]:
    """The hiding SELECT's two searches from ``cp.<tag>`` on, answered with UIDs ``unseen`` and
    ``recent``."""
    lines = []
    for offset, (key, found) in enumerate(((b"UNSEEN", unseen), (b"RECENT", recent))):
        command = b"cp.%d" % (tag + offset)
        lines += [b">S: " + command + b" UID SEARCH " + key, b"S: * SEARCH " + found,
                  b"S: " + command + b" OK Search completed."]
    return lines


def test_the_headers_are_judged_elsewhere_and_the_select_answers_the_same() -> None:
    play = session_play()
    play(UNTIL_ASKED + [
        b"~ side_judged 1=hello 2=SECRET-pay 3=lunch 4=SECRET-plans",
        # straight on to the searches: no UID FETCH of headers on this connection
        *searches_from(2),
        b"C: f FETCH 1:* (UID)",
        b">S: f FETCH 1,3 (UID)",
    ])


def test_what_the_side_connection_did_not_judge_is_read_here() -> None:
    """UID 3 came back without a header there (expunged meanwhile, say): asked again here, where
    the upstream has it."""
    play = session_play()
    play(UNTIL_ASKED + [
        b"~ side_judged 1=hello 2=SECRET-pay 4=SECRET-plans",
        b">S: cp.2 UID FETCH 3 (BODY.PEEK[HEADER])",
        header_fetch(3, 3, "lunch"),
        b"S: cp.2 OK Fetch completed.",
        *searches_from(3),
    ])


def test_a_message_no_connection_could_judge_stays_hidden() -> None:
    play = session_play()
    play(UNTIL_ASKED + [
        b"~ side_judged 1=hello 2=SECRET-pay 4=SECRET-plans",
        b">S: cp.2 UID FETCH 3 (BODY.PEEK[HEADER])",
        b"S: cp.2 OK Fetch completed.",  # nothing for UID 3: fail closed
        *unseen_and_recent(3, b"2 3 4", b"2 3 4"),
        b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b">C: * 1 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: * OK [UIDNEXT 5] Predicted next UID",
        b">C: a OK [READ-WRITE] Select completed.",
        b"C: f FETCH 2 (UID)",
        b">C: f BAD Error in IMAP command FETCH: Invalid messageset.",
    ])


def test_commands_pipelined_behind_the_select_wait_for_its_answer() -> None:
    play = session_play()
    play(UNTIL_ASKED + [
        b"C: n NOOP",  # held: the SELECT is still being answered
        b"~ side_judged 1=hello 2=SECRET-pay 3=lunch 4=SECRET-plans",
        *searches_from(2),
        b">S: n NOOP",
    ])


def test_an_expunge_while_the_side_connection_works_leaves_the_view() -> None:
    """Hidden UID 2 is expunged meanwhile (an upstream that says so unasked): upstream number 2
    is UID 3 from then on, and the client's message 2 is UID 3."""
    play = session_play()
    play(UNTIL_ASKED + [
        b"S: * 2 EXPUNGE",
        b"~ side_judged 1=hello 3=lunch 4=SECRET-plans",
        *unseen_and_recent(2, b"3 4", b"3 4"),
        b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b">C: * 2 EXISTS",
        b">C: * 1 RECENT",
        b">C: * OK [UNSEEN 2] First unseen.",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: * OK [UIDNEXT 5] Predicted next UID",
        b">C: a OK [READ-WRITE] Select completed.",
        b"C: f FETCH 2 (UID)",
        b">S: f FETCH 2 (UID)",
    ])


# a session that hides nothing asks the side connection right after the UID SEARCH ALL...
NOT_HIDING_UNTIL_ASKED = [*SELECT_SCRIPT[:SELECT_SCRIPT.index(b"S: cp.1 OK Search completed.") + 1],
                          b"! ClassifyMessages INBOX 1:4"]
# ...and answers the SELECT of SELECT_SCRIPT so
NOT_HIDING_ANSWER = [
    b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    b">C: * 4 EXISTS",
    b">C: * 3 RECENT",
    b">C: * OK [UNSEEN 2] First unseen.",
    b">C: * OK [UIDVALIDITY 7] UIDs valid",
    b">C: * OK [UIDNEXT 5] Predicted next UID",
    b">C: a OK [READ-WRITE] Select completed.",
]


def test_a_session_that_hides_nothing_has_its_headers_judged_elsewhere_too() -> None:
    play = session_play(hides=False)
    play(NOT_HIDING_UNTIL_ASKED + [
        b"~ side_judged 1=hello 2=SECRET-pay 3=lunch 4=SECRET-plans",
        *NOT_HIDING_ANSWER,
    ])


def test_what_the_side_connection_judged_before_it_failed_is_not_read_again() -> None:
    """Its first batch (UIDs 1 and 2) is in the cache when it fails: only 3 and 4 are read here."""
    play = session_play()
    play(UNTIL_ASKED)
    query = play.side_query
    assert query is not None
    play.session.classifier.classify(query.mailbox, query.uidvalidity, [  # type: ignore[attr-defined]
        (1, b"Subject: hello\r\n\r\n"), (2, b"Subject: SECRET-pay\r\n\r\n")])
    play([
        b"~ side_failed",
        b">S: cp.2 UID FETCH 3:4 (BODY.PEEK[HEADER])",
        header_fetch(3, 3, "lunch"),
        header_fetch(4, 4, "SECRET plans"),
        b"S: cp.2 OK Fetch completed.",
        *searches_from(3),
    ])


def test_a_session_that_hides_nothing_reads_here_what_the_side_connection_could_not() -> None:
    play = session_play(hides=False)
    play(NOT_HIDING_UNTIL_ASKED + [
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:4 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "SECRET pay"),
        header_fetch(3, 3, "lunch"),
        header_fetch(4, 4, "SECRET plans"),
        b"S: cp.2 OK Fetch completed.",
        *NOT_HIDING_ANSWER,
    ])


def test_mail_announced_while_the_side_connection_works_is_read_after_the_select() -> None:
    play = session_play()
    play(UNTIL_ASKED + [
        b"S: * 5 EXISTS",
        b"~ side_judged 1=hello 2=SECRET-pay 3=lunch 4=SECRET-plans",
        # (an arrival: the upstream's own counts no longer describe the mailbox, so both are asked)
        *unseen_and_recent(2, b"2 3 4 5", b"2 3 4 5"),
        *SELECT_SCRIPT[-7:],
        b">S: cp.4 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "hello"),
        b"S: cp.4 OK Fetch completed.",
        b">C: * 3 EXISTS",
    ])
