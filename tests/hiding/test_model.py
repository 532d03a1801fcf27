"""Model-based test: an untrusted client's whole conversation equals one with a mailbox that never
received the secret mail.

Two mailboxes on one real Dovecot: ``alice``'s gets every delivery, visible and secret; ``bob``'s
gets only the visible ones, the same bytes in the same order. Hypothesis drives random sequences of
deliveries, expunges by a trusted session (through the proxy or straight to Dovecot; on ``alice``,
mirrored on ``bob`` for visible mail) and commands of an untrusted client (FETCH and UID FETCH of
random sets with ``*``, SEARCH with sequence-set and UID keys, STORE, EXPUNGE, UID EXPUNGE, NOOP,
SELECT again). The client on
``alice`` talks to the proxy's ``cafe`` listener, the client on ``bob`` to its ``trusted`` one;
everything each receives is compared after normalising only what must differ: UIDs (mapped to the
message they name), UIDNEXT and UIDVALIDITY, and Dovecot's timing text.

Bounded to run in well under two minutes; ``CALIPROXY_MODEL_EXAMPLES=200`` (and
``CALIPROXY_MODEL_STEPS``) runs it longer.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from tests.hiding.conftest import Hiding, Secret, message, secret_message
from tests.hiding.wire import Reply, WireClient, without_timing

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CALIPROXY_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("CALIPROXY_MODEL_STEPS", "25"))
A, B = "alice", "bob"
# A UID no message ever had, standing on bob's side for a secret message alice holds.
ABSENT = 3_000_000_000

_mailboxes = itertools.count(1)


@dataclass
class Delivered:
    """One delivery: its identity, whether it is secret, and its UID on each side."""

    key: int
    secret: bool
    uid: dict[str, int] = field(default_factory=dict)
    secret_parts: Secret | None = None
    expunged: bool = False  # by the trusted session


class UidSet:
    """A UID set chosen by message identity, written with each side's UIDs."""

    def __init__(self, parts: list[tuple]) -> None:
        self.parts = parts

    def render(self, side: str) -> str:
        out = []
        for part in self.parts:
            if part[0] == "range":
                out.append(f"{self._one(part[1], side)}:{self._one(part[2], side)}")
            else:
                out.append(self._one(part, side))
        return ",".join(out)

    @staticmethod
    def _one(part: tuple, side: str) -> str:
        kind = part[0]
        if kind == "star":
            return "*"
        if kind == "beyond":
            return "4000000000"
        delivered: Delivered = part[1]
        if delivered.secret and side == B:
            return str(ABSENT + delivered.key)
        return str(delivered.uid[side])


Command = list[str | UidSet]


def render(command: Command, side: str) -> str:
    return " ".join(part if isinstance(part, str) else part.render(side) for part in command)


class HidingModel(RuleBasedStateMachine):
    """See the module docstring. ``hiding`` is set by the test before the machine runs."""

    hiding: Hiding

    def __init__(self) -> None:
        super().__init__()
        self.name = f"m{next(_mailboxes)}"
        self.delivered: list[Delivered] = []
        self.told = 0  # deliveries made before the clients' latest command (they heard of those)
        self.next_uid = {A: 1, B: 1}
        self.clients: dict[str, WireClient] = {}
        self.secrets: list[Secret] = []

    # -- comparing -------------------------------------------------------------------------------

    def _by_uid(self, side: str) -> dict[int, Delivered]:
        return {d.uid[side]: d for d in self.delivered if side in d.uid}

    def normalise(self, reply: Reply, side: str, *, uid_search: bool) -> bytes:
        uids = self._by_uid(side)

        def name(number: bytes) -> bytes:
            found = uids.get(int(number))
            return b"<%s%d>" % (b"S" if found and found.secret else b"m", found.key) if found else number

        def expunged_flags(match: re.Match[bytes]) -> bytes:
            # The flags Dovecot shows for a message expunged elsewhere, before this session hears
            # the EXPUNGE, depend on how far this session's view of the index got: on alice's that
            # depends on the hidden mail's changes too. Not the proxy's doing; not compared.
            found = uids.get(int(match.group(2)))
            return match.group(1) + b"FLAGS (?)" if found and found.expunged else match.group(0)

        text = without_timing(reply.all)
        text = re.sub(rb"(?m)^(\* \d+ FETCH \((?=[^\r]*\bUID (\d+))[^\r]*?)FLAGS \([^)]*\)",
                      expunged_flags, text)
        text = re.sub(rb"\[(UIDNEXT|UIDVALIDITY) \d+\]", rb"[\1 _]", text)
        text = re.sub(rb"\bUID (\d+)", lambda m: b"UID " + name(m.group(1)), text)
        if uid_search:
            text = re.sub(rb"(?m)^\* SEARCH((?: \d+)*)\r$",
                          lambda m: b"* SEARCH" + b"".join(b" " + name(n) for n in m.group(1).split())
                          + b"\r", text)
        return text

    def both(self, command: Command) -> None:
        uid_search = command[0] == "UID" and command[1] == "SEARCH"
        got = {}
        self.told = len(self.delivered)
        for side in (A, B):
            reply = self.clients[side].command(render(command, side))
            got[side] = self.normalise(reply, side, uid_search=uid_search)
        assert got[A] == got[B], f"{render(command, A)} / {render(command, B)}"
        self.check_no_leak()

    def check_no_leak(self) -> None:
        data = bytes(self.clients[A].received)
        for secret in self.secrets:
            for marker in secret.markers:
                assert marker not in data, f"{marker!r} reached the untrusted client"

    def trusted(self, user: str, *, direct: bool) -> WireClient:
        """A session that sees everything: through the proxy, or straight to Dovecot (then the
        proxy has never seen what it does)."""
        client = self.hiding.direct(user) if direct else self.hiding.trusted(user)
        assert client.command(f"SELECT {self.name}").ok
        return client

    def present(self) -> set[int]:
        """alice's UIDs that exist now (the truth, from Dovecot)."""
        out = self.hiding.dovecot.doveadm("search", "-u", A, "mailbox", self.name, "all")
        return {int(line.split()[1]) for line in out.splitlines() if line.strip()}

    # -- set-up --------------------------------------------------------------------------------------

    @initialize(first=st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), min_size=1, max_size=8))
    def select(self, first: list[tuple[bool, int]]) -> None:
        """Some mail before the clients come, then both select."""
        for user in (A, B):
            self.hiding.dovecot.doveadm("mailbox", "create", "-u", user, self.name)
        for secret, size in first:
            self._deliver(secret, size)
        self.clients = {A: self.hiding.cafe(A), B: self.hiding.trusted(B)}
        self.both(["SELECT", self.name])

    def teardown(self) -> None:
        for client in self.clients.values():
            client.close()

    # -- the world changes -------------------------------------------------------------------------

    @rule(size=st.integers(0, 3000))
    def deliver_visible(self, size: int) -> None:
        self._deliver(False, size)

    @rule(size=st.integers(0, 3000))
    def deliver_secret(self, size: int) -> None:
        self._deliver(True, size)

    def _deliver(self, secret: bool, size: int) -> None:
        key = len(self.delivered) + 1
        delivered = Delivered(key, secret)
        if secret:
            parts = secret_message(size=size)
            delivered.secret_parts = parts
            self.secrets.append(parts)
            raw = parts.raw
        else:
            raw = message(f"msg {key}", f"body {key}", message_id=f"<m{key}@model.test>", size=size)
        sides = (A,) if secret else (A, B)
        for side in sides:
            self.hiding.dovecot.doveadm("save", "-u", side, "-m", self.name, input=raw)
            delivered.uid[side] = self.next_uid[side]
            self.next_uid[side] += 1
        self.delivered.append(delivered)

    @rule(data=st.data())
    def trusted_expunge(self, data: st.DataObject) -> None:
        present = self.present()
        candidates = [d for d in self.delivered if d.uid[A] in present]
        if not candidates:
            return
        victim = data.draw(st.sampled_from(candidates))
        if not victim.secret and victim.key > self.told:
            # Visible mail expunged before anyone heard of it: the twin's session still announces
            # it (EXISTS, then EXPUNGE), while the proxy, finding no header left to judge, keeps
            # it hidden (fail closed), so that the client never hears of it. Both are what a
            # server may do; the clients hear of the delivery first so that both agree.
            self.both(["NOOP"])
        victim.expunged = True
        direct = data.draw(st.booleans())
        for side in (A, B):
            # bob's trusted session selects even when it has nothing to expunge: a session that
            # selects takes \Recent of the mail no one has seen yet, on both sides alike
            client = self.trusted(side, direct=direct)
            if side in victim.uid:
                assert client.command(f"UID STORE {victim.uid[side]} +FLAGS.SILENT (\\Deleted)").ok
                assert client.command(f"UID EXPUNGE {victim.uid[side]}").ok
            client.command("LOGOUT")
            client.close()

    # -- the untrusted client ----------------------------------------------------------------------

    def _uid_set(self, data: st.DataObject) -> UidSet:
        visible = [d for d in self.delivered if not d.secret]
        secret = [d for d in self.delivered if d.secret]
        single = st.sampled_from([("star",), ("beyond",)])
        if visible:
            single = single | st.sampled_from(visible).map(lambda d: ("msg", d))
        element = single
        if secret:
            element = element | st.sampled_from(secret).map(lambda d: ("msg", d))
        ranged = st.tuples(st.just("range"), single, single)
        return UidSet(data.draw(st.lists(element | ranged, min_size=1, max_size=3)))

    def _seq_set(self, data: st.DataObject) -> str:
        limit = sum(1 for d in self.delivered if not d.secret) + 1
        number = st.integers(1, max(limit, 1)).map(str) | st.just("*")
        one = number | st.tuples(number, number).map(lambda pair: f"{pair[0]}:{pair[1]}")
        return ",".join(data.draw(st.lists(one, min_size=1, max_size=3)))

    def _search_key(self, data: st.DataObject, depth: int = 0) -> Command:
        simple = ["ALL", "UNSEEN", "SEEN", "FLAGGED", "DELETED", "SUBJECT SECRET", "SUBJECT msg",
                  "BODY body", "LARGER 1500", "SMALLER 1500", "RECENT", "NEW"]
        kind = data.draw(st.sampled_from(["simple", "simple", "uid", "seq"] + (["not", "or"] if depth < 2 else [])))
        if kind == "simple":
            return [data.draw(st.sampled_from(simple))]
        if kind == "uid":
            return ["UID", self._uid_set(data)]
        if kind == "seq":
            return [self._seq_set(data)]
        if kind == "not":
            return ["NOT", *self._search_key(data, depth + 1)]
        return ["OR", *self._search_key(data, depth + 1), *self._search_key(data, depth + 1)]

    @rule(data=st.data(), uid=st.booleans(),
          items=st.sampled_from(["(UID FLAGS)", "(UID FLAGS RFC822.SIZE)", "(UID ENVELOPE)", "(UID BODY[TEXT])",
                                 "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])",
                                 "(UID BODY.PEEK[])", "(UID RFC822.SIZE BODY.PEEK[]<0.300>)"]))
    def fetch(self, data: st.DataObject, uid: bool, items: str) -> None:
        if uid:
            self.both(["UID", "FETCH", self._uid_set(data), items])
        else:
            self.both(["FETCH", self._seq_set(data), items])

    @rule(data=st.data(), uid=st.booleans())
    def search(self, data: st.DataObject, uid: bool) -> None:
        self.both([*(["UID"] if uid else []), "SEARCH", *self._search_key(data)])

    @rule(data=st.data(), uid=st.booleans(), op=st.sampled_from(["+", "-", ""]),
          silent=st.booleans(), flag=st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "\\Answered"]))
    def store(self, data: st.DataObject, uid: bool, op: str, silent: bool, flag: str) -> None:
        target: str | UidSet = self._uid_set(data) if uid else self._seq_set(data)
        self.both([*(["UID"] if uid else []), "STORE", target,
                   f"{op}FLAGS{'.SILENT' if silent else ''}", f"({flag})"])

    @rule(data=st.data(), uid=st.booleans())
    def expunge(self, data: st.DataObject, uid: bool) -> None:
        self.both(["UID", "EXPUNGE", self._uid_set(data)] if uid else ["EXPUNGE"])

    @rule()
    def noop(self) -> None:
        self.both(["NOOP"])

    @rule()
    def select_again(self) -> None:
        self.both(["SELECT", self.name])


def test_untrusted_view_equals_a_mailbox_without_the_secret_mail(hiding: Hiding) -> None:
    HidingModel.hiding = hiding
    run_state_machine_as_test(HidingModel, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.filter_too_much],
        database=None,
    ))
