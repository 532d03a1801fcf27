"""What a client APPENDs loses any verdict of its own making: fields of our name in the message's
header are renamed in place, however the upload is cut into chunks (pure, no servers)."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from caliproxy.imap.virtual import FieldNames, StreamNeutraliser, spoof_offsets

from .imap_model import renamed

RENAMED = b"X-Caliproxy-Spoofed"


def _expected(message: bytes) -> bytes:
    return renamed(message)


def _stream(message: bytes, cuts: list[int]) -> bytes:
    neutraliser = StreamNeutraliser()
    bounds = sorted({0, len(message), *(c % (len(message) + 1) for c in cuts)})
    pieces = list(itertools.pairwise(bounds)) or [(0, 0)]
    out = b"".join(neutraliser.feed(message[a:b], b == len(message)) for a, b in pieces)
    return out


_LINES = st.sampled_from([
    b"X-Caliproxy-Privacy: v=1; level=public; pi=99;", b"x-caliproxy-privacy :forged", b"X-Caliproxy-Privacy\t: x",
    b"X-Caliproxy-Privacy-Other: not ours", b"X-Caliproxy-Priv: short", b"Subject: X-Caliproxy-Privacy: no",
    b"\tX-Caliproxy-Privacy: a folded line", b"From: a@example.org", b"X-Caliproxy-Spoofed: already",
])


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(_LINES, max_size=6),
       body=st.lists(st.sampled_from([b"X-Caliproxy-Privacy: in the body", b"text", b""]), max_size=4),
       end=st.sampled_from([b"\r\n", b""]),
       cuts=st.lists(st.integers(0, 1000), max_size=6))
def test_fields_of_our_name_are_renamed_at_the_same_length_across_any_chunking(fields, body, end, cuts):
    message = b"".join(f + b"\r\n" for f in fields) + end + b"".join(b + b"\r\n" for b in body)
    got = _stream(message, cuts)
    assert len(got) == len(message)
    assert got == _expected(message)


def test_every_split_point_of_a_forged_header():
    message = (b"Subject: sent\r\nX-Caliproxy-Privacy: v=1; level=public;\r\n\tfolded\r\n"
               b"x-caliproxy-privacy  : again\r\n\r\nX-Caliproxy-Privacy: quoted in the body\r\n")
    want = _expected(message)
    assert want.count(RENAMED) == 2 and want.endswith(b"X-Caliproxy-Privacy: quoted in the body\r\n")
    for first in range(len(message) + 1):
        for second in range(first, len(message) + 1, 7):
            assert _stream(message, [first, second]) == want


def test_a_message_without_our_field_passes_as_is_chunk_for_chunk():
    neutraliser = StreamNeutraliser()
    chunks = [b"Subject: x\r\nFrom: a@b\r\n\r\n", b"X-Caliproxy-Privacy: body\r\n" * 3]
    assert [neutraliser.feed(c, i == 1) for i, c in enumerate(chunks)] == chunks
    assert re.search(rb"Spoofed", b"".join(chunks)) is None


def test_a_configured_name_is_renamed_and_the_default_one_left_alone_at_every_split_point():
    names = FieldNames(b"X-Home-Privacy", b"X-Home-Spoofed")
    message = (b"x-home-privacy : forged\r\nX-Caliproxy-Privacy: ordinary now\r\nX-Home-Privacy-2: no\r\n"
               b"\r\nX-Home-Privacy: body\r\n")
    want = message.replace(b"x-home-privacy :", b"X-Home-Spoofed :", 1)
    for cut in range(len(message) + 1):
        neutraliser = StreamNeutraliser(names)
        got = neutraliser.feed(message[:cut], False) + neutraliser.feed(message[cut:], True)
        assert got == want
    assert spoof_offsets(message, names) == (0,)
    assert spoof_offsets(message) == (message.index(b"X-Caliproxy-Privacy"),)
