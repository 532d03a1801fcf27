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
# group 1: number; group 2: the items, each followed by a space; group 3: the section name;
# group 4: the literal's size. The end of group 2 is where the section item starts.
_WITH_LITERAL = re.compile(_HEAD + rb"((?:" + _ITEM + rb" )*)(BODY\[[^\[\]\r\n]*\]) \{([0-9]{1,10})\}\r\n\Z")
# group 1: number; group 2: the items, without the closing parenthesis
_WITHOUT_LITERAL = re.compile(_HEAD + rb"((?:" + _ITEM + rb"(?: " + _ITEM + rb")*)?)\)\r\n\Z")
_DIGITS = re.compile(rb"[0-9]+")
_SIZE = b"RFC822.SIZE "
_FLAGS = b"FLAGS ("


def match(data: bytes, literal: bool) -> re.Match[bytes] | None:
    """The match of a first fragment (line end and marker included) of the shapes above, or None.

    ``literal``: whether the framer announced a literal after it (its regex then agrees)."""
    if literal:
        return _WITH_LITERAL.match(data)
    return _WITHOUT_LITERAL.match(data)


def flag_lists(data: bytes, found: re.Match[bytes]) -> list[bytes]:
    """The flag lists of the items (``(\\Seen $Label1)``), in order."""
    lists = []
    start, end = found.span(2)
    at = data.find(_FLAGS, start, end)
    while at >= 0:
        close = data.index(b")", at)
        lists.append(data[at + 6 : close + 1])
        at = data.find(_FLAGS, close, end)
    return lists


def render(data: bytes, found: re.Match[bytes], client_seq: int, extra: int | None) -> bytes:
    """The fragment as the client gets it: renumbered to ``client_seq`` and, when ``extra`` is
    not None (a tagged message), every ``RFC822.SIZE`` grown by ``extra`` (our header's length).

    A section literal is passed on as it is: the caller has checked that the general path
    passes it unchanged."""
    start, end = found.span(2)
    sizes: list[int] = []
    if extra is not None:
        at = data.find(_SIZE, start, end)
        while at >= 0:
            # outside a flag list (a keyword may be spelled RFC822.SIZE): as many "(" as ")" before
            if data.count(b"(", start, at) == data.count(b")", start, at):
                sizes.append(at + 12)
            at = data.find(_SIZE, at + 12, end)
    if not sizes:
        if client_seq == int(found.group(1)):
            return data
        return b"* %d FETCH (" % client_seq + data[start:]
    parts = [b"* %d FETCH (" % client_seq]
    pos = start
    for value_start in sizes:
        digits = _DIGITS.match(data, value_start)
        assert digits is not None  # the regex put digits there
        parts.append(data[pos:value_start])
        parts.append(b"%d" % (int(digits.group()) + extra))
        pos = digits.end()
    parts.append(data[pos:])
    return b"".join(parts)
