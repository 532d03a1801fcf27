"""SMTP reply grammar: the upstream's replies are read exactly and bounded; ours get enhanced codes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caliproxy.errors import ServerProtocolError
from caliproxy.smtp.replies import MAX_LINE, Reply, ReplyParser, enhance

POSTFIX_EHLO = (b"250-smtp.upstream.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-VRFY\r\n"
                b"250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                b"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n")


def test_multiline_reply_becomes_one_reply_with_every_line():
    [reply] = ReplyParser().receive_data(POSTFIX_EHLO)
    assert reply.code == 250
    assert reply.lines[0] == b"smtp.upstream.test"
    assert reply.lines[-1] == b"CHUNKING"
    assert len(reply.lines) == 11


@given(st.lists(st.integers(min_value=1, max_value=len(POSTFIX_EHLO) - 1), max_size=8))
def test_replies_split_anywhere_across_reads_parse_the_same(cuts):
    parser = ReplyParser()
    points = [0, *sorted(set(cuts)), len(POSTFIX_EHLO)]
    replies = []
    for start, end in itertools.pairwise(points):
        replies += parser.receive_data(POSTFIX_EHLO[start:end])
    assert replies == ReplyParser().receive_data(POSTFIX_EHLO)
    assert not parser.pending


def test_several_replies_in_one_read_come_out_in_order():
    replies = ReplyParser().receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n")
    assert [r.code for r in replies] == [250, 250, 354]
    assert replies[0].enhanced == "2.1.0"
    assert replies[2].enhanced is None


def test_a_bare_code_without_text_is_a_reply():
    [reply] = ReplyParser().receive_data(b"250\r\n")
    assert reply == Reply(250, (b"",))
    assert reply.render() == b"250"


def test_partial_reply_is_pending_until_complete():
    parser = ReplyParser()
    assert parser.receive_data(b"250-first\r\n250 sec") == []
    assert parser.pending
    assert parser.receive_data(b"ond\r\n") == [Reply(250, (b"first", b"second"))]
    assert not parser.pending


@pytest.mark.parametrize("garbage", [
    b"hello\r\n",
    b"25 short\r\n",
    b"650 not a class\r\n",
    b"250 with\x00nul\r\n",
    b"250-one\r\n451 two\r\n",
])
def test_a_line_that_is_not_a_reply_is_a_protocol_error(garbage):
    with pytest.raises(ServerProtocolError):
        ReplyParser().receive_data(garbage)


def test_an_endless_line_is_refused_before_it_fills_memory():
    parser = ReplyParser()
    with pytest.raises(ServerProtocolError):
        for _ in range(10):
            parser.receive_data(b"2" * (MAX_LINE // 4))


def test_render_gives_back_the_wire_form_without_the_final_crlf():
    reply = Reply(250, (b"first", b"second"))
    assert reply.render() == b"250-first\r\n250 second"
    assert ReplyParser().receive_data(reply.render() + b"\r\n") == [reply]


def test_reply_classes():
    assert Reply.of(250, "ok").positive
    assert Reply.of(354, "go").intermediate
    assert Reply.of(451, "later").transient
    assert Reply.of(550, "no").permanent


@pytest.mark.parametrize(("ours", "enhanced"), [
    (b"250 OK", b"250 2.0.0 OK"),
    (b"503 Error: need RCPT command", b"503 5.5.1 Error: need RCPT command"),
    (b"530 Must issue a STARTTLS command first", b"530 5.7.0 Must issue a STARTTLS command first"),
    (b"552 Error: Too much mail data", b"552 5.3.4 Error: Too much mail data"),
    (b"221 Bye", b"221 2.0.0 Bye"),
    (b"250", b"250 2.0.0"),
])
def test_our_replies_get_an_enhanced_code(ours, enhanced):
    assert enhance(ours) == enhanced


@pytest.mark.parametrize("unchanged", [
    b"250 2.1.5 Ok",  # relayed from an upstream that already says it
    b"354 End data with <CR><LF>.<CR><LF>",  # 3yz replies carry none (RFC 2034)
    b"334 VXNlcm5hbWU6",
])
def test_replies_that_have_or_need_no_enhanced_code_are_unchanged(unchanged):
    assert enhance(unchanged) == unchanged


def test_enhance_treats_each_line_of_a_multiline_reply():
    assert enhance(b"550-first\r\n550 second") == b"550-5.7.1 first\r\n550 5.7.1 second"
