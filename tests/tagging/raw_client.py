"""A raw IMAP client for the tagging tests: sends command lines, returns the server's bytes as
they came (literals included) up to the tagged completion, so responses can be compared byte for
byte between Dovecot itself and caliproxy."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Self

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class RawImap:
    def __init__(self, port: int, ca_pem: Path, *, host: str = "localhost", timeout: float = 30) -> None:
        context = ssl.create_default_context(cafile=str(ca_pem))
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(sock, server_hostname=host)
        self.buffer = b""
        self.counter = 0
        self.greeting = self._line()

    def close(self) -> None:
        try:
            self.command(b"LOGOUT")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError(f"connection closed; so far: {self.buffer[-300:]!r}")
        self.buffer += data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, tag: bytes) -> tuple[bytes, bytes]:
        """(untagged bytes, tagged line) of the command tagged ``tag``."""
        out = []
        while True:
            line = self._line()
            while (literal := _LITERAL.search(line)) is not None:
                out.append(line)
                out.append(self._exact(int(literal.group(1))))
                line = self._line()
            if line.startswith(tag + b" "):
                return b"".join(out), line
            out.append(line)

    def command(self, text: bytes | str, *, ok: bool = True) -> bytes:
        """Send one command; return its untagged responses; assert OK unless ``ok`` is False."""
        if isinstance(text, str):
            text = text.encode()
        self.counter += 1
        tag = b"T%d" % self.counter
        self.send(tag + b" " + text + b"\r\n")
        untagged, tagged = self.read_until(tag)
        if ok:
            assert tagged.startswith(tag + b" OK"), (text, tagged, untagged[-500:])
        return untagged

    def login(self, user: str = "alice", password: str = "alicepw") -> None:
        self.command(f"LOGIN {user} {password}")
