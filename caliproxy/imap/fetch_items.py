"""Scanning the items of a FETCH response fragment by fragment, without assembling the response.

Pure module. A FETCH response arrives as line fragments separated by literals; a literal can be an
item's value (``BODY[] {5000}``) or sit deep inside one (a subject in ENVELOPE). The scanner keeps
the nesting depth across fragments and reports, for every item at the top level of the msg-att
list, its name and where its value is, so the session can rewrite ``RFC822.SIZE``, echo partial
origins and replace section literals without touching anything else.

RFC 3501 §7.4.2::

    message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
    msg-att      = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic / msg-att-static)) ")"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from caliproxy.errors import ServerProtocolError

_FETCH_HEAD = re.compile(rb"\* (\d+) FETCH \(")
_QUOTED = re.compile(rb'"(?:[^"\\\r\n]|\\.)*"')
# An item name or a simple value: atoms with an optional [section] (which may hold spaces and
# parentheses) and an optional <origin>.
_ATOM = re.compile(rb"[^\s()\"{\[\]]+(?:\[[^\]]*\](?:<\d+>)?)?")
# The common case in one step: an item name, a space, and a value that is an atom, a flat list
# (FLAGS) or a quoted string. Nested values (ENVELOPE, BODYSTRUCTURE) take the general path.
_NAME_SIMPLE_VALUE = re.compile(
    rb" *([^\s()\"{\[\]]+(?:\[[^\]]*\](?:<\d+>)?)?) "
    rb"([^\s()\"{\[\]]+|\([^()\"{}]*\)|\"(?:[^\"\\\r\n]|\\.)*\")(?=[ )]|\Z)"
)


@dataclass(slots=True)
class ItemSpan:
    """One top-level item: its upper-cased name and the byte span of its value in the fragment.

    ``value_start == value_end`` and ``literal`` set means the value is the literal that follows
    the fragment. ``name_start``/``name_end`` locate the name (to echo a partial's origin).
    """

    name: bytes
    name_start: int
    name_end: int
    value_start: int
    value_end: int
    literal: bool = False


@dataclass(slots=True)
class FetchScan:
    """State carried from one fragment of a FETCH response to the next."""

    number: int = 0
    depth: int = 0  # 1 = inside the msg-att list
    # the item being read: [name, name_start, name_end, value_start or None]; -1 = earlier fragment
    pending: list | None = None  # type: ignore[type-arg]
    done: bool = False
    items: list[ItemSpan] = field(default_factory=list)


def fetch_number(fragment: bytes) -> int | None:
    """``n`` of ``* n FETCH (`` or None when the fragment is not a FETCH response."""
    match = _FETCH_HEAD.match(fragment)
    return int(match.group(1)) if match else None


def scan_fragment(text: bytes, state: FetchScan, *, first: bool, literal_follows: bool) -> list[ItemSpan]:
    """Scan one fragment (marker and line end removed); return the top-level items in it.

    Raises ServerProtocolError when the fragment does not follow the grammar, so the session can
    fail closed instead of passing on bytes it does not understand.
    """
    pos = 0
    if first:
        match = _FETCH_HEAD.match(text)
        if match is None:
            raise ServerProtocolError("not a FETCH response")
        state.number = int(match.group(1))
        state.depth = 1
        pos = match.end()
    items: list[ItemSpan] = []
    n = len(text)
    while pos < n:
        c = text[pos]
        if c == 0x20:
            pos += 1
            continue
        if state.depth == 1 and state.pending is None:
            simple = _NAME_SIMPLE_VALUE.match(text, pos)
            if simple is not None:
                items.append(ItemSpan(simple.group(1).upper(), simple.start(1), simple.end(1),
                                      simple.start(2), simple.end(2)))
                pos = simple.end()
                continue
            if c == 0x29:  # ) closes msg-att
                state.depth = 0
                state.done = True
                if text[pos + 1 :].strip():
                    raise ServerProtocolError("data after the end of a FETCH response")
                break
            match = _ATOM.match(text, pos)
            if match is None:
                raise ServerProtocolError("malformed FETCH item name")
            state.pending = [match.group(0).upper(), match.start(), match.end(), None]
            pos = match.end()
            continue
        if state.depth < 1:
            raise ServerProtocolError("data after the end of a FETCH response")
        pending = state.pending
        if pending is not None and pending[3] is None:
            pending[3] = pos  # the value starts here
        pos = _skip_value(text, pos, state)
        if state.depth == 1 and pending is not None:
            items.append(ItemSpan(pending[0], pending[1], pending[2], pending[3], pos))
            state.pending = None
    if literal_follows:
        pending = state.pending
        if state.depth == 1 and pending is not None and pending[3] is None:
            items.append(ItemSpan(pending[0], pending[1], pending[2], n, n, literal=True))
            state.pending = None
        elif state.depth < 1:
            raise ServerProtocolError("literal outside a FETCH response")
        elif pending is not None:
            # A literal inside a nested value: the value spans fragments; its name and start
            # belong to this fragment only once.
            pending[1] = pending[2] = pending[3] = -1
    elif not state.done:
        raise ServerProtocolError("FETCH response ended early")
    state.items.extend(items)
    return items


def _skip_value(text: bytes, pos: int, state: FetchScan) -> int:
    """Skip one token (or one parenthesis) starting at ``pos``, updating the depth."""
    c = text[pos]
    if c == 0x28:  # (
        state.depth += 1
        return pos + 1
    if c == 0x29:  # )
        state.depth -= 1
        if state.depth < 1:
            raise ServerProtocolError("unbalanced parentheses in FETCH response")
        return pos + 1
    if c == 0x22:
        match = _QUOTED.match(text, pos)
        if match is None:
            raise ServerProtocolError("malformed quoted string in FETCH response")
        return match.end()
    match = _ATOM.match(text, pos)
    if match is None:
        raise ServerProtocolError("malformed value in FETCH response")
    return match.end()


class FetchCollector:
    """Assembles the top-level items of one whole FETCH response, for the proxy's own reading.

    Meant for small values (UIDs, flags, headers): each literal item's value is joined in
    memory. A value that spans fragments around a nested literal (an ENVELOPE with a literal
    subject) is not collected. Feed the fragments and literal chunks in order; ``fragment``
    returns True once the response is complete, and ``items`` holds the values by name.
    """

    __slots__ = ("_first", "_literal", "_names", "_scan", "items")

    def __init__(self) -> None:
        self.items: dict[bytes, bytes] = {}
        self._scan = FetchScan()
        self._first = True
        self._names: list[bytes] = []  # items whose value is the literal that follows
        self._literal: list[bytes] = []

    def fragment(self, text: bytes, *, literal_follows: bool) -> bool:
        """One fragment, literal marker and line end removed; True when the response is complete."""
        first, self._first = self._first, False
        for item in scan_fragment(text, self._scan, first=first, literal_follows=literal_follows):
            if item.literal:
                self._names.append(item.name)
            elif item.value_start >= 0:
                self.items[item.name] = text[item.value_start : item.value_end]
        return not literal_follows

    def literal(self, data: bytes, last: bool) -> None:
        self._literal.append(data)
        if last:
            name = self._names.pop() if self._names else b""
            self.items[name] = b"".join(self._literal)
            self._literal.clear()
