"""LOGIN, AUTHENTICATE (PLAIN, LOGIN, SASL-IR, cancel), who logged in, and client STARTTLS."""

from __future__ import annotations

import base64

import pytest

from caliproxy.imap.actions import (
    Authenticated,
    CommandDone,
    SendClient,
    SendServer,
    StartClientTLS,
)
from tests.imap.conftest import DOVECOT_POST, OFFERED_POST, PlaybookFactory
from tests.imap.playbook import Playbook

PASSWORD = b"s3cr3t-Pa55"
LOGGED_IN = b"S: a OK [CAPABILITY " + DOVECOT_POST + b"] Logged in"
LOGGED_IN_CLIENT = b">C: a OK [CAPABILITY " + OFFERED_POST + b"] Logged in"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def assert_password_only_goes_upstream(play: Playbook, secret: bytes = PASSWORD) -> None:
    """The password reaches the upstream and nowhere else: no other action, no repr."""
    encodings = {secret, b64(secret), secret.decode().encode("unicode_escape")}
    for action in play.actions:
        text = repr(action).encode()
        for form in encodings:
            assert form not in text, f"password in repr of {type(action).__name__}"
        if isinstance(action, SendClient):
            assert not any(form in b"".join(action.chunks) for form in encodings)
    assert any(isinstance(a, SendServer) for a in play.actions)
    assert secret.decode() not in repr(play.session.account)


def test_login_reports_the_account(ready: PlaybookFactory) -> None:
    play = ready()([
        b"C: a LOGIN bob " + PASSWORD,
        b">S: a LOGIN bob " + PASSWORD,
        LOGGED_IN,
        b"! Authenticated bob",
        LOGGED_IN_CLIENT,
    ])
    assert play.session.authenticated and play.session.account == "bob"
    assert play.statuses == [("LOGIN", "OK", False)]
    assert_password_only_goes_upstream(play)


def test_login_with_quoted_and_literal_names(ready: PlaybookFactory) -> None:
    play = ready()([
        b'C: a LOGIN "bob@example.org" {11}',
        b">C: + Ready for literal data",
        b"C| " + PASSWORD,
        b"C: ",
        b'>S| a LOGIN "bob@example.org" {11+}\r\n' + PASSWORD + b"\r\n",
        LOGGED_IN,
        b"! Authenticated bob@example.org",
        LOGGED_IN_CLIENT,
    ])
    assert_password_only_goes_upstream(play)


def test_login_name_as_literal(ready: PlaybookFactory) -> None:
    ready()([
        b"C| a LOGIN {9+}\r\nb\xc3\xb6b@host x\r\n",
        b">S| a LOGIN {9+}\r\nb\xc3\xb6b@host x\r\n",
        LOGGED_IN,
        "! Authenticated böb@host".encode(),
        LOGGED_IN_CLIENT,
    ])


def test_failed_login_does_not_authenticate(ready: PlaybookFactory) -> None:
    play = ready()([
        b"C: a LOGIN bob wrong",
        b">S: a LOGIN bob wrong",
        b"S: a NO [AUTHENTICATIONFAILED] Authentication failed.",
        b">C: a NO [AUTHENTICATIONFAILED] Authentication failed.",
    ])
    assert not play.session.authenticated and play.session.account is None


def test_second_login_is_refused_locally(logged_in: PlaybookFactory) -> None:
    logged_in()([b"C: a LOGIN eve x", b">C: a NO Already authenticated"])


def test_authenticate_plain_waits_for_the_challenge(ready: PlaybookFactory) -> None:
    response = b64(b"\0bob\0" + PASSWORD)
    play = ready()([
        # A client that does not wait: its response must not be read as a command.
        b"C| a AUTHENTICATE PLAIN\r\n" + response + b"\r\n",
        b">S: a AUTHENTICATE PLAIN",
        b"S: + ",
        b">C: + ",
        b">S: " + response,
        LOGGED_IN,
        b"! Authenticated bob",
        LOGGED_IN_CLIENT,
    ])
    assert play.statuses == [("AUTHENTICATE", "OK", False)]
    assert_password_only_goes_upstream(play)


def test_authenticate_plain_with_initial_response(ready: PlaybookFactory) -> None:
    response = b64(b"\0bob\0" + PASSWORD)
    play = ready()([
        b"C: a AUTHENTICATE PLAIN " + response,
        b">S: a AUTHENTICATE PLAIN " + response,
        LOGGED_IN,
        b"! Authenticated bob",
        LOGGED_IN_CLIENT,
    ])
    assert_password_only_goes_upstream(play)


def test_authenticate_plain_account_is_the_authorization_identity(ready: PlaybookFactory) -> None:
    """RFC 4616: with an authzid the session acts as that identity, not as the one who logged in."""
    response = b64(b"alice\0admin\0" + PASSWORD)
    play = ready()([
        b"C: a AUTHENTICATE PLAIN " + response,
        b">S: a AUTHENTICATE PLAIN " + response,
        LOGGED_IN,
        b"! Authenticated alice",
        LOGGED_IN_CLIENT,
    ])
    assert play.session.account == "alice"


def test_authenticate_login_mechanism(ready: PlaybookFactory) -> None:
    play = ready()([
        b"C: a authenticate login",
        b">S: a AUTHENTICATE login",
        b"S: + VXNlcm5hbWU6",
        b">C: + VXNlcm5hbWU6",
        b"C: " + b64(b"bob"),
        b">S: " + b64(b"bob"),
        b"S: + UGFzc3dvcmQ6",
        b">C: + UGFzc3dvcmQ6",
        b"C: " + b64(PASSWORD),
        b">S: " + b64(PASSWORD),
        LOGGED_IN,
        b"! Authenticated bob",
        LOGGED_IN_CLIENT,
    ])
    assert_password_only_goes_upstream(play)


def test_authenticate_login_with_initial_response(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a AUTHENTICATE LOGIN " + b64(b"bob"),
        b">S: a AUTHENTICATE LOGIN " + b64(b"bob"),
        b"S: + UGFzc3dvcmQ6",
        b">C: + UGFzc3dvcmQ6",
        b"C: " + b64(PASSWORD),
        b">S: " + b64(PASSWORD),
        LOGGED_IN,
        b"! Authenticated bob",
        LOGGED_IN_CLIENT,
    ])


def test_authenticate_cancelled_by_the_client(ready: PlaybookFactory) -> None:
    play = ready()([
        b"C: a AUTHENTICATE PLAIN",
        b">S: a AUTHENTICATE PLAIN",
        b"S: + ",
        b">C: + ",
        b"C: *",
        b">S: *",
        b"S: a BAD Authentication canceled",
        b">C: a BAD Authentication canceled",
        # Back to commands, literals and all.
        b"C: b LOGIN {3+}",
        b"C| bob x\r\n",
        b">S| b LOGIN {3+}\r\nbob x\r\n",
    ])
    assert not play.session.authenticated


def test_sasl_lines_are_never_read_as_commands_or_literals(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a AUTHENTICATE PLAIN",
        b">S: a AUTHENTICATE PLAIN",
        b"S: + ",
        b">C: + ",
        b"C: b LOGOUT {5}",
        b">S: b LOGOUT {5}",
        b"C: c NOOP",
        b"S: a BAD Invalid base64",
        b">C: a BAD Invalid base64",
        b">S: c NOOP",
    ])


def test_authenticate_with_a_list_is_refused_not_a_crash(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a AUTHENTICATE PLAIN (x)",
        b">C: a BAD AUTHENTICATE takes a mechanism and an optional initial response",
        b"C: b AUTHENTICATE PLAIN {4+}",
        b"C| abcd\r\n",
        b">C: b BAD AUTHENTICATE takes a mechanism and an optional initial response",
    ])


def test_authenticate_failure(ready: PlaybookFactory) -> None:
    play = ready()([
        b"C: a AUTHENTICATE PLAIN " + b64(b"\0bob\0wrong"),
        b">S: a AUTHENTICATE PLAIN " + b64(b"\0bob\0wrong"),
        b"S: a NO [AUTHENTICATIONFAILED] Authentication failed.",
        b">C: a NO [AUTHENTICATIONFAILED] Authentication failed.",
    ])
    assert not play.session.authenticated
    assert not any(isinstance(a, Authenticated) for a in play.actions)


# -- client STARTTLS ------------------------------------------------------------------------------


@pytest.fixture
def plain(ready: PlaybookFactory) -> Playbook:
    return ready(client_tls=False, starttls_available=True)


def test_starttls_discards_pipelined_bytes(plain: Playbook) -> None:
    plain([
        b"C| a STARTTLS\r\nb LOGIN bob injected\r\nc SELECT INBOX\r\n",
        b">C: a OK Begin TLS negotiation now",
        b"! StartClientTLS",
    ])
    kinds = [type(a) for a in plain.actions if not isinstance(a, CommandDone)]
    assert kinds[-2:] == [SendClient, StartClientTLS], "the OK goes out before the handshake"
    plain([b"C: d NOOP", b">S: d NOOP"])
    assert plain.session.client_tls


def test_starttls_waits_for_commands_in_flight(plain: Playbook) -> None:
    plain([
        b"C: a CAPABILITY",
        b">S: a CAPABILITY",
        b"C: b STARTTLS",
        b"C: c LOGIN bob injected",
        b"S: * CAPABILITY IMAP4rev1 AUTH=PLAIN",
        b">C: * CAPABILITY IMAP4rev1 LITERAL+ ENABLE STARTTLS LOGINDISABLED",
        b"S: a OK done",
        b">C: a OK done",
        b">C: b OK Begin TLS negotiation now",
        b"! StartClientTLS",
    ])
    plain([b"C: d NOOP", b">S: d NOOP"])


@pytest.mark.parametrize(
    ("overrides", "line", "answer"),
    [
        ({"client_tls": True}, b"a STARTTLS", b"a BAD STARTTLS not available now"),
        ({"client_tls": False, "starttls_available": False}, b"a STARTTLS", b"a BAD STARTTLS not available now"),
        ({"client_tls": False, "starttls_available": True}, b"a STARTTLS now", b"a BAD unexpected arguments"),
    ],
)
def test_starttls_refused(ready: PlaybookFactory, overrides: dict[str, bool], line: bytes, answer: bytes) -> None:
    ready(**overrides)([b"C: " + line, b">C: " + answer])


def test_starttls_after_login_refused(ready: PlaybookFactory) -> None:
    ready(client_tls=False, starttls_available=True, plaintext_login_allowed=True)([
        b"C: a LOGIN bob x",
        b">S: a LOGIN bob x",
        b"S: a OK Logged in",
        b"! Authenticated bob",
        b">C: a OK Logged in",
        b"C: b STARTTLS",
        b">C: b BAD STARTTLS not available now",
    ])
