"""Our SMTP client connection to the upstream submission server (IO shell).

One :class:`UpstreamSession` per client connection: it connects (implicit TLS, STARTTLS or
plain, certificates verified by Twisted/pyOpenSSL with ``tls.client_options``), reads the
greeting, says EHLO, logs in with the client's credentials, and then carries that client's
transactions one command at a time. Every wait is bounded by a timeout; a timeout, a lost
connection or a reply that breaks the protocol raises :class:`UpstreamFailure`, after which the
session is closed for good (its state is unknown, so nothing more is sent on it).

Twisted does the IO and TLS; the handler coroutines await it on the same asyncio loop: the
connection through ``Deferred.asFuture``, each reply through a plain asyncio future with an
asyncio timer (a Deferred, its future and a Twisted timer per reply cost more than the reply's
own parsing). What to send and what a reply means belong to ``caliproxy.smtp``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from caliproxy.errors import ServerProtocolError
from caliproxy.net.imap_proxy import describe_failure
from caliproxy.net.tcp import no_delay
from caliproxy.smtp.commands import Credentials, auth_login_steps, auth_plain_command
from caliproxy.smtp.extensions import Extensions
from caliproxy.smtp.message import dot_stuff
from caliproxy.smtp.relay import is_final
from caliproxy.smtp.replies import Reply, ReplyParser


class UpstreamFailure(Exception):
    """The upstream could not be reached, went away, stalled or broke the protocol. Whatever was
    in progress did not complete as far as we know: the client must be told 4xx."""


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and how to reach the upstream submission server."""

    host: str
    port: int
    tls: str  # implicit | starttls | none
    tls_options: Any  # IOpenSSLClientConnectionCreator; None for tls: none
    connect_timeout: float


@dataclass(frozen=True)
class UpstreamTimeouts:
    """How long to wait for each upstream reply, in seconds.

    RFC 5321 §4.5.3.2 allows a server minutes per step; we give up sooner, because the client is
    waiting on us with its own timeout (Thunderbird: 100 s) and must hear a 4xx from us before it
    gives up, or it cannot tell a lost message from a refused one.
    """

    greeting: float = 60.0
    command: float = 60.0
    data_start: float = 60.0
    data_end: float = 90.0


#: Above this, a message goes out in chunks of this size as the socket drains. One huge write
#: makes Twisted's send buffer copy the unsent rest again for every later write.
_WRITE_CHUNK = 256 * 1024


@implementer(IPullProducer)
class _ChunkSender:
    """Writes ``parts`` to ``transport`` a chunk at a time, each when the previous one is sent."""

    def __init__(self, transport: Any, write: Any, parts: Sequence[bytes]) -> None:
        self.transport = transport
        self.write = write
        self.parts = deque(memoryview(part) for part in parts if part)

    def start(self) -> None:
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        budget = _WRITE_CHUNK
        while self.parts and budget > 0:
            part = self.parts.popleft()
            if len(part) > budget:
                self.parts.appendleft(part[budget:])
                part = part[:budget]
            self.write(bytes(part))
            budget -= len(part)
        if not self.parts:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.parts.clear()


class _UpstreamProtocol(Protocol):
    """Bytes from the upstream become replies, handed to at most one waiting command.

    Every reply must answer something we sent (the greeting answers the connection): one that
    answers nothing (a "421 timeout" before the upstream hangs up, or garbage) would otherwise be
    taken as the reply to our next command, so it ends the connection instead.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = ReplyParser()
        self.replies: deque[Reply] = deque()
        self.waiter: asyncio.Future[Reply] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.lost: str | None = None
        self.expected = 1  # the greeting
        self._write: Any = None

    def connectionMade(self) -> None:
        no_delay(self.transport)  # commands are small writes that wait for their reply
        self._write = self._writer()

    def _writer(self) -> Any:
        """How to write: straight into the TLS layer when there is one.

        Twisted's TLS transport (``BufferingTLSTransport``) holds small writes until the next
        reactor turn, to join them into one record; we write each command batch, or the
        message, in one piece already, and every turn of waiting adds to each round trip. Its
        base class's ``write`` encrypts and sends at once."""
        transport = self.transport
        if getattr(transport, "TLS", False):  # after STARTTLS: the TLS layer is its protocol
            transport = getattr(transport, "protocol", None)
        if isinstance(transport, TLSMemoryBIOProtocol):
            return lambda data: TLSMemoryBIOProtocol.write(transport, data)
        return self.transport.write  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.receive_data(data)
        except ServerProtocolError as exc:
            self.abort(f"upstream broke the protocol: {exc}")
            return
        for reply in replies:
            if self.expected == 0:
                self.abort(f"upstream sent {reply.code} unasked")
                return
            self.expected -= 1
            self.replies.append(reply)
            self._deliver()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = self.lost or _reason(reason)
        self._fail(UpstreamFailure(self.lost))

    def next_reply(self, timeout: float) -> asyncio.Future[Reply]:
        """The next reply, now or within ``timeout`` seconds (else UpstreamFailure)."""
        waiter = self.loop.create_future()
        if self.replies:
            waiter.set_result(self.replies.popleft())
            return waiter
        if self.lost is not None:
            waiter.set_exception(UpstreamFailure(self.lost))
            return waiter
        assert self.waiter is None, "one command at a time"
        self.waiter = waiter
        waiter.add_done_callback(self._abandoned)
        self.timer = self.loop.call_later(timeout, self.abort, f"upstream silent for {timeout:g} s")
        return waiter

    def _abandoned(self, waiter: asyncio.Future[Reply]) -> None:
        # the command waiting for this reply was cancelled (its client went away): what the
        # upstream does with it is unknown now, so the connection cannot be used again
        if waiter.cancelled():
            self.waiter = None
            self.abort("upstream connection abandoned")

    def send(self, data: bytes, *more: bytes, replies: int = 1) -> None:
        """Send a command line (or the message data, or BDAT and its chunk), or ``replies``
        pipelined command lines, in one write: that many replies are due for it."""
        if self.lost is None:
            self.expected += replies
            if len(data) + sum(len(part) for part in more) <= _WRITE_CHUNK:
                self._write(b"".join((data, *more)) if more else data)
            else:
                _ChunkSender(self.transport, self._write, (data, *more)).start()

    def start_tls(self, options: Any) -> None:
        # Anything the upstream sent after its 220 to STARTTLS arrived in clear: reading it as
        # part of the TLS session would let a man in the middle inject replies (RFC 3207 §6).
        if self.parser.pending or self.replies:
            self.abort("upstream sent data before the TLS handshake")
            raise UpstreamFailure("upstream sent data before the TLS handshake")
        self.transport.startTLS(options)  # type: ignore[union-attr]
        self._write = self._writer()

    def abort(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        self._fail(UpstreamFailure(self.lost))
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _deliver(self) -> None:
        if self.waiter is not None and self.replies:
            waiter, self.waiter = self.waiter, None
            self._cancel_timer()
            if not waiter.done():
                waiter.set_result(self.replies.popleft())

    def _fail(self, exc: UpstreamFailure) -> None:
        self._cancel_timer()
        if self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_exception(exc)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None


def _reason(failure: Failure) -> str:
    described = describe_failure(failure)
    if described.startswith("upstream"):
        return described
    if described.startswith("connection "):
        return f"upstream {described}"
    return f"upstream connection {described}"


class UpstreamSession:
    """One logged-in (or about to be) connection to the upstream, used by one client."""

    def __init__(self, target: UpstreamTarget, timeouts: UpstreamTimeouts, reactor: Any,
                 loop: asyncio.AbstractEventLoop, helo_name: str) -> None:
        self.target = target
        self.timeouts = timeouts
        self.reactor = reactor
        self.loop = loop
        self.helo_name = helo_name
        self.extensions = Extensions()
        self._protocol: _UpstreamProtocol | None = None
        self._broken: str | None = None

    @property
    def tls(self) -> bool:
        return self.target.tls != "none"

    @property
    def usable(self) -> bool:
        return self._protocol is not None and self._protocol.lost is None and self._broken is None

    async def open(self) -> Extensions:
        """Connect, read the greeting, EHLO (and STARTTLS, EHLO again); return the extensions."""
        target = self.target
        endpoint: Any = (endpoints.TCP6ClientEndpoint if ":" in target.host
                         else endpoints.TCP4ClientEndpoint)(
            self.reactor, target.host, target.port, timeout=target.connect_timeout)
        if target.tls == "implicit":
            endpoint = endpoints.wrapClientTLS(target.tls_options, endpoint)
        protocol = _UpstreamProtocol(self.loop)
        try:
            await self._wait(endpoints.connectProtocol(endpoint, protocol))
        except UpstreamFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - any connect failure (refused, DNS, TLS) is one
            raise UpstreamFailure(_reason(Failure(exc))) from None
        self._protocol = protocol
        greeting = await self._reply(self.timeouts.greeting)
        if greeting.code != 220:
            self.close()
            raise UpstreamFailure(f"upstream greeted with {greeting.code}")
        extensions = await self._ehlo()
        if target.tls == "starttls":
            if not extensions.has("STARTTLS"):
                self.close()
                raise UpstreamFailure("upstream does not offer STARTTLS")
            reply = await self.command(b"STARTTLS")
            if reply.code != 220:
                self.close()
                raise UpstreamFailure(f"upstream refused STARTTLS with {reply.code}")
            protocol.start_tls(target.tls_options)
            extensions = await self._ehlo()
        self.extensions = extensions
        return extensions

    async def command(self, line: bytes, timeout: float | None = None) -> Reply:
        """Send one command line and return its final reply."""
        protocol = self._require()
        protocol.send(line + b"\r\n")
        reply = await self._reply(self.timeouts.command if timeout is None else timeout)
        if not is_final(reply) and not line.startswith((b"AUTH", b"DATA")):
            self._break(f"replied {reply.code} to a command that takes no continuation")
        return reply

    async def login(self, credentials: Credentials) -> Reply:
        """Log in with the client's credentials (PLAIN with initial response, else LOGIN)."""
        mechanism = self.extensions.upstream_mechanism()
        if mechanism == "PLAIN":
            reply = await self.command(auth_plain_command(credentials))
        else:
            first, password = auth_login_steps(credentials)
            reply = await self.command(first)
            if reply.code == 334:
                reply = await self.command(password)
        if reply.intermediate:
            # a challenge we did not expect: cancel the exchange (RFC 4954 §4) and call it failed
            reply = await self.command(b"*")
            if reply.intermediate:
                self._break("kept challenging after AUTH was cancelled")
            return Reply.of(535, "5.7.8 Authentication failed")
        return reply

    async def pipeline(self, lines: list[bytes]) -> list[Reply]:
        """Send several command lines in one write (the upstream offers PIPELINING, RFC 2920) and
        return their replies in order."""
        protocol = self._require()
        protocol.send(b"".join(line + b"\r\n" for line in lines), replies=len(lines))
        replies = []
        for _ in lines:
            reply = await self._reply(self.timeouts.command)
            if not is_final(reply):
                self._break(f"replied {reply.code} to a command that takes no continuation")
            replies.append(reply)
        return replies

    async def send_message(self, parts: Sequence[bytes]) -> tuple[Reply, float]:
        """The message and the upstream's final reply; also the seconds it took.

        With CHUNKING (RFC 3030) it goes as one ``BDAT <size> LAST``: one round trip instead of
        DATA's two, and no dot-stuffing; otherwise DATA, 354 and the dot-stuffed message."""
        started = time.monotonic()
        if self.extensions.has("CHUNKING"):
            protocol = self._require()
            size = sum(len(part) for part in parts)
            protocol.send(b"BDAT %d LAST\r\n" % size, *parts)
            final = await self._reply(self.timeouts.data_end)
            if not is_final(final):
                self._break(f"replied {final.code} to BDAT")
            return final, time.monotonic() - started
        reply = await self.command(b"DATA", self.timeouts.data_start)
        if reply.code != 354:
            if reply.intermediate:
                self._break(f"replied {reply.code} to DATA")
            return reply, time.monotonic() - started
        protocol = self._require()
        protocol.send(dot_stuff(b"".join(parts)))
        final = await self._reply(self.timeouts.data_end)
        if not is_final(final):
            self._break(f"replied {final.code} to the end of data")
        return final, time.monotonic() - started

    def close(self) -> None:
        """Say QUIT without waiting for the answer, then close."""
        protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.transport is None:
            return
        if protocol.lost is None:
            protocol.send(b"QUIT\r\n")  # its reply is not read
            protocol.lost = "upstream connection closed by us"
        protocol.transport.loseConnection()

    # -- internals --------------------------------------------------------------------------

    async def _ehlo(self) -> Extensions:
        reply = await self.command(b"EHLO " + self.helo_name.encode("ascii", "replace"))
        if not reply.positive:
            self.close()
            raise UpstreamFailure(f"upstream refused EHLO with {reply.code}")
        return Extensions.parse(reply)

    async def _reply(self, timeout: float) -> Reply:
        protocol = self._require()
        if protocol.replies:  # the second of two pipelined replies is usually here already
            return protocol.replies.popleft()
        return await protocol.next_reply(timeout)

    async def _wait(self, deferred: defer.Deferred[Any]) -> Any:
        return await deferred.asFuture(self.loop)

    def _require(self) -> _UpstreamProtocol:
        if self._broken is not None:
            raise UpstreamFailure(f"upstream {self._broken}")
        if self._protocol is None:
            raise UpstreamFailure("upstream connection closed")
        return self._protocol

    def _break(self, why: str) -> None:
        self._broken = why
        if self._protocol is not None:
            self._protocol.abort(f"upstream {why}")
        raise UpstreamFailure(f"upstream {why}")
