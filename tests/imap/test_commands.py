"""The command tables: what real clients send is forwarded, extensions not offered are refused."""

from __future__ import annotations

import pytest

from caliproxy.imap import commands
from caliproxy.imap.grammar import parse_command_start, tokenize


def verdict(line: bytes) -> str | None:
    start = parse_command_start(line)
    return commands.check(start, tokenize([start.rest], []))


# Every command Thunderbird sent in the reference transcripts, verbatim (STARTTLS and COMPRESS are
# answered by the proxy itself and tested with the session).
THUNDERBIRD = [
    b"37 capability",
    b"23 namespace",
    b'24 ID ("name" "Thunderbird" "version" "153.8.0")',
    b'25 list (subscribed) "" "*" return (special-use)',
    b'26 list "" "INBOX"',
    b'95 list "" "Trash"',
    b'96 create "Trash"',
    b'97 subscribe "Trash"',
    b'9 select "INBOX"',
    b"10 UID fetch 1:* (FLAGS)",
    (b"11 UID fetch 1:5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
    b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)])"),
    b"12 noop",
    b"13 UID fetch 6:* (FLAGS)",
    b"14 IDLE",
    b"15 UID fetch 1:5 (UID RFC822.SIZE BODY.PEEK[])",
    b'29 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)',
    b"22 UID fetch 3 (UID RFC822.SIZE BODY[]<0.65536>)",
    b"27 UID fetch 3 (UID RFC822.SIZE BODY[]<360448.81920>)",
    b"29 UID fetch 2 (UID RFC822.SIZE BODY[])",
    b"34 uid store 1 +Flags (\\Flagged)",
    b"36 uid store 4 +Flags (\\Seen)",
    b'39 uid move 5 "Trash"',
    # Seen from Thunderbird outside the transcripts (folder operations, MIME parts, expunge).
    b"50 UID fetch 3 (BODYSTRUCTURE)",
    b"51 UID fetch 3 (UID RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[1] BODY.PEEK[2.MIME])",
    b"52 uid store 3:5 +FLAGS (\\Deleted)",
    b"53 UID expunge 3:5",
    b"54 expunge",
    b'55 uid copy 3 "Archives"',
    b'56 lsub "" "*"',
    b'57 rename "Old" "New"',
    b'58 delete "New"',
    b'59 unsubscribe "Trash"',
    b"60 close",
    b"61 logout",
    b"62 UID fetch 1:* (FLAGS) ",
    b'63 UID search UNDELETED HEADER Message-ID "<abc@example.org>"',
    b"64 uid store 1 -FLAGS ($Junk)",
]

MBSYNC = [
    b"1 CAPABILITY",
    b'2 LOGIN "bob" "secret"',
    b"3 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=",
    b"4 NAMESPACE",
    b'5 LIST "" "*"',
    b'6 LIST "" *',
    b'7 SELECT "INBOX"',
    b'8 EXAMINE "INBOX"',
    b"9 UID FETCH 1:* (UID FLAGS)",
    b"10 UID FETCH *:* (UID)",
    b"11 UID FETCH 1:1000000000 (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (X-TUID)])",
    b"12 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
    b"13 UID FETCH 7 (BODY.PEEK[])",
    b"14 UID STORE 7 +FLAGS.SILENT (\\Deleted \\Seen)",
    b"15 UID STORE 7 -FLAGS.SILENT (\\Flagged)",
    b'16 UID SEARCH HEADER X-TUID "aB3dE6gH9jK1"',
    b'17 CREATE "Archive/2026"',
    b'18 SUBSCRIBE "Archive/2026"',
    b"19 CLOSE",
    b"20 UID EXPUNGE 7,9:12",
    b"21 LOGOUT",
    b'22 ID NIL',
    b"23 CHECK",
    b"24 UNSELECT",
]

NEOMUTT = [
    b"a0000 CAPABILITY",
    b'a0001 LIST "" ""',
    b'a0002 LSUB "" "*"',
    b'a0003 LIST "" "%"',
    b'a0004 SELECT "INBOX"',
    (b"a0005 FETCH 1:5 (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER "
    b"SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES "
    b"LIST-POST X-LABEL X-ORIGINAL-TO)])"),
    b"a0006 UID FETCH 3 BODY.PEEK[]",
    b"a0007 UID STORE 3 +FLAGS.SILENT (\\Seen)",
    b"a0008 UID STORE 1:3 FLAGS.SILENT (\\Seen $Label1)",
    b'a0009 UID COPY 1:3 "Trash"',
    b"a0010 EXPUNGE",
    b'a0011 STATUS "INBOX" (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)',
    b"a0012 IDLE",
    b"a0013 NOOP",
    b"a0014 CHECK",
    b"a0015 UID SEARCH UNSEEN",
    b'a0016 UID SEARCH CHARSET UTF-8 OR FROM "alice" NOT (SUBJECT "x" SINCE 1-Jan-2026)',
    b"a0017 SEARCH 1:* NOT DELETED LARGER 100 SMALLER 5000 UID 1:*",
    b'a0018 UID MOVE 4 "Archive"',
    b"a0019 FETCH 1 FAST",
    b"a0020 FETCH 1:* ALL",
    b"a0021 FETCH 2 (ENVELOPE BODY RFC822.HEADER RFC822.TEXT RFC822)",
    b"a0022 FETCH 2 FULL",
    b"a0023 STORE 2 FLAGS ()",
    b"a0024 STORE 2 +FLAGS \\Seen",
    b"a0025 SEARCH OR OR SEEN FLAGGED (DRAFT ANSWERED) KEYWORD $Label1",
    b"a0026 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"*\" RETURN (CHILDREN)",
    b"a0027 LIST \"\" (\"INBOX\" \"Sent\")",
    b"a0028 LIST (SPECIAL-USE) \"\" \"*\"",
    b"a0029 LIST (REMOTE) \"\" \"*\" RETURN ()",
]


@pytest.mark.parametrize("line", THUNDERBIRD + MBSYNC + NEOMUTT)
def test_real_client_commands_are_forwarded(line: bytes) -> None:
    assert verdict(line) is None


# Extensions the proxy does not offer (README, Security behaviour): using one is refused, never forwarded.
NOT_OFFERED = [
    # CONDSTORE / QRESYNC (RFC 7162)
    b'a SELECT "INBOX" (CONDSTORE)',
    b'a EXAMINE "INBOX" (QRESYNC (1795772520 12 1:5))',
    b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12)",
    b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)",
    b"a FETCH 1:* (FLAGS MODSEQ)",
    b"a UID STORE 1 (UNCHANGEDSINCE 12) +FLAGS (\\Seen)",
    b"a UID SEARCH MODSEQ 12",
    b'a STATUS "INBOX" (HIGHESTMODSEQ)',
    # BINARY (RFC 3516)
    b"a UID FETCH 1 (BINARY[1])",
    b"a UID FETCH 1 (BINARY.PEEK[1]<0.10>)",
    b"a UID FETCH 1 (BINARY.SIZE[1])",
    # ESEARCH / SEARCHRES / FUZZY / CONTEXT
    b"a UID SEARCH RETURN (ALL) UNSEEN",
    b"a SEARCH RETURN (MIN MAX COUNT) ALL",
    b"a UID SEARCH RETURN (SAVE) UNSEEN",
    b"a UID FETCH $ (FLAGS)",
    b'a SEARCH FUZZY SUBJECT "x"',
    b"a SEARCH YOUNGER 3600",
    # STATUS extensions and LIST-STATUS / MYRIGHTS
    b'a STATUS "INBOX" (SIZE)',
    b'a STATUS "INBOX" (APPENDLIMIT)',
    b'a STATUS "INBOX" (DELETED)',
    b'a LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))',
    b'a LIST "" "*" RETURN (MYRIGHTS)',
    b'a LIST (VENDOR) "" "*"',
    # other commands whose extensions are not offered
    b"a GETQUOTA \"\"",
    b'a GETQUOTAROOT "INBOX"',
    b'a SETQUOTA "" (STORAGE 10)',
    b"a SORT (DATE) UTF-8 ALL",
    b"a UID SORT (DATE) UTF-8 ALL",
    b"a THREAD REFERENCES UTF-8 ALL",
    b"a UID THREAD REFERENCES UTF-8 ALL",
    b'a XLIST "" "*"',
    b'a GENURLAUTH "imap://bob@example.org/INBOX/;uid=3;urlauth=user+bob" INTERNAL',
    b'a URLFETCH "imap://bob@example.org/INBOX/;uid=3"',
    b'a RESETKEY',
    b"a NOTIFY SET (selected MessageNew)",
    b'a GETMETADATA "" /shared/comment',
    b'a GETACL "INBOX"',
    b'a MYRIGHTS "INBOX"',
    b'a CREATE "Sent" (USE (\\Sent))',
    b"a UID MOVE $ Trash",
    b"a ESEARCH IN (mailboxes INBOX) ALL",
    b"a REPLACE 1 INBOX (\\Seen)",
    b"a UID REPLACE 1 INBOX",
    b"a X-GM-EXT-1",
    b"a XAPPLEPUSHSERVICE",
    b"a APPEND INBOX CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=3\")",
    b"a UID EXPUNGE",
    b"a UID CAPABILITY",
    b"a UID NOOP",
]


@pytest.mark.parametrize("line", NOT_OFFERED)
def test_extensions_not_offered_are_refused(line: bytes) -> None:
    assert verdict(line) is not None


MALFORMED = [
    b"a NOOP extra",
    b"a LOGOUT now",
    b"a LOGIN bob",
    b"a LOGIN bob secret extra",
    b"a LOGIN (bob) secret",
    b"a SELECT",
    b"a SELECT a b",
    b"a FETCH 0 FLAGS",
    b"a FETCH 1",
    b"a FETCH 1 ()",
    b"a FETCH 1 (FLAGS ALL)",
    b"a FETCH 1 BODY[]<0>",
    b"a FETCH 1 BODY[]<0.0>",
    b"a FETCH 1 BODY[]junk",
    b'a FETCH 1 "FLAGS"',
    b"a FETCH 1 (FLAGS (UID))",
    b"a STORE 1 FLAGS",
    b"a STORE 1 COLOR (\\Seen)",
    b'a STORE 1 FLAGS ("quoted")',
    b"a COPY 1",
    b"a COPY Trash 1",
    b"a SEARCH",
    b"a SEARCH CHARSET",
    b"a SEARCH BOGUS",
    b"a SEARCH FROM",
    b"a SEARCH NOT",
    b"a SEARCH OR SEEN",
    b"a SEARCH ()",
    b"a SEARCH UID abc",
    b"a SEARCH HEADER Subject",
    b"a SEARCH (((((((((((((((((((((((((((((((((((((((((((((((((((((ALL)))))))))))))))))))))))))))))))))))))))))))))))))))))",
    b"a STATUS INBOX",
    b"a STATUS INBOX ()",
    b"a STATUS INBOX MESSAGES",
    b"a LIST",
    b'a LIST ""',
    b'a LIST "" "*" RETURN',
    b'a LIST "" "*" (CHILDREN)',
    b"a LSUB x",
    b"a ID",
    b'a ID ("name")',
    b"a ID (name (x))",
    b"a ID NIL NIL",
    b"a AUTHENTICATE",
    b'a AUTHENTICATE "PLAIN"',
    b"a AUTHENTICATE PLAIN a b",
    b"a AUTHENTICATE PLAIN (x)",
    b'a AUTHENTICATE PLAIN "AGJvYgBzZWNyZXQ="',
    b"a UID EXPUNGE x",
    b"a UID FETCH",
]


@pytest.mark.parametrize("line", MALFORMED)
def test_malformed_arguments_are_refused(line: bytes) -> None:
    assert verdict(line) is not None


def test_search_depth_is_bounded() -> None:
    deep = b"a SEARCH " + b"NOT " * 200 + b"ALL"
    assert verdict(deep) is not None
    shallow = b"a SEARCH " + b"NOT " * 10 + b"ALL"
    assert verdict(shallow) is None


def test_id_parameter_list_is_bounded() -> None:
    params = b" ".join(b'"k%d" "v"' % i for i in range(31))
    assert verdict(b"a ID (" + params + b")") is not None
    params = b" ".join(b'"k%d" NIL' % i for i in range(30))
    assert verdict(b"a ID (" + params + b")") is None


def test_local_verbs_are_not_forwarded() -> None:
    assert {"STARTTLS", "ENABLE", "COMPRESS"} <= commands.LOCAL_VERBS


# -- APPEND, checked piece by piece as it streams -------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "first"),
    [
        (b'"Sent" (\\Seen) ', True),
        (b"INBOX ", True),
        (b'"Drafts" (\\Draft \\Seen) "27-Nov-2026 10:00:00 +0000" ', True),
        (b'INBOX "27-Nov-2026 10:00:00 +0000" ', True),
        (b"INBOX () ", True),
        (b" (\\Seen) ", False),  # MULTIAPPEND: another message
        (b" ", False),
        (b' "27-Nov-2026 10:00:00 +0000" ', False),
    ],
)
def test_append_parts_accepted(rest: bytes, first: bool) -> None:
    assert commands.check_append_part(tokenize([rest], []), first=first) is None


@pytest.mark.parametrize(
    ("rest", "first"),
    [
        (b"", True),
        (b"(\\Seen) ", True),
        (b'INBOX ("quoted") ', True),
        (b"INBOX CATENATE (TEXT ", True),
        (b"INBOX UTF8 (", True),
        (b'INBOX (\\Seen) "date" extra ', True),
        (b"INBOX (\\Seen) (\\Draft) ", True),
        (b"INBOX NOTADATE ", True),
        (b" CATENATE (URL \"x\") ", False),
        (b" (\\Seen) \"d\" \"e\" ", False),
    ],
)
def test_append_parts_refused(rest: bytes, first: bool) -> None:
    try:
        args = tokenize([rest], [])
    except Exception:  # noqa: BLE001 - an unbalanced list is refused one step earlier
        return
    assert commands.check_append_part(args, first=first) is not None
