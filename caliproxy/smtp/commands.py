"""The commands we send upstream, built from what the client sent.

Owns: the MAIL FROM parameters we relay (BODY, SMTPUTF8, SIZE grown by our header) and refuse,
the RCPT TO line, and the SASL encodings of AUTH PLAIN (RFC 4616) and LOGIN, both for decoding
the client's credentials and for logging in upstream with them.

Credentials live only in :class:`Credentials`, whose ``repr`` never shows the password, and are
never kept past the upstream login.

Pure module: standard library only plus ``caliproxy.errors`` and ``caliproxy.smtp``; no sockets.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from caliproxy.errors import ClientProtocolError
from caliproxy.smtp.extensions import Extensions
from caliproxy.smtp.replies import Reply


class CommandRefused(ClientProtocolError):
    """The client's command cannot be relayed; ``reply`` says why, in SMTP terms."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


# <local@domain> with a dot-atom local part (RFC 5322 atext) and a host-name domain, then the rest
# of the line: what nearly every client sends. Anything else goes to the full RFC 5322 parser.
_SIMPLE_PATH = re.compile(
    r"[ \t]*<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*))>(.*)", re.DOTALL)


def simple_path(argument: str) -> tuple[str, str] | None:
    """The address and the rest of a MAIL/RCPT argument of the common simple form, or None.

    For those arguments the result is exactly what the standard library's RFC 5322 parser
    (``email._header_value_parser.get_angle_addr``) gives, without its cost (tens of
    microseconds a command); None means "ask that parser"."""
    match = _SIMPLE_PATH.fullmatch(argument)
    if match is None:
        return None
    rest = match.group(2)
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()  # the parser's folding white space: str.lstrip(), as here
    if rest[:1] == "(":
        return None  # a comment, which the parser drops
    return match.group(1), rest


# Control characters (CR and LF above all) must never reach the upstream inside an address:
# they would let a client inject a command of its own.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _address(address: str) -> bytes:
    if _CONTROL.search(address) or ">" in address or "<" in address:
        raise CommandRefused(Reply.of(501, "5.1.7 Bad address syntax"))
    # aiosmtpd decodes 8-bit arguments with surrogateescape: this gives back the client's bytes.
    return address.encode("utf-8", "surrogateescape")


def mail_parameters(options: Sequence[str], *, upstream: Extensions, header_length: int) -> list[bytes]:
    """The ESMTP parameters of MAIL FROM to relay, from the client's (upper-cased) options.

    mail-parameters = esmtp-param *(SP esmtp-param)   ; RFC 5321 §4.1.2
    esmtp-param     = esmtp-keyword ["=" esmtp-value]

    SIZE grows by ``header_length`` (the upstream receives our header too, RFC 1870) and is
    dropped when the upstream does not do SIZE; BODY and SMTPUTF8 go on only if the upstream
    supports them, otherwise the command is refused here rather than downgraded silently.
    Anything else was never advertised and is refused.
    """
    relayed: list[bytes] = []
    for option in options:
        keyword, _, value = option.partition("=")
        keyword = keyword.upper()
        if keyword == "SIZE":
            if not value.isdigit():
                raise CommandRefused(Reply.of(501, "5.5.4 SIZE needs a number"))
            if upstream.has("SIZE"):
                relayed.append(f"SIZE={int(value) + header_length}".encode("ascii"))
        elif keyword == "BODY":
            body = value.upper()
            if body not in ("7BIT", "8BITMIME"):
                raise CommandRefused(Reply.of(501, "5.5.4 BODY must be 7BIT or 8BITMIME"))
            if upstream.has("8BITMIME"):
                relayed.append(f"BODY={body}".encode("ascii"))
            elif body == "8BITMIME":
                raise CommandRefused(Reply.of(555, "5.5.4 BODY=8BITMIME is not available"))
        elif keyword == "SMTPUTF8":
            if value or not upstream.has("SMTPUTF8"):
                raise CommandRefused(Reply.of(555, "5.5.4 SMTPUTF8 is not available"))
            relayed.append(b"SMTPUTF8")
        else:
            raise CommandRefused(Reply.of(555, f"5.5.4 MAIL parameter {keyword[:20]} not supported"))
    return relayed


def mail_command(address: str, parameters: Sequence[bytes]) -> bytes:
    """``MAIL FROM:<address> [params]`` without the CRLF."""
    return b" ".join([b"MAIL FROM:<" + _address(address) + b">", *parameters])


def rcpt_command(address: str) -> bytes:
    """``RCPT TO:<address>`` without the CRLF (RCPT parameters are not offered, so none)."""
    return b"RCPT TO:<" + _address(address) + b">"


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a client presented to log in: passed to the upstream once, never logged or kept."""

    user: bytes
    password: bytes
    authzid: bytes = b""

    def __repr__(self) -> str:
        return f"<Credentials user={self.user!r}>"

    @property
    def account(self) -> str:
        """The user name as text, for logs and the privacy facts."""
        return self.user.decode("utf-8", "replace")


def decode_base64(text: str | bytes) -> bytes:
    """A SASL response: base64, or ``=`` for an empty one (RFC 4954 §4)."""
    blob = text.encode("ascii", "replace") if isinstance(text, str) else text
    blob = blob.strip()
    if blob == b"=":
        return b""
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ClientProtocolError("invalid base64 in SASL response") from None


def parse_plain(message: bytes) -> Credentials:
    """RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd."""
    parts = message.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise ClientProtocolError("malformed PLAIN message")
    return Credentials(user=parts[1], password=parts[2], authzid=parts[0])


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data) if data else b"="


def auth_plain_command(credentials: Credentials) -> bytes:
    """``AUTH PLAIN <initial response>`` (RFC 4954 §4 initial response) without the CRLF."""
    message = b"\x00".join([credentials.authzid, credentials.user, credentials.password])
    return b"AUTH PLAIN " + _b64(message)


def auth_login_steps(credentials: Credentials) -> tuple[bytes, bytes]:
    """The two lines of AUTH LOGIN: the command with the user name, then the password."""
    return b"AUTH LOGIN " + _b64(credentials.user), _b64(credentials.password)
