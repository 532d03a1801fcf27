"""The splice point: our header goes on top, a client's header of our name is neutralised at the
same length, every other byte of the message stays as sent; SMTP transparency is exact."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caliproxy.privacy.header import HEADER_NAME, SPOOFED_NAME
from caliproxy.privacy.header_fields import header_bounds
from caliproxy.smtp.message import body_prefix, dot_stuff, header_block, splice_header, splice_parts

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
           b"DKIM-Signature: v=1; a=rsa-sha256;\r\n b=abc\r\n\r\nbody line\r\n.leading dot\r\n")
HEADER = b"X-Caliproxy-Privacy: v=1; level=internal;" + b" " * 20 + b"\r\n"


def test_our_header_goes_on_top_and_the_message_follows_unchanged():
    spliced = splice_header(MESSAGE, HEADER)
    assert spliced == HEADER + MESSAGE


def test_an_empty_header_block_adds_nothing():
    assert splice_header(MESSAGE, b"") == MESSAGE


def test_a_client_supplied_header_of_our_name_is_neutralised_at_the_same_length():
    spoofed = b"X-Caliproxy-Privacy: v=1; level=public;\r\n" + MESSAGE
    for header in (HEADER, b""):
        spliced = splice_header(spoofed, header)
        assert len(spliced) == len(header) + len(spoofed)
        rest = spliced[len(header):]
        assert not re.search(rb"(?im)^" + HEADER_NAME.encode() + rb"\s*:", rest)
        assert rest.startswith(SPOOFED_NAME.encode() + b": v=1; level=public;")


def test_a_header_of_our_name_in_the_body_is_left_alone():
    quoted = MESSAGE + b"X-Caliproxy-Privacy: quoted in a forwarded text\r\n"
    assert splice_header(quoted, HEADER) == HEADER + quoted


def test_a_header_block_without_crlf_is_refused():
    with pytest.raises(ValueError):
        splice_header(MESSAGE, b"X-Caliproxy-Privacy: v=1;")


@given(st.binary(max_size=300), st.sampled_from([b"", HEADER]))
def test_splice_length_is_always_header_plus_message(raw, header):
    assert len(splice_header(raw, header)) == len(header) + len(raw)
    assert b"".join(splice_parts(raw, header)) == splice_header(raw, header)


def test_a_message_without_a_spoofed_header_is_relayed_without_a_copy():
    header, message = splice_parts(MESSAGE, HEADER)
    assert header is HEADER and message is MESSAGE


def test_header_block_is_what_imap_calls_body_header():
    block = header_block(MESSAGE)
    assert block.endswith(b"b=abc\r\n\r\n")
    assert block == MESSAGE[: header_bounds(MESSAGE)[1]]
    assert body_prefix(MESSAGE, 9) == b"body line"


def _unstuff(wire: bytes) -> bytes:
    """What a receiver (aiosmtpd, Postfix) makes of DATA content: RFC 5321 §4.5.2."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@given(st.lists(st.sampled_from([b".", b"..", b"a", b".a", b"\n", b"\r", b" ", b"\r\n", b"\r\n."]),
                max_size=30))
def test_dot_stuffing_round_trips_every_crlf_terminated_message(parts):
    content = b"".join(parts) + b"\r\n"
    wire = dot_stuff(content)
    assert b"\r\n.\r\n" not in wire[:-3] and not wire[:-3].startswith(b".\r\n")
    assert _unstuff(wire) == content


def test_dot_stuffing_examples():
    assert dot_stuff(b".hidden\r\nok\r\n..two\r\n") == b"..hidden\r\nok\r\n...two\r\n.\r\n"
    assert dot_stuff(b"no final newline") == b"no final newline\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"
