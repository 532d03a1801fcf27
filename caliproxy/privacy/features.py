"""Message features: everything the privacy engine reads from one message, extracted once from its
header bytes (and optionally the first bytes of its body) into a typed, versioned record.

Features are *claims*, not judgements: every ``Received`` hop, every ``Authentication-Results``
field and every spam header is kept with its position, and ``evidence.py`` later decides which
of them to believe under a given policy. That is what lets a cache keep features and re-level
messages after a policy change without fetching them again.

Pure module: standard library only plus ``caliproxy.privacy.*``; no IO, no clock, no logging.
``extract_features`` never raises on any input and is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from caliproxy.privacy.addresses import domain_of, parse_address_list
from caliproxy.privacy.authres import AuthResultsField, MethodResult, parse_authentication_results
from caliproxy.privacy.header_fields import decode_words, header_bounds, iter_fields, unfold
from caliproxy.privacy.received import ReceivedHop, TlsVersion, parse_received

#: Bumped whenever extraction changes what it records, so a cache can tell stale features.
FEATURES_VERSION = 1

#: The most body bytes looked at for inline PGP; callers need not pass more.
BODY_SNIFF_LIMIT = 64 * 1024

#: Our own header's default name, lower-cased. Kept here (not imported from header.py) so that
#: features stay independent of the rendering module; header.py asserts the two agree.
PRIVACY_HEADER_NAME = "x-caliproxy-privacy"

SENSITIVITY_VALUES = frozenset({"personal", "private", "company-confidential"})


class Protection(StrEnum):
    """End-to-end protection of the message content, as its structure declares it."""

    NONE = "none"
    PGP_ENCRYPTED = "pgp-encrypted"
    SMIME_ENCRYPTED = "smime-encrypted"
    INLINE_PGP_ENCRYPTED = "inline-pgp-encrypted"
    PGP_SIGNED = "pgp-signed"
    SMIME_SIGNED = "smime-signed"
    INLINE_PGP_SIGNED = "inline-pgp-signed"

    @property
    def encrypted(self) -> bool:
        return self in _ENCRYPTED

    @property
    def signed(self) -> bool:
        return self in _SIGNED


_ENCRYPTED = frozenset(
    {Protection.PGP_ENCRYPTED, Protection.SMIME_ENCRYPTED, Protection.INLINE_PGP_ENCRYPTED}
)
_SIGNED = frozenset({Protection.PGP_SIGNED, Protection.SMIME_SIGNED, Protection.INLINE_PGP_SIGNED})


@dataclass(frozen=True)
class SpamField:
    """One spam-filter header: whether it calls the message spam and the score it gives.

    ``flag`` is None when the header gives only a score; ``score`` is None when it gives none.
    """

    position: int
    name: str
    flag: bool | None
    score: float | None


@dataclass(frozen=True)
class MessageContext:
    """What the caller knows about a message besides its bytes.

    ``keep_headers`` names (lower-case) the fields whose decoded values the policy's header rules
    need; only those values are kept in the features. ``privacy_header`` is our header's
    configured name, lower-cased: fields of that name are counted, never believed.
    """

    account: str = ""
    mailbox: str = "INBOX"
    size: int | None = None
    keep_headers: frozenset[str] = frozenset()
    privacy_header: str = PRIVACY_HEADER_NAME


@dataclass(frozen=True)
class MessageFeatures:
    """The facts and claims read from one message. Addresses are normalised (see addresses.py)."""

    version: int
    account: str
    mailbox: str
    size: int | None
    received: tuple[ReceivedHop, ...]
    auth_results: tuple[AuthResultsField, ...]
    spam: tuple[SpamField, ...]
    content_type: str
    protection: Protection
    sensitivity: str | None
    from_addresses: tuple[str, ...]
    sender_addresses: tuple[str, ...]
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    list_id: str
    #: How many fields already carried our header's name: a spoofing attempt, never read.
    privacy_headers_seen: int
    kept_headers: tuple[tuple[str, str], ...] = ()
    kept_header_names: frozenset[str] = field(default_factory=frozenset)

    @property
    def encrypted(self) -> bool:
        return self.protection.encrypted

    @property
    def signed(self) -> bool:
        return self.protection.signed

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + self.cc + self.bcc

    @property
    def from_domains(self) -> frozenset[str]:
        return frozenset(domain_of(a) for a in self.from_addresses)

    def header_values(self, name: str) -> tuple[str, ...]:
        """Decoded values of a kept header (see ``MessageContext.keep_headers``)."""
        lowered = name.lower()
        return tuple(value for key, value in self.kept_headers if key == lowered)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; ``from_dict`` reverses it exactly."""
        return {
            "version": self.version,
            "account": self.account,
            "mailbox": self.mailbox,
            "size": self.size,
            "received": [
                {
                    "position": h.position,
                    "from_host": h.from_host,
                    "from_rdns": h.from_rdns,
                    "from_ip": h.from_ip,
                    "by_host": h.by_host,
                    "protocol": h.protocol,
                    "tls": h.tls.value,
                    "authenticated": h.authenticated,
                }
                for h in self.received
            ],
            "auth_results": [
                {
                    "position": a.position,
                    "authserv_id": a.authserv_id,
                    "results": [[r.method, r.result, r.domain] for r in a.results],
                }
                for a in self.auth_results
            ],
            "spam": [
                {"position": s.position, "name": s.name, "flag": s.flag, "score": s.score}
                for s in self.spam
            ],
            "content_type": self.content_type,
            "protection": self.protection.value,
            "sensitivity": self.sensitivity,
            "from": list(self.from_addresses),
            "sender": list(self.sender_addresses),
            "reply_to": list(self.reply_to),
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc),
            "list_id": self.list_id,
            "privacy_headers_seen": self.privacy_headers_seen,
            "kept_headers": [[k, v] for k, v in self.kept_headers],
            "kept_header_names": sorted(self.kept_header_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageFeatures:
        """Rebuild features from ``to_dict`` output (KeyError/ValueError on anything else)."""
        return cls(
            version=int(data["version"]),
            account=str(data["account"]),
            mailbox=str(data["mailbox"]),
            size=None if data["size"] is None else int(data["size"]),
            received=tuple(
                ReceivedHop(
                    position=int(h["position"]),
                    from_host=str(h["from_host"]),
                    from_rdns=str(h["from_rdns"]),
                    from_ip=str(h["from_ip"]),
                    by_host=str(h["by_host"]),
                    protocol=str(h["protocol"]),
                    tls=TlsVersion(h["tls"]),
                    authenticated=bool(h["authenticated"]),
                )
                for h in data["received"]
            ),
            auth_results=tuple(
                AuthResultsField(
                    int(a["position"]),
                    str(a["authserv_id"]),
                    tuple(MethodResult(str(m), str(r), str(d)) for m, r, d in a["results"]),
                )
                for a in data["auth_results"]
            ),
            spam=tuple(
                SpamField(
                    int(s["position"]),
                    str(s["name"]),
                    None if s["flag"] is None else bool(s["flag"]),
                    None if s["score"] is None else float(s["score"]),
                )
                for s in data["spam"]
            ),
            content_type=str(data["content_type"]),
            protection=Protection(data["protection"]),
            sensitivity=None if data["sensitivity"] is None else str(data["sensitivity"]),
            from_addresses=tuple(str(a) for a in data["from"]),
            sender_addresses=tuple(str(a) for a in data["sender"]),
            reply_to=tuple(str(a) for a in data["reply_to"]),
            to=tuple(str(a) for a in data["to"]),
            cc=tuple(str(a) for a in data["cc"]),
            bcc=tuple(str(a) for a in data["bcc"]),
            list_id=str(data["list_id"]),
            privacy_headers_seen=int(data["privacy_headers_seen"]),
            kept_headers=tuple((str(k), str(v)) for k, v in data["kept_headers"]),
            kept_header_names=frozenset(str(n) for n in data["kept_header_names"]),
        )


# --- spam headers -------------------------------------------------------------------------------
# Scores are bounded in digits so that no input turns into an infinite float.
_SCORE = r"([+-]?\d{1,6}(?:[.,]\d{1,6})?)"
_SPAM_STATUS = re.compile(
    r"^\s*(yes|no)\b(?:.*?\b(?:score|hits)\s*=\s*" + _SCORE + ")?", re.IGNORECASE
)
_SPAM_FLAG = re.compile(r"^\s*(yes|no|true|false)\b", re.IGNORECASE)
_BARE_SCORE = re.compile(r"^\s*" + _SCORE)
# rspamd: "default: True [12.34 / 15.00]; ..."
_SPAMD_RESULT = re.compile(r"^\s*[\w-]+\s*:\s*(true|false)\s*\[\s*" + _SCORE, re.IGNORECASE)


def _score(text: str) -> float:
    return float(text.replace(",", "."))


def _parse_spam(name: str, value: str, position: int) -> SpamField | None:
    if name == "x-spam-status":
        # SpamAssassin: "Yes, score=7.3 required=5.0 tests=..." (older versions: "hits=").
        m = _SPAM_STATUS.match(value)
        if m is None:
            return None
        score = _score(m.group(2)) if m.group(2) else None
        return SpamField(position, name, m.group(1).lower() == "yes", score)
    if name in ("x-spam-flag", "x-spam"):
        m = _SPAM_FLAG.match(value)
        if m is None:
            return None
        return SpamField(position, name, m.group(1).lower() in ("yes", "true"), None)
    if name in ("x-spam-score", "x-rspamd-score"):
        m = _BARE_SCORE.match(value)
        return SpamField(position, name, None, _score(m.group(1))) if m else None
    if name == "x-spamd-result":
        m = _SPAMD_RESULT.match(value)
        if m is None:
            return None
        return SpamField(position, name, m.group(1).lower() == "true", _score(m.group(2)))
    if name == "x-spam-level":
        # SpamAssassin/amavis "*****": one star per whole point of score.
        stars = value.strip()
        if stars and set(stars) <= {"*"}:
            return SpamField(position, name, None, float(len(stars)))
        return None
    return None


_SPAM_HEADERS = frozenset(
    {
        b"x-spam-status",
        b"x-spam-flag",
        b"x-spam",
        b"x-spam-score",
        b"x-rspamd-score",
        b"x-spamd-result",
        b"x-spam-level",
    }
)

# --- MIME structure -----------------------------------------------------------------------------
# RFC 2045 §5.1: content := "Content-Type" ":" type "/" subtype *(";" parameter)
#                parameter := attribute "=" value ; value := token / quoted-string
_MEDIA_TYPE = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)")
_PARAMETER = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s"]*)')
_PARENTHESISED = re.compile(r"\((?:[^()\\]|\\.)*\)")
_INLINE_PGP = re.compile(rb"^-----BEGIN PGP (MESSAGE|SIGNED MESSAGE)-----\r?$", re.MULTILINE)


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    value = _PARENTHESISED.sub(" ", value)
    m = _MEDIA_TYPE.match(value)
    if m is None:
        return "", {}
    params = {
        p.group(1).lower(): p.group(2).strip('"').lower()
        for p in _PARAMETER.finditer(value, m.end())
    }
    return f"{m.group(1)}/{m.group(2)}".lower(), params


def _protection(content_type: str, params: Mapping[str, str], body: bytes) -> Protection:
    if (
        content_type == "multipart/encrypted"
        and params.get("protocol") == "application/pgp-encrypted"
    ):
        return Protection.PGP_ENCRYPTED  # RFC 3156 §4
    if content_type in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        # RFC 8551 §3.2.2: smime-type names the CMS content; certs-only carries no message.
        smime_type = params.get("smime-type", "")
        if smime_type in ("signed-data", "certs-only"):
            return Protection.SMIME_SIGNED if smime_type == "signed-data" else Protection.NONE
        # Absent smime-type: older agents send enveloped data as "smime.p7m".
        return Protection.SMIME_ENCRYPTED
    if content_type == "multipart/signed":
        protocol = params.get("protocol", "")
        if protocol == "application/pgp-signature":
            return Protection.PGP_SIGNED  # RFC 3156 §5
        if protocol in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
            return Protection.SMIME_SIGNED  # RFC 8551 §3.5.3
    if body and (content_type == "" or content_type.startswith("text/")):
        # Inline PGP (RFC 4880 §6.2 armour) only counts in a text body: a MIME structure states
        # its protection in its Content-Type, and a key block attachment is not protection.
        m = _INLINE_PGP.search(body[:BODY_SNIFF_LIMIT])
        if m is not None:
            if m.group(1) == b"MESSAGE":
                return Protection.INLINE_PGP_ENCRYPTED
            return Protection.INLINE_PGP_SIGNED
    return Protection.NONE


_ARC_INSTANCE = re.compile(r"^\s*i\s*=\s*\d+\s*;")

# --- participants -------------------------------------------------------------------------------
_ADDRESS_FIELDS = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")
_LIST_ID = re.compile(r"<([^<>\s]+)>")


def _list_id(value: str) -> str:
    # RFC 2919 §3: list-id-header = "List-ID:" [phrase] "<" list-id ">" CRLF
    m = _LIST_ID.search(value)
    return (m.group(1) if m else value.strip()).lower()


def _sensitivity(value: str) -> str | None:
    # RFC 4021 §2.1.55: "Personal" / "Private" / "Company-Confidential" (case-insensitive).
    words = _PARENTHESISED.sub(" ", value).split()
    if not words:
        return None
    token = words[0].lower()
    return token if token in SENSITIVITY_VALUES else None


def extract_features(
    raw: bytes, context: MessageContext = MessageContext(), *, body: bytes | None = None
) -> MessageFeatures:
    """Extract features from a message's header bytes (a whole message also works).

    ``body`` is the first bytes of the body, used to detect inline PGP; when None, whatever
    follows the header block in ``raw`` is used (nothing, for header-only bytes).
    """
    if body is None:
        _, body_start = header_bounds(raw)
        body = raw[body_start : body_start + BODY_SNIFF_LIMIT]
    keep = {name.encode("ascii", "replace") for name in context.keep_headers}
    ours = context.privacy_header.lower().encode("ascii", "replace")

    received: list[ReceivedHop] = []
    auth_results: list[AuthResultsField] = []
    spam: list[SpamField] = []
    addresses: dict[bytes, list[str]] = {name: [] for name in _ADDRESS_FIELDS}
    content_type_value: str | None = None
    sensitivity: str | None = None
    list_id = ""
    privacy_headers_seen = 0
    kept: list[tuple[str, str]] = []

    # Only fields we read are decoded; the rest (DKIM-Signature, Subject…) cost one regex match.
    for position, name, raw_value in iter_fields(raw):
        if name == b"received":
            received.append(parse_received(unfold(raw_value), position))
        elif name == b"authentication-results":
            auth_results.append(parse_authentication_results(unfold(raw_value), position))
        elif name == b"arc-authentication-results":
            # RFC 8617 §4.1.1: "i=" instance ";" then an Authentication-Results payload. Gmail and
            # Microsoft put these (not their plain A-R) above their own Received line.
            payload = _ARC_INSTANCE.sub("", unfold(raw_value), count=1)
            auth_results.append(parse_authentication_results(payload, position))
        elif name in addresses:
            addresses[name].extend(parse_address_list(unfold(raw_value)))
        elif name in _SPAM_HEADERS:
            parsed = _parse_spam(name.decode("ascii"), unfold(raw_value), position)
            if parsed is not None:
                spam.append(parsed)
        elif name == b"content-type":
            # RFC 2045 allows one; with duplicates the first wins, as in common MIME parsers.
            if content_type_value is None:
                content_type_value = unfold(raw_value)
        elif name == b"sensitivity":
            sensitivity = sensitivity or _sensitivity(unfold(raw_value))
        elif name == b"list-id":
            list_id = list_id or _list_id(unfold(raw_value))
        elif name == ours:
            privacy_headers_seen += 1
        if name in keep:
            kept.append((name.decode("ascii"), decode_words(unfold(raw_value))))

    content_type, params = _content_type(content_type_value) if content_type_value else ("", {})
    return MessageFeatures(
        version=FEATURES_VERSION,
        account=context.account,
        mailbox=context.mailbox,
        size=context.size,
        received=tuple(received),
        auth_results=tuple(auth_results),
        spam=tuple(spam),
        content_type=content_type,
        protection=_protection(content_type, params, body),
        sensitivity=sensitivity,
        from_addresses=tuple(addresses[b"from"]),
        sender_addresses=tuple(addresses[b"sender"]),
        reply_to=tuple(addresses[b"reply-to"]),
        to=tuple(addresses[b"to"]),
        cc=tuple(addresses[b"cc"]),
        bcc=tuple(addresses[b"bcc"]),
        list_id=list_id,
        privacy_headers_seen=privacy_headers_seen,
        kept_headers=tuple(kept),
        kept_header_names=context.keep_headers,
    )
