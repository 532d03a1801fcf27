"""MailboxView: the selected mailbox as one client connection is allowed to see it.

Pure module. It holds the upstream's UIDs in upstream order (upstream sequence number = position)
and which of them are visible. The client's sequence number of a visible message is its rank among
visible UIDs; UIDs are never renumbered. Every sequence number a client sends is translated through
the same view that produced the numbers it saw (pipelined commands refer to the view as it was).

RFC 3501 §2.3.1.1 (UIDs strictly ascending), §2.3.1.2 (sequence numbers), §7.4.1 (EXPUNGE).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import pairwise

from caliproxy.imap.grammar import SeqRange


class MailboxView:
    """Upstream UIDs in order and the visible subset, with translations both ways."""

    def __init__(self, uids: Iterable[int] = (), hidden: Iterable[int] = ()) -> None:
        self.uids: list[int] = list(uids)  # all upstream UIDs; index + 1 = upstream seq
        hidden_set = set(hidden)
        self.visible: list[int] = [uid for uid in self.uids if uid not in hidden_set]
        self.hidden: set[int] = hidden_set & set(self.uids)
        self._client_at: list[int | None] | None = None  # client seq by upstream seq - 1, when made

    def _changed(self) -> None:
        self._client_at = None

    # -- queries ---------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        """The message count the client is told."""
        return len(self.visible)

    def uid_of_upstream_seq(self, seq: int) -> int:
        if not 1 <= seq <= len(self.uids):
            raise IndexError(f"upstream sequence number {seq} outside 1..{len(self.uids)}")
        return self.uids[seq - 1]

    def client_seq(self, uid: int) -> int | None:
        """The client's sequence number of ``uid``, or None when hidden or unknown."""
        index = bisect_left(self.visible, uid)
        if index < len(self.visible) and self.visible[index] == uid:
            return index + 1
        return None

    def client_numbers(self) -> list[int | None]:
        """The client's sequence number of each upstream message in upstream order (None: hidden).
        A table made once per change of the view (a bulk FETCH asks for every message); the
        caller must not change it."""
        table = self._client_at
        if table is None:
            table = self._client_at = []
            hidden = self.hidden
            count = 0
            for uid in self.uids:
                if uid in hidden:
                    table.append(None)
                else:
                    count += 1
                    table.append(count)
        return table

    def is_visible(self, uid: int) -> bool:
        return self.client_seq(uid) is not None

    # -- translating what the client sends ---------------------------------------------------------

    def uids_for_sequence_set(self, ranges: list[SeqRange]) -> list[int]:
        """Visible UIDs named by a client sequence-number set (``*`` = last visible message).

        Numbers beyond the visible count name nothing (the caller decides what the real server
        would answer for a non-existent message)."""
        count = len(self.visible)
        chosen: set[int] = set()
        for low, high in ranges:
            a = count if low is None else low
            b = count if high is None else high
            if a > b:
                a, b = b, a
            a, b = max(a, 1), min(b, count)
            if a <= b:
                chosen.update(self.visible[a - 1 : b])
        return sorted(chosen)

    def uids_for_uid_set(self, ranges: list[SeqRange]) -> list[int]:
        """Visible UIDs named by a client UID set; ``*`` is the last *visible* UID, and ``n:*``
        always includes it even when n is larger (RFC 3501 §6.4.8)."""
        if not self.visible:
            return []
        last = self.visible[-1]
        chosen: set[int] = set()
        for low, high in ranges:
            a = last if low is None else low
            b = last if high is None else high
            if a > b:
                a, b = b, a
            chosen.update(self.visible[bisect_left(self.visible, a) : bisect_right(self.visible, b)])
        return sorted(chosen)

    # -- upstream changes --------------------------------------------------------------------------

    def append(self, uid: int, visible: bool) -> int | None:
        """A new upstream message (UIDs only grow); returns its client seq when visible."""
        if self.uids and uid <= self.uids[-1]:
            raise ValueError(f"UID {uid} is not above the last UID {self.uids[-1]}")
        self._changed()
        self.uids.append(uid)
        if visible:
            self.visible.append(uid)
            return len(self.visible)
        self.hidden.add(uid)
        return None

    def extend(self, uids: list[int], visible: list[int]) -> None:
        """:meth:`append` for many: ``uids`` ascending and above the last UID, ``visible`` the
        ones the client may see, in the same order."""
        if any(a >= b for a, b in pairwise(uids)) or (self.uids and uids and uids[0] <= self.uids[-1]):
            raise ValueError("UIDs not ascending above the last UID")
        hidden = set(uids).difference(visible)
        if len(hidden) != len(uids) - len(visible):
            raise ValueError("visible UIDs not a subset of the new UIDs")
        self._changed()
        self.uids.extend(uids)
        self.visible.extend(visible)
        self.hidden.update(hidden)

    def expunge_upstream_seq(self, seq: int) -> int | None:
        """Remove upstream message ``seq``; returns the client seq to EXPUNGE, or None if hidden."""
        uid = self.uid_of_upstream_seq(seq)
        self._changed()
        del self.uids[seq - 1]
        client = self.client_seq(uid)
        if client is None:
            self.hidden.discard(uid)
            return None
        del self.visible[client - 1]
        return client


def format_sequence_set(uids: list[int]) -> bytes:
    """Compact ``1:3,7,9:10`` form of sorted UIDs (empty input is the caller's problem)."""
    return b",".join(_set_parts(uids))


def split_sequence_set(numbers: list[int], limit: int) -> list[bytes]:
    """The compact form of sorted ``numbers`` cut into consecutive sets of at most ``limit`` bytes.

    One set when it fits (the same as :func:`format_sequence_set`); cut only between ranges, so
    together the pieces name exactly ``numbers``, in ascending order."""
    pieces: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for part in _set_parts(numbers):
        if current and size + 1 + len(part) > limit:
            pieces.append(b",".join(current))
            current, size = [], 0
        size += len(part) + (1 if current else 0)
        current.append(part)
    pieces.append(b",".join(current))
    return pieces


def _set_parts(numbers: list[int]) -> list[bytes]:
    parts: list[bytes] = []
    start = prev = numbers[0]
    for number in numbers[1:]:
        if number == prev + 1:
            prev = number
            continue
        parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = number
    parts.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return parts
