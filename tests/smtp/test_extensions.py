"""EHLO allow-list: a client is offered only what the relay handles end to end."""

from __future__ import annotations

from caliproxy.smtp.extensions import Extensions, ehlo_reply, offer_for
from caliproxy.smtp.replies import ReplyParser
from tests.smtp.test_replies import POSTFIX_EHLO

POSTFIX = Extensions.parse(ReplyParser().receive_data(POSTFIX_EHLO)[0])
MIB = 1024 * 1024


def test_postfix_ehlo_is_read_keyword_by_keyword():
    assert POSTFIX.has("chunking") and POSTFIX.has("SIZE")
    assert POSTFIX.size_limit == 52428800
    assert POSTFIX.auth_mechanisms == {"PLAIN", "LOGIN"}
    assert POSTFIX.upstream_mechanism() == "PLAIN"


def test_the_old_auth_equals_spelling_is_understood():
    [reply] = ReplyParser().receive_data(b"250-x\r\n250 AUTH=LOGIN\r\n")
    assert Extensions.parse(reply).upstream_mechanism() == "LOGIN"


def test_size_leaves_room_for_our_header():
    offer = offer_for(POSTFIX, header_length=256, max_message_size=64 * MIB)
    assert offer.size_limit == 52428800 - 256
    assert "SIZE 52428544" in offer.keywords(starttls=False, auth_now=True)


def test_without_an_upstream_limit_ours_is_the_memory_bound():
    [reply] = ReplyParser().receive_data(b"250-x\r\n250 SIZE\r\n")
    assert offer_for(Extensions.parse(reply), header_length=256, max_message_size=10 * MIB).size_limit == 10 * MIB
    assert offer_for(Extensions(), header_length=0, max_message_size=10 * MIB).size_limit == 10 * MIB


def test_only_handled_extensions_are_offered_never_chunking_dsn_vrfy_etrn():
    offer = offer_for(POSTFIX, header_length=256, max_message_size=64 * MIB)
    before_tls = offer.keywords(starttls=True, auth_now=False)
    after_tls = offer.keywords(starttls=False, auth_now=True)
    assert before_tls == ["PIPELINING", "SIZE 52428544", "8BITMIME", "SMTPUTF8",
                          "ENHANCEDSTATUSCODES", "STARTTLS"]
    assert after_tls == ["PIPELINING", "SIZE 52428544", "8BITMIME", "SMTPUTF8",
                         "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"]


def test_extensions_the_upstream_lacks_are_not_offered():
    [reply] = ReplyParser().receive_data(b"250-x\r\n250-SIZE 1000\r\n250 AUTH LOGIN\r\n")
    offer = offer_for(Extensions.parse(reply), header_length=0, max_message_size=MIB)
    assert offer.keywords(starttls=False, auth_now=True) == ["PIPELINING", "SIZE 1000", "AUTH PLAIN LOGIN"]


def test_no_auth_is_offered_when_the_upstream_has_no_usable_mechanism():
    [reply] = ReplyParser().receive_data(b"250-x\r\n250 AUTH XOAUTH2\r\n")
    offer = offer_for(Extensions.parse(reply), header_length=0, max_message_size=MIB)
    assert not offer.auth
    assert not any(k.startswith("AUTH") for k in offer.keywords(starttls=False, auth_now=True))


def test_ehlo_reply_lines():
    assert ehlo_reply("proxy", ["PIPELINING", "SIZE 5"]) == ["250-proxy", "250-PIPELINING", "250 SIZE 5"]
