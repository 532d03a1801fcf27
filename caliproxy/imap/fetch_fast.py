"""Recognising the FETCH responses of a header sync in one step, so the session can skip the general path.

Pure module. A client opening a big mailbox makes the upstream send thousands of responses of two
shapes (Thunderbird, mbsync and most others)::

    * 17 FETCH (UID 42 FLAGS (\\Seen))
    * 17 FETCH (UID 42 RFC822.SIZE 2051 FLAGS (\\Seen) BODY[HEADER.FIELDS (FROM TO ...)] {517}
    ...header bytes...
    )

Their only rewrites are the sequence number and ``RFC822.SIZE`` (plus our header when the section
selects it, which the caller leaves to the general path). :func:`match` accepts a first fragment
only when it is exactly such a response: a sequence number without leading zeros, then nothing but
``UID``, ``RFC822.SIZE``, ``FLAGS`` with a flat list and ``INTERNALDATE`` with a date, in upper
case and separated by single spaces, and, when a literal follows, one ``BODY[section]`` without
an origin as the last item. Every such fragment is one the general scanner
(``fetch_items.scan_fragment``) reads as the same items; anything else (other items, nesting,
quoting, odd spacing or case, ``~{n}``/``{n+}``) is not matched and takes the general path.
:func:`render` produces what ``fetch_rewrite.FetchRewriter.fragment`` produces for it; tests
compare the two byte for byte.
"""

from __future__ import annotations

import re

# Values that cannot hold "(", ")", "{", '"', "[", "]", CR or LF, so that within a matched
# fragment every "FLAGS (" and every "RFC822.SIZE " outside a flag list starts an item.
_ITEM = (rb"(?:UID [0-9]{1,10}|RFC822\.SIZE [0-9]{1,20}|FLAGS \([^()\"{}\[\]\r\n]*\)"
         rb"|INTERNALDATE \"[0-9A-Za-z :+\-]{1,40}\")")
_HEAD = rb"\* ([1-9][0-9]{0,9}) FETCH \("
# group 1: number; group 2: the items, each followed by a space; then the section item's start.
# The rest ("[section] {n}" CRLF) is checked with find, much faster than a regex over the section.
_BEFORE_SECTION = re.compile(_HEAD + rb"((?:" + _ITEM + rb" )*)BODY\[")
_MARKER = re.compile(rb" \{[0-9]{1,10}\}\r\n")
# group 1: number; group 2: the items, without the closing parenthesis
_WITHOUT_LITERAL = re.compile(_HEAD + rb"((?:" + _ITEM + rb"(?: " + _ITEM + rb")*)?)\)\r\n\Z")
# Both shapes at once, for a run of responses in a buffer (every part is kept off CR and LF, so
# a match never runs past its own line end). group 1: number; group 2: the items, single spaces
# between them; then either ")" CRLF, or the section item (group 3, "BODY[...]", after a space
# unless it is the only item) and its literal's size (group 4).
RESPONSE = re.compile(_HEAD + rb"((?:" + _ITEM + rb"(?: " + _ITEM + rb")*)?)"
                      rb"(?:\)\r\n|(?:(?<=\()|(?<!\() )(BODY\[[^\[\]\r\n]*\]) \{([0-9]{1,10})\}\r\n)")
_SIZE = b"RFC822.SIZE "
_FLAGS = b"FLAGS ("

# (sequence number, start and end of the items in the fragment, the section item's name: b""
# without a literal). The items end before ")" without a literal, before the section with one.
Shape = tuple[int, int, int, bytes]


def match(data: bytes, literal: bool) -> Shape | None:
    """The shape of a first fragment (line end and marker included) as above, or None.

    ``literal``: whether the framer announced a literal after it (the marker is checked again)."""
    if not literal:
        found = _WITHOUT_LITERAL.match(data)
        if found is None:
            return None
        start, end = found.span(2)
        return int(found.group(1)), start, end, b""
    found = _BEFORE_SECTION.match(data)
    if found is None:
        return None
    start, end = found.span(2)
    opening = found.end() - 1
    close = data.find(b"]", opening)
    if (close < 0 or data.find(b"[", opening + 1, close) >= 0 or data.find(b"\r", opening, close) >= 0
            or _MARKER.fullmatch(data, close + 1) is None):
        return None
    return int(found.group(1)), start, end, data[end : close + 1]


def flag_list(data: bytes, start: int, end: int) -> bytes | None:
    """The flag list, parentheses included, of the one FLAGS item between ``start`` and ``end``
    (a matched fragment's items), or None when there is none or more than one. (A list of a
    matched fragment holds no parenthesis: the first ")" ends it.)"""
    at = data.find(_FLAGS, start, end)
    if at < 0:
        return None
    close = data.find(b")", at, end)
    if close < 0 or data.find(_FLAGS, close, end) >= 0:
        return None
    return data[at + 6 : close + 1]


def non_system_flags(data: bytes, shape: Shape) -> list[bytes]:
    """The flags of every FLAGS item that do not start with a backslash (keyword candidates),
    in order; each list split as ``value.strip(b"()").split()`` would."""
    flags: list[bytes] = []
    _number, start, end, _section = shape
    at = data.find(_FLAGS, start, end)
    while at >= 0:
        close = data.index(b")", at)
        flags.extend(flag for flag in data[at + 7 : close].split() if flag[0] != 0x5C)
        at = data.find(_FLAGS, close, end)
    return flags


def render(data: bytes, shape: Shape, client_seq: int, extra: int | None) -> bytes:
    """The fragment as the client gets it: renumbered to ``client_seq`` and, when ``extra`` is
    not None (a tagged message), every ``RFC822.SIZE`` grown by ``extra`` (our header's length).

    A section literal is passed on as it is: the caller has checked that the general path
    passes it unchanged."""
    number, start, end, _section = shape
    cut = pieces(data, 0, start, end, len(data), number, client_seq, extra)
    return cut[0] if len(cut) == 1 else b"".join(cut)


def pieces(buf: bytes, pos: int, start: int, stop: int, end: int, number: int, client_seq: int,
           extra: int | None) -> tuple[bytes, ...]:
    """What :func:`render` makes of the response at ``buf[pos:end]`` (its items at
    ``buf[start:stop]``; a section literal after them is passed on as it is), as pieces cut from
    ``buf`` around what changes, for a caller that writes them on without joining."""
    head = None if client_seq == number else b"* %d FETCH (" % client_seq
    at = buf.find(_SIZE, start, stop) if extra is not None else -1
    if at < 0 or extra is None:
        return (buf[pos:end],) if head is None else (head, buf[start:end])
    if head is None:
        head = buf[pos:start]  # (the same bytes: a matched head has one spelling)
    if buf.find(b"(", start, at) < 0 and buf.find(_SIZE, at + 12, stop) < 0:
        # the usual case: one RFC822.SIZE, before any list
        value = at + 12
        value_end = buf.find(b" ", value, stop)
        if value_end < 0:
            value_end = stop
        return head + buf[start:value], b"%d" % (int(buf[value:value_end]) + extra), buf[value_end:end]
    parts = [head]
    last = start
    while at >= 0:
        value = at + 12
        value_end = buf.find(b" ", value, stop)
        if value_end < 0:
            value_end = stop
        # outside a flag list (a keyword may be spelled RFC822.SIZE): as many "(" as ")" before
        if buf.find(b"(", start, at) < 0 or buf.count(b"(", start, at) == buf.count(b")", start, at):
            parts += (buf[last:value], b"%d" % (int(buf[value:value_end]) + extra))
            last = value_end
        at = buf.find(_SIZE, value_end, stop)
    parts.append(buf[last:end])
    return tuple(parts)
