"""DATA framing in whole chunks: the end is found wherever the chunks split, the dot-stuffing is
undone exactly, pipelined commands after the data are handed back, and size is bounded."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from caliproxy.smtp.data import DataFramer
from caliproxy.smtp.message import dot_stuff

LINES = st.lists(st.sampled_from([b".", b"..", b"a", b".a", b"\n", b"\r", b" ", b"\r\n", b"\r\n.", b"xyz"]),
                 max_size=30)


def feed_in_chunks(framer: DataFramer, wire: bytes, cuts: list[int]) -> bytes:
    points = [0, *sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]
    for start, end in itertools.pairwise(points):
        rest = framer.feed(wire[start:end])
        if rest is not None:
            return rest + wire[end:]
    raise AssertionError("the end of data was never found")


@given(LINES, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_content_is_what_the_client_meant_and_what_follows_is_given_back(parts, cuts):
    content = b"".join(parts) + b"\r\n"
    wire = dot_stuff(content) + b"QUIT\r\n"
    framer = DataFramer(None)
    assert feed_in_chunks(framer, wire, cuts) == b"QUIT\r\n"
    assert framer.content() == content
    assert framer.received == len(dot_stuff(content)) - 3


@given(LINES, st.integers(min_value=0, max_value=60), st.lists(st.integers(0, 400), max_size=10))
def test_past_the_limit_nothing_more_is_kept_but_the_end_is_still_found(parts, limit, cuts):
    content = b"".join(parts) + b"\r\n"
    wire = dot_stuff(content) + b"NOOP\r\n"
    framer = DataFramer(limit)
    assert feed_in_chunks(framer, wire, cuts) == b"NOOP\r\n"
    assert framer.too_big == (len(dot_stuff(content)) - 3 > limit)
    assert framer.received == len(dot_stuff(content)) - 3
    if not framer.too_big:
        assert framer.content() == content


def test_an_empty_message_and_a_lone_dot_line():
    framer = DataFramer(None)
    assert framer.feed(b".\r\n") == b""
    assert framer.content() == b""
    framer = DataFramer(None)
    assert framer.feed(b"..\r\n.\r\n") == b""
    assert framer.content() == b".\r\n"


def test_a_huge_message_keeps_only_a_few_bytes_once_too_big():
    framer = DataFramer(1000)
    for _ in range(100):
        assert framer.feed(b"x" * 998 + b"\r\n") is None
    assert framer.too_big
    assert len(framer._buffer) < 10
    assert framer.feed(b".\r\n") == b""
    assert framer.received == 100_000
