"""The mailbox-aware proxy session: every message tagged, every message above clearance hidden.

Sans-IO, built on :class:`ProxySession` (which owns framing, literals, authentication,
capabilities and STARTTLS). After login the IO shell gives the session a
:class:`~caliproxy.imap.classify.Classifier` for the account and the connection's frozen
clearance (``set_classifier``); until then no client command is processed. From then on:

* SELECT/EXAMINE: the upstream's answer is held while the proxy learns the mailbox's UIDs
  (``UID SEARCH ALL``), has what the cache does not know classified on the proxy's own upstream
  connection (:class:`ClassifyMessages`, see ``side_session``; what that leaves unjudged is read
  here, ``UID FETCH ... BODY.PEEK[HEADER]``, batched, never setting ``\\Seen``) and, when it
  hides anything, recounts RECENT and ``[UNSEEN]``
  (searching only where the upstream's own figures no longer say it: a hidden first unseen
  message, a RECENT count above 0, mail that arrived or left meanwhile); then the client gets the
  answer of a mailbox in which hidden messages do not exist;
* new mail (``EXISTS``) is classified before the client hears of it — during IDLE by ending the
  upstream IDLE, fetching, and idling again, invisibly to the client;
* commands naming messages are translated through the view (``selected``); FETCH responses are
  renumbered, dropped for hidden messages, and given our header (``fetch_rewrite``);
  EXPUNGE responses are renumbered or swallowed; SEARCH results filtered and renumbered;
* with a hidden message possible, an untagged response the view does not know ends the session;
* a command whose translated message set does not fit one upstream line runs as several
  upstream commands over consecutive pieces of it, answered to the client as one (``_Chunked``).

Internal commands run only when no client command is in flight (or the client is idling), one
at a time, written as generator "flows" that yield a command and receive its collected result.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field

from caliproxy.errors import ServerProtocolError
from caliproxy.imap import fetch_fast
from caliproxy.imap.actions import (
    Action,
    ClassifyAnswer,
    ClassifyMessages,
    CommandDone,
    CountAnswer,
    CountMessages,
    SideAnswer,
    SideQuery,
)
from caliproxy.imap.classify import Classifier, Tagged, classify_fetched, header_fetches
from caliproxy.imap.fetch_items import FetchCollector, FetchScan, scan_fragment
from caliproxy.imap.fetch_rewrite import FetchRewriter, PartialMap
from caliproxy.imap.framing import Line, LiteralChunk
from caliproxy.imap.grammar import (
    Atom,
    CommandStart,
    Response,
    ResponseCode,
    Token,
    parse_response,
    quote,
    serialize,
)
from caliproxy.imap.selected import SelectedMailbox
from caliproxy.imap.session import ProxySession, SessionSettings, _Assembling, _Pending
from caliproxy.imap.side_session import COUNT_ITEMS
from caliproxy.imap.view import MailboxView

_MARKED = re.compile(rb"\\(?:Un)?Marked", re.IGNORECASE)
_RECENT = re.compile(rb"\* (\d+) RECENT\r\n", re.IGNORECASE)
_UNSEEN_CODE = re.compile(rb"\* OK \[UNSEEN (\d+)\]", re.IGNORECASE)
_MESSAGE_DATA = re.compile(rb"\* \d+ ")
_DIGITS_AND_SPACE = b"0123456789 "
# flag-keyword = atom (RFC 3501 §9); anything else in a flag list is not shown, nor searched for
_KEYWORD = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
# Untagged data a hiding session passes on (after the rewrites below); anything else ends it.
_KNOWN_DATA = frozenset({b"FLAGS", b"LIST", b"LSUB", b"STATUS", b"NAMESPACE", b"ID", b"CAPABILITY",
                         b"SEARCH", b"ENABLED"})
# Commands during which RFC 3501 §7.4.1 forbids an EXPUNGE response.
_NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH"})


@dataclass(slots=True)
class _OpResult:
    """What one internal command produced."""

    status: bytes = b""
    code: bytes = b""  # the tagged response's code name
    search: list[int] = field(default_factory=list)
    fetches: list[tuple[int, dict[bytes, bytes]]] = field(default_factory=list)
    status_items: dict[bytes, int] = field(default_factory=dict)
    tags: dict[int, Tagged] | None = None  # the answer to a ClassifyMessages (None: no verdicts)


@dataclass(slots=True)
class _Selecting:
    """A SELECT/EXAMINE in flight: its untagged answer, held until the view is built."""

    tag: bytes
    name: str
    readonly: bool
    token: Token  # the mailbox name as the client wrote it
    lines: list[bytes] = field(default_factory=list)
    exists: int = 0
    uidvalidity: int = 0
    uids: list[int] | None = None  # known once UID SEARCH ALL answered
    changed: bool = False  # an EXISTS or EXPUNGE came after the SELECT's own answer
    mailbox: SelectedMailbox | None = None  # its view, once built (the answer is still held)


@dataclass(slots=True)
class _Chunked:
    """A client command whose message set did not fit one upstream line, sent piece by piece.

    Each piece goes upstream as the same command under the client's own tag (free again once the
    piece before it completed). It starts only when no other command is in flight and holds
    back the client's next commands until its last piece completed, so every response in
    between belongs to it and pipelined commands keep their order. The client hears the
    untagged responses of every piece as usual and one tagged completion: the last piece's, or
    that of the first piece not answered OK (no later piece is sent).

    Not atomic: a COPY or MOVE refused in a later piece leaves the earlier pieces copied (moved:
    the client heard their EXPUNGEs), as a server copying message by message could. COPYUID
    codes (a COPY's tagged one, a MOVE's untagged one) are merged into one, said when the last
    piece completed; when a piece did not report exactly one, none is said (a client then
    finds the copies by searching, as with a server without UIDPLUS)."""

    start: CommandStart  # as the client sent it
    sent: CommandStart  # as each piece goes upstream
    rest: list[Token]  # the arguments after the message set
    sets: list[bytes]  # pieces still to send, in order
    copyuids: list[list[bytes]] | None = field(default_factory=list)  # None: cannot be merged
    piece_copyuid: bool = False  # the piece in flight reported one

    def note_copyuid(self, code: ResponseCode) -> None:
        parts = code.args.split()
        if self.copyuids is not None and len(parts) == 3 and not self.piece_copyuid:
            self.copyuids.append(parts)
        else:
            self.copyuids = None
        self.piece_copyuid = True

    def piece_done(self) -> None:
        if not self.piece_copyuid:
            self.copyuids = None
        self.piece_copyuid = False

    def merged_copyuid(self) -> bytes | None:
        """``COPYUID uidvalidity sources destinations``: the pieces' sets, concatenated in order
        (source and destination UIDs pair up in order within each piece, and piece after piece)."""
        found = self.copyuids
        if not found or len({parts[0] for parts in found}) != 1:
            return None
        return b"COPYUID %s %s %s" % (found[0][0], b",".join(p[1] for p in found),
                                      b",".join(p[2] for p in found))


# (a ClassifyMessages goes to the proxy's own upstream connection; its answer comes back as the
# result's ``tags``)
Flow = Generator[bytes | ClassifyMessages, _OpResult, None]
# A flow that waits for the proxy's own upstream connection (STATUS of another mailbox)
_CountFlow = Generator[CountMessages, CountAnswer, None]


class MailboxSession(ProxySession):
    """A :class:`ProxySession` that tags and hides through a per-account classifier."""

    def __init__(self, settings: SessionSettings, *, tagging: bool = True) -> None:
        super().__init__(settings)
        self.tagging = tagging
        self.neutralise_appends = tagging
        self.classifier: Classifier | None = None
        self._awaiting_classifier = False
        self._mailbox: SelectedMailbox | None = None
        self._selecting: _Selecting | None = None
        self._flow: Flow | _CountFlow | None = None
        self._side_query: SideQuery | None = None  # what the flow waits for (see answered)
        self._flow_tag: bytes | None = None
        self._flow_owner: CommandStart | None = None  # the client command a flow works for
        self._flow_result = _OpResult()
        self._deferred: tuple[CommandStart, list[Token], _Assembling] | None = None
        self._arrivals = False
        self._fetch_maps: deque[tuple[bytes, PartialMap]] = deque()
        self._search_kinds: deque[tuple[bytes, bool]] = deque()
        self._idle_interrupt: str | None = None  # stopping | flow | resuming
        self._idle_client_done = False
        self._idle_ok: bytes = b""
        # A client command's tagged answer, held while mail that arrived during it is classified
        self._held_tagged: tuple[Response, bytes] | None = None
        # SEARCHes the upstream ran over hidden mail too: tag -> the same confined to visible mail
        self._unconfined: dict[bytes, list[Token] | None] = {}
        self._expunged_during: list[bool] = []  # while one is in flight: each EXPUNGE, visible?
        self._chunked: _Chunked | None = None  # a client command sent in pieces, in flight
        self.hidden_count = 0  # messages this session was not shown (for the audit log)
        # _passes_unchanged's answers, for the section map of the FETCH in flight
        self._fast_partials: PartialMap | None = None
        self._fast_sections: dict[bytes, bool] = {}
        self._fast_hides: bool | None = None  # whether the classifier hides anything, once known
        # the response whose section literal _after_fast_literal is passing on
        self._fast_first: tuple[Line, SelectedMailbox, int, Tagged | None, PartialMap | None] | None = None

    # -- set up by the IO shell after login ---------------------------------------------------------

    @property
    def awaiting_classifier(self) -> bool:
        return self._awaiting_classifier

    def set_classifier(self, classifier: Classifier | None) -> list[Action]:
        """The account's classifier and frozen clearance; None: nothing to tag or hide."""
        self.classifier = classifier
        if classifier is None:
            # Nothing to judge nor count: the proxy needs no connection of its own.
            self.credentials = None
        self._awaiting_classifier = False
        self._run(self._pump_client)
        return self._take()

    def _tagged(self, response: Response, data: bytes) -> None:
        was_authenticated = self.authenticated
        super()._tagged(response, data)
        if self.authenticated and not was_authenticated:
            # No command may be read until the IO shell has judged the connection.
            self._awaiting_classifier = True
        self._after_command(response.tag or b"")

    # -- hooks -------------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return (
            self._awaiting_classifier
            or self._selecting is not None
            or self._flow is not None
            or self._deferred is not None
            or bool(self._unconfined)  # its answer may need a question of our own
            or self._chunked is not None  # its next piece goes before any later command
        )

    def _on_command(self, start: CommandStart, args: list[Token], current: _Assembling) -> bool:
        if self.classifier is None:
            return False
        verb = start.verb
        if verb in ("SELECT", "EXAMINE") and not start.uid:
            if self._pending and self._mailbox is not None:
                # The answers to the commands before it still speak of the selected mailbox in
                # the upstream's numbers (flag updates and EXPUNGEs of hidden mail included, and
                # messages that need our header): they are read through its view, and only then
                # is the view let go.
                self._deferred = (start, args, current)
                return True
            self._mailbox = None
            self._selecting = _Selecting(start.tag, _mailbox_name(args[0]), verb == "EXAMINE", args[0])
            return False  # forwarded as is; its answer is held (see _select_untagged)
        if verb in ("CLOSE", "STATUS", "DELETE") and self.classifier.hides_anything:
            if self._pending:
                self._deferred = (start, args, current)  # needs the upstream to itself
            else:
                self._special(start, args, current)
            return True
        mailbox = self._mailbox
        if mailbox is None or verb not in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"):
            return False
        if mailbox.hides and self._pending and (not start.uid or verb == "SEARCH"):
            # The upstream reads sequence numbers after the commands before this one finished, and
            # their EXPUNGEs renumber: translated now, a number could land on a hidden message.
            self._deferred = (start, args, current)
            return True
        translated = mailbox.translate(start, args, shift_partials=self.tagging)
        if translated.args is None:
            self._answer(start, start.tag, translated.local_status, translated.local_text)
            return True
        if translated.more_sets and self._pending:
            # Sent in pieces, it needs the upstream to itself (see _Chunked); translated then.
            self._deferred = (start, args, current)
            return True
        sent = CommandStart(
            start.tag,
            start.uid if translated.uid is None else translated.uid,
            translated.verb or verb,
            b"",
        )
        if verb == "SEARCH":
            self._search_kinds.append((start.tag, start.uid))
            if translated.unconfined:
                self._unconfined[start.tag] = translated.confined
        if translated.partials is not None and translated.partials.entries:
            self._fetch_maps.append((start.tag, translated.partials))
        if translated.more_sets:
            self._chunked = _Chunked(start, sent, translated.args[1:], list(translated.more_sets))
        self._send_client_command(start, sent, translated.args)
        return True

    def _send_client_command(self, start: CommandStart, sent: CommandStart, args: list[Token]) -> None:
        self._pending[start.tag] = _Pending(start)
        fragments, literals = serialize(args)
        self._forward(start.tag, _Assembling(sent, fragments=fragments, literals=literals))

    def _after_command(self, tag: bytes) -> None:
        if self._fetch_maps and self._fetch_maps[0][0] == tag:
            self._fetch_maps.popleft()
        if self._search_kinds and self._search_kinds[0][0] == tag:
            self._search_kinds.popleft()
        if self._deferred is not None and not self._pending:
            start, args, current = self._deferred
            self._deferred = None
            if not self._on_command(start, args, current):
                self._pending[start.tag] = _Pending(start)  # (no mailbox any more) as it is
                self._forward(start.tag, current)
        self._maybe_start_arrivals()

    def _on_tagged(self, response: Response, data: bytes) -> bool:
        tag = response.tag
        if tag is not None and tag == self._flow_tag:
            result = self._flow_result
            result.status = response.status or b""
            result.code = response.code.name if response.code is not None else b""
            self._flow_send(result)
            return True
        selecting = self._selecting
        if selecting is not None and tag == selecting.tag:
            if response.status == b"OK":
                code = response.code
                if code is not None and code.name == b"READ-ONLY":
                    selecting.readonly = True
                self._start_flow(self._select_flow(selecting, response, data), None)
                return True
            self._selecting = None
            for line in selecting.lines:
                if _MESSAGE_DATA.match(line) is None:  # counts of no mailbox the client has
                    self._to_client(line)
            return False
        if self._idle_interrupt == "stopping" and tag == self._idle_tag:
            # The upstream IDLE ended for our sake; the client's IDLE goes on.
            self._idle_ok = data
            self._idle_interrupt = "flow"
            self._start_flow(self._arrivals_flow(), None)
            return True
        pending = self._pending.get(tag or b"")
        if pending is None:
            return False
        chunked = self._chunked
        if chunked is not None and tag == chunked.start.tag:
            return self._piece_done(chunked, response, data)
        if tag in self._unconfined:
            confined = self._unconfined.pop(tag)
            expunged, self._expunged_during = self._expunged_during, []
            code = response.code
            if code is not None and code.name == b"EXPUNGEISSUED":
                # Maybe about a hidden message.
                self._held_tagged = (response, data)
                self._start_flow(self._expunge_issued_flow(tag, confined, expunged,
                                                           uid=pending.start.uid), pending.start)
                return True
        verb = pending.start.verb
        if (self._arrivals and self._mailbox is not None and list(self._pending) == [tag]
                and tag != self._idle_tag and verb not in ("CLOSE", "UNSELECT", "LOGOUT")):
            # Mail arrived during the command: announce it before the command completes, as the
            # upstream did (a client polling with NOOP takes the tagged OK as "up to date").
            self._held_tagged = (response, data)
            self._start_flow(self._arrivals_flow(), None)
            return True
        if verb in ("CLOSE", "UNSELECT") and response.status == b"OK":
            self._mailbox = None
            if verb == "CLOSE":
                # CLOSE went upstream as UNSELECT (see _close_flow); answer as the command sent.
                self._tagged(response, data.replace(b" Unselect completed", b" Close completed", 1))
                return True
        return False

    def _piece_done(self, chunked: _Chunked, response: Response, data: bytes) -> bool:
        """One piece of a command sent in pieces completed: send the next, or complete it."""
        code = response.code
        if code is not None and code.name == b"COPYUID":
            chunked.note_copyuid(code)
        if response.status == b"OK" and chunked.sets:
            chunked.piece_done()
            fragments, literals = serialize([Atom(chunked.sets.pop(0).decode()), *chunked.rest])
            self._forward(chunked.start.tag, _Assembling(chunked.sent, fragments=fragments,
                                                         literals=literals))
            return True
        self._chunked = None
        if response.status == b"OK":
            chunked.piece_done()
        merged = chunked.merged_copyuid()
        verb = chunked.start.verb
        if verb == "MOVE" and merged is not None:
            # (said for the pieces moved even when a later one failed: their EXPUNGEs were heard)
            self._to_client(b"* OK [" + merged + b"] Moved UIDs.\r\n")
        elif verb == "COPY" and response.status == b"OK" and (code is None or code.name == b"COPYUID"):
            said = b"[" + merged + b"] " if merged is not None else b""
            data = (response.tag or b"") + b" OK " + said + response.text + b"\r\n"
            response = parse_response(data)
        # The whole command completes as any other does.
        if not self._on_tagged(response, data):
            self._tagged(response, data)
        return True

    def _on_continuation(self, data: bytes) -> bool:
        if self._idle_interrupt != "resuming":
            return False
        self._idle_interrupt = None
        if self._idle_client_done:
            self._idle_client_done = False
            self._emit_server(b"DONE\r\n")
        else:
            self._maybe_start_arrivals()  # mail that came before this "+": classify it now
        return True  # the client already had its "+ idling"

    def _on_idle_done(self) -> bool:
        if self._idle_interrupt is None:
            return False
        self._idle_client_done = True
        self._idling = False
        return True

    def _on_untagged(self, response: Response, event: Line) -> bool:
        if self.classifier is None:
            return False
        if self._flow is not None:
            return self._flow_untagged(response, event)
        if self._selecting is not None:
            return self._select_untagged(response, event)
        mailbox = self._mailbox
        keyword = response.keyword
        if keyword in (b"LIST", b"LSUB") and self.classifier.hides_anything:
            # \Marked / \UnMarked say new mail arrived, hidden mail included.
            data = event.data
            start, close = data.find(b"(") + 1, data.find(b")")
            if not 0 < start <= close:
                raise ServerProtocolError(f"{keyword!r} without a flag list")
            flags = [flag for flag in data[start:close].split() if not _MARKED.fullmatch(flag)]
            self._to_client(data[:start] + b" ".join(flags) + data[close:])
            return event.literal is None or self._pass_rest(event)
        if mailbox is None:
            return False
        number = response.number
        if number is not None:
            return self._message_data(mailbox, number, keyword or b"", event)
        if keyword == b"SEARCH":
            uid = self._search_kinds[0][1] if self._search_kinds else False
            numbers = [int(n) for n in response.text.split() if n.isdigit()]
            shown = mailbox.search_result(numbers, uid=uid)
            self._to_client(b"* SEARCH" + b"".join(b" %d" % n for n in shown) + b"\r\n")
            return True
        if keyword == b"FLAGS" and mailbox.hides:
            mailbox.flag_lines[b"FLAGS"] = event.data  # shown when a visible message uses it
            return True
        if response.status is not None:
            code = response.code
            if code is not None and code.name == b"UNSEEN":
                return True  # a sequence number of the upstream's numbering
            if code is not None and code.name == b"PERMANENTFLAGS" and mailbox.hides:
                mailbox.flag_lines[b"PERMANENTFLAGS"] = event.data
                return True
            if code is not None and code.name == b"COPYUID" and self._chunked is not None:
                self._chunked.note_copyuid(code)  # a MOVE's piece: merged when the last completed
                return True
            return False
        if mailbox.hides and keyword not in _KNOWN_DATA:
            raise ServerProtocolError(f"untagged {keyword!r} the view cannot rewrite")
        return False

    def _pass_rest(self, event: Line) -> bool:
        self._sink = lambda ev: self._to_client(ev.data)
        return True

    # -- message data of the selected mailbox ---------------------------------------------------------

    def _message_data(self, mailbox: SelectedMailbox, number: int, keyword: bytes, event: Line) -> bool:
        view = mailbox.view
        if keyword == b"EXISTS":
            mailbox.upstream_exists = number
            if number > len(view.uids):
                self._arrivals = True
                self._maybe_start_arrivals()
            return True
        if keyword == b"RECENT":
            if mailbox.hides:
                # The upstream's count includes hidden mail; it says RECENT when its count
                # changes, we when the count of what this client sees did (after the EXISTS of
                # arrivals still being classified).
                if not self._arrivals:
                    self._recent_changed(mailbox)
                return True
            if self._arrivals or self._flow is not None:
                mailbox.held_recent = number  # said after the EXISTS it belongs to
                return True
            mailbox.told_recent = number
            return False
        if keyword == b"EXPUNGE":
            chunked = self._chunked
            if chunked is not None and not chunked.sent.uid:
                # The pieces of a FETCH or STORE by sequence number were numbered when it began;
                # RFC 3501 §7.4.1 keeps EXPUNGE out of these commands, so that numbering holds.
                # An upstream breaking the rule would make the next piece name other messages.
                raise ServerProtocolError("EXPUNGE during a FETCH or STORE by sequence number")
            self._expunge(mailbox, number, deliver=True)
            if len(mailbox.view.uids) < mailbox.upstream_exists and not self._arrivals:
                # mail left unread behind a gap in an earlier answer (see _arrivals_flow)
                self._arrivals = True
                self._maybe_start_arrivals()
            return True
        if keyword == b"FETCH":
            self._fetch_response(mailbox, number, event)
            return True
        if mailbox.hides:
            raise ServerProtocolError(f"message data {keyword!r} the view cannot rewrite")
        return False

    def _expunge(self, mailbox: SelectedMailbox, number: int, *, deliver: bool) -> None:
        mailbox.upstream_exists -= 1
        if number > len(mailbox.view.uids):
            return  # a message the client had not been told of yet
        mailbox.recent.discard(mailbox.view.uids[number - 1])
        client = mailbox.view.expunge_upstream_seq(number)
        if self._unconfined:
            self._expunged_during.append(client is not None)
        if client is not None and deliver:
            self._to_client(b"* %d EXPUNGE\r\n" % client)

    def _recent_changed(self, mailbox: SelectedMailbox) -> None:
        if len(mailbox.recent) != mailbox.told_recent:
            mailbox.told_recent = len(mailbox.recent)
            self._to_client(b"* %d RECENT\r\n" % mailbox.told_recent)

    def _announce_keywords(self, mailbox: SelectedMailbox, event: Line) -> None:
        """A visible message carries a keyword the client was not shown: show the flag lists."""
        text = event.without_marker()
        scan = FetchScan()
        for item in scan_fragment(text, scan, first=True, literal_follows=event.literal is not None):
            if item.name != b"FLAGS" or item.value_start < 0:
                continue
            flags = text[item.value_start : item.value_end].strip(b"()").split()
            new = [flag for flag in flags if _is_keyword(flag) and flag not in mailbox.keywords]
            if new:
                mailbox.keywords.extend(new)
                for name in (b"FLAGS", b"PERMANENTFLAGS"):
                    line = mailbox.flag_lines.get(name)
                    if line is not None:
                        self._to_client(_shown_flags(line, mailbox.keywords, new))

    def _fetch_response(self, mailbox: SelectedMailbox, number: int, event: Line) -> None:
        view = mailbox.view
        client = None
        uid = 0
        if number <= len(view.uids):
            uid = view.uids[number - 1]
            client = view.client_seq(uid)
        if client is None:
            # Hidden, or not announced yet: nothing of it reaches the client.
            if event.literal is not None:
                self._sink = _discard
            return
        if mailbox.hides:
            self._announce_keywords(mailbox, event)
        tagged = mailbox.tag_of(uid) if self.tagging else None
        partials = self._fetch_maps[0][1] if self._fetch_maps else None
        rewriter = self._rewriter(mailbox, client, tagged, partials)
        for chunk in rewriter.fragment(event):
            self._to_client(chunk)
        if event.literal is not None:
            self._sink = self._rewriting_sink(rewriter)

    def _rewriter(self, mailbox: SelectedMailbox, client: int, tagged: Tagged | None,
                  partials: PartialMap | None) -> FetchRewriter:
        return FetchRewriter(client, tagged, partials, mailbox.classifier.header_names)

    def _rewriting_sink(self, rewriter: FetchRewriter) -> Callable[[Line | LiteralChunk], None]:
        def sink(ev: Line | LiteralChunk) -> None:
            out = rewriter.literal(ev) if isinstance(ev, LiteralChunk) else rewriter.fragment(ev)
            for chunk in out:
                self._to_client(chunk)
        return sink

    # -- the common FETCH responses of a bulk download (see fetch_fast) -----------------------------

    def _on_common(self, event: Line) -> bool:
        """``* n FETCH`` of a header sync without the general parse: the same bytes, in one step.

        Anything ``fetch_fast`` does not match, a keyword the client was not shown yet and a
        section our header changes are left to the general path (False)."""
        mailbox = self._mailbox
        if mailbox is None or self._flow is not None or self._selecting is not None:
            return False
        data = event.data
        literal = event.literal is not None
        found = fetch_fast.match(data, literal)
        if found is None:
            return False
        number = found[0]
        view = mailbox.view
        uids = view.uids
        client = None
        uid = 0
        if number <= len(uids):
            uid = uids[number - 1]
            # (every message visible: the visible UIDs are all UIDs, the numbers the same)
            client = number if len(view.visible) == len(uids) else view.client_seq(uid)
        if client is None:
            # Hidden, or not announced yet: nothing of it reaches the client.
            if literal:
                self._sink = _discard
            return True
        if self._fast_hides is None:
            self._fast_hides = mailbox.hides  # the classifier's, fixed for the session
        if self._fast_hides:
            for flag in fetch_fast.non_system_flags(data, found):
                if _is_keyword(flag) and flag not in mailbox.keywords:
                    return False  # _announce_keywords shows it first
        tagged = (mailbox.tags.get(uid) or mailbox.tag_of(uid)) if self.tagging else None
        partials = self._fetch_maps[0][1] if self._fetch_maps else None
        if literal and tagged is not None:
            name = found[3]
            passes = self._fast_sections.get(name) if partials is self._fast_partials else None
            if passes is None:
                passes = self._passes_unchanged(name, mailbox, client, tagged, partials)
            if not passes:
                return False
        rendered = fetch_fast.render(data, found, client, None if tagged is None else len(tagged.block))
        if not literal:
            self._to_client(rendered)
            self._fast_lines(mailbox)
            return True
        # The section literal and ")" as the events would bring them, when they are here already
        framer = self._server
        body = framer.take_whole_literal()
        if body is not None and framer.take_line(b")\r\n"):
            if len(body) <= 4096:
                self._to_client(rendered + body + b")\r\n")
            else:  # (a big literal is not copied once more here: the write joins the chunks)
                self._to_client(rendered)
                self._to_client(body)
                self._to_client(b")\r\n")
            self._fast_lines(mailbox)
            return True
        self._to_client(rendered)
        if body is not None:
            self._to_client(body)
        self._fast_first = (event, mailbox, client, tagged, partials)
        self._sink = self._after_fast_literal
        return True

    def _fast_lines(self, mailbox: SelectedMailbox) -> None:
        """The FETCH responses that follow one which took the fast path, read straight from the
        framer's buffer while they are whole and of the shape: each as the event loop would have
        handled it (the same steps as _on_common), without making the events. A header sync is
        thousands of them back to back; whatever is not of the shape (or not whole yet) stops the
        loop and goes through the events as usual.

        What the client gets is cut from the buffer around the two things that change: the
        sequence number and the value of ``RFC822.SIZE`` (every verdict's header has the same
        length, so it grows by the same amount for every tagged message)."""
        framer = self._server
        window = framer.window()
        if window is None:
            return
        buf, pos = window
        available = len(buf)
        max_line = framer.max_line
        response = fetch_fast.RESPONSE.match
        out: list[bytes] = []
        hides = self._fast_hides
        extra = mailbox.classifier.header_length if self.tagging else None
        partials = self._fetch_maps[0][1] if self._fetch_maps else None
        shown_flags = mailbox.shown_flag_lists
        numbers = mailbox.view.client_numbers()  # (the view does not change during the loop)
        uids = mailbox.view.uids
        passing = b""  # the last section name found to pass unchanged
        while True:
            found = response(buf, pos)
            if found is None:
                break
            line_end = found.end()
            if line_end - pos > max_line:
                break  # the events raise LineTooLong
            size = found[4]
            if size is None:
                end = line_end
            else:
                end = line_end + int(size) + 3
                if end > available or not buf.startswith(b")\r\n", end - 3):
                    break  # not whole yet (or more items after the literal)
            number = int(found[1])
            client = numbers[number - 1] if number <= len(numbers) else None
            if client is None:
                pos = end  # hidden, or not announced yet: nothing reaches the client
                continue
            start, stop = found.span(2)
            if hides:
                # (the few distinct flag lists of a mailbox are checked once each)
                flags = fetch_fast.flag_list(buf, start, stop)
                if flags is None or flags not in shown_flags:
                    shape = (number, start - pos, stop - pos, b"")
                    if any(_is_keyword(flag) and flag not in mailbox.keywords
                           for flag in fetch_fast.non_system_flags(buf[pos:line_end], shape)):
                        break  # _announce_keywords shows it first
                    if flags is not None:
                        shown_flags.add(flags)
            if extra is not None and size is not None:
                name = found[3]
                if name != passing:
                    tagged = mailbox.tag_of(uids[number - 1])
                    if not self._passes_unchanged(name, mailbox, client, tagged, partials):
                        break
                    passing = name
            out += fetch_fast.pieces(buf, pos, start, stop, end, number, client, extra)
            pos = end
        framer.advance(pos)
        if out:
            self._to_client_all(out)

    def _passes_unchanged(self, name: bytes, mailbox: SelectedMailbox, client: int, tagged: Tagged,
                          partials: PartialMap | None) -> bool:
        """The general rewriter's answer, asked once per section name and FETCH command (it
        depends on the command's section map and our header's names, not on the message)."""
        if partials is not self._fast_partials:
            self._fast_partials = partials
            self._fast_sections = {}
        passes = self._fast_sections.get(name)
        if passes is None:
            passes = self._rewriter(mailbox, client, tagged, partials).passes_unchanged(name.upper())
            self._fast_sections[name] = passes
        return passes

    def _after_fast_literal(self, ev: Line | LiteralChunk) -> None:
        """The sink for the rest of a response whose first fragment took the fast path: the
        section literal as it is, then ``)``; any other fragment goes to a general rewriter
        brought to the same state."""
        if type(ev) is LiteralChunk or ev.data == b")\r\n":
            self._to_client(ev.data)
            return
        assert isinstance(ev, Line) and self._fast_first is not None
        first, mailbox, client, tagged, partials = self._fast_first
        rewriter = self._rewriter(mailbox, client, tagged, partials)
        rewriter.fragment(first)  # what the client already has (fetch_fast.render)
        general = self._rewriting_sink(rewriter)
        if ev.literal is not None:
            self._sink = general
        general(ev)

    # -- SELECT ----------------------------------------------------------------------------------------

    def _select_untagged(self, response: Response, event: Line) -> bool:
        selecting = self._selecting
        assert selecting is not None
        if response.status == b"BYE":
            return False
        if response.number is not None and response.keyword not in (b"EXISTS", b"RECENT"):
            # FETCH or EXPUNGE: never part of a SELECT answer, so about the mailbox being left
            # (its numbers, its hidden mail): not the client's any more.
            if event.literal is not None:
                self._sink = _discard
            return True
        if event.literal is not None:
            raise ServerProtocolError("literal in a SELECT answer")
        code = response.code
        if response.number is not None and response.keyword == b"EXISTS":
            # (a second EXISTS: mail arrived while the upstream answered; its RECENT and
            # [UNSEEN n] may be of either moment)
            selecting.changed = selecting.changed or any(
                line.upper().rstrip().endswith(b" EXISTS") for line in selecting.lines)
            selecting.exists = response.number
        elif code is not None and code.name == b"UIDVALIDITY":
            selecting.uidvalidity = int(code.args or b"0")
        elif code is not None and code.name in (b"HIGHESTMODSEQ", b"NOMODSEQ"):
            return True
        selecting.lines.append(event.data)
        return True

    def _select_flow(self, selecting: _Selecting, ok: Response, ok_line: bytes) -> Flow:
        classifier = self.classifier
        assert classifier is not None
        uids: list[int] = []
        if selecting.exists:
            result = yield b"UID SEARCH ALL"
            uids = sorted(result.search)
        selecting.uids = uids  # EXPUNGEs from now on shrink this list
        tags = classifier.known(selecting.name, selecting.uidvalidity, uids)
        unknown = [uid for uid in uids if uid not in tags]
        if unknown and self.credentials is not None:
            # Read and judged on the proxy's own connection (side_session): this one carries
            # the client's commands only.
            result = yield ClassifyMessages(selecting.name, selecting.token, selecting.uidvalidity,
                                            tuple(unknown))
            # (what it judged before it failed is in the cache)
            tags.update(result.tags if result.tags is not None
                        else classifier.known(selecting.name, selecting.uidvalidity, unknown))
            # (of the messages still there: an EXPUNGE meanwhile left selecting.uids)
            unknown = [uid for uid in selecting.uids if uid not in tags]
        # Here when the proxy cannot have a connection of its own (no login it can replay, or the
        # upstream refused one), and for messages whose header it did not return: read on this
        # one. (A message still without a verdict gets the top level: fail closed.)
        for command in header_fetches(unknown):
            result = yield command
            tags.update(self._classify(selecting.name, selecting.uidvalidity, result))
        mailbox = SelectedMailbox(selecting.name, selecting.uidvalidity, selecting.readonly, classifier)
        mailbox.view = MailboxView()
        mailbox.admit(selecting.uids, tags)
        selecting.mailbox = mailbox  # EXPUNGEs from now on leave the view
        unseen: int | None = None
        recent: int | None = None
        if mailbox.hides:
            for line in selecting.lines:
                if line.upper().startswith((b"* FLAGS ", b"* OK [PERMANENTFLAGS ")):
                    mailbox.flag_lines[b"FLAGS" if line[2:3] in b"Ff" else b"PERMANENTFLAGS"] = line
            for keyword in _keywords_of(mailbox.flag_lines.values()):
                # Shown only when a message this client sees carries it.
                result = yield b"UID SEARCH KEYWORD " + keyword
                if any(mailbox.view.is_visible(uid) for uid in result.search):
                    mailbox.keywords.append(keyword)
            # The upstream's own [UNSEEN n] and RECENT count still describe the messages of the
            # UID search when nothing arrived or left since: a visible first unseen message is
            # the client's too, and no recent message means none visible. Otherwise ask.
            steady = not selecting.changed and selecting.exists == len(selecting.uids)
            said_unseen = _said_count(_UNSEEN_CODE, selecting.lines) if steady else None
            # (UIDs, made client numbers at the end: an EXPUNGE during a search moves them)
            first = (selecting.uids[said_unseen - 1]
                     if said_unseen is not None and 0 < said_unseen <= len(selecting.uids) else None)
            if first is not None and mailbox.view.is_visible(first):
                unseen_uid: int | None = first
            else:
                result = yield b"UID SEARCH UNSEEN"
                # the first unseen message the client sees: the lowest visible UID (UIDs ascend
                # with sequence numbers)
                unseen_uid = next(filter(mailbox.view.is_visible, sorted(result.search)), None)
            if steady and _said_count(_RECENT, selecting.lines) == 0:
                mailbox.recent = set()
            else:
                result = yield b"UID SEARCH RECENT"
                mailbox.recent = set(result.search)
            mailbox.recent = set(filter(mailbox.view.is_visible, mailbox.recent))
            recent = mailbox.told_recent = len(mailbox.recent)
            unseen = None if unseen_uid is None else mailbox.view.client_seq(unseen_uid)
            self.hidden_count += len(mailbox.view.hidden)
        else:
            for line in selecting.lines:
                match = _RECENT.match(line)
                if match is not None:
                    mailbox.told_recent = int(match.group(1))
        # (EXISTS and EXPUNGE during the searches above moved the count)
        mailbox.upstream_exists = max(selecting.exists, len(mailbox.view.uids))
        self._selecting = None
        self._mailbox = mailbox
        for line in selecting.lines:
            self._to_client(_select_line(line, mailbox, unseen, recent))
        self._tagged(ok, ok_line)  # completes the client's SELECT
        if len(mailbox.view.uids) < mailbox.upstream_exists:
            self._arrivals = True

    def _classify(self, mailbox: str, uidvalidity: int, result: _OpResult) -> dict[int, Tagged]:
        assert self.classifier is not None
        return classify_fetched(self.classifier, mailbox, uidvalidity, (items for _n, items in result.fetches))

    def _expunge_issued_flow(self, tag: bytes, confined: list[Token] | None,
                             expunged: list[bool], *, uid: bool) -> Flow:
        """Keep a SEARCH's [EXPUNGEISSUED] only when a visible message is what it is about.

        A UID SEARCH ends with the EXPUNGEs it could not read (``expunged``: visible or not);
        otherwise they are still to come, and the same search over the visible messages alone
        says whether one of them is visible."""
        if any(expunged):
            return
        keys = None
        if expunged:
            confined = None  # only hidden ones
        if confined is not None:
            fragments, literals = serialize(confined)
            keys = None if literals else b"".join(fragments)
        if keys is not None:
            # Asked as the client asked: during a SEARCH the upstream may send no EXPUNGE (RFC
            # 3501 §7.4.1), so one the client cannot hear yet stays the upstream's to send later.
            result = yield (b"UID SEARCH " if uid else b"SEARCH ") + keys
            if result.status == b"OK" and result.code == b"EXPUNGEISSUED":
                return
        # (a search whose keys need literals is not asked again: the code is dropped)
        data = tag + b" OK Search completed.\r\n"
        self._held_tagged = (parse_response(data), data)

    # -- new mail ----------------------------------------------------------------------------------

    def _maybe_start_arrivals(self) -> None:
        if not self._arrivals or self._flow is not None or self._selecting is not None:
            return
        if self._mailbox is None or self.closed:
            self._arrivals = False
            return
        if not self._pending:
            self._start_flow(self._arrivals_flow(), None)
        elif (self._idling and self._idle_interrupt is None and list(self._pending) == [self._idle_tag]):
            # The client is idling: end the upstream IDLE, classify, idle again (RFC 2177).
            self._idle_interrupt = "stopping"
            self._emit_server(b"DONE\r\n")

    def _arrivals_flow(self) -> Flow:
        mailbox = self._mailbox
        assert mailbox is not None and self.classifier is not None
        while len(mailbox.view.uids) < mailbox.upstream_exists:
            first = len(mailbox.view.uids) + 1
            # A sequence-number FETCH: the upstream may not send EXPUNGE during it (RFC 3501 §7.4.1),
            # so the numbers stay valid while we read.
            result = yield b"FETCH %d:%d (UID FLAGS BODY.PEEK[HEADER])" % (first, mailbox.upstream_exists)
            fetched = sorted((number, int(items[b"UID"])) for number, items in result.fetches
                             if b"UID" in items)
            # Only the run from ``first`` without a gap, each UID above the one before: a
            # message left out (expunged meanwhile elsewhere) would shift every number after it
            # onto the wrong UID. What follows a gap is asked for again from the gap on.
            uids: list[int] = []
            last = mailbox.view.uids[-1] if mailbox.view.uids else 0
            for number, uid in fetched:
                if number < first + len(uids):
                    continue  # a flag update of a message already known (or said twice)
                if number > first + len(uids) or uid <= last:
                    break
                uids.append(uid)
                last = uid
            if not uids:
                break
            tags = self.classifier.known(mailbox.name, mailbox.uidvalidity, uids)
            unknown = _OpResult(fetches=[f for f in result.fetches if int(f[1].get(b"UID", 0)) not in tags])
            tags.update(self._classify(mailbox.name, mailbox.uidvalidity, unknown))
            before = mailbox.view.exists
            shown = mailbox.admit(uids, tags)
            self.hidden_count += len(uids) - len(shown)
            flags = {int(items[b"UID"]): items.get(b"FLAGS", b"").upper() for _n, items in result.fetches
                     if b"UID" in items}
            mailbox.recent.update(uid for uid in shown if b"\\RECENT" in flags.get(uid, b""))
            if mailbox.view.exists != before:
                self._to_client(b"* %d EXISTS\r\n" % mailbox.view.exists)
            if mailbox.held_recent is not None and not mailbox.hides:
                # (the upstream may count mail it marks \Recent only after its EXISTS: said once)
                if mailbox.held_recent != mailbox.told_recent:
                    mailbox.told_recent = mailbox.held_recent
                    self._to_client(b"* %d RECENT\r\n" % mailbox.held_recent)
                mailbox.held_recent = None
        if mailbox.hides:
            self._recent_changed(mailbox)  # RECENT follows EXISTS, as the upstream says it
        self._arrivals = False

    # -- commands that need the upstream to themselves --------------------------------------------

    def _special(self, start: CommandStart, args: list[Token], current: _Assembling) -> None:
        if start.verb == "CLOSE":
            self._start_flow(self._close_flow(start), start)
        elif start.verb == "STATUS":
            self._status(start, args, current)
        else:
            self._start_flow(self._delete_flow(start, args, current), start)

    def _close_flow(self, start: CommandStart) -> Flow:
        mailbox = self._mailbox
        if mailbox is not None and not mailbox.readonly:
            # CLOSE expunges silently; only what this connection sees may go (in pieces that fit
            # an upstream line; after a piece that failed, the rest stays, as after a failed CLOSE).
            for visible in mailbox.visible_uid_sets():
                result = yield b"UID EXPUNGE " + visible
                if result.status != b"OK":
                    break
        self._mailbox = None
        self._send_client_command(start, CommandStart(start.tag, False, "UNSELECT", b""), [])

    def _status(self, start: CommandStart, args: list[Token], current: _Assembling) -> None:
        name = _mailbox_name(args[0])
        items = [str(item).upper() for item in args[1]] if isinstance(args[1], list) else []
        counts = {"MESSAGES", "UNSEEN", "RECENT"} & set(items)
        mailbox = self._mailbox
        if not counts:
            self._send_client_command(start, start, args)
        elif mailbox is not None and mailbox.name == name:
            self._start_flow(self._status_flow(start, mailbox, items, args[0]), start)
        elif self.credentials is not None:
            # Another mailbox: counted on the proxy's own upstream connection, so this one keeps
            # its selected mailbox, \Recent messages, pending EXPUNGEs (see side_session).
            self._start_flow(self._count_flow(start, CountMessages(name, args[0], tuple(items))), start)
        else:
            # (a login the proxy cannot replay: fail closed rather than count hidden mail)
            self._answer(start, start.tag, b"NO", "[CANNOT] Message counts of a mailbox other than "
                                                  "the selected one are not available on this connection")

    def _count_flow(self, start: CommandStart, query: CountMessages) -> _CountFlow:
        answer = yield query
        if answer.values is None:
            # The upstream's own refusal of the mailbox, or ours when the count failed: never
            # the upstream's counts.
            text = answer.refusal or b"[UNAVAILABLE] Message counts are not available now"
            self._to_client(start.tag + b" NO " + text + b"\r\n")
            self._actions.append(CommandDone(start.name, "NO", local=True))
            return
        fragments, literals = serialize([query.name])
        name = fragments[0] if not literals else b"{%d}\r\n%s" % (len(literals[0]), literals[0])
        # in RFC 3501's order, as Dovecot answers, whatever order the client asked in
        rendered = b" ".join(b"%s %d" % (item.encode(), answer.values[item]) for item in COUNT_ITEMS
                             if item in query.items)
        self._complete_locally(start, b"* STATUS " + name + b" (" + rendered + b")\r\n"
                               + start.tag + b" OK Status completed.\r\n")

    def answered(self, query: SideQuery, answer: SideAnswer) -> list[Action]:
        """The answer to the :class:`CountMessages` or :class:`ClassifyMessages` this session
        emitted (``query``, the very object); what to do next."""
        if query is not self._side_query or self._flow is None or self.closed:
            return []  # (the session ended meanwhile, or this is not what it waits for)
        self._side_query = None
        value = _OpResult(tags=answer.tags) if isinstance(answer, ClassifyAnswer) else answer
        self._run(lambda: self._flow_send(value))
        self._run(self._pump_client)
        return self._take()

    def _status_flow(self, start: CommandStart, mailbox: SelectedMailbox, items: list[str],
                     name_token: Token) -> Flow:
        values: dict[str, int] = {"UIDVALIDITY": mailbox.uidvalidity}
        if "UNSEEN" in items:
            result = yield b"UID SEARCH UNSEEN"
            values["UNSEEN"] = sum(1 for uid in result.search if mailbox.view.is_visible(uid))
        if "RECENT" in items:
            result = yield b"UID SEARCH RECENT"
            values["RECENT"] = sum(1 for uid in result.search if mailbox.view.is_visible(uid))
        if "UIDNEXT" in items:
            result = yield b"STATUS " + _render_name(name_token) + b" (UIDNEXT)"
            values["UIDNEXT"] = result.status_items.get(b"UIDNEXT", 0)
        values["MESSAGES"] = mailbox.view.exists  # (after any EXPUNGE the searches brought)
        rendered = b" ".join(b"%s %d" % (item.encode(), values[item]) for item in COUNT_ITEMS if item in items)
        self._complete_locally(start, b"* STATUS " + _render_name(name_token) + b" (" + rendered + b")\r\n"
                               + start.tag + b" OK Status completed.\r\n")

    def _delete_flow(self, start: CommandStart, args: list[Token], current: _Assembling) -> Flow:
        name = _mailbox_name(args[0])
        result = yield b"STATUS " + _render_name(args[0]) + b" (MESSAGES)"
        total = result.status_items.get(b"MESSAGES")
        mailbox = self._mailbox
        safe = total == 0 or (
            mailbox is not None and mailbox.name == name and not mailbox.view.hidden
            and total == len(mailbox.view.uids)
        )
        if result.status != b"OK" or safe:
            self._send_client_command(start, start, args)  # the upstream answers (NO if absent)
        else:
            # Nothing lost beats nothing revealed: mail this connection cannot see stays.
            self._answer(start, start.tag, b"NO", "[CANNOT] Mailbox is not empty")

    def _complete_locally(self, start: CommandStart, response: bytes) -> None:
        self._to_client(response)
        self._actions.append(CommandDone(start.name, "OK", local=True))

    # -- running internal commands ----------------------------------------------------------------------

    def _start_flow(self, flow: Flow | _CountFlow, owner: CommandStart | None) -> None:
        self._flow = flow
        self._flow_owner = owner
        self._flow_send(None)

    def _flow_send(self, value: _OpResult | CountAnswer | None) -> None:
        flow = self._flow
        assert flow is not None
        try:
            command = flow.send(value)  # type: ignore[arg-type]
        except StopIteration:
            self._flow = None
            self._flow_tag = None
            self._flow_owner = None
            self._after_flow()
            return
        if isinstance(command, (CountMessages, ClassifyMessages)):
            # Asked on the proxy's own connection: the IO shell answers through answered().
            self._flow_tag = None
            self._side_query = command
            self._actions.append(command)
            return
        self._flow_tag = self._next_internal_tag()
        self._flow_result = _OpResult()
        self._emit_server(self._flow_tag + b" " + command + b"\r\n")

    def _after_flow(self) -> None:
        held = self._held_tagged
        if held is not None:
            if self._arrivals and self._mailbox is not None:
                self._start_flow(self._arrivals_flow(), None)  # still held: EXISTS comes first
                return
            self._held_tagged = None
            self._tagged(*held)
        if self._idle_interrupt == "flow":
            if self._idle_client_done:
                self._idle_client_done = False
                self._idle_interrupt = None
                ok = self._idle_ok
                super()._tagged(_parse_tagged(ok), ok)
            else:
                self._idle_interrupt = "resuming"
                assert self._idle_tag is not None
                self._emit_server(self._idle_tag + b" IDLE\r\n")
        self._maybe_start_arrivals()
        self._flush_local()

    def _flow_untagged(self, response: Response, event: Line) -> bool:
        result = self._flow_result
        keyword = response.keyword
        number = response.number
        if response.status == b"BYE":
            return False
        if keyword == b"SEARCH":
            text = response.text
            # (tens of thousands of numbers after a SEARCH ALL: converted in one step when the
            # text is nothing but digits and spaces)
            result.search = (list(map(int, text.split())) if not text.translate(None, _DIGITS_AND_SPACE)
                             else [int(n) for n in text.split() if n.isdigit()])
            return True
        if keyword == b"STATUS":
            result.status_items = _status_items(response.text)
            return True
        if number is not None and keyword == b"FETCH":
            self._collect_fetch(event, lambda items: result.fetches.append((number, items)))
            return True
        selecting = self._selecting
        if number is not None and keyword == b"RECENT" and selecting is None and self._mailbox is not None:
            if not self._mailbox.hides:
                self._mailbox.held_recent = number
            elif self._idle_interrupt is not None:
                self._recent_changed(self._mailbox)  # e.g. after an EXPUNGE while idling
            return True
        if number is not None and keyword == b"EXISTS":
            if selecting is not None:
                selecting.exists = number
                selecting.changed = True
            elif self._mailbox is not None:
                self._mailbox.upstream_exists = number
                self._arrivals = number > len(self._mailbox.view.uids) or self._arrivals
            return True
        if number is not None and keyword == b"EXPUNGE":
            if selecting is not None:
                selecting.changed = True
                selecting.exists -= 1
                built = selecting.mailbox
                if built is not None and number <= len(built.view.uids):
                    # The client has not heard of the mailbox yet: the message just leaves the
                    # view, and every later number keeps naming the right UID.
                    built.view.expunge_upstream_seq(number)
                if selecting.uids is not None:
                    if number <= len(selecting.uids):
                        del selecting.uids[number - 1]
                elif result.search:
                    # During the UID SEARCH ALL (a UID command: EXPUNGE may come, RFC 3501
                    # §7.4.1), after its answer: the answer still holds the message. (One
                    # before the answer is already missing from it.)
                    ordered = sorted(result.search)
                    if number <= len(ordered):
                        del ordered[number - 1]
                    result.search = ordered
                return True
            if self._mailbox is not None:
                owner = self._flow_owner
                deliver = self._idle_interrupt is not None or (
                    owner is not None and owner.verb != "CLOSE"
                    and (owner.verb not in _NO_EXPUNGE_DURING or owner.uid)  # UID forms may hear one
                )
                if not deliver and (owner is None or owner.verb != "CLOSE"):
                    # Of a message the client never saw (hidden, or not announced yet) it need
                    # not hear; of one it saw it would have to, now, where RFC 3501 §7.4.1
                    # forbids it: end the session rather than let the numbering diverge.
                    view = self._mailbox.view
                    if number <= len(view.uids) and view.client_seq(view.uids[number - 1]) is not None:
                        raise ServerProtocolError("EXPUNGE of a visible message where the client "
                                                  "may not receive one")
                self._expunge(self._mailbox, number, deliver=deliver)
                if len(self._mailbox.view.uids) < self._mailbox.upstream_exists:
                    self._arrivals = True  # mail behind a gap in an earlier answer (after the flow)
            return True
        if event.literal is not None:
            raise ServerProtocolError("unexpected literal during an internal command")
        return True  # RECENT, FLAGS, OK chatter: the client hears the state when it asks

    def _collect_fetch(self, event: Line, done: Callable[[dict[bytes, bytes]], None]) -> None:
        """Assemble a whole FETCH response (headers: small) and hand over its top-level items."""
        collector = FetchCollector()

        def take(line: Line) -> None:
            if collector.fragment(line.without_marker(), literal_follows=line.literal is not None):
                done(collector.items)

        def sink(ev: Line | LiteralChunk) -> None:
            if isinstance(ev, LiteralChunk):
                collector.literal(ev.data, ev.last)
            else:
                take(ev)

        take(event)
        if event.literal is not None:
            self._sink = sink


def _discard(event: Line | LiteralChunk) -> None:
    """Swallow the rest of a response about a message the client may not see."""


def _mailbox_name(token: Token) -> str:
    raw = token if isinstance(token, bytes) else str(token).encode()
    name = raw.decode("utf-8", "replace")
    return "INBOX" if name.upper() == "INBOX" else name


def _render_name(token: Token) -> bytes:
    return quote(token) if isinstance(token, bytes) else str(token).encode()


def _said_count(pattern: re.Pattern[bytes], lines: list[bytes]) -> int | None:
    """The number the first of a SELECT's answer lines matching ``pattern`` says, if any."""
    for line in lines:
        match = pattern.match(line)
        if match is not None:
            return int(match.group(1))
    return None


def _status_items(text: bytes) -> dict[bytes, int]:
    inner = text[text.rfind(b"(") + 1 : text.rfind(b")")].split()
    return {inner[i].upper(): int(inner[i + 1]) for i in range(0, len(inner) - 1, 2) if inner[i + 1].isdigit()}


def _select_line(line: bytes, mailbox: SelectedMailbox, unseen: int | None, recent: int | None) -> bytes:
    """A held SELECT answer line as a mailbox without the hidden messages would have it."""
    upper = line.upper()
    if upper.startswith(b"* ") and upper.rstrip().endswith(b" EXISTS"):
        return b"* %d EXISTS\r\n" % mailbox.view.exists
    if recent is not None and upper.startswith(b"* ") and upper.rstrip().endswith(b" RECENT"):
        return b"* %d RECENT\r\n" % recent
    if mailbox.hides and upper.startswith(b"* OK [UNSEEN "):
        return b"* OK [UNSEEN %d] First unseen.\r\n" % unseen if unseen else b""
    if mailbox.hides and upper.startswith((b"* FLAGS ", b"* OK [PERMANENTFLAGS ")):
        return _shown_flags(line, mailbox.keywords, [])
    return line


def _flag_list(line: bytes) -> tuple[int, int]:
    """The span of the first parenthesised list in ``line`` (inside the parentheses)."""
    start, close = line.find(b"(") + 1, line.find(b")")
    if not 0 < start <= close:
        raise ServerProtocolError("flag list expected")
    return start, close


def _is_keyword(flag: bytes) -> bool:
    return not flag.startswith(b"\\") and _KEYWORD.fullmatch(flag) is not None


def _keywords_of(lines: Iterable[bytes]) -> list[bytes]:
    found: list[bytes] = []
    for line in lines:
        start, close = _flag_list(line)
        found.extend(flag for flag in line[start:close].split() if _is_keyword(flag) and flag not in found)
    return found


def _shown_flags(line: bytes, shown: list[bytes], new: list[bytes]) -> bytes:
    """A FLAGS or PERMANENTFLAGS line with only the system flags and the keywords ``shown``.

    ``new`` keywords are added when the upstream's line does not name them yet."""
    start, close = _flag_list(line)
    flags = line[start:close].split()
    kept = [flag for flag in flags if flag.startswith(b"\\") or flag in shown]
    missing = [flag for flag in new if flag not in kept]
    if missing:
        star = [flag for flag in kept if flag == b"\\*"]
        kept = [flag for flag in kept if flag != b"\\*"] + missing + star
    return line[:start] + b" ".join(kept) + line[close:]


def _parse_tagged(data: bytes) -> Response:
    return parse_response(data)
