"""Properties of tagging, pure (no servers): every byte a client receives is a slice of the
virtual message, whatever it asks for and however the upstream's answer is cut up.

For random messages (with and without forged fields of our name, folded, of varying sizes and
shapes) and random FETCH item lists with random partial ranges, the test

1. translates the client's FETCH as the session does (``SelectedMailbox.translate``);
2. has the server model (``imap_model``) answer the translated items on the upstream message;
3. feeds that answer, cut at random points, through the real framer and ``FetchRewriter``;
4. parses what the client gets and compares it item by item with the model's answer for the
   client's own items on the virtual message: our block + the upstream message with every field
   of our name renamed in place.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caliproxy.imap.classify import Tagged
from caliproxy.imap.fetch_rewrite import FetchRewriter
from caliproxy.imap.framing import Framer, Line
from caliproxy.imap.grammar import Atom, CommandStart, may_carry_literal
from caliproxy.imap.selected import SelectedMailbox
from caliproxy.imap.view import MailboxView
from caliproxy.imap.virtual import DEFAULT_NAMES, spoof_offsets
from caliproxy.privacy.header import HEADER_LENGTH, render_unclassified

from .imap_model import (
    _fields,
    answer_items,
    encode_fetch,
    header_and_text,
    parse_fetches,
    virtual_message,
)

OURS = b"X-Caliproxy-Privacy"

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _SeesAll:
    """The classifier as far as translating commands needs it."""

    header_length = HEADER_LENGTH
    header_names = DEFAULT_NAMES
    hides_anything = False

    def visible(self, level: str) -> bool:
        return True


# -- messages -------------------------------------------------------------------------------------

_NAMES = ["Subject", "From", "To", "Received", "X-Other", "Content-Type",
          "X-Caliproxy-Privacy", "x-caliproxy-privacy", "X-CALIPROXY-PRIVACY ", "X-Caliproxy-Privacy\t",
          "X-Caliproxy-Spoofed", "X-Caliproxy-Privacy-Not"]
_VALUE_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_VALUE = st.text(_VALUE_CHARS, max_size=50).map(str.encode)


@st.composite
def _field(draw) -> bytes:
    name = draw(st.sampled_from(_NAMES)).encode()
    parts = draw(st.lists(_VALUE, min_size=1, max_size=3))
    fold = draw(st.sampled_from([b"\r\n\t", b"\r\n "]))
    return name + b": " + fold.join(parts) + b"\r\n"


@st.composite
def _body(draw) -> bytes:
    size = draw(st.one_of(st.integers(0, 400), st.integers(400, 5_000), st.just(70_000)))
    lines = draw(st.lists(st.sampled_from([b"hello", b"X-Caliproxy-Privacy: in the body", b"",
                                           b"\tindented", b"From: not a header"]), min_size=1, max_size=6))
    text = b"\r\n".join(lines) + b"\r\n"
    return (text * (size // len(text) + 1))[:size]


@st.composite
def messages(draw) -> bytes:
    fields = b"".join(draw(st.lists(_field(), max_size=8)))
    shape = draw(st.sampled_from(["normal", "normal", "normal", "no-end", "empty-header", "empty"]))
    if shape == "empty":
        return b""
    if shape == "no-end":
        return fields
    body = draw(_body())
    if shape == "empty-header":
        return b"\r\n" + body
    return fields + b"\r\n" + body


# -- FETCH items ----------------------------------------------------------------------------------

_LIST_NAMES = ["Subject", "FROM", "to", "Received", "X-Caliproxy-Privacy", "x-caliproxy-privacy",
               "X-Caliproxy-Spoofed", "Content-Type", "X-Absent"]


@st.composite
def _partial(draw) -> str:
    origin = draw(st.one_of(st.integers(0, 40), st.integers(200, 320), st.integers(0, 80_000)))
    length = draw(st.one_of(st.integers(1, 80), st.integers(1, 600), st.integers(1, 100_000)))
    return f"<{origin}.{length}>"


@st.composite
def _header_list(draw) -> str:
    names = draw(st.lists(st.sampled_from(_LIST_NAMES), min_size=1, max_size=4, unique=True))
    quoted = [f'"{n}"' if draw(st.booleans()) else n for n in names]
    spacing = draw(st.sampled_from([" ", "  "]))
    kind = draw(st.sampled_from(["HEADER.FIELDS", "HEADER.FIELDS.NOT", "header.fields", "header.fields.not"]))
    return f"{kind} ({spacing.join(quoted)})"


@st.composite
def items(draw) -> str:
    simple = st.sampled_from(["UID", "FLAGS", "RFC822.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT",
                              "ENVELOPE"])
    section = st.one_of(st.sampled_from(["", "HEADER", "TEXT", "header"]), _header_list())
    peek = st.sampled_from(["BODY", "BODY.PEEK", "body.peek"])
    body_item = st.builds(lambda p, s, partial: f"{p}[{s}]{partial}", peek, section,
                          st.one_of(st.just(""), _partial()))
    return draw(st.one_of(simple, body_item, body_item))


# -- running it -------------------------------------------------------------------------------------


def _feed(rewriter: FetchRewriter, response: bytes, cuts: list[int]) -> bytes:
    framer = Framer(max_line=1 << 24, literal_policy=may_carry_literal)
    out: list[bytes] = []
    first = True
    bounds = sorted({0, len(response), *(c % (len(response) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        framer.receive_data(response[start:end])
        while (event := framer.next_event()) is not None:
            if isinstance(event, Line):
                assert first or event.continued
                first = False
                out.extend(rewriter.fragment(event))
            else:
                out.extend(rewriter.literal(event))
    return b"".join(out)


def _run(client_items: list[str], upstream: list[bytes], level: str, cuts: list[int], quoted: int
         ) -> list[tuple[bytes, bytes, list]]:
    """Per message: the virtual message, what the client got, and the model's answer."""
    uids = [7 * (i + 1) for i in range(len(upstream))]
    mailbox = SelectedMailbox("INBOX", 1, False, _SeesAll())  # type: ignore[arg-type]
    mailbox.view = MailboxView(uids)
    uid_set = ",".join(str(u) for u in uids)
    translated = mailbox.translate(CommandStart(b"t1", True, "FETCH", b""),
                                   [Atom(uid_set), [Atom(i) for i in client_items]])
    assert translated.args is not None
    upstream_items = [str(t) for t in translated.args[1]]
    block = render_unclassified(level)
    results = []
    for seq, (uid, message) in enumerate(zip(uids, upstream), start=1):
        header, _ = header_and_text(message)
        tagged = Tagged(level, block, spoof_offsets(header))
        answers = answer_items(message, upstream_items, uid=uid, flags="\\Seen")
        quoted_items = frozenset(i for i in range(len(answers)) if (quoted >> i) & 1)
        response = encode_fetch(seq, answers, quoted=quoted_items)
        rewriter = FetchRewriter(seq, tagged, translated.partials)
        got = _feed(rewriter, response, cuts)
        virtual = virtual_message(block, message)
        expected = answer_items(virtual, client_items, uid=uid, flags="\\Seen")
        results.append((virtual, got, expected))
    return results


@SETTINGS
@given(client_items=st.lists(items(), min_size=1, max_size=6),
       upstream=st.lists(messages(), min_size=1, max_size=3),
       level=st.sampled_from(["public", "internal", "confidential", "secret"]),
       cuts=st.lists(st.integers(0, 200_000), max_size=10),
       quoted=st.integers(0, 63))
def test_every_byte_the_client_gets_is_a_slice_of_the_virtual_message(client_items, upstream, level, cuts,
                                                                       quoted):
    for seq, (virtual, got, expected) in enumerate(_run(client_items, upstream, level, cuts, quoted), start=1):
        fetches = parse_fetches(got)
        assert [number for number, _ in fetches] == [seq]
        assert fetches[0][1] == expected
        for answer in expected:
            if answer.name == "RFC822.SIZE":
                assert answer.value == len(virtual)


@SETTINGS
@given(message=messages(), level=st.sampled_from(["public", "secret"]))
def test_the_virtual_header_has_exactly_one_field_of_our_name_and_it_is_first(message, level):
    virtual = virtual_message(render_unclassified(level), message)
    header, _text = header_and_text(virtual)
    fields, _ = _fields(header)
    ours = [index for index, (_, name) in enumerate(fields) if name == OURS.upper()]
    assert ours == [0]
    assert virtual[HEADER_LENGTH:].endswith(header_and_text(message)[1])
    # the proxy's own offsets rename exactly the fields the model renames
    spoofed = spoof_offsets(header_and_text(message)[0])
    assert len(spoofed) == sum(1 for _, name in _fields(header_and_text(message)[0])[0] if name == OURS.upper())


def test_thunderbird_chunked_display_fetch_reassembles_the_virtual_message():
    """``BODY[]<0.65536>``, ``<65536.65536>``, ... sized from RFC822.SIZE: nothing lost or added."""
    message = (b"Subject: big\r\nX-Caliproxy-Privacy: forged; level=public;\r\n\r\n"
               + b"0123456789abcdef\r\n" * 60_000)
    size = len(message) + HEADER_LENGTH
    chunk = 65536
    items_ = [f"BODY[]<{origin}.{chunk}>" for origin in range(0, size, chunk)]
    [(virtual, got, expected)] = _run(["RFC822.SIZE"], [message], "secret", [], 0)
    assert parse_fetches(got)[0][1][0].value == size
    [(virtual, got, expected)] = _run(items_, [message], "secret", [5000, 70_000, 140_001], 0)
    pieces = parse_fetches(got)[0][1]
    assert [p.name for p in pieces] == [f"BODY[]<{origin}>" for origin in range(0, size, chunk)]
    assert b"".join(p.value for p in pieces) == virtual  # type: ignore[misc]
    assert pieces == expected


_FORGED = (b"Received: from mx by mx\r\nSubject: hello\r\nX-Caliproxy-Privacy: v=1; level=public;\r\n"
           b"  folded forged verdict\r\nX-Caliproxy-Spoofed: an older one\r\nFrom: a@example.org\r\n\r\n"
           + b"body line\r\n" * 40)


@pytest.mark.parametrize("client_items", [
    # a quoted field name is still our name
    ['BODY.PEEK[HEADER.FIELDS (Subject "X-Caliproxy-Privacy")]'],
    ['BODY.PEEK[HEADER.FIELDS.NOT ("x-caliproxy-privacy" From)]'],
    # partials of header lists: sliced and echoing the client's origin
    ["BODY.PEEK[HEADER.FIELDS (Subject X-Caliproxy-Privacy)]<250.20>"],
    ["BODY.PEEK[HEADER.FIELDS.NOT (Subject)]<10.300>"],
    # .NOT our name: the renamed forged field is still there in the virtual message
    ["BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy)]"],
    ["BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy X-Caliproxy-Spoofed)]"],
    # the renamed name asked for by name
    ["BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Spoofed)]"],
    ["BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Spoofed)]"],
    # two partials that start at the same upstream offset, over several messages
    ["BODY.PEEK[]<0.100>", "BODY.PEEK[]<100.200>", "BODY.PEEK[]<200.100>"],
    ["BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)]", "BODY.PEEK[HEADER.FIELDS (X-Caliproxy-Privacy)]<3.9>"],
    ["BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy)]", "BODY.PEEK[HEADER]"],
])
def test_views_that_were_wrong(client_items):
    for virtual, got, expected in _run(client_items, [_FORGED, _FORGED[:60] + b"\r\n\r\n", _FORGED], "secret",
                                       [17, 300], 0):
        assert parse_fetches(got)[0][1] == expected


@pytest.mark.parametrize(("client_item", "upstream_name", "client_name"), [
    ("BODY.PEEK[]<0.300>", "BODY[]<0>", "BODY[]<0>"),
    ("BODY.PEEK[]<300.100>", "BODY[]<44>", "BODY[]<300>"),
    ("BODY.PEEK[]", "BODY[]", "BODY[]"),
    ("BODY.PEEK[HEADER.FIELDS.NOT (X-Caliproxy-Privacy)]", 'BODY[HEADER.FIELDS.NOT (":")]',
     "BODY[HEADER.FIELDS.NOT (X-CALIPROXY-PRIVACY)]"),
])
def test_no_data_for_a_message_expunged_elsewhere_passes_as_nil(client_item, upstream_name, client_name):
    """Dovecot answers a section of a message another session expunged with NIL (and
    [EXPUNGEISSUED] in the tagged answer): the client gets NIL under its own item name."""
    mailbox = SelectedMailbox("INBOX", 1, False, _SeesAll())  # type: ignore[arg-type]
    mailbox.view = MailboxView([3])
    translated = mailbox.translate(CommandStart(b"t1", True, "FETCH", b""),
                                   [Atom("3"), [Atom("UID"), Atom("RFC822.SIZE"), Atom(client_item)]])
    assert translated.args is not None
    assert [str(t) for t in translated.args[1]][2].replace(".PEEK", "").upper().startswith(
        upstream_name.split("<")[0].upper())
    rewriter = FetchRewriter(1, Tagged("secret", render_unclassified("secret"), ()), translated.partials)
    response = f"* 1 FETCH (UID 3 RFC822.SIZE 0 {upstream_name} NIL)\r\n".encode()
    assert _feed(rewriter, response, []) == f"* 1 FETCH (UID 3 RFC822.SIZE 256 {client_name} NIL)\r\n".encode()


def test_an_rfc822_size_that_is_not_a_number_ends_the_session():
    from caliproxy.errors import ServerProtocolError

    rewriter = FetchRewriter(1, Tagged("secret", render_unclassified("secret"), ()), None)
    with pytest.raises(ServerProtocolError):
        list(rewriter.fragment(Line(b"* 1 FETCH (UID 7 RFC822.SIZE 12x)\r\n", None)))
