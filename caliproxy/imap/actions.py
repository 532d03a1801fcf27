"""What the sans-IO IMAP session asks the IO shell to do.

Pure module. The session returns a list of these from every ``handle`` call; ``net/`` carries them
out in order (order matters: the OK to STARTTLS must be written before the TLS handshake starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from caliproxy.imap.classify import Tagged
from caliproxy.imap.grammar import Token


def _sizes(name: str, chunks: list[bytes]) -> str:
    # Sends carry credentials and message content: their repr (in logs, tracebacks, test output)
    # shows only sizes.
    return f"{name}({len(chunks)} chunks, {sum(len(c) for c in chunks)} bytes)"


@dataclass(slots=True)
class SendClient:
    """Bytes for the client. Consecutive sends are merged into one list of chunks."""

    chunks: list[bytes] = field(default_factory=list)

    def __repr__(self) -> str:
        return _sizes("SendClient", self.chunks)


@dataclass(slots=True)
class SendServer:
    """Bytes for the upstream server."""

    chunks: list[bytes] = field(default_factory=list)

    def __repr__(self) -> str:
        return _sizes("SendServer", self.chunks)


@dataclass(frozen=True, slots=True)
class StartClientTLS:
    """Begin the TLS handshake with the client (after our OK to its STARTTLS)."""


@dataclass(frozen=True, slots=True)
class StartServerTLS:
    """Begin the TLS handshake with the upstream (after its OK to our STARTTLS)."""


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close the client connection once what was sent before has been written."""

    reason: str


@dataclass(frozen=True, slots=True)
class CloseServer:
    """Close the upstream connection."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The upstream accepted the client's credentials; the session is now authenticated."""

    account: str


@dataclass(frozen=True, slots=True)
class CommandDone:
    """A client command finished: its verb (``UID FETCH``...) and status (OK/NO/BAD), for metrics."""

    name: str
    status: str
    local: bool


@dataclass(frozen=True, slots=True)
class CountMessages:
    """Count ``mailbox`` as this session may see it, on the proxy's own upstream connection.

    The session waits (its STATUS is in progress) until the IO shell feeds the
    :class:`CountAnswer` back (``MailboxSession.answered``); see ``side_session``."""

    mailbox: str  # the name as the classification cache keys it (INBOX normalised)
    name: Token  # the name as the client wrote it, sent upstream as it is
    items: tuple[str, ...]  # upper-case STATUS items, in the client's order


@dataclass(frozen=True, slots=True)
class CountAnswer:
    """The counts for a :class:`CountMessages`, or why there are none.

    ``values`` is None when the query failed; ``refusal`` is then the upstream's own NO to
    EXAMINE (code and text, e.g. ``[NONEXISTENT] Mailbox doesn't exist: X``) when it refused the
    mailbox itself, or empty when the connection or the login failed."""

    values: dict[str, int] | None
    refusal: bytes = b""


@dataclass(frozen=True, slots=True)
class ClassifyMessages:
    """Read and judge the headers of ``uids`` of ``mailbox`` on the proxy's own upstream connection.

    Asked by a SELECT for the messages the cache does not know, so that the client's connection
    carries only the client's commands; the session waits (the SELECT's answer is held) until the
    IO shell feeds the :class:`ClassifyAnswer` back (``MailboxSession.answered``)."""

    mailbox: str  # the name as the classification cache keys it (INBOX normalised)
    name: Token  # the name as the client wrote it, sent upstream as it is
    uidvalidity: int  # what the session's SELECT said: the side connection must see the same
    uids: tuple[int, ...]

    def __repr__(self) -> str:
        return f"ClassifyMessages({len(self.uids)} messages)"  # (no mailbox names in logs)


@dataclass(frozen=True, slots=True)
class ClassifyAnswer:
    """The verdicts for a :class:`ClassifyMessages`, by UID, or None when the query failed.

    A message missing from ``tags`` was not judged (expunged meanwhile, or its header unreadable);
    None means nothing was (no connection, a refused login, another UIDVALIDITY): the session
    then reads the headers on its own connection."""

    tags: dict[int, Tagged] | None


#: What the session asks of the proxy's own upstream connection, and the answers it gets back.
SideQuery = CountMessages | ClassifyMessages
SideAnswer = CountAnswer | ClassifyAnswer

Action = (
    SendClient | SendServer | StartClientTLS | StartServerTLS | CloseClient | CloseServer
    | Authenticated | CommandDone | CountMessages | ClassifyMessages
)
