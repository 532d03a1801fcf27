"""Transcript tests for :class:`ProxySession`: byte scripts in, exact bytes out to each side.

A script is a list of byte lines. The first characters say who speaks:

``C: text``   the client sends ``text`` + CRLF          ``C| raw``   the client sends exactly ``raw``
``S: text``   the upstream sends ``text`` + CRLF        ``S| raw``   the upstream sends exactly ``raw``
``>C: text``  the proxy must send the client ``text`` + CRLF   (``>C| raw`` for exact bytes)
``>S: text``  the proxy must send the upstream ``text`` + CRLF (``>S| raw`` for exact bytes)
``! Name [arg]`` the proxy must emit that control action (``StartClientTLS``, ``CloseClient``,
              ``CloseServer``, ``StartServerTLS``, ``Authenticated bob``,
              ``CountMessages Archive MESSAGES UNSEEN``, ``ClassifyMessages INBOX 1:4``)
``~ event``   a connection event: ``server_lost``, ``client_lost``, ``autologout``, ``shutdown``;
              or the answer of the proxy's own connection to the last query asked of it:
              ``side_failed`` (nothing counted or judged), ``side_judged 1=Subject 3=Subject``
              (the session's classifier judges a header ``Subject: ...`` of each UID)

After every input, everything the session emitted must be accounted for by the expectations that
follow it (up to the next input): the bytes to each side are compared exactly, the control actions
in order. ``CommandDone`` is bookkeeping for metrics and is collected in ``Playbook.done``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from caliproxy.imap.actions import (
    Action,
    Authenticated,
    ClassifyAnswer,
    ClassifyMessages,
    CloseClient,
    CloseServer,
    CommandDone,
    CountMessages,
    SendClient,
    SendServer,
    StartClientTLS,
    StartServerTLS,
)
from caliproxy.imap.session import ProxySession
from caliproxy.imap.side_session import failed_answer
from caliproxy.imap.view import format_sequence_set


def control_name(action: Action) -> str | None:
    """How a non-send action is written in a script; None for sends and bookkeeping."""
    if isinstance(action, Authenticated):
        return f"Authenticated {action.account}"
    if isinstance(action, CountMessages):
        return " ".join(["CountMessages", action.mailbox, *action.items])
    if isinstance(action, ClassifyMessages):
        return f"ClassifyMessages {action.mailbox} {format_sequence_set(list(action.uids)).decode()}"
    if isinstance(action, (StartClientTLS, StartServerTLS, CloseClient, CloseServer)):
        return type(action).__name__
    return None


@dataclass
class Outcome:
    """What one input made the session emit."""

    to_client: bytes = b""
    to_server: bytes = b""
    controls: list[str] = field(default_factory=list)


def summarize(actions: list[Action]) -> tuple[Outcome, list[CommandDone]]:
    outcome = Outcome()
    done: list[CommandDone] = []
    for action in actions:
        if isinstance(action, SendClient):
            outcome.to_client += b"".join(action.chunks)
        elif isinstance(action, SendServer):
            outcome.to_server += b"".join(action.chunks)
        elif isinstance(action, CommandDone):
            done.append(action)
        else:
            name = control_name(action)
            assert name is not None
            outcome.controls.append(name)
    return outcome, done


def _payload(line: bytes, prefix_len: int) -> bytes:
    """``X: text`` -> text + CRLF; ``X| raw`` -> raw."""
    marker = line[prefix_len - 2 : prefix_len - 1]
    body = line[prefix_len:]
    if marker == b":":
        return body + b"\r\n"
    assert marker == b"|", f"bad script line {line!r}"
    return body


class Playbook:
    """Drives one session through scripts, keeping every action it ever returned."""

    def __init__(self, session: ProxySession) -> None:
        self.session = session
        self.actions: list[Action] = []
        self.done: list[CommandDone] = []
        self.side_query: CountMessages | ClassifyMessages | None = None  # the last one asked

    def feed(self, line: bytes) -> list[Action]:
        """Apply one input line and return the raw actions (for tests that inspect them)."""
        s = self.session
        if line.startswith((b"C:", b"C|")):
            actions = s.client_data(_payload(line, 3))
        elif line.startswith((b"S:", b"S|")):
            actions = s.server_data(_payload(line, 3))
        elif line.startswith(b"~ "):
            event, _, arg = line[2:].decode().partition(" ")
            if event == "server_lost":
                actions = s.server_lost(arg or "connection closed")
            elif event == "client_lost":
                actions = s.client_lost()
            elif event == "autologout":
                actions = s.autologout()
            elif event == "shutdown":
                actions = s.shutdown(arg or "shutting down")
            elif event in ("side_failed", "side_judged"):
                actions = self._side_answer(event, arg)
            else:
                raise AssertionError(f"unknown event {event!r}")
        else:
            raise AssertionError(f"not an input line: {line!r}")
        self.actions.extend(actions)
        for action in actions:
            if isinstance(action, (CountMessages, ClassifyMessages)):
                self.side_query = action
        return actions

    def _side_answer(self, event: str, arg: str) -> list[Action]:
        query, self.side_query = self.side_query, None
        assert query is not None, "no query was asked of the side connection"
        if event == "side_failed":
            return self.session.answered(query, failed_answer(query))  # type: ignore[attr-defined]
        assert isinstance(query, ClassifyMessages)
        headers = []
        for item in arg.split():
            uid, _, subject = item.partition("=")
            headers.append((int(uid), f"Subject: {subject}\r\n\r\n".encode()))
        classifier = self.session.classifier  # type: ignore[attr-defined]
        tags = classifier.classify(query.mailbox, query.uidvalidity, headers)
        return self.session.answered(query, ClassifyAnswer(tags))  # type: ignore[attr-defined]

    def __call__(self, script: list[bytes]) -> Playbook:
        index = 0
        while index < len(script):
            line = script[index]
            actions = self.feed(line)
            got, done = summarize(actions)
            self.done.extend(done)
            want = Outcome()
            index += 1
            while index < len(script) and script[index].startswith((b">", b"!")):
                expect = script[index]
                if expect.startswith((b">C:", b">C|")):
                    want.to_client += _payload(expect, 4)
                elif expect.startswith((b">S:", b">S|")):
                    want.to_server += _payload(expect, 4)
                elif expect.startswith(b"! "):
                    want.controls.append(expect[2:].decode())
                else:
                    raise AssertionError(f"bad expectation {expect!r}")
                index += 1
            context = f"after input {line!r}"
            assert got.to_client == want.to_client, f"to client {context}"
            assert got.to_server == want.to_server, f"to upstream {context}"
            assert got.controls == want.controls, f"control actions {context}"
        return self

    @property
    def statuses(self) -> list[tuple[str, str, bool]]:
        """(verb, status, answered locally) of every command finished so far."""
        return [(d.name, d.status, d.local) for d in self.done]
