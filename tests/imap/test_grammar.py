"""Grammar: command starts, response classification, the tokenizer and sequence sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caliproxy.errors import ClientProtocolError, ServerProtocolError
from caliproxy.imap.grammar import (
    Atom,
    CommandStart,
    Response,
    ResponseCode,
    Token,
    is_sequence_set,
    may_carry_literal,
    parse_capabilities,
    parse_command_start,
    parse_response,
    parse_sequence_set,
    quote,
    tag_of,
    tokenize,
)

# -- command start --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        (b"a1 NOOP", CommandStart(b"a1", False, "NOOP", b"")),
        (b"22 authenticate PLAIN", CommandStart(b"22", False, "AUTHENTICATE", b"PLAIN")),
        (b"10 UID fetch 1:* (FLAGS)", CommandStart(b"10", True, "FETCH", b"1:* (FLAGS)")),
        (b"x uid Store 1 +Flags (\\Seen)", CommandStart(b"x", True, "STORE", b"1 +Flags (\\Seen)")),
        # Tags may hold any ASTRING-CHAR but "+": brackets, "]", "}", punctuation.
        (b"A.1-b_c:d;e<f>=?@[x]^`|}~!#$&',/ LOGOUT",
         CommandStart(b"A.1-b_c:d;e<f>=?@[x]^`|}~!#$&',/", False, "LOGOUT", b"")),
        (b"t APPEND INBOX ", CommandStart(b"t", False, "APPEND", b"INBOX ")),
        (b"t X-VENDOR.cmd arg", CommandStart(b"t", False, "X-VENDOR.CMD", b"arg")),
        (b"t UID", CommandStart(b"t", False, "UID", b"")),
    ],
)
def test_command_start_parses(fragment: bytes, expected: CommandStart) -> None:
    assert parse_command_start(fragment) == expected


def test_command_name_is_the_metrics_label() -> None:
    assert parse_command_start(b"a uid fetch 1 FLAGS").name == "UID FETCH"
    assert parse_command_start(b"a fetch 1 FLAGS").name == "FETCH"


@pytest.mark.parametrize(
    "fragment",
    [
        b"a+1 NOOP",  # "+" is not allowed in a tag
        b"+ NOOP",
        b"* NOOP",  # "*" is an atom-special
        b"a%b NOOP",
        b'a"b NOOP',
        b"a(b NOOP",
        b"a{1} NOOP",
        b"a\\b NOOP",
        b"NOOP",
        b"a1",
        b"a1 ",
        b" a1 NOOP",
        b"a1 1NOOP",
        b"a1 NOOP(",
        b"a\x01 NOOP",
        b"\xff\xfe NOOP",
        b"",
    ],
)
def test_malformed_command_start_is_refused(fragment: bytes) -> None:
    with pytest.raises(ClientProtocolError):
        parse_command_start(fragment)


@pytest.mark.parametrize(
    ("fragment", "tag"),
    [(b"a1 (((", b"a1"), (b"a+1 NOOP", None), (b"\x00x", None), (b"", None), (b"DONE", b"DONE")],
)
def test_tag_of_unparsable_line(fragment: bytes, tag: bytes | None) -> None:
    assert tag_of(fragment) == tag


# -- responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"+ idling\r\n", Response(kind="continuation", text=b"idling")),
        (b"+ \r\n", Response(kind="continuation", text=b"")),
        (b"+\r\n", Response(kind="continuation", text=b"")),
        (
            b"a1 OK [READ-WRITE] Select completed.\r\n",
            Response(kind="tagged", tag=b"a1", status=b"OK",
                     code=ResponseCode(b"READ-WRITE", b""), text=b"Select completed."),
        ),
        (b"a1 no failed\r\n", Response(kind="tagged", tag=b"a1", status=b"NO", text=b"failed")),
        (
            b"* OK [PERMANENTFLAGS (\\Answered \\*)] Flags permitted.\r\n",
            Response(kind="untagged", status=b"OK",
                     code=ResponseCode(b"PERMANENTFLAGS", b"(\\Answered \\*)"), text=b"Flags permitted."),
        ),
        (
            b"* OK [uidvalidity 17] UIDs valid",
            Response(kind="untagged", status=b"OK", code=ResponseCode(b"UIDVALIDITY", b"17"),
                     text=b"UIDs valid"),
        ),
        (b"* BYE Logging out\r\n", Response(kind="untagged", status=b"BYE", text=b"Logging out")),
        (b"* PREAUTH hello\r\n", Response(kind="untagged", status=b"PREAUTH", text=b"hello")),
        (b"* 5 EXISTS\r\n", Response(kind="untagged", number=5, keyword=b"EXISTS", text=b"")),
        (b"* 3 fetch (UID 3 FLAGS ())\r\n",
         Response(kind="untagged", number=3, keyword=b"FETCH", text=b"(UID 3 FLAGS ())")),
        (b"* CAPABILITY IMAP4rev1 IDLE\r\n",
         Response(kind="untagged", keyword=b"CAPABILITY", text=b"IMAP4rev1 IDLE")),
        (b'* LIST (\\HasNoChildren) "/" INBOX\r\n',
         Response(kind="untagged", keyword=b"LIST", text=b'(\\HasNoChildren) "/" INBOX')),
        # A "[" that opens no valid code is text.
        (b"* OK [not a code\r\n", Response(kind="untagged", status=b"OK", text=b"[not a code")),
    ],
)
def test_response_classification(line: bytes, expected: Response) -> None:
    assert parse_response(line) == expected


@pytest.mark.parametrize("line", [b"\r\n", b" OK x\r\n", b"a1\r\n", b"a1 FETCH 1\r\n", b"a1 BYE x\r\n",
                                  b"a1 PREAUTH\r\n", b"garbage\r\n"])
def test_unclassifiable_response_raises(line: bytes) -> None:
    with pytest.raises(ServerProtocolError):
        parse_response(line)


@pytest.mark.parametrize(
    ("fragment", "allowed"),
    [
        (b"* 1 FETCH (BODY[] {5}\r\n", True),
        (b"* LIST () \"/\" {5}\r\n", True),
        (b"* OK [ALERT] {5}\r\n", False),
        (b"* ok text {5}\r\n", False),
        (b"* BYE {5}\r\n", False),
        (b"a1 OK {5}\r\n", False),
        (b"a1 bad {5}\r\n", False),
        (b"+ {5}\r\n", False),
        (b"{5}\r\n", False),
    ],
)
def test_may_carry_literal(fragment: bytes, allowed: bool) -> None:
    assert may_carry_literal(fragment) is allowed


def test_capability_list_split_as_sent() -> None:
    assert parse_capabilities(b"IMAP4rev1  SASL-IR AUTH=PLAIN ") == [b"IMAP4rev1", b"SASL-IR", b"AUTH=PLAIN"]


# -- tokenizer ------------------------------------------------------------------------------------


def tok(text: bytes, *literals: bytes) -> list[Token]:
    fragments = text.split(b"\x00") if literals else [text]
    return tokenize(fragments, list(literals))


def test_tokenizer_atoms_quoted_and_lists() -> None:
    assert tok(b'"INBOX" (\\Seen \\Flagged) "27-Nov-2026 10:00:00 +0000"') == [
        b"INBOX",
        [Atom("\\Seen"), Atom("\\Flagged")],
        b"27-Nov-2026 10:00:00 +0000",
    ]
    result = tok(b"1:* FLAGS")
    assert result == ["1:*", "FLAGS"] and all(isinstance(t, Atom) for t in result)


def test_tokenizer_quoted_escapes() -> None:
    assert tok(rb'"a\"b" "c\\d" ""') == [b'a"b', b"c\\d", b""]


@pytest.mark.parametrize("bad", [b'"a\\b"', b'"abc', b'"abc\\"', b'"\\'])
def test_tokenizer_refuses_bad_quoted(bad: bytes) -> None:
    with pytest.raises(ClientProtocolError):
        tok(bad)


def test_tokenizer_nested_lists() -> None:
    assert tok(b"(a (b (c)) ()) d") == [["a", ["b", ["c"]], []], "d"]


@pytest.mark.parametrize("bad", [b"(a", b"a)", b"((a)", b"())"])
def test_tokenizer_unbalanced_parentheses(bad: bytes) -> None:
    with pytest.raises(ClientProtocolError):
        tok(bad)


def test_tokenizer_sections_keep_spaces_and_parentheses() -> None:
    assert tok(b"1:5 (UID BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BODY[]<0.65536> RFC822.SIZE)") == [
        "1:5",
        ["UID", "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>", "BODY[]<0.65536>", "RFC822.SIZE"],
    ]
    assert tok(b"(BODY[HEADER.FIELDS.NOT (X-A X-B)] BODY[1.2.MIME])") == [
        ["BODY[HEADER.FIELDS.NOT (X-A X-B)]", "BODY[1.2.MIME]"]
    ]


def test_tokenizer_unterminated_section() -> None:
    with pytest.raises(ClientProtocolError):
        tok(b"BODY[HEADER.FIELDS (From)")


def test_tokenizer_literals_take_their_place() -> None:
    # a LOGIN {3}\r\nbob {4}\r\npass\r\n -> fragments "", " ", "" and two literals
    assert tokenize([b"", b" ", b""], [b"bob", b"pa s"]) == [b"bob", b"pa s"]
    assert tokenize([b"(a ", b")"], [b"x\r\ny"]) == [["a", b"x\r\ny"]]


def test_tokenizer_refuses_a_marker_left_in_text() -> None:
    with pytest.raises(ClientProtocolError):
        tok(b"a {5} b")


def test_tokenizer_refuses_8bit_atoms_but_keeps_8bit_quoted() -> None:
    with pytest.raises(ClientProtocolError):
        tok(b"caf\xc3\xa9")
    assert tok(b'"caf\xc3\xa9"') == [b"caf\xc3\xa9"]


@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4), st.lists(st.binary(max_size=10), max_size=4))
def test_tokenizer_only_ever_raises_client_protocol_error(fragments: list[bytes], literals: list[bytes]) -> None:
    try:
        tokenize(fragments, literals)
    except ClientProtocolError:
        pass


_IMAPISH = st.lists(
    st.sampled_from([b"(", b")", b" ", b'"', b"\\", b"[", b"]", b"{", b"}", b"a", b"1", b":", b"*", b"\xff", b"<", b"."]),
    max_size=40,
).map(b"".join)


@given(_IMAPISH)
def test_tokenizer_on_imap_shaped_noise(text: bytes) -> None:
    try:
        tokenize([text], [])
    except ClientProtocolError:
        pass


def test_deep_nesting_does_not_recurse() -> None:
    deep = b"(" * 50_000 + b")" * 50_000
    result = tokenize([deep], [])
    assert len(result) == 1


# -- sequence sets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", [(1, 1)]),
        ("*", [(None, None)]),
        ("1:*", [(1, None)]),
        ("*:4", [(None, 4)]),
        ("2,4:7,9,12:*", [(2, 2), (4, 7), (9, 9), (12, None)]),
        ("10:1", [(10, 1)]),
    ],
)
def test_sequence_set_parses(text: str, ranges: list[tuple[int | None, int | None]]) -> None:
    assert parse_sequence_set(text) == ranges
    assert is_sequence_set(Atom(text))


@pytest.mark.parametrize("text", ["", "0", "01", "1:", ":1", "1,", ",1", "1::2", "$", "1:0", "a", "1 2", "-1", "1.5"])
def test_invalid_sequence_sets(text: str) -> None:
    assert not is_sequence_set(Atom(text))
    with pytest.raises(ClientProtocolError):
        parse_sequence_set(text)


def test_quoted_string_is_not_a_sequence_set() -> None:
    assert not is_sequence_set(b"1:*")


@given(st.lists(st.tuples(st.integers(1, 10**9) | st.none(), st.integers(1, 10**9) | st.none()), min_size=1, max_size=8))
def test_sequence_set_round_trips(ranges: list[tuple[int | None, int | None]]) -> None:
    def num(n: int | None) -> str:
        return "*" if n is None else str(n)

    text = ",".join(num(a) if a == b else f"{num(a)}:{num(b)}" for a, b in ranges)
    assert parse_sequence_set(text) == ranges


def test_quote_escapes() -> None:
    assert quote(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert tokenize([quote(b'a"b\\c')], []) == [b'a"b\\c']
