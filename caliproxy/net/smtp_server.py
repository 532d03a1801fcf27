"""The SMTP submission listener: aiosmtpd on the shared asyncio loop, relaying to the upstream.

IO shell, on the one event loop of the process: aiosmtpd's ``SMTP`` protocol is served by
``loop.create_server`` on the asyncio loop under Twisted's asyncio reactor, from inside a Twisted
``Service`` (:class:`SubmissionListener`); aiosmtpd's threaded ``Controller`` is never used.

Per client connection: one :class:`SubmissionProtocol` (aiosmtpd's protocol, with enhanced status
codes on our own replies and an orderly close), one :class:`SubmissionHandler` (the hooks) and one
:class:`~caliproxy.net.smtp_upstream.UpstreamSession`, opened at the first EHLO so that what we
advertise is what the upstream can do, logged in with the client's own credentials at AUTH, and
reused for every transaction of that client. Every decision about what to relay and what a reply
means is in ``caliproxy.smtp``; this module moves bytes and awaits the upstream.

Round trips are what a relay costs, so: the message after DATA is read in whole chunks
(:class:`~caliproxy.smtp.data.DataFramer`, not aiosmtpd's line loop); with an upstream that offers
PIPELINING, MAIL FROM is answered here once its parameters are checked and goes upstream together
with the first RCPT TO, whose reply carries a refusal of the sender (as Postfix's default
``smtpd_delay_reject`` does); with CHUNKING the message goes upstream as one ``BDAT ... LAST``.
A recipient's reply and the final reply to the message are always the upstream's own.

Logs: peers, listener names, account names, reply codes, sizes and counts; never credentials,
addresses or message content. aiosmtpd's own logger ("mail.log") writes command lines and message
lines, so it is held at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, syntax
from twisted.application import service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address

from caliproxy.errors import ClientProtocolError
from caliproxy.net.smtp_upstream import (
    UpstreamFailure,
    UpstreamSession,
    UpstreamTarget,
    UpstreamTimeouts,
)
from caliproxy.smtp.commands import (
    CommandRefused,
    Credentials,
    decode_base64,
    mail_command,
    mail_parameters,
    parse_plain,
    rcpt_command,
    simple_path,
)
from caliproxy.smtp.data import DataFramer
from caliproxy.smtp.extensions import Offer, ehlo_reply, offer_for
from caliproxy.smtp.relay import (
    AUTH_UNAVAILABLE,
    MAIL_OK,
    NOT_PROCESSED,
    OK,
    QUIT_REPLY,
    SHUTTING_DOWN,
    UPSTREAM_LOST,
    UPSTREAM_UNAVAILABLE,
    ClientConnected,
    ClientDisconnected,
    LoginChecked,
    MessageRelayed,
    Outcome,
    outcome_of,
)
from caliproxy.smtp.replies import Reply, enhance
from caliproxy.smtp.tagging import SubmissionFacts, Tagger, tag_message

log = logging.getLogger("caliproxy.smtp")

# aiosmtpd logs each command line at INFO (MAIL FROM and RCPT TO addresses) and each message line
# at DEBUG, and warns at every connection of an implicit-TLS listener that AUTH is allowed without
# *its* STARTTLS. No credentials or content go to the logs, whatever the configured level.
logging.getLogger("mail.log").setLevel(logging.ERROR)

#: How much of the message to read at a time after DATA.
_DATA_CHUNK = 256 * 1024

#: The MAIL command line may grow by SIZE=, BODY= and SMTPUTF8 (RFC 1870 §6, RFC 6152, RFC 6531).
_MAIL_LINE_LIMIT = 512 + 26 + 14 + 10

Observer = Callable[[object], None]


def report(observer: Observer, event: object) -> None:
    """Hand ``event`` to ``observer``, which never breaks a relay or a listener by failing."""
    try:
        observer(event)
    except Exception:
        log.exception("smtp event observer failed")


@dataclass(frozen=True)
class SubmissionContext:
    """Everything a connection on one SMTP listener needs."""

    name: str
    address: str
    port: int
    tls: str  # implicit | starttls | none
    allow_plaintext: bool  # AUTH and MAIL before (or without) TLS
    ssl_context: ssl.SSLContext | None
    upstream: UpstreamTarget
    tagger: Tagger
    hostname: str
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    #: The largest message held in memory when the upstream declares no SIZE limit.
    max_message_size: int = 64 * 1024 * 1024
    #: RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
    client_timeout: float = 300.0

    @property
    def tls_required(self) -> bool:
        return self.tls != "implicit" and not self.allow_plaintext


class SubmissionProtocol(SMTP):
    """aiosmtpd's SMTP protocol for one client, with what a proxy needs on top."""

    def __init__(self, context: SubmissionContext, handler: SubmissionHandler,
                 loop: asyncio.AbstractEventLoop,
                 on_opened: Callable[[SubmissionProtocol], None],
                 on_closed: Callable[[SubmissionProtocol], None]) -> None:
        # aiosmtpd keeps these limits in a class-wide dict and grows it at every EHLO: keep ours
        # per connection and fixed.
        self.command_size_limits = defaultdict(lambda: SMTP.command_size_limit)
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": true of aiosmtpd's STARTTLS only; an
            # implicit-TLS connection is encrypted before the first byte.
            warnings.simplefilter("ignore")
            super().__init__(
                handler,
                data_size_limit=context.max_message_size,
                enable_SMTPUTF8=True,  # narrowed to what the upstream offers at EHLO
                decode_data=False,
                hostname=context.hostname,
                ident="ESMTP caliproxy",
                tls_context=context.ssl_context if context.tls == "starttls" else None,
                require_starttls=context.tls == "starttls" and not context.allow_plaintext,
                timeout=context.client_timeout,
                auth_required=True,  # never an open relay, whatever the upstream lets 127.0.0.1 do
                auth_require_tls=context.tls_required,
                auth_exclude_mechanism=(),
                loop=loop,
            )
        self.context = context
        self.handler = handler
        self._on_opened = on_opened
        self._on_closed = on_closed
        self.enhanced_codes = False
        self._close_after_reply = False
        self._busy = False
        self._shutdown = False
        self._connected = False
        self._gone = False
        self._idle_deadline = 0.0
        handler.server = self

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = not self._connected
        self._connected = True
        super().connection_made(transport)
        if first:
            # (an implicit-TLS connection gets here only once its handshake succeeded)
            self._on_opened(self)
            log.info("smtp connection from %s on %s", self.peer_address, self.context.name)

    def connection_lost(self, error: Exception | None) -> None:
        if self._gone or not self._connected:
            return  # aiosmtpd calls it itself after a failed STARTTLS, then asyncio again
        self._gone = True
        self.handler.connection_lost()
        log.info("smtp connection from %s on %s closed", self.peer_address, self.context.name)
        super().connection_lost(error)
        self._on_closed(self)

    def eof_received(self) -> bool:
        super().eof_received()  # (aiosmtpd cancels its command loop)
        # The client has closed its side: the dialogue is over, so the connection closes now.
        # Left open, it would wait for the idle timeout whenever the EOF came before the command
        # loop's first step (a client gone before the greeting; uvloop can deliver the connection
        # and its EOF in one pass): a loop cancelled before it started never closes anything.
        return False

    @property
    def peer_address(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "?"

    @property
    def tls_version(self) -> str | None:
        """The TLS version of the client connection now, or None in clear."""
        if self.transport is None:
            return None
        ssl_object = None
        if self.context.tls == "implicit":
            ssl_object = self.transport.get_extra_info("ssl_object")
        elif self.session is not None and self.session.ssl:
            ssl_object = self.session.ssl.get("ssl_object")
        return ssl_object.version() if ssl_object is not None else None

    @property
    def auth_allowed_now(self) -> bool:
        return not self.context.tls_required or self.tls_version is not None

    @property
    def starttls_offered(self) -> bool:
        return self.context.tls == "starttls" and self._tls_protocol is None

    def close_after_reply(self) -> None:
        """Close the connection once the reply now being returned has been written."""
        self._close_after_reply = True

    def shutdown(self) -> None:
        """The proxy stops: an idle client hears 421 now, a busy one after its current reply."""
        self._shutdown = True
        if not self._busy and self.transport is not None:
            self._write_final(SHUTTING_DOWN)

    # -- replies ----------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        data = status.encode("utf-8", "surrogateescape") if isinstance(status, str) else status
        if self.enhanced_codes:
            data = enhance(data)
        await super().push(data)
        if self._close_after_reply or (self._shutdown and not self._busy):
            self._close_after_reply = False
            if self._shutdown:
                self._write_final(SHUTTING_DOWN)
            elif self.transport is not None:
                self.transport.close()

    def _write_final(self, reply: Reply) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(reply.render() + b"\r\n")  # type: ignore[attr-defined]
        self.transport.close()

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels its idle timer and makes a new one at every command (and we at every
        # chunk of a message); moving a deadline is cheaper, and the timer, when it fires early,
        # waits for the rest.
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._idle_deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)
        else:
            self._timeout_cb()  # (the spent handle stays: aiosmtpd cancels it at connection_lost)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own defines a class and runs the RFC 5322 parser at every MAIL and RCPT
        # (about a tenth of a millisecond each); the common <local@domain> form is read here
        # with the same result, anything else still by aiosmtpd.
        if self.local_part_limit == 0:
            simple = simple_path(arg)
            if simple is not None:
                return simple
        return super()._getaddr(arg)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        # RFC 2034 §3: the EHLO reply itself carries no enhanced codes
        self.enhanced_codes = False
        await super().smtp_EHLO(hostname)
        offer = self.handler.offer
        self.enhanced_codes = bool(offer and offer.enhanced_status_codes)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self.enhanced_codes = False
        await super().smtp_HELO(hostname)

    # aiosmtpd's dispatcher awaits one command at a time: mark the time a command waits on the
    # upstream, so that a shutdown lets it finish and tell the client the outcome.
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._busy_while(super().smtp_MAIL(arg))

    @syntax("RCPT TO: <address>")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._busy_while(super().smtp_RCPT(arg))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        await self._busy_while(self._data(arg))

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, reading whole chunks instead of one line at a time (DataFramer).

        Lines longer than RFC 5321's 1000 octets are left for the upstream to judge, as it would
        for a direct client; the size limit is ours (the upstream's minus our header)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        framer = DataFramer(self.data_size_limit or None)
        # aiosmtpd's reader pauses the socket beyond two command lines buffered; for the data,
        # let whole TLS records and socket reads through
        reader: Any = self._reader
        command_limit, reader._limit = reader._limit, _DATA_CHUNK
        try:
            while True:
                chunk = await reader.read(_DATA_CHUNK)
                if not chunk:
                    return  # the client went away: nothing to answer, nothing relayed
                self._reset_timeout()  # a slow upload is not an idle client
                rest = framer.feed(chunk)
                if rest is not None:
                    break
        finally:
            reader._limit = command_limit
        if rest:
            # pipelined commands that followed the data: give them back to aiosmtpd's reader
            self._reader._buffer[0:0] = rest  # type: ignore[attr-defined]
        if framer.too_big:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        content = framer.content()
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        await self._busy_while(super().smtp_AUTH(arg))

    async def _busy_while(self, command: Any) -> None:
        self._busy = True
        try:
            await command
        finally:
            self._busy = False
        if self._shutdown:
            self._write_final(SHUTTING_DOWN)


class SubmissionHandler:
    """aiosmtpd hooks for one client connection: each one relays to the upstream session."""

    def __init__(self, context: SubmissionContext, reactor: Any, loop: asyncio.AbstractEventLoop,
                 observer: Observer) -> None:
        self.context = context
        self.reactor = reactor
        self.loop = loop
        self.observer = observer
        self.server: SubmissionProtocol | None = None
        self.upstream: UpstreamSession | None = None
        self.offer: Offer | None = None
        self.account: str | None = None
        self.in_transaction = False
        #: MAIL FROM accepted from the client, to go upstream with the first RCPT
        self.pending_mail: bytes | None = None
        self._opening: asyncio.Future[Offer | None] | None = None

    # -- greeting: open the upstream --------------------------------------------------------

    async def _open_upstream(self) -> Offer | None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect(), loop=self.loop)
        return await asyncio.shield(self._opening)

    async def _connect(self) -> Offer | None:
        upstream = UpstreamSession(self.context.upstream, self.context.timeouts, self.reactor,
                                   self.loop, self.context.hostname)
        try:
            extensions = await upstream.open()
        except UpstreamFailure as exc:
            log.warning("smtp upstream %s:%d unavailable for %s on %s: %s", self.context.upstream.host,
                        self.context.upstream.port, self._peer(), self.context.name, exc)
            upstream.close()
            return None
        self.upstream = upstream
        self.offer = offer_for(extensions, header_length=self.context.tagger.header_length,
                               max_message_size=self.context.max_message_size)
        return self.offer

    async def handle_EHLO(self, server: SubmissionProtocol, session: Any, envelope: Any,
                          hostname: str, responses: list[str]) -> list[str]:
        offer = await self._open_upstream()
        if offer is None or not self._usable():
            server.close_after_reply()
            return [str(UPSTREAM_UNAVAILABLE)]
        await self._end_transaction()
        session.host_name = hostname
        server.data_size_limit = offer.size_limit
        server.enable_SMTPUTF8 = offer.smtputf8
        server.command_size_limits["MAIL"] = _MAIL_LINE_LIMIT
        keywords = offer.keywords(starttls=server.starttls_offered, auth_now=server.auth_allowed_now)
        return ehlo_reply(self.context.hostname, keywords)

    async def handle_HELO(self, server: SubmissionProtocol, session: Any, envelope: Any,
                          hostname: str) -> str:
        offer = await self._open_upstream()
        if offer is None or not self._usable():
            server.close_after_reply()
            return str(UPSTREAM_UNAVAILABLE)
        await self._end_transaction()
        session.host_name = hostname
        server.data_size_limit = offer.size_limit
        server.enable_SMTPUTF8 = False
        return f"250 {self.context.hostname}"

    # -- AUTH: checked by logging in upstream -----------------------------------------------

    async def auth_PLAIN(self, server: SubmissionProtocol, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)  # aiosmtpd already said 501
        else:
            try:
                blob = decode_base64(args[1])
            except ClientProtocolError:
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        try:
            credentials = parse_plain(blob)
        except ClientProtocolError:
            await server.push("501 5.5.2 Malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._login(server, credentials)

    async def auth_LOGIN(self, server: SubmissionProtocol, args: list[str]) -> AuthResult:
        if len(args) == 1:
            user = await server.challenge_auth("Username:")
            if user is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                user = decode_base64(args[1])
            except ClientProtocolError:
                await server.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._login(server, Credentials(user=user, password=password))

    async def _login(self, server: SubmissionProtocol, credentials: Credentials) -> AuthResult:
        if self.upstream is None or self.offer is None or not self.offer.auth:
            return AuthResult(success=False, handled=False, message=str(AUTH_UNAVAILABLE))
        # The credentials go to the upstream once and are not kept: only the account name stays.
        account = credentials.account
        try:
            reply = await self.upstream.login(credentials)
        except UpstreamFailure as exc:
            self._report(LoginChecked(self.context.name, Outcome.LOST, 421))
            return AuthResult(success=False, handled=False,
                              message=self._lost(server, exc).decode("ascii"))
        self._report(LoginChecked(self.context.name, outcome_of(reply), reply.code))
        if reply.positive:
            self.account = account
            log.info("smtp connection from %s on %s authenticated as %r", self._peer(),
                     self.context.name, self.account)
            return AuthResult(success=True, handled=False, auth_data=self.account,
                              message=reply.render().decode("utf-8", "replace"))
        log.info("smtp connection from %s on %s: authentication refused upstream (%d)", self._peer(),
                 self.context.name, reply.code)
        return AuthResult(success=False, handled=False, message=reply.render().decode("utf-8", "replace"))

    # -- the transaction --------------------------------------------------------------------

    async def handle_MAIL(self, server: SubmissionProtocol, session: Any, envelope: Any,
                          address: str, mail_options: list[str]) -> str | bytes:
        if self.upstream is None or not self._usable():
            return self._lost(server, UpstreamFailure("not connected"))
        try:
            parameters = mail_parameters(mail_options, upstream=self.upstream.extensions,
                                         header_length=self.context.tagger.header_length)
            line = mail_command(address, parameters)
        except CommandRefused as exc:
            return exc.reply.render()
        if self.upstream.extensions.has("PIPELINING"):
            # Sent upstream together with the first RCPT: one round trip instead of two. A refusal
            # of the sender is then told at RCPT, as Postfix itself does by default
            # (smtpd_delay_reject); the parameters were already checked here.
            self.pending_mail = line
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return MAIL_OK.render()
        try:
            reply = await self.upstream.command(line)
        except UpstreamFailure as exc:
            return self._lost(server, exc)
        if reply.positive:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            self.in_transaction = True
        return reply.render()

    async def handle_RCPT(self, server: SubmissionProtocol, session: Any, envelope: Any,
                          address: str, rcpt_options: list[str]) -> str | bytes:
        if self.upstream is None or not self._usable():
            return self._lost(server, UpstreamFailure("not connected"))
        try:
            line = rcpt_command(address)
        except CommandRefused as exc:
            return exc.reply.render()
        try:
            if self.pending_mail is not None:
                sender, reply = await self.upstream.pipeline([self.pending_mail, line])
                if not sender.positive:
                    # the upstream refused the sender: that is this recipient's answer (and the
                    # next RCPT tries MAIL again)
                    return sender.render()
                self.pending_mail = None
                self.in_transaction = True
            else:
                reply = await self.upstream.command(line)
        except UpstreamFailure as exc:
            return self._lost(server, exc)
        if reply.positive:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply.render()

    async def handle_DATA(self, server: SubmissionProtocol, session: Any, envelope: Any) -> str | bytes:
        if self.upstream is None or not self._usable():
            return self._lost(server, UpstreamFailure("not connected"))
        raw: bytes = envelope.original_content
        options = {option.partition("=")[0]: option.partition("=")[2] for option in envelope.mail_options}
        facts = SubmissionFacts(
            listener=self.context.name,
            client_address=self._peer(),
            client_tls=server.tls_version is not None,
            client_tls_version=server.tls_version,
            account=self.account or "",
            upstream_tls=self.upstream.tls,
            mail_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            eight_bit=options.get("BODY") == "8BITMIME",
            smtputf8="SMTPUTF8" in options,
        )
        try:
            tagged = tag_message(raw, self.context.tagger, facts)
        except Exception as exc:  # noqa: BLE001 - the privacy engine must never take the relay down
            log.error("smtp message from %s on %s not relayed: tagging failed (%s)", self._peer(),
                      self.context.name, type(exc).__name__)
            await self._end_transaction()
            return NOT_PROCESSED.render()
        level = tagged.level  # (read back from the header: once, not per use)
        try:
            reply, seconds = await self.upstream.send_message(tagged.parts)
        except UpstreamFailure as exc:
            self.in_transaction = False
            self._report(MessageRelayed(self.context.name, Outcome.LOST, 421, level, len(raw),
                                        len(facts.recipients), 0.0))
            return self._lost(server, exc)
        self.in_transaction = False
        self._report(MessageRelayed(self.context.name, outcome_of(reply), reply.code, level,
                                    len(raw), len(facts.recipients), seconds))
        log.info("smtp message from %s on %s: %d bytes, %d recipient(s), level %s, upstream %d "
                 "in %.3f s", self._peer(), self.context.name, len(raw), len(facts.recipients),
                 level or "-", reply.code, seconds)
        return reply.render()

    async def handle_RSET(self, server: SubmissionProtocol, session: Any, envelope: Any) -> str | bytes:
        if (self.in_transaction or self.pending_mail) and not await self._end_transaction():
            return self._lost(server, UpstreamFailure("RSET failed"))
        return OK.render()

    async def handle_QUIT(self, server: SubmissionProtocol, session: Any, envelope: Any) -> str | bytes:
        self.connection_lost()
        return QUIT_REPLY.render()

    async def handle_exception(self, error: Exception) -> str:
        # Never str(error): it may quote what the client sent.
        log.error("smtp connection from %s on %s: internal error %s", self._peer(), self.context.name,
                  type(error).__name__)
        if self.server is not None:
            self.server.close_after_reply()
        return "421 4.3.0 Internal error, try again later"

    def connection_lost(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    # -- internals --------------------------------------------------------------------------

    def _usable(self) -> bool:
        return self.upstream is not None and self.upstream.usable

    async def _end_transaction(self) -> bool:
        """RSET upstream if a transaction is open there; False when the upstream is gone."""
        self.pending_mail = None
        if not self.in_transaction:
            return True
        self.in_transaction = False
        if self.upstream is None:
            return False
        try:
            reply = await self.upstream.command(b"RSET")
        except UpstreamFailure:
            return False
        return reply.positive

    def _lost(self, server: SubmissionProtocol, exc: Exception) -> bytes:
        """The upstream session is gone: say 421 and close (the client reconnects and retries)."""
        log.warning("smtp connection from %s on %s: %s", self._peer(), self.context.name, exc)
        self.in_transaction = False
        self.pending_mail = None
        server.close_after_reply()
        self.connection_lost()
        return UPSTREAM_LOST.render()

    def _peer(self) -> str:
        return self.server.peer_address if self.server is not None else "?"

    def _report(self, event: object) -> None:
        report(self.observer, event)


class _BoundPort:
    """What the CLI and tests read from ``ProxyService.ports``: ``getHost()`` like a Twisted port."""

    def __init__(self, sock: socket.socket) -> None:
        host, port = sock.getsockname()[:2]
        self._address = (IPv6Address if sock.family == socket.AF_INET6 else IPv4Address)("TCP", host, port)

    def getHost(self) -> IPv4Address | IPv6Address:
        return self._address


def asyncio_loop(reactor: Any) -> asyncio.AbstractEventLoop:
    """The asyncio loop under Twisted's asyncio reactor (one loop for both)."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        raise RuntimeError("SMTP listeners need Twisted's asyncio reactor (caliproxy.cli.install_reactor)")
    return loop


class SubmissionListener(service.Service):
    """One SMTP listener: binds at start, serves aiosmtpd on the reactor's asyncio loop."""

    #: How long a stopping listener lets relays in progress finish before cutting them off.
    shutdown_grace = 10.0

    def __init__(self, context: SubmissionContext, reactor: Any, ports: dict[str, Any],
                 observer: Observer) -> None:
        self.context = context
        self.reactor = reactor
        self.name = context.name
        self.observer = observer
        self.connections: set[SubmissionProtocol] = set()
        self._ports = ports
        self._socket: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Future[Any] | None = None
        self._drained: defer.Deferred[None] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        super().startService()
        if self._socket is None:
            self._bind()
        loop = asyncio_loop(self.reactor)
        assert self._socket is not None
        implicit = self.context.ssl_context if self.context.tls == "implicit" else None
        self._starting = asyncio.ensure_future(
            loop.create_server(lambda: self._new_connection(loop), sock=self._socket, ssl=implicit),
            loop=loop)
        self._starting.add_done_callback(self._started)

    def _bind(self) -> None:
        # Bound synchronously, so that a port in use fails the start as it does for IMAP listeners;
        # connections that arrive before aiosmtpd serves wait in the backlog.
        family = socket.AF_INET6 if ":" in self.context.address else socket.AF_INET
        # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and accepted sockets inherit it. Without it a reply written right after another (EHLO's
        # lines, 421 after a reply) waits for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.context.address, self.context.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._ports[self.context.name] = _BoundPort(sock)

    def _started(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error("smtp listener %s did not start: %s", self.context.name, future.exception())
            return
        self._server = future.result()

    def _new_connection(self, loop: asyncio.AbstractEventLoop) -> SubmissionProtocol:
        handler = SubmissionHandler(self.context, self.reactor, loop, self.observer)
        return SubmissionProtocol(self.context, handler, loop, self._opened, self._closed)

    def _opened(self, protocol: SubmissionProtocol) -> None:
        self.connections.add(protocol)
        self._report(ClientConnected(self.context.name))

    def _closed(self, protocol: SubmissionProtocol) -> None:
        if protocol in self.connections:
            self._report(ClientDisconnected(self.context.name))
        self.connections.discard(protocol)
        if not self.connections and self._drained is not None and not self._drained.called:
            self._drained.callback(None)

    def _report(self, event: object) -> None:
        report(self.observer, event)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._server is not None:
            self._server.close()
            self._server = None
        elif self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._drained = defer.Deferred()
        if not self.connections:
            self._drained.callback(None)
            return self._drained
        for protocol in list(self.connections):
            protocol.shutdown()
        timer = self.reactor.callLater(self.shutdown_grace, self._cut_off)
        self._drained.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
        return self._drained

    def _cut_off(self) -> None:
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.abort()  # type: ignore[attr-defined]
        # aborted transports report their loss on the next loop turn; whatever is left then is
        # not waited for
        self.reactor.callLater(0.1, self._give_up)

    def _give_up(self) -> None:
        self.connections.clear()
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)
