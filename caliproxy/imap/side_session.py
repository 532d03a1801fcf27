"""The proxy's own upstream connection for one client session: headers to judge, and message counts.

Sans-IO, like :class:`~caliproxy.imap.session.ProxySession`: upstream bytes and connection events
go in (``server_data``, ``server_lost``, ``ask``, ``close``), a list of actions comes out. Never
imports Twisted, asyncio, OpenSSL, YAML or Prometheus.

Why a connection of its own: the client's upstream connection should carry the client's
commands, not thousands of the proxy's header fetches. A SELECT has the headers of the messages
the cache does not know read and judged here (:class:`ClassifyMessages`). ``STATUS`` of a mailbox
other than the selected one must count only the messages the client may see, which means
learning that mailbox's UIDs and judging their headers: on the client's own connection that
would deselect its mailbox, and with it the client's ``\\Recent`` messages, its pending EXPUNGEs
and its IDLE (:class:`CountMessages`). This connection logs in with the client's own credentials
(:mod:`credentials`) and only ever *examines* (read-only: no ``\\Seen`` set, no ``\\Recent``
taken, nothing expunged).

What it owns:

* the setup, by the same rules as the client's connection: the greeting must be OK (PREAUTH and
  BYE refused), STARTTLS when the upstream listener needs it (bytes after the upstream's OK are
  discarded), a fresh CAPABILITY, then the login replayed as the client logged in (LOGIN, or
  AUTHENTICATE PLAIN with or without an initial response, or AUTHENTICATE LOGIN);
* one query at a time, each answered with an :class:`Answered`;
* a classification: ``EXAMINE m`` (its UIDVALIDITY must be the one the client's SELECT saw),
  ``UID FETCH … (BODY.PEEK[HEADER])`` of the asked UIDs in batches, judged through the session's
  classifier (the verdicts go to the cache as on any connection), then ``UNSELECT``. UIDs are the
  same on every connection of one UIDVALIDITY, so a verdict read here is the verdict of the
  client's message of that UID; a message expunged meanwhile simply is not judged;
* a count:
  ``EXAMINE m``, ``UID SEARCH ALL``, the unknown headers read and judged through the session's
  classifier (the same cache and verdicts as a SELECT), ``UID SEARCH UNSEEN`` and
  ``UID SEARCH RECENT`` counted over the visible messages only, then ``UNSELECT`` (or ``CLOSE``,
  which expunges nothing in a read-only mailbox);
* failing closed: a refused login, a BYE, a line it cannot parse, a tagged answer to no command,
  an unexpected continuation, a missing UIDVALIDITY/UIDNEXT or a refused internal command ends
  the connection and answers the query (and any queued one) with no counts and no verdicts
  (the session then reads the headers on its own connection, and a STATUS says NO). The
  upstream's own counts are never passed on.

RECENT: RFC 3501 §2.3.2 says a session with the mailbox selected read-only sees ``\\Recent``
without taking it, so subsequent sessions also see it; a message is recent until some session
selects the mailbox read-write. That is the count a STATUS of a mailbox nobody has selected
reports (Dovecot counts the messages no session has claimed yet), and what ``UID SEARCH RECENT``
returns after EXAMINE, so RECENT is that search's visible part.

Counts are taken over the UIDs ``UID SEARCH ALL`` returned: mail arriving during the query is not
counted (it is not classified yet), and a message expunged elsewhere while the query runs may
still be counted in MESSAGES; both are states the mailbox really had, and neither involves a
hidden message.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field

from caliproxy.errors import ProtocolError, ServerProtocolError
from caliproxy.imap.actions import (
    ClassifyAnswer,
    ClassifyMessages,
    CloseServer,
    CountAnswer,
    CountMessages,
    SendServer,
    SideAnswer,
    SideQuery,
    StartServerTLS,
)
from caliproxy.imap.classify import Classifier, classify_fetched, header_fetches
from caliproxy.imap.credentials import Credentials, Replay
from caliproxy.imap.fetch_items import FetchCollector
from caliproxy.imap.framing import Framer, Line, LiteralChunk
from caliproxy.imap.grammar import (
    Response,
    ResponseCode,
    Token,
    may_carry_literal,
    parse_capabilities,
    parse_response,
    serialize,
)
from caliproxy.imap.session import UpstreamSecurity

# Refusals of a login that say nothing against the credentials (RFC 5530): worth trying later.
_TRANSIENT = frozenset({b"UNAVAILABLE", b"INUSE", b"LIMIT", b"SERVERBUG"})

# The items a count query answers: what the STATUS allow-list offers (commands._STATUS_ITEMS).
COUNT_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


@dataclass(frozen=True, slots=True)
class Answered:
    """The side connection's answer to a query it was asked."""

    query: SideQuery
    answer: SideAnswer


SideAction = SendServer | StartServerTLS | CloseServer | Answered


def failed_answer(query: SideQuery) -> SideAnswer:
    """The answer to ``query`` when it could not be asked or answered: nothing counted or judged."""
    return CountAnswer(None) if isinstance(query, CountMessages) else ClassifyAnswer(None)


@dataclass(slots=True)
class _Reply:
    """What one command brought back."""

    status: bytes = b""
    code: ResponseCode | None = None
    text: bytes = b""
    search: list[int] = field(default_factory=list)
    fetches: list[dict[bytes, bytes]] = field(default_factory=list)
    caps: list[bytes] | None = None
    exists: int | None = None
    recent: int | None = None
    uidvalidity: int | None = None
    uidnext: int | None = None


@dataclass(slots=True)
class _Command:
    """A command to send: its first line, and what to send at each ``+`` the upstream asks with."""

    head: bytes
    on_continue: deque[bytes] = field(default_factory=deque)
    must_succeed: bool = False  # anything but OK fails the connection


_Script = Generator[_Command, _Reply, None]


class SideSession:
    """The engine of one side connection. See the module docstring."""

    def __init__(self, credentials: Credentials, classifier: Classifier, *,
                 security: UpstreamSecurity, max_line: int = 16 * 1024 * 1024) -> None:
        self._credentials: Credentials | None = credentials
        self._classifier = classifier
        self._security = security
        self._framer = Framer(max_line=max_line, literal_policy=may_carry_literal)
        self._actions: list[SideAction] = []
        self._caps: list[bytes] = []
        self._greeted = False
        self._ready = False
        self._closed = False
        self.login_refused = False  # the upstream refused the replayed login: do not retry
        self.login_unavailable = False  # it could not take the login now (a connection limit)
        self._queries: deque[SideQuery] = deque()
        self._current: SideQuery | None = None
        self._script: _Script | None = None
        self._command: _Command | None = None
        self._tag = b""
        self._counter = 0
        self._reply = _Reply()
        self._fetch: FetchCollector | None = None  # a FETCH response still arriving
        self._skip_literal = False  # the rest of a response we do not read

    # -- inputs ----------------------------------------------------------------------------------

    def ask(self, query: SideQuery) -> list[SideAction]:
        """Queue a query; it runs once the login and the queries before it are done."""
        if self._closed:
            self._actions.append(Answered(query, failed_answer(query)))
        else:
            self._queries.append(query)
            try:
                self._next_query()
            except ProtocolError as exc:
                self._fail(f"upstream protocol error: {exc}")
        return self._take()

    def server_data(self, data: bytes) -> list[SideAction]:
        if not self._closed:
            self._framer.receive_data(data)
            try:
                self._pump()
            except ProtocolError as exc:  # LineTooLong and every parsing error
                self._fail(f"upstream protocol error: {exc}")
        return self._take()

    def server_lost(self, reason: str) -> list[SideAction]:
        """The connection ended, could not be made, timed out or failed TLS verification."""
        self._fail(reason, close=False)
        return self._take()

    def close(self) -> list[SideAction]:
        """The client session ended: log out and forget the credentials."""
        if not self._closed:
            if self._ready and self._command is None:
                self._send(self._new_command(b"LOGOUT"))
            self._fail("closed")
        return self._take()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """A query is queued or in progress (the IO shell times the upstream's silence then)."""
        return self._current is not None or bool(self._queries)

    # -- plumbing --------------------------------------------------------------------------------

    def _take(self) -> list[SideAction]:
        actions, self._actions = self._actions, []
        return actions

    def _emit(self, data: bytes) -> None:
        last = self._actions[-1] if self._actions else None
        if isinstance(last, SendServer):
            last.chunks.append(data)
        else:
            self._actions.append(SendServer([data]))

    def _fail(self, reason: str, *, close: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready = False
        self._credentials = None
        self._script = None
        self._command = None
        failed = [self._current] if self._current is not None else []
        failed.extend(self._queries)
        self._current = None
        self._queries.clear()
        if close:
            self._actions.append(CloseServer())
        for query in failed:
            self._actions.append(Answered(query, failed_answer(query)))

    def _has(self, cap: bytes) -> bool:
        return any(c.upper() == cap for c in self._caps)

    def _new_command(self, verb: bytes, args: list[Token] | None = None, *,
                     must_succeed: bool = False) -> _Command:
        """``verb`` with ``args``, each string in the literal form the upstream accepts."""
        self._counter += 1
        self._tag = b"s%d" % self._counter
        fragments, literals = serialize(args) if args else ([b""], [])
        pieces: list[bytes] = []
        text = self._tag + b" " + verb + (b" " if fragments[0] or literals else b"")
        for fragment, literal in zip(fragments, literals, strict=False):
            text += fragment
            if self._has(b"LITERAL+") or (self._has(b"LITERAL-") and len(literal) <= 4096):
                text += b"{%d+}\r\n" % len(literal) + literal
            else:
                # a synchronizing literal: the rest waits for the upstream's "+"
                pieces.append(text + b"{%d}\r\n" % len(literal))
                text = literal
        pieces.append(text + fragments[-1] + b"\r\n")
        return _Command(pieces[0], deque(pieces[1:]), must_succeed)

    def _send(self, command: _Command) -> None:
        self._command = command
        self._reply = _Reply()
        self._emit(command.head)

    def _run(self, value: _Reply | None) -> None:
        """Advance the script in progress with the reply to its last command."""
        script = self._script
        assert script is not None
        try:
            command = script.send(value)  # type: ignore[arg-type]
        except StopIteration:
            self._script = None
            self._command = None
            self._next_query()
            return
        self._send(command)

    def _next_query(self) -> None:
        if self._closed or not self._ready or self._script is not None or not self._queries:
            return
        query = self._current = self._queries.popleft()
        self._script = self._count(query) if isinstance(query, CountMessages) else self._classify(query)
        self._run(None)

    # -- reading the upstream ----------------------------------------------------------------------

    def _pump(self) -> None:
        while not self._closed:
            event = self._framer.next_event()
            if event is None:
                return
            if isinstance(event, LiteralChunk):
                if self._fetch is not None:
                    self._fetch.literal(event.data, event.last)
                elif not self._skip_literal:
                    raise ServerProtocolError("unexpected literal")
                continue
            self._line(event)

    def _line(self, line: Line) -> None:
        if line.continued:
            fetch = self._fetch
            if fetch is not None:
                if fetch.fragment(line.without_marker(), literal_follows=line.literal is not None):
                    self._reply.fetches.append(fetch.items)
                    self._fetch = None
            elif line.literal is None:
                self._skip_literal = False
            return
        response = parse_response(line.data)
        if not self._greeted:
            self._greeting(response, line)
            return
        if response.kind == "continuation":
            command = self._command
            if command is None or not command.on_continue:
                raise ServerProtocolError("unexpected continuation request")
            self._emit(command.on_continue.popleft())
        elif response.kind == "tagged":
            self._tagged(response)
        else:
            self._untagged(response, line)

    def _greeting(self, response: Response, line: Line) -> None:
        if line.literal is not None or response.kind != "untagged":
            raise ServerProtocolError("no greeting")
        if response.status == b"PREAUTH":
            raise ServerProtocolError("upstream sent PREAUTH; refusing an unauthenticated session")
        if response.status != b"OK":
            raise ServerProtocolError("upstream refused the connection")
        self._greeted = True
        if response.code is not None and response.code.name == b"CAPABILITY":
            self._caps = parse_capabilities(response.code.args)
        self._script = self._setup()
        self._run(None)

    def _tagged(self, response: Response) -> None:
        command = self._command
        if command is None or response.tag != self._tag:
            raise ServerProtocolError("tagged response to no command in flight")
        if self._fetch is not None:
            raise ServerProtocolError("FETCH response ended early")
        if command.must_succeed and response.status != b"OK":
            raise ServerProtocolError("upstream refused an internal command")
        reply = self._reply
        reply.status = response.status or b""
        reply.code = response.code
        reply.text = response.text
        self._command = None
        self._run(reply)

    def _untagged(self, response: Response, line: Line) -> None:
        reply = self._reply
        keyword = response.keyword
        if response.status == b"BYE":
            raise ServerProtocolError("upstream closed the connection")
        if response.number is not None and keyword == b"FETCH":
            fetch = FetchCollector()
            if fetch.fragment(line.without_marker(), literal_follows=line.literal is not None):
                reply.fetches.append(fetch.items)
            else:
                self._fetch = fetch
            return
        if line.literal is not None:
            self._skip_literal = True  # data we do not read (the grammar still frames it)
            return
        code = response.code
        if response.number is not None and keyword == b"EXISTS":
            reply.exists = response.number
        elif response.number is not None and keyword == b"RECENT":
            reply.recent = response.number
        elif keyword == b"SEARCH":
            words = response.text.split()
            if not all(word.isdigit() for word in words):
                raise ServerProtocolError("malformed SEARCH response")
            reply.search = [int(word) for word in words]
        elif keyword == b"CAPABILITY":
            reply.caps = parse_capabilities(response.text)
        elif code is not None and code.name in (b"UIDVALIDITY", b"UIDNEXT"):
            if not code.args.isdigit():
                raise ServerProtocolError(f"malformed {code.name!r}")
            if code.name == b"UIDVALIDITY":
                reply.uidvalidity = int(code.args)
            else:
                reply.uidnext = int(code.args)
        # FLAGS, EXPUNGE, OK chatter: nothing a count needs (see the module docstring)

    # -- scripts -----------------------------------------------------------------------------------

    def _setup(self) -> _Script:
        if self._security is UpstreamSecurity.STARTTLS:
            if self._caps and not self._has(b"STARTTLS"):
                raise ServerProtocolError("upstream does not offer STARTTLS")
            reply = yield self._new_command(b"STARTTLS")
            if reply.status != b"OK":
                raise ServerProtocolError("upstream refused STARTTLS")
            # Anything the upstream sent after its OK arrived before the handshake: injected.
            self._framer.clear()
            self._caps = []
            self._actions.append(StartServerTLS())
        if not self._caps:
            reply = yield self._new_command(b"CAPABILITY")
            if reply.status != b"OK" or reply.caps is None:
                raise ServerProtocolError("upstream refused CAPABILITY")
            self._caps = reply.caps
        credentials = self._credentials
        assert credentials is not None
        reply = yield self._login(credentials)
        # Logged in or refused, this connection needs them no more (it never logs in again).
        self._credentials = credentials = None
        if reply.status != b"OK":
            if reply.code is not None and reply.code.name in _TRANSIENT:
                # e.g. Dovecot's NO [UNAVAILABLE] over mail_max_userip_connections: nothing
                # wrong with the login, no room for this connection now
                self.login_unavailable = True
                raise ServerProtocolError("upstream could not take the replayed login now")
            self.login_refused = True
            raise ServerProtocolError("upstream refused the replayed login")
        self._caps = []
        if reply.code is not None and reply.code.name == b"CAPABILITY":
            self._caps = parse_capabilities(reply.code.args)
        else:
            reply = yield self._new_command(b"CAPABILITY")
            if reply.status != b"OK" or reply.caps is None:
                raise ServerProtocolError("upstream refused CAPABILITY")
            self._caps = reply.caps
        self._ready = True

    def _login(self, credentials: Credentials) -> _Command:
        replay = credentials.replay
        if replay is Replay.LOGIN:
            return self._new_command(b"LOGIN", [credentials.authcid, credentials.password])
        if replay is Replay.PLAIN:
            response = base64.b64encode(
                credentials.authzid + b"\0" + credentials.authcid + b"\0" + credentials.password)
            if self._has(b"SASL-IR"):
                return self._new_command(b"AUTHENTICATE PLAIN " + response)
            command = self._new_command(b"AUTHENTICATE PLAIN")
            command.on_continue.append(response + b"\r\n")
            return command
        command = self._new_command(b"AUTHENTICATE LOGIN")
        command.on_continue.append(base64.b64encode(credentials.authcid) + b"\r\n")
        command.on_continue.append(base64.b64encode(credentials.password) + b"\r\n")
        return command

    def _count(self, query: CountMessages) -> _Script:
        classifier = self._classifier
        examine = yield self._new_command(b"EXAMINE", [query.name])
        if examine.status != b"OK":
            # The mailbox itself was refused (absent, not allowed): the upstream's words, which
            # a STATUS of it would have said too.
            refusal = examine.text
            code = examine.code
            if code is not None:
                refusal = b"[" + code.name + (b" " + code.args if code.args else b"") + b"] " + refusal
            self._answer(query, CountAnswer(None, refusal))
            return
        uidvalidity = examine.uidvalidity
        if uidvalidity is None or examine.uidnext is None or examine.exists is None:
            raise ServerProtocolError("EXAMINE without EXISTS, UIDVALIDITY or UIDNEXT")
        uids: list[int] = []
        if examine.exists:
            reply = yield self._expect_ok(b"UID SEARCH ALL")
            uids = sorted(set(reply.search))
        tags = classifier.known(query.mailbox, uidvalidity, uids)
        for command in header_fetches([uid for uid in uids if uid not in tags]):
            reply = yield self._expect_ok(command)
            tags.update(classify_fetched(classifier, query.mailbox, uidvalidity, reply.fetches))
        # Fail closed: a message whose header could not be read counts as the top level.
        visible = {uid for uid in uids
                   if classifier.visible((tags.get(uid) or classifier.unclassifiable()).level)}
        values = {"MESSAGES": len(visible), "UIDNEXT": examine.uidnext, "UIDVALIDITY": uidvalidity,
                  "UNSEEN": 0, "RECENT": 0}
        if visible and "UNSEEN" in query.items:
            reply = yield self._expect_ok(b"UID SEARCH UNSEEN")
            values["UNSEEN"] = len(visible.intersection(reply.search))
        if visible and "RECENT" in query.items and examine.recent != 0:
            reply = yield self._expect_ok(b"UID SEARCH RECENT")
            values["RECENT"] = len(visible.intersection(reply.search))
        yield self._unselect()
        self._answer(query, CountAnswer({item: values[item] for item in query.items}))

    def _classify(self, query: ClassifyMessages) -> _Script:
        classifier = self._classifier
        examine = yield self._new_command(b"EXAMINE", [query.name])
        if examine.status != b"OK" or examine.uidvalidity != query.uidvalidity:
            # Gone, or rebuilt since the client's SELECT: these UIDs may name other messages
            # here. The session reads the headers on its own connection.
            if examine.status == b"OK":
                yield self._unselect()
            self._answer(query, ClassifyAnswer(None))
            return
        tags = {}
        for command in header_fetches(query.uids):
            reply = yield self._expect_ok(command)
            tags.update(classify_fetched(classifier, query.mailbox, query.uidvalidity, reply.fetches))
        yield self._unselect()
        self._answer(query, ClassifyAnswer(tags))

    def _unselect(self) -> _Command:
        # (CLOSE expunges nothing in a mailbox selected read-only)
        return self._expect_ok(b"UNSELECT" if self._has(b"UNSELECT") else b"CLOSE")

    def _expect_ok(self, verb: bytes) -> _Command:
        return self._new_command(verb, must_succeed=True)

    def _answer(self, query: SideQuery, answer: SideAnswer) -> None:
        self._current = None
        self._actions.append(Answered(query, answer))
