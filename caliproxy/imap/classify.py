"""What the IMAP session needs to know about a message's privacy, and who tells it.

Pure module: the session calls a :class:`Classifier` (implemented outside the rings, over the
privacy engine and the cache) with header bytes it fetched, and gets back a :class:`Tagged`.
:func:`header_fetches` and :func:`classify_fetched` are the one way every upstream connection of
the proxy reads and judges the headers the cache does not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from caliproxy.imap.view import format_sequence_set

# Header fetches per internal command: big enough to amortise round trips, small enough that
# one response never holds more than a few MB of headers.
HEADER_BATCH = 1000

from caliproxy.imap.virtual import FieldNames


@dataclass(frozen=True, slots=True)
class Tagged:
    """A message's verdict as the session uses it."""

    level: str
    block: bytes  # the rendered privacy header, ``header_length`` bytes
    spoofs: tuple[int, ...]  # upstream offsets of forged headers of our name


class Classifier(Protocol):
    """Classification for one authenticated account."""

    header_length: int
    header_names: FieldNames  # our header's name and the name copies of it are renamed to

    def known(self, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, Tagged]:
        """Verdicts already cached for ``uids``."""

    def classify(self, mailbox: str, uidvalidity: int, headers: Sequence[tuple[int, bytes]]
                 ) -> dict[int, Tagged]:
        """Judge messages from their header bytes (``BODY.PEEK[HEADER]``) and cache them."""

    def visible(self, level: str) -> bool:
        """Whether this connection's clearance admits ``level``."""

    @property
    def hides_anything(self) -> bool:
        """False when the clearance is the top level: nothing can be hidden."""

    def unclassifiable(self) -> Tagged:
        """The verdict for a message whose header could not be read: the top level."""


def header_fetches(uids: Sequence[int]) -> list[bytes]:
    """The commands that read the headers of ``uids`` without setting ``\\Seen``, batched."""
    return [b"UID FETCH " + format_sequence_set(list(uids[start : start + HEADER_BATCH]))
            + b" (BODY.PEEK[HEADER])" for start in range(0, len(uids), HEADER_BATCH)]


def classify_fetched(classifier: Classifier, mailbox: str, uidvalidity: int,
                     fetched: Iterable[dict[bytes, bytes]]) -> dict[int, Tagged]:
    """Judge the messages of header-fetch responses (their top-level items by name).

    A message whose header came back NIL (expunged elsewhere, unreadable) is not judged: an
    empty header would get the default level. Left out, it is unclassifiable to the caller
    (hidden below the top level) and never cached."""
    headers = []
    for items in fetched:
        uid = items.get(b"UID")
        header = items.get(b"BODY[HEADER]")
        if uid is not None and uid.isdigit() and header is not None and header.upper() != b"NIL":
            headers.append((int(uid), header))
    return classifier.classify(mailbox, uidvalidity, headers)
