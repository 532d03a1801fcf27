"""The virtual message a client sees: our constant-length header block, then the upstream bytes.

Pure module. Every view the client can ask for is a slice of one virtual message::

    virtual = block (H bytes) + upstream message with each header of our name renamed in place

Renaming keeps the length (``X-Caliproxy-Privacy`` becomes ``X-Caliproxy-Spoofed``; the names
are configurable, see :class:`FieldNames`), so ``RFC822.SIZE`` is always upstream + H, known
before any verdict. A partial fetch ``<o.n>`` maps to
the block's bytes in range plus an upstream range, which is what the session asks the upstream for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class FieldNames:
    """Our header's field name and the same-length name copies of it are renamed to.

    The configuration chooses them (the privacy engine checks the name); the session only needs
    them as bytes, with the upper-cased forms IMAP header lists are compared in.
    """

    ours: bytes
    spoofed: bytes
    ours_upper: bytes = field(init=False)
    spoofed_upper: bytes = field(init=False)
    at_line_start: re.Pattern[bytes] = field(init=False)  # in a whole header section
    field_start: re.Pattern[bytes] = field(init=False)  # at a given position

    def __post_init__(self) -> None:
        if len(self.ours) != len(self.spoofed) or self.ours.upper() == self.spoofed.upper():
            raise ValueError("the spoofed name must differ from ours and have its length")
        set_ = object.__setattr__
        set_(self, "ours_upper", self.ours.upper())
        set_(self, "spoofed_upper", self.spoofed.upper())
        set_(self, "at_line_start",
             re.compile(rb"(?:^|(?<=\n))" + re.escape(self.ours) + rb"[ \t]*:", re.IGNORECASE))
        set_(self, "field_start", re.compile(re.escape(self.ours) + rb"[ \t]*:", re.IGNORECASE))


DEFAULT_NAMES = FieldNames(b"X-Caliproxy-Privacy", b"X-Caliproxy-Spoofed")


def header_end(header: bytes) -> int:
    """Length of the header section including the empty line (the whole input if none).

    The end of the first match of ``_END_OF_HEADER``, found with ``find`` (the regex search
    costs tens of microseconds per header, and every header of a mailbox goes through here):
    the first LF followed by LF or CRLF ends the section."""
    bare, crlf = header.find(b"\n\n"), header.find(b"\n\r\n")
    if bare < 0:
        return crlf + 3 if crlf >= 0 else len(header)
    return bare + 2 if crlf < 0 or bare < crlf else crlf + 3


def spoof_offsets(header: bytes, names: FieldNames = DEFAULT_NAMES) -> tuple[int, ...]:
    """Offsets, in the upstream message, of every header field of our name (forged or stale).

    What ``names.at_line_start.finditer`` finds in the header section, found with ``find`` on a
    lower-cased copy (IGNORECASE is ASCII-only for bytes, as ``bytes.lower`` is) and checked
    with ``names.field_start`` at each line start: far cheaper than the regex over every byte."""
    limit = header_end(header)
    section = header[:limit].lower()
    ours = names.ours.lower()
    found = []
    at = section.find(ours)
    while at >= 0:
        if (at == 0 or section[at - 1] == 0x0A) and names.field_start.match(header, at, limit):
            found.append(at)
        at = section.find(ours, at + 1)
    return tuple(found)


@dataclass(frozen=True, slots=True)
class VirtualMessage:
    """What a client sees for one message: our block plus the neutralised upstream bytes."""

    block: bytes  # the rendered privacy header, exactly H bytes, CRLF-terminated
    spoofs: tuple[int, ...] = ()  # upstream offsets of header names to neutralise
    names: FieldNames = DEFAULT_NAMES

    @property
    def extra(self) -> int:
        return len(self.block)

    def patch(self, chunk: bytes, offset: int) -> bytes:
        """Neutralise any part of a forged header name inside ``chunk`` (upstream ``offset``)."""
        if not self.spoofs:
            return chunk
        end = offset + len(chunk)
        spoofed = self.names.spoofed
        width = len(spoofed)
        hits = [s for s in self.spoofs if s < end and s + width > offset]
        if not hits:
            return chunk
        data = bytearray(chunk)
        for start in hits:
            for i in range(max(start, offset), min(start + width, end)):
                data[i - offset] = spoofed[i - start]
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


def header_fields_view(block: bytes, upstream_result: bytes, names: frozenset[bytes], *, negated: bool,
                       ours: FieldNames = DEFAULT_NAMES) -> bytes:
    """``BODY[HEADER.FIELDS (names)]`` (``.NOT`` when ``negated``) of the virtual message.

    ``names`` are the client's field names, upper-cased. ``upstream_result`` is the upstream's
    answer for a list that returns at least every field the client's list selects in the
    virtual message, plus possibly fields of our name and of the renamed name: the session asks
    for ``names + our name + renamed name`` (or, negated, ``names`` without those two). In the
    virtual message our block is the first field and every upstream field of our name is one
    of the renamed name; the result keeps the upstream's order and its end (the empty line).
    """
    include_block = (ours.ours_upper in names) != negated
    keep_renamed = (ours.spoofed_upper in names) != negated
    out = [block] if include_block else []
    for unit, name in field_units(upstream_result):
        if name == ours.ours_upper:
            if keep_renamed:
                out.append(ours.spoofed + unit[len(ours.ours) :])
        elif name == ours.spoofed_upper:
            if keep_renamed:
                out.append(unit)
        else:
            out.append(unit)
    return b"".join(out)


def field_units(data: bytes) -> list[tuple[bytes, bytes | None]]:
    """Split a header excerpt into fields (with their folded lines) and what follows them.

    Returns ``(bytes, upper-cased name)`` pairs; the name is what precedes the colon without
    trailing blanks (as IMAP servers match names), None for a line without a colon and for the
    empty line that ends the header together with anything after it.
    """
    units: list[tuple[bytes, bytes | None]] = []
    current: list[bytes] = []
    name: bytes | None = None
    position = 0
    size = len(data)
    while position < size:
        end = data.find(b"\n", position)
        end = size if end < 0 else end + 1
        line = data[position:end]
        if line in (b"\r\n", b"\n"):
            break  # the end of the header: kept with the rest, as is
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
        else:
            if current:
                units.append((b"".join(current), name))
            current = [line]
            colon = line.find(b":")
            name = line[:colon].rstrip(b" \t").upper() if colon >= 0 else None
        position = end
    if current:
        units.append((b"".join(current), name))
    if position < size:
        units.append((data[position:], None))
    return units


_NAME_AND_BLANKS = re.compile(rb"[ \t]*")


class StreamNeutraliser:
    """Renames fields of our name in the header of one message that passes in chunks.

    For what a client uploads (APPEND): a copy it saves must not carry a verdict of its own
    making. Output has exactly the input's length; only the start of a line that could still
    turn out to be our field name (or the empty line ending the header) is held back until the
    next chunk decides it. After the header everything passes untouched.
    """

    def __init__(self, names: FieldNames = DEFAULT_NAMES) -> None:
        self._names = names
        self._in_header = True
        self._line_start = True
        self._held = b""

    def feed(self, data: bytes, last: bool) -> bytes:
        if not self._in_header:
            return data
        buffer = self._held + data if self._held else data
        self._held = b""
        names = self._names
        out: bytearray | None = None
        position = 0
        size = len(buffer)
        while position < size:
            if self._line_start:
                rest = buffer[position : position + len(names.ours) + 64]
                if rest.startswith((b"\r\n", b"\n")):
                    self._in_header = False
                    break
                if not last and b"\n" not in rest and _could_become_ours(rest, names):
                    self._held = buffer[position:]
                    size = position
                    break
                if names.field_start.match(buffer, position):
                    if out is None:
                        out = bytearray(buffer)
                    out[position : position + len(names.spoofed)] = names.spoofed
                self._line_start = False
            newline = buffer.find(b"\n", position)
            if newline < 0:
                position = size
                break
            position = newline + 1
            self._line_start = True
        result = out if out is not None else buffer
        if self._held:
            return bytes(result[:size])
        return bytes(result) if out is not None else buffer


def _could_become_ours(start: bytes, names: FieldNames) -> bool:
    """True when a line starting with ``start`` (no newline yet) may still be our field."""
    width = len(names.ours)
    if len(start) < width:
        return names.ours_upper.startswith(start.upper()) or start == b"\r"[: len(start)]
    if start[:width].upper() != names.ours_upper:
        return False
    return _NAME_AND_BLANKS.fullmatch(start, width) is not None
