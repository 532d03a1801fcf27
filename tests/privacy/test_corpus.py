"""A corpus of realistic messages: each asserts the features read, the index axes and reasons, and
the confidentiality level with the rules that fired."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from caliproxy.privacy.features import MessageFeatures, Protection
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.received import TlsVersion
from caliproxy.privacy.verdict import Verdict, judge

from . import corpus as c
from .conftest import build_message

RULES: list[dict[str, Any]] = [
    {
        "name": "private",
        "level": "confidential",
        "match": {"sensitivity": ["private", "personal", "company-confidential"]},
    },
    {"name": "encrypted", "level": "secret", "match": {"encrypted": True}},
    {"name": "spam", "level": "public", "match": {"spam": True}},
    {
        "name": "clinic",
        "level": "secret",
        "match": {"sender": ["clinic.example", "*.clinic.example"]},
    },
    {"name": "announcements", "level": "public", "match": {"list": ["*.lists.example.org"]}},
    {"name": "weak", "level": "public", "match": {"grade": ["E"]}},
]

MakePolicy = Callable[..., Policy]


@pytest.fixture
def policy(make_policy: MakePolicy) -> Policy:
    return make_policy(rules=RULES)


def codes(verdict: Verdict) -> list[str]:
    return [reason.code for reason in verdict.index.reasons]


def axes(verdict: Verdict) -> dict[str, int]:
    return {a.axis.value: a.score for a in verdict.index.axes}


def fired(verdict: Verdict) -> list[str]:
    return [rule.name for rule in verdict.level.fired]


def run(message: bytes, policy: Policy, **context: Any) -> tuple[MessageFeatures, Verdict]:
    return judge(message, policy, **context)


# --- Postfix ------------------------------------------------------------------------------------


def test_postfix_tls13_with_trusted_dkim_dmarc_spf_from_a_known_sender(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.TRUSTED_DMARC_PASS,
        c.TRUSTED_AR_PASS,
        c.TRUSTED_SPF_PASS,
        c.POSTFIX_TLS13,
        c.SENDER_SUBMISSION,
        c.DKIM_SIGNATURE,
        c.FROM_ALICE,
        c.TO_BOB,
        *c.PLAIN_TEXT,
    )
    features, verdict = run(message, policy)

    assert [h.tls for h in features.received] == [
        TlsVersion.NONE,
        TlsVersion.TLS1_3,
        TlsVersion.TLS_UNKNOWN_VERSION,  # the sender's ESMTPSA: a claim, never believed
    ]
    assert features.received[1].from_ip == "198.51.100.7"
    assert features.received[1].from_rdns == "mail.sender.example"
    assert features.received[2].authenticated  # the sender's own submission hop: a claim only
    assert features.from_addresses == ("alice@sender.example",)
    assert features.to == ("bob@example.org",)
    assert features.content_type == "text/plain"
    assert features.protection is Protection.NONE

    assert codes(verdict) == [
        "TLS13",
        "XHOP",
        "DMARC+",
        "DKIM+",
        "DKIMA",
        "SPF+",
        "NOE2E",
        "FROMKV",
        "RCPTK",
    ]
    assert axes(verdict) == {
        "transport": 100,
        "authenticity": 100,
        "protection": 0,
        "correspondents": 100,
    }
    assert (verdict.index.aggregate, verdict.index.grade) == (75, "B")
    assert verdict.level.level == "internal" and verdict.level.default


def test_postfix_without_tls_and_failed_authentication_scores_e(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.TRUSTED_AR_FAIL,
        c.POSTFIX_PLAIN,
        'From: "Bank Security" <security@bank.example>',
        c.TO_BOB,
        *c.PLAIN_TEXT,
    )
    features, verdict = run(message, policy)

    assert features.received[1].tls is TlsVersion.NONE
    assert codes(verdict) == ["PLAIN", "DMARC-", "SPF-", "NOE2E", "FROMU", "RCPTK"]
    assert axes(verdict) == {
        "transport": 0,
        "authenticity": 0,
        "protection": 0,
        "correspondents": 40,
    }
    assert verdict.index.grade == "E"
    assert verdict.level.level == "public"
    assert fired(verdict) == ["weak"]


def test_postfix_older_tls12_format(policy: Policy) -> None:
    message = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_TLS12_OLD, c.FROM_ALICE, c.TO_BOB)
    features, verdict = run(message, policy)
    assert features.received[1].tls is TlsVersion.TLS1_2
    assert codes(verdict)[0] == "TLS12"
    assert axes(verdict)["transport"] == 80


def test_lmtp_across_the_network_in_clear_costs_transport_points(policy: Policy) -> None:
    message = build_message(c.DOVECOT_LMTP, c.POSTFIX_TLS13, c.FROM_ALICE, c.TO_BOB)
    _, verdict = run(message, policy)
    assert codes(verdict)[:2] == ["TLS13", "INCLR"]
    assert axes(verdict)["transport"] == 80


def test_amavis_chain_on_loopback_is_trusted_and_its_spam_score_believed(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.AMAVIS_REINJECT,
        "X-Virus-Scanned: Debian amavisd-new at mx.example.org",
        "X-Spam-Flag: NO",
        "X-Spam-Score: -1.9",
        "X-Spam-Level:",
        "X-Spam-Status: No, score=-1.9 tagged_above=-999 required=6.31\n\ttests=[BAYES_00=-1.9, DKIM_SIGNED=0.1] autolearn=ham",
        c.AMAVIS,
        c.TRUSTED_AR_PASS,
        c.POSTFIX_TLS13,
        c.FROM_ALICE,
        c.TO_BOB,
    )
    features, verdict = run(message, policy)
    evidence = verdict.index.evidence
    assert evidence.trusted_hops == 4
    assert evidence.boundary == features.received[3]
    assert evidence.spam is False and evidence.spam_score == -1.9
    assert {s.score for s in features.spam} == {-1.9, None}
    assert codes(verdict)[:2] == ["TLS13", "DKIM+"]


def test_authenticated_submission_from_a_local_user(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.POSTFIX_SUBMISSION,
        "From: Bob <bob@example.org>",
        "To: carol@example.org",
        *c.PLAIN_TEXT,
    )
    features, verdict = run(message, policy)
    assert features.received[1].authenticated
    assert features.received[1].tls is TlsVersion.TLS1_3
    assert codes(verdict) == ["TLS13", "AUTHSUB", "NOE2E", "FROMKV", "RCPTK"]
    assert axes(verdict) == {
        "transport": 100,
        "authenticity": 100,
        "protection": 0,
        "correspondents": 100,
    }


def test_local_pickup_originates_inside_the_chain(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PICKUP, "From: root@example.org", "To: bob@example.org"
    )
    _, verdict = run(message, policy)
    assert codes(verdict) == ["LOCAL", "AUTHSUB", "NOE2E", "FROMKV", "RCPTK"]
    assert verdict.index.evidence.local_origin


def test_message_without_received_lines_believes_nothing(policy: Policy) -> None:
    message = build_message("From: bob@example.org", "To: alice@sender.example", "Subject: draft")
    _, verdict = run(message, policy, mailbox="Drafts")
    assert codes(verdict) == ["NOHOP", "NOAR", "NOE2E", "FROMK", "RCPTK"]
    assert verdict.index.reasons[0].detail == "no Received field"


def test_without_trusted_relays_no_hop_is_believed(make_policy: MakePolicy) -> None:
    policy = make_policy(trusted_relays={})
    message = build_message(c.DOVECOT_LMTP_SOCKET, c.TRUSTED_AR_PASS, c.POSTFIX_TLS13, c.FROM_ALICE)
    _, verdict = run(message, policy)
    assert codes(verdict)[:3] == ["NOHOP", "XHOP", "NOAR"]
    assert verdict.index.reasons[0].detail == "no trusted relays are configured"
    assert "ARIGN" in codes(verdict)


# --- Exim, Sendmail, Exchange, Gmail -------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "tls", "code"),
    [
        (c.EXIM_TLS13, TlsVersion.TLS1_3, "TLS13"),
        (c.EXIM_TLS12_OLD, TlsVersion.TLS1_2, "TLS12"),
        (c.EXIM_PLAIN, TlsVersion.NONE, "PLAIN"),
        (c.SENDMAIL_TLS12, TlsVersion.TLS1_2, "TLS12"),
        (c.SENDMAIL_PLAIN, TlsVersion.NONE, "PLAIN"),
    ],
    ids=["exim-tls13", "exim-tls12-old", "exim-plain", "sendmail-tls12", "sendmail-plain"],
)
def test_exim_and_sendmail_boundary_hops(
    policy: Policy, received: str, tls: TlsVersion, code: str
) -> None:
    message = build_message(c.DOVECOT_LMTP_SOCKET, received, c.FROM_ALICE, c.TO_BOB)
    features, verdict = run(message, policy)
    hop = features.received[1]
    assert (hop.tls, hop.from_ip, hop.by_host) == (tls, "198.51.100.7", "mx.example.org")
    assert codes(verdict)[0] == code
    assert verdict.index.evidence.boundary == hop


def test_exim_names_the_reverse_dns_only_when_helo_differs(policy: Policy) -> None:
    message = build_message(c.EXIM_TLS12_OLD)
    hop = run(message, policy)[0].received[0]
    assert (hop.from_host, hop.from_rdns) == ("mail.sender.example", "mail.sender.example")


@pytest.fixture
def exchange_policy(make_policy: MakePolicy) -> Policy:
    return make_policy(
        trusted_relays={"hosts": ["*.corp.example.org"], "networks": ["10.20.0.0/24"]},
        authserv_ids=[],
        known_correspondents=["*@corp.example.org"],
    )


def test_exchange_chain_with_tls12_from_an_outlook_sender(exchange_policy: Policy) -> None:
    message = build_message(
        c.EXCHANGE_INTERNAL,
        c.EXCHANGE_EDGE_TLS12,
        *c.OUTLOOK_SENDER_HOPS,
        "From: Dana <dana@outlook.example>",
        "To: eve@corp.example.org",
    )
    features, verdict = run(message, exchange_policy)
    assert [h.tls for h in features.received] == [
        TlsVersion.TLS1_2,
        TlsVersion.TLS1_2,
        TlsVersion.TLS1_2,
        TlsVersion.NONE,
    ]
    assert features.received[1].from_ip == "198.51.100.7"
    assert features.received[2].from_ip == "2603:10a6:208:1::12"
    assert codes(verdict) == ["TLS12", "XHOP", "NOAR", "NOE2E", "FROMU", "RCPTK"]
    assert verdict.index.reasons[1].detail == "2 hop(s), 1 claiming TLS"


def test_exchange_edge_without_tls(exchange_policy: Policy) -> None:
    message = build_message(
        c.EXCHANGE_INTERNAL, c.EXCHANGE_EDGE_PLAIN, "From: dana@outlook.example"
    )
    _, verdict = run(message, exchange_policy)
    assert codes(verdict)[0] == "PLAIN"


@pytest.fixture
def gmail_policy(make_policy: MakePolicy) -> Policy:
    # Gmail's top hop is "by <IPv6 id>": the user trusts Google's internal range and its MX name.
    return make_policy(
        trusted_relays={"hosts": ["mx.google.com"], "networks": ["2002:a05::/32"]},
        authserv_ids=["mx.google.com"],
        known_correspondents=["alice@sender.example", "bob@gmail.com"],
    )


def _gmail(mx_hop: str) -> bytes:
    return build_message(
        "Delivered-To: bob@gmail.com",
        c.GMAIL_TOP,
        c.GMAIL_X_RECEIVED,
        "ARC-Seal: i=1; a=rsa-sha256; t=1715673601; cv=none; d=google.com; s=arc-20160816; b=AbC",
        c.GMAIL_ARC_AR,
        "Return-Path: <alice@sender.example>",
        mx_hop,
        c.GMAIL_RECEIVED_SPF,
        c.GMAIL_AR,
        c.DKIM_SIGNATURE,
        c.FROM_ALICE,
        "To: bob@gmail.com",
        *c.PLAIN_TEXT,
    )


def test_gmail_believes_its_arc_results_above_the_boundary_not_the_ar_below_it(
    gmail_policy: Policy,
) -> None:
    features, verdict = run(_gmail(c.GMAIL_MX_TLS13), gmail_policy)
    assert features.received[1].tls is TlsVersion.TLS1_3
    assert [f.authserv_id for f in features.auth_results] == ["mx.google.com", "mx.google.com"]
    # The plain A-R Gmail writes under its own Received line is indistinguishable by position from
    # one the sender wrote, so only the ARC-Authentication-Results above the boundary counts.
    assert codes(verdict) == [
        "TLS13",
        "DMARC+",
        "DKIM+",
        "DKIMA",
        "SPF+",
        "ARIGN",
        "NOE2E",
        "FROMKV",
        "RCPTK",
    ]
    assert verdict.index.grade == "B"


@pytest.mark.parametrize(
    ("mx_hop", "code"),
    [(c.GMAIL_MX_INTERNAL, "TLS"), (c.GMAIL_MX_PLAIN, "PLAIN")],
    ids=["google-transport-security", "plain"],
)
def test_gmail_mx_hop_variants(gmail_policy: Policy, mx_hop: str, code: str) -> None:
    _, verdict = run(_gmail(mx_hop), gmail_policy)
    assert codes(verdict)[0] == code


# --- sensitivity, spam, lists, rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Personal", "personal"),
        ("private", "private"),
        ("Company-Confidential", "company-confidential"),
    ],
)
def test_sensitivity_header_raises_the_level(policy: Policy, header: str, value: str) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET, c.POSTFIX_TLS13, c.FROM_ALICE, f"Sensitivity: {header}"
    )
    features, verdict = run(message, policy)
    assert features.sensitivity == value
    assert verdict.level.level == "confidential"
    assert verdict.level.fired[0].because == (f"sensitivity {value}",)


def test_unknown_sensitivity_value_is_not_a_sensitivity(policy: Policy) -> None:
    message = build_message(c.FROM_ALICE, "Sensitivity: Top-Secret")
    assert run(message, policy)[0].sensitivity is None


@pytest.mark.parametrize(
    ("spam_header", "is_spam", "score"),
    [
        (
            "X-Spam-Status: Yes, score=12.3 required=5.0 tests=BAYES_99,URIBL_BLACK\n\tautolearn=no",
            True,
            12.3,
        ),
        ("X-Spam-Status: No, score=-12.5 required=5.0 tests=USER_IN_WELCOMELIST", False, -12.5),
        ("X-Spamd-Result: default: True [15.20 / 15.00];\n\tBAYES_SPAM(5.10)[99.99%]", True, 15.2),
        ("X-Spam-Score: 103.7", True, 103.7),
        ("X-Spam-Score: -0.4", False, -0.4),
        ("X-Spam: Yes", True, None),
        ("X-Spam-Level: *******", True, 7.0),
    ],
)
def test_spam_headers_above_the_boundary(
    policy: Policy, spam_header: str, is_spam: bool, score: float | None
) -> None:
    message = build_message(c.DOVECOT_LMTP_SOCKET, spam_header, c.POSTFIX_TLS13, c.FROM_ALICE)
    _, verdict = run(message, policy)
    assert verdict.index.evidence.spam is is_spam
    assert verdict.index.evidence.spam_score == score
    assert ("spam" in fired(verdict)) is is_spam


def test_spam_verdict_written_by_the_sender_is_not_believed(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        "X-Spam-Status: Yes, score=9.1 required=5.0",
        c.POSTFIX_TLS13,
        "X-Spam-Flag: NO",
        "X-Spam-Score: -50",
        c.FROM_ALICE,
    )
    _, verdict = run(message, policy)
    assert verdict.index.evidence.spam is True
    assert verdict.index.evidence.spam_score == 9.1


def test_mailing_list_by_list_id_and_sender_header(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.POSTFIX_TLS13,
        'From: "Clinic News" <news@clinic.example>',
        "Sender: announce-bounces@lists.example.org",
        "List-Id: Announcements <announce.lists.example.org>",
        "List-Post: <mailto:announce@lists.example.org>",
        "To: announce@lists.example.org",
    )
    features, verdict = run(message, policy)
    assert features.list_id == "announce.lists.example.org"
    assert features.sender_addresses == ("announce-bounces@lists.example.org",)
    # Two rules fire; the message takes the higher level.
    assert fired(verdict) == ["clinic", "announcements"]
    assert verdict.level.level == "secret"


def test_folder_and_account_rules(make_policy: MakePolicy) -> None:
    policy = make_policy(
        rules=[
            {
                "name": "board",
                "level": "secret",
                "match": {"folder": ["Board/*"], "account": ["*@example.org"]},
            }
        ]
    )
    message = build_message(c.FROM_ALICE)
    _, inside = run(message, policy, account="Bob@Example.org", mailbox="Board/2024")
    _, elsewhere = run(message, policy, account="bob@example.org", mailbox="board/2024")
    assert inside.level.level == "secret"
    assert inside.level.fired[0].because == (
        "folder Board/2024 matches Board/*",
        "account Bob@Example.org matches *@example.org",
    )
    assert elsewhere.level.default


def test_header_regex_rule_reads_decoded_values(make_policy: MakePolicy) -> None:
    policy = make_policy(
        rules=[
            {
                "name": "payroll",
                "level": "secret",
                "match": {"header": {"name": "Subject", "regex": "(?i)payslip"}},
            }
        ]
    )
    message = build_message(c.FROM_ALICE, "Subject: =?utf-8?q?Your_PAYSLIP_for_M=C3=A4rz?=")
    features, verdict = run(message, policy)
    assert features.header_values("subject") == ("Your PAYSLIP for März",)
    assert verdict.level.level == "secret"


def test_index_threshold_rule(make_policy: MakePolicy) -> None:
    policy = make_policy(
        rules=[
            {
                "name": "weak-transport",
                "level": "public",
                "match": {"index": {"transport": {"max": 0}}},
            }
        ]
    )
    weak = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_PLAIN, c.FROM_ALICE)
    strong = build_message(c.DOVECOT_LMTP_SOCKET, c.POSTFIX_TLS13, c.FROM_ALICE)
    assert run(weak, policy)[1].level.level == "public"
    assert run(strong, policy)[1].level.default


# --- end-to-end protection, produced by gpg and openssl ------------------------------------------

TRACE = (c.DOVECOT_LMTP_SOCKET, c.TRUSTED_AR_PASS, c.POSTFIX_TLS13)


def test_pgp_mime_encrypted_by_gpg(policy: Policy, pgp_payloads: dict[str, bytes]) -> None:
    armour = pgp_payloads["encrypted"].decode()
    assert armour.startswith("-----BEGIN PGP MESSAGE-----")
    message = build_message(
        *TRACE,
        c.FROM_ALICE,
        c.TO_BOB,
        "MIME-Version: 1.0",
        'Content-Type: multipart/encrypted;\n\tprotocol="application/pgp-encrypted";\n\tboundary="enc42"',
        body=(
            "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n--enc42\n"
            "Content-Type: application/pgp-encrypted\n\nVersion: 1\n\n--enc42\n"
            'Content-Type: application/octet-stream; name="encrypted.asc"\n\n'
            f"{armour}\n--enc42--\n"
        ),
    )
    features, verdict = run(message, policy)
    assert features.protection is Protection.PGP_ENCRYPTED and features.encrypted
    assert "PGPENC" in codes(verdict)
    assert axes(verdict)["protection"] == 100
    assert verdict.level.level == "secret" and fired(verdict) == ["encrypted"]


def test_pgp_mime_signed_by_gpg(policy: Policy, pgp_payloads: dict[str, bytes]) -> None:
    signature = pgp_payloads["signature"].decode()
    assert signature.startswith("-----BEGIN PGP SIGNATURE-----")
    message = build_message(
        *TRACE,
        c.FROM_ALICE,
        c.TO_BOB,
        'Content-Type: multipart/signed; micalg=pgp-sha512;\n protocol="application/pgp-signature"; boundary="sig7"',
        body=(
            "--sig7\n" + pgp_payloads["signed_part"].decode() + "\n--sig7\n"
            'Content-Type: application/pgp-signature; name="signature.asc"\n\n'
            f"{signature}\n--sig7--\n"
        ),
    )
    features, verdict = run(message, policy)
    assert features.protection is Protection.PGP_SIGNED and features.signed
    assert "PGPSIG" in codes(verdict) and axes(verdict)["protection"] == 50
    assert verdict.level.default


@pytest.mark.parametrize(
    ("kind", "protection", "code"),
    [
        ("enveloped", Protection.SMIME_ENCRYPTED, "SMIMEENC"),
        ("signed", Protection.SMIME_SIGNED, "SMIMESIG"),
        ("opaque_signed", Protection.SMIME_SIGNED, "SMIMESIG"),
    ],
)
def test_smime_messages_written_by_openssl(
    policy: Policy, smime_messages: dict[str, bytes], kind: str, protection: Protection, code: str
) -> None:
    message = build_message(*TRACE, body="").rstrip(b"\r\n") + b"\r\n" + smime_messages[kind]
    features, verdict = run(message, policy)
    assert features.protection is protection
    assert features.from_addresses == ("alice@sender.example",)
    assert code in codes(verdict)
    assert (verdict.level.level == "secret") is (protection is Protection.SMIME_ENCRYPTED)


@pytest.mark.parametrize(
    ("payload", "protection", "code"),
    [
        ("inline_encrypted", Protection.INLINE_PGP_ENCRYPTED, "PGPINL"),
        ("clearsigned", Protection.INLINE_PGP_SIGNED, "PGPINLSIG"),
    ],
)
def test_inline_pgp_is_seen_only_with_the_body(
    policy: Policy, pgp_payloads: dict[str, bytes], payload: str, protection: Protection, code: str
) -> None:
    message = build_message(
        *TRACE,
        c.FROM_ALICE,
        "Content-Type: text/plain; charset=us-ascii",
        body="Hi Bob,\n\n" + pgp_payloads[payload].decode(),
    )
    features, verdict = run(message, policy)
    assert features.protection is protection
    assert code in codes(verdict)
    header_only = message[: message.index(b"\r\n\r\n") + 4]
    assert run(header_only, policy)[0].protection is Protection.NONE


def test_a_pgp_key_attachment_is_not_protection(policy: Policy) -> None:
    message = build_message(
        c.FROM_ALICE,
        "Content-Type: text/plain",
        body="My key:\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF...\n",
    )
    assert run(message, policy)[0].protection is Protection.NONE


# --- awkward but real header shapes --------------------------------------------------------------


def test_encoded_display_names_idna_domains_and_groups(policy: Policy) -> None:
    message = build_message(
        "From: =?iso-8859-1?q?J=F6rg_M=FCller?= <Joerg@Bücher.Example>",
        'To: "Doe, John" <john@example.org>, undisclosed-recipients:;',
        "Cc: team: carol@example.org, dave@example.org;, (comment) erin@x.example (Erin)",
        "Bcc: <frank@example.org>",
    )
    features, _ = run(message, policy)
    assert features.from_addresses == ("joerg@xn--bcher-kva.example",)
    assert features.to == ("john@example.org",)
    assert features.cc == ("carol@example.org", "dave@example.org", "erin@x.example")
    assert features.bcc == ("frank@example.org",)


def test_two_different_from_addresses_are_nobody(policy: Policy) -> None:
    message = build_message(
        c.DOVECOT_LMTP_SOCKET,
        c.TRUSTED_DMARC_PASS,
        c.POSTFIX_TLS13,
        "From: alice@sender.example",
        "From: mallory@evil.example",
        c.TO_BOB,
    )
    _, verdict = run(message, policy)
    # DMARC cannot speak for two From domains, and no single known sender is named.
    assert "DMARC+" not in codes(verdict)
    assert "NOFROM" in codes(verdict)


def test_eight_bit_and_bare_lf_headers(policy: Policy) -> None:
    raw = (
        "Received: from mail.sender.example (mail.sender.example [198.51.100.7])\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
        "\tby mx.example.org (Postfix) with ESMTPS id 1; Tue, 14 May 2024 10:00:00 +0200\n"
        "From: Zoë <zoe@sender.example>\nSubject: caf\xe9\n\nbody\n"
    ).encode("latin-1")
    features, verdict = run(raw, policy)
    assert features.from_addresses == ("zoe@sender.example",)
    assert codes(verdict)[0] == "TLS13"
