"""Transcripts of the hiding session: exact bytes from the client and the upstream, exact bytes out.

The session is the sans-IO :class:`MailboxSession` with a stand-in classifier that calls a message
secret when its header says ``SECRET``, for a connection whose clearance is below secret. Every
script starts with INBOX selected on an upstream holding UIDs 1-4, where 2 and 4 are secret:

    upstream seq  1  2  3  4          client seq  1  -  2  -
    upstream UID  1  2  3  4          (UIDNEXT 5; the upstream's last message is hidden)
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from caliproxy.imap.actions import CountAnswer
from caliproxy.imap.classify import Tagged
from caliproxy.imap.mailbox_session import MailboxSession
from caliproxy.imap.session import SessionSettings, UpstreamSecurity
from caliproxy.imap.virtual import DEFAULT_NAMES
from tests.imap.conftest import DOVECOT_POST, DOVECOT_PRE
from tests.imap.playbook import Playbook

BYE_CLOSE = [b"! CloseClient", b"! CloseServer"]


class SubjectClassifier:
    """Secret when the header mentions SECRET; the clearance (internal) sees the rest. ``block``
    is the header every verdict carries (none: the session adds nothing)."""

    header_names = DEFAULT_NAMES

    def __init__(self, *, hides: bool = True, block: bytes = b"") -> None:
        self.cache: dict[int, Tagged] = {}
        self._hides = hides
        self.block = block
        self.header_length = len(block)

    def known(self, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, Tagged]:
        return {uid: self.cache[uid] for uid in uids if uid in self.cache}

    def classify(self, mailbox: str, uidvalidity: int, headers: Sequence[tuple[int, bytes]]
                 ) -> dict[int, Tagged]:
        out = {uid: Tagged("secret" if b"SECRET" in header else "internal", self.block, ())
               for uid, header in headers}
        self.cache.update(out)
        return out

    def visible(self, level: str) -> bool:
        return level != "secret" or not self._hides

    @property
    def hides_anything(self) -> bool:
        return self._hides

    def unclassifiable(self) -> Tagged:
        return Tagged("secret", self.block, ())


def header_fetch(seq: int, uid: int, subject: str, *, uid_first: bool = True,
                 flags: bytes | None = None) -> bytes:
    """The upstream's answer line to a header fetch, as an ``S|`` script line."""
    header = f"Subject: {subject}\r\n\r\n".encode()
    head = b"BODY[HEADER]" if flags is None else b"FLAGS (" + flags + b") BODY[HEADER]"
    items = (b"UID %d %s" % (uid, head)) if uid_first else head
    tail = b")" if uid_first else b" UID %d)" % uid
    return b"S| * %d FETCH (%s {%d}\r\n%s%s\r\n" % (seq, items, len(header), header, tail)


def session_play(*, hides: bool = True) -> Playbook:
    session = MailboxSession(SessionSettings(client_tls=True, starttls_available=False,
                                             plaintext_login_allowed=False,
                                             upstream_security=UpstreamSecurity.TLS),
                             tagging=False)
    play = Playbook(session)
    play.feed(b"S: * OK [CAPABILITY " + DOVECOT_PRE + b"] Dovecot ready.")
    play([b"C: l1 LOGIN alice secret", b">S: l1 LOGIN alice secret"])
    play.feed(b"S: l1 OK [CAPABILITY " + DOVECOT_POST + b"] Logged in")
    assert session.awaiting_classifier
    session.set_classifier(SubjectClassifier(hides=hides))
    play.actions.clear()
    play.done.clear()
    return play


SELECT_SCRIPT = [
    b"C: a SELECT INBOX",
    b">S: a SELECT INBOX",
    b"S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    b"S: * 4 EXISTS",
    b"S: * 3 RECENT",
    b"S: * OK [UNSEEN 2] First unseen.",
    b"S: * OK [UIDVALIDITY 7] UIDs valid",
    b"S: * OK [UIDNEXT 5] Predicted next UID",
    b"S: * OK [HIGHESTMODSEQ 42] Highest",
    b"S: a OK [READ-WRITE] Select completed.",
    b">S: cp.1 UID SEARCH ALL",
    b"S: * SEARCH 1 2 3 4",
    b"S: cp.1 OK Search completed.",
    b"! ClassifyMessages INBOX 1:4",
    b"~ side_failed",
    b">S: cp.2 UID FETCH 1:4 (BODY.PEEK[HEADER])",
    header_fetch(1, 1, "hello"),
    header_fetch(2, 2, "SECRET pay"),
    header_fetch(3, 3, "lunch", uid_first=False),
    header_fetch(4, 4, "SECRET plans"),
    b"S: cp.2 OK Fetch completed.",
    b">S: cp.3 UID SEARCH UNSEEN",
    b"S: * SEARCH 2 3 4",
    b"S: cp.3 OK Search completed.",
    b">S: cp.4 UID SEARCH RECENT",
    b"S: * SEARCH 2 3 4",
    b"S: cp.4 OK Search completed.",
    b">C: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
    b">C: * 2 EXISTS",
    b">C: * 1 RECENT",
    b">C: * OK [UNSEEN 2] First unseen.",
    b">C: * OK [UIDVALIDITY 7] UIDs valid",
    b">C: * OK [UIDNEXT 5] Predicted next UID",
    b">C: a OK [READ-WRITE] Select completed.",
]


@pytest.fixture
def selected() -> Playbook:
    """INBOX selected as in the module docstring; internal tags continue at cp.5."""
    play = session_play()
    play(SELECT_SCRIPT)
    return play


# -- SELECT / EXAMINE ------------------------------------------------------------------------------


def test_select_counts_only_visible_messages_and_drops_highestmodseq(selected: Playbook) -> None:
    """EXISTS 2 of 4, RECENT 1 of 3, [UNSEEN 2] (upstream's first unseen, 2, is hidden) and no
    HIGHESTMODSEQ: the answer of a mailbox holding only UIDs 1 and 3."""
    assert selected.statuses == [("SELECT", "OK", False)]


def test_unseen_dropped_when_every_unseen_message_is_hidden() -> None:
    play = session_play()
    play([
        b"C: a EXAMINE INBOX",
        b">S: a EXAMINE INBOX",
        b"S: * 2 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UNSEEN 2] First unseen.",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: a OK [READ-ONLY] Examine completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1 2",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1:2",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:2 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "SECRET"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH UNSEEN",
        b"S: * SEARCH 2",
        b"S: cp.3 OK Search completed.",
        # (the upstream said 0 RECENT and nothing changed since: no recent message to look for)
        b">C: * 1 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: a OK [READ-ONLY] Examine completed.",
    ])


def test_a_visible_first_unseen_and_no_recent_mail_need_no_search() -> None:
    """The upstream's [UNSEEN 3] is UID 3, visible (the client's 2), and it said 0 RECENT: with
    nothing arrived or gone since its answer, both stand for the visible messages as they are."""
    play = session_play()
    play([
        b"C: a EXAMINE INBOX",
        b">S: a EXAMINE INBOX",
        b"S: * 3 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UNSEEN 3] First unseen.",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: a OK [READ-ONLY] Examine completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1 2 3",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1:3",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:3 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "SECRET"),
        header_fetch(3, 3, "lunch"),
        b"S: cp.2 OK Fetch completed.",
        b">C: * 2 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UNSEEN 2] First unseen.",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: a OK [READ-ONLY] Examine completed.",
    ])


def test_counts_are_searched_when_mail_arrived_after_the_select_answer() -> None:
    """An EXISTS during the proxy's own commands: the upstream's [UNSEEN n] and RECENT count may
    no longer describe the messages the view holds, so both are asked for."""
    play = session_play()
    play([
        b"C: a EXAMINE INBOX",
        b">S: a EXAMINE INBOX",
        b"S: * 2 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UNSEEN 1] First unseen.",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: a OK [READ-ONLY] Examine completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * 3 EXISTS",
        b"S: * SEARCH 1 2 3",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1:3",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:3 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "SECRET"),
        header_fetch(3, 3, "lunch"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH UNSEEN",
        b"S: * SEARCH 2 3",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH 3",
        b"S: cp.4 OK Search completed.",
        b">C: * 2 EXISTS",
        b">C: * 1 RECENT",
        b">C: * OK [UNSEEN 2] First unseen.",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: a OK [READ-ONLY] Examine completed.",
    ])


def test_a_second_exists_in_the_select_answer_makes_the_counts_searched() -> None:
    """Mail arrived while the upstream answered the SELECT: its first RECENT count (0) is of the
    mailbox before, so the visible recent message is searched for, not taken as none."""
    play = session_play()
    play([
        b"C: a SELECT INBOX",
        b">S: a SELECT INBOX",
        b"S: * 1 EXISTS",
        b"S: * 0 RECENT",
        b"S: * 2 EXISTS",
        b"S: * 1 RECENT",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: a OK [READ-WRITE] Select completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1 2",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1:2",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:2 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "lunch"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH UNSEEN",
        b"S: * SEARCH 2",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH 2",
        b"S: cp.4 OK Search completed.",
        b">C: * 2 EXISTS",
        b">C: * 1 RECENT",
        b">C: * 2 EXISTS",
        b">C: * 1 RECENT",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: a OK [READ-WRITE] Select completed.",
    ])


def test_an_expunge_after_the_answer_of_the_uid_search_all_is_applied_to_it() -> None:
    """EXPUNGE may come during a UID command (RFC 3501 §7.4.1), so also after the ``* SEARCH``
    line of the proxy's own UID SEARCH ALL: the answer still names the expunged UID 1, and the
    upstream's numbers are now one lower. Kept in the list, UID 1 would take upstream number 1,
    which is the hidden UID 2, and the client's message 1 would be that hidden message."""
    play = session_play()
    play([
        b"C: a EXAMINE INBOX",
        b">S: a EXAMINE INBOX",
        b"S: * 3 EXISTS",
        b"S: * 0 RECENT",
        b"S: * OK [UIDVALIDITY 7] UIDs valid",
        b"S: a OK [READ-ONLY] Examine completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1 2 3",
        b"S: * 1 EXPUNGE",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 2:3",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 2:3 (BODY.PEEK[HEADER])",
        header_fetch(1, 2, "SECRET"),
        header_fetch(2, 3, "lunch"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH UNSEEN",
        b"S: * SEARCH",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH",
        b"S: cp.4 OK Search completed.",
        b">C: * 1 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UIDVALIDITY 7] UIDs valid",
        b">C: a OK [READ-ONLY] Examine completed.",
        b"C: f FETCH 1 (UID FLAGS)",
        b">S: f FETCH 2 (UID FLAGS)",
        b"S: * 2 FETCH (UID 3 FLAGS ())",
        b">C: * 1 FETCH (UID 3 FLAGS ())",
        b"S: f OK Fetch completed.",
        b">C: f OK Fetch completed.",
    ])


def test_select_of_a_mailbox_with_only_hidden_mail_looks_empty() -> None:
    play = session_play()
    play([
        b"C: a SELECT Private",
        b">S: a SELECT Private",
        b"S: * 1 EXISTS",
        b"S: * 1 RECENT",
        b"S: * OK [UNSEEN 1] First unseen.",
        b"S: * OK [UIDVALIDITY 9] UIDs valid",
        b"S: * OK [UIDNEXT 8] Predicted next UID",
        b"S: a OK [READ-WRITE] Select completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 7",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages Private 7",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 7 (BODY.PEEK[HEADER])",
        header_fetch(1, 7, "SECRET"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH UNSEEN",
        b"S: * SEARCH 7",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH RECENT",
        b"S: * SEARCH 7",
        b"S: cp.4 OK Search completed.",
        b">C: * 0 EXISTS",
        b">C: * 0 RECENT",
        b">C: * OK [UIDVALIDITY 9] UIDs valid",
        b">C: * OK [UIDNEXT 8] Predicted next UID",
        b">C: a OK [READ-WRITE] Select completed.",
        # on an empty mailbox every sequence number is invalid, as Dovecot says it
        b"C: b FETCH * (FLAGS)",
        b">C: b BAD Error in IMAP command FETCH: Invalid messageset.",
        b"C: c UID FETCH 1:* (FLAGS)",
        b">S: c UID FETCH 4294967295 (FLAGS)",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
        b"C: d SEARCH ALL",
        b">S: d SEARCH ALL",
    ])


# -- n:* and UID sets --------------------------------------------------------------------------------


def test_uid_range_to_star_ends_at_the_last_visible_message(selected: Playbook) -> None:
    """`*` is UID 3 (the upstream's last, 4, is hidden): 4:* and 9:* are 3:4 and 3:9 = {3}."""
    selected([
        b"C: b UID FETCH 4:* (FLAGS)",
        b">S: b UID FETCH 3 (FLAGS)",
        b"S: * 3 FETCH (UID 3 FLAGS ())",
        b">C: * 2 FETCH (UID 3 FLAGS ())",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
        b"C: c UID SEARCH UID 9:*",
        b">S: c UID SEARCH UID 3",
        b"S: * SEARCH 3",
        b">C: * SEARCH 3",
        b"S: c OK Search completed.",
        b">C: c OK Search completed.",
        b"C: d UID FETCH 1:* (UID)",
        b">S: d UID FETCH 1,3 (UID)",
    ])


def test_uid_commands_naming_only_hidden_uids_act_on_nothing(selected: Playbook) -> None:
    """They go upstream naming UID 4294967295, which no message has: the upstream answers in its
    own words (and checks the rest, a COPY's mailbox say) and reports new mail as it would."""
    selected([
        b"C: b UID FETCH 2,4 (BODY[])",
        b">S: b UID FETCH 4294967295 (BODY[])",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
        b"C: c UID STORE 2 +FLAGS (\\Deleted)",
        b">S: c UID STORE 4294967295 +FLAGS (\\Deleted)",
        b"S: * 5 EXISTS",
        b"S: c OK Store completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "news"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: c OK Store completed.",
        b"C: d UID COPY 4 Nowhere",
        b">S: d UID COPY 4294967295 Nowhere",
        b"S: d NO [TRYCREATE] Mailbox doesn't exist: Nowhere",
        b">C: d NO [TRYCREATE] Mailbox doesn't exist: Nowhere",
        b"C: e UID MOVE 2:2 Trash",
        b">S: e UID MOVE 4294967295 Trash",
        b"S: e OK No messages found.",
        b">C: e OK No messages found.",
        b"C: f UID EXPUNGE 4",
        b">S: f UID EXPUNGE 4294967295",
        b"S: f OK Expunge completed.",
        b">C: f OK Expunge completed.",
        b"C: g UID SEARCH UID 2,4",
        b">S: g UID SEARCH (NOT ALL)",
    ])


def test_uid_sets_mixing_hidden_and_visible_keep_only_the_visible(selected: Playbook) -> None:
    selected([
        b"C: b UID STORE 1:4 +FLAGS (\\Seen)",
        b">S: b UID STORE 1,3 +FLAGS (\\Seen)",
        b"S: * 1 FETCH (UID 1 FLAGS (\\Seen))",
        b">C: * 1 FETCH (UID 1 FLAGS (\\Seen))",
        b"S: * 3 FETCH (UID 3 FLAGS (\\Seen))",
        b">C: * 2 FETCH (UID 3 FLAGS (\\Seen))",
        b"S: b OK Store completed.",
        b">C: b OK Store completed.",
        b"C: c UID COPY 2:3 Trash",
        b">S: c UID COPY 3 Trash",
        b"S: c OK [COPYUID 11 3 1] Copy completed.",
        b">C: c OK [COPYUID 11 3 1] Copy completed.",
    ])


# -- sequence numbers --------------------------------------------------------------------------------


def test_sequence_numbers_are_translated_to_upstream_ones(selected: Playbook) -> None:
    selected([
        b"C: b FETCH 2 (UID FLAGS)",
        b">S: b FETCH 3 (UID FLAGS)",
        b"S: * 3 FETCH (UID 3 FLAGS ())",
        b">C: * 2 FETCH (UID 3 FLAGS ())",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
        b"C: c FETCH * (UID)",
        b">S: c FETCH 3 (UID)",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
        b"C: d FETCH 1:* (FLAGS)",
        b">S: d FETCH 1,3 (FLAGS)",
        b"S: d OK Fetch completed.",
        b">C: d OK Fetch completed.",
        b"C: e STORE 1 +FLAGS (\\Flagged)",
        b">S: e STORE 1 +FLAGS (\\Flagged)",
        b"S: e OK Store completed.",
        b">C: e OK Store completed.",
        b"C: f COPY 1:2 Trash",
        b">S: f COPY 1,3 Trash",
        b"S: f OK Copy completed.",
        b">C: f OK Copy completed.",
    ])


def test_sequence_numbers_beyond_the_visible_count_are_invalid(selected: Playbook) -> None:
    """The client knows two messages: 3 is as invalid as it is on a two-message mailbox."""
    for verb in (b"FETCH 3 (FLAGS)", b"STORE 2:3 +FLAGS (\\Seen)", b"COPY 3 Trash", b"MOVE 3:* Trash"):
        name = verb.split()[0]
        selected([
            b"C: x " + verb,
            b">C: x BAD Error in IMAP command " + name + b": Invalid messageset.",
        ])


def test_move_by_sequence_number_renumbers_the_expunge(selected: Playbook) -> None:
    selected([
        b"C: b MOVE 2 Trash",
        b">S: b MOVE 3 Trash",
        b"S: * OK [COPYUID 11 3 1] Moved UIDs.",
        b">C: * OK [COPYUID 11 3 1] Moved UIDs.",
        b"S: * 3 EXPUNGE",
        b">C: * 2 EXPUNGE",
        b"S: b OK Move completed.",
        b">C: b OK Move completed.",
        b"C: c FETCH * (UID)",
        b">S: c FETCH 1 (UID)",
    ])


# -- SEARCH ------------------------------------------------------------------------------------------


def test_search_results_are_filtered_and_renumbered(selected: Playbook) -> None:
    selected([
        b"C: b SEARCH ALL",
        b">S: b SEARCH ALL",
        b"S: * SEARCH 1 2 3 4",
        b">C: * SEARCH 1 2",
        b"S: b OK Search completed.",
        b">C: b OK Search completed.",
        b"C: c UID SEARCH SUBJECT SECRET",
        b">S: c UID SEARCH SUBJECT SECRET",
        b"S: * SEARCH 2 4",
        b">C: * SEARCH",
        b"S: c OK Search completed.",
        b">C: c OK Search completed.",
    ])


def test_expungeissued_of_a_search_is_kept_only_when_about_visible_mail(selected: Playbook) -> None:
    """[EXPUNGEISSUED]: a message the search had to read was expunged elsewhere. The same search
    over the visible messages alone tells whether that message is one the client sees."""
    selected([
        b"C: b SEARCH CHARSET UTF-8 BODY lunch",
        b">S: b SEARCH CHARSET UTF-8 BODY lunch",
        b"S: * SEARCH 2",
        b">C: * SEARCH",
        b"S: b OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">S: cp.5 SEARCH CHARSET UTF-8 UID 1,3 BODY lunch",  # as asked: no EXPUNGE during it
        b"S: * SEARCH",
        b"S: cp.5 OK Search completed.",
        b">C: b OK Search completed.",  # it was a hidden one
        b"C: c UID SEARCH SUBJECT lunch",
        b">S: c UID SEARCH SUBJECT lunch",
        b"S: * SEARCH 3",
        b">C: * SEARCH 3",
        b"S: * 5 EXISTS",
        b"S: c OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">S: cp.6 UID SEARCH UID 1,3 SUBJECT lunch",
        b"S: * SEARCH 3",
        b"S: cp.6 OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">S: cp.7 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "news"),
        b"S: cp.7 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: c OK [EXPUNGEISSUED] Some messages were already expunged.",  # a visible one
    ])


def test_expungeissued_of_a_uid_search_follows_the_expunges_it_ends_with(selected: Playbook) -> None:
    """A UID SEARCH ends with the EXPUNGEs of what it could not read: they tell which it was."""
    selected([
        b"C: b UID SEARCH TEXT lunch",
        b">S: b UID SEARCH TEXT lunch",
        b"S: * SEARCH",
        b">C: * SEARCH",
        b"S: * 4 EXPUNGE",  # hidden
        b"S: b OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">C: b OK Search completed.",
        b"C: c UID SEARCH TEXT lunch",
        b">S: c UID SEARCH TEXT lunch",
        b"S: * SEARCH",
        b">C: * SEARCH",
        b"S: * 1 EXPUNGE",  # visible
        b">C: * 1 EXPUNGE",
        b"S: c OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">C: c OK [EXPUNGEISSUED] Some messages were already expunged.",
    ])


def test_expunges_during_the_search_asked_again(selected: Playbook) -> None:
    """The search asked again over the visible mail is a UID SEARCH only when the client's was:
    the upstream may then send EXPUNGEs during it, which the client hears when it may (a UID
    command) and never hears of a hidden message."""
    selected([
        b"C: b UID SEARCH SUBJECT lunch",
        b">S: b UID SEARCH SUBJECT lunch",
        b"S: * SEARCH",
        b">C: * SEARCH",
        b"S: b OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">S: cp.5 UID SEARCH UID 1,3 SUBJECT lunch",
        b"S: * 2 EXPUNGE",  # hidden: nothing for the client
        b"S: * 2 EXPUNGE",  # uid 3, visible: the client's UID SEARCH may hear it
        b">C: * 2 EXPUNGE",
        b"S: * SEARCH",
        b"S: cp.5 OK Search completed.",
        b">C: b OK Search completed.",
        b"C: c NOOP",
        b">S: c NOOP",
        b"S: c OK NOOP completed.",
        b">C: c OK NOOP completed.",
    ])


def test_a_search_too_wide_to_ask_again_never_says_expungeissued(
        selected: Playbook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("caliproxy.imap.selected.MAX_CONFINING_SET", 2)
    selected([
        b"C| b SEARCH SUBJECT SECRET\r\nc NOOP\r\n",
        b">S: b SEARCH SUBJECT SECRET",  # (and the NOOP waits for its answer)
        b"S: * SEARCH 2",
        b">C: * SEARCH",
        b"S: b OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">C: b OK Search completed.",
        b">S: c NOOP",
    ])


def test_search_sequence_set_and_uid_keys_name_only_visible_messages(selected: Playbook) -> None:
    selected([
        b"C: b SEARCH 2:* NOT UID 4",
        b">S: b SEARCH 3 NOT (NOT ALL)",
        b"S: * SEARCH 3",
        b">C: * SEARCH 2",
        b"S: b OK Search completed.",
        b">C: b OK Search completed.",
        b"C: c UID SEARCH OR UID 1:2 (LARGER 1000 1:*)",
        b">S: c UID SEARCH OR UID 1 (LARGER 1000 1,3)",
        b"S: * SEARCH 1",
        b">C: * SEARCH 1",
        b"S: c OK Search completed.",
        b">C: c OK Search completed.",
    ])


# -- EXPUNGE and CLOSE ---------------------------------------------------------------------------------


def test_expunge_only_removes_visible_messages(selected: Playbook) -> None:
    """EXPUNGE becomes UID EXPUNGE of the visible UIDs: hidden \\Deleted mail stays."""
    selected([
        b"C: b EXPUNGE",
        b">S: b UID EXPUNGE 1,3",
        b"S: * 3 EXPUNGE",
        b">C: * 2 EXPUNGE",
        b"S: b OK Expunge completed.",
        b">C: b OK Expunge completed.",
        b"C: c UID EXPUNGE 1:*",
        b">S: c UID EXPUNGE 1",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: c OK Expunge completed.",
        b">C: c OK Expunge completed.",
        b"C: d EXPUNGE",
        b">S: d UID EXPUNGE 4294967295",
    ])


def test_expunge_of_a_hidden_message_by_another_session_is_swallowed(selected: Playbook) -> None:
    selected([
        b"C: b NOOP",
        b">S: b NOOP",
        b"S: * 2 EXPUNGE",
        b"S: * 3 EXPUNGE",
        b"S: * 1 FETCH (FLAGS (\\Seen))",
        b">C: * 1 FETCH (FLAGS (\\Seen))",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK NOOP completed.",
        b">C: b OK NOOP completed.",
        b"C: c FETCH 1 (UID)",
        b">S: c FETCH 1 (UID)",
    ])


def test_close_expunges_only_visible_messages_silently(selected: Playbook) -> None:
    selected([
        b"C: b CLOSE",
        b">S: cp.5 UID EXPUNGE 1,3",
        b"S: * 3 EXPUNGE",
        b"S: cp.5 OK Expunge completed.",
        b">S: b UNSELECT",
        b"S: b OK Unselect completed.",
        b">C: b OK Close completed.",
        b"C: c FETCH 1 (FLAGS)",
        b">S: c FETCH 1 (FLAGS)",
    ])
    assert selected.session._mailbox is None


def test_close_of_an_examined_mailbox_expunges_nothing() -> None:
    play = session_play()
    play([
        b"C: a EXAMINE Private",
        b">S: a EXAMINE Private",
        b"S: * 0 EXISTS",
        b"S: * OK [UIDVALIDITY 9] UIDs valid",
        b"S: a OK [READ-ONLY] Examine completed.",
        b">S: cp.1 UID SEARCH UNSEEN",
        b"S: * SEARCH",
        b"S: cp.1 OK Search completed.",
        b">S: cp.2 UID SEARCH RECENT",
        b"S: * SEARCH",
        b"S: cp.2 OK Search completed.",
        b">C: * 0 EXISTS",
        b">C: * OK [UIDVALIDITY 9] UIDs valid",
        b">C: a OK [READ-ONLY] Examine completed.",
        b"C: b CLOSE",
        b">S: b UNSELECT",
        b"S: b OK Unselect completed.",
        b">C: b OK Close completed.",
    ])


# -- pipelining ----------------------------------------------------------------------------------------


def test_pipelined_sequence_numbers_wait_for_the_commands_before_them(selected: Playbook) -> None:
    """The upstream reads a pipelined sequence number after the commands before it finished, so
    the proxy translates it only then, through the view their EXPUNGEs left (a number translated
    early would name the next upstream message after the shift: here the hidden UID 2)."""
    selected([
        b"C| b UID EXPUNGE 1\r\nc FETCH 1 (UID)\r\nd UID FETCH 3 (UID)\r\n",
        b">S| b UID EXPUNGE 1\r\n",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: b OK Expunge completed.",
        b">C: b OK Expunge completed.",
        b">S| c FETCH 2 (UID)\r\nd UID FETCH 3 (UID)\r\n",
        b"S: * 2 FETCH (UID 3)",
        b">C: * 1 FETCH (UID 3)",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
        b"S: * 2 FETCH (UID 3)",
        b">C: * 1 FETCH (UID 3)",
        b"S: d OK Fetch completed.",
        b">C: d OK Fetch completed.",
    ])


def test_pipelined_uid_commands_go_at_once(
        selected: Playbook) -> None:
    selected([
        b"C| b UID FETCH 1 (UID)\r\nc UID FETCH 4 (UID)\r\nd UID FETCH 3 (UID)\r\n",
        b">S| b UID FETCH 1 (UID)\r\nc UID FETCH 4294967295 (UID)\r\nd UID FETCH 3 (UID)\r\n",
        b"S: * 1 FETCH (UID 1)",
        b">C: * 1 FETCH (UID 1)",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
        b"S: * 3 FETCH (UID 3)",
        b">C: * 2 FETCH (UID 3)",
        b"S: d OK Fetch completed.",
        b">C: d OK Fetch completed.",
    ])


def test_pipelined_sequence_commands_wait_behind_uid_commands(selected: Playbook) -> None:
    selected([
        b"C| b FETCH 1 (UID)\r\nc UID FETCH 4 (UID)\r\nd FETCH 2 (UID)\r\n",
        b">S| b FETCH 1 (UID)\r\nc UID FETCH 4294967295 (UID)\r\n",
        b"S: * 1 FETCH (UID 1)",
        b">C: * 1 FETCH (UID 1)",
        b"S: b OK Fetch completed.",
        b">C: b OK Fetch completed.",
        b"S: c OK Fetch completed.",
        b">C: c OK Fetch completed.",
        b">S: d FETCH 3 (UID)",
        b"S: * 3 FETCH (UID 3)",
        b">C: * 2 FETCH (UID 3)",
        b"S: d OK Fetch completed.",
        b">C: d OK Fetch completed.",
    ])


# -- new mail ------------------------------------------------------------------------------------------


def test_arrivals_during_a_command_are_classified_before_it_completes(selected: Playbook) -> None:
    """A visible arrival is announced before the NOOP's OK; a secret one never."""
    selected([
        b"C: b NOOP",
        b">S: b NOOP",
        b"S: * 6 EXISTS",
        b"S: * 2 RECENT",
        b"S: b OK NOOP completed.",
        b">S: cp.5 FETCH 5:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "SECRET again", flags=b"\\Recent"),
        header_fetch(6, 6, "visible news", flags=b"\\Recent"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: * 2 RECENT",
        b">C: b OK NOOP completed.",
        b"C: c NOOP",
        b">S: c NOOP",
        b"S: * 7 EXISTS",
        b"S: c OK NOOP completed.",
        b">S: cp.6 FETCH 7:7 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(7, 7, "SECRET too"),
        b"S: cp.6 OK Fetch completed.",
        b">C: c OK NOOP completed.",
        b"C: d UID FETCH 6:* (UID)",
        b">S: d UID FETCH 6 (UID)",
    ])


def test_fetch_of_an_unannounced_message_is_not_passed_on(selected: Playbook) -> None:
    selected([
        b"C: b UID FETCH 1:* (FLAGS)",
        b">S: b UID FETCH 1,3 (FLAGS)",
        b"S: * 5 EXISTS",
        b"S: * 5 FETCH (UID 5 FLAGS (\\Recent))",
        b"S: * 1 FETCH (UID 1 FLAGS ())",
        b">C: * 1 FETCH (UID 1 FLAGS ())",
        b"S: b OK Fetch completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "visible"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: b OK Fetch completed.",
    ])


def test_idle_secret_arrival_produces_nothing_visible_one_exists(selected: Playbook) -> None:
    selected([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        # a secret message: the upstream IDLE ends for classification and resumes, silently
        b"S: * 5 EXISTS",
        b">S: DONE",
        b"S: * 1 RECENT",
        b"S: i OK Idle completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "SECRET news"),
        b"S: cp.5 OK Fetch completed.",
        b">S: i IDLE",
        b"S: + idling",
        # a visible one: EXISTS after classification
        b"S: * 6 EXISTS",
        b">S: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.6 FETCH 6:6 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(6, 6, "lunch?", flags=b"\\Recent"),
        b"S: cp.6 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: * 2 RECENT",
        b">S: i IDLE",
        b"S: + idling",
        b"C: DONE",
        b">S: DONE",
        b"S: i OK Idle completed.",
        b">C: i OK Idle completed.",
    ])


def test_client_done_while_the_proxy_classifies(selected: Playbook) -> None:
    selected([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"S: * 5 EXISTS",
        b">S: DONE",
        b"C: DONE",
        b"S: i OK Idle completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(5, 5, "hello"),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 3 EXISTS",
        b">C: i OK Idle completed.",
        b"C: j NOOP",
        b">S: j NOOP",
    ])


def test_expunge_during_idle_is_renumbered_or_swallowed(selected: Playbook) -> None:
    selected([
        b"C: i IDLE",
        b">S: i IDLE",
        b"S: + idling",
        b">C: + idling",
        b"S: * 4 EXPUNGE",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: * 1 FETCH (FLAGS (\\Deleted))",  # UID 2 now: hidden
        b"S: * 2 FETCH (FLAGS (\\Deleted))",
        b">C: * 1 FETCH (FLAGS (\\Deleted))",
        b"S: * 1 EXPUNGE",
        b"C: DONE",
        b">S: DONE",
        b"S: i OK Idle completed.",
        b">C: i OK Idle completed.",
        b"C: j FETCH * (UID)",
        b">S: j FETCH 1 (UID)",
    ])


# -- STATUS, DELETE, LIST -------------------------------------------------------------------------------


def test_status_of_the_selected_mailbox_counts_visible_messages(selected: Playbook) -> None:
    selected([
        b"C: s STATUS INBOX (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)",
        b">S: cp.5 UID SEARCH UNSEEN",
        b"S: * SEARCH 2 3 4",
        b"S: cp.5 OK Search completed.",
        b">S: cp.6 UID SEARCH RECENT",
        b"S: * SEARCH 4",
        b"S: cp.6 OK Search completed.",
        b">S: cp.7 STATUS INBOX (UIDNEXT)",
        b"S: * STATUS INBOX (UIDNEXT 5)",
        b"S: cp.7 OK Status completed.",
        b">C: * STATUS INBOX (MESSAGES 2 RECENT 0 UIDNEXT 5 UIDVALIDITY 7 UNSEEN 1)",
        b">C: s OK Status completed.",
    ])


def test_status_counts_of_another_mailbox_are_asked_on_a_connection_of_the_proxys_own(
        selected: Playbook) -> None:
    """(the rest of that exchange: tests/imap/test_side_session.py)"""
    selected([
        b"C: s STATUS Archive (MESSAGES)",
        b"! CountMessages Archive MESSAGES",
    ])
    selected.session.answered(selected.side_query, CountAnswer({"MESSAGES": 0}))  # type: ignore[attr-defined]
    selected([
        b"C: t STATUS Archive (UIDNEXT UIDVALIDITY)",
        b">S: t STATUS Archive (UIDNEXT UIDVALIDITY)",
    ])


def test_status_waits_for_commands_in_flight(selected: Playbook) -> None:
    selected([
        b"C| b NOOP\r\ns STATUS INBOX (MESSAGES)\r\n",
        b">S| b NOOP\r\n",
        b"S: b OK NOOP completed.",
        b">C: b OK NOOP completed.",
        b">C: * STATUS INBOX (MESSAGES 2)",
        b">C: s OK Status completed.",
    ])


def test_delete_of_a_mailbox_holding_hidden_mail_is_refused(selected: Playbook) -> None:
    selected([
        b"C: d DELETE Private",
        b">S: cp.5 STATUS Private (MESSAGES)",
        b"S: * STATUS Private (MESSAGES 1)",
        b"S: cp.5 OK Status completed.",
        b">C: d NO [CANNOT] Mailbox is not empty",
        b"C: e DELETE Empty",
        b">S: cp.6 STATUS Empty (MESSAGES)",
        b"S: * STATUS Empty (MESSAGES 0)",
        b"S: cp.6 OK Status completed.",
        b">S: e DELETE Empty",
    ])


def test_list_marked_is_stripped(selected: Playbook) -> None:
    selected([
        b'C: l LIST "" "*"',
        b'>S: l LIST "" "*"',
        b'S: * LIST (\\Marked \\HasNoChildren) "/" INBOX',
        b'>C: * LIST (\\HasNoChildren) "/" INBOX',
        b'S: * LIST (\\HasNoChildren \\UnMarked) "/" Archive',
        b'>C: * LIST (\\HasNoChildren) "/" Archive',
        b'S: * LIST (\\Marked) "/" Private',
        b'>C: * LIST () "/" Private',
        b"S: l OK List completed.",
        b">C: l OK List completed.",
    ])


# -- fail closed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"S: * ESEARCH (TAG \"x\") UID COUNT 4",
    b"S: * 3 XMODSEQ 9",
    b"S: * SORT 1 2 3 4",
    b"S: * THREAD (1)(2)",
])
def test_untagged_data_the_view_cannot_rewrite_ends_the_session(selected: Playbook, line: bytes) -> None:
    selected([
        b"C: b NOOP",
        b">S: b NOOP",
        line,
        b">C: * BYE upstream protocol error: " + (
            b"message data b'XMODSEQ' the view cannot rewrite" if b"XMODSEQ" in line
            else b"untagged " + repr(line.split()[2]).encode() + b" the view cannot rewrite"),
        *BYE_CLOSE,
    ])


def test_a_session_that_sees_everything_passes_unknown_data_on() -> None:
    play = session_play(hides=False)
    play([
        b"C: a SELECT INBOX",
        b">S: a SELECT INBOX",
        b"S: * 0 EXISTS",
        b"S: a OK [READ-WRITE] Select completed.",
        b">C: * 0 EXISTS",
        b">C: a OK [READ-WRITE] Select completed.",
        b"C: b NOOP",
        b">S: b NOOP",
        b"S: * XUNKNOWN 1",
        b">C: * XUNKNOWN 1",
    ])


def test_a_session_that_sees_everything_says_recent_after_the_exists_it_counts() -> None:
    play = session_play(hides=False)
    play([
        b"C: a SELECT INBOX",
        b">S: a SELECT INBOX",
        b"S: * 1 EXISTS",
        b"S: * 1 RECENT",
        b"S: a OK [READ-WRITE] Select completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "SECRET"),
        b"S: cp.2 OK Fetch completed.",
        b">C: * 1 EXISTS",
        b">C: * 1 RECENT",
        b">C: a OK [READ-WRITE] Select completed.",
        b"C: b NOOP",
        b">S: b NOOP",
        b"S: * 2 EXISTS",
        b"S: * 2 RECENT",
        b"S: b OK NOOP completed.",
        b">S: cp.3 FETCH 2:2 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(2, 2, "SECRET too", flags=b"\\Recent"),
        b"S: cp.3 OK Fetch completed.",
        b">C: * 2 EXISTS",
        b">C: * 2 RECENT",
        b">C: b OK NOOP completed.",
        # Dovecot may count new mail as \Recent only at its next sync (here: our header fetch);
        # the client hears the count once, and not at all when it ends where it was
        b"C: c NOOP",
        b">S: c NOOP",
        b"S: * 1 EXPUNGE",
        b">C: * 1 EXPUNGE",
        b"S: * 2 EXISTS",
        b"S: * 1 RECENT",
        b"S: c OK NOOP completed.",
        b">S: cp.4 FETCH 2:2 (UID FLAGS BODY.PEEK[HEADER])",
        b"S: * 2 RECENT",
        header_fetch(2, 3, "hello", flags=b"\\Recent"),
        b"S: cp.4 OK Fetch completed.",
        b">C: * 2 EXISTS",
        b">C: c OK NOOP completed.",
    ])


def test_recent_is_said_when_the_visible_recent_count_changes(selected: Playbook) -> None:
    """UIDs 3 (visible) and 4 (hidden) hold \\Recent for this session. The upstream says RECENT
    whenever its own count changes; the client hears it only when its own count did."""
    selected([
        b"C: b UID EXPUNGE 1:*",
        b">S: b UID EXPUNGE 1,3",
        b"S: * 3 EXPUNGE",
        b">C: * 2 EXPUNGE",
        b"S: * 2 RECENT",
        b">C: * 0 RECENT",
        b"S: b OK Expunge completed.",
        b">C: b OK Expunge completed.",
        b"C: c NOOP",
        b">S: c NOOP",
        b"S: * 3 EXPUNGE",  # the hidden UID 4, expunged elsewhere
        b"S: * 1 RECENT",
        b"S: c OK NOOP completed.",
        b">C: c OK NOOP completed.",
    ])


def test_keywords_only_hidden_messages_carry_are_not_shown() -> None:
    """FLAGS and PERMANENTFLAGS name every keyword of the mailbox; the client sees those of its
    visible messages, and hears of a new one only when a visible message gets it."""
    play = session_play()
    play([
        b"C: a SELECT INBOX",
        b">S: a SELECT INBOX",
        b"S: * FLAGS (\\Answered \\Seen $Work $Payroll)",
        b"S: * OK [PERMANENTFLAGS (\\Answered \\Seen $Work $Payroll \\*)] Flags permitted.",
        b"S: * 2 EXISTS",
        b"S: a OK [READ-WRITE] Select completed.",
        b">S: cp.1 UID SEARCH ALL",
        b"S: * SEARCH 1 2",
        b"S: cp.1 OK Search completed.",
        b"! ClassifyMessages INBOX 1:2",
        b"~ side_failed",
        b">S: cp.2 UID FETCH 1:2 (BODY.PEEK[HEADER])",
        header_fetch(1, 1, "hello"),
        header_fetch(2, 2, "SECRET"),
        b"S: cp.2 OK Fetch completed.",
        b">S: cp.3 UID SEARCH KEYWORD $Work",
        b"S: * SEARCH 1",
        b"S: cp.3 OK Search completed.",
        b">S: cp.4 UID SEARCH KEYWORD $Payroll",
        b"S: * SEARCH 2",
        b"S: cp.4 OK Search completed.",
        b">S: cp.5 UID SEARCH UNSEEN",
        b"S: * SEARCH",
        b"S: cp.5 OK Search completed.",
        b">S: cp.6 UID SEARCH RECENT",
        b"S: * SEARCH",
        b"S: cp.6 OK Search completed.",
        b">C: * FLAGS (\\Answered \\Seen $Work)",
        b">C: * OK [PERMANENTFLAGS (\\Answered \\Seen $Work \\*)] Flags permitted.",
        b">C: * 1 EXISTS",
        b">C: a OK [READ-WRITE] Select completed.",
        b"C: b NOOP",
        b">S: b NOOP",
        # another session tags the hidden message: nothing of it reaches this client
        b"S: * FLAGS (\\Answered \\Seen $Work $Payroll $Divorce)",
        b"S: * OK [PERMANENTFLAGS (\\Answered \\Seen $Work $Payroll $Divorce \\*)] Flags permitted.",
        b"S: * 2 FETCH (FLAGS ($Payroll $Divorce))",
        b"S: b OK NOOP completed.",
        b">C: b OK NOOP completed.",
        b"C: c NOOP",
        b">S: c NOOP",
        # ... and then the visible one: the lists grow before its FETCH
        b"S: * 1 FETCH (FLAGS (\\Seen $Work $Divorce))",
        b">C: * FLAGS (\\Answered \\Seen $Work $Divorce)",
        b">C: * OK [PERMANENTFLAGS (\\Answered \\Seen $Work $Divorce \\*)] Flags permitted.",
        b">C: * 1 FETCH (FLAGS (\\Seen $Work $Divorce))",
        b"S: c OK NOOP completed.",
        b">C: c OK NOOP completed.",
    ])


def test_recent_after_an_expunge_waits_for_the_exists_of_new_mail(selected: Playbook) -> None:
    """Dovecot says EXPUNGE, EXISTS, RECENT; with the EXISTS still being classified, the changed
    RECENT count follows it rather than overtaking it."""
    selected([
        b"C: b NOOP",
        b">S: b NOOP",
        b"S: * 3 EXPUNGE",
        b">C: * 2 EXPUNGE",
        b"S: * 4 EXISTS",
        b"S: * 1 RECENT",
        b"S: b OK NOOP completed.",
        b">S: cp.5 FETCH 4:4 (UID FLAGS BODY.PEEK[HEADER])",
        header_fetch(4, 5, "claimed by another session", flags=b""),
        b"S: cp.5 OK Fetch completed.",
        b">C: * 2 EXISTS",
        b">C: * 0 RECENT",
        b">C: b OK NOOP completed.",
    ])


def test_new_mail_already_expunged_when_classified_stays_hidden(selected: Playbook) -> None:
    """A message that arrived and was expunged elsewhere before this session could read it comes
    back with a NIL header. It cannot be judged, so it is not shown (whatever it was); its EXPUNGE
    is swallowed later, as for any hidden message."""
    selected([
        b"C: b SEARCH ALL",
        b">S: b SEARCH ALL",
        b"S: * SEARCH 1 3",
        b">C: * SEARCH 1 2",
        b"S: * 5 EXISTS",
        b"S: b OK Search completed.",
        b">S: cp.5 FETCH 5:5 (UID FLAGS BODY.PEEK[HEADER])",
        b"S: * 5 FETCH (UID 5 FLAGS (\\Deleted) BODY[HEADER] NIL)",
        b"S: cp.5 OK [EXPUNGEISSUED] Some messages were already expunged.",
        b">C: b OK Search completed.",
        b"C: c NOOP",
        b">S: c NOOP",
        b"S: * 5 EXPUNGE",
        b"S: c OK NOOP completed.",
        b">C: c OK NOOP completed.",
    ])
    assert selected.session.classifier.cache.keys() == {1, 2, 3, 4}  # nothing cached for UID 5
