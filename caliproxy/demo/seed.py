"""Sample mail for the demo and the tests: realistic RFC 5322 messages across every level.

Owns: building the messages, nothing else (no IO). :func:`sample_messages` returns a fixed set of
hand-written messages that together exercise every feature the classifier reads (list and bulk
headers, spam verdicts, Postfix ``Received`` lines with TLS facts, ``Authentication-Results``,
``Sensitivity``, PGP/MIME and S/MIME encryption, a spoofed privacy header, 8-bit UTF-8, a large
attachment). :func:`bulk_messages` makes any number of distinct messages for benchmarks.

Every sample is built by a function whose docstring starts with the confidentiality level it is
meant to get (public < internal < confidential < secret) and says why. Those are the *intended*
verdicts of the default policy, written down before the policy exists, so tests can hold it to them.

Conventions: our own domain is ``example.test`` (users alice and bob), our MX and authserv-id is
``mx.example.test``; outsiders live in ``example.org``/``example.net``/``example.com``; addresses
come from the documentation ranges (RFC 5737, RFC 3849). Output is deterministic: the same bytes on
every call, every line ending in CRLF.

Pure module: imports only the standard library.
"""

from __future__ import annotations

import base64
import datetime
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

OUR_DOMAIN = "example.test"
OUR_MX = "mx.example.test"

# Postfix's TLS clause for an inbound TLS 1.3 connection, as its smtpd writes it into Received:
_TLS13 = (
    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
    "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
    "\t(No client certificate requested)\r\n"
)


@dataclass(frozen=True)
class Sample:
    """One sample message and the verdict it is meant to get."""

    name: str
    level: str
    why: str
    raw: bytes


def _crlf(text: str) -> bytes:
    """Normalise a message written with LF in Python source to CRLF bytes (UTF-8)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _received_mx(
    helo: str, rdns: str, ip: str, queue_id: str, rcpt: str, date: str, *,
    tls: bool = True, authenticated: str | None = None,
) -> str:
    """A Received: line as Postfix smtpd on our MX writes it (RFC 3848 protocol names)."""
    with_ = "ESMTP"
    if tls:
        with_ += "S"
    if authenticated:
        with_ += "A"
    text = f"Received: from {helo} ({rdns} [{ip}])\r\n"
    if tls:
        text += _TLS13
    if authenticated:
        text += f"\t(Authenticated sender: {authenticated})\r\n"
    text += f"\tby {OUR_MX} (Postfix) with {with_} id {queue_id}\r\n\tfor <{rcpt}>; {date}\r\n"
    return text


def _auth_results(domain: str, selector: str, *, spf: str = "pass", dkim: str = "pass",
                  dmarc: str = "pass", policy: str = "reject") -> str:
    """Authentication-Results as OpenDKIM/OpenDMARC/policyd-spf on our MX write them (RFC 8601)."""
    return (
        f"Authentication-Results: {OUR_MX};\r\n"
        f"\tspf={spf} smtp.mailfrom={domain};\r\n"
        f"\tdkim={dkim} (2048-bit key; unprotected) header.d={domain} header.i=@{domain}"
        f" header.s={selector} header.b=\"Qm9ndXNT\";\r\n"
        f"\tdmarc={dmarc} (p={policy} dis=none) header.from={domain}\r\n"
    )


def _dkim_signature(domain: str, selector: str, seed: int) -> str:
    """A DKIM-Signature header of the right shape (the signature itself is filler)."""
    rng = random.Random(seed)
    bh = base64.b64encode(rng.randbytes(32)).decode()
    b = base64.b64encode(rng.randbytes(256)).decode()
    folded = "\r\n\t ".join(textwrap.wrap(b, 70))
    return (
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\r\n"
        f"\ts={selector}; t=1710230040;\r\n"
        f"\th=from:to:subject:date:message-id:mime-version:content-type;\r\n"
        f"\tbh={bh};\r\n"
        f"\tb={folded}\r\n"
    )


def _b64_lines(data: bytes, width: int = 76) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return "\r\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))


def _crc24(data: bytes) -> int:
    """OpenPGP ASCII-armor checksum (RFC 4880 section 6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


# -- the samples --------------------------------------------------------------------------------


def newsletter() -> bytes:
    """public: bulk marketing mail (List-Unsubscribe, Precedence: bulk) from an outside sender.

    It reached many people before us, so nothing in it can be confidential; it arrived over TLS
    with passing SPF/DKIM/DMARC, which raises its privacy index but not its confidentiality.
    """
    date = "Tue, 12 Mar 2024 07:02:11 +0000"
    return _crlf(
        _received_mx("mta-17.news.example.com", "mta-17.news.example.com", "198.51.100.17",
                     "4TvFqL1hG9z9sWd", "alice@example.test",
                     "Tue, 12 Mar 2024 08:02:13 +0100 (CET)")
        + _auth_results("news.example.com", "nl2024")
        + _dkim_signature("news.example.com", "nl2024", 1)
        + "X-Spam-Status: No, score=-0.8 required=5.0 tests=DKIM_SIGNED,DKIM_VALID,\r\n"
        "\tHTML_MESSAGE,SPF_PASS autolearn=ham autolearn_force=no version=3.4.6\r\n"
        "X-Spam-Score: -0.8\r\n"
        f"""\
From: "Example Outdoor Store" <news@news.example.com>
To: alice@example.test
Subject: Spring sale: 20% off tents and sleeping bags
Date: {date}
Message-ID: <20240312070211.1f3c9@news.example.com>
List-Unsubscribe: <https://news.example.com/u/8d1f0c2e>,
 <mailto:unsubscribe-8d1f0c2e@news.example.com>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
Precedence: bulk
Feedback-ID: spring24:newsletter:example-outdoor
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_nl_7b2e"

--=_nl_7b2e
Content-Type: text/plain; charset=us-ascii

Spring is here! Take 20% off every tent and sleeping bag until Sunday.

Shop now: https://shop.example.com/spring
Unsubscribe: https://news.example.com/u/8d1f0c2e

--=_nl_7b2e
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

<html><body><h1>Spring is here!</h1><p>Take <b>20% off</b> every tent and
sleeping bag until Sunday.</p><p><a href=3D"https://shop.example.com/spring">Shop now</a></p>
</body></html>

--=_nl_7b2e--
""")


def mailing_list() -> bytes:
    """public: a post to a public mailing list (List-Id, Mailman headers), archived on the web.

    List traffic is published by definition; the list server re-signed it (DKIM of the list
    domain) and the author's own domain fails DMARC alignment, as usual for lists.
    """
    date = "Wed, 13 Mar 2024 14:31:07 +0100"
    return _crlf(
        _received_mx("lists.example.org", "lists.example.org", "203.0.113.40",
                     "4TwBz52Xqkz9sXY", "alice@example.test",
                     "Wed, 13 Mar 2024 14:31:09 +0100 (CET)")
        + _auth_results("lists.example.org", "lists", dmarc="none", policy="none")
        + "X-Spam-Status: No, score=-2.1 required=5.0 tests=MAILING_LIST_MULTI,SPF_PASS\r\n"
        f"""\
From: Dana Developer via dev <dev@lists.example.org>
Reply-To: dev@lists.example.org
To: dev@lists.example.org
Subject: [dev] Re: Proposal: drop Python 3.9 support in the next release
Date: {date}
Message-ID: <CAF7x+rq0example@mail.example.net>
In-Reply-To: <87h6hd1kvk.fsf@example.org>
References: <87h6hd1kvk.fsf@example.org>
List-Id: Developers of the example project <dev.lists.example.org>
List-Archive: <https://lists.example.org/archives/list/dev@lists.example.org/>
List-Post: <mailto:dev@lists.example.org>
List-Help: <mailto:dev-request@lists.example.org?subject=help>
List-Subscribe: <mailto:dev-join@lists.example.org>
List-Unsubscribe: <mailto:dev-leave@lists.example.org>
Precedence: list
X-Mailman-Version: 3.3.8
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

> Should we drop 3.9 now that it is end-of-life in October?

+1 from me. The typing cleanups alone are worth it.

Dana
_______________________________________________
dev mailing list -- dev@lists.example.org
To unsubscribe send an email to dev-leave@lists.example.org
""")


def spam() -> bytes:
    """public: spam flagged by SpamAssassin (X-Spam-Flag: YES), SPF fail, no DKIM, no TLS.

    Unsolicited and untrustworthy: the lowest privacy index and nothing worth hiding.
    """
    date = "Thu, 14 Mar 2024 03:12:55 +0300"
    return _crlf(
        _received_mx("user-pc", "unknown", "192.0.2.201", "4TwXc03Rz1z9sZ2", "alice@example.test",
                     "Thu, 14 Mar 2024 01:13:01 +0100 (CET)", tls=False)
        + _auth_results("prize.example.net", "default", spf="fail", dkim="none", dmarc="fail")
        + "X-Spam-Flag: YES\r\n"
        "X-Spam-Level: ********\r\n"
        "X-Spam-Status: Yes, score=8.4 required=5.0 tests=FREEMAIL_FORGED_REPLYTO,\r\n"
        "\tHK_RANDOM_FROM,LOTS_OF_MONEY,RDNS_NONE,SPF_FAIL,URIBL_BLACK autolearn=spam\r\n"
        f"""\
From: "Prize Department" <winner@prize.example.net>
Reply-To: claims.office@example.com
To: alice@example.test
Subject: =?UTF-8?B?Q29uZ3JhdHVsYXRpb25zISBZb3UgaGF2ZSB3b24g4oKsMSwwMDAsMDAw?=
Date: {date}
Message-ID: <000d01da75b2$1a2b3c4d$0100007f@user-pc>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Dear winner, send your bank details to claims.office@example.com to receive =
your =E2=82=AC1,000,000 prize today.
""")


def spoofed_privacy_header() -> bytes:
    """public: an outsider's phishing mail that forges our own X-Caliproxy-Privacy header.

    The forged header claims a perfect privacy index and level "internal" to look trustworthy.
    The proxy must strip it and judge the real features: no TLS, SPF fail, unknown sender.
    """
    date = "Fri, 15 Mar 2024 10:44:20 +0100"
    return _crlf(
        _received_mx("mail.example.net", "mail.example.net", "192.0.2.66", "4TxJ8m1qPLz9sbN",
                     "alice@example.test", "Fri, 15 Mar 2024 10:44:23 +0100 (CET)", tls=False)
        + _auth_results("example.test", "default", spf="fail", dkim="none", dmarc="fail")
        + f"""\
X-Caliproxy-Privacy: v=1; index=100; level=internal; reasons="tls dkim dmarc known-sender"
From: "IT Helpdesk" <helpdesk@example.test>
To: alice@example.test
Subject: Action required: your mailbox password expires today
Date: {date}
Message-ID: <4a1c0f55-7e8b-4c1a-9a2e-phish@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Your password expires today. Confirm it at https://helpdesk.example.net/login
within 24 hours or your mailbox will be closed.

IT Helpdesk
""")


def colleague() -> bytes:
    """internal: Bob, a colleague on our own server, writes to Alice about ordinary work.

    Submitted over TLS 1.3 with SMTP AUTH (ESMTPSA) to our own MX and DKIM-signed by our domain:
    a high privacy index, and company-internal by default because both ends are example.test.
    """
    date = "Mon, 11 Mar 2024 09:14:02 +0100"
    return _crlf(
        "Return-Path: <bob@example.test>\r\n"
        "Delivered-To: alice@example.test\r\n"
        + _received_mx("[192.168.10.23]", "laptop-bob.example.test", "192.168.10.23",
                       "4TtYQ30VCHz9sVb", "alice@example.test",
                       "Mon, 11 Mar 2024 09:14:03 +0100 (CET)", authenticated="bob")
        + _auth_results("example.test", "mail2024")
        + _dkim_signature("example.test", "mail2024", 2)
        + f"""\
From: Bob Builder <bob@example.test>
To: Alice Liddell <alice@example.test>
Subject: Team lunch on Thursday?
Date: {date}
Message-ID: <a3f1c2d4-0b7e-4e57-8f2a-1c9d0e6b7a11@example.test>
User-Agent: Mozilla Thunderbird
Content-Language: en-GB
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Hi Alice,

shall we book the Italian place for the team lunch on Thursday at 12:30?
I can ask the others once you confirm.

Bob
""")


def partner_relayed() -> bytes:
    """internal: a supplier's reply that crossed two hops, the last one without TLS.

    A known business correspondent (In-Reply-To one of ours), but the legacy relay at the
    partner delivered in clear text: internal by content, with a lower privacy index.
    """
    date = "Mon, 11 Mar 2024 16:20:45 +0100"
    return _crlf(
        _received_mx("relay.example.org", "relay.example.org", "203.0.113.9", "4TtkM56wLnz9sVq",
                     "alice@example.test", "Mon, 11 Mar 2024 16:20:51 +0100 (CET)", tls=False)
        + "Received: from exch01.corp.example.org (10.20.0.5) by relay.example.org\r\n"
        "\t(10.20.0.9) with Microsoft SMTP Server (version=TLS1_2,\r\n"
        "\tcipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1258.28; Mon, 11 Mar 2024\r\n"
        "\t16:20:49 +0100\r\n"
        + _auth_results("example.org", "corp", dkim="none", dmarc="pass", policy="quarantine")
        + f"""\
From: Carol Supplier <carol@example.org>
To: Alice Liddell <alice@example.test>
CC: Bob Builder <bob@example.test>
Subject: RE: Delivery dates for order 2024-0117
Date: {date}
Message-ID: <AM0PR07MB6123B1C9E0D2F3A4B5C6D7E8F9AM0PR07MB6123@exch01.corp.example.org>
In-Reply-To: <a3f1c2d4-0b7e-4e57-8f2a-1c9d0e6b7a11@example.test>
Thread-Topic: Delivery dates for order 2024-0117
X-MS-Has-Attach:
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

Hello Alice,

the remaining 40 units ship on 19 March; you should have them by the 21st.

Kind regards,
Carol
""")


def utf8_8bit() -> bytes:
    """internal: a colleague writes in French, 8-bit UTF-8 body (8BITMIME), RFC 2047 subject.

    Exercises non-ASCII bytes in literals and headers; same trust facts as :func:`colleague`.
    """
    date = "Tue, 12 Mar 2024 11:05:37 +0100"
    return _crlf(
        _received_mx("[192.168.10.31]", "pc-chloe.example.test", "192.168.10.31",
                     "4TvLz21dXYz9sWs", "alice@example.test",
                     "Tue, 12 Mar 2024 11:05:38 +0100 (CET)", authenticated="chloe")
        + _auth_results("example.test", "mail2024")
        + f"""\
From: =?UTF-8?Q?Chlo=C3=A9_Lef=C3=A8vre?= <chloe@example.test>
To: Alice Liddell <alice@example.test>
Subject: =?UTF-8?Q?R=C3=A9union_d=C3=A9plac=C3=A9e_=C3=A0_jeudi_?=
 =?UTF-8?Q?=E2=80=94_caf=C3=A9_offert?=
Date: {date}
Message-ID: <e2b9d7c0-3f61-4b0a-b8d4-5a6c7e8f9012@example.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Bonjour Alice,

la réunion de mercredi est déplacée à jeudi, même heure, salle « Océan ».
Le café et les croissants sont offerts — pensez à prévenir l'équipe ✔.

Grüße aus Köln, 東京 et Zürich,
Chloé
""")


def large_attachment() -> bytes:
    """internal: a colleague sends a ~150 KB PDF draft (~200 KB once base64-encoded).

    Ordinary work mail from inside the company; it is here for size: multi-chunk literals,
    partial fetches and RFC822.SIZE arithmetic on a message far larger than a read buffer.
    """
    date = "Wed, 13 Mar 2024 17:48:12 +0100"
    rng = random.Random(2024)
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + rng.randbytes(150 * 1024) + b"\n%%EOF\n"
    return _crlf(
        _received_mx("[192.168.10.23]", "laptop-bob.example.test", "192.168.10.23",
                     "4TwKb70FgRz9sXp", "alice@example.test",
                     "Wed, 13 Mar 2024 17:48:14 +0100 (CET)", authenticated="bob")
        + _auth_results("example.test", "mail2024")
        + f"""\
From: Bob Builder <bob@example.test>
To: Alice Liddell <alice@example.test>
Subject: Draft of the Q1 project report
Date: {date}
Message-ID: <5d0e3b7a-96c4-4f1e-a2d8-7b3c9e0f1a24@example.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="------------mixed9Xq2Lk7"

This is a multi-part message in MIME format.
--------------mixed9Xq2Lk7
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Hi Alice,

attached is the draft; comments welcome before Friday.

Bob

--------------mixed9Xq2Lk7
Content-Type: application/pdf; name="q1-project-report-draft.pdf"
Content-Disposition: attachment; filename="q1-project-report-draft.pdf"
Content-Transfer-Encoding: base64

{_b64_lines(pdf)}

--------------mixed9Xq2Lk7--
""")


def company_confidential() -> bytes:
    """confidential: HR sends salary review figures marked ``Sensitivity: Company-Confidential``.

    The sender labelled it (RFC 2156 Sensitivity); it may be read on the company's trusted
    devices, never on an untrusted phone.
    """
    date = "Thu, 14 Mar 2024 15:02:40 +0100"
    return _crlf(
        _received_mx("[192.168.10.5]", "hr-desk.example.test", "192.168.10.5",
                     "4TxCq41yR8z9sZw", "alice@example.test",
                     "Thu, 14 Mar 2024 15:02:41 +0100 (CET)", authenticated="hr")
        + _auth_results("example.test", "mail2024")
        + _dkim_signature("example.test", "mail2024", 3)
        + f"""\
From: Human Resources <hr@example.test>
To: Alice Liddell <alice@example.test>
Subject: Salary review 2024 - your team
Date: {date}
Message-ID: <0c6e4a9b-2d17-4f3b-9e85-6a1f2b3c4d5e@example.test>
Sensitivity: Company-Confidential
Importance: high
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Alice,

please find below the proposed 2024 salary adjustments for your team.
Do not forward.

  Bob Builder      +3.5 %
  Chloe Lefevre    +4.0 %

Human Resources
""")


def private() -> bytes:
    """secret: a personal message marked ``Sensitivity: Private`` (RFC 2156).

    Private means for the recipient alone: hidden from every connection but her most trusted.
    """
    date = "Fri, 15 Mar 2024 21:17:03 +0100"
    return _crlf(
        _received_mx("mail.example.net", "mail.example.net", "198.51.100.80", "4TxX1f5KmMz9sbz",
                     "alice@example.test", "Fri, 15 Mar 2024 21:17:06 +0100 (CET)")
        + _auth_results("example.net", "s1")
        + _dkim_signature("example.net", "s1", 4)
        + f"""\
From: Dr. Eve Medic <eve.medic@example.net>
To: Alice Liddell <alice@example.test>
Subject: Your test results
Date: {date}
Message-ID: <20240315201703.GA4411@mail.example.net>
Sensitivity: Private
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Dear Alice,

your results came back and everything is fine; no follow-up is needed.

Dr. Medic
""")


def pgp_mime() -> bytes:
    """secret: a PGP/MIME encrypted message (multipart/encrypted, RFC 3156).

    The sender chose end-to-end encryption: the strongest signal that it is secret. The armored
    payload has a valid CRC-24 but is random data; nobody can (or needs to) decrypt it.
    """
    date = "Sat, 16 Mar 2024 08:40:19 +0100"
    rng = random.Random(3156)
    payload = bytes([0x85, 0x01, 0x8C]) + rng.randbytes(1400)
    crc = _crc24(payload).to_bytes(3, "big")
    armor = (
        "-----BEGIN PGP MESSAGE-----\n\n"
        + "\n".join(textwrap.wrap(base64.b64encode(payload).decode(), 64))
        + f"\n={base64.b64encode(crc).decode()}\n-----END PGP MESSAGE-----"
    )
    return _crlf(
        _received_mx("mail.example.net", "mail.example.net", "198.51.100.80", "4TxmN70ccqz9scC",
                     "alice@example.test", "Sat, 16 Mar 2024 08:40:21 +0100 (CET)")
        + _auth_results("example.net", "s1")
        + f"""\
From: Frank Journalist <frank@example.net>
To: Alice Liddell <alice@example.test>
Subject: ...
Date: {date}
Message-ID: <9f8e7d6c-5b4a-4392-8170-pgpmime@example.net>
MIME-Version: 1.0
Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";
 boundary="------------enc0xA1B2C3D4"

This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
--------------enc0xA1B2C3D4
Content-Type: application/pgp-encrypted
Content-Description: PGP/MIME version identification

Version: 1

--------------enc0xA1B2C3D4
Content-Type: application/octet-stream; name="encrypted.asc"
Content-Description: OpenPGP encrypted message
Content-Disposition: inline; filename="encrypted.asc"

{armor}

--------------enc0xA1B2C3D4--
""")


def smime() -> bytes:
    """secret: an S/MIME encrypted message (application/pkcs7-mime; smime-type=enveloped-data).

    End-to-end encrypted by the sender's mail client, as corporate Outlook users do. The body is a
    DER-shaped random blob, never meant to be decrypted.
    """
    date = "Sat, 16 Mar 2024 12:03:44 +0100"
    rng = random.Random(8551)
    # DER: SEQUENCE, OID 1.2.840.113549.1.7.3 (pkcs7-envelopedData), then filler
    header = bytes.fromhex("30820f3a06092a864886f70d010703")
    blob = header + rng.randbytes(3880)
    return _crlf(
        _received_mx("mail.example.org", "mail.example.org", "203.0.113.25", "4TxsT21Z0bz9scM",
                     "alice@example.test", "Sat, 16 Mar 2024 12:03:46 +0100 (CET)")
        + _auth_results("example.org", "corp")
        + f"""\
From: Grace Lawyer <grace@example.org>
To: Alice Liddell <alice@example.test>
Subject: Settlement draft
Date: {date}
Message-ID: <DB9PR02MB7311F0E1D2C3B4A5968778695A4DB9PR02MB7311@example.org>
MIME-Version: 1.0
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7m"
Content-Description: S/MIME Encrypted Message

{_b64_lines(blob)}
""")


# in the order a demo mailbox should show them (oldest first, roughly)
_SAMPLES: tuple[tuple[str, Callable[[], bytes]], ...] = (
    ("public", newsletter),
    ("public", mailing_list),
    ("public", spam),
    ("public", spoofed_privacy_header),
    ("internal", colleague),
    ("internal", partner_relayed),
    ("internal", utf8_8bit),
    ("internal", large_attachment),
    ("confidential", company_confidential),
    ("secret", private),
    ("secret", pgp_mime),
    ("secret", smime),
)


def samples() -> list[Sample]:
    """Every sample with its name, intended level and the reason (its builder's docstring)."""
    result = []
    for level, build in _SAMPLES:
        doc = (build.__doc__ or "").strip()
        assert doc.startswith(level + ":"), f"{build.__name__} docstring must start with its level"
        why = " ".join(doc[len(level) + 1 :].split())
        result.append(Sample(name=build.__name__, level=level, why=why, raw=build()))
    return result


def sample_messages() -> list[bytes]:
    """The raw bytes of every sample (CRLF line endings), in :func:`samples` order."""
    return [sample.raw for sample in samples()]


# -- bulk mail for benchmarks ----------------------------------------------------------------------

_WORDS = (
    "report", "meeting", "budget", "review", "draft", "schedule", "project", "invoice",
    "contract", "design", "release", "customer", "support", "server", "backup", "network",
    "update", "quarter", "planning", "summary", "feedback", "agenda", "proposal", "estimate",
    "delivery", "order", "travel", "training", "security", "policy", "roadmap", "migration",
)

# (share out of 20, level, extra header lines, From: override) for the mix of bulk messages
_BULK_KINDS: tuple[tuple[int, str, str, str | None], ...] = (
    (8, "public", "List-Id: <announce.lists.example.org>\r\nPrecedence: list\r\n",
     "{name} via announce <announce@lists.example.org>"),
    (8, "internal", "", None),
    (3, "confidential", "Sensitivity: Company-Confidential\r\n", None),
    (1, "secret", "Sensitivity: Private\r\n", None),
)
_BULK_CYCLE: tuple[tuple[str, str, str | None], ...] = tuple(
    (level, headers, sender) for share, level, headers, sender in _BULK_KINDS for _ in range(share)
)


def bulk_level(index: int) -> str:
    """The level message ``index`` of :func:`bulk_messages` is meant to get."""
    return _BULK_CYCLE[(index * 7) % len(_BULK_CYCLE)][0]


def bulk_messages(n: int, size: int = 4096) -> list[bytes]:
    """``n`` distinct messages of about ``size`` bytes each (never below the headers' ~450 bytes).

    Levels are mixed like a real mailbox: 40 % list mail (public), 40 % colleague mail
    (internal), 15 % Company-Confidential, 5 % Private (secret), interleaved so any range holds
    some of each; :func:`bulk_level` tells which. Dates advance one minute per message, so
    INTERNALDATE order equals list order. Deterministic.
    """
    messages = []
    base = 1_704_067_200  # 2024-01-01 00:00:00 UTC
    for index in range(n):
        # 7 is coprime with the cycle length (20): every window of 20 messages holds the full mix
        _, extra, list_from = _BULK_CYCLE[(index * 7) % len(_BULK_CYCLE)]
        stamp = base + 60 * index
        date = _rfc5322_date(stamp)
        word = _WORDS[index % len(_WORDS)]
        other = _WORDS[(index // len(_WORDS)) % len(_WORDS)]
        sender = ("bob", "chloe", "dana", "erin")[index % 4]
        from_ = (list_from.format(name=sender.title()) if list_from
                 else f"{sender.title()} <{sender}@example.test>")
        head = (
            f"Received: from [192.168.10.{20 + index % 200}] (pc.example.test"
            f" [192.168.10.{20 + index % 200}])\r\n"
            f"{_TLS13}\t(Authenticated sender: {sender})\r\n"
            f"\tby {OUR_MX} (Postfix) with ESMTPSA id 4B{index:011X}\r\n"
            f"\tfor <alice@example.test>; {date}\r\n"
            f"From: {from_}\r\n"
            "To: Alice Liddell <alice@example.test>\r\n"
            f"Subject: {word.title()} {other} #{index}\r\n"
            f"Date: {date}\r\n"
            f"Message-ID: <bulk-{index}.{stamp}@example.test>\r\n"
            f"{extra}"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
        ).encode("ascii")
        sentence = f"Message {index}: the {word} {other} is ready for review. "
        line = (sentence * 2)[:72].rstrip() + "\r\n"
        body_line = line.encode("ascii")
        missing = max(size - len(head), len(body_line))
        repeats, rest = divmod(missing, len(body_line))
        body = body_line * repeats + (body_line[: max(rest - 2, 0)] + b"\r\n" if rest > 2 else b"")
        messages.append(head + body)
    return messages


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _rfc5322_date(stamp: int) -> str:
    """RFC 5322 date-time in UTC; locale-independent, unlike strftime's %a and %b."""
    when = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    return (f"{_WEEKDAYS[when.weekday()]}, {when.day} {_MONTHS[when.month - 1]} {when.year} "
            f"{when:%H:%M:%S} +0000")
