"""The capability allow-list: what a client is told the proxy can do, in all three places.

Pure module. Capabilities appear in the greeting's code, in untagged ``CAPABILITY`` data and in the
``OK [CAPABILITY ...]`` after LOGIN/AUTHENTICATE; all three are rewritten by :func:`offered`.
Anything not listed here is dropped, because an extension we pass through without understanding
it could change the meaning of responses we must rewrite (COMPRESS hides the stream from us;
CONDSTORE, ESEARCH, BINARY... add data we do not filter).
"""

from __future__ import annotations

from dataclasses import dataclass

# Extensions passed through when the upstream offers them. Their commands are forwarded and
# their responses parsed by this package (see ``commands``).
PASS_THROUGH: frozenset[bytes] = frozenset(
    {
        b"IMAP4REV1",
        b"SASL-IR",
        b"ID",
        b"IDLE",
        b"NAMESPACE",
        b"UIDPLUS",
        b"MOVE",
        b"UNSELECT",
        b"SPECIAL-USE",
        b"CHILDREN",
        b"LIST-EXTENDED",
        b"MULTIAPPEND",
    }
)

# SASL mechanisms whose exchanges we relay line by line without reading them.
AUTH_MECHANISMS: frozenset[bytes] = frozenset({b"PLAIN", b"LOGIN"})


@dataclass(frozen=True, slots=True)
class ClientContext:
    """What the client's own connection allows, which the upstream cannot know."""

    tls_active: bool
    starttls_available: bool  # the listener has a certificate for STARTTLS
    plaintext_login_allowed: bool
    authenticated: bool

    @property
    def login_allowed(self) -> bool:
        return self.tls_active or self.plaintext_login_allowed


def offered(upstream: list[bytes], ctx: ClientContext) -> list[bytes]:
    """The capability atoms to show the client, given the upstream's and the connection's state."""
    upper = {cap.upper(): cap for cap in upstream}
    result: list[bytes] = [b"IMAP4rev1"]
    # LITERAL+ is ours: the session assembles client literals itself and talks to the upstream
    # with whichever literal form the upstream supports.
    result.append(b"LITERAL+")
    for cap in upstream:
        name = cap.upper()
        if name in PASS_THROUGH and name != b"IMAP4REV1":
            if name in (b"SASL-IR",) and (ctx.authenticated or not ctx.login_allowed):
                continue
            result.append(cap)
    result.append(b"ENABLE")
    if not ctx.authenticated:
        if ctx.starttls_available and not ctx.tls_active:
            result.append(b"STARTTLS")
        if ctx.login_allowed:
            for mech in sorted(AUTH_MECHANISMS):
                if b"AUTH=" + mech in upper:
                    result.append(b"AUTH=" + mech)
        else:
            result.append(b"LOGINDISABLED")
    return result


def render(caps: list[bytes]) -> bytes:
    return b" ".join(caps)
