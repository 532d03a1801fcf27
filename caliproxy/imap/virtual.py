"""The virtual message a client sees: our constant-length header block, then the upstream bytes.

Pure module. Every view the client can ask for is a slice of one virtual message::

    virtual = block (H bytes) + upstream message with each header of our name renamed in place

Renaming keeps the length (``X-Caliproxy-Privacy`` becomes ``X-Caliproxy-Spoofed``), so
``RFC822.SIZE`` is always upstream + H, known before any verdict. A partial fetch ``<o.n>`` maps to
the block's bytes in range plus an upstream range, which is what the session asks the upstream for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OUR_NAME = b"X-Caliproxy-Privacy"
SPOOFED_NAME = b"X-Caliproxy-Spoofed"
assert len(OUR_NAME) == len(SPOOFED_NAME)

_OUR_FIELD_AT_LINE_START = re.compile(rb"(?:^|(?<=\n))" + re.escape(OUR_NAME) + rb"[ \t]*:", re.I)
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


def header_end(header: bytes) -> int:
    """Length of the header section including the empty line (the whole input if none)."""
    match = _END_OF_HEADER.search(header)
    return match.end() if match else len(header)


def spoof_offsets(header: bytes) -> tuple[int, ...]:
    """Offsets, in the upstream message, of every header field of our name (forged or stale)."""
    limit = header_end(header)
    return tuple(m.start() for m in _OUR_FIELD_AT_LINE_START.finditer(header, 0, limit))


@dataclass(frozen=True, slots=True)
class VirtualMessage:
    """What a client sees for one message: our block plus the neutralised upstream bytes."""

    block: bytes  # the rendered privacy header, exactly H bytes, CRLF-terminated
    spoofs: tuple[int, ...] = ()  # upstream offsets of header names to neutralise

    @property
    def extra(self) -> int:
        return len(self.block)

    def patch(self, chunk: bytes, offset: int) -> bytes:
        """Neutralise any part of a forged header name inside ``chunk`` (upstream ``offset``)."""
        if not self.spoofs:
            return chunk
        end = offset + len(chunk)
        width = len(OUR_NAME)
        hits = [s for s in self.spoofs if s < end and s + width > offset]
        if not hits:
            return chunk
        data = bytearray(chunk)
        for start in hits:
            for i in range(max(start, offset), min(start + width, end)):
                data[i - offset] = SPOOFED_NAME[i - start]
        return bytes(data)

    def upstream_range(self, origin: int, length: int) -> tuple[int, int] | None:
        """The upstream (origin, length) holding virtual bytes [origin, origin+length), or None
        when the range lies entirely inside our block."""
        start = max(0, origin - self.extra)
        stop = origin + length - self.extra
        if stop <= 0:
            return None
        return start, stop - start

    def block_part(self, origin: int, length: int) -> bytes:
        """The bytes of our block inside virtual range [origin, origin+length)."""
        return self.block[origin : origin + length] if origin < self.extra else b""

    def render_whole(self, upstream: bytes) -> bytes:
        """The complete virtual message for small upstream data (header sections)."""
        return self.block + self.patch(upstream, 0)


def header_fields_with_ours(block: bytes, upstream_result: bytes) -> bytes:
    """``BODY[HEADER.FIELDS (...)]`` naming our header: ours first, forged ones dropped.

    The upstream's answer lists the matching fields of the upstream message, including any forged
    field of our name; in the virtual message that one was renamed, so it does not match.
    """
    return block + _drop_our_fields(upstream_result)


def _drop_our_fields(data: bytes) -> bytes:
    out: list[bytes] = []
    skipping = False
    for line in data.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and skipping:
            continue  # folded continuation of a dropped field
        skipping = _OUR_FIELD_AT_LINE_START.match(line) is not None
        if not skipping:
            out.append(line)
    return b"".join(out)


def neutralise_fields(data: bytes) -> bytes:
    """Rename, in place and at the same length, every field of our name in a header excerpt."""
    return _OUR_FIELD_AT_LINE_START.sub(lambda m: SPOOFED_NAME + m.group(0)[len(OUR_NAME):], data)
