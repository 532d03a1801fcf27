"""A client's login as the proxy may replay it on a connection of its own to the same upstream.

Pure module. A session that hides mail answers some questions (the message counts of a mailbox
other than the selected one) on a second upstream connection of its own, so the client's own
connection (its selected mailbox, its ``\\Recent`` messages, its pending EXPUNGEs, its IDLE) is
never disturbed. That connection logs in as the client did; :class:`Credentials` is what it
needs. It lives in memory only, for the life of one client session, and only after the upstream
accepted it; its ``repr`` shows no secret, so it cannot reach a log or a traceback by accident.

Only the mechanisms the proxy offers can be replayed: the LOGIN command and SASL PLAIN and LOGIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Replay(Enum):
    """How the client authenticated, and so how the login is replayed."""

    LOGIN = "LOGIN"  # the LOGIN command
    PLAIN = "AUTHENTICATE PLAIN"  # RFC 4616, with or without an initial response (SASL-IR)
    SASL_LOGIN = "AUTHENTICATE LOGIN"  # the de-facto LOGIN mechanism: user name, then password


@dataclass(frozen=True, slots=True)
class Credentials:
    """What it takes to log in again as the client did. Never logged, never stored on disk."""

    replay: Replay
    authcid: bytes
    password: bytes
    authzid: bytes = b""  # PLAIN only: the identity to act as (empty: the authcid's own)

    def __repr__(self) -> str:
        return f"Credentials({self.replay.value}, secrets withheld)"

    __str__ = __repr__
