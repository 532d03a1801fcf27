"""Taggers: the privacy engine's header for an outgoing message, constant length, and the same
verdict the IMAP side computes for the Sent copy."""

from __future__ import annotations

import pytest

from caliproxy.errors import PolicyError
from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.header import (
    DEFAULT_HEADER,
    HEADER_LENGTH,
    HEADER_NAME,
    parse_header,
    render_header,
)
from caliproxy.privacy.verdict import judge
from caliproxy.smtp.message import header_block
from caliproxy.smtp.tagging import (
    NO_TAGGING,
    SENT_MAILBOX,
    PrivacyTagger,
    SubmissionFacts,
    tag_message,
)

FACTS = SubmissionFacts(listener="submission", client_address="127.0.0.1", client_tls=True,
                        client_tls_version="TLSv1.3", account="alice", upstream_tls=True,
                        mail_from="alice@example.test", recipients=("bob@example.test",))
MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: salary review\r\n"
           b"Message-ID: <t1@example.test>\r\n\r\nnumbers\r\n")
POLICY = policy_from_mapping({"rules": [
    {"name": "hr", "level": "secret", "match": {"header": {"name": "Subject", "regex": "salary"}}},
]})


def test_no_tagging_relays_the_message_as_sent():
    tagged = tag_message(MESSAGE, NO_TAGGING, FACTS)
    assert tagged.payload == MESSAGE
    assert tagged.header == b"" and tagged.level is None
    assert NO_TAGGING.header_length == 0


def test_privacy_tagger_adds_one_constant_length_header_on_top():
    tagged = tag_message(MESSAGE, PrivacyTagger(POLICY), FACTS)
    assert len(tagged.header) == HEADER_LENGTH == PrivacyTagger.header_length
    assert tagged.payload == tagged.header + MESSAGE
    assert tagged.header.startswith(HEADER_NAME.encode() + b": ")
    assert tagged.level == "secret"


def test_the_stamped_verdict_is_what_the_imap_side_computes_for_the_sent_copy():
    tagged = tag_message(MESSAGE, PrivacyTagger(POLICY), FACTS)
    _, verdict = judge(header_block(MESSAGE), POLICY, account="alice", mailbox=SENT_MAILBOX)
    assert tagged.header == render_header(verdict)
    assert parse_header(tagged.header).level == verdict.level.level


def test_a_spoofed_header_does_not_change_the_verdict_or_survive():
    spoofed = b"X-Caliproxy-Privacy: v=1; level=public; pi=100;\r\n" + MESSAGE
    tagged = tag_message(spoofed, PrivacyTagger(POLICY), FACTS)
    assert tagged.level == "secret"
    assert tagged.payload.count(HEADER_NAME.encode()) == 1
    assert len(tagged.payload) == HEADER_LENGTH + len(spoofed)


def test_a_tagger_that_breaks_its_length_promise_stops_the_relay():
    class Broken:
        header_length = 10
        header_name = DEFAULT_HEADER

        def __call__(self, raw_headers, facts):
            return b"X: 1\r\n"

    with pytest.raises(PolicyError):
        tag_message(MESSAGE, Broken(), FACTS)


def test_facts_repr_carries_no_addresses():
    assert "example.test" not in repr(FACTS)
    assert FACTS.recipient_domains == {"example.test"}
