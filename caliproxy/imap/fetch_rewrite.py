"""Rewriting one upstream FETCH response into what the client's view says, fragment by fragment.

Pure module. Given the client's sequence number and the message's verdict, it renumbers the
response, adds our header's length to ``RFC822.SIZE``, echoes the client's partial origins, and
turns every section that starts at the top of the message into a slice of the virtual message
(see ``virtual``): ``BODY[]``, ``RFC822``, ``BODY[HEADER]``, ``RFC822.HEADER``, their partials,
and ``BODY[HEADER.FIELDS (...)]``/``.NOT`` lists that include our header. Large literals stream
through chunk by chunk; only header-sized literals whose length changes unpredictably are held.
Anything it does not understand raises ServerProtocolError: the session ends rather than guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from caliproxy.errors import ServerProtocolError
from caliproxy.imap.classify import Tagged
from caliproxy.imap.fetch_items import FetchScan, ItemSpan, scan_fragment
from caliproxy.imap.framing import Line, LiteralChunk
from caliproxy.imap.virtual import VirtualMessage, header_fields_with_ours, neutralise_fields

_SECTION = re.compile(rb"^(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?$")
_OUR_NAME_IN_LIST = re.compile(rb"(?:^|[\s(])X-CALIPROXY-PRIVACY(?:[\s)]|$)")


@dataclass(slots=True)
class Partial:
    """A client's partial request as sent upstream: its own origin and length, and whether the
    upstream bytes are wanted at all (a range inside our header needs none)."""

    client_origin: int
    client_length: int
    upstream_origin: int
    use_upstream: bool


@dataclass(slots=True)
class PartialMap:
    """Partials of one FETCH command, by (section, upstream origin), in request order."""

    entries: dict[tuple[bytes, int], list[Partial]] = field(default_factory=dict)

    def add(self, section: bytes, partial: Partial) -> None:
        self.entries.setdefault((section, partial.upstream_origin), []).append(partial)

    def find(self, section: bytes, upstream_origin: int) -> Partial | None:
        queue = self.entries.get((section, upstream_origin))
        if not queue:
            return None
        return queue[0] if len(queue) == 1 else queue.pop(0)


def section_kind(section: bytes) -> str:
    """How a section relates to the top of the message: "whole", "header", "fields",
    "fields-not", or "other" (TEXT, MIME parts: unchanged by our header)."""
    upper = section.upper()
    if upper == b"":
        return "whole"
    if upper == b"HEADER":
        return "header"
    if upper.startswith(b"HEADER.FIELDS.NOT"):
        return "fields-not"
    if upper.startswith(b"HEADER.FIELDS"):
        return "fields"
    return "other"


def names_our_header(section: bytes) -> bool:
    return _OUR_NAME_IN_LIST.search(section.upper()) is not None


class FetchRewriter:
    """Rewrites one untagged FETCH response; feed it every event of that response in order."""

    def __init__(self, client_seq: int, tagged: Tagged | None, partials: PartialMap | None) -> None:
        self.client_seq = client_seq
        self.virtual = VirtualMessage(tagged.block, tagged.spoofs) if tagged is not None else None
        self.partials = partials or PartialMap()
        self._scan = FetchScan()
        self._first = True
        # how the literal in progress is transformed
        self._mode = "pass"  # pass | stream | hold | drop-data
        self._offset = 0  # upstream offset of the next literal byte (stream mode)
        self._limit = -1  # bytes of upstream data still wanted (stream mode), -1 = all
        self._held_fragment = b""
        self._held: list[bytes] = []
        self._hold_kind = ""

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
            size = int(text[item.value_start : item.value_end])
            return None, b"%d" % (size + self.virtual.extra)
        kind, client_name, data = self._section_of(item.name)
        if kind is None or item.value_start < 0:
            return None
        value = text[item.value_start : item.value_end]
        if value.upper() == b"NIL":
            if kind in ("whole", "header"):
                raise ServerProtocolError("NIL for a whole-message section")
            return None
        if not value.startswith(b'"'):
            raise ServerProtocolError("unexpected section value")
        raw = re.sub(rb"\\(.)", rb"\1", value[1:-1])
        rendered = self._complete(kind, data, raw)
        if rendered is None:
            return None
        return client_name, b"{%d}\r\n" % len(rendered) + rendered

    def _section_of(self, name: bytes) -> tuple[str | None, bytes, object]:
        """(kind needing a rewrite or None, the name to show the client, partial info)."""
        if name in (b"RFC822", b"RFC822.HEADER"):
            return ("whole" if name == b"RFC822" else "header"), name, None
        match = _SECTION.match(name)
        if match is None or match.group(1).startswith(b"BINARY"):
            return None, name, None
        section = match.group(2)
        kind = section_kind(section)
        if kind == "other":
            return None, name, None
        if kind == "fields" and not names_our_header(section):
            return None, name, None
        if kind == "fields-not" and names_our_header(section):
            return None, name, None
        if match.group(3) is None:
            return kind, name, None
        partial = self.partials.find(section.upper(), int(match.group(3)))
        if partial is None:
            raise ServerProtocolError("partial FETCH data that was not asked for")
        client_name = name[: name.rindex(b"<")] + b"<%d>" % partial.client_origin
        return kind, client_name, partial

    def _complete(self, kind: str, partial: object, upstream: bytes) -> bytes | None:
        """The client's bytes for a section whose whole upstream value is at hand."""
        virtual = self.virtual
        assert virtual is not None
        if kind == "fields":
            return header_fields_with_ours(virtual.block, upstream)
        if kind == "fields-not":
            return virtual.block + neutralise_fields(upstream)
        if isinstance(partial, Partial):
            head = virtual.block_part(partial.client_origin, partial.client_length)
            if not partial.use_upstream:
                return head
            patched = virtual.patch(upstream, partial.upstream_origin)
            return (head + patched)[: partial.client_length]
        return virtual.render_whole(upstream)

    def _literal_item(self, item: ItemSpan, text: bytes, out: bytearray, pos: int, line: Line) -> list[bytes]:
        assert line.literal is not None
        kind, client_name, partial = self._section_of(item.name) if self.virtual else (None, item.name, None)
        if kind is None:
            self._mode = "pass"
            out += text[pos:]
            return [bytes(out) + line.data[len(text) :]]
        out += text[pos : item.name_start] + client_name + b" "
        size = line.literal
        virtual = self.virtual
        assert virtual is not None
        if kind in ("fields", "fields-not"):
            # The result's length depends on its content: hold this header excerpt whole.
            self._mode = "hold"
            self._hold_kind = kind
            self._held_fragment = bytes(out)
            self._held = []
            self._partial = partial
            return []  # released with the literal's last chunk (an empty literal has one too)
        if isinstance(partial, Partial):
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
        rendered = self._complete(self._hold_kind, getattr(self, "_partial", None), upstream)
        assert rendered is not None
        self._held = []
        return [self._held_fragment + b"{%d}\r\n" % len(rendered), rendered]
