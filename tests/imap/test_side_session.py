"""Transcripts of the proxy's own upstream connection (``SideSession``): exact bytes to the
upstream, the counts it answers, and every way it fails closed.

The stand-in classifier calls a message secret when its header says ``SECRET``; the session's
clearance is below secret. Script lines: ``S:``/``S|`` the upstream sends, ``>S:``/``>S|`` the
engine must send, ``? NAME ITEMS...`` a count is asked, ``?? NAME UIDVALIDITY UID,UID...`` headers
to judge, ``~ lost``/``~ close`` connection events, ``! Name`` a control action, ``= ITEM n ...``
the answer's counts, ``= UID=level ...`` its verdicts, ``= NO text`` a failed answer (``= NO``
alone: failed with no words of the upstream).
"""

from __future__ import annotations

import base64

import pytest

from caliproxy.imap.actions import (
    ClassifyAnswer,
    ClassifyMessages,
    CloseServer,
    CountAnswer,
    CountMessages,
    SendServer,
    StartServerTLS,
)
from caliproxy.imap.credentials import Credentials, Replay
from caliproxy.imap.grammar import Atom
from caliproxy.imap.mailbox_session import MailboxSession
from caliproxy.imap.session import UpstreamSecurity
from caliproxy.imap.side_session import Answered, SideAction, SideSession
from tests.hiding.test_transcripts import SubjectClassifier, header_fetch, selected, session_play
from tests.imap.conftest import DOVECOT_POST, DOVECOT_PRE, PlaybookFactory
from tests.imap.playbook import Playbook, summarize

__all__ = ["selected"]  # (a fixture, used by name)

ALL_ITEMS = ("MESSAGES", "UNSEEN", "RECENT", "UIDNEXT", "UIDVALIDITY")
LOGIN = Credentials(Replay.LOGIN, b"alice", b"alicepw")
GREETING = b"S: * OK [CAPABILITY " + DOVECOT_PRE + b"] Dovecot ready."
LOGGED_IN = b"S: s1 OK [CAPABILITY " + DOVECOT_POST + b"] Logged in"


class SidePlay:
    """Drives one :class:`SideSession` through a script (see the module docstring)."""

    def __init__(self, session: SideSession) -> None:
        self.session = session
        self.answers: list[Answered] = []

    def _input(self, line: bytes) -> list[SideAction]:
        s = self.session
        if line.startswith(b"S:"):
            return s.server_data(line[3:] + b"\r\n")
        if line.startswith(b"S|"):
            return s.server_data(line[3:])
        if line.startswith(b"?? "):
            name, uidvalidity, uids = line[3:].decode().split()
            return s.ask(ClassifyMessages("INBOX" if name.upper() == "INBOX" else name, Atom(name),
                                          int(uidvalidity), tuple(map(int, uids.split(",")))))
        if line.startswith(b"? "):
            name, *items = line[2:].decode().split()
            return s.ask(CountMessages("INBOX" if name.upper() == "INBOX" else name, Atom(name),
                                       tuple(items)))
        if line == b"~ lost":
            return s.server_lost("connection lost")
        if line == b"~ close":
            return s.close()
        raise AssertionError(f"not an input line: {line!r}")

    def __call__(self, script: list[bytes]) -> SidePlay:
        index = 0
        while index < len(script):
            line = script[index]
            actions = self._input(line)
            index += 1
            want_server, want_controls, want_answers = b"", [], []
            while index < len(script) and script[index].startswith((b">", b"!", b"=")):
                expect = script[index]
                if expect.startswith(b">S:"):
                    want_server += expect[4:] + b"\r\n"
                elif expect.startswith(b">S|"):
                    want_server += expect[4:]
                elif expect.startswith(b"! "):
                    want_controls.append(expect[2:].decode())
                else:
                    want_answers.append(expect[2:])
                index += 1
            got_server, got_controls, got_answers = b"", [], []
            for action in actions:
                if isinstance(action, SendServer):
                    got_server += b"".join(action.chunks)
                elif isinstance(action, Answered):
                    self.answers.append(action)
                    got_answers.append(_rendered(action.answer))
                else:
                    assert isinstance(action, (StartServerTLS, CloseServer))
                    got_controls.append(type(action).__name__)
            context = f"after {line!r}"
            assert got_server == want_server, context
            assert got_controls == want_controls, context
            assert got_answers == want_answers, context
        return self


def _rendered(answer: CountAnswer | ClassifyAnswer) -> bytes:
    if isinstance(answer, ClassifyAnswer):
        if answer.tags is None:
            return b"NO"
        return b" ".join(b"%d=%s" % (uid, tagged.level.encode()) for uid, tagged in sorted(answer.tags.items()))
    if answer.values is None:
        return b"NO" + (b" " + answer.refusal if answer.refusal else b"")
    return b" ".join(b"%s %d" % (k.encode(), v) for k, v in answer.values.items())


def side(credentials: Credentials = LOGIN, *, security: UpstreamSecurity = UpstreamSecurity.TLS,
         classifier: SubjectClassifier | None = None) -> SidePlay:
    return SidePlay(SideSession(credentials, classifier or SubjectClassifier(), security=security))


def logged_in(credentials: Credentials = LOGIN, **kwargs: object) -> SidePlay:
    play = side(credentials, **kwargs)  # type: ignore[arg-type]
    play([
        b"? Archive " + b" ".join(item.encode() for item in ALL_ITEMS),
        GREETING,
        b">S: s1 LOGIN \"alice\" \"alicepw\"",
    ])
    return play


# headers of INBOX UIDs 2 and 4 asked for (UIDVALIDITY 7), up to the replayed login
ASK_INBOX_2_4 = [b"?? INBOX 7 2,4", GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\""]


# Archive: UIDs 3, 5, 6, 9 (UIDNEXT 12); 5 and 9 are secret; 3 and 5 unseen; 5, 6 and 9 recent.
ARCHIVE_COUNT = [
    LOGGED_IN,
    b">S: s2 EXAMINE Archive",
    b"S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    b"S: * 4 EXISTS",
    b"S: * 3 RECENT",
    b"S: * OK [UNSEEN 1] First unseen.",
    b"S: * OK [UIDVALIDITY 77] UIDs valid",
    b"S: * OK [UIDNEXT 12] Predicted next UID",
    b"S: * OK [HIGHESTMODSEQ 9] Highest",
    b"S: s2 OK [READ-ONLY] Examine completed.",
    b">S: s3 UID SEARCH ALL",
    b"S: * SEARCH 3 5 6 9",
    b"S: s3 OK Search completed.",
    b">S: s4 UID FETCH 3,5:6,9 (BODY.PEEK[HEADER])",
    header_fetch(1, 3, "hello"),
    header_fetch(2, 5, "SECRET pay"),
    header_fetch(3, 6, "lunch", uid_first=False),
    header_fetch(4, 9, "SECRET plans"),
    b"S: s4 OK Fetch completed.",
    b">S: s5 UID SEARCH UNSEEN",
    b"S: * SEARCH 3 5",
    b"S: s5 OK Search completed.",
    b">S: s6 UID SEARCH RECENT",
    b"S: * SEARCH 5 6 9",
    b"S: s6 OK Search completed.",
    b">S: s7 UNSELECT",
    b"S: s7 OK Unselect completed.",
    b"= MESSAGES 2 UNSEEN 1 RECENT 1 UIDNEXT 12 UIDVALIDITY 77",
]


def test_login_replay_and_counts_of_the_visible_messages() -> None:
    play = logged_in()
    play(ARCHIVE_COUNT)
    # the verdicts are the classifier's (cached): a second query reads no header
    play([
        b"? Archive MESSAGES",
        b">S: s8 EXAMINE Archive",
        b"S: * 5 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UIDVALIDITY 77] UIDs valid",
        b"S: * OK [UIDNEXT 13] Predicted next UID",
        b"S: s8 OK [READ-ONLY] Examine completed.",
        b">S: s9 UID SEARCH ALL",
        b"S: * SEARCH 3 5 6 9 12",
        b"S: s9 OK Search completed.",
        b">S: s10 UID FETCH 12 (BODY.PEEK[HEADER])",
        header_fetch(5, 12, "SECRET more"),
        b"S: s10 OK Fetch completed.",
        b">S: s11 UNSELECT",
        b"S: s11 OK Unselect completed.",
        b"= MESSAGES 2",
    ])


def test_headers_of_the_selected_mailbox_judged_by_uid_and_cached() -> None:
    classifier = SubjectClassifier()
    play = side(classifier=classifier)
    play([
        b"?? INBOX 7 2,4,5",
        GREETING,
        b">S: s1 LOGIN \"alice\" \"alicepw\"",
        LOGGED_IN,
        b">S: s2 EXAMINE INBOX",
        b"S: * 6 EXISTS",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: * OK [UIDNEXT 9] Predicted next UID",
        b"S: s2 OK [READ-ONLY] Examine completed.",
        b">S: s3 UID FETCH 2,4:5 (BODY.PEEK[HEADER])",
        header_fetch(2, 2, "hello"),
        header_fetch(3, 4, "SECRET pay", uid_first=False),
        # UID 5 was expunged meanwhile: no verdict for it (the session's SELECT decides)
        b"S: s3 OK Fetch completed.",
        b">S: s4 UNSELECT",
        b"S: s4 OK Unselect completed.",
        b"= 2=internal 4=secret",
    ])
    assert set(classifier.cache) == {2, 4}


def test_headers_are_not_read_from_a_mailbox_of_another_uidvalidity() -> None:
    """Rebuilt since the client's SELECT: the same UIDs may name other messages there."""
    play = side()
    play([
        *ASK_INBOX_2_4,
        LOGGED_IN,
        b">S: s2 EXAMINE INBOX",
        b"S: * 2 EXISTS",
        b"S: * OK [UIDVALIDITY 8] UIDs valid",
        b"S: * OK [UIDNEXT 5] Predicted next UID",
        b"S: s2 OK [READ-ONLY] Examine completed.",
        b">S: s3 UNSELECT",
        b"S: s3 OK Unselect completed.",
        b"= NO",
        b"?? Gone 7 1",
        b">S: s4 EXAMINE Gone",
        b"S: s4 NO [NONEXISTENT] Mailbox doesn't exist: Gone",
        b"= NO",
    ])


def test_no_room_for_the_login_is_not_a_refused_login() -> None:
    """Dovecot over mail_max_userip_connections: the login is fine, the connection is not
    possible now. The IO shell tries again later (a refused login it never tries again)."""
    play = side()
    play([
        *ASK_INBOX_2_4,
        (b"S: s1 NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded "
         b"(mail_max_userip_connections=10)"),
        b"! CloseServer",
        b"= NO",
    ])
    assert play.session.login_unavailable and not play.session.login_refused
    refused = side()
    refused([
        *ASK_INBOX_2_4,
        b"S: s1 NO [AUTHENTICATIONFAILED] Authentication failed.",
        b"! CloseServer",
        b"= NO",
    ])
    assert refused.session.login_refused and not refused.session.login_unavailable


def test_unreadable_headers_and_a_refused_fetch_judge_nothing() -> None:
    play = side()
    play([
        *ASK_INBOX_2_4,
        LOGGED_IN,
        b">S: s2 EXAMINE INBOX",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: s2 OK [READ-ONLY] Examine completed.",
        b">S: s3 UID FETCH 2,4 (BODY.PEEK[HEADER])",
        b"S: * 1 FETCH (UID 2 BODY[HEADER] NIL)",
        header_fetch(2, 4, "hello"),
        b"S: s3 OK Fetch completed.",
        b">S: s4 UNSELECT",
        b"S: s4 OK Unselect completed.",
        b"= 4=internal",
        b"?? INBOX 7 2",
        b">S: s5 EXAMINE INBOX",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: s5 OK [READ-ONLY] Examine completed.",
        b">S: s6 UID FETCH 2 (BODY.PEEK[HEADER])",
        b"S: s6 NO Internal error",
        b"! CloseServer",
        b"= NO",
    ])


def test_a_failed_connection_judges_nothing_and_counts_nothing() -> None:
    play = side()
    play([
        b"?? INBOX 7 2,4",
        b"? Archive MESSAGES",
        GREETING,
        b">S: s1 LOGIN \"alice\" \"alicepw\"",
        LOGGED_IN,
        b">S: s2 EXAMINE INBOX",
        b"~ lost",
        b"= NO",
        b"= NO",
    ])


def test_queries_wait_for_the_login_and_for_each_other() -> None:
    play = logged_in()
    play([b"? Empty MESSAGES UIDNEXT"])  # queued behind the first
    play(ARCHIVE_COUNT[:-2])
    play([
        b"S: s7 OK Unselect completed.",
        b"= MESSAGES 2 UNSEEN 1 RECENT 1 UIDNEXT 12 UIDVALIDITY 77",
        b">S: s8 EXAMINE Empty",
        b"S: * 0 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UIDVALIDITY 5] UIDs valid",
        b"S: * OK [UIDNEXT 1] Predicted next UID",
        b"S: s8 OK [READ-ONLY] Examine completed.",
        b">S: s9 UNSELECT",
        b"S: s9 OK Unselect completed.",
        b"= MESSAGES 0 UIDNEXT 1",
    ])


def test_a_mailbox_the_upstream_refuses_is_refused_in_its_words() -> None:
    play = logged_in()
    play([
        LOGGED_IN,
        b">S: s2 EXAMINE Archive",
        b"S: s2 NO [NONEXISTENT] Mailbox doesn't exist: Archive",
        b"= NO [NONEXISTENT] Mailbox doesn't exist: Archive",
        b"? Other MESSAGES",
        b">S: s3 EXAMINE Other",
    ])


@pytest.mark.parametrize("login, sasl_ir, exchange", [
    # LOGIN with strings that cannot be quoted: literals, LITERAL+ as the upstream offers
    (Credentials(Replay.LOGIN, b"al\"ice", b"p\xc3\xa4ss\r\nword"), True,
     [b">S| s1 LOGIN \"al\\\"ice\" {11+}\r\np\xc3\xa4ss\r\nword\r\n"]),
    (Credentials(Replay.PLAIN, b"alice", b"alicepw"), True,
     [b">S: s1 AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0alicepw")]),
    (Credentials(Replay.PLAIN, b"alice", b"alicepw", b"bob"), False,
     [b">S: s1 AUTHENTICATE PLAIN", b"S: + ", b">S: " + base64.b64encode(b"bob\0alice\0alicepw")]),
    (Credentials(Replay.SASL_LOGIN, b"alice", b"alicepw"), True,
     [b">S: s1 AUTHENTICATE LOGIN", b"S: + VXNlcm5hbWU6", b">S: YWxpY2U=", b"S: + UGFzc3dvcmQ6",
      b">S: YWxpY2Vwdw=="]),
])
def test_the_login_is_replayed_as_the_client_logged_in(login: Credentials, sasl_ir: bool,
                                                       exchange: list[bytes]) -> None:
    caps = DOVECOT_PRE if sasl_ir else DOVECOT_PRE.replace(b"SASL-IR ", b"")
    play = side(login)
    play([b"? Archive MESSAGES", b"S: * OK [CAPABILITY " + caps + b"] Dovecot ready.", *exchange])
    play([b"S: s1 OK Logged in", b">S: s2 CAPABILITY",
          b"S: * CAPABILITY " + DOVECOT_POST, b"S: s2 OK Capability completed.",
          b">S: s3 EXAMINE Archive"])
    assert "alicepw" not in repr(login) and "alice" not in str(login)


def test_synchronizing_literals_wait_for_the_upstreams_go_ahead() -> None:
    play = side(Credentials(Replay.LOGIN, b"alice", b"\xc3\xa4"))
    play([
        b"? Archive MESSAGES",
        b"S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready.",
        b">S| s1 LOGIN \"alice\" {2}\r\n",
        b"S: + OK",
        b">S| \xc3\xa4\r\n",
    ])


def test_starttls_then_a_fresh_capability_and_nothing_injected_before_the_handshake() -> None:
    play = side(security=UpstreamSecurity.STARTTLS)
    play([
        b"? Archive MESSAGES",
        b"S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready.",
        b">S: s1 STARTTLS",
        # the injected line after the OK is discarded with the handshake
        b"S| s1 OK Begin TLS negotiation now.\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] evil\r\n",
        b"! StartServerTLS",
        b">S: s2 CAPABILITY",
        b"S: * CAPABILITY " + DOVECOT_PRE,
        b"S: s2 OK Capability completed.",
        b">S: s3 LOGIN \"alice\" \"alicepw\"",
    ])


@pytest.mark.parametrize("script", [
    [b"S: * PREAUTH [CAPABILITY IMAP4rev1] logged in already"],
    [b"S: * BYE too busy"],
    [b"S: garbage"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", b"S: s1 NO [AUTHENTICATIONFAILED] Authentication failed."],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", b"S: + what?"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", b"S: s9 OK whose?"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", b"S: * BYE shutting down"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", b"~ lost"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", LOGGED_IN, b">S: s2 EXAMINE Archive",
     b"S: * 4 EXISTS", b"S: * OK [UIDNEXT 12] next", b"S: s2 OK [READ-ONLY] no UIDVALIDITY"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", LOGGED_IN, b">S: s2 EXAMINE Archive",
     b"S: * 4 EXISTS", b"S: * OK [UIDVALIDITY 7] ok", b"S: * OK [UIDNEXT 12] next",
     b"S: s2 OK [READ-ONLY] Examined", b">S: s3 UID SEARCH ALL", b"S: * SEARCH 1 2 x"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", LOGGED_IN, b">S: s2 EXAMINE Archive",
     b"S: * 4 EXISTS", b"S: * OK [UIDVALIDITY 7] ok", b"S: * OK [UIDNEXT 12] next",
     b"S: s2 OK [READ-ONLY] Examined", b">S: s3 UID SEARCH ALL", b"S: s3 NO [SERVERBUG] oops"],
    [GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\"", LOGGED_IN, b">S: s2 EXAMINE Archive",
     b"S: * 1 EXISTS", b"S: * OK [UIDVALIDITY 7] ok", b"S: * OK [UIDNEXT 12] next",
     b"S: s2 OK [READ-ONLY] Examined", b">S: s3 UID SEARCH ALL", b"S: * SEARCH 4",
     b"S: s3 OK done", b">S: s4 UID FETCH 4 (BODY.PEEK[HEADER])",
     b"S: * 1 FETCH (UID 4 BODY[HEADER] {10}\r\nSubject: "],
], ids=["preauth", "bye-greeting", "garbage", "login-refused", "stray-continuation", "stray-tag",
        "bye", "lost", "no-uidvalidity", "bad-search", "refused-search", "lost-mid-fetch"])
def test_anything_unexpected_ends_the_connection_and_answers_no_counts(script: list[bytes]) -> None:
    play = side()
    actions = play.session.ask(CountMessages("Archive", Atom("Archive"), ALL_ITEMS))
    assert actions == []
    for line in script:
        if line.startswith(b">"):
            continue  # (the bytes sent are the other tests' business)
        if line.startswith(b"S: * 1 FETCH"):
            actions = play.session.server_data(line[3:])  # half a response, then the connection goes
            actions += play.session.server_lost("connection lost")
        else:
            actions = play._input(line)
    answers = [a for a in actions if isinstance(a, Answered)]
    assert [a.answer.values for a in answers] == [None], script
    assert answers[0].answer.refusal == b""
    assert play.session.closed
    lost = script[-1] == b"~ lost" or script[-1].startswith(b"S: * 1 FETCH")
    assert any(isinstance(a, CloseServer) for a in actions) != lost  # (a lost one is closed already)
    # a refused login is remembered, so the IO shell does not try the credentials again
    assert play.session.login_refused == (b"AUTHENTICATIONFAILED" in script[-1])
    # later queries are answered at once, without counts
    later = play.session.ask(CountMessages("Other", Atom("Other"), ("MESSAGES",)))
    assert [a.answer.values for a in later if isinstance(a, Answered)] == [None]


def test_unreadable_headers_count_as_hidden() -> None:
    play = logged_in()
    play([
        LOGGED_IN,
        b">S: s2 EXAMINE Archive",
        b"S: * 2 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UIDVALIDITY 77] UIDs valid",
        b"S: * OK [UIDNEXT 3] Predicted next UID",
        b"S: s2 OK [READ-ONLY] Examine completed.",
        b">S: s3 UID SEARCH ALL",
        b"S: * SEARCH 1 2",
        b"S: s3 OK Search completed.",
        b">S: s4 UID FETCH 1:2 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        b"S: * 2 FETCH (UID 2 BODY[HEADER] NIL)",  # expunged elsewhere meanwhile
        b"S: s4 OK Fetch completed.",
        b">S: s5 UID SEARCH UNSEEN",
        b"S: * SEARCH 1 2",
        b"S: s5 OK Search completed.",
        b">S: s6 UNSELECT",
        b"S: s6 OK Unselect completed.",
        b"= MESSAGES 1 UNSEEN 1 RECENT 0 UIDNEXT 3 UIDVALIDITY 77",
    ])


def test_without_unselect_the_read_only_mailbox_is_closed() -> None:
    play = side()
    play([
        b"? Empty MESSAGES",
        b"S: * OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready.",
        b">S: s1 LOGIN \"alice\" \"alicepw\"",
        b"S: s1 OK [CAPABILITY IMAP4rev1 LITERAL+] Logged in",
        b">S: s2 EXAMINE Empty",
        b"S: * 0 EXISTS",
        b"S: * OK [UIDVALIDITY 5] UIDs valid",
        b"S: * OK [UIDNEXT 1] Predicted next UID",
        b"S: s2 OK [READ-ONLY] Examine completed.",
        b">S: s3 CLOSE",
        b"S: s3 OK Close completed.",
        b"= MESSAGES 0",
    ])


def test_close_logs_out_and_forgets_the_credentials() -> None:
    play = logged_in()
    play([LOGGED_IN, b">S: s2 EXAMINE Archive"])
    play([b"~ close", b"! CloseServer", b"= NO"])  # in the middle of a command: no LOGOUT
    assert play.session._credentials is None
    idle = side()
    idle([GREETING, b">S: s1 LOGIN \"alice\" \"alicepw\""])
    idle([b"~ close", b"! CloseServer"])
    done = logged_in()
    done(ARCHIVE_COUNT)
    done([b"~ close", b">S: s8 LOGOUT", b"! CloseServer"])


# -- what the client session keeps of its login ------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.mark.parametrize("script, kept", [
    ([b"C: a LOGIN bob \"s3 cr\\\"et\"", b"S: a OK Logged in"],
     Credentials(Replay.LOGIN, b"bob", b"s3 cr\"et")),
    ([b"C: a LOGIN bob secret", b"S: a NO [AUTHENTICATIONFAILED] Authentication failed."], None),
    ([b"C: a AUTHENTICATE PLAIN " + _b64(b"\0bob\0secret"), b"S: a OK Logged in"],
     Credentials(Replay.PLAIN, b"bob", b"secret")),
    ([b"C: a AUTHENTICATE PLAIN", b"S: + ", b"C: " + _b64(b"alice\0admin\0secret"), b"S: a OK Logged in"],
     Credentials(Replay.PLAIN, b"admin", b"secret", b"alice")),
    ([b"C: a AUTHENTICATE PLAIN", b"S: + ", b"C: " + _b64(b"\0bob\0secret"),
      b"S: a NO [AUTHENTICATIONFAILED] Authentication failed."], None),
    ([b"C: a AUTHENTICATE LOGIN", b"S: + VXNlcm5hbWU6", b"C: " + _b64(b"bob"), b"S: + UGFzc3dvcmQ6",
      b"C: " + _b64(b"secret"), b"S: a OK Logged in"], Credentials(Replay.SASL_LOGIN, b"bob", b"secret")),
    ([b"C: a AUTHENTICATE LOGIN " + _b64(b"bob"), b"S: + UGFzc3dvcmQ6", b"C: " + _b64(b"secret"),
      b"S: a OK Logged in"], Credentials(Replay.SASL_LOGIN, b"bob", b"secret")),
    ([b"C: a AUTHENTICATE PLAIN", b"S: + ", b"C: *", b"S: a BAD Authentication aborted"], None),
], ids=["login", "login-refused", "plain-ir", "plain-authzid", "plain-refused", "sasl-login",
        "sasl-login-ir", "cancelled"])
def test_the_login_is_kept_only_once_the_upstream_accepted_it(
        ready: PlaybookFactory, script: list[bytes], kept: Credentials | None) -> None:
    play = ready()
    for line in script:
        play.feed(line)
    assert play.session.credentials == kept
    play.feed(b"~ client_lost")
    assert play.session.credentials is None


# -- the hiding session waits for the count --------------------------------------------------------


def test_status_of_another_mailbox_waits_for_the_count_and_keeps_the_order(selected: Playbook) -> None:
    session = selected.session
    assert isinstance(session, MailboxSession)
    selected([
        b"C| s STATUS \"Arch ive\" (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)\r\nn NOOP\r\n",
        b"! CountMessages Arch ive MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY",
    ])
    assert session.credentials == Credentials(Replay.LOGIN, b"alice", b"secret")
    query = selected.side_query
    assert isinstance(query, CountMessages)
    # an answer to anything but the query the session waits for is not taken
    assert session.answered(CountMessages("Archive", Atom("Archive"), ("MESSAGES",)),
                            CountAnswer({"MESSAGES": 9})) == []
    actions = session.answered(query, CountAnswer({"MESSAGES": 2, "UNSEEN": 1, "RECENT": 0,
                                                   "UIDNEXT": 12, "UIDVALIDITY": 77}))
    got, done = summarize(actions)
    assert got.to_client == (b"* STATUS \"Arch ive\" (MESSAGES 2 RECENT 0 UIDNEXT 12 UIDVALIDITY 77 "
                             b"UNSEEN 1)\r\ns OK Status completed.\r\n")
    assert got.to_server == b"n NOOP\r\n"  # the next command only now
    assert [(d.name, d.status) for d in done] == [("STATUS", "OK")]
    assert session.answered(query, CountAnswer({"MESSAGES": 9})) == []  # nothing waits for one


@pytest.mark.parametrize("answer, said", [
    (CountAnswer(None), b"s NO [UNAVAILABLE] Message counts are not available now\r\n"),
    (CountAnswer(None, b"[NONEXISTENT] Mailbox doesn't exist: Archive"),
     b"s NO [NONEXISTENT] Mailbox doesn't exist: Archive\r\n"),
])
def test_a_failed_count_is_a_no_never_the_upstreams_counts(selected: Playbook, answer: CountAnswer,
                                                           said: bytes) -> None:
    session = selected.session
    assert isinstance(session, MailboxSession)
    selected([b"C: s STATUS Archive (MESSAGES)", b"! CountMessages Archive MESSAGES"])
    got, _done = summarize(session.answered(selected.side_query, answer))
    assert got.to_client == said and got.to_server == b""


def test_without_replayable_credentials_the_counts_are_refused(selected: Playbook) -> None:
    selected.session.credentials = None
    selected([
        b"C: s STATUS Archive (MESSAGES)",
        (b">C: s NO [CANNOT] Message counts of a mailbox other than the selected one are not "
         b"available on this connection"),
        b"C: t STATUS Archive (UIDNEXT UIDVALIDITY)",  # no count in it: the upstream answers
        b">S: t STATUS Archive (UIDNEXT UIDVALIDITY)",
    ])


def test_a_session_that_hides_nothing_passes_status_through() -> None:
    play = session_play(hides=False)
    # (its login is kept for the headers a SELECT has judged on the proxy's own connection)
    assert play.session.credentials == Credentials(Replay.LOGIN, b"alice", b"secret")
    play([b"C: s STATUS Archive (MESSAGES UNSEEN)", b">S: s STATUS Archive (MESSAGES UNSEEN)"])
