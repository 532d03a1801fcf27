"""The IO shell of the proxy's own upstream connection (``net.imap_proxy.SideLink``): its timers.

Driven on a fake clock with an in-memory transport and a stand-in client session: how long the
connection stays open without a question, how long it may stay silent during one, and that every
question gets exactly one answer. (The engine's bytes are ``test_side_session``'s subject; the real
connection against Dovecot is in ``tests/tagging/test_side_connection.py``.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from caliproxy.imap.actions import ClassifyAnswer, ClassifyMessages
from caliproxy.imap.credentials import Credentials, Replay
from caliproxy.imap.grammar import Atom
from caliproxy.imap.session import UpstreamSecurity
from caliproxy.net.imap_proxy import SIDE_IDLE_TIMEOUT, SIDE_SILENCE_TIMEOUT, SideLink
from tests.hiding.test_transcripts import SubjectClassifier, header_fetch
from tests.imap.conftest import DOVECOT_POST, DOVECOT_PRE


class FakeClient:
    """What a SideLink uses of its ClientProtocol."""

    def __init__(self) -> None:
        self.reactor = Clock()
        self.context = SimpleNamespace(
            settings=SimpleNamespace(upstream_security=UpstreamSecurity.TLS, max_response_line=1 << 20),
            upstream=SimpleNamespace(implicit_tls=True, tls_options=None, server_name="localhost"))
        self.peer = "192.0.2.1"
        self.answers: list[tuple[Any, Any]] = []
        self.gone: list[SideLink] = []
        self.connecting: list[tuple[Any, defer.Deferred[Any]]] = []

    def connect_upstream(self, protocol: Any) -> defer.Deferred[Any]:
        deferred: defer.Deferred[Any] = defer.Deferred()
        self.connecting.append((protocol, deferred))
        return deferred

    def answered(self, query: Any, answer: Any) -> None:
        self.answers.append((query, answer))
        self.gone_before_answer = list(self.gone)

    def side_gone(self, link: SideLink) -> None:
        self.gone.append(link)


QUERY = ClassifyMessages("INBOX", Atom("INBOX"), 7, (2,))


def connected() -> tuple[FakeClient, SideLink, StringTransport]:
    client = FakeClient()
    link = SideLink(client, Credentials(Replay.LOGIN, b"alice", b"pw"), SubjectClassifier())  # type: ignore[arg-type]
    link.ask(QUERY)
    protocol, _deferred = client.connecting[0]
    transport = StringTransport()
    protocol.makeConnection(transport)
    return client, link, transport


def upstream_says(client: FakeClient, transport: StringTransport, *lines: bytes) -> bytes:
    """Feed the upstream's lines; return what the link wrote meanwhile."""
    protocol = client.connecting[0][0]
    transport.clear()
    for line in lines:
        protocol.dataReceived(line if line.endswith(b"\r\n") else line + b"\r\n")
    client.reactor.advance(0)  # (what arrives is handed on from the reactor)
    return transport.value()


def judged(client: FakeClient, transport: StringTransport) -> None:
    assert upstream_says(client, transport, b"* OK [CAPABILITY " + DOVECOT_PRE + b"] ready") == \
        b's1 LOGIN "alice" "pw"\r\n'
    assert upstream_says(client, transport, b"s1 OK [CAPABILITY " + DOVECOT_POST + b"] Logged in") \
        == b"s2 EXAMINE INBOX\r\n"
    assert upstream_says(client, transport, b"* OK [UIDVALIDITY 7] ok", b"s2 OK [READ-ONLY] done") \
        == b"s3 UID FETCH 2 (BODY.PEEK[HEADER])\r\n"
    assert upstream_says(client, transport, header_fetch(1, 2, "hello")[3:], b"s3 OK done") \
        == b"s4 UNSELECT\r\n"
    upstream_says(client, transport, b"s4 OK done")
    [(query, answer)] = client.answers
    assert query is QUERY and isinstance(answer, ClassifyAnswer)
    assert answer.tags is not None and answer.tags[2].level == "internal"


def test_a_link_without_a_question_logs_out_after_a_few_seconds() -> None:
    client, link, transport = connected()
    judged(client, transport)
    transport.clear()
    client.reactor.advance(SIDE_IDLE_TIMEOUT - 0.5)
    assert client.gone == [] and not transport.disconnecting
    client.reactor.advance(1)
    assert client.gone == [link]  # (the next question opens a new one)
    assert transport.value().endswith(b" LOGOUT\r\n") and transport.disconnecting
    assert client.reactor.getDelayedCalls() == []


def test_a_question_keeps_the_link_open_and_the_upstreams_silence_ends_it() -> None:
    client, link, transport = connected()
    judged(client, transport)
    client.reactor.advance(SIDE_IDLE_TIMEOUT - 1)
    second = ClassifyMessages("INBOX", Atom("INBOX"), 7, (3,))
    link.ask(second)  # asked before the idle close: the same connection
    assert transport.value().endswith(b"s5 EXAMINE INBOX\r\n")
    client.reactor.advance(SIDE_IDLE_TIMEOUT + 1)
    assert client.gone == [] and len(client.answers) == 1  # busy: no idle close
    client.reactor.advance(SIDE_SILENCE_TIMEOUT)
    # silent too long: answered once, with nothing judged (the session reads the headers itself)
    assert client.answers[1] == (second, ClassifyAnswer(None))
    assert client.reactor.getDelayedCalls() == []


def test_a_refused_login_ends_the_link_before_its_answer_and_before_the_socket_closes() -> None:
    client, link, transport = connected()
    assert upstream_says(client, transport, b"* OK [CAPABILITY " + DOVECOT_PRE + b"] ready") == \
        b's1 LOGIN "alice" "pw"\r\n'
    upstream_says(client, transport, b"s1 NO [AUTHENTICATIONFAILED] Authentication failed.")
    # The session hears that the link is done (and reads why from its engine) first, so that
    # a question its client asks while the TLS close is still under way finds no closed link.
    assert client.gone == [link] and client.gone_before_answer == [link]
    assert link.engine.login_refused and transport.disconnecting
    assert client.answers == [(QUERY, ClassifyAnswer(None))]
    client.connecting[0][0].connectionLost()
    assert client.gone == [link]  # told once
    assert client.reactor.getDelayedCalls() == []
