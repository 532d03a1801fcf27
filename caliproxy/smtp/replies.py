"""SMTP replies: reading the upstream's, and giving ours enhanced status codes.

Owns the reply grammar in both directions: :class:`ReplyParser` turns the upstream's bytes into
:class:`Reply` values (multi-line replies joined, sizes bounded), :meth:`Reply.render` turns a reply
back into the line(s) sent to the client, and :func:`enhance` adds an RFC 3463 enhanced status
code to a reply of ours that lacks one.

Pure module: standard library only plus ``caliproxy.errors``; no sockets, no event loop, no logging.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from caliproxy.errors import ServerProtocolError

# RFC 5321 §4.2:
#   Reply-line     = *( Reply-code "-" [ textstring ] CRLF )
#                    Reply-code [ SP textstring ] CRLF
#   Reply-code     = %x32-35 %x30-35 %x30-39
#   textstring     = 1*(%d09 / %d32-126) ; HT, SP, Printable US-ASCII
# (RFC 6531 §3.7.4 lets a server that offers SMTPUTF8 put UTF-8 in the text, so the text is kept as
# bytes and only control characters other than HT are refused.)
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([- ]?)([^\x00-\x08\x0a-\x1f\x7f]*)\Z")

# RFC 3463 §2: status-code = class "." subject "." detail
#   class = "2" / "4" / "5"; subject = 1*3digit; detail = 1*3digit
_ENHANCED = re.compile(rb"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |\Z)")

#: The longest reply line we accept from an upstream (RFC 5321 §4.5.3.1.5 says 512 octets; real
#: servers send longer texts, so this is generous but bounded).
MAX_LINE = 8192
#: The most lines one reply may have (a large EHLO reply has about 20).
MAX_LINES = 200


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply: a three-digit code and the text of each of its lines."""

    code: int
    lines: tuple[bytes, ...] = (b"",)

    @classmethod
    def of(cls, code: int, *lines: str) -> Reply:
        """A reply of ours, from text lines (ASCII)."""
        return cls(code, tuple(line.encode("ascii") for line in lines) or (b"",))

    @property
    def positive(self) -> bool:
        """2yz: the command was accepted."""
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        """3yz: go on (354 after DATA, 334 during AUTH)."""
        return 300 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4yz: failed for now; the client should try again later."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5yz: failed; trying the same again will fail again."""
        return 500 <= self.code < 600

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code at the start of the first line, if any."""
        match = _ENHANCED.match(self.lines[0])
        return match.group(0).strip().decode("ascii") if match else None

    def render(self) -> bytes:
        """The reply as sent on the wire, without the final CRLF (the IO shell adds it)."""
        code = str(self.code).encode("ascii")
        last = len(self.lines) - 1
        return b"\r\n".join(
            code + (b" " if i == last else b"-") + line if line or i != last else code
            for i, line in enumerate(self.lines)
        )

    def __str__(self) -> str:
        return self.render().decode("utf-8", "replace")


class ReplyParser:
    """Collects the upstream's bytes into complete replies (h11 style: feed bytes, get events).

    Raises :class:`ServerProtocolError` on a line that is not a reply, a multi-line reply whose
    codes differ, or a reply beyond :data:`MAX_LINE` / :data:`MAX_LINES`; after that the
    connection's state is unknown and must be dropped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._code: int | None = None

    @property
    def pending(self) -> bool:
        """True while bytes of an incomplete reply are buffered (before STARTTLS this must be
        False: anything buffered then was sent in clear and must not be read as TLS-protected)."""
        return bool(self._buffer) or bool(self._lines)

    def receive_data(self, data: bytes) -> list[Reply]:
        self._buffer += data
        replies: list[Reply] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        del self._buffer[:start]
        if len(self._buffer) > MAX_LINE:
            raise ServerProtocolError(f"upstream reply line longer than {MAX_LINE} bytes")
        return replies

    def _line(self, line: bytes) -> Reply | None:
        if len(line) > MAX_LINE:
            raise ServerProtocolError(f"upstream reply line longer than {MAX_LINE} bytes")
        match = _REPLY_LINE.match(line)
        if match is None:
            raise ServerProtocolError(f"not an SMTP reply line: {line[:40]!r}")
        code = int(match.group(1))
        if self._code is not None and code != self._code:
            raise ServerProtocolError(f"reply code changed within a reply: {self._code} then {code}")
        self._code = code
        self._lines.append(match.group(3))
        if len(self._lines) > MAX_LINES:
            raise ServerProtocolError(f"upstream reply longer than {MAX_LINES} lines")
        if match.group(2) == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines = []
        self._code = None
        return reply


# RFC 3463 / RFC 5248: the enhanced code that best says what each basic code of ours means.
_DEFAULT_ENHANCED = {
    211: "2.0.0", 214: "2.0.0", 220: "2.0.0", 221: "2.0.0", 235: "2.7.0", 250: "2.0.0",
    251: "2.1.5", 252: "2.5.0",
    421: "4.3.0", 450: "4.2.0", 451: "4.3.0", 452: "4.3.1", 454: "4.7.0", 455: "4.5.4",
    500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4", 530: "5.7.0",
    534: "5.7.9", 535: "5.7.8", 538: "5.7.11", 550: "5.7.1", 552: "5.3.4", 553: "5.1.3",
    554: "5.7.0", 555: "5.5.4",
}


def enhance(reply: bytes) -> bytes:
    """Put an enhanced status code into each line of a 2yz/4yz/5yz reply that lacks one.

    RFC 2034 §3: once ENHANCEDSTATUSCODES is advertised, every 2yz, 4yz and 5yz reply but the
    greeting and the EHLO reply carries one. Replies relayed from an upstream that advertised it
    already do; this fills in the ones aiosmtpd writes itself ("503 Error: need RCPT command").
    """
    out = []
    for line in reply.split(b"\r\n"):
        match = _REPLY_LINE.match(line)
        if match is None or match.group(1)[:1] not in b"245" or _ENHANCED.match(match.group(3)):
            out.append(line)
            continue
        code = int(match.group(1))
        status = _DEFAULT_ENHANCED.get(code, f"{code // 100}.0.0").encode("ascii")
        text = match.group(3)
        out.append(match.group(1) + (match.group(2) or b" ") + status + (b" " + text if text else b""))
    return b"\r\n".join(out)
