"""Literals both ways: our own ``+``, LITERAL+, the gate toward an upstream without it, APPEND streaming."""

from __future__ import annotations

from tests.imap.conftest import PlaybookFactory

NO_LITERAL_PLUS = b"IMAP4rev1 IDLE MULTIAPPEND AUTH=PLAIN"
CONTINUE = b">C: + Ready for literal data"


def test_client_sync_literal_answered_by_us(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a LOGIN {3}",
        CONTINUE,
        b"C| bo",
        b"C| b",
        b"C:  secret",
        b">S| a LOGIN {3+}\r\nbob secret\r\n",
    ])


def test_client_nonsync_literal(ready: PlaybookFactory) -> None:
    ready()([
        b"C| a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n",
        b">S| a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n",
    ])


def test_empty_literal(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: a SELECT {0}",
        CONTINUE,
        b"C: ",
        b">S| a SELECT {0+}\r\n\r\n",
    ])


def test_literal_inside_a_list(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b'C| a ID ("name" {4+}\r\nT\r\nB)\r\n',
        b'>S| a ID ("name" {4+}\r\nT\r\nB)\r\n',
    ])


def test_gate_holds_everything_until_the_upstreams_continuation(ready: PlaybookFactory) -> None:
    """Toward an upstream without LITERAL+, nothing after a marker is sent before its ``+``."""
    play = ready(NO_LITERAL_PLUS)
    play([
        b"C| a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\nb NOOP\r\n",
        b">S: a LOGIN {3}",
        b"S: + go ahead",
        b">S| bob {6}\r\n",
        b"S: + go ahead",
        b">S| secret\r\nb NOOP\r\n",
        b"S: a OK Logged in",
        b"! Authenticated bob",
        b">C: a OK Logged in",
    ])


def test_gate_refused_command_drops_its_held_bytes_only(ready: PlaybookFactory) -> None:
    ready(NO_LITERAL_PLUS)([
        b"C| a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\nb NOOP\r\n",
        b">S: a LOGIN {3}",
        b"S: a NO [AUTHENTICATIONFAILED] no literals today",
        b">C: a NO [AUTHENTICATIONFAILED] no literals today",
        b">S: b NOOP",
        b"S: b OK NOOP completed",
        b">C: b OK NOOP completed",
    ])


def test_gate_refused_at_the_second_literal(ready: PlaybookFactory) -> None:
    ready(NO_LITERAL_PLUS)([
        b"C| a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\nb NOOP\r\n",
        b">S: a LOGIN {3}",
        b"S: + ok",
        b">S| bob {6}\r\n",
        b"S: a BAD line too long",
        b">C: a BAD line too long",
        b">S: b NOOP",
    ])


def test_gates_of_successive_commands(logged_in: PlaybookFactory) -> None:
    logged_in(NO_LITERAL_PLUS, post=NO_LITERAL_PLUS)([
        b"C| a SELECT {1+}\r\nA\r\nb SELECT {1+}\r\nB\r\nc NOOP\r\n",
        b">S: a SELECT {1}",
        b"S: + ",
        b">S| A\r\nb SELECT {1}\r\n",
        b"S: + ",
        b">S| B\r\nc NOOP\r\n",
    ])


def test_literal_minus_upstream_takes_small_nonsync_literals(ready: PlaybookFactory) -> None:
    small, big = b"x" * 4096, b"y" * 4097
    ready(b"IMAP4rev1 LITERAL- AUTH=PLAIN")([
        b"C| a LOGIN {4096+}\r\n" + small + b" pw\r\n",
        b">S| a LOGIN {4096+}\r\n" + small + b" pw\r\n",
        b"C| b LOGIN {4097+}\r\n" + big + b" pw\r\n",
        b">S: b LOGIN {4097}",
        b"S: + ",
        b">S| " + big + b" pw\r\n",
    ])


def test_oversized_sync_literal_is_refused_and_framing_stays_in_step(ready: PlaybookFactory) -> None:
    ready(max_line=1024)([
        b"C: a LOGIN {2000}",
        b">C: a BAD literal too large for this command",
        b"C: b NOOP",
        b">S: b NOOP",
    ])


def test_oversized_nonsync_literal_ends_the_session(ready: PlaybookFactory) -> None:
    ready(max_line=1024)([
        b"C: a LOGIN {2000+}",
        b">C: * BYE literal too large",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_command_too_long_across_literals_is_refused(ready: PlaybookFactory) -> None:
    piece = b"x" * 600
    ready(max_line=1024)([
        b"C| a LOGIN {600+}\r\n" + piece + b" {600+}\r\n" + piece + b" {10}\r\n",
        b">C: a BAD command too long",
        b"C: b NOOP",
        b">S: b NOOP",
    ])


def test_refused_command_with_nonsync_literal_is_absorbed(ready: PlaybookFactory) -> None:
    ready()([
        b"C| a FROB {5+}\r\nhello\r\nb NOOP\r\n",
        b">C: a BAD command FROB is not supported",
        b">S: b NOOP",
    ])


def test_malformed_command_with_literal_is_absorbed(ready: PlaybookFactory) -> None:
    ready()([
        b"C| a (x {5+}\r\nb NOO\r\nc NOOP\r\n",
        b">C: a BAD malformed command",
        b">S: c NOOP",
        b"C: d (x {5}",
        b">C: d BAD malformed command",
        b"C: e NOOP",
        b">S: e NOOP",
    ])


def test_literal8_is_refused_wherever_it_appears(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a LOGIN ~{3}",
        b">C: a BAD literal8 is not offered",
        b"C| b LOGIN {1+}\r\nA ~{2+}\r\n\x00\x01\r\n",
        b">C: b BAD literal8 is not offered",
        b"C| c LOGIN {1+}\r\nA ~{2}\r\n",
        b">C: c BAD literal8 is not offered",
        b"C: d NOOP",
        b">S: d NOOP",
    ])


# -- APPEND ---------------------------------------------------------------------------------------


def test_append_streams_its_literal(logged_in: PlaybookFactory) -> None:
    play = logged_in()
    play([
        b'C: a APPEND "Sent" (\\Seen) "27-Nov-2026 10:00:00 +0000" {11}',
        b'>S: a APPEND "Sent" (\\Seen) "27-Nov-2026 10:00:00 +0000" {11+}',
        CONTINUE,
        b"C| hello ",
        b">S| hello ",
        b"C| wo",
        b">S| wo",
        b"C| rld\r\n",
        b">S| rld\r\n",
        b"S: a OK [APPENDUID 1795772522 2] Append completed.",
        b">C: a OK [APPENDUID 1795772522 2] Append completed.",
    ])
    assert play.statuses == [("APPEND", "OK", False)]


def test_append_body_is_never_parsed(logged_in: PlaybookFactory) -> None:
    body = b"x LOGOUT\r\n* BYE {5}\r\n\x00\xff"
    logged_in()([
        b"C| a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n",
        b">S| a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n",
    ])


def test_multiappend(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: a APPEND INBOX {3}",
        b">S: a APPEND INBOX {3+}",
        CONTINUE,
        b"C| abc (\\Seen) {2}\r\n",
        b">S| abc (\\Seen) {2+}\r\n",
        CONTINUE,
        b"C| de {0+}\r\n\r\n",
        b">S| de {0+}\r\n\r\n",
        b"S: a OK [APPENDUID 1 5:7] Append completed.",
        b">C: a OK [APPENDUID 1 5:7] Append completed.",
    ])


def test_append_toward_upstream_without_literal_plus(logged_in: PlaybookFactory) -> None:
    logged_in(NO_LITERAL_PLUS, post=NO_LITERAL_PLUS)([
        b"C: a APPEND INBOX {5}",
        b">S: a APPEND INBOX {5}",
        CONTINUE,
        b"C| hello\r\nb NOOP\r\n",
        b"S: + OK",
        b">S| hello\r\nb NOOP\r\n",
    ])


def test_append_refused_upstream_mid_stream_is_absorbed(logged_in: PlaybookFactory) -> None:
    """The client keeps sending the body we said ``+`` to; none of it may reach the upstream."""
    play = logged_in(NO_LITERAL_PLUS, post=NO_LITERAL_PLUS)
    play([
        b"C: a APPEND Nonexistent {26}",
        b">S: a APPEND Nonexistent {26}",
        CONTINUE,
        b"S: a NO [TRYCREATE] Mailbox doesn't exist",
        b">C: a NO [TRYCREATE] Mailbox doesn't exist",
        b"C| x DELETE INBOX\r\ny LOGOUT\r\n",
        b"C: ",
        b"C: b NOOP",
        b">S: b NOOP",
    ])
    assert play.statuses == [("APPEND", "NO", False)]


def test_multiappend_refused_at_a_later_message(logged_in: PlaybookFactory) -> None:
    logged_in(NO_LITERAL_PLUS, post=NO_LITERAL_PLUS)([
        b"C: a APPEND INBOX {3}",
        b">S: a APPEND INBOX {3}",
        CONTINUE,
        b"S: + ",
        b"C| abc {4}\r\n",
        b">S| abc {4}\r\n",
        CONTINUE,
        b"S: a NO [OVERQUOTA] Quota exceeded",
        b">C: a NO [OVERQUOTA] Quota exceeded",
        # the literal we granted, then a third message whose synchronizing literal the
        # tagged answer already refused
        b"C| wxyz {5}\r\n",
        b"C: b NOOP",
        b">S: b NOOP",
    ])


def test_multiappend_refused_then_nonsync_literal_absorbed(logged_in: PlaybookFactory) -> None:
    logged_in(NO_LITERAL_PLUS, post=NO_LITERAL_PLUS)([
        b"C: a APPEND INBOX {3}",
        b">S: a APPEND INBOX {3}",
        CONTINUE,
        b"S: a NO [TRYCREATE] no",
        b">C: a NO [TRYCREATE] no",
        b"C| abc {9+}\r\nc DELETE \r\n",
        b"C: b NOOP",
        b">S: b NOOP",
    ])


def test_append_literal_up_to_the_limit(logged_in: PlaybookFactory) -> None:
    body = b"m" * 4096
    logged_in(max_literal=4096, max_line=1024)([
        b"C: a APPEND INBOX {4096}",
        b">S: a APPEND INBOX {4096+}",
        CONTINUE,
        b"C| " + body + b"\r\n",
        b">S| " + body + b"\r\n",
    ])


def test_append_over_the_limit_sync_is_refused(logged_in: PlaybookFactory) -> None:
    logged_in(max_literal=4096, max_line=1024)([
        b"C: a APPEND INBOX {4097}",
        b">C: a BAD message too large",
        b"C: b NOOP",
        b">S: b NOOP",
    ])


def test_append_over_the_limit_nonsync_ends_the_session(logged_in: PlaybookFactory) -> None:
    logged_in(max_literal=4096, max_line=1024)([
        b"C: a APPEND INBOX {4097+}",
        b">C: * BYE literal too large",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_later_multiappend_message_over_the_limit_ends_the_session(logged_in: PlaybookFactory) -> None:
    logged_in(max_literal=4096)([
        b"C| a APPEND INBOX {1+}\r\nx {4097+}\r\n",
        b">S| a APPEND INBOX {1+}\r\nx",
        b">C: * BYE APPEND refused: message too large",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_append_refusals(logged_in: PlaybookFactory, ready: PlaybookFactory) -> None:
    ready()([
        b"C: a APPEND INBOX {5}",
        b">C: a BAD not authenticated",
    ])
    logged_in()([
        b"C: a APPEND INBOX ~{5}",
        b">C: a BAD literal8 is not offered",
        b"C: b APPEND INBOX CATENATE (TEXT {5}",
        b">C: b BAD unbalanced parentheses",
        b"C: c APPEND INBOX UTF8 (~{5}",
        b">C: c BAD literal8 is not offered",
        b'C: d APPEND INBOX (\\Seen) "date" junk {5}',
        b">C: d BAD unexpected APPEND arguments (CATENATE and UTF8 are not offered)",
        b'C: e APPEND INBOX CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=3")',
        b">C: e BAD command APPEND is not supported",
        b"C: f NOOP",
        b">S: f NOOP",
    ])


def test_append_junk_after_a_streamed_message_ends_the_session(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C| a APPEND INBOX {1+}\r\nx CATENATE\r\n",
        b">S| a APPEND INBOX {1+}\r\nx",
        b">C: * BYE unexpected APPEND arguments",
        b"! CloseClient",
        b"! CloseServer",
    ])
