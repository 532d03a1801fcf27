"""What the IMAP session needs to know about a message's privacy, and who tells it.

Pure module: the session calls a :class:`Classifier` (implemented outside the rings, over the
privacy engine and the cache) with header bytes it fetched, and gets back a :class:`Tagged`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Tagged:
    """A message's verdict as the session uses it."""

    level: str
    block: bytes  # the rendered privacy header, ``header_length`` bytes
    spoofs: tuple[int, ...]  # upstream offsets of forged headers of our name


class Classifier(Protocol):
    """Classification for one authenticated account."""

    header_length: int

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
