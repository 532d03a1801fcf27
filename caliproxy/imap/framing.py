"""Incremental IMAP framer: a byte stream in, line fragments and literal chunks out.

Works for both directions. It knows only where lines end and how long literals are; it never
interprets a command or a response (that is ``grammar``'s job). It never imports IO libraries.

RFC 3501 §4.3 / RFC 9051 §4.3 and RFC 7888 (LITERAL+) / RFC 3516 (literal8)::

    literal   = "{" number64 ["+"] "}" CRLF *CHAR8
    literal8  = "~{" number64 "}" CRLF *OCTET

A literal marker can only stand at the very end of a line fragment, so a fragment is the bytes up
to and including LF, and a literal of the announced size follows it. A *logical* line (one command
or one response) is a first fragment, then zero or more (literal, fragment) pairs; it ends with the
first fragment that announces no literal.

The API is pull-based in the spirit of h11: ``receive_data`` buffers, ``next_event`` returns one
event or ``None`` when more bytes are needed. Pulling one event at a time matters for security: after
a synchronizing literal from a client the framer *stops* (``awaiting_grant``) until the caller
decides, so bytes a hostile client sends early are never framed differently from the way the
upstream server would frame them.

Large literals are never buffered whole: a literal is returned in chunks as bytes arrive.

A bulk download is tens of thousands of short lines and literals per second, so the hot paths
avoid copies and allocations: what one read brought is kept as the ``bytes`` it arrived in until a
partial line or literal has to be carried over to the next read, and events are named tuples
(immutable and several times cheaper to make than frozen dataclasses).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from caliproxy.errors import ProtocolError

# Matched at the last "{" of a fragment (a marker has no "{" after its own); "~" is looked up before it.
_LITERAL_MARKER = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_MARKER_ENDS = (b"}\r\n", b"}\n")


class LineTooLong(ProtocolError):
    """A line fragment exceeded the configured maximum before its LF arrived."""


class Line(NamedTuple):
    """One line fragment, raw, including its CRLF and any trailing literal marker.

    ``literal`` is the size of the literal announced at its end (None when there is none);
    ``continued`` is True when the fragment continues a logical line after a literal.
    """

    data: bytes
    literal: int | None = None
    sync: bool = False
    binary: bool = False
    continued: bool = False

    @property
    def ends_logical_line(self) -> bool:
        return self.literal is None

    def without_marker(self) -> bytes:
        """The fragment with its literal marker and line end removed."""
        if self.literal is None:
            return self.data.rstrip(b"\r\n")
        return self.data[: self.data.rindex(b"~{" if self.binary else b"{")]


class LiteralChunk(NamedTuple):
    """A piece of a literal's content; ``last`` marks the final piece."""

    data: bytes
    last: bool


Event = Line | LiteralChunk

# A predicate deciding whether a fragment may announce a literal at all (server side: status
# responses never carry one, so free text ending in "{5}" is not mistaken for a literal).
LiteralPolicy = Callable[[bytes], bool]


class Framer:
    """Split one direction of an IMAP stream into :class:`Line` and :class:`LiteralChunk` events."""

    def __init__(
        self,
        *,
        max_line: int,
        pause_on_sync_literal: bool = False,
        literal_policy: LiteralPolicy | None = None,
    ) -> None:
        self.max_line = max_line
        self.pause_on_sync_literal = pause_on_sync_literal
        self.literal_policy = literal_policy
        # When False, fragments are plain lines even if they end in "{n}" (AUTHENTICATE and IDLE
        # continuation lines are not commands and carry no literals).
        self.literals_enabled = True
        # bytes: one read, framed in place; bytearray: a partial line or literal carried over
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scan = 0  # where to resume looking for LF, so long lines are scanned once
        self._literal_left = 0
        self._in_literal = False
        self._awaiting_grant: Line | None = None
        self._after_literal = False

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            # Everything before was consumed (the usual case): frame these bytes where they are.
            self._buf = bytes(data)
            self._pos = self._scan = 0
            return
        if not isinstance(buf, bytearray):
            buf = self._buf = bytearray(memoryview(buf)[pos:])
            self._scan -= pos
            self._pos = 0
        elif pos >= len(buf) // 2:
            del buf[:pos]
            self._scan -= pos
            self._pos = 0
        buf += data

    def clear(self) -> int:
        """Discard every buffered byte (STARTTLS: nothing sent before the handshake is trusted).

        Returns how many bytes were dropped.
        """
        dropped = len(self._buf) - self._pos
        self._buf = b""
        self._pos = self._scan = 0
        self._in_literal = False
        self._literal_left = 0
        self._awaiting_grant = None
        self._after_literal = False
        return dropped

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    # -- synchronizing literals -------------------------------------------------------------------

    @property
    def awaiting_grant(self) -> bool:
        return self._awaiting_grant is not None

    def grant_literal(self) -> None:
        """The peer was told to send the literal announced by the last fragment ("+" was sent)."""
        line = self._awaiting_grant
        assert line is not None and line.literal is not None
        self._awaiting_grant = None
        self._start_literal(line.literal)

    def refuse_literal(self) -> None:
        """The literal will not come (the command was refused); the next bytes are a new line."""
        self._awaiting_grant = None
        self._after_literal = False

    # -- output ----------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        if self._awaiting_grant is not None:
            return None
        if self._in_literal:
            return self._next_literal_chunk()
        return self._next_line()

    def take_whole_literal(self) -> bytes | None:
        """The literal just announced, at once, when all of it is buffered; else None.

        What ``next_event`` would return as one last chunk (a consumer that has nothing to do
        per chunk saves the event); with None, the literal comes in chunks as usual."""
        if not self._in_literal or self._awaiting_grant is not None:
            return None
        pos, left = self._pos, self._literal_left
        if len(self._buf) - pos < left:
            return None
        buf = self._buf
        data = buf[pos : pos + left] if type(buf) is bytes else bytes(memoryview(buf)[pos : pos + left])
        self._pos = self._scan = pos + left
        self._literal_left = 0
        self._in_literal = False
        return data

    def peek_line(self) -> bytes | None:
        """The next line fragment, without consuming it, when it is whole in the buffer and
        starts a logical line (no literal in progress or just ended); else None. A consumer
        that handles it in place takes it with ``take_line``."""
        if self._in_literal or self._awaiting_grant is not None or self._after_literal:
            return None
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", max(pos, self._scan)) + 1
        if end == 0 or end - pos > self.max_line:
            return None
        data = buf[pos:end]
        return data if type(data) is bytes else bytes(data)

    def take_line(self, line: bytes) -> bool:
        """Consume the next line fragment if it is exactly ``line`` (which carries no literal);
        what ``next_event`` would have returned is then known to the caller."""
        if (self._in_literal or self._awaiting_grant is not None or line.find(b"\n") != len(line) - 1
                or line.endswith(_MARKER_ENDS) or len(line) > self.max_line):
            return False
        pos = self._pos
        if not self._buf.startswith(line, pos):
            return False
        self._pos = self._scan = pos + len(line)
        self._after_literal = False
        return True

    def window(self) -> tuple[bytes, int] | None:
        """The buffer and the position of the next fragment, when it starts a logical line (no
        literal in progress or just ended); else None.

        For a consumer that frames a run of whole logical lines of a shape it knows itself (the
        FETCH responses of a header sync) and then moves past them with :meth:`advance`."""
        if self._in_literal or self._awaiting_grant is not None or self._after_literal:
            return None
        buf, pos = self._buf, self._pos
        if type(buf) is not bytes:
            buf = self._buf = bytes(memoryview(buf)[pos:])
            self._scan -= pos
            self._pos = pos = 0
        return buf, pos

    def advance(self, position: int) -> None:
        """Consume up to ``position`` of the buffer :meth:`window` returned. The caller vouches
        that these bytes are whole logical lines, each fragment at most ``max_line`` long and
        every literal one its policy allows: what ``next_event`` would have returned for them."""
        if position > self._pos:
            self._pos = self._scan = position

    def _start_literal(self, size: int) -> None:
        self._after_literal = True
        if size == 0:
            # An empty literal still produces one (empty, last) chunk so consumers see it end.
            self._in_literal = True
            self._literal_left = 0
        else:
            self._in_literal = True
            self._literal_left = size

    def _next_literal_chunk(self) -> LiteralChunk | None:
        available = len(self._buf) - self._pos
        if available == 0 and self._literal_left:
            return None
        take = min(available, self._literal_left)
        buf = self._buf
        # (a bytearray is copied once, through a view; a slice of it would be copied twice)
        chunk = buf[self._pos : self._pos + take] if type(buf) is bytes else \
            bytes(memoryview(buf)[self._pos : self._pos + take])
        self._pos += take
        self._scan = self._pos
        self._literal_left -= take
        last = self._literal_left == 0
        if last:
            self._in_literal = False
        return LiteralChunk(chunk, last)

    def _next_line(self) -> Line | None:
        buf, pos, scan = self._buf, self._pos, self._scan
        end = buf.find(b"\n", max(pos, scan)) + 1
        if end == 0:
            self._scan = len(buf)
            if len(buf) - pos > self.max_line:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            return None
        if end - pos > self.max_line:
            raise LineTooLong(f"line longer than {self.max_line} bytes")
        data = buf[pos:end]
        if type(data) is not bytes:
            data = bytes(data)
        self._pos = self._scan = end
        continued = self._after_literal
        self._after_literal = False
        if not data.endswith(_MARKER_ENDS):
            return Line(data, None, False, False, continued)  # the usual line: no literal
        line = self._frame(data, continued)
        if line.literal is not None:
            if line.sync and self.pause_on_sync_literal:
                self._awaiting_grant = line
                self._after_literal = True
            else:
                self._start_literal(line.literal)
        return line

    def _frame(self, data: bytes, continued: bool) -> Line:
        if not (self.literals_enabled and data.endswith(_MARKER_ENDS)):
            return Line(data, None, False, False, continued)
        brace = data.rfind(b"{")
        match = _LITERAL_MARKER.match(data, brace) if brace >= 0 else None
        if match is None:
            return Line(data, None, False, False, continued)
        if self.literal_policy is not None and not continued and not self.literal_policy(data):
            return Line(data, None, False, False, continued)
        binary = brace > 0 and data[brace - 1] == 0x7E  # ~{n}
        nonsync = bool(match.group(2))
        size = int(match.group(1))
        return Line(data, size, not nonsync, binary, continued)
