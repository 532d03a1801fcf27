"""Properties over arbitrary input: extraction never raises and is deterministic, every verdict
renders to a header of the constant length that parses back to the same verdict."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caliproxy.policy_config import policy_from_mapping
from caliproxy.privacy.features import MessageContext, MessageFeatures, extract_features
from caliproxy.privacy.header import (
    HEADER_LENGTH,
    PrivacyHeader,
    neutralise_existing,
    parse_header,
    render_header,
)
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.scoring import REASONS
from caliproxy.privacy.verdict import evaluate

from . import corpus as c
from .conftest import BASE_POLICY

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of real header fields, cut at arbitrary points and re-joined, reach the parsers' corners
# far more often than uniform bytes do.
_FIELDS = [value for value in vars(c).values() if isinstance(value, str) and ":" in value] + [
    "Sensitivity: Company-Confidential",
    "X-Spam-Status: Yes, score=-12.25 required=5.0",
    "X-Spamd-Result: default: False [999999.999999 / 15.00]",
    "X-Spam-Level: ****",
    'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=x',
    "Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"',
    "From: =?utf-8?b?w6k=?= <a@xn--bcher-kva.example>, b@[192.0.2.1]",
    "To: group: a@b, c@d;, <@route:e@f>",
    "List-Id: <list.example.org>",
    "X-Caliproxy-Privacy: v=1; level=public;",
    "Authentication-Results: mx.example.org; none",
    'Authentication-Results: "mx.example.org" 1; dkim=pass (a (nested) comment) header.d="x"',
    "Received: from [IPv6:::ffff:192.0.2.1] (x [IPv6:2001:db8::1]) by mx.example.org",
]
_PIECE = st.one_of(
    st.sampled_from(_FIELDS),
    st.sampled_from(_FIELDS).flatmap(lambda f: st.integers(0, len(f)).map(lambda i: f[:i])),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["(", ")", '"', ";", "\\", "[", "]", "<", ">", "=?", "?=", "\t", " ", ":"]),
)
_HEADERS = st.lists(st.lists(_PIECE, min_size=1, max_size=4).map("".join), max_size=12).flatmap(
    lambda fields: st.sampled_from(["\r\n", "\n", "\r\n\t", "\r\n\r\n"]).map(
        lambda sep: sep.join(fields).encode("utf-8", "surrogatepass")
    )
)
_RAW = st.one_of(st.binary(max_size=600), _HEADERS)

_LEVEL_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,23}", fullmatch=True)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    levels = draw(st.lists(_LEVEL_NAME, min_size=1, max_size=5, unique=True))
    pick = st.sampled_from(levels)
    rules = [
        {"name": "encrypted", "level": draw(pick), "match": {"encrypted": True}},
        {"name": "weak", "level": draw(pick), "match": {"grade": ["D", "E"]}},
        {"name": "spam", "level": draw(pick), "match": {"spam": True}},
        {
            "name": "subject",
            "level": draw(pick),
            "match": {"header": {"name": "Subject", "regex": "a"}},
        },
        {
            "name": "sender",
            "level": draw(pick),
            "match": {"sender": ["*.example", "*@example.org"]},
        },
    ]
    return policy_from_mapping(
        {**BASE_POLICY, "levels": levels, "default_level": draw(pick), "rules": rules}
    )


@SETTINGS
@given(raw=_RAW, body=st.one_of(st.none(), st.binary(max_size=200)))
def test_extraction_never_raises_and_is_deterministic(raw: bytes, body: bytes | None) -> None:
    context = MessageContext("acct", "INBOX", None, frozenset({"subject"}))
    first = extract_features(raw, context, body=body)
    assert extract_features(raw, context, body=body) == first
    assert MessageFeatures.from_dict(json.loads(json.dumps(first.to_dict()))) == first


@SETTINGS
@given(raw=_RAW, policy=policies())
def test_every_verdict_renders_to_h_bytes_and_parses_back(raw: bytes, policy: Policy) -> None:
    features = extract_features(raw, MessageContext(keep_headers=policy.header_names))
    verdict = evaluate(features, policy)

    slots = Counter(REASONS[r.code].slot for r in verdict.index.reasons)
    assert all(count == 1 for count in slots.values()), slots
    assert all(0 <= a.score <= 100 for a in verdict.index.axes)
    assert verdict.level.level in policy.levels

    rendered = render_header(verdict)
    assert len(rendered) == HEADER_LENGTH
    assert parse_header(rendered) == PrivacyHeader.of(verdict)


@SETTINGS
@given(raw=_RAW)
def test_neutralising_keeps_the_length_and_leaves_none_of_ours(raw: bytes) -> None:
    out = neutralise_existing(raw)
    assert len(out) == len(raw)
    assert neutralise_existing(out) == out
    assert extract_features(out).privacy_headers_seen == 0
