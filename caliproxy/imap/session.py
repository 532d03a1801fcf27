"""The IMAP proxy session: one client connection and its upstream connection, as a state machine.

Sans-IO: bytes and connection events go in (``client_data``, ``server_data``, ...), a list of
:mod:`actions` comes out. Never imports Twisted, asyncio, OpenSSL, YAML or Prometheus.

What it owns:

* the upstream setup before the client hears anything: greeting (PREAUTH refused), STARTTLS with
  the upstream when configured, and a fresh CAPABILITY after it;
* our own greeting and the capability allow-list in all three places capabilities appear;
* client commands: assembled (small literals answered with our own ``+``) and checked against the
  grammar of what we offer, then forwarded; APPEND streamed, with any header field of our privacy
  header's name renamed in place when the listener tags (``neutralise_appends``: a copy the
  client saves carries no verdict of its own making); commands we answer ourselves
  (STARTTLS, ENABLE, refusals) answered in order behind the commands still in flight;
* literal forms toward the upstream: non-synchronizing when it has LITERAL+, otherwise a gate that
  holds everything after a literal marker until the upstream's ``+``;
* AUTHENTICATE and IDLE continuations, relayed line by line without reading them as commands
  (except that a PLAIN or LOGIN exchange is decoded for the account name and, once the upstream
  accepts it, kept as :attr:`ProxySession.credentials` for a connection of the proxy's own, in
  memory only and until the session ends);
* STARTTLS injection: bytes that arrived before the handshake are discarded, both directions;
* fail closed: a response that cannot be parsed, a tagged response to no command, or an unexpected
  continuation ends the session with BYE instead of being passed on.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from caliproxy.errors import ClientProtocolError, ProtocolError, ServerProtocolError
from caliproxy.imap import capabilities, commands
from caliproxy.imap.actions import (
    Action,
    Authenticated,
    CloseClient,
    CloseServer,
    CommandDone,
    SendClient,
    SendServer,
    StartClientTLS,
    StartServerTLS,
)
from caliproxy.imap.credentials import Credentials, Replay
from caliproxy.imap.framing import Framer, Line, LineTooLong, LiteralChunk
from caliproxy.imap.grammar import (
    Atom,
    CommandStart,
    Response,
    Token,
    may_carry_literal,
    parse_capabilities,
    parse_command_start,
    parse_response,
    tag_of,
    tokenize,
)
from caliproxy.imap.virtual import DEFAULT_NAMES, FieldNames, StreamNeutraliser


class UpstreamSecurity(Enum):
    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Per-listener facts and limits the session needs; built by the wiring from the config."""

    client_tls: bool  # the client connection is already TLS (implicit-TLS listener)
    starttls_available: bool
    plaintext_login_allowed: bool
    upstream_security: UpstreamSecurity
    max_line: int = 65536
    max_response_line: int = 16 * 1024 * 1024
    max_literal: int = 64 * 1024 * 1024
    header_names: FieldNames = DEFAULT_NAMES  # renamed in what a tagging listener's clients APPEND


class _Phase(Enum):
    GREETING = "greeting"  # waiting for the upstream greeting
    UPSTREAM_STARTTLS = "upstream-starttls"
    UPSTREAM_CAPABILITY = "upstream-capability"
    READY = "ready"
    CLOSED = "closed"


@dataclass(slots=True)
class _Pending:
    """A client command in flight, in the order the client sent it."""

    start: CommandStart
    local_response: bytes | None = None  # set when we answer it ourselves
    local_status: str = ""
    account: str | None = None  # LOGIN user name, reported when the upstream accepts it
    # What a replay of this login needs (see credentials); kept only if the upstream accepts it
    credentials: Credentials | None = None
    sasl_user: bytes | None = None  # AUTHENTICATE LOGIN: the user name, until the password comes


@dataclass(slots=True)
class _Assembling:
    """A client command whose logical line is still arriving."""

    start: CommandStart | None
    error: str | None = None  # refused: absorb the rest, then answer BAD
    fragments: list[bytes] = field(default_factory=list)
    literals: list[bytes] = field(default_factory=list)
    literal_buf: list[bytes] = field(default_factory=list)
    streaming: bool = False  # APPEND: its head went upstream, literals stream through
    size: int = 0
    neutraliser: StreamNeutraliser | None = None  # APPEND: the message literal in progress


class _Gate:
    """Marks the point in the upstream queue that waits for the upstream's ``+``."""

    __slots__ = ("tag",)

    def __init__(self, tag: bytes) -> None:
        self.tag = tag


_INTERNAL_TAG = b"cp."
_CONTINUE = b"+ Ready for literal data\r\n"


class ProxySession:
    """One proxied IMAP connection. See the module docstring for what it owns."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.client_tls = settings.client_tls
        self.authenticated = False
        self.account: str | None = None
        # The accepted login, for a connection of the proxy's own as this account (in memory
        # only, for this session's life; None when it cannot be replayed or is not needed).
        self.credentials: Credentials | None = None
        # Rename fields of our privacy header's name in messages the client APPENDs (set by a
        # tagging session; a transparent relay passes them as they are).
        self.neutralise_appends = False
        # What the client declared about itself (IMAP ID, RFC 2971) and how it authenticated;
        # trust rules may use the first only to lower a clearance.
        self.client_id: dict[str, str] | None = None
        self.auth_mechanism: str | None = None
        self.upstream_caps: list[bytes] = []
        self._phase = _Phase.GREETING
        self._client = Framer(max_line=settings.max_line, pause_on_sync_literal=True)
        self._server = Framer(max_line=settings.max_response_line, literal_policy=may_carry_literal)
        self._actions: list[Action] = []
        self._pending: dict[bytes, _Pending] = {}
        self._assembling: _Assembling | None = None
        # upstream-bound bytes held behind a gate, each with the tag of the command it belongs to
        self._gate: _Gate | None = None
        self._held: deque[tuple[bytes, bytes | _Gate]] = deque()
        # continuation-driven exchanges relayed line by line
        self._auth_tag: bytes | None = None
        self._auth_mechanism = b""
        self._auth_challenges = 0
        self._auth_step = 0
        self._idle_tag: bytes | None = None
        self._idling = False
        self._starttls_wanted = False
        self._starttls_tag = b""
        self._upstream_said_bye = False
        self._sink: Callable[[Line | LiteralChunk], None] | None = None
        self._internal_counter = 0
        self._internal_tag: bytes | None = None

    # -- inputs ----------------------------------------------------------------------------------

    def client_data(self, data: bytes) -> list[Action]:
        if self._phase is _Phase.CLOSED:
            return []
        self._client.receive_data(data)
        self._run(self._pump_client)
        return self._take()

    def server_data(self, data: bytes) -> list[Action]:
        if self._phase is _Phase.CLOSED:
            return []
        self._server.receive_data(data)
        self._run(self._pump_server)
        if self._phase is _Phase.READY:
            self._run(self._pump_client)
        return self._take()

    def server_lost(self, reason: str) -> list[Action]:
        """The upstream connection ended (or could not be made, or failed TLS verification)."""
        self.credentials = None
        if self._phase is _Phase.CLOSED:
            pass
        elif self._upstream_said_bye:
            # LOGOUT or an upstream BYE: the client already has the upstream's own BYE.
            self._phase = _Phase.CLOSED
            self._actions.append(CloseClient("upstream closed after BYE"))
        else:
            self._bye(f"upstream connection lost: {reason}")
        return self._take()

    def client_lost(self) -> list[Action]:
        self.credentials = None
        if self._phase is not _Phase.CLOSED:
            self._phase = _Phase.CLOSED
            self._actions.append(CloseServer())
        return self._take()

    def autologout(self) -> list[Action]:
        if self._phase is not _Phase.CLOSED:
            self._bye("Autologout; idle for too long")
        return self._take()

    def shutdown(self, reason: str) -> list[Action]:
        if self._phase is not _Phase.CLOSED:
            self._bye(reason)
        return self._take()

    @property
    def closed(self) -> bool:
        return self._phase is _Phase.CLOSED

    @property
    def idling(self) -> bool:
        return self._idling

    # -- plumbing --------------------------------------------------------------------------------

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def _run(self, pump: Callable[[], None]) -> None:
        try:
            pump()
        except LineTooLong:
            side = "client" if pump == self._pump_client else "upstream"
            self._bye(f"{side} line too long")
        except ClientProtocolError as exc:
            self._bye(f"protocol error: {exc}")
        except ProtocolError as exc:
            self._bye(f"upstream protocol error: {exc}")

    def _to_client(self, data: bytes) -> None:
        last = self._actions[-1] if self._actions else None
        if isinstance(last, SendClient):
            last.chunks.append(data)
        else:
            self._actions.append(SendClient([data]))

    def _to_client_all(self, chunks: list[bytes]) -> None:
        """Several pieces at once (the transport joins them in one write)."""
        last = self._actions[-1] if self._actions else None
        if isinstance(last, SendClient):
            last.chunks.extend(chunks)
        else:
            self._actions.append(SendClient(chunks))

    def _emit_server(self, data: bytes) -> None:
        last = self._actions[-1] if self._actions else None
        if isinstance(last, SendServer):
            last.chunks.append(data)
        else:
            self._actions.append(SendServer([data]))

    def _to_server(self, tag: bytes, data: bytes) -> None:
        if self._gate is not None:
            self._held.append((tag, data))
        else:
            self._emit_server(data)

    def _close_gate_after(self, tag: bytes) -> None:
        """The fragment just queued ends in a synchronizing literal: hold what follows."""
        if self._gate is None:
            self._gate = _Gate(tag)
        else:
            self._held.append((tag, _Gate(tag)))

    def _open_gate(self) -> None:
        self._gate = None
        while self._held:
            _tag, item = self._held.popleft()
            if isinstance(item, _Gate):
                self._gate = item
                return
            self._emit_server(item)

    def _bye(self, text: str) -> None:
        self.credentials = None
        if self._phase is _Phase.CLOSED:
            return
        self._to_client(b"* BYE " + text.encode("ascii", "replace") + b"\r\n")
        self._phase = _Phase.CLOSED
        self._actions.append(CloseClient(text))
        self._actions.append(CloseServer())

    def _next_internal_tag(self) -> bytes:
        self._internal_counter += 1
        return _INTERNAL_TAG + str(self._internal_counter).encode()

    def _capability_context(self) -> capabilities.ClientContext:
        return capabilities.ClientContext(
            tls_active=self.client_tls,
            starttls_available=self.settings.starttls_available,
            plaintext_login_allowed=self.settings.plaintext_login_allowed,
            authenticated=self.authenticated,
        )

    def _offered(self) -> bytes:
        return capabilities.render(capabilities.offered(self.upstream_caps, self._capability_context()))

    def _upstream_has(self, cap: bytes) -> bool:
        return any(c.upper() == cap for c in self.upstream_caps)

    # -- upstream --------------------------------------------------------------------------------

    def _pump_server(self) -> None:
        while self._phase is not _Phase.CLOSED:
            event = self._server.next_event()
            if event is None:
                return
            if self._phase is _Phase.READY:
                self._server_event(event)
            else:
                self._setup_event(event)

    def _setup_event(self, event: Line | LiteralChunk) -> None:
        """Greeting, upstream STARTTLS and CAPABILITY, before the client hears anything."""
        if not isinstance(event, Line) or event.literal is not None:
            raise ServerProtocolError("literal during connection setup")
        response = parse_response(event.data)
        if self._phase is _Phase.GREETING:
            if response.status == b"PREAUTH":
                raise ServerProtocolError("upstream sent PREAUTH; refusing an unauthenticated session")
            if response.status == b"BYE" or response.status != b"OK":
                raise ServerProtocolError("upstream refused the connection")
            if response.code is not None and response.code.name == b"CAPABILITY":
                self.upstream_caps = parse_capabilities(response.code.args)
            if self.settings.upstream_security is UpstreamSecurity.STARTTLS:
                if self.upstream_caps and not self._upstream_has(b"STARTTLS"):
                    raise ServerProtocolError("upstream does not offer STARTTLS")
                self._phase = _Phase.UPSTREAM_STARTTLS
                self._internal_tag = self._next_internal_tag()
                self._emit_server(self._internal_tag + b" STARTTLS\r\n")
            elif self.upstream_caps:
                self._ready()
            else:
                self._request_capability()
            return
        if response.kind == "untagged" and response.keyword == b"CAPABILITY":
            self.upstream_caps = parse_capabilities(response.text)
            return
        if response.kind == "untagged" and response.status == b"BYE":
            raise ServerProtocolError("upstream closed the connection during setup")
        if response.kind != "tagged" or response.tag != self._internal_tag:
            return  # untagged chatter during setup is not for the client
        if response.status != b"OK":
            raise ServerProtocolError(
                "upstream refused STARTTLS" if self._phase is _Phase.UPSTREAM_STARTTLS
                else "upstream refused CAPABILITY"
            )
        if self._phase is _Phase.UPSTREAM_STARTTLS:
            # Anything the upstream sent after its OK arrived before the handshake: injected.
            self._server.clear()
            self.upstream_caps = []
            self._actions.append(StartServerTLS())
            self._request_capability()
        else:
            if response.code is not None and response.code.name == b"CAPABILITY":
                self.upstream_caps = parse_capabilities(response.code.args)
            self._ready()

    def _request_capability(self) -> None:
        self._phase = _Phase.UPSTREAM_CAPABILITY
        self._internal_tag = self._next_internal_tag()
        self._emit_server(self._internal_tag + b" CAPABILITY\r\n")

    def _ready(self) -> None:
        self._phase = _Phase.READY
        self._internal_tag = None
        self._to_client(b"* OK [CAPABILITY " + self._offered() + b"] caliproxy ready.\r\n")

    def _server_event(self, event: Line | LiteralChunk) -> None:
        sink = self._sink
        if sink is not None:
            # The rest of a response a hook took over (rewriting or consuming it).
            if isinstance(event, Line) and event.literal is None:
                self._sink = None
            sink(event)
            return
        if isinstance(event, LiteralChunk):
            self._to_client(event.data)
            return
        if event.continued:
            self._to_client(event.data)
            return
        if self._on_common(event):
            return
        response = parse_response(event.data)
        if response.kind == "continuation":
            if not self._on_continuation(event.data):
                self._continuation(event.data)
        elif response.kind == "tagged":
            if not self._on_tagged(response, event.data):
                self._tagged(response, event.data)
        elif not self._on_untagged(response, event):
            self._untagged(response, event.data)

    def _continuation(self, data: bytes) -> None:
        if self._gate is not None:
            self._open_gate()  # the upstream wants the literal we are holding
        elif self._auth_tag is not None:
            self._auth_challenges += 1
            self._to_client(data)
        elif self._idle_tag is not None and not self._idling:
            self._idling = True
            self._client.literals_enabled = False
            self._to_client(data)
        else:
            raise ServerProtocolError("unexpected continuation request")

    def _untagged(self, response: Response, data: bytes) -> None:
        code = response.code
        if response.keyword == b"CAPABILITY":
            self.upstream_caps = parse_capabilities(response.text)
            self._to_client(b"* CAPABILITY " + self._offered() + b"\r\n")
            return
        if code is not None:
            if code.name in (b"HIGHESTMODSEQ", b"NOMODSEQ"):
                return  # CONDSTORE is not offered; Dovecot sends these anyway once others used it
            if code.name == b"CAPABILITY":
                self.upstream_caps = parse_capabilities(code.args)
                self._to_client(b"* OK [CAPABILITY " + self._offered() + b"] " + response.text + b"\r\n")
                return
        if response.keyword == b"ENABLED":
            raise ServerProtocolError("ENABLED without an ENABLE")
        if response.status == b"BYE":
            self._upstream_said_bye = True
        self._to_client(data)

    def _tagged(self, response: Response, data: bytes) -> None:
        tag, status = response.tag, response.status
        assert tag is not None and status is not None
        pending = self._pending.pop(tag, None)
        if pending is None or pending.local_response is not None:
            # (a command we answer ourselves never went upstream)
            raise ServerProtocolError("tagged response to no command in flight")
        if self._gate is not None and self._gate.tag == tag:
            # The upstream refused the command instead of asking for its literal: drop the rest.
            self._held = deque(item for item in self._held if item[0] != tag)
            self._open_gate()
            current = self._assembling
            if current is not None and current.streaming and current.start is pending.start:
                # An APPEND the client is still sending: the upstream will not read the rest of
                # it, so none of it may reach the upstream (it would be read as commands).
                current.error = "refused by the upstream"
        if tag == self._auth_tag:
            self._auth_tag = None
            self._client.literals_enabled = True
        if tag == self._idle_tag:
            self._idle_tag = None
            self._idling = False
            self._client.literals_enabled = True
        verb = pending.start.verb
        if status == b"OK" and verb in ("LOGIN", "AUTHENTICATE") and not pending.start.uid:
            self.authenticated = True
            self.account = pending.account
            self.credentials = pending.credentials
            self._actions.append(Authenticated(pending.account or ""))
        if response.code is not None and response.code.name == b"CAPABILITY":
            self.upstream_caps = parse_capabilities(response.code.args)
            data = (
                tag + b" " + status + b" [CAPABILITY " + self._offered() + b"] "
                + response.text + b"\r\n"
            )
        self._to_client(data)
        self._actions.append(CommandDone(pending.start.name, status.decode(), local=False))
        self._flush_local()

    def _flush_local(self) -> None:
        """Answer, in order, the commands we handle ourselves that waited for earlier ones."""
        while self._pending:
            tag, first = next(iter(self._pending.items()))
            if first.local_response is None:
                return
            del self._pending[tag]
            self._to_client(first.local_response)
            self._actions.append(CommandDone(first.start.name, first.local_status, local=True))

    # -- client ----------------------------------------------------------------------------------

    def _client_blocked(self) -> bool:
        if self._phase is not _Phase.READY:
            return True
        if self._auth_tag is not None and self._auth_challenges == 0:
            return True  # the next client line must wait for the upstream's challenge or verdict
        if self._idle_tag is not None and not self._idling:
            return True  # DONE only after "+ idling"
        if self._starttls_wanted and self._pending:
            return True
        return self._busy()

    def _pump_client(self) -> None:
        while self._phase is _Phase.READY:
            if self._starttls_wanted and not self._pending:
                self._start_client_tls()
                continue
            if self._client_blocked():
                return
            event = self._client.next_event()
            if event is None:
                return
            if self._auth_tag is not None:
                self._auth_line(event)
            elif self._idling:
                self._idle_line(event)
            elif isinstance(event, LiteralChunk):
                self._literal_chunk(event)
            else:
                self._command_line(event)

    def _auth_line(self, event: Line | LiteralChunk) -> None:
        # A SASL response: relayed as is, never parsed as a command, never logged.
        assert isinstance(event, Line) and self._auth_tag is not None
        self._auth_challenges -= 1
        self._note_sasl_account(event.data)
        self._to_server(self._auth_tag, event.data)

    def _idle_line(self, event: Line | LiteralChunk) -> None:
        assert isinstance(event, Line) and self._idle_tag is not None
        if self._on_idle_done():
            return
        # Any line ends IDLE (RFC 2177 wants DONE); the upstream only ever gets a plain DONE, so
        # nothing a client types here can reach it as a command.
        self._idling = False
        self._to_server(self._idle_tag, b"DONE\r\n")

    def _command_line(self, line: Line) -> None:
        current = self._assembling
        if current is None:
            current = self._begin_command(line)
            if current is None:
                return
        elif current.streaming:
            self._append_continuation(current, line)
            return
        else:
            current.fragments.append(line.without_marker())
        current.size += len(line.data)
        if current.size > self.settings.max_line and current.error is None:
            current.error = "command too long"
        if line.literal is not None:
            self._announce_literal(current, line)
        else:
            self._assembling = None
            self._finish_command(current)

    def _begin_command(self, line: Line) -> _Assembling | None:
        text = line.without_marker()
        try:
            start = parse_command_start(text)
        except ClientProtocolError:
            tag = tag_of(text)
            current = _Assembling(start=None, error="malformed command")
            current.fragments.append(tag or b"*")
            return self._absorb_or_answer(current, line)
        current = _Assembling(start=start)
        current.fragments.append(start.rest)
        if start.tag in self._pending or start.tag.startswith(_INTERNAL_TAG):
            current.error = "tag already in use"
        elif line.binary:
            current.error = "literal8 is not offered"
        if start.verb == "APPEND" and not start.uid and current.error is None and line.literal is not None:
            self._assembling = current
            self._begin_append(current, line)
            return None
        return current

    def _absorb_or_answer(self, current: _Assembling, line: Line) -> _Assembling | None:
        if line.literal is None:
            self._finish_command(current)
            return None
        return current  # the caller announces (and for sync literals refuses) the literal

    def _announce_literal(self, current: _Assembling, line: Line) -> None:
        assert line.literal is not None
        if line.binary and current.error is None:
            current.error = "literal8 is not offered"  # in any fragment, not only the first
        too_big = line.literal > self.settings.max_line
        if too_big and current.error is None:
            current.error = "literal too large for this command"
        if line.sync:
            if current.error is not None:
                self._client.refuse_literal()
                self._assembling = None
                self._finish_command(current)
                return
            self._client.grant_literal()
            self._to_client(_CONTINUE)
        elif too_big:
            # A non-synchronizing literal we will not take: the client sends it regardless.
            self._bye("literal too large")
            return
        self._assembling = current

    def _literal_chunk(self, chunk: LiteralChunk) -> None:
        current = self._assembling
        assert current is not None
        if current.streaming:
            assert current.start is not None
            if current.error is None:
                data = chunk.data
                if current.neutraliser is not None:
                    data = current.neutraliser.feed(data, chunk.last)
                if data:
                    self._to_server(current.start.tag, data)
            return
        if current.error is None:
            current.literal_buf.append(chunk.data)
            current.size += len(chunk.data)
        if chunk.last:
            current.literals.append(b"".join(current.literal_buf))
            current.literal_buf = []

    def _finish_command(self, current: _Assembling) -> None:
        start = current.start
        if start is None:
            self._answer(None, current.fragments[0], b"BAD", current.error or "malformed command")
            return
        if current.error is not None:
            self._answer(start, start.tag, b"BAD", current.error)
            return
        try:
            args = tokenize(current.fragments, current.literals)
        except ClientProtocolError as exc:
            self._answer(start, start.tag, b"BAD", str(exc))
            return
        if start.verb in commands.LOCAL_VERBS and not start.uid:
            self._local_command(start, args)
            return
        reason = commands.check(start, args)
        if reason is not None:
            self._answer(start, start.tag, b"BAD", reason)
            return
        if start.verb in ("LOGIN", "AUTHENTICATE") and not start.uid:
            refusal = self._check_login(start, args)
            if refusal is not None:
                self._answer(start, start.tag, b"NO", refusal)
                return
        if start.verb == "ID" and not start.uid:
            self.client_id = _id_fields(args[0])
        if self._on_command(start, args, current):
            return
        pending = _Pending(start)
        if start.verb == "LOGIN" and not start.uid:
            login_name = args[0]
            assert not isinstance(login_name, list)  # commands.check: an astring
            pending.account = _account_name(login_name if isinstance(login_name, bytes) else login_name.encode())
            password = args[1]
            assert not isinstance(password, list)  # commands.check: an astring
            pending.credentials = Credentials(
                Replay.LOGIN, login_name if isinstance(login_name, bytes) else login_name.encode(),
                password if isinstance(password, bytes) else password.encode())
        self._pending[start.tag] = pending
        self._forward(start.tag, current)
        if start.verb == "AUTHENTICATE" and not start.uid:
            self._auth_tag = start.tag
            self._auth_challenges = 0
            self._auth_step = 0
            mechanism = args[0]
            self._auth_mechanism = mechanism.upper().encode() if isinstance(mechanism, Atom) else b""
            self.auth_mechanism = self._auth_mechanism.decode("ascii", "replace")
            self._client.literals_enabled = False
            if len(args) == 2:
                initial = args[1]
                assert isinstance(initial, Atom)  # commands.check: base64 or "="
                self._note_sasl_account(initial.encode())
        elif start.verb == "IDLE":
            self._idle_tag = start.tag

    def _check_login(self, start: CommandStart, args: list[Token]) -> str | None:
        if not (self.client_tls or self.settings.plaintext_login_allowed):
            return "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections"
        if self.authenticated:
            return "Already authenticated"
        if start.verb == "AUTHENTICATE":
            mechanism = str(args[0]).upper().encode()
            offered = capabilities.offered(self.upstream_caps, self._capability_context())
            if b"AUTH=" + mechanism not in offered:
                return "Unsupported authentication mechanism"
        return None

    def _forward(self, tag: bytes, current: _Assembling) -> None:
        """Send an assembled command upstream, with literals in the form the upstream accepts."""
        assert current.start is not None
        head = tag + b" " + current.start.name.encode()
        for index, fragment in enumerate(current.fragments):
            has_literal = index < len(current.literals)
            if index == 0:
                text = head + (b" " + fragment if fragment or has_literal else b"")
            else:
                text = fragment
            if has_literal:
                literal = current.literals[index]
                self._send_with_literal(tag, text, len(literal))
                self._to_server(tag, literal)
            else:
                self._to_server(tag, text + b"\r\n")

    def _send_with_literal(self, tag: bytes, text: bytes, size: int) -> None:
        if self._upstream_has(b"LITERAL+") or (self._upstream_has(b"LITERAL-") and size <= 4096):
            self._to_server(tag, text + b"{%d+}\r\n" % size)
        else:
            self._to_server(tag, text + b"{%d}\r\n" % size)
            self._close_gate_after(tag)

    def _begin_append(self, current: _Assembling, line: Line) -> None:
        start = current.start
        assert start is not None and line.literal is not None
        reason = self._append_part_error(start.rest, first=True, size=line.literal)
        if reason is None and not self.authenticated:
            reason = "not authenticated"
        if reason is not None:
            current.error = reason
            self._announce_literal(current, line)
            return
        self._pending[start.tag] = _Pending(start)
        current.streaming = True
        head = start.tag + b" APPEND" + (b" " + start.rest if start.rest else b"")
        self._send_with_literal(start.tag, head, line.literal)
        self._grant_streamed(current, line)

    def _append_continuation(self, current: _Assembling, line: Line) -> None:
        start = current.start
        assert start is not None
        if current.error is not None:
            # Refused by the upstream mid-stream: absorb the rest of the command, forward nothing.
            if line.literal is None:
                self._assembling = None
            elif line.sync:
                self._client.refuse_literal()  # the client already has the tagged answer
                self._assembling = None
            return
        text = line.without_marker()
        if line.literal is None:
            if text.strip():
                # Part of the command already went upstream: it cannot be refused any more.
                self._bye("unexpected APPEND arguments")
                return
            self._assembling = None
            self._to_server(start.tag, b"\r\n")
            return
        reason = "literal8 is not offered" if line.binary else self._append_part_error(
            text, first=False, size=line.literal
        )
        if reason is not None:
            self._bye(f"APPEND refused: {reason}")
            return
        self._send_with_literal(start.tag, text, line.literal)
        self._grant_streamed(current, line)

    def _grant_streamed(self, current: _Assembling, line: Line) -> None:
        # Each literal of an APPEND (MULTIAPPEND) is one message with a header of its own.
        current.neutraliser = (StreamNeutraliser(self.settings.header_names) if self.neutralise_appends
                               else None)
        if line.sync:
            self._client.grant_literal()
            self._to_client(_CONTINUE)

    def _append_part_error(self, text: bytes, *, first: bool, size: int) -> str | None:
        if size > self.settings.max_literal:
            return "message too large"
        try:
            args = tokenize([text], [])
        except ClientProtocolError as exc:
            return str(exc)
        return commands.check_append_part(args, first=first)

    def _local_command(self, start: CommandStart, args: list[Token]) -> None:
        if start.verb == "STARTTLS":
            if args:
                self._answer(start, start.tag, b"BAD", "unexpected arguments")
            elif self.client_tls or self.authenticated or not self.settings.starttls_available:
                self._answer(start, start.tag, b"BAD", "STARTTLS not available now")
            else:
                self._starttls_tag = start.tag
                self._starttls_wanted = True
        elif start.verb == "ENABLE":
            if not self.authenticated:
                self._answer(start, start.tag, b"BAD", "ENABLE needs an authenticated session")
            else:
                # None of the extensions we offer needs enabling; the rest are not offered.
                self._answer(start, start.tag, b"OK", "ENABLE completed", untagged=b"* ENABLED\r\n")
        else:
            self._answer(start, start.tag, b"BAD", f"command {start.name} is not supported")

    def _start_client_tls(self) -> None:
        self._starttls_wanted = False
        self._to_client(self._starttls_tag + b" OK Begin TLS negotiation now\r\n")
        # RFC 3501 §6.2.1 / STARTTLS injection: nothing the client sent before the handshake counts.
        self._client.clear()
        self._assembling = None
        self.client_tls = True
        self._actions.append(StartClientTLS())
        self._actions.append(CommandDone("STARTTLS", "OK", local=True))

    def _answer(
        self, start: CommandStart | None, tag: bytes, status: bytes, text: str, *, untagged: bytes = b""
    ) -> None:
        """Answer a command ourselves, after every command the client sent before it."""
        response = untagged + tag + b" " + status + b" " + text.encode("ascii", "replace") + b"\r\n"
        if start is None or not self._pending:
            self._to_client(response)
            name = start.name if start is not None else "INVALID"
            self._actions.append(CommandDone(name, status.decode(), local=True))
            return
        if start.tag in self._pending:
            # Duplicate tag: answer at once; the earlier command keeps its place.
            self._to_client(response)
            self._actions.append(CommandDone(start.name, status.decode(), local=True))
            return
        self._pending[start.tag] = _Pending(start, response, status.decode())

    def _note_sasl_account(self, line: bytes) -> None:
        """Remember the account name from a SASL PLAIN/LOGIN response, and what a replay of the
        login needs (held with the command; kept, in memory only, if the upstream accepts it)."""
        step = self._auth_step
        self._auth_step += 1
        pending = self._pending.get(self._auth_tag or b"")
        if pending is None:
            return
        try:
            decoded = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            return
        if self._auth_mechanism == b"PLAIN" and step == 0 and pending.account is None:
            fields = decoded.split(b"\0")
            if len(fields) == 3:
                # RFC 4616: with an authorization identity the session acts as that identity.
                pending.account = _account_name(fields[0] or fields[1])
                pending.credentials = Credentials(Replay.PLAIN, fields[1], fields[2], fields[0])
        elif self._auth_mechanism == b"LOGIN" and step == 0 and pending.account is None:
            pending.account = _account_name(decoded)
            pending.sasl_user = decoded
        elif self._auth_mechanism == b"LOGIN" and step == 1 and pending.sasl_user is not None:
            pending.credentials = Credentials(Replay.SASL_LOGIN, pending.sasl_user, decoded)

    # -- hooks for a mailbox-aware subclass (see mailbox_session) --------------------------------

    def _busy(self) -> bool:
        """True while client commands must wait (the subclass is talking to the upstream)."""
        return False

    def _on_command(self, start: CommandStart, args: list[Token], current: _Assembling) -> bool:
        """Take over a checked client command; True when handled."""
        return False

    def _on_tagged(self, response: Response, data: bytes) -> bool:
        return False

    def _on_untagged(self, response: Response, event: Line) -> bool:
        return False

    def _on_common(self, event: Line) -> bool:
        """Take a response's first fragment before it is parsed in general; True when handled.

        For the few shapes a bulk download consists of: a match must do exactly what the
        general path (``parse_response`` and the hooks above) would have done."""
        return False

    def _on_continuation(self, data: bytes) -> bool:
        return False

    def _on_idle_done(self) -> bool:
        return False


def _id_fields(params: Token) -> dict[str, str]:
    """The client's ID parameters (``("name" "Thunderbird" ...)``) as a small dict."""
    if not isinstance(params, list):
        return {}
    values = [p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in params
              if not isinstance(p, list)]
    return {values[i].lower()[:64]: values[i + 1][:256] for i in range(0, len(values) - 1, 2)}


def _account_name(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:256]
