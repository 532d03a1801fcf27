"""One proxy, several doors to the same mailboxes: ``trusted`` sees secret mail, ``cafe`` does not.

The policy makes a message secret when its Subject contains ``SECRET`` and internal otherwise;
the trust rules give the ``cafe`` and ``cafe-plain`` listeners clearance internal and every other
listener secret (``cafe-plain`` adds no privacy header, so its bytes compare with Dovecot's). The
secret messages carry unique markers in their subject and body so a test can prove that none of
their bytes ever reached an untrusted client.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from caliproxy.demo.dovecot import DovecotServer, free_port
from tests.fixtures.proxy import ProxyProcess
from tests.hiding.wire import WireClient

USERS = {"alice": "alicepw", "bob": "bobpw"}

POLICY: dict[str, Any] = {
    "default_level": "internal",
    "rules": [{"name": "secret-subject", "level": "secret",
               "match": {"header": {"name": "Subject", "regex": "SECRET"}}}],
}
TRUST: dict[str, Any] = {
    "rules": [
        {"name": "cafe-wifi", "level": "internal", "match": {"listener": ["cafe", "cafe-plain"]}},
        {"name": "at-home", "level": "secret"},
    ],
}


def message(subject: str, body: str, *, message_id: str | None = None, size: int = 0) -> bytes:
    """An RFC 5322 message with CRLF line ends; ``size`` pads the body to about that many bytes."""
    mid = message_id or f"<{secrets.token_hex(8)}@hiding.test>"
    text = (
        "From: Carol <carol@example.test>\r\n"
        "To: Alice <alice@example.test>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 03 Jun 2024 10:00:00 +0000\r\n"
        f"Message-ID: {mid}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()
    if size > len(text):
        filler = b"filler line of the message body, nothing to see\r\n"
        text += filler * ((size - len(text)) // len(filler))
    return text


@dataclass
class Secret:
    """A secret message and the strings that must never reach an untrusted client."""

    raw: bytes
    subject_marker: bytes
    body_marker: bytes
    message_id: bytes
    uid: int = 0

    @property
    def markers(self) -> list[bytes]:
        return [self.subject_marker, self.body_marker, self.message_id]


def secret_message(size: int = 0) -> Secret:
    token = secrets.token_hex(6)
    subject_marker = f"Qx{token}Sm".encode()
    body_marker = f"Bd{token}Zk".encode()
    message_id = f"<sec{token}@hiding.test>".encode()
    raw = message(f"SECRET payroll {subject_marker.decode()}", f"the body says {body_marker.decode()}",
                  message_id=message_id.decode(), size=size)
    return Secret(raw, subject_marker, body_marker, message_id)


@dataclass
class Hiding:
    """Dovecot, the proxy in front of it, and ways to reach both."""

    dovecot: DovecotServer
    proxy: ProxyProcess
    clients: list[WireClient] = field(default_factory=list)

    def connect(self, listener: str, user: str = "alice") -> WireClient:
        client = WireClient(self.proxy.ports[listener], self.proxy.ca_pem)
        self.clients.append(client)
        client.login(user, USERS[user])
        return client

    def cafe(self, user: str = "alice") -> WireClient:
        return self.connect("cafe", user)

    def trusted(self, user: str = "alice") -> WireClient:
        return self.connect("trusted", user)

    def direct(self, user: str = "bob") -> WireClient:
        """Straight to Dovecot, no proxy (for 'what would the real server answer')."""
        client = WireClient(self.dovecot.imaps_port, self.proxy.ca_pem)
        self.clients.append(client)
        client.login(user, USERS[user])
        return client

    def save(self, user: str, raw: bytes, mailbox: str = "INBOX") -> None:
        """Store the bytes as they are (no Received line), as a new arrival."""
        if mailbox.upper() != "INBOX":
            self.dovecot.deliver(user, raw, mailbox)  # creates the mailbox, then doveadm save
            return
        self.dovecot.doveadm("save", "-u", user, "-m", mailbox, input=raw)

    def close(self) -> None:
        for client in self.clients:
            client.close()


HidingFactory = Callable[..., Hiding]


@pytest.fixture
def hiding_factory(dovecot_factory, proxy_factory) -> Any:
    """``factory(tagging=True, policy=POLICY)``: a fresh Dovecot and a proxy with ``trusted`` and
    ``cafe``."""
    made: list[Hiding] = []

    def make(*, tagging: bool = True, extra_listeners: list[dict[str, Any]] | None = None,
             policy: dict[str, Any] | None = None) -> Hiding:
        dovecot = dovecot_factory(users=USERS)
        listeners = [
            {"name": "trusted", "port": free_port(), "tls": "implicit", "tagging": tagging},
            {"name": "cafe", "port": free_port(), "tls": "implicit", "tagging": tagging},
            # hides without adding our header: its bytes compare with Dovecot's own
            {"name": "cafe-plain", "port": free_port(), "tls": "implicit", "tagging": False},
            *(extra_listeners or []),
        ]
        proxy = proxy_factory(dovecot, listeners=listeners,
                              extra_config={"policy": policy or POLICY, "trust": TRUST})
        setup = Hiding(dovecot, proxy)
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.close()


@pytest.fixture
def hiding(hiding_factory) -> Hiding:
    return hiding_factory()


def assert_no_leak(received: bytes | bytearray, *secrets_: Secret) -> None:
    """None of the secrets' markers is anywhere in ``received``."""
    data = bytes(received)
    for secret in secrets_:
        for marker in secret.markers:
            assert marker not in data, f"{marker!r} reached the untrusted client"
