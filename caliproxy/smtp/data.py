"""Reading the message after DATA: finding ``CRLF . CRLF`` in whole chunks and undoing dot-stuffing.

aiosmtpd reads DATA one line at a time in Python, which costs more than the relay itself for large
messages (a 25 MB attachment is ~340,000 base64 lines). :class:`DataFramer` works on whatever chunks
arrive with ``bytes.find`` and ``bytes.replace`` only (no per-line Python work), keeps
at most ``limit`` bytes, and hands back what followed the terminator (pipelined commands).

RFC 5321 §4.5.2: the data ends with a line holding a single "."; the sender doubled the first "."
of every other line starting with one; the receiver removes it. Only CRLF ends a line.

Pure module: standard library only; no sockets, no event loop.
"""

from __future__ import annotations

_END = b"\r\n.\r\n"


class DataFramer:
    """Feed the bytes that follow the 354 reply; :meth:`feed` says when the data ended."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        # The data starts as if after a CRLF, so that an immediate ".CRLF" ends it too; the
        # virtual CRLF is dropped with everything else once the data is too big to keep.
        self._buffer = bytearray(b"\r\n")
        self._prefix = 2
        self._dropped = 0
        self._searched = 0
        self.too_big = False
        self.done = False

    @property
    def received(self) -> int:
        """Bytes of data received (as stuffed on the wire), the terminator excluded once found."""
        return self._dropped + len(self._buffer) - self._prefix

    def feed(self, chunk: bytes) -> bytes | None:
        """Add received bytes; once the terminator is found, return the bytes that followed it
        (possibly empty), else None. Past the limit, bytes are counted, not kept."""
        assert not self.done
        self._buffer += chunk
        at = self._buffer.find(_END, self._searched)
        if at < 0:
            # look again from just before the end: the terminator may straddle two chunks
            self._searched = max(len(self._buffer) - len(_END) + 1, 0)
            self._bound()
            return None
        self.done = True
        rest = bytes(self._buffer[at + len(_END):])
        del self._buffer[at + 2:]  # keep the CRLF that ends the last line
        if self.limit is not None and self.received > self.limit:
            self.too_big = True
        return rest

    def _bound(self) -> None:
        if self.limit is None:
            return
        # up to 3 of the last bytes may still turn out to be the terminator's ".CR"
        if self.received - 3 > self.limit:
            self.too_big = True
        tail = len(_END) - 1  # what a terminator straddling the next chunk needs
        if self.too_big and len(self._buffer) - self._prefix > tail:
            drop = len(self._buffer) - tail
            self._dropped += drop - self._prefix
            self._prefix = 0
            del self._buffer[:drop]
            self._searched = 0

    def content(self) -> bytes:
        """The message as the client meant it: the dot-stuffing undone, CRLF-terminated lines."""
        assert self.done and not self.too_big
        # each line starting with "." loses its first dot; thanks to the virtual CRLF in front,
        # the first line is treated like the others. One copy of the message when no line
        # starts with ".", as in most messages.
        if self._buffer.find(b"\r\n.") < 0:
            return bytes(memoryview(self._buffer)[2:])
        return bytes(self._buffer).replace(b"\r\n.", b"\r\n")[2:]
