"""A hostile-client's view of IMAP: raw bytes over TLS, every received byte kept.

Tests that must prove something never reached a client read :attr:`WireClient.received`, the
exact bytes the server sent, rather than what a client library chose to parse out of them.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
# Dovecot appends its timing to tagged answers: "OK Fetch completed (0.001 + 0.000 secs)."
_TIMING = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)")


def without_timing(line: bytes) -> bytes:
    return _TIMING.sub(b"", line)


#: Dovecot's IDLE keepalive (see WireClient.pending).
IDLE_KEEPALIVE = b"* OK Still here\r\n"


@dataclass
class Reply:
    """Everything one command brought back: untagged responses (literals inline) and the tagged one."""

    untagged: list[bytes]
    tagged: bytes

    @property
    def status(self) -> bytes:
        return self.tagged.split(b" ", 2)[1].upper()

    @property
    def ok(self) -> bool:
        return self.status == b"OK"

    def lines(self, keyword: bytes) -> list[bytes]:
        """Untagged responses whose keyword (after an optional number) is ``keyword``."""
        word = keyword.upper()
        found = []
        for line in self.untagged:
            parts = line.split(b" ", 3)
            if len(parts) > 1 and parts[1].upper() == word or len(parts) > 2 and parts[1].isdigit() and parts[2].upper().rstrip(b"\r\n") == word:
                found.append(line)
        return found

    def search(self) -> list[int]:
        numbers: list[int] = []
        for line in self.lines(b"SEARCH"):
            numbers.extend(int(n) for n in line.split()[2:] if n.isdigit())
        return numbers

    def fetch_uids(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines(b"FETCH")
                for m in [re.search(rb"\bUID (\d+)", line)] if m]

    @property
    def all(self) -> bytes:
        return b"".join(self.untagged) + self.tagged


class WireClient:
    """One IMAP connection, spoken byte by byte; ``received`` holds every byte the server sent."""

    def __init__(self, port: int, ca_pem: Path, *, host: str = "localhost", timeout: float = 20) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        context = ssl.create_default_context(cafile=str(ca_pem))
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.received = bytearray()
        self._buffer = b""
        self._counter = 0
        self.greeting = self.read_response()

    # -- reading -----------------------------------------------------------------------------------

    def _more(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("server closed the connection")
        self.received += data
        self._buffer += data

    def read_response(self) -> bytes:
        """One response: a line and any literals it announces, up to its final CRLF."""
        out = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._more()
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            out += line + b"\r\n"
            match = _LITERAL.search(line)
            if match is None:
                return out
            size = int(match.group(1))
            while len(self._buffer) < size:
                self._more()
            out += self._buffer[:size]
            self._buffer = self._buffer[size:]

    def pending(self, wait: float = 0.3) -> list[bytes]:
        """Responses the server sends unasked within ``wait`` seconds (IDLE pushes), without
        Dovecot's IDLE keepalive: it runs on a per-user clock (``imap_idle_notify_interval``,
        aligned to a hash of the user), not on mail, so it may come in any window."""
        responses = []
        self.sock.settimeout(wait)
        try:
            while True:
                if b"\r\n" not in self._buffer:
                    self._more()
                while b"\r\n" in self._buffer:
                    responses.append(self.read_response())
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(20)
        return [response for response in responses if response != IDLE_KEEPALIVE]

    def wait_for(self, *expected: bytes, timeout: float = 20.0, settle: float = 0.3) -> list[bytes]:
        """The unasked responses up to the first moment every one of ``expected`` has arrived,
        plus what follows within ``settle`` seconds.

        For pushes that are sure to come: Dovecot holds IDLE notifications back for half a
        second, so a fixed window around them has little margin on a loaded machine."""
        deadline = time.monotonic() + timeout
        responses: list[bytes] = []
        while not all(line in responses for line in expected):
            assert time.monotonic() < deadline, (expected, responses)
            responses += self.pending(0.2)
        return responses + self.pending(settle)

    # -- writing -----------------------------------------------------------------------------------

    def tag(self) -> bytes:
        self._counter += 1
        return b"t%d" % self._counter

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def finish(self, tag: bytes) -> Reply:
        untagged = []
        while True:
            response = self.read_response()
            if response.startswith(tag + b" "):
                return Reply(untagged, response)
            untagged.append(response)

    def command(self, text: str | bytes) -> Reply:
        tag = self.tag()
        self.send(tag + b" " + (text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.finish(tag)

    def login(self, user: str, password: str) -> Reply:
        reply = self.command(f"LOGIN {user} {password}")
        assert reply.ok, reply
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
