"""upstream.smtp's reply_timeout and data_timeout, end to end: the real ``caliproxy run`` process in
front of the scripted upstream (tests/smtp/fault_upstream.py) that stops answering.

With timeouts of one second, a stall must reach the client as 421 (never 250), long before its own
10-second timeout and the built-in 60/90 s, and the message the client then sends again is stored
exactly once.
"""

from __future__ import annotations

import smtplib
import socket
import uuid
from dataclasses import dataclass

import pytest

from caliproxy.demo.dovecot import free_port
from tests.smtp.fault_upstream import Fault, FaultUpstream
from tests.smtp.test_relay_faults import message, scripted

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class _UnusedImap:
    """The IMAP upstream the configuration requires; nothing here connects to it."""

    host: str
    imaps_port: int


def send(port: int, message_id: str) -> int | None:
    """Send one message on a new connection; the code the client was finally told (None: none)."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        client.login("user", "password")
        client.sendmail("a@example.test", ["b@example.test"], message(message_id))
        client.quit()
        return 250
    except smtplib.SMTPRecipientsRefused as exc:
        [(code, _)] = exc.recipients.values()
        return code
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return exc.smtp_code
    except (smtplib.SMTPServerDisconnected, OSError):
        return None
    finally:
        client.close()


def start_proxy(proxy_factory, upstream_port: int, **timeouts: float):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    imap = _UnusedImap("127.0.0.1", closed.getsockname()[1])
    closed.close()
    listeners = [{"name": "submission", "protocol": "smtp", "port": free_port(), "tls": "none",
                  "allow_plaintext_login": True}]
    smtp = {"host": "127.0.0.1", "port": upstream_port, "tls": "none", **timeouts}
    return proxy_factory(imap, smtp_upstream=smtp, listeners=listeners)


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
@pytest.mark.parametrize(("fault", "setting"), [(Fault.STALL_AFTER_DATA, "data_timeout"),
                                                (Fault.STALL_AT_RCPT, "reply_timeout")])
def test_a_stall_past_the_configured_timeout_gives_421_and_nothing_is_lost(proxy_factory, fault,
                                                                           setting, chunking):
    with FaultUpstream(scripted(fault).__next__, chunking=chunking) as upstream:
        proxy = start_proxy(proxy_factory, upstream.port, **{setting: 1})
        message_id = f"<{uuid.uuid4().hex}@example.test>"
        # 421 (the proxy then closes): the client keeps the message and sends it again
        assert send(proxy.ports["submission"], message_id) == 421, proxy.log()[-2000:]
        assert "upstream silent for 1 s" in proxy.log()
        assert send(proxy.ports["submission"], message_id) == 250
    assert upstream.stored == {message_id: 1}
    assert upstream.faults[fault] == 1
