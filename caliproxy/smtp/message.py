"""The outgoing message as bytes: its header block, the privacy-header splice, SMTP transparency.

The message is never parsed into objects and re-serialised: every function here works on the raw
bytes the client sent, so signatures (DKIM, S/MIME, PGP/MIME) and every byte we do not mean to
change stay intact. :func:`splice_header` is the one place the bytes change: our header block goes
on top, and a header of our name that the client supplied is renamed to a same-length name, so that
no one can plant a verdict and the size arithmetic (upstream size + header length) still holds.

Pure module: standard library only plus ``caliproxy.privacy``; no sockets, no event loop, no
logging.
"""

from __future__ import annotations

from caliproxy.privacy.header import HeaderName, neutralise_existing
from caliproxy.privacy.header_fields import header_bounds


def header_end(raw: bytes) -> int:
    """Offset just past the header block and the empty line that ends it (``len(raw)`` when the
    message has no body). The privacy engine's own boundary, so both agree on the block."""
    return header_bounds(raw)[1]


def header_block(raw: bytes) -> bytes:
    """The header block including its terminating empty line, as IMAP ``BODY[HEADER]`` gives it:
    the privacy engine judges the same bytes on both sides, so the verdicts agree."""
    return raw[: header_end(raw)]


def body_prefix(raw: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of the body (for detecting inline PGP)."""
    start = header_end(raw)
    return raw[start : start + limit]


def splice_header(raw: bytes, header: bytes, name: HeaderName | None = None) -> bytes:
    """The message to relay: ``header`` (our privacy header field(s), CRLF-terminated, possibly
    empty) on top of ``raw``, in which every field of our name is renamed at the same length.

    ``len(result) == len(header) + len(raw)`` always. With an empty ``header`` nothing is added,
    but a client-supplied field of our name is still neutralised.
    """
    return b"".join(splice_parts(raw, header, name))


def splice_parts(raw: bytes, header: bytes, name: HeaderName | None = None) -> tuple[bytes, bytes]:
    """:func:`splice_header` as its two parts, which the relay sends one after the other rather
    than copying a large message to join them."""
    if header and not header.endswith(b"\r\n"):
        raise ValueError("a header block must end with CRLF")
    return header, neutralise_existing(raw, name)


def dot_stuff(content: bytes) -> bytes:
    """``content`` as sent after DATA: RFC 5321 §4.5.2 transparency, then ``CRLF . CRLF``.

    A line starting with "." gets a second one (the receiver removes it again); only CRLF ends a
    line in SMTP, so this matches exactly what the receiving side undoes. A message whose last
    line lacks its CRLF gets one, because the terminator must start a line.
    """
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"
