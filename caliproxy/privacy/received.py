"""Reading one ``Received`` trace field into a typed hop: who handed the message to whom, over
which protocol, with which TLS version, authenticated or not.

Owns the knowledge of how real MTAs write their TLS facts. It only *reads*: whether a hop is
believed is decided by ``evidence.py`` against the configured trusted relays.

Pure module: standard library only; no IO, no logging. Never raises on any input.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from caliproxy.privacy.addresses import normalise_domain


class TlsVersion(StrEnum):
    """Transport protection of one hop, normalised across MTA formats."""

    NONE = "none"
    SSL3 = "ssl3"
    TLS1_0 = "tls1.0"
    TLS1_1 = "tls1.1"
    TLS1_2 = "tls1.2"
    TLS1_3 = "tls1.3"
    #: TLS was used but the writer did not say which version (RFC 3848 "ESMTPS" alone).
    TLS_UNKNOWN_VERSION = "tls"


# RFC 5321 §4.4:
#   Time-stamp-line = "Received:" FWS Stamp <CRLF>
#   Stamp = From-domain By-domain Opt-info [CFWS] ";" FWS date-time
#   From-domain = "FROM" FWS Extended-Domain ; By-domain = CFWS "BY" FWS Extended-Domain
#   Opt-info = [Via] [With] [ID] [For] [Additional-Registered-Clauses]
#   With = CFWS "WITH" FWS Protocol
# Comments (RFC 5322 CFWS) nest: Postfix writes "(using TLSv1.3 with cipher X (256/256 bits) ...)".
# A comment is matched balanced up to three levels deep, with quoted-strings inside it kept whole:
# Exim and Dovecot copy the sender-chosen envelope address into "(envelope-from <...>)", and a
# quoted local part must not close that comment and open one of its own. Possessive quantifiers
# keep the match linear on unbalanced input.
_QUOTED = r'"(?:[^"\\]++|\\.)*+"?'
_C0 = r"\((?:[^()\\\"]++|\\.|" + _QUOTED + r")*+\)"
_C1 = r"\((?:[^()\\\"]++|\\.|" + _QUOTED + "|" + _C0 + r")*+\)"
_C2 = r"\((?:[^()\\\"]++|\\.|" + _QUOTED + "|" + _C1 + r")*+\)"
# Outside comments: skip plain text, then a quoted-string (skipped whole), a comment, the ";"
# that ends the stamp, a stray "(", or the end. Every position is consumed once.
_SCAN = re.compile(r'[^"(;]*+(?:(' + _QUOTED + ")|(" + _C2 + r")|(;)|\(|$)")
_FROM = re.compile(r"\s*from\s+(\S+)", re.IGNORECASE)
# Searched in " " + the text outside comments, so a leading space always precedes the keyword.
_BY = re.compile(r"\sby\s+(\S+)", re.IGNORECASE)
_WITH = re.compile(r"\swith\s+(\S+)", re.IGNORECASE)
#: Longer Received values are cut: real ones are a few hundred bytes, and the cut keeps the work
#: per field bounded whatever a hostile sender writes.
MAX_RECEIVED_LENGTH = 2048

# Where MTAs state the negotiated version: at the start of a comment they write themselves.
#   Postfix   (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) ...)
#   Exim      with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384     older: (TLS1.2:ECDHE-...:256)
#   Sendmail  (version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)
#   Exchange  with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_...)
#   Gmail     (version=TLS1_3 cipher=TLS_AES_128_GCM_SHA256 bits=128/128)
# Exim's "X=TLS1.3:..." is its log line, never a header. Matching is case-sensitive (MTAs write
# upper case) and the version must end at a delimiter.
_TLS_VERSION = re.compile(r"\(\s*(?:using\s+|version=)?(TLS|SSL)v?\s?(\d)(?:[._](\d))?(?=[\s:,;)])")

# RFC 3848 and RFC 6531 protocol types: a trailing "S" means TLS, "A" means SMTP AUTH.
_PROTOCOL = re.compile(r"(?:UTF8)?(?:E?SMTP|LMTP)(S?)(A?)")
_TLS_PROTOCOLS_WITHOUT_TYPE = frozenset({"SMTPS", "HTTPS"})  # Gmail and Exchange internal hops
# Comments that say "TLS" without a version: Gmail's internal hops, Exchange 2010, qmail patches.
_TLS_WITHOUT_VERSION = re.compile(
    r"\((?:Google Transport Security|TLS|[^()]*\bencrypted)\)", re.IGNORECASE
)
_AUTHENTICATED_COMMENT = re.compile(r"\(Authenticated sender:", re.IGNORECASE)
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\](?::\d+)?")
_PAREN_BARE_IP = re.compile(r"\(\s*([0-9A-Fa-f:.]+)\s*\)")
# TCP-info: "(rdns [ip] ...)" (Postfix, Sendmail) or "([ip] helo=...)" (Exim, Dovecot).
_TCP_INFO = re.compile(r"\(\s*(?:([^\s()\[\]]+)\s+)?\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")


@dataclass(frozen=True)
class ReceivedHop:
    """What one ``Received`` field claims. Nothing here is believed yet.

    ``from_rdns`` is the reverse-DNS name the *receiving* MTA recorded for its peer (as opposed to
    the HELO the peer chose), empty when the format does not record one. ``position`` is the
    field's index in the header block, 0 = top.
    """

    position: int
    from_host: str
    from_rdns: str
    from_ip: str
    by_host: str
    protocol: str
    tls: TlsVersion
    authenticated: bool


@functools.lru_cache(maxsize=4096)
def _normalise_ip(text: str) -> str:
    # Cached: the same few relay and sender addresses recur across a whole mailbox.
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _tls_version(comment: str) -> TlsVersion | None:
    match = _TLS_VERSION.match(comment)
    if match is None:
        return None
    family, major, minor = match.group(1), match.group(2), match.group(3) or "0"
    if family == "SSL":
        # SSLv2 is no better than SSLv3; both are broken.
        return TlsVersion.SSL3
    return {
        ("1", "0"): TlsVersion.TLS1_0,
        ("1", "1"): TlsVersion.TLS1_1,
        ("1", "2"): TlsVersion.TLS1_2,
        ("1", "3"): TlsVersion.TLS1_3,
    }.get((major, minor), TlsVersion.TLS_UNKNOWN_VERSION)


def _from_details(host_token: str, tcp_info: str) -> tuple[str, str, str]:
    """(from_host, from_rdns, from_ip) from the From-domain and the TCP-info comment after it.

    The address is read where the receiving MTA writes it, never from the peer's HELO: a client
    saying "EHLO [127.0.0.1]" gets "from [127.0.0.1] (unknown [198.51.100.7])" from Postfix.
    """
    host = host_token.lower().rstrip(".")
    rdns = ""
    ip = ""
    tcp = _TCP_INFO.match(tcp_info)
    if tcp is not None:
        ip = _normalise_ip(tcp.group(2))
        if tcp.group(1):
            # Postfix/Sendmail "helo (rdns [ip])": the name in the comment is the looked-up one.
            rdns = normalise_domain(tcp.group(1))
        elif "helo=" in tcp_info.lower() and host and not host.startswith("["):
            # Exim "rdns ([ip] helo=name)": the leading name is the looked-up one.
            rdns = normalise_domain(host)
    elif host.startswith("["):
        # Exim "from [192.0.2.1] (helo=name)" when the peer has no reverse name.
        bracket = _BRACKETED_IP.match(host)
        ip = _normalise_ip(bracket.group(1)) if bracket else ""
    else:
        # Exchange writes "from HOST (10.1.2.3)" without brackets.
        bare = _PAREN_BARE_IP.fullmatch(tcp_info)
        if bare is not None:
            ip = _normalise_ip(bare.group(1))
    if host.startswith("["):
        host = ""
    return (normalise_domain(host) if host else ""), rdns, ip


def parse_received(value: str, position: int) -> ReceivedHop:
    """Read one unfolded ``Received`` value. Unknown formats give a hop with empty fields.

    The peer chooses its HELO name, its reverse DNS and its envelope addresses, so the token after
    ``from``, the TCP-info comment after it and quoted-strings are never searched for TLS or
    authentication facts: only comments the receiving MTA writes, matched at their start.
    """
    value = value[:MAX_RECEIVED_LENGTH]
    from_match = _FROM.match(value)
    host_token, start = (from_match.group(1), from_match.end()) if from_match else ("", 0)
    words = [" "]
    comments: list[str] = []
    tcp_info = ""
    cursor = start
    for scanned in _SCAN.finditer(value, start):
        kind = scanned.lastindex
        if kind is None:
            continue  # plain text up to a stray "(" or the end; collected below
        words.append(value[cursor : scanned.start(kind)])
        cursor = scanned.end()
        if kind == 3:
            break  # the stamp ends at ";" (RFC 5321 §4.4); the date-time carries nothing we use
        if kind == 1:
            words.append(' "" ')
            continue
        comment = scanned.group(2)
        if (
            host_token
            and not tcp_info
            and not comments
            and not value[start : scanned.start(2)].strip()
        ):
            tcp_info = comment
        else:
            comments.append(comment)
    else:
        words.append(value[cursor:])
    text = " ".join(words)

    host, from_rdns, from_ip = _from_details(host_token, tcp_info)
    by_match = _BY.search(text)
    by_host = normalise_domain(by_match.group(1)) if by_match else ""
    with_match = _WITH.search(text)
    protocol = with_match.group(1).upper() if with_match else ""
    protocol_match = _PROTOCOL.fullmatch(protocol)

    tls: TlsVersion | None = None
    for comment in comments:
        tls = _tls_version(comment)
        if tls is not None:
            break
    if tls is None:
        claims_tls = (
            protocol_match is not None and protocol_match.group(1) == "S"
        ) or protocol in _TLS_PROTOCOLS_WITHOUT_TYPE
        if claims_tls or any(_TLS_WITHOUT_VERSION.fullmatch(c) for c in comments):
            tls = TlsVersion.TLS_UNKNOWN_VERSION
        else:
            tls = TlsVersion.NONE
    authenticated = (protocol_match is not None and protocol_match.group(2) == "A") or any(
        _AUTHENTICATED_COMMENT.match(c) for c in comments
    )
    return ReceivedHop(
        position=position,
        from_host=host,
        from_rdns=from_rdns,
        from_ip=from_ip,
        by_host=by_host,
        protocol=protocol,
        tls=tls,
        authenticated=authenticated,
    )
