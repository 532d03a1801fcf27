"""Real Thunderbird traffic (recorded against Dovecot) replayed through the session.

Every command must reach the upstream unchanged (verbs are upper-cased), every response and
literal must reach the client unchanged, except the capability lists, which are rewritten.
Thunderbird only sends COMPRESS because Dovecot offered it; the proxy does not, so those exchanges
are left out of the replay.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caliproxy.imap.actions import Action, CloseServer, SendClient, SendServer
from caliproxy.imap.grammar import parse_command_start
from tests.imap.conftest import DOVECOT_POST, OFFERED_POST, OFFERED_PRE_TLS, SessionFactory

TRANSCRIPTS = Path(__file__).parent / "transcripts"
_LINE = re.compile(r"^\s*[\d.]+ (c\d+) (C|S|--): ?(.*)$")
_LITERAL = re.compile(r"^\s*<literal (\d+) bytes>$")


def connections(name: str) -> dict[str, list[tuple[str, str]]]:
    by_conn: dict[str, list[tuple[str, str]]] = {}
    for raw in (TRANSCRIPTS / name).read_text().splitlines():
        match = _LINE.match(raw)
        if match and match.group(2) != "--":
            by_conn.setdefault(match.group(1), []).append((match.group(2), match.group(3)))
    return by_conn


def literal_bytes(size: int) -> bytes:
    """Synthetic message bytes that look like IMAP to anything that would wrongly parse them."""
    pattern = b"a1 OK {5}\r\n* BYE x\r\n+ \r\n\x00\xff"
    return (pattern * (size // len(pattern) + 1))[:size]


CASES = [
    ("first-sync-plain.log", "c27"),
    ("first-sync-plain.log", "c28"),
    ("first-sync-plain.log", "c29"),
    ("explore-compress-display-idle-flags-move.log", "c1"),
    ("explore-compress-display-idle-flags-move.log", "c2"),
]


@pytest.mark.parametrize(("name", "conn"), CASES)
def test_thunderbird_session_replays_byte_for_byte(make_session: SessionFactory, name: str, conn: str) -> None:
    session = make_session()
    got_client, got_server = bytearray(), bytearray()
    want_client, want_server = bytearray(), bytearray()

    def collect(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendClient):
                got_client.extend(b"".join(action.chunks))
            elif isinstance(action, SendServer):
                got_server.extend(b"".join(action.chunks))

    skipped_tags: set[bytes] = set()
    relay_next = False  # the next client line is a SASL response or DONE, relayed as is
    greeted = False
    for side, text in connections(name)[conn]:
        data = text.encode("latin-1")
        if data == b"<EOF>":
            if side == "C":
                assert CloseServer() in session.client_lost()
            continue
        if side == "S":
            literal = _LITERAL.match(text)
            if literal:
                body = literal_bytes(int(literal.group(1)))
                collect(session.server_data(body))
                want_client.extend(body)
                continue
            tag = data.split(b" ", 1)[0]
            if tag in skipped_tags:
                continue
            if not greeted:
                collect(session.server_data(data + b"\r\n"))
                want_client.extend(b"* OK [CAPABILITY " + OFFERED_PRE_TLS + b"] caliproxy ready.\r\n")
                greeted = True
                continue
            if b"[CAPABILITY " in data:  # truncated in the log: the full post-login list
                data = tag + b" OK [CAPABILITY " + DOVECOT_POST + b"] Logged in"
                want = tag + b" OK [CAPABILITY " + OFFERED_POST + b"] Logged in"
            else:
                want = data
            collect(session.server_data(data + b"\r\n"))
            want_client.extend(want + b"\r\n")
            continue
        if relay_next:
            relay_next = False
            collect(session.client_data(data + b"\r\n"))
            want_server.extend(data + b"\r\n")
            continue
        start = parse_command_start(data)
        if start.verb == "COMPRESS":
            skipped_tags.add(start.tag)
            continue
        relay_next = start.verb == "IDLE" or (start.verb == "AUTHENTICATE" and b" " not in start.rest)
        collect(session.client_data(data + b"\r\n"))
        want_server.extend(start.tag + b" " + start.name.encode() + (b" " + start.rest if start.rest else b"")
                           + b"\r\n")

    assert bytes(got_server) == bytes(want_server)
    assert bytes(got_client) == bytes(want_client)
    assert session.closed


def test_the_replay_covers_what_it_claims() -> None:
    verbs = set()
    for name, conn in CASES:
        for side, text in connections(name)[conn]:
            if side == "C" and " " in text and not text.startswith("<"):
                verbs.add(text.split(" ")[1].upper())
    assert {"AUTHENTICATE", "SELECT", "UID", "IDLE", "LIST", "STATUS", "CREATE", "SUBSCRIBE", "ID",
            "NAMESPACE", "NOOP"} <= verbs
