"""Wiring: turn a validated :class:`Config` into running Twisted services.

The only module that knows every part. ``make_service(config, reactor)`` returns a
``MultiService`` of listeners; nothing here parses protocols or decides policy.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory

from caliproxy.config import Config, ListenerConfig
from caliproxy.errors import ConfigError
from caliproxy.imap.session import SessionSettings, UpstreamSecurity
from caliproxy.net import tls
from caliproxy.net.imap_proxy import ClientFactory, ListenerContext, UpstreamEndpoint

log = logging.getLogger("caliproxy.service")


class Connections:
    """Live client connections, so shutdown can say BYE to each and tests can count them."""

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self.total = 0

    def __call__(self, kind: str, subject: Any) -> None:
        # Never log credentials or message content: peers, listener names and account names only.
        if kind == "connection_opened":
            self.open.add(subject)
            self.total += 1
            log.info("connection from %s on %s", subject.peer, subject.context.name)
        elif kind == "connection_closed":
            if subject in self.open:
                log.info("connection from %s on %s closed", subject.peer, subject.context.name)
            self.open.discard(subject)
        elif kind == "authenticated":
            log.info("connection from %s on %s authenticated as %r", subject.peer,
                     subject.context.name, subject.session.account)


class ProxyService(service.MultiService):
    """All listeners of one configuration."""

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.connections = Connections()
        self.ports: dict[str, Any] = {}
        server_options = (
            tls.server_options(config.tls.certificate, config.tls.key) if config.tls else None
        )
        upstream = config.upstream_imap
        if upstream.tls == "none":
            log.warning("upstream %s:%d is configured with tls: none; credentials and mail cross "
                        "the network in clear", upstream.host, upstream.port)
            client_options = None
        else:
            client_options = tls.client_options(upstream.verify_name, upstream.ca_file)
        endpoint = UpstreamEndpoint(
            host=upstream.host,
            port=upstream.port,
            implicit_tls=upstream.tls == "implicit",
            tls_options=client_options,
            connect_timeout=upstream.connect_timeout,
        )
        for listener in config.listeners:
            if listener.protocol == "imap":
                self._add_listener(listener, endpoint, server_options)
            else:
                raise ConfigError(f"listener {listener.name}: protocol {listener.protocol} is not "
                                  "served by this version")

    def _add_listener(self, listener: ListenerConfig, upstream: UpstreamEndpoint,
                      server_options: Any) -> None:
        settings = SessionSettings(
            client_tls=listener.tls == "implicit",
            starttls_available=listener.tls == "starttls",
            plaintext_login_allowed=listener.allow_plaintext_login,
            upstream_security=UpstreamSecurity({"implicit": "tls", "starttls": "starttls",
                                                "none": "none"}[self.config.upstream_imap.tls]),
            max_line=self.config.limits.max_line_length,
            max_response_line=self.config.limits.max_response_line_length,
            max_literal=self.config.limits.max_literal_size,
        )
        context = ListenerContext(
            name=listener.name,
            settings=settings,
            upstream=upstream,
            server_tls_options=server_options if listener.tls == "starttls" else None,
            preauth_timeout=self.config.limits.preauth_timeout,
            idle_timeout=self.config.limits.idle_timeout,
        )
        factory: Any = ClientFactory(context, self.reactor, self.connections)
        if listener.tls == "implicit":
            factory = TLSMemoryBIOFactory(server_options, False, factory)
        if ":" in listener.address:
            endpoint: Any = endpoints.TCP6ServerEndpoint(self.reactor, listener.port,
                                                         interface=listener.address)
        else:
            endpoint = endpoints.TCP4ServerEndpoint(self.reactor, listener.port,
                                                    interface=listener.address)
        child = _ListeningService(endpoint, factory, listener.name, self.ports)
        child.setServiceParent(self)

    def stopService(self) -> Any:
        for protocol in list(self.connections.open):
            protocol.apply(protocol.session.shutdown("caliproxy is shutting down"))
        return super().stopService()


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


def make_service(config: Config, reactor: Any) -> ProxyService:
    """Build the whole proxy for ``config``; start it with ``startService()``."""
    return ProxyService(config, reactor)
