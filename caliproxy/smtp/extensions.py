"""ESMTP extensions: what the upstream offers, and the allow-list of what we offer the client.

We advertise only what is handled end to end (like the IMAP capability allow-list):
PIPELINING (commands are read one after another and relayed in order), SIZE (the upstream's limit
minus the privacy header we add), 8BITMIME, SMTPUTF8 and ENHANCEDSTATUSCODES when the upstream has
them, STARTTLS and AUTH as our own listener decides. Never CHUNKING/BDAT, DSN, VRFY, ETRN or
anything else the upstream lists until it is relayed correctly.

Pure module: standard library only plus ``caliproxy.smtp``; no sockets, no event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from caliproxy.smtp.replies import Reply

#: The SASL mechanisms we take from clients; the upstream login uses PLAIN or LOGIN.
CLIENT_AUTH_MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class Extensions:
    """The EHLO keywords of one server, upper-cased, each with its parameter string."""

    keywords: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        """Read an EHLO reply (RFC 5321 §4.1.1.1: the first line is the server's name).

        ehlo-line = ehlo-keyword *( SP ehlo-param )
        ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        """
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:
            text = line.decode("ascii", "replace").strip()
            if not text:
                continue
            keyword, _, params = text.partition(" ")
            # "AUTH=LOGIN PLAIN" is an old spelling some servers still send next to "AUTH ..."
            keyword, _, old_params = keyword.partition("=")
            keywords.setdefault(keyword.upper(), (params or old_params).strip())
        return cls(keywords)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int | None:
        """The upstream's SIZE limit: None without SIZE, 0 when it declares no fixed limit."""
        if "SIZE" not in self.keywords:
            return None
        value = self.keywords["SIZE"].split()[0] if self.keywords["SIZE"] else "0"
        return int(value) if value.isdigit() else 0

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(self.keywords.get("AUTH", "").upper().split())

    def upstream_mechanism(self) -> str | None:
        """The mechanism we log in upstream with: PLAIN when offered, else LOGIN, else None."""
        for mechanism in ("PLAIN", "LOGIN"):
            if mechanism in self.auth_mechanisms:
                return mechanism
        return None


@dataclass(frozen=True)
class Offer:
    """What one client connection is offered, derived from the upstream's extensions."""

    #: Advertised SIZE and the largest message accepted from the client (our header included
    #: it must still fit the upstream's limit).
    size_limit: int
    eight_bit_mime: bool
    smtputf8: bool
    enhanced_status_codes: bool
    auth: bool

    def keywords(self, *, starttls: bool, auth_now: bool) -> list[str]:
        """EHLO keyword lines in a stable order. ``starttls``: offer STARTTLS (a STARTTLS listener
        before the handshake); ``auth_now``: AUTH may be used on this connection as it is now."""
        lines = ["PIPELINING", f"SIZE {self.size_limit}"]
        if self.eight_bit_mime:
            lines.append("8BITMIME")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.enhanced_status_codes:
            lines.append("ENHANCEDSTATUSCODES")
        if starttls:
            lines.append("STARTTLS")
        if self.auth and auth_now:
            lines.append("AUTH " + " ".join(CLIENT_AUTH_MECHANISMS))
        return lines


def offer_for(upstream: Extensions, *, header_length: int, max_message_size: int) -> Offer:
    """What we can promise a client, given the upstream's EHLO and the header we add.

    RFC 1870: the SIZE a client sees must leave room for the ``header_length`` bytes we insert, so
    that a message we accept is never refused by the upstream for its size. Without an upstream
    limit, ours is ``max_message_size`` (the proxy holds a message in memory while relaying it).
    """
    limit = upstream.size_limit
    size = max_message_size if not limit else min(limit - header_length, max_message_size)
    return Offer(
        size_limit=max(size, 1),
        eight_bit_mime=upstream.has("8BITMIME"),
        smtputf8=upstream.has("SMTPUTF8"),
        enhanced_status_codes=upstream.has("ENHANCEDSTATUSCODES"),
        auth=upstream.upstream_mechanism() is not None,
    )


def ehlo_reply(hostname: str, keywords: list[str]) -> list[str]:
    """The EHLO reply lines as aiosmtpd pushes them (``250-...`` then ``250 ...``)."""
    lines = [hostname, *keywords]
    return [f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)]
