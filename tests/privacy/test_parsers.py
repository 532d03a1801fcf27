"""The parsers under the features: header-block splitting, addresses, Received and
Authentication-Results grammar, and that hostile input stays linear."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from caliproxy.errors import PolicyError
from caliproxy.privacy.addresses import AddressPattern, parse_address_list
from caliproxy.privacy.authres import MethodResult, parse_authentication_results
from caliproxy.privacy.confidentiality import confidentiality
from caliproxy.privacy.features import MessageContext, extract_features
from caliproxy.privacy.header_fields import decode_words, header_bounds, split_fields
from caliproxy.privacy.index import privacy_index
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.received import TlsVersion, parse_received

# --- header block -------------------------------------------------------------------------------


def test_fields_are_split_unfolded_and_positioned() -> None:
    data = b"From mbox-line Tue May 14\nA: 1\r\nB : two\r\n\tfolded\r\n  again\r\nbad line\r\n cont\r\nC:\r\n\r\nD: body"
    fields = split_fields(data)
    assert [(f.name, f.text(), f.position) for f in fields] == [
        ("a", "1", 0),
        ("b", "two\tfolded  again", 1),
        ("c", "", 2),
    ]


@pytest.mark.parametrize(
    ("data", "bounds"),
    [
        (b"A: 1\r\n\r\nbody", (6, 8)),
        (b"A: 1\n\nbody", (5, 6)),
        (b"\r\nbody", (0, 2)),
        (b"A: 1\r\n", (6, 6)),
        (b"", (0, 0)),
    ],
)
def test_header_bounds(data: bytes, bounds: tuple[int, int]) -> None:
    assert header_bounds(data) == bounds


def test_rfc2047_words_decode_and_malformed_ones_stay() -> None:
    assert decode_words("=?UTF-8?Q?M=C3=A4rz?= =?utf-8?b?IDIwMjQ=?=") == "März 2024"
    assert decode_words("=?x-unknown?q?a?= =?rot13?q?b?=") == "=?x-unknown?q?a?==?rot13?q?b?="
    assert decode_words("plain") == "plain"


# --- addresses ----------------------------------------------------------------------------------


def test_address_lists() -> None:
    assert parse_address_list('"a@evil, b" <Real@Example.ORG.>, (c@comment) d@x.example') == (
        "real@example.org",
        "d@x.example",
    )
    assert parse_address_list("<mailto:List@Lists.Example?subject=help>") == ("list@lists.example",)
    assert parse_address_list("not an address, @nolocal, nodomain@") == ()


@pytest.mark.parametrize(
    ("pattern", "address", "matches"),
    [
        ("example.org", "a@example.org", True),
        ("example.org", "a@sub.example.org", False),
        ("*.example.org", "a@sub.example.org", True),
        ("*.example.org", "a@example.org", False),
        ("*@example.org", "A@example.org".lower(), True),
        ("Alice@Bücher.example", "alice@xn--bcher-kva.example", True),
        ("bob@*.example", "bob@mail.x.example", True),
        ("bob@*.example", "rob@mail.x.example", False),
    ],
)
def test_address_patterns(pattern: str, address: str, matches: bool) -> None:
    assert AddressPattern(pattern).matches(address) is matches


# --- Received -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tls"),
    [
        (
            "from a (a [192.0.2.1]) (using TLSv1 with cipher AES256-SHA (256/256 bits)) by mx with ESMTPS",
            TlsVersion.TLS1_0,
        ),
        (
            "from a (a [192.0.2.1]) (using TLSv1.1 with cipher X) by mx with ESMTPS",
            TlsVersion.TLS1_1,
        ),
        ("from a (a [192.0.2.1]) (using SSLv3 with cipher X) by mx with ESMTPS", TlsVersion.SSL3),
        (
            "from a ([192.0.2.1]) by mx with esmtps (TLSv1:AES256-SHA:256) (Exim 4.80)",
            TlsVersion.TLS1_0,
        ),
        ("from a ([192.0.2.1]) by mx with UTF8SMTPS id 1", TlsVersion.TLS_UNKNOWN_VERSION),
        (
            "from a (192.0.2.1) by mx with Microsoft SMTP Server (TLS) id 14.3",
            TlsVersion.TLS_UNKNOWN_VERSION,
        ),
        ("from a (192.0.2.1) by mx with Microsoft SMTP Server id 14.3", TlsVersion.NONE),
        (
            "from a ([192.0.2.1]) (DHE-RSA-AES256-SHA encrypted) by mx with SMTP",
            TlsVersion.TLS_UNKNOWN_VERSION,
        ),
        ("from a (tls1.example.net [192.0.2.1]) by mx with ESMTP id 1", TlsVersion.NONE),
        (
            "from a (a [192.0.2.1]) by mx with ESMTP id 1 (version=TLS1_4 cipher=X)",
            TlsVersion.TLS_UNKNOWN_VERSION,
        ),
    ],
)
def test_received_tls_versions(value: str, tls: TlsVersion) -> None:
    assert parse_received(value, 0).tls is tls


def test_received_addresses_are_normalised() -> None:
    hop = parse_received("from a (b [IPv6:2001:DB8::0:1]) by MX.Example.ORG. with ESMTP", 3)
    assert (hop.from_ip, hop.by_host, hop.position) == ("2001:db8::1", "mx.example.org", 3)
    mapped = parse_received("from a (b [IPv6:::ffff:192.0.2.7]:25) by mx", 0)
    assert mapped.from_ip == "192.0.2.7"


def test_received_without_structure_gives_empty_fields() -> None:
    hop = parse_received("garbage ((( ;", 0)
    assert (hop.from_host, hop.from_ip, hop.by_host, hop.protocol, hop.tls) == (
        "",
        "",
        "",
        "",
        TlsVersion.NONE,
    )


# --- Authentication-Results ---------------------------------------------------------------------


def test_authentication_results_grammar() -> None:
    field = parse_authentication_results(
        '"MX.Example.Org" 1; dkim/1 = pass (good (nested)) header.i=@Sub.Sender.Example;'
        ' spf=pass smtp.helo=mail.sender.example; dmarc=fail reason="p=reject; header.from=x.example"'
        " header.from=sender.example; iprev=pass policy.iprev=192.0.2.1",
        5,
    )
    assert field.authserv_id == "mx.example.org"
    assert field.position == 5
    assert field.results == (
        MethodResult("dkim", "pass", "sub.sender.example"),
        MethodResult("spf", "pass", "mail.sender.example"),
        MethodResult("dmarc", "fail", "sender.example"),
        MethodResult("iprev", "pass", ""),
    )
    assert parse_authentication_results("mx.example.org 1; none", 0).results == ()


# --- evidence edge cases ------------------------------------------------------------------------


def test_a_relay_hand_over_is_followed_only_into_a_trusted_relay(
    make_policy: Callable[..., Policy],
) -> None:
    policy = make_policy()
    raw = (
        b"Received: by mx.example.org with SMTP id 1; Tue\r\n"
        b"Received: from evil (evil [198.51.100.9]) (using TLSv1.3 with cipher X)\r\n"
        b" by relay.evil.example with ESMTPS id 2; Tue\r\n"
    )
    evidence = privacy_index(extract_features(raw), policy).evidence
    assert evidence.boundary is not None and evidence.boundary.position == 0
    assert not evidence.local_origin
    assert evidence.outside_hops == 1


def test_cached_features_without_a_header_a_rule_reads_are_refused(
    make_policy: Callable[..., Policy],
) -> None:
    policy = make_policy(
        rules=[
            {"name": "s", "level": "secret", "match": {"header": {"name": "Subject", "regex": "x"}}}
        ]
    )
    raw = b"Subject: x\r\n\r\n"
    stale = extract_features(raw)
    fresh = extract_features(raw, MessageContext(keep_headers=policy.header_names))
    assert not policy.can_judge(stale) and policy.can_judge(fresh)
    with pytest.raises(PolicyError):
        confidentiality(stale, privacy_index(stale, policy), policy)
    assert confidentiality(fresh, privacy_index(fresh, policy), policy).level == "secret"


# --- hostile input ------------------------------------------------------------------------------

HOSTILE = {
    "received-parens": b"Received: from x " + b"(a" * 100_000 + b"\r\n",
    "received-quotes": b"Received: from x " + b'"' * 200_000 + b"\r\n",
    "authres-nesting": b"Authentication-Results: x; " + b"(" * 50_000 + b")" * 50_000 + b"\r\n",
    "address-list": b"To: " + b"a@b.example, " * 50_000 + b"\r\n",
    "address-quotes": b"To: " + b'"a' * 100_000 + b"\r\n",
    "content-type": b"Content-Type: text/plain" + b"; a=b" * 50_000 + b"\r\n",
    "spam-status": b"X-Spam-Status: Yes, " + b"score " * 50_000 + b"\r\n",
    "many-fields": b"A: b\r\n" * 100_000,
    "one-long-fold": b"A: b" + b"\r\n b" * 100_000,
    "no-newline": b"x" * 1_000_000,
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_headers_are_handled_in_linear_time(raw: bytes) -> None:
    started = time.perf_counter()
    extract_features(raw, MessageContext(keep_headers=frozenset({"subject", "to"})))
    assert time.perf_counter() - started < 2.0
