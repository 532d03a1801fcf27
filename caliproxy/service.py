"""Wiring: turn a validated :class:`Config` into running Twisted services.

The only module that knows every part. ``make_service(config, reactor)`` returns a
``MultiService`` of listeners; nothing here parses protocols or decides policy.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from typing import Any

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory

from caliproxy.config import Config, ListenerConfig
from caliproxy.errors import ConfigError
from caliproxy.imap.session import SessionSettings, UpstreamSecurity
from caliproxy.net import facts, tls
from caliproxy.net.imap_proxy import ClientFactory, ListenerContext, UpstreamEndpoint
from caliproxy.net.proxy_protocol import ProxyProtocolFactory, parse_networks
from caliproxy.net.smtp_server import SubmissionContext, SubmissionListener
from caliproxy.net.smtp_tls import server_ssl_context
from caliproxy.net.smtp_upstream import UpstreamTarget, UpstreamTimeouts
from caliproxy.observe.metrics import Metrics
from caliproxy.smtp.relay import ClientConnected, ClientDisconnected, LoginChecked, MessageRelayed
from caliproxy.smtp.tagging import NoTagging, PrivacyTagger
from caliproxy.store.cache import ClassificationCache
from caliproxy.store.classifier import SessionClassifier, VerdictMemory, field_names

log = logging.getLogger("caliproxy.service")
audit = logging.getLogger("caliproxy.audit")


class Connections:
    """Live client connections, so shutdown can say BYE to each and tests can count them; the
    observer of every connection event, feeding logs, the audit log and metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.open: set[Any] = set()
        self.total = 0

    def __call__(self, kind: str, subject: Any) -> None:
        # Never log credentials or message content: peers, listener names and account names only.
        metrics = self.metrics
        if kind == "bytes":
            listener, direction, count = subject
            metrics.bytes.labels(listener, direction).inc(count)
        elif kind == "upstream_connected":
            metrics.upstream_connect.labels("imap").observe(subject)
        elif kind == "tls_failed":
            metrics.tls_failures.labels(subject).inc()
        elif kind == "command":
            metrics.command(subject.name, subject.status)
            if subject.name in ("LOGIN", "AUTHENTICATE") and subject.status == "NO" and not subject.local:
                metrics.auth_failures.labels("imap").inc()
        elif kind == "connection_opened":
            self.open.add(subject)
            self.total += 1
            metrics.connections.labels(subject.context.name).inc()
            metrics.connections_active.labels(subject.context.name).inc()
            log.info("connection from %s on %s", subject.peer, subject.context.name)
        elif kind == "connection_closed":
            if subject in self.open:
                hidden = getattr(subject.session, "hidden_count", 0)
                metrics.connections_active.labels(subject.context.name).dec()
                metrics.messages_hidden.labels(subject.context.name).inc(hidden)
                log.info("connection from %s on %s closed", subject.peer, subject.context.name)
                if subject.session.authenticated:
                    audit.info("session end listener=%s client=%s account=%s clearance=%s hidden=%d",
                               subject.context.name, subject.client_address,
                               json.dumps(subject.session.account), subject.clearance.level, hidden)
            self.open.discard(subject)
        elif kind == "classified":
            # One line per session: who, from where, what it may see and why (never credentials).
            decided = subject.clearance
            metrics.sessions.labels(subject.context.name, decided.level).inc()
            audit.info("clearance level=%s listener=%s client=%s port=%s account=%s rule=%s "
                       "reasons=%s", decided.level, subject.context.name, subject.client_address,
                       subject.peer.rpartition(":")[2],
                       json.dumps(subject.session.account), json.dumps(decided.rule),
                       json.dumps(list(decided.reasons)))
        elif kind == "authenticated":
            log.info("connection from %s on %s authenticated as %r", subject.peer,
                     subject.context.name, subject.session.account)


class SubmissionEvents:
    """Counts what the SMTP listeners report, and feeds the same events to the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def __call__(self, event: object) -> None:
        if isinstance(event, MessageRelayed):
            self.counts["message", event.outcome.value, event.level or "-"] += 1
            self.metrics.smtp_messages.labels(event.outcome.value, event.level or "none").inc()
            self.metrics.smtp_upstream.observe(event.upstream_seconds)
        elif isinstance(event, LoginChecked):
            self.counts["login", event.outcome.value, "-"] += 1
            if event.outcome.value != "accepted":
                self.metrics.auth_failures.labels("smtp").inc()
        elif isinstance(event, ClientConnected):
            self.metrics.connections.labels(event.listener).inc()
            self.metrics.connections_active.labels(event.listener).inc()
        elif isinstance(event, ClientDisconnected):
            self.metrics.connections_active.labels(event.listener).dec()


class ProxyService(service.MultiService):
    """All listeners of one configuration."""

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics()
        self.connections = Connections(self.metrics)
        self.submissions = SubmissionEvents(self.metrics)
        self.ports: dict[str, Any] = {}
        self.factories: dict[str, ClientFactory] = {}
        self.submission_listeners: dict[str, SubmissionListener] = {}
        self.cache = ClassificationCache(config.cache.path, config.header.name)
        self.metrics.watch_cache(self.cache)
        self.verdicts = self._verdicts(config)
        self._smtp_ssl_context: Any = None
        # The name we give in SMTP greetings and EHLO upstream; no DNS lookup (getfqdn may block).
        self._hostname = socket.gethostname() or "caliproxy"
        # One holder for our certificate: a reload swaps what it holds, and every new handshake
        # (implicit TLS or STARTTLS) asks it for the current context.
        self.server_tls = tls.ReloadableServerOptions(self._server_options(config))
        server_options = self.server_tls if config.tls is not None else None
        endpoint = self._imap_upstream(config)
        smtp_upstream = self._smtp_upstream() if config.upstream_smtp is not None else None
        for listener in config.listeners:
            if listener.protocol == "imap":
                self._add_listener(listener, endpoint, server_options)
            elif listener.protocol == "smtp" and smtp_upstream is not None:
                self._add_smtp_listener(listener, smtp_upstream)
            else:
                raise ConfigError(f"listener {listener.name}: protocol {listener.protocol} is not "
                                  "served by this version")

    @staticmethod
    def _server_options(config: Config) -> Any:
        if config.tls is None:
            return None
        options = tls.server_options(config.tls.certificate, config.tls.key)
        if config.tls.client_ca or config.trust.uses_certificates:
            facts.request_client_certificates(options, config.tls.client_ca)
        return options

    @staticmethod
    def _imap_upstream(config: Config) -> UpstreamEndpoint:
        upstream = config.upstream_imap
        if upstream.tls == "none":
            log.warning("upstream %s:%d is configured with tls: none; credentials and mail cross "
                        "the network in clear", upstream.host, upstream.port)
            client_options = None
        else:
            client_options = tls.client_options(upstream.verify_name, upstream.ca_file)
        return UpstreamEndpoint(
            host=upstream.host,
            port=upstream.port,
            implicit_tls=upstream.tls == "implicit",
            tls_options=client_options,
            connect_timeout=upstream.connect_timeout,
            server_name=upstream.verify_name,
        )

    def _listener_context(self, listener: ListenerConfig, upstream: UpstreamEndpoint,
                          server_options: Any) -> ListenerContext:
        settings = SessionSettings(
            client_tls=listener.tls == "implicit",
            starttls_available=listener.tls == "starttls",
            plaintext_login_allowed=listener.allow_plaintext_login,
            upstream_security=UpstreamSecurity({"implicit": "tls", "starttls": "starttls",
                                                "none": "none"}[self.config.upstream_imap.tls]),
            max_line=self.config.limits.max_line_length,
            max_response_line=self.config.limits.max_response_line_length,
            max_literal=self.config.limits.max_literal_size,
            header_names=field_names(self.config.header),
        )
        return ListenerContext(
            name=listener.name,
            settings=settings,
            upstream=upstream,
            server_tls_options=server_options if listener.tls == "starttls" else None,
            preauth_timeout=self.config.limits.preauth_timeout,
            idle_timeout=self.config.limits.idle_timeout,
            trust=self.config.trust,
            tagging=listener.tagging,
            # The verdicts of this context's policy and upstream, bound now: a connection made
            # before a reload logs in (and is classified) against the upstream it was made to.
            classifier_for=lambda account, level, tagging=listener.tagging, verdicts=self.verdicts:
                self._classifier(verdicts, account, level, tagging),
        )

    def _add_listener(self, listener: ListenerConfig, upstream: UpstreamEndpoint,
                      server_options: Any) -> None:
        context = self._listener_context(listener, upstream, server_options)
        client_factory = ClientFactory(context, self.reactor, self.connections)
        self.factories[listener.name] = client_factory
        factory: Any = client_factory
        if listener.tls == "implicit":
            factory = TLSMemoryBIOFactory(server_options, False, factory)
        if listener.proxy_protocol:
            # Outermost: the PROXY header comes before any TLS.
            factory = ProxyProtocolFactory(factory, reactor=self.reactor, listener=listener.name,
                                           allowed_from=parse_networks(listener.proxy_protocol_from))
        if ":" in listener.address:
            endpoint: Any = endpoints.TCP6ServerEndpoint(self.reactor, listener.port,
                                                         interface=listener.address)
        else:
            endpoint = endpoints.TCP4ServerEndpoint(self.reactor, listener.port,
                                                    interface=listener.address)
        child = _ListeningService(endpoint, factory, listener.name, self.ports)
        child.setServiceParent(self)

    def _smtp_upstream(self) -> UpstreamTarget:
        upstream = self.config.upstream_smtp
        assert upstream is not None
        if upstream.tls == "none":
            log.warning("smtp upstream %s:%d is configured with tls: none; credentials and mail "
                        "cross the network in clear", upstream.host, upstream.port)
            client_options = None
        else:
            client_options = tls.client_options(upstream.verify_name, upstream.ca_file)
        return UpstreamTarget(host=upstream.host, port=upstream.port, tls=upstream.tls,
                              tls_options=client_options, connect_timeout=upstream.connect_timeout)

    def _submission_context(self, listener: ListenerConfig, upstream: UpstreamTarget) -> SubmissionContext:
        config = self.config
        if self._smtp_ssl_context is None and config.tls is not None:
            self._smtp_ssl_context = server_ssl_context(config.tls.certificate, config.tls.key)
        return SubmissionContext(
            name=listener.name,
            address=listener.address,
            port=listener.port,
            tls=listener.tls,
            allow_plaintext=listener.allow_plaintext_login,
            ssl_context=self._smtp_ssl_context if listener.tls != "none" else None,
            upstream=upstream,
            tagger=(PrivacyTagger(config.policy, config.header) if listener.tagging
                    else NoTagging(config.header)),
            hostname=self._hostname,
            timeouts=_smtp_timeouts(config),
        )

    def _add_smtp_listener(self, listener: ListenerConfig, upstream: UpstreamTarget) -> None:
        child = SubmissionListener(self._submission_context(listener, upstream), self.reactor, self.ports,
                                   self.submissions)
        child.setServiceParent(self)
        self.submission_listeners[listener.name] = child

    def _verdicts(self, config: Config) -> VerdictMemory:
        return VerdictMemory(config.policy, self.cache, _upstream_id(config), self._classified,
                             config.header)

    def _classified(self, seconds: float, levels: list[str]) -> None:
        self.metrics.classify_seconds.observe(seconds)
        for level in levels:
            self.metrics.messages_tagged.labels(level).inc()

    @staticmethod
    def _classifier(verdicts: VerdictMemory, account: str, level: str | None,
                    tagging: bool) -> SessionClassifier | None:
        # (the policy of the connection's context, frozen for the session)
        top = level is None or level == verdicts.policy.levels.highest
        if top and not tagging:
            return None  # nothing to tag and nothing to hide: a plain relay
        return SessionClassifier(verdicts, account, None if top else level)

    # -- reload (SIGHUP) ---------------------------------------------------------------------------

    def reload(self, config: Config) -> str:
        """Switch to ``config`` without dropping anyone; returns a summary for the log.

        New connections get the new policy, trust rules, limits, upstream and certificate; live
        sessions keep what they had, except that a session whose clearance the new trust rules
        lower is ended with BYE (its client reconnects and is judged again). What lives as long
        as the process (listener sockets, the header name, the cache file, the metrics socket)
        cannot change while running: a change to it raises ConfigError (restart instead). The
        logging settings are the caller's to apply."""
        if _listener_shape(config) != _listener_shape(self.config):
            raise ConfigError("listeners changed (names, addresses, ports, TLS, protocols or "
                              "PROXY protocol senders): restart caliproxy to apply that")
        if config.header != self.config.header:
            # Clients have cached messages under the old name, and the cache's spoof offsets
            # are for it: a new name starts with a new process (and an emptied cache).
            raise ConfigError("header.name changed: restart caliproxy to apply that")
        # The cache file is open and the metrics socket bound for the process's lifetime.
        if config.cache != self.config.cache:
            raise ConfigError("cache changed: restart caliproxy to apply that")
        if config.metrics != self.config.metrics:
            raise ConfigError("metrics changed: restart caliproxy to apply that")
        server_options = self._server_options(config)
        endpoint = self._imap_upstream(config)
        judged_anew = config.policy != self.config.policy or config.trust != self.config.trust
        if config.policy != self.config.policy or _upstream_id(config) != _upstream_id(self.config):
            # Another upstream is other mailboxes: its UIDs and UIDVALIDITY may equal the old
            # one's, so verdicts are keyed by the upstream too and must not carry over.
            self.verdicts = self._verdicts(config)
        self.config = config
        if server_options is not None:
            self.server_tls.replace(server_options)
        if self._smtp_ssl_context is not None and config.tls is not None:
            # The submission listeners' context is shared: new handshakes get the new chain.
            self._smtp_ssl_context.load_cert_chain(str(config.tls.certificate), str(config.tls.key))
        smtp_upstream = self._smtp_upstream() if config.upstream_smtp is not None else None
        for listener in config.listeners:
            factory = self.factories.get(listener.name)
            if factory is not None:
                factory.context = self._listener_context(
                    listener, endpoint, self.server_tls if config.tls is not None else None)
            submission = self.submission_listeners.get(listener.name)
            if submission is not None and smtp_upstream is not None:
                # New submissions get the new policy, upstream and timeouts; those in progress
                # finish with what they started with.
                submission.context = self._submission_context(listener, smtp_upstream)
        ended = waiting = 0
        for protocol in list(self.connections.open):
            if protocol.rejudge(config.trust):
                ended += 1
            elif judged_anew and not protocol.session.authenticated:
                # Not logged in yet: it would be judged at login by the rules and policy of the
                # context it connected under, the old ones. It reconnects under the new.
                protocol.apply(protocol.session.shutdown("configuration reloaded; reconnect"))
                waiting += 1
        return (f"reloaded {config.source}; {ended} session(s) ended because their clearance was "
                f"lowered, {waiting} not yet logged in ended to be judged by the new rules")

    def stopService(self) -> Any:
        """Stop accepting, say BYE to every IMAP session, let submissions finish, close the cache."""
        for protocol in list(self.connections.open):
            protocol.apply(protocol.session.shutdown("caliproxy is shutting down"))
        stopped = super().stopService()

        def close_cache(result: Any) -> Any:
            self.cache.close()
            return result

        if stopped is None:
            self.cache.close()
            return None
        return stopped.addBoth(close_cache)


class _ListeningService(internet.StreamServerEndpointService):
    """A listener that records its bound port (port 0 in tests means "any free port")."""

    def __init__(self, endpoint: Any, factory: Any, name: str, ports: dict[str, Any]) -> None:
        super().__init__(endpoint, factory)
        self.name = name
        self._ports = ports
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._record)

    def _record(self, port: Any) -> Any:
        self._ports[self.name] = port
        return port


def _smtp_timeouts(config: Config) -> UpstreamTimeouts:
    """upstream.smtp's reply_timeout covers the greeting, each command and DATA's 354;
    data_timeout the final reply to a message."""
    upstream = config.upstream_smtp
    if upstream is None:
        return UpstreamTimeouts()
    return UpstreamTimeouts(greeting=upstream.reply_timeout, command=upstream.reply_timeout,
                            data_start=upstream.reply_timeout, data_end=upstream.data_timeout)


def _upstream_id(config: Config) -> str:
    """Which upstream the cached verdicts are for (part of every cache key)."""
    return f"imap://{config.upstream_imap.host}:{config.upstream_imap.port}"


def _listener_shape(config: Config) -> list[tuple[Any, ...]]:
    return [(l.name, l.protocol, l.address, l.port, l.tls, l.proxy_protocol, l.proxy_protocol_from)
            for l in config.listeners]


def make_service(config: Config, reactor: Any) -> ProxyService:
    """Build the whole proxy for ``config``; start it with ``startService()``."""
    return ProxyService(config, reactor)
