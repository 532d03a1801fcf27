"""The injected privacy header: constant length, parsable, and the same-length renaming of any
header of our name already present."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from caliproxy.privacy.header import (
    HEADER_LENGTH,
    HEADER_NAME,
    SPOOFED_NAME,
    PrivacyHeader,
    PrivacyHeaderError,
    neutralise_existing,
    parse_header,
    render_header,
    render_unclassified,
)
from caliproxy.privacy.policy import MAX_LEVEL_NAME_LENGTH, Policy
from caliproxy.privacy.scoring import REASONS, Axis
from caliproxy.privacy.verdict import judge

from . import corpus as c
from .conftest import build_message


def test_header_length_is_the_documented_constant() -> None:
    assert HEADER_LENGTH == 256
    assert len(SPOOFED_NAME) == len(HEADER_NAME)


def _longest_possible() -> PrivacyHeader:
    """The longest header v1 can render: the longest level name, every score three digits, and the
    longest reason code of every slot (two codes of one slot never apply together)."""
    longest_by_slot: dict[str, str] = {}
    for spec in REASONS.values():
        if spec.note:
            continue
        if len(spec.code) > len(longest_by_slot.get(spec.slot, "")):
            longest_by_slot[spec.slot] = spec.code
    return PrivacyHeader(
        version=1,
        level="x" * MAX_LEVEL_NAME_LENGTH,
        aggregate=100,
        grade="A",
        axes=tuple((axis.value, 100) for axis in Axis),
        reasons=tuple(longest_by_slot.values()),
    )


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
