"""The selected mailbox seen through a client's clearance: translating commands and data.

Pure module. ``SelectedMailbox`` owns the :class:`MailboxView` and the verdicts of the selected
mailbox, and knows how each command that names messages must be rewritten for the upstream and
how each response naming messages must be rewritten for the client:

* client sequence numbers become upstream sequence numbers of the same visible messages (a
  sequence-number command stays one, so the upstream sends EXPUNGE exactly where RFC 3501 §7.4.1
  lets the client receive one); UID sets are intersected with the visible UIDs, ``*`` meaning
  the last *visible* message;
* a command that names only hidden or non-existent messages acts on nothing and is answered the
  way Dovecot answers for a message that does not exist;
* EXPUNGE and CLOSE only ever remove visible messages (``UID EXPUNGE`` of the visible set);
* a message set too long for one upstream command line (visible and hidden mail alternating) is
  split into consecutive pieces, each sent as a command of its own (``Translated.more_sets``);
  a search key's set, which cannot be split, is widened over hidden messages only.

The session drives it: it decides when commands are sent and feeds it upstream data.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import repeat

from caliproxy.imap.classify import Classifier, Tagged
from caliproxy.imap.commands import SEARCH_KEY_ARITY
from caliproxy.imap.fetch_rewrite import (
    Partial,
    PartialMap,
    SectionRequest,
    field_name,
    parse_section,
    section_key,
)
from caliproxy.imap.grammar import (
    Atom,
    CommandStart,
    SeqRange,
    Token,
    is_sequence_set,
    parse_sequence_set,
)
from caliproxy.imap.view import MailboxView, format_sequence_set, split_sequence_set

# A search key that matches no message, for sets that name only hidden or absent ones.
_NOTHING: list[Token] = [Atom("NOT"), Atom("ALL")]
# Longest visible UID set a search is confined to (the upstream's command line is finite:
# Dovecot takes 64 KiB).
MAX_CONFINING_SET = 32 * 1024
# Longest message set put on one upstream command line. Dovecot refuses a line longer than its
# imap_max_line_length (64 KiB by default) with "BAD ... Too long argument", and the exact visible
# set of a mailbox where visible and hidden mail alternate is longer than that (12,000 visible
# UIDs of five digits: ~70 KB). Longer sets are split into commands of their own, or, in search
# keys, widened over hidden messages. 16 KiB leaves room for the rest of the line (fetch items, a
# mailbox name, the confining set of a search) and keeps each piece's answer modest.
MAX_UPSTREAM_SET = 16 * 1024
# What a command naming no visible message names upstream: the highest UID there can be, which
# no message of a real mailbox has. The upstream then answers as it does for a set naming
# nothing (its own words, its checks of the rest of the command) and reports new mail and
# expunges as after any command, which an answer of our own would not.
NO_MESSAGE = 4294967295
_SECTION_ITEM = re.compile(r"^(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?$", re.IGNORECASE)


@dataclass(slots=True)
class Translated:
    """A command rewritten for the upstream, or answered without it."""

    args: list[Token] | None = None  # forward with these arguments (None: answer locally)
    verb: str | None = None  # a different verb to send (EXPUNGE -> UID EXPUNGE)
    uid: bool | None = None
    local_status: bytes = b"OK"
    local_text: str = ""
    partials: PartialMap | None = None
    # a SEARCH the upstream runs over hidden messages too: its [EXPUNGEISSUED] may be about one
    # of them. ``confined`` asks the same over the visible ones only (None: cannot be asked).
    unconfined: bool = False
    confined: list[Token] | None = None
    # The message set did not fit one upstream line: ``args`` names its first piece, these the
    # rest, in order, each to be sent in the same command once the one before completed.
    more_sets: list[bytes] = field(default_factory=list)


@dataclass
class SelectedMailbox:
    """State of the mailbox selected through the proxy, for one session."""

    name: str
    uidvalidity: int
    readonly: bool
    classifier: Classifier
    view: MailboxView = field(default_factory=MailboxView)
    tags: dict[int, Tagged] = field(default_factory=dict)
    upstream_exists: int = 0  # what the upstream has announced (may run ahead of the view)
    # \Recent is per session: the visible messages this session holds it for (when hiding), or
    # the upstream's latest RECENT count, held until the arrivals it counts are announced
    recent: set[int] = field(default_factory=set)
    told_recent: int = 0  # the RECENT count the client last heard
    held_recent: int | None = None
    # Keywords the client has been shown (when hiding): those some visible message carries. The
    # upstream's FLAGS and PERMANENTFLAGS lists name every keyword ever used in the mailbox,
    # hidden messages' included; the latest of each is kept to show its visible part.
    keywords: list[bytes] = field(default_factory=list)
    flag_lines: dict[bytes, bytes] = field(default_factory=dict)
    # Flag lists (as ``fetch_fast.flag_list`` gives them) found to carry no keyword the client
    # was not shown: ``keywords`` only grows, so they stay so.
    shown_flag_lists: set[bytes] = field(default_factory=set)

    @property
    def hides(self) -> bool:
        return self.classifier.hides_anything

    def tag_of(self, uid: int) -> Tagged:
        # Fail closed: a visible message always has a verdict; unknown means top level.
        return self.tags.get(uid) or self.classifier.unclassifiable()

    def admit(self, uids: list[int], tags: dict[int, Tagged]) -> list[int]:
        """Append newly known upstream messages; returns those the client may see."""
        # (a SELECT admits every message of the mailbox, tens of thousands: in bulk, with the
        # clearance asked once per level)
        classifier = self.classifier
        mine = self.tags
        # fail closed: a message without a verdict gets the top level
        mine.update(zip(uids, map(tags.get, uids, repeat(classifier.unclassifiable()))))
        if classifier.hides_anything:
            levels = {tagged.level for tagged in map(mine.__getitem__, uids)}
            shown_levels = {level for level in levels if classifier.visible(level)}
            shown = [uid for uid in uids if mine[uid].level in shown_levels]
        else:
            shown = list(uids)
        self.view.extend(uids, shown)
        return shown

    # -- commands --------------------------------------------------------------------------------

    def upstream_seqs(self, uids: list[int]) -> list[int]:
        return [bisect_left(self.view.uids, uid) + 1 for uid in uids]

    def _seq_set_ok(self, ranges: list[SeqRange]) -> bool:
        count = self.view.exists
        for low, high in ranges:
            for number in (low, high):
                if number is not None and number > count:
                    return False
        return count > 0

    def translate(self, start: CommandStart, args: list[Token], *, shift_partials: bool = True
                  ) -> Translated:
        """``shift_partials``: the client sees our header, so partial origins move by its length."""
        verb = start.verb
        if verb in ("FETCH", "STORE", "COPY", "MOVE"):
            return self._translate_set_command(start, args, shift_partials)
        if verb == "SEARCH":
            return self._confined_search(self._translate_search(args, uid=start.uid))
        if verb == "EXPUNGE":
            return self._translate_expunge(start, args)
        return Translated(args=args)

    def _translate_set_command(self, start: CommandStart, args: list[Token], shift_partials: bool
                               ) -> Translated:
        ranges = parse_sequence_set(str(args[0]))
        uid = None
        if start.uid:
            uids = self.view.uids_for_uid_set(ranges)
            if not uids:
                return self._naming_nothing(start, args)
            sets = split_sequence_set(uids, MAX_UPSTREAM_SET)
        else:
            if not self._seq_set_ok(ranges):
                # Dovecot's words (its timing aside) for a number beyond the mailbox
                return Translated(local_status=b"BAD",
                                  local_text=f"Error in IMAP command {start.verb}: "
                                             "Invalid messageset.")
            uids = self.view.uids_for_sequence_set(ranges)
            sets = split_sequence_set(self.upstream_seqs(uids), MAX_UPSTREAM_SET)
            if len(sets) > 1 and start.verb in ("COPY", "MOVE"):
                # The upstream may send EXPUNGE during a COPY or MOVE, renumbering the messages
                # before the next piece is read: the pieces name UIDs, which stay. (FETCH and
                # STORE keep sequence numbers: no EXPUNGE may come during them, RFC 3501 §7.4.1,
                # so the numbering holds from piece to piece, and the client, which may not
                # hear an EXPUNGE during its FETCH or STORE, does not.)
                sets = split_sequence_set(uids, MAX_UPSTREAM_SET)
                uid = True
        rest = list(args[1:])
        partials = None
        if start.verb == "FETCH" and shift_partials:
            rest, partials = self._translate_fetch_items(rest)
        return Translated(args=[Atom(sets[0].decode()), *rest], partials=partials, uid=uid,
                          more_sets=sets[1:])

    def _translate_fetch_items(self, items: list[Token]) -> tuple[list[Token], PartialMap]:
        """Sections that start at the top of the message, as the upstream must be asked for them.

        Partials of ``BODY[]``/``BODY[HEADER]`` are shifted by our header (the part inside it
        needs no upstream bytes, but a partial is still asked for so the answer keeps its
        place). Header lists selecting our header or the renamed one are asked for with both
        names added (``.NOT``: both removed) and cut to the client's list here, whole: their
        length depends on their content, so a partial of them is cut here too. Every top-level
        section is recorded, in order, under the key of the upstream's answer.
        """
        partials = PartialMap()
        extra = self.classifier.header_length

        def shift(token: Token) -> Token:
            if not isinstance(token, Atom):
                return token
            match = _SECTION_ITEM.match(token)
            if match is None:
                return token
            item, section_text = match.group(1), match.group(2)
            kind, tokens = parse_section(section_text.encode())
            if kind == "other":
                return token
            names = frozenset(field_name(t) for t in tokens)
            client_origin = None if match.group(3) is None else int(match.group(3))
            client_length = 0 if match.group(4) is None else int(match.group(4))
            if kind in ("whole", "header"):
                if client_origin is None:
                    partials.add(section_key(kind, [], None), SectionRequest(kind))
                    return token
                upstream_origin = max(0, client_origin - extra)
                stop = client_origin + client_length - extra
                use = stop > 0
                upstream_length = stop - upstream_origin if use else 1
                partials.add(section_key(kind, [], upstream_origin),
                             SectionRequest(kind, partial=Partial(client_origin, client_length,
                                                                  upstream_origin, use)))
                return Atom(f"{item}[{section_text}]<{upstream_origin}.{upstream_length}>")
            request = SectionRequest(kind, names)
            header = self.classifier.header_names
            if not request.rewritten(header) or not tokens:
                # A list selecting neither name: the upstream's answer is the virtual one (an
                # empty or malformed list is the upstream's to refuse).
                partials.add(section_key(kind, tokens, client_origin), request)
                return token
            ours = (header.ours_upper, header.spoofed_upper)
            if kind == "fields":
                upstream_tokens = tokens + [name for name in (header.ours, header.spoofed)
                                            if name.upper() not in names]
            else:
                # ":" names no field: a list that excludes nothing but keeps the answer's form.
                upstream_tokens = [t for t in tokens if field_name(t) not in ours] or [b'":"']
            prefix = b"HEADER.FIELDS.NOT" if kind == "fields-not" else b"HEADER.FIELDS"
            client_name = b"BODY[%s (%s)]" % (prefix, b" ".join(t.upper() for t in tokens))
            partial = None if client_origin is None else Partial(client_origin, client_length)
            partials.add(section_key(kind, upstream_tokens, None),
                         SectionRequest(kind, names, client_name, partial))
            upstream_section = (prefix + b" (" + b" ".join(upstream_tokens) + b")").decode()
            return Atom(f"{item}[{upstream_section}]")

        first = items[0] if items else None
        if isinstance(first, list):
            return [[shift(t) for t in first], *items[1:]], partials
        return [shift(t) for t in items], partials

    def _confined_search(self, keys: list[Token]) -> Translated:
        """The search as the client asked it, and the same confined to the visible messages.

        Results are filtered anyway, but the upstream's ``[EXPUNGEISSUED]`` says that a message
        the search had to read was expunged elsewhere, and that message could be a hidden one;
        the session then asks the confined search (``UID <visible>`` ANDed to the keys) whether
        it was. The client's own search is not sent confined: Dovecot holds back EXPUNGEs after
        a search naming a message set, so the client would hear of expunges later than it does
        from the same mailbox without hidden mail."""
        if not self.hides:
            return Translated(args=keys)
        visible = (format_sequence_set(self.view.visible) if self.view.visible
                   else str(NO_MESSAGE).encode())
        if len(visible) > MAX_CONFINING_SET:
            return Translated(args=keys, unconfined=True)
        head = 2 if keys and isinstance(keys[0], Atom) and keys[0].upper() == "CHARSET" else 0
        confined = [*keys[:head], Atom("UID"), Atom(visible.decode()), *keys[head:]]
        return Translated(args=keys, unconfined=True, confined=confined)

    def _translate_search(self, args: list[Token], *, uid: bool) -> list[Token]:
        """Sequence-set and UID search keys name only visible messages, in upstream numbers.

        Walks the keys with their arities (``LARGER 1000`` takes a number, not a set)."""
        del uid  # the result numbers differ, the keys do not
        keys = list(args)
        out: list[Token] = []
        if keys and isinstance(keys[0], Atom) and keys[0].upper() == "CHARSET":
            out, keys = keys[:2], keys[2:]
        position = 0
        while position < len(keys):
            position = self._search_key(keys, position, out)
        return out

    def _search_key(self, keys: list[Token], position: int, out: list[Token]) -> int:
        key = keys[position]
        if isinstance(key, list):
            inner: list[Token] = []
            index = 0
            while index < len(key):
                index = self._search_key(key, index, inner)
            out.append(inner)
            return position + 1
        if is_sequence_set(key):
            uids = self.view.uids_for_sequence_set(parse_sequence_set(str(key)))
            out.append(Atom(self._search_set(uids, uid=False).decode()) if uids else _NOTHING)
            return position + 1
        name = key.upper() if isinstance(key, Atom) else ""
        if name == "UID":
            uids = self.view.uids_for_uid_set(parse_sequence_set(str(keys[position + 1])))
            out.extend([key, Atom(self._search_set(uids, uid=True).decode())] if uids else [_NOTHING])
            return position + 2
        if name == "NOT":
            out.append(key)
            return self._search_key(keys, position + 1, out)
        if name == "OR":
            out.append(key)
            return self._search_key(keys, self._search_key(keys, position + 1, out), out)
        arity = SEARCH_KEY_ARITY[name]
        out.extend(keys[position : position + 1 + arity])
        return position + 1 + arity

    def _search_set(self, uids: list[int], *, uid: bool) -> bytes:
        """A search key's set naming the visible ``uids`` (UIDs or upstream sequence numbers).

        Exact when it fits one upstream line. Otherwise widened: each run of ``uids`` that are
        neighbours among the *visible* messages becomes one range from its first to its last,
        taking in the hidden messages between them and nothing else. Such a set names exactly
        the same visible messages as the exact one, and every search result is confined to
        visible messages (``search_result``), so the result is the same under any key
        combination (NOT, OR) — the hidden messages it takes in never reach the client. A
        search reads and changes nothing, so the upstream looking at them does no harm."""
        numbers = uids if uid else self.upstream_seqs(uids)
        exact = format_sequence_set(numbers)
        if len(exact) <= MAX_UPSTREAM_SET:
            return exact
        visible = self.view.visible
        parts: list[bytes] = []
        first = previous = 0
        for index, uid_ in enumerate(uids):
            rank = bisect_left(visible, uid_)
            if index and rank == previous + 1:
                previous = rank
                continue
            if index:
                parts.append(_range(numbers[first], numbers[index - 1]))
            first, previous = index, rank
        parts.append(_range(numbers[first], numbers[-1]))
        return b",".join(parts)

    def _translate_expunge(self, start: CommandStart, args: list[Token]) -> Translated:
        if not self.hides:
            return Translated(args=args)
        if start.uid:
            uids = self.view.uids_for_uid_set(parse_sequence_set(str(args[0])))
        else:
            uids = list(self.view.visible)
        if not uids:
            return self._naming_nothing(start, [Atom("0")], verb="EXPUNGE")
        sets = split_sequence_set(uids, MAX_UPSTREAM_SET)
        return Translated(args=[Atom(sets[0].decode())], verb="EXPUNGE", uid=True, more_sets=sets[1:])

    def _naming_nothing(self, start: CommandStart, args: list[Token], *, verb: str | None = None
                        ) -> Translated:
        """The command with its message set replaced by one naming no message (see NO_MESSAGE)."""
        if NO_MESSAGE in self.view.uids:
            # (a mailbox that used up every UID: answer ourselves, as Dovecot would)
            text = ("No messages found." if start.verb in ("COPY", "MOVE")
                    else f"{start.verb.capitalize()} completed.")
            return Translated(local_text=text)
        return Translated(args=[Atom(str(NO_MESSAGE)), *args[1:]], verb=verb, uid=True)

    def visible_uid_sets(self) -> list[bytes]:
        """The visible UIDs in pieces that each fit one upstream line (none: no visible mail)."""
        return split_sequence_set(self.view.visible, MAX_UPSTREAM_SET) if self.view.visible else []

    # -- responses -------------------------------------------------------------------------------

    def search_result(self, numbers: list[int], *, uid: bool) -> list[int]:
        if uid:
            return [n for n in numbers if self.view.is_visible(n)]
        result = []
        for seq in numbers:
            if 1 <= seq <= len(self.view.uids):
                client = self.view.client_seq(self.view.uids[seq - 1])
                if client is not None:
                    result.append(client)
        return sorted(result)


def _range(low: int, high: int) -> bytes:
    return b"%d" % low if low == high else b"%d:%d" % (low, high)
