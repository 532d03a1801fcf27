"""Where a SELECT's headers are read, against a real Dovecot: on the proxy's own connection, or,
when the upstream will not have one more, on the client's.

Dovecot logs every IMAP session's end with ``hdr_count`` (messages whose headers it returned),
which says on which connection the headers were read.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from caliproxy.net.imap_proxy import SIDE_IDLE_TIMEOUT

from .raw_client import RawImap
from .test_cache import MESSAGES, _message

pytestmark = pytest.mark.integration

_LEVEL = re.compile(rb"X-Caliproxy-Privacy:[^\r]*level=([\w.-]+);")


def _ended_sessions(dovecot, count: int, timeout: float = 10) -> list[int]:
    """The ``hdr_count`` of each of alice's ended IMAP sessions, once ``count`` have ended."""
    deadline = time.monotonic() + timeout
    while True:
        ended = re.findall(rb"imap\(alice\).*Disconnected: .*hdr_count=(\d+)",
                           Path(dovecot.log_path).read_bytes())
        if len(ended) >= count:
            return sorted(int(n) for n in ended)
        assert time.monotonic() < deadline, Path(dovecot.log_path).read_text()
        time.sleep(0.05)


def _sync(proxy, ca_pem) -> list[bytes]:
    with RawImap(proxy.ports["imaps"], ca_pem) as client:
        client.login()
        client.command("SELECT INBOX")
        data = client.command("UID FETCH 1:* (BODY.PEEK[HEADER])")
    return _LEVEL.findall(data)


@pytest.mark.parametrize("trust_level", ["secret", "internal"], ids=["tagging", "hiding"])
def test_the_headers_are_read_on_the_proxys_own_connection(dovecot, proxy_factory, server_cert_files,
                                                           trust_level):
    dovecot.bulk_load("alice", [_message(n) for n in range(MESSAGES)])
    proxy = proxy_factory(dovecot, extra_config={
        "policy": {"default_level": "internal"},
        "trust": {"rules": [{"name": "all", "level": trust_level}]}})
    assert _sync(proxy, server_cert_files.ca_pem) == [b"internal"] * MESSAGES
    # the client's session read only what its own FETCH asked for; the proxy's, every header once
    assert _ended_sessions(dovecot, 2) == [MESSAGES, MESSAGES]
    assert "side connection" not in proxy.log()  # (closed by LOGOUT, not by a failure)


def test_the_proxys_own_connection_logs_out_when_idle_and_comes_back_when_needed(
        dovecot, proxy_factory, server_cert_files):
    """SIDE_IDLE_TIMEOUT on a real clock: the proxy's own session ends by LOGOUT a few seconds
    after its last question, the client's stays, and new mail elsewhere opens another one."""
    dovecot.bulk_load("alice", [_message(n) for n in range(MESSAGES)])
    proxy = proxy_factory(dovecot, extra_config={"policy": {"default_level": "internal"}})
    with RawImap(proxy.ports["imaps"], server_cert_files.ca_pem) as client:
        client.login()
        client.command("SELECT INBOX")
        started = time.monotonic()
        assert _ended_sessions(dovecot, 1, timeout=SIDE_IDLE_TIMEOUT + 20) == [MESSAGES]
        assert time.monotonic() - started > SIDE_IDLE_TIMEOUT - 1  # (not at once)
        assert re.search(rb"imap\(alice\).*Disconnected: Logged out .*hdr_count=%d" % MESSAGES,
                         Path(dovecot.log_path).read_bytes())
        client.command("NOOP")  # the client's own session goes on
        dovecot.bulk_load("alice", [_message(n) for n in range(3)], mailbox="Archive")
        data = client.command("SELECT Archive")
        assert b"* 3 EXISTS" in data
        fetched = client.command("UID FETCH 1:* (BODY.PEEK[HEADER])")
        assert _LEVEL.findall(fetched) == [b"internal"] * 3
    # the second side session read the three new headers, the client's only its own FETCH's
    assert _ended_sessions(dovecot, 3) == [3, 3, MESSAGES]


def test_without_a_connection_to_spare_the_headers_are_read_on_the_clients(dovecot_factory,
                                                                          proxy_factory,
                                                                          server_cert_files):
    """One connection per user and address: the proxy's own login is refused, and the SELECT
    reads the headers on the client's connection instead: nothing unjudged, nothing lost."""
    dovecot = dovecot_factory(extra_config="protocol imap {\n  mail_max_userip_connections = 1\n}")
    dovecot.bulk_load("alice", [_message(n) for n in range(MESSAGES)])
    proxy = proxy_factory(dovecot, extra_config={"policy": {"default_level": "internal"}})
    assert _sync(proxy, server_cert_files.ca_pem) == [b"internal"] * MESSAGES
    # the SELECT's headers and the FETCH's, both on the client's session
    assert _ended_sessions(dovecot, 1) == [2 * MESSAGES]
    assert b"Maximum number of connections" in Path(dovecot.log_path).read_bytes()
