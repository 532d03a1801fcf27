"""``caliproxy explain``: the features, every axis with its reasons, the level with the rules that
fired, and the exact header, as JSON-ready data and as text."""

from __future__ import annotations

import json
from collections.abc import Callable

from caliproxy.explain import explain, render_text
from caliproxy.privacy.header import HEADER_LENGTH
from caliproxy.privacy.policy import Policy

from . import corpus as c
from .conftest import build_message


def _message() -> bytes:
    return build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.TRUSTED_AR_PASS,
        c.POSTFIX_TLS13,
        "Authentication-Results: mx.example.org; dmarc=pass header.from=sender.example",
        c.SENDER_SUBMISSION,
        c.FROM_ALICE,
        c.TO_BOB,
        "Sensitivity: Private",
        *c.PLAIN_TEXT,
    )


def test_explain_gives_every_reason_and_the_exact_header(
    make_policy: Callable[..., Policy],
) -> None:
    policy = make_policy(
        rules=[{"name": "private", "level": "confidential", "match": {"sensitivity": "private"}}]
    )
    result = explain(_message(), policy, account="bob@example.org", mailbox="INBOX")
    assert json.loads(json.dumps(result)) == result

    assert result["features"]["from"] == ["alice@sender.example"]
    assert result["features"]["size"] == len(_message())
    assert result["evidence"]["boundary_position"] == 2
    assert result["evidence"]["believed_auth_positions"] == [1]
    assert result["evidence"]["ignored_auth_fields"] == 1

    transport, authenticity, protection, correspondents = result["index"]["axes"]
    assert [r["code"] for r in transport["reasons"]] == ["TLS13", "XHOP"]
    assert transport["reasons"][0]["detail"] == (
        "mail.sender.example [198.51.100.7] -> mx.example.org (ESMTPS, tls1.3)"
    )
    assert [r["code"] for r in authenticity["reasons"]] == ["DKIM+", "DKIMA", "ARIGN"]
    assert sum(r["points"] for r in authenticity["reasons"]) == authenticity["score"] == 40
    assert protection["reasons"][0]["meaning"] == "no end-to-end protection"
    assert correspondents["weight"] == 15

    assert result["level"] == {
        "level": "confidential",
        "default": False,
        "scale": ["public", "internal", "confidential", "secret"],
        "rules": [{"name": "private", "level": "confidential", "because": ["sensitivity private"]}],
    }
    assert len(result["header"].encode("ascii")) == HEADER_LENGTH == result["header_length"]
    assert result["header"].startswith("X-Caliproxy-Privacy: v=1; level=confidential; pi=")


def test_text_report_names_hops_results_reasons_rules_and_header(
    make_policy: Callable[..., Policy],
) -> None:
    policy = make_policy(
        rules=[{"name": "private", "level": "confidential", "match": {"sensitivity": "private"}}]
    )
    result = explain(_message(), policy)
    text = render_text(result)
    assert (
        "2. mail.sender.example [198.51.100.7] -> mx.example.org  ESMTPS tls1.3  (boundary)" in text
    )
    assert "3. laptop.sender.example [10.1.2.3] -> mail.sender.example" in text
    assert "(outside, not believed)" in text
    assert "mx.example.org: dkim=pass(sender.example) dkim-atps=neutral  (believed)" in text
    assert "mx.example.org: dmarc=pass(sender.example)  (ignored)" in text
    assert "Privacy index v1: " in text
    assert " +100  TLS13     boundary hop used TLS 1.3 - mail.sender.example" in text
    assert "rule 'private' -> confidential: sensitivity private" in text
    assert "Header (256 bytes):\n  X-Caliproxy-Privacy: v=1; level=confidential;" in text


def test_text_report_of_a_message_with_nothing_believed() -> None:
    text = render_text(explain(b"Subject: hi\r\n\r\nbody\r\n", Policy()))
    assert "no hop believed: no trusted relays are configured" in text
    assert "no rule matched: policy default" in text
    assert "Spam: unknown" in text
