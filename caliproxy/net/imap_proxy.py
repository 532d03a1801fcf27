"""Twisted protocols that carry one IMAP proxy session: bytes in, engine actions out.

IO shell, deliberately thin: every decision is the sans-IO :class:`ProxySession`'s. This module
connects the upstream, runs TLS on both sides, enforces the timeouts, keeps back-pressure (a slow
client pauses the upstream read and vice versa) and turns a failure into a closed connection for
that session alone.

A session that tags or hides mail has the headers a SELECT needs judged, and (hiding) the
messages of mailboxes other than its selected one counted, on an upstream connection of the
proxy's own (:class:`SideLink`, driving ``imap.side_session``): same endpoint, same TLS options
and certificate checks, opened at the first such query, reused for the later ones, and closed
after a few seconds without one (upstreams limit connections per user and address) or with the
client session. Its failures and timeouts become a NO to the client's STATUS, never the
upstream's own counts, and a SELECT then reads the headers on the client's own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer, endpoints, error
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from caliproxy.imap.actions import (
    Action,
    Authenticated,
    ClassifyMessages,
    CloseClient,
    CloseServer,
    CommandDone,
    CountMessages,
    SendClient,
    SendServer,
    SideAnswer,
    SideQuery,
    StartClientTLS,
    StartServerTLS,
)
from caliproxy.imap.classify import Classifier
from caliproxy.imap.credentials import Credentials
from caliproxy.imap.mailbox_session import MailboxSession
from caliproxy.imap.session import SessionSettings
from caliproxy.imap.side_session import Answered, SideAction, SideSession, failed_answer
from caliproxy.net import tls
from caliproxy.net.facts import TLSFacts, tls_facts
from caliproxy.net.tcp import no_delay
from caliproxy.privacy.trust import Clearance, ConnectionFacts, TrustPolicy, clearance

log = logging.getLogger("caliproxy.imap")

# How long the proxy's own upstream connection may stay silent while a query is in progress
# (connecting has the upstream's connect_timeout). Every line it reads restarts the clock, so a
# big mailbox whose headers are still being read and judged does not run out of time.
SIDE_SILENCE_TIMEOUT = 60.0
# How long it stays open without a query: long enough for a burst (a client opening folder after
# folder, or asking STATUS of each), short enough not to hold one of the connections the upstream
# allows a user (Dovecot: 10 per user and address, and every device of the user comes from the
# proxy's address) while the client reads its mail.
SIDE_IDLE_TIMEOUT = 5.0
# After the upstream had no room for its login (a connection limit), how long the session asks on
# its own connection (verdicts) or says NO (counts) before it tries again.
SIDE_RETRY_PAUSE = 30.0


@dataclass(frozen=True)
class UpstreamEndpoint:
    """Where and how to reach the upstream IMAP server."""

    host: str
    port: int
    implicit_tls: bool
    tls_options: Any  # IOpenSSLClientConnectionCreator, or None for tls: none
    connect_timeout: float
    server_name: str = ""  # the name its certificate must carry (checked again after handshake)


@dataclass(frozen=True)
class ListenerContext:
    """Everything a connection on one listener needs; replaced whole on reload."""

    name: str
    settings: SessionSettings
    upstream: UpstreamEndpoint
    server_tls_options: Any  # for STARTTLS toward the client; None when unavailable
    preauth_timeout: float
    idle_timeout: float
    trust: TrustPolicy = field(default_factory=TrustPolicy)  # decides each session's clearance
    tagging: bool = True
    # (account, clearance level or None for "sees everything") -> the session's classifier, or
    # None when there is nothing to tag or hide
    classifier_for: Callable[[str, str | None], Classifier | None] | None = None


class UpstreamProtocol(Protocol):
    """Our connection to the upstream server; everything it receives goes to the session."""

    def __init__(self, client: ClientProtocol) -> None:
        self.client = client
        upstream = client.context.upstream
        self.tls_active = upstream.implicit_tls  # STARTTLS sets it when the handshake starts
        self._verified = upstream.tls_options is None
        self._pending: list[bytes] = []
        self._flush_call: Any = None
        self._lost = False

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.client.upstream_connected(self)

    def dataReceived(self, data: bytes) -> None:
        # Servers often send TLS in small records (Dovecot: 4 KiB) and Twisted delivers each one
        # separately; gathering what one socket read brought runs the session once per read,
        # which is most of the difference to a plain relay on bulk downloads.
        self._pending.append(data)
        if self._flush_call is None:
            self._flush_call = self.client.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        if self.tls_active and not self._verified:
            problem = tls.peer_matches(self.transport, self.client.context.upstream.server_name)
            if problem is not None:
                self._lost = True
                self.transport.abortConnection()
                self._report_lost(problem)
                return
            self._verified = True
        if not self._lost:
            try:
                self._deliver(data)
            except Exception:
                # Called from the reactor, not from a transport: nobody else would notice. Fail
                # closed for this session only.
                log.exception("internal error in a session from %s; closing it", self.client.peer)
                self._lost = True
                self.transport.abortConnection()
                self.client.transport.abortConnection()

    def _deliver(self, data: bytes) -> None:
        self.client.apply(self.client.session.server_data(data))

    def _report_lost(self, reason: str) -> None:
        self.client.upstream_lost(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()  # what arrived before the close still counts (a BYE, say)
        if not self._lost:
            self._lost = True
            self._report_lost(describe_failure(reason))


class SideProtocol(UpstreamProtocol):
    """The proxy's own upstream connection for one client session (see :class:`SideLink`)."""

    def __init__(self, link: SideLink) -> None:
        super().__init__(link.client)
        self.link = link

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.link.upstream_connected(self)

    def _deliver(self, data: bytes) -> None:
        self.link.server_data(data)

    def _report_lost(self, reason: str) -> None:
        self.link.upstream_lost(reason)


class SideLink:
    """Carries one :class:`SideSession`: connects it, feeds it, times it, passes its answers on.

    Credentials and classifier are the client session's; they live as long as this object,
    which the client session drops when it ends or when this connection fails."""

    def __init__(self, client: ClientProtocol, credentials: Credentials, classifier: Classifier) -> None:
        self.client = client
        settings = client.context.settings
        self.engine = SideSession(credentials, classifier, security=settings.upstream_security,
                                  max_line=settings.max_response_line)
        self.upstream: SideProtocol | None = None
        self._to_upstream: list[bytes] = []
        self._timer: Any = None
        self._gone = False
        self._connecting: defer.Deferred[Any] | None = client.connect_upstream(SideProtocol(self))
        self._connecting.addErrback(self._connect_failed)

    def ask(self, query: SideQuery) -> None:
        self.apply(self.engine.ask(query))
        if self.upstream is not None:
            self._arm()  # (while connecting, the endpoint's own timeout runs)

    def close(self) -> None:
        self.apply(self.engine.close())

    # -- the connection --------------------------------------------------------------------------

    def upstream_connected(self, upstream: SideProtocol) -> None:
        self._connecting = None
        self.upstream = upstream
        if self.engine.closed:
            upstream.transport.loseConnection()
            return
        self._arm()
        if self._to_upstream:
            upstream.transport.writeSequence(self._to_upstream)
            self._to_upstream = []

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if not failure.check(defer.CancelledError):
            self.upstream_lost(describe_failure(failure))

    def server_data(self, data: bytes) -> None:
        self._arm()
        self.apply(self.engine.server_data(data))

    def upstream_lost(self, reason: str) -> None:
        self.upstream = None
        self._cancel_timer()
        if not self.engine.closed:
            log.info("side connection for %s closed: %s", self.client.peer, reason)
        self.apply(self.engine.server_lost(reason))

    # -- timers ----------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._cancel_timer()
        if self.engine.busy:
            self._timer = self.client.reactor.callLater(SIDE_SILENCE_TIMEOUT, self._timed_out)
        elif not self.engine.closed:
            self._timer = self.client.reactor.callLater(SIDE_IDLE_TIMEOUT, self._idle)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _idle(self) -> None:
        self._timer = None
        self.close()  # (the next query opens a new one)

    def _timed_out(self) -> None:
        self._timer = None
        self.apply(self.engine.server_lost("timed out"))
        if self.upstream is not None:
            self.upstream.transport.abortConnection()

    # -- carrying out the engine's actions ---------------------------------------------------------

    def apply(self, actions: list[SideAction]) -> None:
        if self.engine.closed and not self._gone:
            # The client session learns that this link is done (and why: a refused login is
            # not tried again) now, before the answers below, not when the upstream's socket
            # has finished closing: a question asked in between would meet a closed engine.
            self._gone = True
            self.client.side_gone(self)
        for action in actions:
            if isinstance(action, SendServer):
                if self.upstream is not None:
                    self.upstream.transport.writeSequence(action.chunks)
                else:
                    self._to_upstream.extend(action.chunks)
            elif isinstance(action, StartServerTLS):
                if self.upstream is not None:
                    self.upstream.tls_active = True
                    self.upstream.transport.startTLS(self.client.context.upstream.tls_options)
            elif isinstance(action, CloseServer):
                self._cancel_timer()
                self._to_upstream = []
                if self._connecting is not None:
                    self._connecting.cancel()
                if self.upstream is not None:
                    # (no producer is registered on this one: nothing to unlink before closing)
                    self.upstream.transport.loseConnection()
            elif isinstance(action, Answered):
                self._arm()
                self.client.answered(action.query, action.answer)


@implementer(IHandshakeListener)
class ClientProtocol(Protocol):
    """One mail client's connection to a listener.

    ``clearance`` is the level this session may see up to: the lowest level until login, then
    the trust policy's decision, computed once when the account is known and frozen.
    """

    def __init__(self, context: ListenerContext, reactor: Any, on_event: Callable[[str, Any], None]) -> None:
        self.context = context
        self.reactor = reactor
        self.on_event = on_event
        self.session = MailboxSession(context.settings, tagging=context.tagging)
        self.upstream: UpstreamProtocol | None = None
        self.side: SideLink | None = None  # the proxy's own connection, while it has one
        self._side_refused = False  # the upstream refused the replayed login: not tried again
        self._side_paused_until = 0.0  # (reactor time) it had no room for one: not before then
        self._connecting: defer.Deferred[Any] | None = None
        self._timer: Any = None
        self._to_upstream: list[bytes] = []  # written before the upstream connection exists
        self._closed = False
        self._bytes_in = self._bytes_out = 0  # reported per command, not per write (cheap)
        self.client_address = "?"
        self.tls_facts: TLSFacts | None = None
        self.clearance = Clearance(context.trust.default_level, ("not authenticated yet",))

    # -- connection lifecycle ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay(self.transport)
        peer = self.transport.getPeer()
        self.client_address = str(getattr(peer, "host", "?"))  # the real client's, behind PROXY
        self.peer = f"{self.client_address}:{getattr(peer, 'port', '?')}"
        self.on_event("connection_opened", self)
        self._arm_timer(self.context.preauth_timeout)
        self._connect_started = self.reactor.seconds()
        self._connecting = self.connect_upstream(UpstreamProtocol(self))
        self._connecting.addErrback(self._connect_failed)

    def connect_upstream(self, protocol: UpstreamProtocol) -> defer.Deferred[Any]:
        """Connect ``protocol`` to the upstream endpoint, with implicit TLS when it has it."""
        upstream = self.context.upstream
        endpoint: Any = endpoints.TCP4ClientEndpoint(
            self.reactor, upstream.host, upstream.port, timeout=upstream.connect_timeout
        ) if ":" not in upstream.host else endpoints.TCP6ClientEndpoint(
            self.reactor, upstream.host, upstream.port, timeout=upstream.connect_timeout
        )
        if upstream.implicit_tls:
            endpoint = endpoints.wrapClientTLS(upstream.tls_options, endpoint)
        return endpoints.connectProtocol(endpoint, protocol)

    def upstream_connected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        self.upstream = upstream
        self.on_event("upstream_connected", self.reactor.seconds() - self._connect_started)
        if self._closed:
            upstream.transport.loseConnection()
            return
        # Back-pressure both ways: a full client buffer pauses reading from the upstream.
        self.transport.registerProducer(_PauseOnly(upstream.transport), True)
        upstream.transport.registerProducer(_PauseOnly(self.transport), True)
        if self._to_upstream:
            upstream.transport.writeSequence(self._to_upstream)
            self._to_upstream = []

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if not failure.check(defer.CancelledError):
            self.upstream_lost(describe_failure(failure))

    def upstream_lost(self, reason: str) -> None:
        self.upstream = None
        if "certificate" in reason or "TLS" in reason:
            self.on_event("tls_failed", "upstream")
        if not self._closed:
            log.info("upstream closed for %s on %s: %s", self.peer, self.context.name, reason)
        self.apply(self.session.server_lost(reason))

    def dataReceived(self, data: bytes) -> None:
        if self.session.authenticated:
            self._arm_timer(self.context.idle_timeout)
        self._bytes_in += len(data)
        self.apply(self.session.client_data(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self.tls_facts is None and self.context.settings.client_tls and not reason.check(
                error.ConnectionDone):
            self.on_event("tls_failed", "client")  # never completed its handshake
        was_closed = self._closed
        self._closed = True
        self.apply(self.session.client_lost())
        self._close_side()
        self._report_bytes()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.upstream is not None:
            _close(self.upstream.transport)
        if not was_closed:
            self.on_event("connection_closed", self)

    # -- the proxy's own connection, for verdicts and message counts -----------------------------------

    def _ask_side(self, query: SideQuery) -> None:
        """Carry a query to the side connection, opening it if there is none."""
        if self._closed:
            return
        credentials, classifier = self.session.credentials, self.session.classifier
        if (self._side_refused or credentials is None or classifier is None
                or self.reactor.seconds() < self._side_paused_until):
            self.answered(query, failed_answer(query))
            return
        if self.side is None or self.side.engine.closed:
            # (a closed link is one whose end was reported before it was even stored here: a
            # connection attempt that failed at once)
            self.side = SideLink(self, credentials, classifier)
        self.side.ask(query)

    def answered(self, query: SideQuery, answer: SideAnswer) -> None:
        if not self._closed:
            self.apply(self.session.answered(query, answer))

    def side_gone(self, link: SideLink) -> None:
        if self.side is link:
            self.side = None  # the next query opens a new one
        if link.engine.login_refused:
            # The credentials no longer work (changed password?): asking again would only
            # provoke the upstream's failed-login penalties, and they are kept no longer.
            self._side_refused = True
            self.session.credentials = None
        elif link.engine.login_unavailable:
            self._side_paused_until = self.reactor.seconds() + SIDE_RETRY_PAUSE

    def _close_side(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            side.close()

    def _report_bytes(self) -> None:
        if self._bytes_in:
            self.on_event("bytes", (self.context.name, "in", self._bytes_in))
        if self._bytes_out:
            self.on_event("bytes", (self.context.name, "out", self._bytes_out))
        self._bytes_in = self._bytes_out = 0

    def _judge(self, account: str) -> None:
        """Freeze the session's clearance and hand the session its classifier.

        Until this runs the session reads no command, so nothing is ever served unjudged."""
        clearance = getattr(self, "clearance", None)
        level = getattr(clearance, "level", None)
        make = self.context.classifier_for
        classifier = make(account, level) if make is not None else None
        self.apply(self.session.set_classifier(classifier))

    def handshakeCompleted(self) -> None:
        """TLS is up (implicit TLS, or after STARTTLS): note its facts for the clearance."""
        self.tls_facts = tls_facts(self.transport)

    def _decide_clearance(self, account: str) -> None:
        """Freeze this session's clearance now that the account is known."""
        tls = self.tls_facts or tls_facts(self.transport)
        facts = ConnectionFacts(
            listener=self.context.name,
            client_address=self.client_address,
            tls=tls is not None,
            tls_version=tls.version if tls else None,
            cipher=tls.cipher if tls else None,
            cert_fingerprint=tls.cert_fingerprint if tls else None,
            chains_to_device_ca=tls.chains_to_device_ca if tls else False,
            cert_not_after=tls.cert_not_after if tls else None,
            account=account,
            # Offered by the session when it tracks them; absent, they are simply unknown.
            sasl_mechanism=getattr(self.session, "auth_mechanism", None),
            client_id=getattr(self.session, "client_id", None),
        )
        self.facts = facts
        self.clearance = clearance(facts, self.context.trust, now=datetime.now(UTC))
        self.on_event("classified", self)

    def rejudge(self, trust: TrustPolicy) -> bool:
        """After a reload: end this session (BYE) if the new rules give it a lower clearance.

        Trust is frozen for a session's life; lowering it in place would mean synthesising
        EXPUNGEs for newly hidden mail, so the client reconnects and is judged afresh."""
        facts = getattr(self, "facts", None)
        if facts is None or not self.session.authenticated:
            return False
        new = clearance(facts, trust, now=datetime.now(UTC))
        levels = trust.levels
        if new.level in levels and self.clearance.level in levels and (
                levels.rank(new.level) >= levels.rank(self.clearance.level)):
            return False
        self.apply(self.session.shutdown("clearance lowered by a configuration reload; reconnect"))
        return True

    # -- timers ----------------------------------------------------------------------------------

    def _arm_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.reactor.callLater(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.session.idling:
            # RFC 2177: a client in IDLE may stay silent; the upstream keeps its own timer.
            self._arm_timer(self.context.idle_timeout)
            return
        self.apply(self.session.autologout())

    # -- carrying out the engine's actions -------------------------------------------------------------

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendClient):
                if not self._closed:
                    self.transport.writeSequence(action.chunks)
                    self._bytes_out += sum(map(len, action.chunks))
            elif isinstance(action, SendServer):
                if self.upstream is not None:
                    self.upstream.transport.writeSequence(action.chunks)
                else:
                    self._to_upstream.extend(action.chunks)
            elif isinstance(action, CommandDone):
                self.on_event("command", action)
                self._report_bytes()
            elif isinstance(action, Authenticated):
                self._arm_timer(self.context.idle_timeout)
                self._decide_clearance(action.account)
                self.on_event("authenticated", self)
                self._judge(action.account)
            elif isinstance(action, StartClientTLS):
                self.transport.startTLS(self.context.server_tls_options)
            elif isinstance(action, StartServerTLS):
                if self.upstream is not None:
                    self.upstream.tls_active = True
                    self.upstream.transport.startTLS(self.context.upstream.tls_options)
            elif isinstance(action, (CountMessages, ClassifyMessages)):
                # (answered from the reactor: never inside this loop, ahead of actions after it)
                self.reactor.callLater(0, self._ask_side, action)
            elif isinstance(action, CloseClient):
                if not self._closed:
                    self._closed = True
                    self.on_event("connection_closed", self)
                    _close(self.transport)
                self._close_side()
            elif isinstance(action, CloseServer):
                if self._connecting is not None:
                    self._connecting.cancel()
                if self.upstream is not None:
                    _close(self.upstream.transport)


class ClientFactory(Factory):
    """Builds a :class:`ClientProtocol` per accepted connection on one listener."""

    def __init__(self, context: ListenerContext, reactor: IReactorTCP | IReactorTime | Any,
                 on_event: Callable[[str, Any], None]) -> None:
        self.context = context
        self.reactor = reactor
        self.on_event = on_event

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        protocol = ClientProtocol(self.context, self.reactor, self.on_event)
        protocol.factory = self
        return protocol


@implementer(IPushProducer)
class _PauseOnly:
    """One side's transport as the other side's producer, for flow control only.

    A transport stops its producer when it closes; the peer's closing is the session's decision
    (after the last bytes, a BYE, have been written), so stopProducing does nothing here."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


def _close(transport: Any) -> None:
    """Close after pending writes. A TLS transport with a registered producer would wait for the
    producer to go away before its close_notify, so the back-pressure link is cut first."""
    transport.unregisterProducer()
    transport.loseConnection()


def describe_failure(failure: Failure) -> str:
    """A short reason for a lost or failed connection, safe to show a client and to log."""
    value = failure.value
    if failure.check(error.ConnectionDone):
        return "closed"
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.TimeoutError, error.TCPTimedOutError):
        return "connection timed out"
    text = str(value)
    if "certificate verify failed" in text or "verify" in text.lower() and "cert" in text.lower():
        return "upstream certificate verification failed"
    if failure.check(error.ConnectionLost):
        return "connection lost"
    name = type(value).__name__
    if name == "VerificationError" or "VerificationError" in text:
        return "upstream certificate does not match its host name"
    if name == "Error" and "SSL" in repr(type(value)):
        return "TLS handshake failed"
    return name
