"""The FETCH fast path (``fetch_fast`` and ``MailboxSession._on_common``) against the general path.

Pure (no servers). The same upstream bytes go through two sessions in the same state, one as it
is and one with the fast path switched off; what the client gets, what the upstream gets, and the
control actions must be identical, byte for byte. The upstream's FETCH responses are drawn from
the shapes of a header sync and from many near misses (other items, nesting, odd spacing and
case, leading zeros, keywords the client was not shown, sections our header changes, items after
the literal, other literal forms, malformed lines), for a tagging and a hiding session, cut into
random pieces.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caliproxy.imap import fetch_fast
from caliproxy.imap.actions import Action, CommandDone, SendClient, SendServer
from caliproxy.imap.classify import Tagged
from caliproxy.imap.fetch_rewrite import FetchRewriter
from caliproxy.imap.framing import Framer, Line, LiteralChunk
from caliproxy.imap.grammar import may_carry_literal
from caliproxy.imap.mailbox_session import MailboxSession
from caliproxy.imap.session import SessionSettings, UpstreamSecurity
from tests.hiding.test_transcripts import SubjectClassifier
from tests.imap.conftest import DOVECOT_POST, DOVECOT_PRE

BLOCK = b"X-Caliproxy-Privacy: level=internal\r\n"
UIDS = [3, 5, 6, 9, 10, 12]  # upstream seq 1..6
SECRET = {5, 10}  # their headers say SECRET: hidden from the hiding session
EXAMPLES = int(os.environ.get("CALIPROXY_FAST_PATH_EXAMPLES", "300"))  # more for a longer run


def _upstream_answer(command: bytes) -> bytes:
    """The upstream's answer to one internal command of the SELECT flow."""
    tag, _, rest = command.rstrip(b"\r\n").partition(b" ")
    if rest.startswith(b"UID SEARCH ALL"):
        body = b"* SEARCH " + b" ".join(b"%d" % uid for uid in UIDS) + b"\r\n"
    elif rest.startswith(b"UID SEARCH KEYWORD"):
        body = b"* SEARCH 3\r\n"  # $Label1: only on a visible message
    elif rest.startswith(b"UID SEARCH"):
        body = b"* SEARCH 5 6\r\n"
    elif rest.startswith(b"UID FETCH"):
        body = b""
        for seq, uid in enumerate(UIDS, 1):
            header = b"Subject: %s\r\n\r\n" % (b"SECRET" if uid in SECRET else b"hello")
            body += b"* %d FETCH (UID %d BODY[HEADER] {%d}\r\n%s)\r\n" % (seq, uid, len(header), header)
    else:
        raise AssertionError(f"unexpected internal command {command!r}")
    return body + tag + b" OK done\r\n"


def _sent(actions: list[Action], kind: type) -> bytes:
    return b"".join(b"".join(a.chunks) for a in actions if isinstance(a, kind))


def _selected(*, hides: bool, tagging: bool, fetch: bytes, fast: bool) -> MailboxSession:
    session = MailboxSession(SessionSettings(client_tls=True, starttls_available=False,
                                             plaintext_login_allowed=False,
                                             upstream_security=UpstreamSecurity.TLS), tagging=tagging)
    if not fast:
        session._on_common = lambda event: False  # type: ignore[method-assign]
    session.server_data(b"* OK [CAPABILITY " + DOVECOT_PRE + b"] ready\r\n")
    session.client_data(b"l LOGIN alice secret\r\n")
    session.server_data(b"l OK [CAPABILITY " + DOVECOT_POST + b"] Logged in\r\n")
    session.set_classifier(SubjectClassifier(hides=hides, block=BLOCK))
    # (as after a login the proxy cannot replay: the headers are read on this connection, where
    # _upstream_answer answers them)
    session.credentials = None
    session.client_data(b"s SELECT INBOX\r\n")
    actions = session.server_data(
        b"* FLAGS (\\Answered \\Seen $Label1 $Junk)\r\n* OK [PERMANENTFLAGS (\\Seen $Label1 $Junk \\*)] ok\r\n"
        b"* %d EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\ns OK [READ-WRITE] Select completed.\r\n" % len(UIDS))
    while not _sent(actions, SendClient).endswith(b"s OK [READ-WRITE] Select completed.\r\n"):
        commands = _sent(actions, SendServer)
        assert commands.startswith(b"cp."), commands
        actions = session.server_data(_upstream_answer(commands))
    assert not session.closed
    session.client_data(fetch)
    return session


# -- upstream FETCH responses ------------------------------------------------------------------------

_FLAG = st.sampled_from([b"\\Seen", b"\\Answered", b"\\Recent", b"$Label1", b"$Junk", b"NonJunk", b"RFC822.SIZE",
                         b"5", b"\\*", b"[x]", b"{3}"])
_FLAGS = st.lists(_FLAG, max_size=3).map(lambda flags: b"FLAGS (" + b" ".join(flags) + b")")
_ITEM = st.one_of(
    st.integers(1, 99).map(lambda n: b"UID %d" % n),
    st.sampled_from([b"RFC822.SIZE 2051", b"RFC822.SIZE 0", b"RFC822.SIZE 007", b"rfc822.size 12",
                     b'INTERNALDATE "27-Nov-2026 14:00:00 +0000"', b"MODSEQ (42)", b"UID 0012",
                     b'ENVELOPE (NIL "s" NIL NIL NIL NIL NIL NIL NIL NIL)', b'BODY[HEADER.FIELDS (FROM)] "a"',
                     b"RFC822.SIZE", b"X-GM-LABELS (\\Inbox)", b"BODY[TEXT] NIL"]),
    _FLAGS,
)
_SECTION = st.sampled_from([b"BODY[HEADER.FIELDS (FROM TO SUBJECT)]", b"BODY[HEADER.FIELDS (X-CALIPROXY-PRIVACY)]",
                            b"BODY[HEADER.FIELDS (FROM X-Caliproxy-Privacy)]", b"BODY[HEADER]", b"BODY[TEXT]",
                            b"BODY[]", b"BODY[]<0>", b"BODY[HEADER.FIELDS.NOT (TO)]", b"body[header]",
                            b"RFC822.HEADER", b"BODY[1]", b'BODY[HEADER.FIELDS ("FROM")]'])
_MARKER = st.sampled_from([b"{%d}", b"{%d}", b"{%d}", b"{%d+}", b"~{%d}"])
_AFTER = st.sampled_from([b")", b")", b")", b" FLAGS (\\Seen))", b" FLAGS ($Label1))", b" UID 7)", b"))",
                          b") x", b" ", b"", b" RFC822.SIZE 5)"])
_SEQ = st.sampled_from([b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"0", b"01"])
_HEAD = st.sampled_from([b"* %s FETCH (", b"* %s FETCH (", b"* %s FETCH (", b"* %s fetch (", b"* %s FETCH  ("])
_SEP = st.sampled_from([b" ", b" ", b" ", b" ", b"  "])
_BODY = st.sampled_from([b"From: a\r\nTo: b\r\n\r\n", b"", b"X-Caliproxy-Privacy: forged\r\n\r\n", b"x)\r\n",
                        b"Subject: " + b"y" * 5000 + b"\r\n\r\n"])


_USUAL_ITEM = st.one_of(st.integers(1, 99).map(lambda n: b"UID %d" % n),
                        st.integers(0, 99999).map(lambda n: b"RFC822.SIZE %d" % n),
                        st.lists(st.sampled_from([b"\\Seen", b"\\Answered", b"\\Recent", b"$Label1",
                                                  b"NonJunk"]),
                                 max_size=2).map(lambda flags: b"FLAGS (" + b" ".join(flags) + b")"))


@st.composite
def fetch_response(draw: st.DrawFn) -> bytes:
    """Mostly the shapes of a header sync (so the fast path is taken), often with a near miss."""
    usual = draw(st.integers(0, 3)) > 0
    head = (b"* %s FETCH (" if usual else draw(_HEAD)) % draw(_SEQ)
    items = draw(st.lists(_USUAL_ITEM if usual else _ITEM, max_size=4))
    text = b""
    for index, item in enumerate(items):
        text += ((b" " if usual else draw(_SEP)) if index else b"") + item
    if draw(st.booleans()):
        body = draw(_BODY)
        marker = (b"{%d}" if usual else draw(_MARKER)) % len(body)
        after = draw(st.sampled_from([b")", b")", b")", b" FLAGS (\\Seen))"])) if usual else draw(_AFTER)
        return (head + text + (b" " if text else b"") + draw(_SECTION) + b" " + marker + b"\r\n" + body
                + after + b"\r\n")
    return head + text + (b")" if usual else draw(st.sampled_from([b")", b"", b"))", b") x"]))) + b"\r\n"


FETCHES = [
    b"f UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject)])\r\n",
    b"f UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From X-Caliproxy-Privacy)])\r\n",
    b"f UID FETCH 1:* (FLAGS)\r\n",
    b"f FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER])\r\n",
    b"f UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From)]<0.20>)\r\n",
]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses=st.lists(fetch_response(), min_size=1, max_size=6), hides=st.booleans(),
       tagging=st.booleans(), fetch=st.sampled_from(FETCHES), cuts=st.lists(st.integers(1, 400), max_size=8),
       done=st.booleans())
def test_fast_path_sends_exactly_what_the_general_path_sends(responses, hides, tagging, fetch, cuts, done):
    stream = b"".join(responses) + (b"f OK Fetch completed.\r\n" if done else b"")
    pieces, position = [], 0
    for cut in sorted(set(cuts)):
        if cut < len(stream):
            pieces.append(stream[position:cut])
            position = cut
    pieces.append(stream[position:])
    outcomes = []
    for fast in (True, False):
        session = _selected(hides=hides, tagging=tagging, fetch=fetch, fast=fast)
        actions: list[Action] = []
        failure = None
        for piece in pieces:
            try:
                actions += session.server_data(piece)
            except Exception as exc:  # noqa: BLE001  # (the IO shell ends the session) the same in both
                failure = type(exc).__name__
                break
        controls = [type(a).__name__ for a in actions
                    if not isinstance(a, (SendClient, SendServer, CommandDone))]
        outcomes.append((_sent(actions, SendClient), _sent(actions, SendServer), controls, session.closed,
                         failure))
    assert outcomes[0] == outcomes[1]


def test_a_header_sync_takes_the_fast_path():
    """The shapes of Dovecot's answers to Thunderbird do match (or the test above proves little)."""
    session = _selected(hides=True, tagging=True, fetch=FETCHES[0], fast=True)
    calls = []
    general = session._on_untagged

    def counting(response, event):  # type: ignore[no-untyped-def]
        calls.append(event.data)
        return general(response, event)

    session._on_untagged = counting  # type: ignore[method-assign]
    out = _sent(session.server_data(
        b"* 1 FETCH (UID 3 RFC822.SIZE 2051 FLAGS (\\Seen) BODY[HEADER.FIELDS (FROM TO SUBJECT)] {7}\r\n"
        b"From: a)\r\n* 2 FETCH (UID 5 RFC822.SIZE 10 FLAGS () BODY[HEADER.FIELDS (FROM TO SUBJECT)] {0}\r\n)\r\n"
        b"* 3 FETCH (UID 6 FLAGS (\\Seen))\r\n"), SendClient)
    assert calls == []
    assert out == (b"* 1 FETCH (UID 3 RFC822.SIZE %d FLAGS (\\Seen) BODY[HEADER.FIELDS (FROM TO SUBJECT)] {7}\r\n"
                   b"From: a)\r\n* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n" % (2051 + len(BLOCK)))


@pytest.mark.parametrize("line", [
    b"* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n",
    b"* 12 FETCH (UID 3 RFC822.SIZE 007 FLAGS (RFC822.SIZE 5) RFC822.SIZE 1)\r\n",
    b"* 2 FETCH ()\r\n",
    b'* 2 FETCH (INTERNALDATE "27-Nov-2026 14:00:00 +0000" RFC822.SIZE 9)\r\n',
    b"* 3 FETCH (UID 9 RFC822.SIZE 2051 FLAGS (\\Seen $Label1) BODY[HEADER.FIELDS (FROM TO)] {12}\r\n",
])
@pytest.mark.parametrize("client_seq", [1, 2, 3, 12])
@pytest.mark.parametrize("tagged", [None, Tagged("internal", BLOCK, ())])
def test_render_is_the_rewriters_first_fragment(line, client_seq, tagged):
    framer = Framer(max_line=1 << 20, literal_policy=may_carry_literal)
    framer.receive_data(line)
    event = framer.next_event()
    assert isinstance(event, Line)
    found = fetch_fast.match(line, event.literal is not None)
    assert found is not None
    rewriter = FetchRewriter(client_seq, tagged, None)
    assert fetch_fast.render(line, found, client_seq, None if tagged is None else len(tagged.block)) == \
        b"".join(rewriter.fragment(event))


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=st.binary(max_size=40), after=st.sampled_from([b")\r\n", b" UID 4)\r\n", b")", b"", b"x {2}\r\n"]),
       cut=st.integers(0, 80), line=st.sampled_from([b")\r\n", b" UID 4)\r\n", b"x {2}\r\n"]))
def test_taking_a_whole_literal_and_a_line_is_what_the_events_bring(body, after, cut, line):
    stream = b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + after + b"* 2 FETCH (UID 9)\r\n"
    events, taken = Framer(max_line=1 << 20, literal_policy=may_carry_literal), \
        Framer(max_line=1 << 20, literal_policy=may_carry_literal)
    for framer in (events, taken):
        framer.receive_data(stream[:cut])
    expected: list[object] = []
    got: list[object] = []
    for framer, out in ((events, expected), (taken, got)):
        fed = False
        while True:
            event = framer.next_event()
            if event is None:
                if fed:
                    break
                framer.receive_data(stream[cut:])
                fed = True
                continue
            out.append(event)
            if framer is taken and isinstance(event, Line) and event.literal is not None:
                whole = framer.take_whole_literal()
                if whole is not None:
                    out.append(LiteralChunk(whole, True))
                    if framer.take_line(line):
                        out.append(Line(line, continued=True))
    assert got == expected


def test_peek_line_shows_only_a_whole_line_that_starts_a_response():
    framer = Framer(max_line=64, literal_policy=may_carry_literal)
    framer.receive_data(b"* 1 FETCH (BODY[] {2}\r\nab)\r\n* 2 FETCH (UID 5)\r\n* 3 FE")
    assert framer.peek_line() == b"* 1 FETCH (BODY[] {2}\r\n"
    assert framer.peek_line() == b"* 1 FETCH (BODY[] {2}\r\n"  # not consumed
    assert isinstance(framer.next_event(), Line)
    assert framer.peek_line() is None  # in the literal
    assert framer.next_event() == LiteralChunk(b"ab", True)
    assert framer.peek_line() is None  # ")" continues the response
    assert framer.next_event() == Line(b")\r\n", continued=True)
    assert framer.peek_line() == b"* 2 FETCH (UID 5)\r\n"
    assert framer.take_line(b"* 2 FETCH (UID 5)\r\n")
    assert framer.peek_line() is None  # not whole yet
    framer.receive_data(b"TCH (UID 6)\r\n" + b"x" * 70 + b"\r\n")
    assert framer.next_event() == Line(b"* 3 FETCH (UID 6)\r\n")
    assert framer.peek_line() is None  # longer than max_line: next_event raises, peek says nothing


_HEADER_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\n", b"X-Caliproxy-Privacy", b"x-caliproxy-PRIVACY",
                                  b"X-Caliproxy-Privac", b":", b" ", b"\t", b"a", b"Subject: x"])


@settings(max_examples=EXAMPLES * 10, deadline=None)
@given(pieces=st.lists(_HEADER_PIECES, max_size=30))
def test_spoof_offsets_find_what_the_regexes_find(pieces):
    """``virtual.header_end``/``spoof_offsets`` use find; their definitions are the regexes."""
    from caliproxy.imap import virtual

    header = b"".join(pieces)
    found = virtual._END_OF_HEADER.search(header)
    limit = found.end() if found else len(header)
    assert virtual.header_end(header) == limit
    names = virtual.DEFAULT_NAMES
    assert virtual.spoof_offsets(header, names) == tuple(
        m.start() for m in names.at_line_start.finditer(header, 0, limit))
