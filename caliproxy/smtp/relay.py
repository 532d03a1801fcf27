"""The relay's rules: what each upstream outcome means for the client, and the events we report.

250 to DATA only after the upstream accepted the message; the upstream's codes relayed
per recipient; a temporary failure, a timeout or a lost upstream connection becomes a 4xx so the
client retries; permanent failures are relayed as they are. Nothing acknowledged is ever lost.

Pure module: standard library only plus ``caliproxy.smtp``; no sockets, no clock, no logging
(durations are measured by the IO shell and passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from caliproxy.smtp.replies import Reply

#: The upstream could not be reached or did not greet (said to EHLO, then the connection closes).
UPSTREAM_UNAVAILABLE = Reply.of(421, "4.4.1 Mail server unavailable, try again later")
#: The upstream connection broke or stalled: whatever was in progress did not happen. The client
#: connection closes too (its upstream session is gone) and the client retries.
UPSTREAM_LOST = Reply.of(421, "4.4.2 Connection to the mail server lost; nothing was accepted, "
                              "try again later")
#: The upstream offers no login we can use, or the login could not be checked now.
AUTH_UNAVAILABLE = Reply.of(454, "4.7.0 Temporary authentication failure")
#: The message could not be prepared for relaying (the privacy engine failed).
NOT_PROCESSED = Reply.of(451, "4.3.0 Message could not be processed, try again later")
#: Said to idle clients when the proxy stops.
SHUTTING_DOWN = Reply.of(421, "4.3.2 Service shutting down, try again later")
QUIT_REPLY = Reply.of(221, "2.0.0 Bye")
#: MAIL FROM taken, to be relayed with the first RCPT (the upstream's answer comes then).
MAIL_OK = Reply.of(250, "2.1.0 Ok")
OK = Reply.of(250, "2.0.0 Ok")


class Outcome(StrEnum):
    """The fate of one message (or login), as metrics count it: a bounded label set."""

    ACCEPTED = "accepted"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    LOST = "lost"  # the upstream vanished or stalled: the client was told 4xx


def outcome_of(reply: Reply) -> Outcome:
    if reply.positive:
        return Outcome.ACCEPTED
    if reply.permanent:
        return Outcome.PERMANENT
    return Outcome.TEMPORARY


def is_final(reply: Reply) -> bool:
    """A reply that can end a command: 2yz, 4yz or 5yz (a 3yz where none is due is a protocol
    violation, after which the upstream's state is unknown)."""
    return not reply.intermediate


@dataclass(frozen=True)
class MessageRelayed:
    """Hook event: one message's DATA finished (whatever the outcome). No addresses, no content."""

    listener: str
    outcome: Outcome
    code: int
    level: str | None  # the privacy level stamped, None when tagging is off
    size: int  # bytes received from the client
    recipients: int
    upstream_seconds: float  # from DATA sent upstream to its final reply (or the failure)


@dataclass(frozen=True)
class ClientConnected:
    """Hook event: a client's connection was accepted (for implicit TLS: its handshake done)."""

    listener: str


@dataclass(frozen=True)
class ClientDisconnected:
    """Hook event: a client's connection ended."""

    listener: str


@dataclass(frozen=True)
class LoginChecked:
    """Hook event: a client's AUTH was checked against the upstream."""

    listener: str
    outcome: Outcome
    code: int
