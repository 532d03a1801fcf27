"""Rewriting one upstream FETCH response into what the client's view says, fragment by fragment.

Pure module. Given the client's sequence number and the message's verdict, it renumbers the
response, adds our header's length to ``RFC822.SIZE``, echoes the client's partial origins, and
turns every section that starts at the top of the message into a slice of the virtual message
(see ``virtual``): ``BODY[]``, ``RFC822``, ``BODY[HEADER]``, ``RFC822.HEADER``, their partials,
and ``BODY[HEADER.FIELDS (...)]``/``.NOT`` lists that select our header or the renamed one. Large
literals stream through chunk by chunk; only header excerpts, whose length changes with their
content, are held. Anything it does not understand raises ServerProtocolError: the session ends
rather than guess.

The session translates each FETCH (``selected``) and records, for every top-level section it
asks for, what the client asked: a :class:`SectionMap` keyed by the section as the upstream
names it in its answer. Several requests can share a key (``BODY[]<0.100>`` and
``BODY[]<100.100>`` both start at upstream offset 0); the upstream answers them in request order,
so the n-th answer of a key in one message belongs to the n-th request of that key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from caliproxy.errors import ServerProtocolError
from caliproxy.imap.classify import Tagged
from caliproxy.imap.fetch_items import FetchScan, ItemSpan, scan_fragment
from caliproxy.imap.framing import Line, LiteralChunk
from caliproxy.imap.virtual import DEFAULT_NAMES, FieldNames, VirtualMessage, header_fields_view

_SECTION = re.compile(rb"^(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$", re.IGNORECASE)
# One field name of a header list: an atom or a quoted string.
_FIELD_TOKEN = re.compile(rb'\s*("(?:[^"\\]|\\.)*"|[^\s()"]+)')
_FIELDS_PREFIX = ((b"HEADER.FIELDS.NOT", "fields-not"), (b"HEADER.FIELDS", "fields"))
TOP_LEVEL = ("whole", "header", "fields", "fields-not")

SectionKey = tuple[str, tuple[bytes, ...], "int | None"]


@dataclass(frozen=True, slots=True)
class Partial:
    """A client's partial request as sent upstream: its own origin and length, and whether the
    upstream bytes are wanted at all (a range inside our header needs none)."""

    client_origin: int
    client_length: int
    upstream_origin: int = 0
    use_upstream: bool = True


@dataclass(frozen=True, slots=True)
class SectionRequest:
    """What the client asked for one top-level section.

    ``names``: the client's header field names, upper-cased (header lists only).
    ``client_name``: the item name to answer with (without origin); None keeps the upstream's.
    ``partial``: the client's ``<origin.length>`` and the upstream range asked for it, if any.
    """

    kind: str
    names: frozenset[bytes] = frozenset()
    client_name: bytes | None = None
    partial: Partial | None = None

    def rewritten(self, ours: FieldNames) -> bool:
        """False when the virtual message's answer is the upstream's (a header list selecting
        neither our header nor the renamed one)."""
        if self.kind == "fields":
            return ours.ours_upper in self.names or ours.spoofed_upper in self.names
        return True


@dataclass(slots=True)
class SectionMap:
    """The top-level sections one FETCH command asked for, by the key of their upstream answer."""

    entries: dict[SectionKey, list[SectionRequest]] = field(default_factory=dict)

    def add(self, key: SectionKey, request: SectionRequest) -> None:
        self.entries.setdefault(key, []).append(request)

    def get(self, key: SectionKey, nth: int) -> SectionRequest | None:
        queue = self.entries.get(key)
        if not queue:
            return None
        return queue[nth] if nth < len(queue) else None


# The name the session imports (one map per FETCH command).
PartialMap = SectionMap


def field_tokens(text: bytes) -> list[bytes]:
    """The field names of a header list ``(a "b" c)`` as written (quotes kept)."""
    text = text.strip()
    if not (text.startswith(b"(") and text.endswith(b")")):
        return []
    inner = text[1:-1]
    tokens = []
    position = 0
    while True:
        match = _FIELD_TOKEN.match(inner, position)
        if match is None:
            break
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def field_name(token: bytes) -> bytes:
    """A field token without its quotes, upper-cased."""
    if token.startswith(b'"'):
        token = re.sub(rb"\\(.)", rb"\1", token[1:-1])
    return token.upper()


def parse_section(section: bytes) -> tuple[str, list[bytes]]:
    """How a section relates to the top of the message ("whole", "header", "fields",
    "fields-not", or "other": TEXT, MIME parts, unchanged by our header) and, for header
    lists, the field tokens as written."""
    upper = section.upper()
    if upper == b"":
        return "whole", []
    if upper == b"HEADER":
        return "header", []
    for prefix, kind in _FIELDS_PREFIX:
        if upper.startswith(prefix):
            return kind, field_tokens(section[len(prefix) :])
    return "other", []


def section_kind(section: bytes) -> str:
    return parse_section(section)[0]


def section_key(kind: str, tokens: list[bytes], origin: int | None) -> SectionKey:
    return kind, tuple(field_name(t) for t in tokens), origin


@functools.lru_cache(maxsize=512)
def _answer_key(name: bytes) -> SectionKey | None:
    """The key of a section item in an answer (``BODY[HEADER.FIELDS (A B)]<0>``), or None when
    it does not start at the top of the message. Cached: every message of a FETCH repeats it."""
    match = _SECTION.match(name)
    if match is None or match.group(1).upper().startswith(b"BINARY"):
        return None
    kind, tokens = parse_section(match.group(2))
    if kind == "other":
        return None
    return section_key(kind, tokens, None if match.group(3) is None else int(match.group(3)))


class FetchRewriter:
    """Rewrites one untagged FETCH response; feed it every event of that response in order."""

    def __init__(self, client_seq: int, tagged: Tagged | None, partials: SectionMap | None,
                 names: FieldNames = DEFAULT_NAMES) -> None:
        self.client_seq = client_seq
        self.virtual = VirtualMessage(tagged.block, tagged.spoofs, names) if tagged is not None else None
        self.sections = partials or SectionMap()
        self._answered: dict[SectionKey, int] = {}  # answers of each key seen in this message
        self._scan = FetchScan()
        self._first = True
        # how the literal in progress is transformed
        self._mode = "pass"  # pass | stream | hold
        self._offset = 0  # upstream offset of the next literal byte (stream mode)
        self._limit = -1  # bytes of upstream data still wanted (stream mode), -1 = all
        self._held_fragment = b""
        self._held: list[bytes] = []
        self._held_request: SectionRequest | None = None

    # -- fragments -------------------------------------------------------------------------------

    def fragment(self, line: Line) -> list[bytes]:
        text = line.without_marker()
        items = scan_fragment(text, self._scan, first=self._first, literal_follows=line.literal is not None)
        out = bytearray()
        pos = 0
        if self._first:
            head_end = text.index(b"(") + 1
            out += b"* %d FETCH (" % self.client_seq
            pos = head_end
            self._first = False
        literal_item: ItemSpan | None = None
        for item in items:
            if item.literal:
                literal_item = item
                continue
            replacement = self._rewrite_value(item, text)
            if replacement is None:
                continue
            name, value = replacement
            start = item.name_start if name is not None else item.value_start
            out += text[pos:start]
            if name is not None:
                out += name + b" "
            out += value
            pos = item.value_end
        if literal_item is None:
            out += text[pos:]
            if line.literal is not None:
                # a literal nested inside an item (ENVELOPE...): passed through as is
                self._mode = "pass"
                return [bytes(out) + line.data[len(text) :]]
            return [bytes(out) + b"\r\n"]
        return self._literal_item(literal_item, text, out, pos, line)

    def _rewrite_value(self, item: ItemSpan, text: bytes) -> tuple[bytes | None, bytes] | None:
        """A replacement (new name or None, new value) for a non-literal item, or None."""
        if self.virtual is None:
            return None
        if item.name == b"RFC822.SIZE" and item.value_start >= 0:
            value = text[item.value_start : item.value_end]
            if not value.isdigit():
                raise ServerProtocolError("RFC822.SIZE is not a number")
            return None, b"%d" % (int(value) + self.virtual.extra)
        if item.value_start < 0:
            return None
        found = self._section_of(item.name)
        if found is None:
            return None
        request, client_name = found
        value = text[item.value_start : item.value_end]
        if value.upper() == b"NIL":
            # No data (Dovecot's answer for a message another session expunged, with
            # [EXPUNGEISSUED]): none in the virtual message either, under the client's name.
            return client_name, b"NIL"
        if not value.startswith(b'"'):
            raise ServerProtocolError("unexpected section value")
        raw = re.sub(rb"\\(.)", rb"\1", value[1:-1])
        rendered = self._complete(request, raw)
        return client_name, b"{%d}\r\n" % len(rendered) + rendered

    def passes_unchanged(self, name: bytes) -> bool:
        """Whether the first answer of section ``name`` (upper case) in a fresh message reaches
        the client as the upstream sent it (the fast path in ``fetch_fast`` asks, once per name
        and FETCH command, instead of rewriting every message in general)."""
        return self.virtual is None or self._section_of(name) is None

    def _section_of(self, name: bytes) -> tuple[SectionRequest, bytes] | None:
        """The client's request behind a section of the answer and the name to show the client,
        or None when the item passes unchanged."""
        if name in (b"RFC822", b"RFC822.HEADER"):
            return SectionRequest("whole" if name == b"RFC822" else "header"), name
        key = _answer_key(name)
        if key is None:
            return None
        nth = self._answered.get(key, 0)
        self._answered[key] = nth + 1
        request = self.sections.get(key, nth)
        if request is None:
            if key[2] is not None:
                raise ServerProtocolError("partial FETCH data that was not asked for")
            # Not recorded (an answer outside a translated FETCH): judged by its name alone.
            request = SectionRequest(key[0], frozenset(key[1]))
        assert self.virtual is not None
        if not request.rewritten(self.virtual.names):
            return None
        client_name = request.client_name or name[: name.index(b"]") + 1]
        if request.partial is not None:
            client_name += b"<%d>" % request.partial.client_origin
        elif request.client_name is None:
            client_name = name
        return request, client_name

    def _complete(self, request: SectionRequest, upstream: bytes) -> bytes:
        """The client's bytes for a section whose whole upstream value is at hand."""
        virtual = self.virtual
        assert virtual is not None
        partial = request.partial
        if request.kind in ("fields", "fields-not"):
            rendered = header_fields_view(virtual.block, upstream, request.names,
                                          negated=request.kind == "fields-not", ours=virtual.names)
            if partial is None:
                return rendered
            return rendered[partial.client_origin : partial.client_origin + partial.client_length]
        if partial is not None:
            head = virtual.block_part(partial.client_origin, partial.client_length)
            if not partial.use_upstream:
                return head
            patched = virtual.patch(upstream, partial.upstream_origin)
            return (head + patched)[: partial.client_length]
        return virtual.render_whole(upstream)

    def _literal_item(self, item: ItemSpan, text: bytes, out: bytearray, pos: int, line: Line) -> list[bytes]:
        assert line.literal is not None
        found = self._section_of(item.name) if self.virtual is not None else None
        if found is None:
            self._mode = "pass"
            out += text[pos:]
            return [bytes(out) + line.data[len(text) :]]
        request, client_name = found
        out += text[pos : item.name_start] + client_name + b" "
        size = line.literal
        virtual = self.virtual
        assert virtual is not None
        partial = request.partial
        if request.kind in ("fields", "fields-not"):
            # The result's length depends on its content: hold this header excerpt whole.
            self._mode = "hold"
            self._held_fragment = bytes(out)
            self._held = []
            self._held_request = request
            return []  # released with the literal's last chunk (an empty literal has one too)
        if partial is not None:
            head = virtual.block_part(partial.client_origin, partial.client_length)
            wanted = min(size, partial.client_length - len(head)) if partial.use_upstream else 0
            self._mode = "stream"
            self._offset = partial.upstream_origin
            self._limit = wanted
            out += b"{%d}\r\n" % (len(head) + wanted)
            return [bytes(out), head] if head else [bytes(out)]
        self._mode = "stream"
        self._offset = 0
        self._limit = -1
        out += b"{%d}\r\n" % (size + virtual.extra)
        return [bytes(out), virtual.block]

    # -- literal data ------------------------------------------------------------------------------

    def literal(self, chunk: LiteralChunk) -> list[bytes]:
        if self._mode == "pass":
            return [chunk.data]
        if self._mode == "hold":
            self._held.append(chunk.data)
            return self._release() if chunk.last else []
        assert self.virtual is not None
        data = chunk.data
        offset = self._offset
        self._offset += len(data)
        if self._limit >= 0:
            data = data[: self._limit]
            self._limit -= len(data)
        return [self.virtual.patch(data, offset)] if data else []

    def _release(self) -> list[bytes]:
        upstream = b"".join(self._held)
        request = self._held_request
        assert request is not None
        rendered = self._complete(request, upstream)
        self._held = []
        self._held_request = None
        return [self._held_fragment + b"{%d}\r\n" % len(rendered), rendered]
