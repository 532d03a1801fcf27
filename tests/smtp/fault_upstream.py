"""A scripted SMTP upstream that misbehaves on purpose, for the no-loss tests.

Each transaction (from MAIL on) follows one :class:`Fault`, chosen by the test's ``plan`` callable:
accept, refuse at MAIL, RCPT or DATA, fail temporarily or permanently after the data, drop the
connection in the middle of the data or right after storing the message, or stall at RCPT or after
the data until the proxy gives up. It offers PIPELINING unless told not to and CHUNKING (BDAT) when told
to, so that both ways of relaying MAIL and the message are exercised. Messages it accepted are kept in ``stored`` (Message-ID -> count), under a
lock, so a test can compare what the client was told with what the upstream really holds.

Threads and blocking sockets on purpose: it runs beside the reactor, not on it.
"""

from __future__ import annotations

import enum
import re
import socketserver
import threading
from collections import Counter
from collections.abc import Callable
from typing import Self


class Fault(enum.Enum):
    ACCEPT = "accept"
    REFUSE_MAIL_TEMPORARILY = "451 at MAIL"
    REFUSE_RCPT = "550 at RCPT"
    REFUSE_DATA = "554 at DATA"
    TEMPORARY_AFTER_DATA = "451 after the data"
    PERMANENT_AFTER_DATA = "554 after the data"
    DROP_AT_MAIL = "connection dropped at MAIL"
    DROP_MID_DATA = "connection dropped in the middle of the data"
    DROP_AFTER_STORING = "message stored, connection dropped before the reply"
    STALL_AFTER_DATA = "no reply after the data"
    STALL_AT_RCPT = "no reply to RCPT"


_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:\s*(<[^>\r\n]+>)")


class _Session(socketserver.StreamRequestHandler):
    server: FaultUpstream
    # replies to pipelined commands go out one write each, as soon as each is known
    disable_nagle_algorithm = True

    def reply(self, text: bytes) -> None:
        self.wfile.write(text + b"\r\n")

    def handle(self) -> None:
        upstream = self.server
        fault = Fault.ACCEPT
        self.reply(b"220 fault.test ESMTP")
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.reply(b"250-fault.test\r\n"
                           + (b"250-PIPELINING\r\n" if upstream.pipelining else b"")
                           + (b"250-CHUNKING\r\n" if upstream.chunking else b"")
                           + b"250-SIZE 10000000\r\n250-8BITMIME\r\n"
                           b"250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8")
            elif verb == b"AUTH":
                self.reply(b"235 2.7.0 Authentication successful")
                if upstream.hang_up_after_login:
                    # what Postfix does when its smtpd_timeout expires: say so, unasked, and go
                    self.reply(b"421 4.4.2 fault.test Error: timeout exceeded")
                    return
            elif verb == b"MAIL":
                fault = upstream.plan()
                upstream.faults[fault] += 1
                if fault is Fault.DROP_AT_MAIL:
                    return
                if fault is Fault.REFUSE_MAIL_TEMPORARILY:
                    self.reply(b"451 4.3.0 sender check unavailable")
                    fault = Fault.ACCEPT
                else:
                    self.reply(b"250 2.1.0 Ok")
            elif verb == b"RCPT":
                if fault is Fault.STALL_AT_RCPT:
                    self.rfile.read()  # until the proxy gives up and closes
                    return
                self.reply(b"550 5.1.1 no such user" if fault is Fault.REFUSE_RCPT else b"250 2.1.5 Ok")
            elif verb == b"DATA":
                if fault is Fault.REFUSE_DATA:
                    self.reply(b"554 5.5.1 no valid recipients")
                    continue
                self.reply(b"354 End data with <CR><LF>.<CR><LF>")
                if not self.data(fault):
                    return
            elif verb == b"BDAT":
                # RFC 3030: the chunk is read whatever the answer will be
                size = int(line.split()[1])
                if fault is Fault.DROP_MID_DATA:
                    self.rfile.read(size // 2)
                    return
                content = self.rfile.read(size)
                if not self.act(fault, content):
                    return
            elif verb == b"RSET":
                self.reply(b"250 2.0.0 Ok")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 Bye")
                return
            else:
                self.reply(b"250 2.0.0 Ok")

    def data(self, fault: Fault) -> bool:
        """Read the message and act out ``fault``; False when the connection must end."""
        lines = []
        while True:
            line = self.rfile.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
            if fault is Fault.DROP_MID_DATA and len(lines) == 3:
                return False
        return self.act(fault, b"".join(lines))

    def act(self, fault: Fault, content: bytes) -> bool:
        """The message is in: answer (or not) as ``fault`` says."""
        upstream = self.server
        if fault is Fault.STALL_AFTER_DATA:
            self.rfile.read()  # until the proxy gives up and closes
            return False
        if fault is Fault.TEMPORARY_AFTER_DATA:
            self.reply(b"451 4.3.0 queue file write error")
            return True
        if fault in (Fault.PERMANENT_AFTER_DATA, Fault.REFUSE_DATA):  # (REFUSE_DATA: after BDAT)
            self.reply(b"554 5.7.1 message content rejected")
            return True
        match = _MESSAGE_ID.search(content)
        with upstream.lock:
            upstream.stored[match.group(1).decode() if match else "?"] += 1
            upstream.contents.append(content)
        if fault is Fault.DROP_AFTER_STORING:
            return False
        self.reply(b"250 2.0.0 Ok: queued")
        return True


class FaultUpstream(socketserver.ThreadingTCPServer):
    """``with FaultUpstream(plan) as upstream:`` serves on ``upstream.port`` in a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, plan: Callable[[], Fault] = lambda: Fault.ACCEPT, *,
                 hang_up_after_login: bool = False, pipelining: bool = True,
                 chunking: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.plan = plan
        self.pipelining = pipelining
        self.chunking = chunking
        self.hang_up_after_login = hang_up_after_login
        self.lock = threading.Lock()
        self.stored: Counter[str] = Counter()
        self.contents: list[bytes] = []
        self.faults: Counter[Fault] = Counter()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
