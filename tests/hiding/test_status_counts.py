"""STATUS of a mailbox other than the selected one, for a client that may not see all of it,
against real Dovecot through the real proxy.

``alice``'s ``Other`` holds visible mail at UIDs 1, 3, 4, 6 and secret mail at 2 and 5; UID 1 and
the secret UID 5 are seen. ``bob``'s ``Other`` got the same visible messages and placeholders at 2
and 5 that were expunged before anyone looked, so it is what ``alice``'s must look like: Dovecot's
own STATUS of it is the expected answer, UIDVALIDITY aside (each mailbox has its own). Every
message is still ``\\Recent``: nobody has selected either mailbox read-write.

The proxy counts on an upstream connection of its own, logged in as the client; the client's own
connection (selected mailbox, ``\\Recent``, IDLE) must not notice, nor may ``Other``: no ``\\Seen``
set, no ``\\Recent`` taken.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from caliproxy.demo.dovecot import free_port
from tests.hiding.conftest import (
    POLICY,
    TRUST,
    USERS,
    Hiding,
    Secret,
    assert_no_leak,
    message,
    secret_message,
)
from tests.hiding.wire import Reply, WireClient, without_timing

pytestmark = pytest.mark.integration

ITEMS = "(MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)"


def counts(reply: Reply) -> dict[str, int]:
    assert reply.ok, reply
    [line] = reply.lines(b"STATUS")
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", line.split(b"(", 1)[1])}


def without_uidvalidity(found: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in found.items() if k != "UIDVALIDITY"}


class Other:
    """The two ``Other`` mailboxes of the module docstring."""

    def __init__(self, hiding: Hiding) -> None:
        self.hiding = hiding
        self.secrets: list[Secret] = []
        for uid in range(1, 7):
            if uid in (2, 5):
                secret = secret_message(size=2000 + uid)
                secret.uid = uid
                self.secrets.append(secret)
                hiding.save("alice", secret.raw, "Other")
                hiding.save("bob", message("placeholder", "gone"), "Other")
            else:
                raw = message(f"visible {uid}", f"body {uid}")
                hiding.save("alice", raw, "Other")
                hiding.save("bob", raw, "Other")
        doveadm = hiding.dovecot.doveadm
        doveadm("expunge", "-u", "bob", "mailbox", "Other", "uid", "2,5")
        doveadm("flags", "add", "-u", "alice", "\\Seen", "mailbox", "Other", "uid", "1,5")
        doveadm("flags", "add", "-u", "bob", "\\Seen", "mailbox", "Other", "uid", "1")
        hiding.save("alice", message("inbox 1", "hello"))
        hiding.save("alice", secret_message().raw)
        self.bob = hiding.direct("bob")
        self.alice_direct = hiding.direct("alice")

    def expected(self) -> dict[str, int]:
        """What Dovecot says of bob's Other; UIDVALIDITY: alice's own, as the upstream says it."""
        want = counts(self.bob.command(f"STATUS Other {ITEMS}"))
        want["UIDVALIDITY"] = counts(self.alice_direct.command("STATUS Other (UIDVALIDITY)"))["UIDVALIDITY"]
        return want

    def deliver_secret(self) -> None:
        """A secret message for alice, and for bob a placeholder gone before anyone saw it."""
        secret = secret_message()
        self.secrets.append(secret)
        self.hiding.save("alice", secret.raw, "Other")
        self.hiding.save("bob", message("placeholder", "gone"), "Other")
        uid = counts(self.bob.command("STATUS Other (UIDNEXT)"))["UIDNEXT"] - 1
        self.hiding.dovecot.doveadm("expunge", "-u", "bob", "mailbox", "Other", "uid", str(uid))


@pytest.fixture
def other(hiding: Hiding) -> Other:
    return Other(hiding)


@pytest.mark.parametrize("selected", [None, "INBOX", "Other"])
def test_counts_are_those_of_a_mailbox_without_the_secret_mail(other: Other, selected: str | None) -> None:
    cafe = other.hiding.cafe()
    if selected is not None:
        assert cafe.command(f"SELECT {selected}").ok
    want = other.expected()
    assert want == {"MESSAGES": 4, "UNSEEN": 3, "RECENT": 4, "UIDNEXT": 7, "UIDVALIDITY": want["UIDVALIDITY"]}
    got = cafe.command(f"STATUS Other {ITEMS}")
    assert counts(got) == want
    # Dovecot's order of the items (RFC 3501's), whatever order they were asked in
    assert got.lines(b"STATUS") == [b"* STATUS Other (MESSAGES 4 RECENT 4 UIDNEXT 7 UIDVALIDITY %d UNSEEN 3)\r\n"
                                    % want["UIDVALIDITY"]]
    # items in any order and any subset, the name quoted or not
    assert counts(cafe.command('STATUS "Other" (UNSEEN MESSAGES)')) == {"UNSEEN": 3, "MESSAGES": 4}
    other.deliver_secret()
    after = cafe.command(f"STATUS Other {ITEMS}")
    assert counts(after) == other.expected()
    assert without_uidvalidity(counts(after)) == {"MESSAGES": 4, "UNSEEN": 3, "RECENT": 4, "UIDNEXT": 8}
    assert_no_leak(cafe.received, *other.secrets)


def test_the_counting_takes_no_recent_and_sets_no_seen(other: Other) -> None:
    cafe = other.hiding.cafe()
    assert counts(cafe.command("STATUS Other (MESSAGES RECENT UNSEEN)")) == {"MESSAGES": 4, "RECENT": 4,
                                                                           "UNSEEN": 3}
    # alice's Other as Dovecot sees it: six messages, all still recent, four unseen
    assert counts(other.alice_direct.command("STATUS Other (MESSAGES RECENT UNSEEN)")) == {
        "MESSAGES": 6, "RECENT": 6, "UNSEEN": 4}
    # once a session takes \Recent (a read-write SELECT), the count follows, as Dovecot's does
    trusted = other.hiding.trusted()
    select = trusted.command("SELECT Other")
    assert b"* 6 RECENT" in select.all
    assert counts(cafe.command("STATUS Other (RECENT)")) == {"RECENT": 0}
    assert_no_leak(cafe.received, *other.secrets)


def test_the_clients_own_connection_is_undisturbed(other: Other) -> None:
    hiding = other.hiding
    cafe = hiding.cafe()
    select = cafe.command("SELECT INBOX")
    assert b"* 1 EXISTS" in select.all and b"* 1 RECENT" in select.all
    recent_before = cafe.command("UID SEARCH RECENT").search()
    assert counts(cafe.command(f"STATUS Other {ITEMS}"))["MESSAGES"] == 4
    # nothing unasked arrived, the selected mailbox and its \Recent are as they were
    assert cafe.pending() == []
    assert cafe.command("UID SEARCH RECENT").search() == recent_before == [1]
    noop = cafe.command("NOOP")
    assert noop.ok and noop.untagged == []
    # IDLE still reports new visible mail in INBOX, after a count and during none
    cafe.send(b"i IDLE\r\n")
    assert cafe.read_response().startswith(b"+ ")
    hiding.save("alice", message("inbox 3", "new"))
    assert b"* 2 EXISTS\r\n" in cafe.wait_for(b"* 2 EXISTS\r\n")
    cafe.send(b"DONE\r\n")
    assert cafe.finish(b"i").ok
    # and a count in the middle of pipelined commands answers in order
    cafe.send(b"p1 NOOP\r\np2 STATUS Other (MESSAGES)\r\np3 UID SEARCH ALL\r\n")
    answers = [cafe.read_response() for _ in range(5)]
    tags = [line.split(b" ", 1)[0] for line in answers if not line.startswith(b"* ")]
    assert tags == [b"p1", b"p2", b"p3"], answers
    assert b"* STATUS Other (MESSAGES 4)\r\n" in answers
    assert_no_leak(cafe.received, *other.secrets)
    # the proxy's own connection ends with the client's: no session of alice's stays upstream
    # the client's, the proxy's own, alice_direct's (an earlier side connection closed for
    # idleness on a slow run may take Dovecot a moment to let go of)
    for _attempt in range(50):
        if len(_alice_sessions(hiding)) == 2 + 1:
            break
        time.sleep(0.1)
    assert len(_alice_sessions(hiding)) == 2 + 1
    cafe.command("LOGOUT")
    for _attempt in range(50):
        if len(_alice_sessions(hiding)) == 1:
            break
        time.sleep(0.1)
    assert len(_alice_sessions(hiding)) == 1


def _log_lines(log: Path, text: str, at_least: int) -> list[str]:
    """The lines of Dovecot's log holding ``text``, once there are ``at_least`` of them (its log
    process writes them a moment after the reply the test already has)."""
    for _attempt in range(100):
        lines = [line for line in log.read_text().splitlines() if text in line]
        if len(lines) >= at_least:
            return lines
        time.sleep(0.1)
    pytest.fail(f"fewer than {at_least} lines with {text!r} in {log}")


def _alice_sessions(hiding: Hiding) -> list[str]:
    who = hiding.dovecot.doveadm("who", "-1", "alice")
    return [line for line in who.splitlines() if line.startswith("alice ")]


def test_trusted_status_is_dovecots_own(other: Other) -> None:
    trusted = other.hiding.trusted()
    for command in (f"STATUS Other {ITEMS}", "STATUS Nope (MESSAGES)", f"STATUS INBOX {ITEMS}"):
        got, want = trusted.command(command), other.alice_direct.command(command)
        assert without_timing(got.all) == without_timing(want.all), command


def test_a_mailbox_that_does_not_exist_is_refused_as_dovecot_refuses_it(other: Other) -> None:
    cafe = other.hiding.cafe()
    got = cafe.command("STATUS Nope (MESSAGES)")
    want = other.bob.command("STATUS Nope (MESSAGES)")
    assert got.status == b"NO" and got.untagged == []
    assert without_timing(got.tagged).split(b" ", 1)[1] == without_timing(want.tagged).split(b" ", 1)[1]


def test_a_login_that_no_longer_works_gets_no_counts_and_no_retry(other: Other) -> None:
    hiding = other.hiding
    # INBOX judged by an earlier session (whose own connection logged in and left with it), so
    # that this one needs no connection of the proxy's own until its STATUS
    earlier = hiding.cafe()
    assert earlier.command("SELECT INBOX").ok
    earlier.close()
    cafe = hiding.cafe()
    assert cafe.command("SELECT INBOX").ok
    users = Path(hiding.dovecot.root) / "users"
    users.write_text(users.read_text().replace("alice:{PLAIN}alicepw:", "alice:{PLAIN}no-longer-valid:"))
    log = hiding.dovecot.log_path
    before = len(_log_lines(log, "Password mismatch", 0))
    for _attempt in range(50):  # until Dovecot reads the file again (it notices changes lazily)
        probe = WireClient(hiding.dovecot.imaps_port, hiding.proxy.ca_pem)
        refused = probe.command("LOGIN alice alicepw").status == b"NO"
        probe.close()
        if refused:
            break
        time.sleep(0.2)
        users.touch()
    else:
        pytest.fail("Dovecot kept the old password")
    mismatches = len(_log_lines(log, "Password mismatch", before + 1))
    # the first STATUS finds the login refused; the session then keeps it no longer
    for code in (b"[UNAVAILABLE]", b"[CANNOT]"):
        refused = cafe.command(f"STATUS Other {ITEMS}")
        assert refused.status == b"NO" and refused.untagged == [], refused
        assert code in refused.tagged
    # the client's own connection goes on as before
    assert cafe.command("UID SEARCH ALL").search() == [1]
    assert counts(cafe.command("STATUS INBOX (MESSAGES)")) == {"MESSAGES": 1}
    # one failed login upstream, not one per STATUS
    assert len(_log_lines(log, "Password mismatch", mismatches + 1)) == mismatches + 1
    assert_no_leak(cafe.received, *other.secrets)


@pytest.mark.parametrize("mechanism", ["PLAIN-IR", "PLAIN", "LOGIN"])
def test_every_login_the_proxy_offers_is_replayed(other: Other, mechanism: str) -> None:
    hiding = other.hiding
    client = WireClient(hiding.proxy.ports["cafe"], hiding.proxy.ca_pem)
    hiding.clients.append(client)
    plain = base64.b64encode(b"\0alice\0" + USERS["alice"].encode())
    if mechanism == "PLAIN-IR":
        assert client.command(b"AUTHENTICATE PLAIN " + plain).ok
    else:
        tag = client.tag()
        client.send(tag + b" AUTHENTICATE " + mechanism.encode() + b"\r\n")
        answers = [plain] if mechanism == "PLAIN" else [base64.b64encode(b"alice"),
                                                         base64.b64encode(USERS["alice"].encode())]
        for answer in answers:
            assert client.read_response().startswith(b"+")
            client.send(answer + b"\r\n")
        assert client.finish(tag).ok
    assert counts(client.command(f"STATUS Other {ITEMS}")) == other.expected()


def test_counting_through_an_upstream_that_needs_starttls(dovecot_factory, proxy_factory) -> None:
    dovecot = dovecot_factory(users=USERS)
    proxy = proxy_factory(dovecot, upstream_tls="starttls",
                          listeners=[{"name": name, "port": free_port(), "tls": "implicit"}
                                     for name in ("cafe", "cafe-plain")],
                          extra_config={"policy": POLICY, "trust": TRUST})
    setup = Hiding(dovecot, proxy)
    try:
        setup.save("alice", message("visible", "hi"), "Other")
        setup.save("alice", secret_message().raw, "Other")
        cafe = setup.cafe()
        assert counts(cafe.command("STATUS Other (MESSAGES UNSEEN)")) == {"MESSAGES": 1, "UNSEEN": 1}
        # two logins upstream, the client's and the proxy's own, both after STARTTLS
        logins = _log_lines(dovecot.log_path, "Login: user=<alice>", 2)
        assert len(logins) == 2 and all(", TLS," in line for line in logins), logins
    finally:
        setup.close()
