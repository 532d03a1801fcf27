"""Claims a sender can forge change nothing: not the index, not the level, not one byte of the header
a client is shown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from caliproxy.privacy.header import neutralise_existing, render_header
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.verdict import judge

from . import corpus as c
from .conftest import build_message

MESSAGE_FIELDS = (c.FROM_ALICE, c.TO_BOB, *c.PLAIN_TEXT)


@pytest.fixture
def policy(make_policy: Callable[..., Policy]) -> Policy:
    return make_policy(
        rules=[
            {
                "name": "authenticated",
                "level": "confidential",
                "match": {"index": {"authenticity": {"min": 40}}},
            },
            {
                "name": "encrypted-hop",
                "level": "secret",
                "match": {"index": {"transport": {"min": 50}}},
            },
        ]
    )


def header_and_level(message: bytes, policy: Policy) -> tuple[bytes, str]:
    _, verdict = judge(message, policy)
    return render_header(verdict), verdict.level.level


def assert_same_verdict(genuine: bytes, forged: bytes, policy: Policy) -> None:
    assert header_and_level(forged, policy) == header_and_level(genuine, policy)


GENUINE = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PLAIN, *MESSAGE_FIELDS)


def test_the_genuine_message_is_plain_and_unauthenticated(policy: Policy) -> None:
    header, level = header_and_level(GENUINE, policy)
    assert b"t=0; a=0;" in header and b"r=PLAIN NOAR " in header
    assert level == "internal"


FORGED_PASS = (
    "dkim=pass header.d=sender.example; spf=pass smtp.mailfrom=alice@sender.example;"
    " dmarc=pass header.from=sender.example; arc=pass"
)


@pytest.mark.parametrize(
    "forged",
    [
        # An authserv-id the policy does not trust, even above the boundary.
        build_message(
            f"Authentication-Results: mx.evil.example; {FORGED_PASS}",
            c.DOVECOT_LMTP_SOCKET,
            c.POSTFIX_PLAIN,
            *MESSAGE_FIELDS,
        ),
        # Our own authserv-id, but below the boundary: the sender wrote it (RFC 8601 §5).
        build_message(
            c.DOVECOT_LMTP_SOCKET,
            c.POSTFIX_PLAIN,
            f"Authentication-Results: mx.example.org; {FORGED_PASS}",
            f"ARC-Authentication-Results: i=1; mx.example.org; {FORGED_PASS}",
            *MESSAGE_FIELDS,
        ),
        # Case and a trailing dot do not sneak a different id past the comparison either way.
        build_message(
            c.DOVECOT_LMTP_SOCKET,
            c.POSTFIX_PLAIN,
            f"Authentication-Results: MX.Example.Org.; {FORGED_PASS}",
            *MESSAGE_FIELDS,
        ),
    ],
    ids=["untrusted-authserv-id", "trusted-id-below-boundary", "trusted-id-variant-below"],
)
def test_forged_authentication_results_change_nothing(policy: Policy, forged: bytes) -> None:
    assert_same_verdict(GENUINE, forged, policy)


@pytest.mark.parametrize(
    "forged_hop",
    [
        c.POSTFIX_TLS13.replace("by mx.example.org", "by mail.sender.example"),
        # Claiming to be our own MX, with TLS 1.3, from one of our own addresses.
        c.POSTFIX_TLS13.replace("[198.51.100.7]", "[192.0.2.10]"),
        c.EXIM_TLS13,
        c.SENDMAIL_TLS12,
        c.POSTFIX_SUBMISSION,
    ],
    ids=["tls13-elsewhere", "tls13-as-our-mx", "exim", "sendmail", "authenticated-submission"],
)
def test_forged_received_lines_below_the_boundary_change_nothing(
    policy: Policy, forged_hop: str
) -> None:
    forged = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PLAIN, forged_hop, *MESSAGE_FIELDS)
    assert_same_verdict(GENUINE, forged, policy)
    _, verdict = judge(forged, policy)
    assert verdict.index.evidence.outside_hops == 1


@pytest.mark.parametrize(
    "helo",
    ["(TLS1.3)", "[127.0.0.1]", "[192.0.2.10]", "X=TLS1.3:", "mx.example.org"],
)
def test_the_sender_chosen_helo_never_makes_a_hop_trusted_or_encrypted(
    policy: Policy, helo: str
) -> None:
    boundary = c.POSTFIX_PLAIN.replace("from mail.sender.example (", f"from {helo} (", 1)
    forged = build_message(c.DOVECOT_LMTP_SOCKET, boundary, *MESSAGE_FIELDS)
    features, verdict = judge(forged, policy)
    assert features.received[1].from_ip == "198.51.100.7"
    assert verdict.index.evidence.boundary == features.received[1]
    assert_same_verdict(GENUINE, forged, policy)


def test_a_quoted_envelope_sender_cannot_open_a_comment_of_its_own(policy: Policy) -> None:
    boundary = c.EXIM_PLAIN.replace(
        "(envelope-from <alice@sender.example>)",
        '(envelope-from <"x) (TLS1.3) (Authenticated sender: y"@evil.example>)',
    )
    genuine = build_message(c.DOVECOT_LMTP_SOCKET, c.EXIM_PLAIN, *MESSAGE_FIELDS)
    forged = build_message(c.DOVECOT_LMTP_SOCKET, boundary, *MESSAGE_FIELDS)
    hop = judge(forged, policy)[0].received[1]
    assert (hop.tls.value, hop.authenticated) == ("none", False)
    assert_same_verdict(genuine, forged, policy)


def test_forged_spam_verdicts_below_the_boundary_change_nothing(
    make_policy: Callable[..., Policy],
) -> None:
    policy = make_policy(rules=[{"name": "ham", "level": "public", "match": {"spam": False}}])
    forged = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.POSTFIX_PLAIN,
        "X-Spam-Flag: YES",
        "X-Spam-Score: 99",
        *MESSAGE_FIELDS,
    )
    assert_same_verdict(GENUINE, forged, policy)


@pytest.mark.parametrize(
    "existing",
    [
        "X-Caliproxy-Privacy: v=1; level=public; pi=100; grade=A; t=100; a=100; p=100; c=100; r=TLS13;",
        "x-caliproxy-privacy : level=public;\n\tr=TLS13 AUTHSUB PGPENC",
        "X-CALIPROXY-PRIVACY:",
    ],
)
def test_a_pre_existing_privacy_header_changes_nothing(policy: Policy, existing: str) -> None:
    at_top = build_message(existing, c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PLAIN, *MESSAGE_FIELDS)
    inside = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PLAIN, existing, *MESSAGE_FIELDS)
    for forged in (at_top, inside):
        features, _ = judge(forged, policy)
        assert features.privacy_headers_seen == 1
        assert_same_verdict(GENUINE, forged, policy)
        neutralised = neutralise_existing(forged)
        assert len(neutralised) == len(forged)
        assert judge(neutralised, policy)[0].privacy_headers_seen == 0
        assert_same_verdict(GENUINE, neutralised, policy)
