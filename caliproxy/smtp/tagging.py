"""The splice point between the submission relay and the privacy engine.

The relay knows the message's bytes and the facts of its submission (:class:`SubmissionFacts`);
a :class:`Tagger` turns the header block and those facts into the privacy header block to add,
always exactly ``header_length`` bytes so the SIZE we advertise can be computed before any verdict.
Which tagger runs is decided by the wiring (service.py): :data:`NO_TAGGING` adds nothing,
:class:`PrivacyTagger` asks the privacy engine.

Pure module: standard library only plus ``caliproxy.errors``, ``caliproxy.privacy`` and
``caliproxy.smtp``; no sockets, no event loop, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from caliproxy.errors import PolicyError
from caliproxy.privacy.features import BODY_SNIFF_LIMIT
from caliproxy.privacy.header import (
    DEFAULT_HEADER,
    HEADER_LENGTH,
    HeaderName,
    PrivacyHeaderError,
    parse_header,
    render_header,
)
from caliproxy.privacy.policy import Policy
from caliproxy.privacy.verdict import judge
from caliproxy.smtp.message import body_prefix, header_block, splice_parts

#: The folder the sender's own copy is filed in by default; folder rules see the outgoing message
#: as that copy, so the level we stamp is the level the IMAP side gives the Sent copy.
SENT_MAILBOX = "Sent"


@dataclass(frozen=True, repr=False)
class SubmissionFacts:
    """What is known about one submitted message besides its bytes.

    Addresses and the body prefix are personal data: the ``repr`` leaves them out so that a
    stray log line cannot carry them.
    """

    listener: str
    client_address: str
    client_tls: bool
    client_tls_version: str | None
    account: str
    upstream_tls: bool
    mail_from: str
    recipients: tuple[str, ...]
    eight_bit: bool = False
    smtputf8: bool = False
    #: The first bytes of the body (inline PGP shows only there).
    body_prefix: bytes = b""

    @property
    def recipient_domains(self) -> frozenset[str]:
        return frozenset(r.rpartition("@")[2].lower() for r in self.recipients if "@" in r)

    def __repr__(self) -> str:
        return (f"<SubmissionFacts listener={self.listener} tls={self.client_tls_version or 'none'} "
                f"recipients={len(self.recipients)}>")


class Tagger(Protocol):
    """Decides the privacy header block of an outgoing message."""

    #: Length of every block it returns; 0 for a tagger that adds nothing.
    header_length: int
    #: Our header's name: client-supplied fields of it are neutralised, tagging or not.
    header_name: HeaderName

    def __call__(self, raw_headers: bytes, facts: SubmissionFacts) -> bytes:
        """The header block to put on top (``header_length`` bytes, CRLF-terminated or empty)."""
        ...


class NoTagging:
    """Adds nothing: the message is relayed as sent (a spoofed header of our name is still
    neutralised by the splice)."""

    header_length = 0

    def __init__(self, header_name: HeaderName = DEFAULT_HEADER) -> None:
        self.header_name = header_name

    def __call__(self, raw_headers: bytes, facts: SubmissionFacts) -> bytes:
        return b""

    def __repr__(self) -> str:
        return "NO_TAGGING"


NO_TAGGING: Tagger = NoTagging()


class PrivacyTagger:
    """Judges the outgoing message under ``policy`` and renders the privacy header.

    The verdict is computed from the header block (plus the body prefix for inline PGP), exactly
    as the IMAP side computes it for the Sent copy the client appends, so both show one level.
    """

    header_length = HEADER_LENGTH

    def __init__(self, policy: Policy, header_name: HeaderName = DEFAULT_HEADER) -> None:
        self.policy = policy
        self.header_name = header_name

    def __call__(self, raw_headers: bytes, facts: SubmissionFacts) -> bytes:
        _, verdict = judge(raw_headers, self.policy, account=facts.account, mailbox=SENT_MAILBOX,
                           body=facts.body_prefix, privacy_header=self.header_name.lower)
        return render_header(verdict, self.header_name)

    def __repr__(self) -> str:
        return "PrivacyTagger"


@dataclass(frozen=True)
class Tagged:
    """The message to relay, as the header block we add and the client's message (its fields of
    our name neutralised); relayed in this order, never joined into one copy."""

    header: bytes
    message: bytes

    @property
    def parts(self) -> tuple[bytes, bytes]:
        return self.header, self.message

    @property
    def payload(self) -> bytes:
        """The whole spliced message (a copy: for tests and small messages)."""
        return self.header + self.message

    @property
    def level(self) -> str | None:
        """The confidentiality level stamped on the message; None when nothing was added."""
        if not self.header:
            return None
        try:
            # Our own block: its value is what counts (the name is the configured one).
            return parse_header(self.header.partition(b":")[2]).level
        except PrivacyHeaderError:
            return None


def tag_message(raw: bytes, tagger: Tagger, facts: SubmissionFacts) -> Tagged:
    """Run ``tagger`` on ``raw`` and splice its block in. PolicyError when the tagger breaks its
    length promise: the SIZE already advertised would then be wrong, so nothing is relayed."""
    if not facts.body_prefix:
        facts = replace(facts, body_prefix=body_prefix(raw, BODY_SNIFF_LIMIT))
    header = tagger(header_block(raw), facts)
    if len(header) != tagger.header_length:
        raise PolicyError(f"privacy header of {len(header)} bytes, {tagger.header_length} promised")
    return Tagged(*splice_parts(raw, header, tagger.header_name))

