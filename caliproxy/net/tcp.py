"""TCP socket settings shared by the IMAP and SMTP connections."""

from __future__ import annotations

from typing import Any


def no_delay(transport: Any) -> None:
    """Switch Nagle's algorithm off on a Twisted transport (TLS-wrapped or not).

    A command, a tagged reply or the last piece of a response is a small write the peer waits
    for; Nagle would hold it back until the previous write is acknowledged (up to 40 ms of
    delayed ACK on every exchange)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)
