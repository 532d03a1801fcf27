"""Factories for the sans-IO IMAP engine tests: sessions at each stage of a connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.imap.playbook")

from caliproxy.imap.session import ProxySession, SessionSettings, UpstreamSecurity
from tests.imap.playbook import Playbook

# Dovecot 2.3's capability lists, as in the Thunderbird transcripts.
DOVECOT_PRE = (
    b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
)
DOVECOT_POST = (
    b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    b"THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    b"NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    b"WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    b"STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE COMPRESS=DEFLATE QUOTA"
)
# What the proxy shows for those lists on a TLS listener.
OFFERED_PRE_TLS = b"IMAP4rev1 LITERAL+ SASL-IR ID IDLE ENABLE AUTH=LOGIN AUTH=PLAIN"
OFFERED_POST = (
    b"IMAP4rev1 LITERAL+ ID IDLE MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
    b"MOVE SPECIAL-USE ENABLE"
)

SessionFactory = Callable[..., ProxySession]
PlaybookFactory = Callable[..., Playbook]


@pytest.fixture
def make_session() -> SessionFactory:
    """A fresh session; keyword arguments override the TLS-listener settings."""

    def make(**overrides: Any) -> ProxySession:
        settings: dict[str, Any] = {
            "client_tls": True,
            "starttls_available": False,
            "plaintext_login_allowed": False,
            "upstream_security": UpstreamSecurity.TLS,
        }
        settings.update(overrides)
        return ProxySession(SessionSettings(**settings))

    return make


@pytest.fixture
def ready(make_session: SessionFactory) -> PlaybookFactory:
    """A session whose upstream greeted with ``caps``; the client has its greeting."""

    def make(caps: bytes = DOVECOT_PRE, **overrides: Any) -> Playbook:
        play = Playbook(make_session(**overrides))
        play.feed(b"S: * OK [CAPABILITY " + caps + b"] Dovecot ready.")
        assert play.session._phase.value == "ready"
        return play

    return make


@pytest.fixture
def logged_in(ready: PlaybookFactory) -> PlaybookFactory:
    """A session logged in as ``bob``; ``post`` is the upstream's post-login capability list."""

    def make(caps: bytes = DOVECOT_PRE, post: bytes = DOVECOT_POST, **overrides: Any) -> Playbook:
        play = ready(caps, **overrides)
        play([b"C: l1 LOGIN bob secret", b">S: l1 LOGIN bob secret"])
        play.feed(b"S: l1 OK [CAPABILITY " + post + b"] Logged in")
        assert play.session.authenticated
        play.actions.clear()
        play.done.clear()
        return play

    return make
