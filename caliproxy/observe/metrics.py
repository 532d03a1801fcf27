"""Prometheus metrics: one registry, fed by the service's observers, served on loopback.

The protocol engines never import this module; the IO shell and the wiring report events here.
Every label is bounded: listener names, clearance and confidentiality levels, command verbs,
outcome classes. Never a user, mailbox, address or subject.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# IMAP verbs we count by name; anything else is "OTHER" so a hostile client cannot mint labels.
KNOWN_VERBS = frozenset({
    "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN", "ID", "NAMESPACE",
    "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB",
    "STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
    "MOVE", "IDLE", "ENABLE", "UID FETCH", "UID STORE", "UID COPY", "UID MOVE", "UID SEARCH",
    "UID EXPUNGE",
})
_STATUSES = frozenset({"OK", "NO", "BAD"})


def verb_label(name: str) -> str:
    return name if name in KNOWN_VERBS else "OTHER"


class Metrics:
    """All of caliproxy's metrics in their own registry (tests create as many as they like)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections_active = Gauge(
            "caliproxy_connections_active", "Client connections open now", ["listener"], registry=r)
        self.connections = Counter(
            "caliproxy_connections_total", "Client connections accepted", ["listener"], registry=r)
        self.sessions = Counter(
            "caliproxy_sessions_total", "Authenticated sessions by the clearance they were given",
            ["listener", "clearance"], registry=r)
        self.commands = Counter(
            "caliproxy_imap_commands_total", "IMAP commands by verb and outcome",
            ["verb", "status"], registry=r)
        self.auth_failures = Counter(
            "caliproxy_auth_failures_total", "Logins the upstream refused", ["protocol"], registry=r)
        self.tls_failures = Counter(
            "caliproxy_tls_handshake_failures_total", "TLS handshakes that failed",
            ["side"], registry=r)
        self.bytes = Counter(
            "caliproxy_bytes_total", "Bytes relayed", ["listener", "direction"], registry=r)
        self.upstream_connect = Histogram(
            "caliproxy_upstream_connect_seconds", "Time to connect (and greet) the upstream",
            ["protocol"], registry=r)
        self.messages_hidden = Counter(
            "caliproxy_messages_hidden_total", "Messages hidden from a session (counted per view)",
            ["listener"], registry=r)
        self.messages_tagged = Counter(
            "caliproxy_messages_tagged_total", "Messages classified, by confidentiality level",
            ["level"], registry=r)
        self.classify_seconds = Histogram(
            "caliproxy_classification_seconds", "Time to classify one batch of message headers",
            registry=r)
        self.reloads = Counter(
            "caliproxy_reloads_total", "Configuration reloads by outcome", ["outcome"], registry=r)
        self.smtp_messages = Counter(
            "caliproxy_smtp_messages_total", "Submitted messages by outcome class and level",
            ["outcome", "level"], registry=r)
        self.smtp_upstream = Histogram(
            "caliproxy_smtp_upstream_seconds", "Time the submission upstream took to accept a message",
            registry=r)
        self._cache_size: Any = None
        r.register(_CacheSize(self))

    def command(self, name: str, status: str) -> None:
        self.commands.labels(verb_label(name), status if status in _STATUSES else "OTHER").inc()

    def watch_cache(self, cache: Any) -> None:
        """Report the cache's size at each scrape (a callable, so nothing runs between scrapes)."""
        self._cache_size = cache

    def serve(self, address: str, port: int) -> Any:
        """Serve /metrics over HTTP; returns the server (port 0 picks a free port)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server


class _CacheSize:
    """Cache size and lookups, read from the cache at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        cache = self.metrics._cache_size
        size = GaugeMetricFamily("caliproxy_cache_entries", "Messages in the classification cache")
        lookups = CounterMetricFamily("caliproxy_cache_lookups", "Classification cache lookups",
                                      labels=["result"])
        if cache is not None:
            # a closed cache during shutdown must not break the scrape
            with contextlib.suppress(sqlite3.Error):
                size.add_metric([], cache.count())
            lookups.add_metric(["hit"], cache.hits)
            lookups.add_metric(["miss"], cache.misses)
        yield size
        yield lookups
