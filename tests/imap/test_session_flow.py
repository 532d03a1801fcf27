"""Pipelining, IDLE, dropped CONDSTORE codes, fail-closed upstream handling, endings and garbage."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caliproxy.imap.actions import CloseClient
from tests.imap.conftest import PlaybookFactory, SessionFactory
from tests.imap.playbook import Playbook

BYE_CLOSE = [b"! CloseClient", b"! CloseServer"]

# -- pipelining -----------------------------------------------------------------------------------


def test_pipelined_commands_forwarded_in_order(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b'C| a SELECT "INBOX"\r\nb UID fetch 1:* (FLAGS)\r\nc noop\r\n',
        b'>S| a SELECT "INBOX"\r\nb UID FETCH 1:* (FLAGS)\r\nc NOOP\r\n',
    ])


def test_local_answers_wait_behind_commands_in_flight(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b"C| a NOOP\r\nb COMPRESS DEFLATE\r\nc NOOP\r\nd ENABLE CONDSTORE QRESYNC\r\ne FROB\r\n",
        b">S| a NOOP\r\nc NOOP\r\n",
        b"S: a OK NOOP completed",
        b">C: a OK NOOP completed",
        b">C: b BAD command COMPRESS is not supported",
        b"S: * 3 EXISTS",
        b">C: * 3 EXISTS",
        b"S: c OK NOOP completed",
        b">C: c OK NOOP completed",
        b">C: * ENABLED",
        b">C: d OK ENABLE completed",
        b">C: e BAD command FROB is not supported",
    ])
    assert play.statuses == [
        ("NOOP", "OK", False),
        ("COMPRESS", "BAD", True),
        ("NOOP", "OK", False),
        ("ENABLE", "OK", True),
        ("FROB", "BAD", True),
    ]


def test_local_answer_with_nothing_in_flight_is_immediate(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: a ENABLE CONDSTORE",
        b">C: * ENABLED",
        b">C: a OK ENABLE completed",
        b'C: b SELECT "INBOX" (CONDSTORE)',
        b">C: b BAD SELECT takes one mailbox name and no parameters",
        b"C: c UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
        b">C: c BAD FETCH takes a sequence set and fetch items (modifiers are not offered)",
    ])


def test_enable_before_login_is_refused(ready: PlaybookFactory) -> None:
    ready()([b"C: a ENABLE UTF8=ACCEPT", b">C: a BAD ENABLE needs an authenticated session"])


def test_upstream_answering_out_of_order(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C| a NOOP\r\nb FROB\r\nc NOOP\r\n",
        b">S| a NOOP\r\nc NOOP\r\n",
        b"S: c OK done",
        b">C: c OK done",
        b"S: a OK done",
        b">C: a OK done",
        b">C: b BAD command FROB is not supported",
    ])


def test_duplicate_and_reserved_tags(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C| a NOOP\r\na NOOP\r\n",
        b">S: a NOOP",
        b">C: a BAD tag already in use",
        b"C: cp.1 NOOP",
        b"S: a OK done",
        b">C: a OK done",
        b">C: cp.1 BAD tag already in use",
    ])


# -- IDLE -----------------------------------------------------------------------------------------


def test_idle_passes_pushes_and_ends_with_done(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"S: * 6 EXISTS",
        b">C: * 6 EXISTS",
        b"S: * 6 RECENT",
        b">C: * 6 RECENT",
        b"C: DONE",
        b">S: DONE",
        b"S: i OK Idle completed (3.493 + 3.491 + 3.492 secs).",
        b">C: i OK Idle completed (3.493 + 3.491 + 3.492 secs).",
        b"C: n noop",
        b">S: n NOOP",
    ])
    assert not play.session.idling


def test_done_sent_early_is_held_until_idling(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b"C| i IDLE\r\nDONE\r\n",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b">S: DONE",
    ])
    assert not play.session.idling


def test_commands_after_done_wait_for_the_end_of_idle(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"C| DONE\r\nn NOOP\r\n",
        b">S: DONE",
        b"S: i OK Idle completed",
        b">C: i OK Idle completed",
        b">S: n NOOP",
    ])


def test_any_line_ends_idle_and_only_done_reaches_the_upstream(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"C: x DELETE INBOX {5}",
        b">S: DONE",
        b"S: i OK Idle completed",
        b">C: i OK Idle completed",
    ])


def test_idle_refused_by_the_upstream(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: i BAD no mailbox selected",
        b">C: i BAD no mailbox selected",
        b"C: n NOOP",
        b">S: n NOOP",
    ])
    assert not play.session.idling


def test_second_continuation_during_idle_is_fail_closed(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"S: + again",
        b">C: * BYE upstream protocol error: unexpected continuation request",
        *BYE_CLOSE,
    ])


# -- upstream data the proxy must not pass ---------------------------------------------------------


def test_highestmodseq_codes_are_dropped(logged_in: PlaybookFactory) -> None:
    """Dovecot sends these to sessions that never enabled CONDSTORE."""
    logged_in()([
        b'C: a SELECT "INBOX"',
        b'>S: a SELECT "INBOX"',
        b"S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"S: * 5 EXISTS",
        b">C: * 5 EXISTS",
        b"S: * OK [UIDVALIDITY 1795772520] UIDs valid",
        b">C: * OK [UIDVALIDITY 1795772520] UIDs valid",
        b"S: * OK [HIGHESTMODSEQ 42] Highest",
        b"S: * OK [NOMODSEQ] No permanent modsequences",
        b"S: * ok [highestmodseq 43] lower case",
        b"S: a OK [READ-WRITE] Select completed (0.001 + 0.000 secs).",
        b">C: a OK [READ-WRITE] Select completed (0.001 + 0.000 secs).",
    ])


def test_fetch_literals_pass_through_untouched(logged_in: PlaybookFactory) -> None:
    body = b"Subject: x\r\n\r\na OK fake\r\n+ fake\r\n* BYE {3}\r\n"
    logged_in()([
        b"C: f UID fetch 1 (UID RFC822.SIZE BODY.PEEK[])",
        b">S: f UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[])",
        b"S| * 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (len(body), len(body)) + body[:10],
        b">C| * 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (len(body), len(body)) + body[:10],
        b"S| " + body[10:] + b")\r\nf OK Fetch completed.\r\n",
        b">C| " + body[10:] + b")\r\nf OK Fetch completed.\r\n",
    ])


def test_status_text_ending_in_a_marker_is_not_a_literal(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: a NOOP",
        b">S: a NOOP",
        b"S| * OK [ALERT] quota at {80}\r\na OK done {5}\r\n",
        b">C| * OK [ALERT] quota at {80}\r\na OK done {5}\r\n",
    ])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"S: zz OK what", b"tagged response to no command in flight"),
        (b"S: + go ahead", b"unexpected continuation request"),
        (b"S: * ENABLED CONDSTORE", b"ENABLED without an ENABLE"),
        (b"S: garbage", b"tagged response without OK/NO/BAD"),
        (b"S: ", b"empty response line"),
        (b"S: a PREAUTH x", b"tagged response without OK/NO/BAD"),
    ],
)
def test_upstream_nonsense_ends_the_session(logged_in: PlaybookFactory, line: bytes, reason: bytes) -> None:
    play = logged_in()
    play([line, b">C: * BYE upstream protocol error: " + reason, *BYE_CLOSE])
    assert play.session.closed
    play([b"S: * 1 EXISTS", b"C: a NOOP", b"~ server_lost", b"~ client_lost", b"~ autologout"])


def test_upstream_answering_a_command_we_answered_ourselves_is_fail_closed(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C| a NOOP\r\nb FROB\r\n",
        b">S: a NOOP",
        b"S: b OK forged",
        b">C: * BYE upstream protocol error: tagged response to no command in flight",
        *BYE_CLOSE,
    ])


# -- endings --------------------------------------------------------------------------------------


def test_logout_ends_cleanly_without_a_second_bye(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b"C: o LOGOUT",
        b">S: o LOGOUT",
        b"S: * BYE Logging out",
        b">C: * BYE Logging out",
        b"S: o OK Logout completed.",
        b">C: o OK Logout completed.",
        b"~ server_lost connection closed",
        b"! CloseClient",
    ])
    assert play.session.closed
    assert [a for a in play.actions if isinstance(a, CloseClient)] == [CloseClient("upstream closed after BYE")]


def test_upstream_lost_without_bye(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"~ server_lost connection reset",
        b">C: * BYE upstream connection lost: connection reset",
        *BYE_CLOSE,
        b"~ server_lost again",
    ])


def test_client_lost_closes_upstream(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([b"~ client_lost", b"! CloseServer", b"~ client_lost", b"S: * 1 EXISTS"])
    assert play.session.closed


def test_autologout_and_shutdown(logged_in: PlaybookFactory) -> None:
    logged_in()([b"~ autologout", b">C: * BYE Autologout; idle for too long", *BYE_CLOSE, b"~ shutdown x"])
    logged_in()([b"~ shutdown Server shutting down", b">C: * BYE Server shutting down", *BYE_CLOSE])


# -- limits and garbage ---------------------------------------------------------------------------


def test_overlong_client_line(logged_in: PlaybookFactory) -> None:
    logged_in(max_line=1024)([
        b"C| a NOOP " + b"x" * 1100,
        b">C: * BYE client line too long",
        *BYE_CLOSE,
    ])


def test_client_line_at_the_limit_is_fine(logged_in: PlaybookFactory) -> None:
    line = b"a SEARCH TEXT " + b"x" * (1024 - 16)
    logged_in(max_line=1024)([b"C: " + line, b">S: " + line])


def test_overlong_upstream_line(logged_in: PlaybookFactory) -> None:
    logged_in(max_response_line=2048)([
        b"C: a NOOP",
        b">S: a NOOP",
        b"S| * 1 FETCH (FLAGS (" + b"\\x" * 1100,
        b">C: * BYE upstream line too long",
        *BYE_CLOSE,
    ])


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"C| \x00\xff\xfe\r\n", b">C: * BAD malformed command"),
        (b"C: ", b">C: * BAD malformed command"),
        (b"C:      ", b">C: * BAD malformed command"),
        (b"C: a1 (((", b">C: a1 BAD malformed command"),
        (b"C: a1 FETCH (((", b">C: a1 BAD unbalanced parentheses"),
        (b'C: a1 LOGIN "bob', b">C: a1 BAD unterminated quoted string"),
        (b"C: a1 SELECT caf\xc3\xa9", b">C: a1 BAD 8-bit characters in an atom"),
        (b"C: a+1 NOOP", b">C: * BAD malformed command"),
        (b"C: DONE", b">C: DONE BAD malformed command"),
        (b"C: a UID FROB 1", b">C: a BAD command UID FROB is not supported"),
        (b"C| GET / HTTP/1.1\r\n", b">C: GET BAD malformed command"),
    ],
)
def test_client_garbage_is_answered_and_the_session_goes_on(
    logged_in: PlaybookFactory, line: bytes, answer: bytes
) -> None:
    play = logged_in()
    play([line, answer, b"C: z NOOP", b">S: z NOOP"])
    assert not play.session.closed


# -- the session never raises, whatever the peers send ---------------------------------------------

_CLIENT_WORDS = [
    b"a LOGIN bob x\r\n", b"b AUTHENTICATE PLAIN\r\n", b"AGJvYgB4\r\n", b"*\r\n", b"c IDLE\r\n",
    b"DONE\r\n", b"d STARTTLS\r\n", b"e APPEND INBOX {3}\r\n", b"f APPEND INBOX {2+}\r\n", b"abc",
    b" {1}\r\n", b" ~{1}\r\n", b"\r\n", b"g NOOP\r\n", b"h FETCH 1 (BODY[])\r\n", b"x {2}\r\n",
    b"i ENABLE X\r\n", b"j SELECT {1+}\r\nA\r\n", b"\xff\x00", b"(((", b"k LOGOUT\r\n",
    b"l AUTHENTICATE LOGIN Ym9i\r\n", b"m COMPRESS DEFLATE\r\n",
]
_SERVER_WORDS = [
    b"+ \r\n", b"+ idling\r\n", b"a OK [CAPABILITY IMAP4rev1 IDLE] done\r\n", b"b NO x\r\n",
    b"c OK done\r\n", b"e OK [APPENDUID 1 2] done\r\n", b"e NO [TRYCREATE] x\r\n", b"f BAD x\r\n",
    b"g OK done\r\n", b"* 3 EXISTS\r\n", b"* 1 FETCH (BODY[] {4}\r\n", b"xy)\r\n", b"zz",
    b"* BYE bye\r\n", b"* OK [HIGHESTMODSEQ 4] x\r\n", b"* CAPABILITY IMAP4rev1 LITERAL+\r\n",
    b"j OK done\r\n", b"k OK done\r\n", b"h OK done\r\n", b"garbage\r\n", b"\r\n", b"* ENABLED\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("C"), st.lists(st.sampled_from(_CLIENT_WORDS), min_size=1, max_size=4)),
            st.tuples(st.just("S"), st.lists(st.sampled_from(_SERVER_WORDS), min_size=1, max_size=4)),
            st.tuples(st.just("C"), st.lists(st.binary(max_size=20), min_size=1, max_size=2)),
            st.tuples(st.just("S"), st.lists(st.binary(max_size=20), min_size=1, max_size=2)),
        ),
        max_size=25,
    ),
    st.booleans(),
)
def test_session_never_raises(
    make_session: SessionFactory, steps: list[tuple[str, list[bytes]]], literal_plus: bool
) -> None:
    caps = b"IMAP4rev1 IDLE SASL-IR AUTH=PLAIN AUTH=LOGIN MULTIAPPEND" + (b" LITERAL+" if literal_plus else b"")
    session = make_session(client_tls=False, starttls_available=True, plaintext_login_allowed=True,
                           max_line=256, max_literal=64)
    session.server_data(b"* OK [CAPABILITY " + caps + b"] hi\r\n")
    closed_seen = False
    for side, words in steps:
        data = b"".join(words)
        actions = session.client_data(data) if side == "C" else session.server_data(data)
        if closed_seen:
            assert actions == []
        closed_seen = session.closed
    session.client_lost()
    assert session.closed
    Playbook(session)([b"C: a NOOP", b"S: * 1 EXISTS"])


def test_unsolicited_upstream_bye_is_passed_and_not_repeated(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"S: * BYE Server shutting down.",
        b">C: * BYE Server shutting down.",
        b"~ server_lost closed",
        b"! CloseClient",
    ])
