"""The incremental framer: lines and literals recovered exactly, however the bytes are split."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caliproxy.imap.framing import Framer, Line, LineTooLong, LiteralChunk
from caliproxy.imap.grammar import may_carry_literal

# -- driving a framer -----------------------------------------------------------------------------

Item = tuple[str, object]  # ("line", Line) or ("literal", bytes)


def drain(framer: Framer, chunks: list[bytes], *, grant: bool = True) -> list[Item]:
    """Feed ``chunks`` one by one, pulling every event; literal chunks are joined per literal.

    A synchronizing literal the framer pauses on is granted (or refused when ``grant`` is False).
    """
    items: list[Item] = []
    pieces: list[bytes] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        while True:
            event = framer.next_event()
            if event is None:
                if framer.awaiting_grant:
                    framer.grant_literal() if grant else framer.refuse_literal()
                    continue
                break
            if isinstance(event, Line):
                assert not pieces, "a line inside a literal"
                items.append(("line", event))
            else:
                pieces.append(event.data)
                if event.last:
                    items.append(("literal", b"".join(pieces)))
                    pieces = []
    assert not pieces, "stream ended inside a literal"
    return items


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def client_framer(max_line: int = 4096) -> Framer:
    return Framer(max_line=max_line, pause_on_sync_literal=True)


def server_framer(max_line: int = 4096) -> Framer:
    return Framer(max_line=max_line, literal_policy=may_carry_literal)


# -- a model of logical lines, to build streams and the events they must give ----------------------


@dataclass(frozen=True)
class Piece:
    """One fragment of a logical line and the literal it announces (None for the last)."""

    text: bytes
    eol: bytes
    literal: bytes | None = None
    binary: bool = False
    nonsync: bool = False

    def marker(self) -> bytes:
        if self.literal is None:
            return b""
        return b"%s{%d%s}" % (b"~" if self.binary else b"", len(self.literal), b"+" if self.nonsync else b"")


def build(lines: list[list[Piece]]) -> tuple[bytes, list[Item]]:
    stream = bytearray()
    expected: list[Item] = []
    for pieces in lines:
        for index, piece in enumerate(pieces):
            data = piece.text + piece.marker() + piece.eol
            stream += data
            if piece.literal is None:
                expected.append(("line", Line(data, continued=index > 0)))
            else:
                expected.append(
                    (
                        "line",
                        Line(
                            data,
                            literal=len(piece.literal),
                            sync=not piece.nonsync,
                            binary=piece.binary,
                            continued=index > 0,
                        ),
                    )
                )
                stream += piece.literal
                expected.append(("literal", piece.literal))
    return bytes(stream), expected


# Text that can never end in (or turn into) a literal marker or a line end: no braces, "~", CR, LF.
_TEXT = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"{}~\r\n"))
_EOL = st.sampled_from([b"\r\n", b"\n"])
_LITERAL = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"", b"\r\n", b"a {5}\r\n", b"x\n", b"}\r\n", b"{3}\r\nabc"]),
)


@st.composite
def logical_line(draw: st.DrawFn, first_text: st.SearchStrategy[bytes]) -> list[Piece]:
    count = draw(st.integers(0, 3))
    pieces = []
    for index in range(count):
        text = draw(first_text if index == 0 else _TEXT)
        pieces.append(
            Piece(
                text=text,
                eol=draw(_EOL),
                literal=draw(_LITERAL),
                binary=draw(st.booleans()),
                nonsync=draw(st.booleans()),
            )
        )
    last_text = draw(first_text if count == 0 else _TEXT)
    pieces.append(Piece(text=last_text, eol=draw(_EOL)))
    return pieces


_CLIENT_HEAD = st.builds(lambda tag, rest: tag + b" " + rest, st.sampled_from([b"a1", b"A.2", b"*"]), _TEXT)
# Message data may announce literals; status responses whose text happens to end in "{5}" must not.
_SERVER_HEAD = st.sampled_from(
    [b"* 1 FETCH (BODY[] ", b"* 12 FETCH (UID 3 BODY[HEADER] ", b"* LIST () \"/\" ", b"* SEARCH 1 2"]
)


@st.composite
def status_line(draw: st.DrawFn) -> list[Piece]:
    head = draw(st.sampled_from([b"a1 OK ", b"a1 NO [ALERT] ", b"* OK ", b"* BYE ", b"* BAD ", b"+ "]))
    return [Piece(text=head + draw(_TEXT) + b"{%d}" % draw(st.integers(0, 99)), eol=draw(_EOL))]


_CUTS = st.lists(st.integers(0, 10_000), max_size=30)


# -- properties -----------------------------------------------------------------------------------


@given(st.lists(logical_line(_CLIENT_HEAD), max_size=5), _CUTS)
def test_client_stream_frames_identically_however_split(lines: list[list[Piece]], cuts: list[int]) -> None:
    """Sync, non-sync, literal8, empty literals and continued lines: any split, same events."""
    stream, expected = build(lines)
    assert drain(client_framer(), split_at(stream, cuts)) == expected


@given(st.lists(st.one_of(logical_line(_SERVER_HEAD), status_line()), max_size=6), _CUTS)
def test_server_stream_frames_identically_however_split(lines: list[list[Piece]], cuts: list[int]) -> None:
    """Server side: FETCH literals are framed, status responses ending in ``{n}`` are not."""
    stream, expected = build(lines)
    assert drain(server_framer(), split_at(stream, cuts)) == expected


@given(st.lists(logical_line(_CLIENT_HEAD), min_size=1, max_size=4))
def test_byte_at_a_time_equals_all_at_once(lines: list[list[Piece]]) -> None:
    stream, expected = build(lines)
    assert drain(client_framer(), [stream[i : i + 1] for i in range(len(stream))]) == expected
    assert drain(client_framer(), [stream]) == expected


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 300_000), st.integers(1, 70_000), st.booleans())
def test_literal_of_any_size_round_trips(size: int, step: int, nonsync: bool) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    stream = b"a APPEND INBOX {%d%s}\r\n" % (size, b"+" if nonsync else b"") + body + b"\r\n"
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    items = drain(client_framer(), chunks)
    assert [kind for kind, _ in items] == ["line", "literal", "line"]
    assert items[1][1] == body


# -- examples -------------------------------------------------------------------------------------


def test_multiappend_line_is_fragments_and_literals() -> None:
    stream = b"a1 APPEND INBOX (\\Seen) {3}\r\nabc (\\Draft) {4+}\r\ndefg ~{2}\r\n\x00\x01\r\n"
    items = drain(client_framer(), [stream])
    assert items == [
        ("line", Line(b"a1 APPEND INBOX (\\Seen) {3}\r\n", literal=3, sync=True)),
        ("literal", b"abc"),
        ("line", Line(b" (\\Draft) {4+}\r\n", literal=4, sync=False, continued=True)),
        ("literal", b"defg"),
        ("line", Line(b" ~{2}\r\n", literal=2, sync=True, binary=True, continued=True)),
        ("literal", b"\x00\x01"),
        ("line", Line(b"\r\n", continued=True)),
    ]
    lines = [event for kind, event in items if isinstance(event, Line)]
    assert [line.without_marker() for line in lines] == [b"a1 APPEND INBOX (\\Seen) ", b" (\\Draft) ", b" ", b""]


def test_client_pauses_after_sync_literal_until_granted() -> None:
    """Bytes after ``{n}`` are not framed until the caller decides: they may not be a literal."""
    framer = client_framer()
    framer.receive_data(b"a LOGIN {3}\r\nbob pass\r\n")
    line = framer.next_event()
    assert isinstance(line, Line) and line.literal == 3 and line.sync
    assert framer.awaiting_grant
    assert framer.next_event() is None
    assert framer.next_event() is None
    framer.grant_literal()
    assert not framer.awaiting_grant
    assert framer.next_event() == LiteralChunk(b"bob", True)
    assert framer.next_event() == Line(b" pass\r\n", continued=True)


def test_refused_sync_literal_makes_next_bytes_a_new_line() -> None:
    framer = client_framer()
    framer.receive_data(b"a LOGIN {3}\r\nb NOOP\r\n")
    assert isinstance(framer.next_event(), Line)
    framer.refuse_literal()
    assert framer.next_event() == Line(b"b NOOP\r\n", continued=False)


def test_nonsync_literal_does_not_pause() -> None:
    framer = client_framer()
    framer.receive_data(b"a LOGIN {3+}\r\nbob x\r\n")
    assert isinstance(framer.next_event(), Line)
    assert not framer.awaiting_grant
    assert framer.next_event() == LiteralChunk(b"bob", True)


def test_empty_literal_still_ends_with_a_last_chunk() -> None:
    framer = client_framer()
    framer.receive_data(b"a LOGIN {0}\r\n")
    framer.next_event()
    framer.grant_literal()
    assert framer.next_event() == LiteralChunk(b"", True)
    assert framer.next_event() is None


def test_server_side_never_pauses() -> None:
    framer = server_framer()
    framer.receive_data(b"* 1 FETCH (BODY[] {2}\r\nhi)\r\n")
    assert isinstance(framer.next_event(), Line)
    assert not framer.awaiting_grant
    assert framer.next_event() == LiteralChunk(b"hi", True)


@pytest.mark.parametrize(
    "line",
    [b"a1 OK done {5}\r\n", b"* OK [ALERT] quota {5}\r\n", b"* BYE see you {5}\r\n", b"+ {5}\r\n",
     b"a1 no failed {12+}\r\n", b"* PREAUTH {0}\r\n"],
)
def test_server_status_responses_ending_in_a_marker_are_not_literals(line: bytes) -> None:
    framer = server_framer()
    framer.receive_data(line + b"* 1 EXISTS\r\n")
    assert framer.next_event() == Line(line)
    assert framer.next_event() == Line(b"* 1 EXISTS\r\n")


def test_literals_disabled_frames_markers_as_plain_text() -> None:
    """AUTHENTICATE and IDLE continuation lines carry no literals."""
    framer = client_framer()
    framer.literals_enabled = False
    framer.receive_data(b"dGVzdA== {5}\r\nDONE\r\n")
    assert framer.next_event() == Line(b"dGVzdA== {5}\r\n")
    assert not framer.awaiting_grant
    assert framer.next_event() == Line(b"DONE\r\n")


def test_line_over_the_limit_raises_before_its_end_arrives() -> None:
    framer = client_framer(max_line=100)
    framer.receive_data(b"a" * 100)
    assert framer.next_event() is None
    framer.receive_data(b"a")
    with pytest.raises(LineTooLong):
        framer.next_event()


def test_line_over_the_limit_raises_when_complete() -> None:
    framer = client_framer(max_line=100)
    framer.receive_data(b"a" * 99 + b"\r\n")
    with pytest.raises(LineTooLong):
        framer.next_event()


def test_line_exactly_at_the_limit_is_accepted() -> None:
    framer = client_framer(max_line=100)
    framer.receive_data(b"a" * 98 + b"\r\n")
    assert framer.next_event() == Line(b"a" * 98 + b"\r\n")


def test_literal_longer_than_the_line_limit_is_not_a_long_line() -> None:
    framer = client_framer(max_line=100)
    items = drain(framer, [b"a X {1000+}\r\n", b"x" * 1000, b"\r\n"])
    assert items[1] == ("literal", b"x" * 1000)


def test_long_line_is_scanned_once_across_many_small_reads() -> None:
    framer = client_framer(max_line=1 << 20)
    for _ in range(2000):
        framer.receive_data(b"x" * 200)
        assert framer.next_event() is None
    framer.receive_data(b"\r\n")
    event = framer.next_event()
    assert isinstance(event, Line) and len(event.data) == 400_002


def test_clear_drops_everything_buffered() -> None:
    framer = client_framer()
    framer.receive_data(b"a STARTTLS\r\nb LOGIN injected x\r\n")
    assert framer.next_event() == Line(b"a STARTTLS\r\n")
    assert framer.clear() == len(b"b LOGIN injected x\r\n")
    assert framer.buffered == 0
    assert framer.next_event() is None
    framer.receive_data(b"c NOOP\r\n")
    assert framer.next_event() == Line(b"c NOOP\r\n")


def test_clear_resets_a_literal_in_progress_and_a_pending_grant() -> None:
    framer = client_framer()
    framer.receive_data(b"a X {10}\r\n")
    framer.next_event()
    assert framer.awaiting_grant
    framer.clear()
    assert not framer.awaiting_grant
    framer.receive_data(b"b NOOP\r\n")
    assert framer.next_event() == Line(b"b NOOP\r\n", continued=False)

    framer.receive_data(b"c X {10+}\r\nabc")
    framer.next_event()
    framer.next_event()
    framer.clear()
    framer.receive_data(b"d NOOP\r\n")
    assert framer.next_event() == Line(b"d NOOP\r\n", continued=False)


def test_literal_chunks_stream_without_waiting_for_the_whole_literal() -> None:
    framer = server_framer()
    framer.receive_data(b"* 1 FETCH (BODY[] {10}\r\nabc")
    framer.next_event()
    assert framer.next_event() == LiteralChunk(b"abc", False)
    assert framer.next_event() is None
    framer.receive_data(b"defghij)\r\n")
    assert framer.next_event() == LiteralChunk(b"defghij", True)
    assert framer.next_event() == Line(b")\r\n", continued=True)
