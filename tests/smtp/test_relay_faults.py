"""Nothing acknowledged is ever lost: the relay under upstream faults.

The SMTP listener runs in-process on the asyncio reactor (pytest-twisted), in front of a scripted
upstream that refuses, fails, drops connections mid-DATA and stalls (tests/smtp/fault_upstream.py);
clients are Python's smtplib in threads. The reply timeouts are shortened so that stalls cost
fractions of a second.
"""

from __future__ import annotations

import random
import smtplib
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from caliproxy.demo.dovecot import free_port
from caliproxy.net.smtp_server import SubmissionContext, SubmissionListener
from caliproxy.net.smtp_upstream import UpstreamTarget, UpstreamTimeouts
from caliproxy.smtp.relay import ClientConnected, ClientDisconnected, MessageRelayed, Outcome
from caliproxy.smtp.tagging import NO_TAGGING
from tests.smtp.fault_upstream import Fault, FaultUpstream

# Every final reply runs on this deadline, not only the stalled ones: with less than a second,
# a pause of the test process (the fake upstream runs in its threads) would turn a 250 into a 421.
STALL_TIMEOUT = 1.0


def start_listener(upstream_port: int) -> tuple[SubmissionListener, list[object], int]:
    """A plaintext-allowed listener (no TLS: these tests are about the relay) to ``upstream_port``."""
    port = free_port()
    context = SubmissionContext(
        name="faults", address="127.0.0.1", port=port, tls="none", allow_plaintext=True,
        ssl_context=None, upstream=UpstreamTarget("127.0.0.1", upstream_port, "none", None, 5.0),
        tagger=NO_TAGGING, hostname="proxy.test",
        timeouts=UpstreamTimeouts(greeting=5, command=5, data_start=5, data_end=STALL_TIMEOUT))
    events: list[object] = []
    listener = SubmissionListener(context, reactor, {}, events.append)
    listener.startService()
    return listener, events, port


def scripted(*faults: Fault) -> Iterator[Fault]:
    yield from faults
    while True:
        yield Fault.ACCEPT


def message(message_id: str) -> bytes:
    return (f"From: a@example.test\r\nTo: b@example.test\r\nMessage-ID: {message_id}\r\n"
            f"Subject: fault test\r\n\r\n").encode() + b"line\r\n" * 20


def send_one(port: int, client: smtplib.SMTP | None = None) -> tuple[str, int | None, smtplib.SMTP | None]:
    """Send one message; return its Message-ID, the code the client was finally told (None if it
    was told nothing) and the client connection if it is still usable."""
    message_id = f"<{uuid.uuid4().hex}@example.test>"
    if client is None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
        client.login("user", "password")
    try:
        client.sendmail("a@example.test", ["b@example.test"], message(message_id))
        return message_id, 250, client
    except smtplib.SMTPRecipientsRefused as exc:
        [(code, _)] = exc.recipients.values()
        return message_id, code, None if code == 421 else client
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return message_id, exc.smtp_code, None if exc.smtp_code == 421 else client
    except (smtplib.SMTPServerDisconnected, OSError):
        return message_id, None, None


# How the upstream lets us relay: MAIL with the first RCPT (PIPELINING) or alone; the message by
# BDAT (CHUNKING) or DATA.
WAYS = [pytest.param({"pipelining": True, "chunking": False}, id="pipelining-data"),
        pytest.param({"pipelining": False, "chunking": False}, id="plain-data"),
        pytest.param({"pipelining": True, "chunking": True}, id="pipelining-bdat")]


@pytest.mark.parametrize("way", WAYS)
@pytest_twisted.inlineCallbacks
def test_temporary_failure_after_data_is_relayed_as_4xx_and_the_session_goes_on(way):
    with FaultUpstream(scripted(Fault.TEMPORARY_AFTER_DATA).__next__, **way) as upstream:
        listener, events, port = start_listener(upstream.port)
        try:
            _, code, client = yield threads.deferToThread(send_one, port)
            assert code == 451 and client is not None
            second, code, client = yield threads.deferToThread(send_one, port, client)
            assert code == 250
            yield threads.deferToThread(client.quit)
        finally:
            yield listener.stopService()
    assert upstream.stored == {second: 1}
    assert [e.outcome for e in events if isinstance(e, MessageRelayed)] == [Outcome.TEMPORARY,
                                                                            Outcome.ACCEPTED]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("fault", [Fault.DROP_MID_DATA, Fault.DROP_AT_MAIL, Fault.STALL_AFTER_DATA,
                                   Fault.DROP_AFTER_STORING])
@pytest_twisted.inlineCallbacks
def test_a_lost_or_stalled_upstream_gives_421_never_250(fault, way):
    with FaultUpstream(scripted(fault).__next__, **way) as upstream:
        listener, _, port = start_listener(upstream.port)
        try:
            started = time.monotonic()
            message_id, code, client = yield threads.deferToThread(send_one, port)
            took = time.monotonic() - started
            assert (code, client) == (421, None), fault
            assert took < STALL_TIMEOUT + 3
            # the client reconnects and the next message goes through on a fresh upstream session
            _, code, client = yield threads.deferToThread(send_one, port)
            assert code == 250
            yield threads.deferToThread(client.quit)
        finally:
            yield listener.stopService()
    # "stored, then dropped before the reply": the upstream has it, the client was told 4xx and
    # will send it again; a duplicate is the price of never losing one (RFC 1047).
    assert upstream.stored[message_id] == (1 if fault is Fault.DROP_AFTER_STORING else 0)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("fault", "expected"), [(Fault.PERMANENT_AFTER_DATA, 554), (Fault.REFUSE_RCPT, 550),
                                                 (Fault.REFUSE_DATA, 554), (Fault.REFUSE_MAIL_TEMPORARILY, 451)])
@pytest_twisted.inlineCallbacks
def test_upstream_refusals_reach_the_client_with_their_own_code(fault, expected, way):
    with FaultUpstream(scripted(fault).__next__, **way) as upstream:
        listener, _, port = start_listener(upstream.port)
        try:
            _, code, client = yield threads.deferToThread(send_one, port)
            assert code == expected
            yield threads.deferToThread(client.quit)
        finally:
            yield listener.stopService()
    assert not upstream.stored


@pytest_twisted.inlineCallbacks
def test_an_unasked_upstream_reply_is_never_taken_for_the_answer_to_the_next_command():
    with FaultUpstream(hang_up_after_login=True) as upstream:
        listener, _, port = start_listener(upstream.port)
        try:
            _, code, client = yield threads.deferToThread(send_one, port)
        finally:
            yield listener.stopService()
    assert (code, client) == (421, None)
    assert not upstream.faults  # MAIL never reached the upstream


def _soak_worker(port: int, count: int) -> list[tuple[str, int | None]]:
    results = []
    client = None
    for _ in range(count):
        message_id, code, client = send_one(port, client)
        results.append((message_id, code))
    if client is not None:
        client.quit()
    return results


@pytest_twisted.inlineCallbacks
def test_soak_of_1000_messages_under_random_faults_loses_nothing_acknowledged():
    """Every message the client got a 250 for is stored upstream exactly once; every other one got
    a 4xx/5xx; the counts per reply code match the faults the upstream acted out."""
    rng = random.Random(20261127)
    weights = {Fault.ACCEPT: 70, Fault.REFUSE_MAIL_TEMPORARILY: 3, Fault.REFUSE_RCPT: 3,
               Fault.REFUSE_DATA: 2, Fault.TEMPORARY_AFTER_DATA: 5, Fault.PERMANENT_AFTER_DATA: 4,
               Fault.DROP_AT_MAIL: 3, Fault.DROP_MID_DATA: 4, Fault.DROP_AFTER_STORING: 3,
               Fault.STALL_AFTER_DATA: 3}
    faults, cumulative = list(weights), list(weights.values())

    def plan() -> Fault:
        return rng.choices(faults, cumulative)[0]

    # half the clients through an upstream taking DATA, half through one taking BDAT
    workers, per_worker = 4, 250
    with FaultUpstream(plan) as by_data, FaultUpstream(plan, chunking=True) as by_bdat:
        listeners = [start_listener(by_data.port), start_listener(by_bdat.port)]
        try:
            batches = yield defer.gatherResults(
                [threads.deferToThread(_soak_worker, listeners[i % 2][2], per_worker)
                 for i in range(workers)])
        finally:
            for listener, _, _ in listeners:
                yield listener.stopService()
    events = listeners[0][1] + listeners[1][1]
    stored = by_data.stored + by_bdat.stored
    results = [item for batch in batches for item in batch]
    assert len(results) == workers * per_worker == 1000
    told = Counter(code for _, code in results)
    assert None not in told, "a client was left without a reply"
    assert all(code == 250 or 400 <= code < 600 for code in told)
    acknowledged = [message_id for message_id, code in results if code == 250]
    for message_id in acknowledged:
        assert stored[message_id] == 1, message_id
    # every transaction the upstream saw ended as its fault says, and the client heard exactly that
    f = by_data.faults + by_bdat.faults
    assert sum(f.values()) == 1000
    assert told[250] == f[Fault.ACCEPT] == len(acknowledged)
    assert told[421] == (f[Fault.DROP_AT_MAIL] + f[Fault.DROP_MID_DATA] + f[Fault.DROP_AFTER_STORING]
                         + f[Fault.STALL_AFTER_DATA])
    assert told[451] == f[Fault.REFUSE_MAIL_TEMPORARILY] + f[Fault.TEMPORARY_AFTER_DATA]
    assert told[550] == f[Fault.REFUSE_RCPT]
    assert told[554] == f[Fault.REFUSE_DATA] + f[Fault.PERMANENT_AFTER_DATA]
    assert sum(stored.values()) == told[250] + f[Fault.DROP_AFTER_STORING]
    assert all(f[fault] > 0 for fault in weights)
    relayed = Counter(e.outcome for e in events if isinstance(e, MessageRelayed))
    assert relayed[Outcome.ACCEPTED] == told[250]


def _logged_in(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.login("user", "password")
    return client


@pytest_twisted.inlineCallbacks
def test_stopping_the_listener_tells_idle_clients_421():
    with FaultUpstream() as upstream:
        listener, _, port = start_listener(upstream.port)
        client = yield threads.deferToThread(_logged_in, port)
        yield listener.stopService()
        code, text = yield threads.deferToThread(client.noop)
        assert code == 421 and text.startswith(b"4.3.2")
        client.close()


def _busy_then_idle(port: int) -> tuple[list[int], bytes]:
    """NOOP every 0.2 s for 2.4 s, then silence: the NOOP codes and what the socket read after."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    codes = []
    for _ in range(12):
        codes.append(client.noop()[0])
        time.sleep(0.2)
    client.sock.settimeout(5)
    after = client.sock.recv(100)  # b"" once the proxy closes the idle connection
    client.close()
    return codes, after


@pytest_twisted.inlineCallbacks
def test_a_client_is_closed_after_its_idle_timeout_and_every_command_restarts_it():
    with FaultUpstream() as upstream:
        listener, _, port = start_listener(upstream.port)
        listener.context = replace(listener.context, client_timeout=1.5)
        try:
            codes, after = yield threads.deferToThread(_busy_then_idle, port)
        finally:
            yield listener.stopService()
    assert codes == [250] * 12  # 2.4 s of activity outlived the 1.5 s idle timeout
    assert after == b""


@pytest_twisted.inlineCallbacks
def test_client_connections_send_small_replies_at_once():
    """TCP_NODELAY on the accepted socket: a reply written right after another must not wait for
    the client's delayed ACK (asyncio sets it only on sockets that say they are TCP)."""
    with FaultUpstream() as upstream:
        listener, _, port = start_listener(upstream.port)
        try:
            client = yield threads.deferToThread(_logged_in, port)
            [connection] = listener.connections
            sock = connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            yield threads.deferToThread(client.quit)
        finally:
            yield listener.stopService()


def _gone_without_a_word(port: int) -> None:
    """Three clients that leave: before the greeting, after a half-close, and after EHLO."""
    quick = socket.create_connection(("127.0.0.1", port), timeout=5)
    quick.close()
    half = socket.create_connection(("127.0.0.1", port), timeout=5)
    half.shutdown(socket.SHUT_WR)
    talker = socket.create_connection(("127.0.0.1", port), timeout=5)
    talker.sendall(b"EHLO client.test\r\n")
    talker.close()
    time.sleep(0.5)
    half.close()


@pytest_twisted.inlineCallbacks
def test_a_client_that_closes_its_side_is_let_go_at_once():
    """An EOF ends the connection, even one that comes before the greeting (on uvloop the
    connection and its EOF can arrive in one pass, before aiosmtpd's command loop has started):
    not 300 s later at the idle timeout."""
    with FaultUpstream() as upstream:
        listener, events, port = start_listener(upstream.port)
        try:
            yield threads.deferToThread(_gone_without_a_word, port)
            deadline = time.monotonic() + 5
            while listener.connections and time.monotonic() < deadline:
                yield task.deferLater(reactor, 0.05, lambda: None)
            assert not listener.connections
        finally:
            yield listener.stopService()
    assert Counter(type(e) for e in events if isinstance(e, ClientConnected | ClientDisconnected)) == \
        {ClientConnected: 3, ClientDisconnected: 3}
