"""Upstream setup before the client hears anything, and the capability allow-list in all three places."""

from __future__ import annotations

from caliproxy.imap.actions import SendClient, SendServer, StartClientTLS, StartServerTLS
from caliproxy.imap.session import UpstreamSecurity
from tests.imap.conftest import (
    DOVECOT_POST,
    DOVECOT_PRE,
    OFFERED_POST,
    OFFERED_PRE_TLS,
    PlaybookFactory,
    SessionFactory,
)
from tests.imap.playbook import Playbook

GREETING = b">C: * OK [CAPABILITY " + OFFERED_PRE_TLS + b"] caliproxy ready."


def test_greeting_with_capabilities_is_rewritten(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * OK [CAPABILITY " + DOVECOT_PRE + b"] Dovecot (Debian) ready.",
        GREETING,
    ])


def test_greeting_without_capabilities_asks_for_them_first(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * OK Dovecot ready.",
        b">S: cp.1 CAPABILITY",
        b"S: * CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN XYZZY",
        b"S: * OK chatter during setup is not for the client",
        b"S: cp.1 OK Pre-login capabilities listed.",
        b">C: * OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE ENABLE AUTH=PLAIN] caliproxy ready.",
    ])


def test_capability_code_on_the_tagged_ok_counts(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * OK hi",
        b">S: cp.1 CAPABILITY",
        b"S: cp.1 OK [CAPABILITY IMAP4rev1 ID AUTH=LOGIN] done",
        b">C: * OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE AUTH=LOGIN] caliproxy ready.",
    ])


def test_upstream_starttls_then_fresh_capabilities(make_session: SessionFactory) -> None:
    play = Playbook(make_session(upstream_security=UpstreamSecurity.STARTTLS))
    play([
        b"S: * OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] Dovecot ready.",
        b">S: cp.1 STARTTLS",
        b"S: cp.1 OK Begin TLS negotiation now.",
        b"! StartServerTLS",
        b">S: cp.2 CAPABILITY",
        b"S: * CAPABILITY " + DOVECOT_PRE,
        b"S: cp.2 OK Pre-login capabilities listed.",
        GREETING,
    ])
    # The handshake starts before the CAPABILITY that must travel inside it.
    kinds = [type(a) for a in play.actions]
    start = kinds.index(StartServerTLS)
    after = play.actions[start + 1]
    assert isinstance(after, SendServer) and after.chunks == [b"cp.2 CAPABILITY\r\n"]


def test_upstream_starttls_discards_bytes_injected_after_its_ok(make_session: SessionFactory) -> None:
    """Anything after the OK arrived before the handshake: a plaintext injection, dropped."""
    Playbook(make_session(upstream_security=UpstreamSecurity.STARTTLS))([
        b"S: * OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready",
        b">S: cp.1 STARTTLS",
        (b"S| cp.1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN XINJECTED\r\n"
        b"cp.2 OK [CAPABILITY IMAP4rev1 AUTH=LOGIN] injected\r\n"),
        b"! StartServerTLS",
        b">S: cp.2 CAPABILITY",
        b"S: * CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN",
        b"S: cp.2 OK done",
        b">C: * OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE ENABLE AUTH=PLAIN] caliproxy ready.",
    ])


def test_upstream_starttls_without_capabilities_in_greeting(make_session: SessionFactory) -> None:
    Playbook(make_session(upstream_security=UpstreamSecurity.STARTTLS))([
        b"S: * OK ready",
        b">S: cp.1 STARTTLS",
        b"S: cp.1 OK go",
        b"! StartServerTLS",
        b">S: cp.2 CAPABILITY",
    ])


def test_upstream_not_offering_starttls_is_refused(make_session: SessionFactory) -> None:
    Playbook(make_session(upstream_security=UpstreamSecurity.STARTTLS))([
        b"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready",
        b">C: * BYE upstream protocol error: upstream does not offer STARTTLS",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_upstream_refusing_starttls_ends_the_session(make_session: SessionFactory) -> None:
    Playbook(make_session(upstream_security=UpstreamSecurity.STARTTLS))([
        b"S: * OK [CAPABILITY IMAP4rev1 STARTTLS] ready",
        b">S: cp.1 STARTTLS",
        b"S: cp.1 NO not now",
        b">C: * BYE upstream protocol error: upstream refused STARTTLS",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_upstream_preauth_is_refused(make_session: SessionFactory) -> None:
    """A PREAUTH greeting could be a STARTTLS-stripping attack; never accept it."""
    play = Playbook(make_session())([
        b"S: * PREAUTH [CAPABILITY IMAP4rev1] logged in as admin",
        b">C: * BYE upstream protocol error: upstream sent PREAUTH; refusing an unauthenticated session",
        b"! CloseClient",
        b"! CloseServer",
    ])
    assert play.session.closed and not play.session.authenticated
    play([b"S: * OK ignored", b"C: a NOOP"])


def test_upstream_bye_greeting(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * BYE Too many connections",
        b">C: * BYE upstream protocol error: upstream refused the connection",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_upstream_bye_during_setup(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * OK ready",
        b">S: cp.1 CAPABILITY",
        b"S: * BYE shutting down",
        b">C: * BYE upstream protocol error: upstream closed the connection during setup",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_upstream_literal_during_setup(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"S: * OK ready",
        b">S: cp.1 CAPABILITY",
        b"S: * CAPABILITY {3}",
        b">C: * BYE upstream protocol error: literal during connection setup",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_upstream_lost_before_greeting(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"~ server_lost certificate verify failed",
        b">C: * BYE upstream connection lost: certificate verify failed",
        b"! CloseClient",
        b"! CloseServer",
    ])


def test_client_bytes_before_the_greeting_wait(make_session: SessionFactory) -> None:
    Playbook(make_session())([
        b"C: a CAPABILITY",
        b"S: * OK [CAPABILITY " + DOVECOT_PRE + b"] ready",
        GREETING,
        b">S: a CAPABILITY",
    ])


# -- capabilities in the other two places ---------------------------------------------------------


def test_untagged_capability_is_rewritten(ready: PlaybookFactory) -> None:
    ready()([
        b"C: a CAPABILITY",
        b">S: a CAPABILITY",
        b"S: * CAPABILITY " + DOVECOT_PRE + b" COMPRESS=DEFLATE CONDSTORE",
        b">C: * CAPABILITY " + OFFERED_PRE_TLS,
        b"S: a OK Pre-login capabilities listed, post-login capabilities have more.",
        b">C: a OK Pre-login capabilities listed, post-login capabilities have more.",
    ])


def test_login_ok_code_is_rewritten_for_an_authenticated_session(ready: PlaybookFactory) -> None:
    play = ready()
    play([
        b"C: a LOGIN bob secret",
        b">S: a LOGIN bob secret",
        b"S: a OK [CAPABILITY " + DOVECOT_POST + b"] Logged in",
        b"! Authenticated bob",
        b">C: a OK [CAPABILITY " + OFFERED_POST + b"] Logged in",
        b"C: b CAPABILITY",
        b">S: b CAPABILITY",
        b"S: * CAPABILITY " + DOVECOT_POST,
        b">C: * CAPABILITY " + OFFERED_POST,
        b"S: b OK done",
        b">C: b OK done",
    ])


def test_untagged_ok_capability_code_is_rewritten(logged_in: PlaybookFactory) -> None:
    logged_in()([
        b"C: n NOOP",
        b">S: n NOOP",
        b"S: * OK [CAPABILITY IMAP4rev1 IDLE CONDSTORE COMPRESS=DEFLATE] refreshed",
        b">C: * OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE ENABLE] refreshed",
    ])


def test_no_offered_extension_leaks_from_dovecots_full_list() -> None:
    from caliproxy.imap import capabilities

    ctx = capabilities.ClientContext(True, False, False, authenticated=True)
    offered = capabilities.offered(DOVECOT_POST.split(), ctx)
    for hidden in (b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SORT", b"THREAD=REFS", b"COMPRESS=DEFLATE",
                   b"CATENATE", b"URL-PARTIAL", b"LIST-STATUS", b"BINARY", b"NOTIFY", b"SEARCHRES",
                   b"ESORT", b"CONTEXT=SEARCH", b"QUOTA", b"STATUS=SIZE", b"SASL-IR", b"AUTH=PLAIN"):
        assert hidden not in offered


# -- our own listener's rules ---------------------------------------------------------------------


def test_plain_listener_advertises_logindisabled_and_refuses_login(ready: PlaybookFactory) -> None:
    play = ready(client_tls=False, starttls_available=True, plaintext_login_allowed=False)
    assert play.actions == [
        SendClient([(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID IDLE ENABLE STARTTLS LOGINDISABLED] "
                    b"caliproxy ready.\r\n")])
    ]
    play([
        b"C: a LOGIN bob secret",
        b">C: a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections",
        b"C: b AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=",
        b">C: b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections",
        b"C: c AUTHENTICATE PLAIN",
        b">C: c NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections",
    ])
    assert not play.session.authenticated


def test_plain_listener_may_allow_plaintext_login(ready: PlaybookFactory) -> None:
    play = ready(client_tls=False, starttls_available=True, plaintext_login_allowed=True)
    assert play.actions == [
        SendClient([(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID IDLE ENABLE STARTTLS AUTH=LOGIN "
                    b"AUTH=PLAIN] caliproxy ready.\r\n")])
    ]
    play([b"C: a LOGIN bob secret", b">S: a LOGIN bob secret"])


def test_auth_mechanisms_are_only_those_the_upstream_offers(ready: PlaybookFactory) -> None:
    play = ready(b"IMAP4rev1 AUTH=PLAIN AUTH=GSSAPI AUTH=XOAUTH2")
    assert play.actions == [
        SendClient([b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ENABLE AUTH=PLAIN] caliproxy ready.\r\n"])
    ]
    play([
        b"C: a AUTHENTICATE GSSAPI",
        b">C: a NO Unsupported authentication mechanism",
        b"C: b AUTHENTICATE XOAUTH2 dXNlcj1ib2I=",
        b">C: b NO Unsupported authentication mechanism",
        b"C: c AUTHENTICATE LOGIN",
        b">C: c NO Unsupported authentication mechanism",
    ])


def test_client_starttls_state_is_reflected_in_capabilities(ready: PlaybookFactory) -> None:
    play = ready(client_tls=False, starttls_available=True)
    play([
        b"C: a STARTTLS",
        b">C: a OK Begin TLS negotiation now",
        b"! StartClientTLS",
        b"C: b CAPABILITY",
        b">S: b CAPABILITY",
        b"S: * CAPABILITY " + DOVECOT_PRE,
        b">C: * CAPABILITY " + OFFERED_PRE_TLS,
    ])
    assert any(isinstance(a, StartClientTLS) for a in play.actions)
