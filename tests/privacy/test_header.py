"""The injected privacy header: constant length, parsable, and the same-length renaming of any
header of our name already present."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from caliproxy.privacy.header import (
    HEADER_LENGTH,
    HEADER_NAME,
    MAX_NAME_LENGTH,
    SPOOFED_NAME,
    HeaderName,
    PrivacyHeader,
    PrivacyHeaderError,
    longest_possible,
    neutralise_existing,
    parse_header,
    render_header,
    render_unclassified,
)
from caliproxy.privacy.policy import MAX_LEVEL_NAME_LENGTH, Policy
from caliproxy.privacy.verdict import judge

from . import corpus as c
from .conftest import build_message


def test_header_length_is_the_documented_constant() -> None:
    assert HEADER_LENGTH == 256
    assert len(SPOOFED_NAME) == len(HEADER_NAME)


def _longest_possible() -> PrivacyHeader:
    """The longest header v1 can render (the longest level name, three-digit scores, the longest
    reason code of every slot); checked here to be what the name length limit is computed from."""
    longest = longest_possible()
    assert len(longest.level) == MAX_LEVEL_NAME_LENGTH and all(score == 100 for _, score in longest.axes)
    return longest


def test_the_longest_possible_verdict_fits() -> None:
    rendered = render_header(_longest_possible())
    assert len(rendered) == HEADER_LENGTH
    assert rendered.rstrip(b" \r\n").endswith(b";")
    assert parse_header(rendered) == _longest_possible()


def test_rendered_header_is_one_line_of_exactly_h_bytes(make_policy: Callable[..., Policy]) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET, c.TRUSTED_AR_PASS, c.POSTFIX_TLS13, c.FROM_ALICE, c.TO_BOB
    )
    _, verdict = judge(message, make_policy())
    rendered = render_header(verdict)
    assert len(rendered) == HEADER_LENGTH
    assert rendered.count(b"\r\n") == 1 and rendered.endswith(b"\r\n")
    assert rendered.startswith(b"X-Caliproxy-Privacy: v=1; level=internal; pi=")
    assert parse_header(rendered) == PrivacyHeader.of(verdict)
    # A filter can match a level exactly.
    assert b"level=internal;" in rendered


def test_parse_accepts_the_value_alone_and_folded() -> None:
    rendered = render_header(_longest_possible())
    value = rendered.split(b":", 1)[1]
    assert parse_header(value) == _longest_possible()
    folded = rendered.replace(b"; t=", b";\r\n\tt=")
    assert parse_header(folded) == _longest_possible()


@pytest.mark.parametrize(
    "bad",
    [
        b"Subject: v=1; level=x; pi=1; grade=A; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=2; level=x; pi=1; grade=A; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=101; grade=A; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=1; grade=F; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=1; grade=A; t=1; a=1; p=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=1; grade=A; t=1; a=1; p=1; c=1; r=BOGUS;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=1; grade=A; t=1; a=1; p=1; c=1; r=XHOP;",
        b"X-Caliproxy-Privacy: v=1; level=x; level=y; pi=1; grade=A; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=a b; pi=1; grade=A; t=1; a=1; p=1; c=1; r=;",
        b"X-Caliproxy-Privacy: v=1; level=x; pi=1; grade=A; t=1; a=1; p=1; c=1; r=",
        "X-Caliproxy-Privacy: v=1; level=é;".encode(),
        render_unclassified("secret"),
    ],
)
def test_parse_refuses_what_is_not_a_v1_verdict(bad: bytes) -> None:
    with pytest.raises(PrivacyHeaderError):
        parse_header(bad)


def test_unclassified_header_has_the_same_length() -> None:
    rendered = render_unclassified("secret")
    assert len(rendered) == HEADER_LENGTH
    assert rendered.startswith(b"X-Caliproxy-Privacy: v=1; level=secret; unclassified;")
    with pytest.raises(PrivacyHeaderError):
        render_unclassified("two words")


# --- neutralising existing headers ---------------------------------------------------------------


def test_neutralise_renames_every_field_of_our_name_at_the_same_length() -> None:
    block = (
        b"X-Caliproxy-Privacy: v=1; level=public;\r\n"
        b"Received: from a by b; date\r\n"
        b"x-caliproxy-privacy :\r\n\tfolded v=1;\r\n continued\r\n"
        b"X-Caliproxy-Privacy-Extra: not ours\r\n"
        b"Subject: mentions\r\n X-Caliproxy-Privacy: on a continuation line\r\n"
        b"\r\n"
        b"X-Caliproxy-Privacy: in the body\r\n"
    )
    out = neutralise_existing(block)
    assert len(out) == len(block)
    assert out == (
        b"X-Caliproxy-Spoofed: v=1; level=public;\r\n"
        b"Received: from a by b; date\r\n"
        b"X-Caliproxy-Spoofed :\r\n\tfolded v=1;\r\n continued\r\n"
        b"X-Caliproxy-Privacy-Extra: not ours\r\n"
        b"Subject: mentions\r\n X-Caliproxy-Privacy: on a continuation line\r\n"
        b"\r\n"
        b"X-Caliproxy-Privacy: in the body\r\n"
    )


def test_neutralise_leaves_clean_input_untouched() -> None:
    block = b"From: a@b\r\nSubject: x\r\n\r\n"
    assert neutralise_existing(block) is block
    assert neutralise_existing(b"") == b""
    assert neutralise_existing(b"\r\nX-Caliproxy-Privacy: body only\r\n").endswith(
        b"Privacy: body only\r\n"
    )


def test_neutralise_works_on_header_bytes_without_the_empty_line() -> None:
    assert neutralise_existing(b"A: 1\nX-Caliproxy-Privacy: 2") == b"A: 1\nX-Caliproxy-Spoofed: 2"


# --- a configured name ---------------------------------------------------------------------------


def test_the_default_name_and_its_spoofed_form() -> None:
    assert HeaderName().name == HEADER_NAME and HeaderName().spoofed == SPOOFED_NAME


@pytest.mark.parametrize("name", ["X-Home-Privacy", "Privacy-Verdict", "X-" + "a" * (MAX_NAME_LENGTH - 2)])
def test_any_valid_name_renders_parses_and_neutralises_at_constant_length(name: str) -> None:
    ours = HeaderName(name)
    assert len(ours.spoofed) == len(name) and ours.spoofed.endswith("-Spoofed")
    rendered = render_header(_longest_possible(), ours)
    assert len(rendered) == HEADER_LENGTH and rendered.startswith(name.encode() + b": v=1; ")
    assert parse_header(rendered, ours) == _longest_possible()
    with pytest.raises(PrivacyHeaderError):
        parse_header(rendered)  # under the default name it is some other field
    assert len(render_unclassified("secret", ours)) == HEADER_LENGTH
    block = (name.lower().encode() + b" : forged\r\n" + HEADER_NAME.encode() + b": not ours now\r\n"
             b"\r\n" + name.encode() + b": body\r\n")
    out = neutralise_existing(block, ours)
    assert len(out) == len(block)
    assert out.startswith(ours.spoofed.encode() + b" : forged\r\n" + HEADER_NAME.encode() + b": not ours")
    assert out.endswith(name.encode() + b": body\r\n")


@pytest.mark.parametrize("name, why", [
    ("X-Caliproxy-Spoofed", "must not end in"),
    ("x-home-SPOOFED", "must not end in"),
    ("Content-Type", "relies on"),
    ("Authentication-Results", "relies on"),
    ("X-Priv", "characters long"),
    ("X-" + "a" * (MAX_NAME_LENGTH - 1), "characters long"),
    ("X-Home Privacy", "letters, digits"),
    ("X-Home:Privacy", "letters, digits"),
    ("1-Home-Privacy", "starting with a letter"),
    ("X-Hôme-Privacy", "letters, digits"),
])
def test_names_that_cannot_work_are_refused(name: str, why: str) -> None:
    with pytest.raises(PrivacyHeaderError, match=why):
        HeaderName(name)


def test_fields_of_the_configured_name_are_counted_not_believed() -> None:
    from caliproxy.privacy.features import MessageContext, extract_features

    raw = b"X-Home-Privacy: v=1; level=public;\r\nX-Caliproxy-Privacy: v=1;\r\nSubject: s\r\n\r\n"
    assert extract_features(raw, MessageContext(privacy_header="x-home-privacy")).privacy_headers_seen == 1
    assert extract_features(raw).privacy_headers_seen == 1
    assert extract_features(b"Subject: s\r\n\r\n", MessageContext(privacy_header="x-home-privacy")
                            ).privacy_headers_seen == 0
