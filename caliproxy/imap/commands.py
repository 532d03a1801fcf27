"""Which client commands the proxy forwards, and the argument grammar each one must follow.

Pure module. A command that uses an extension the proxy did not offer is refused here with a
reason (the session answers ``BAD``), never forwarded: the upstream would happily honour it and
switch on behaviour (CONDSTORE, ESEARCH, CATENATE, COMPRESS...) that the proxy does not rewrite.

The grammar is RFC 3501 §6 and §9 plus the extensions in ``capabilities.PASS_THROUGH``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from caliproxy.imap.grammar import Atom, CommandStart, Token, is_astring, is_sequence_set

Checker = Callable[[Sequence[Token]], str | None]

# Commands the proxy handles itself instead of forwarding.
LOCAL_VERBS = frozenset({"STARTTLS", "ENABLE", "COMPRESS"})

# fetch-att (RFC 3501 §9). Sections are checked by prefix; BINARY (RFC 3516), MODSEQ (RFC 7162)
# and vendor items are not offered.
_FETCH_MACROS = frozenset({"ALL", "FAST", "FULL"})
_FETCH_SIMPLE = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
    }
)
_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})
_STORE_ITEMS = frozenset({"FLAGS", "FLAGS.SILENT", "+FLAGS", "+FLAGS.SILENT", "-FLAGS", "-FLAGS.SILENT"})

# search-key (RFC 3501 §6.4.4) -> number of arguments.
SEARCH_KEY_ARITY: dict[str, int] = {
    **{k: 0 for k in ("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT",
                      "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN")},
    **{k: 1 for k in ("BCC", "BEFORE", "BODY", "CC", "FROM", "KEYWORD", "LARGER", "ON",
                      "SENTBEFORE", "SENTON", "SENTSINCE", "SINCE", "SMALLER", "SUBJECT", "TEXT",
                      "TO", "UID", "UNKEYWORD")},
    "HEADER": 2,
}
_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})


def _upper(token: Token) -> str | None:
    return token.upper() if isinstance(token, Atom) else None


def _no_args(args: Sequence[Token]) -> str | None:
    return "unexpected arguments" if args else None


def _mailbox_args(count: int) -> Checker:
    def check(args: Sequence[Token]) -> str | None:
        if len(args) != count or not all(is_astring(a) for a in args):
            return f"expected {count} mailbox name(s)"
        return None

    return check


def _check_select(args: Sequence[Token]) -> str | None:
    # SELECT/EXAMINE parameters (CONDSTORE, QRESYNC) are extensions we do not offer.
    if len(args) != 1 or not is_astring(args[0]):
        return "SELECT takes one mailbox name and no parameters"
    return None


def _check_create(args: Sequence[Token]) -> str | None:
    if len(args) != 1 or not is_astring(args[0]):
        return "CREATE takes one mailbox name (CREATE-SPECIAL-USE is not offered)"
    return None


def _check_login(args: Sequence[Token]) -> str | None:
    if len(args) != 2 or not all(is_astring(a) for a in args):
        return "LOGIN takes a user name and a password"
    return None


def _check_fetch_item(item: Token) -> bool:
    name = _upper(item)
    if name is None:
        return False
    if name in _FETCH_SIMPLE or name in _FETCH_MACROS:
        return True
    for prefix in ("BODY[", "BODY.PEEK["):
        if name.startswith(prefix):
            close = name.find("]")
            tail = name[close + 1 :]
            return close > 0 and (tail == "" or _is_partial(tail))
    return False


def _is_partial(text: str) -> bool:
    # partial = "<" number "." nz-number ">"
    if not (text.startswith("<") and text.endswith(">")):
        return False
    first, dot, second = text[1:-1].partition(".")
    return bool(dot) and first.isdigit() and second.isdigit() and int(second) > 0


def _check_fetch(args: Sequence[Token]) -> str | None:
    # fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
    #         "(" fetch-att *(SP fetch-att) ")")   -- no fetch modifiers (CHANGEDSINCE, VANISHED)
    if len(args) != 2 or not is_sequence_set(args[0]):
        return "FETCH takes a sequence set and fetch items (modifiers are not offered)"
    items = args[1]
    if isinstance(items, list):
        if not items or not all(_check_fetch_item(i) and _upper(i) not in _FETCH_MACROS for i in items):
            return "unsupported fetch item"
    elif not _check_fetch_item(items):
        return "unsupported fetch item"
    return None


def _check_store(args: Sequence[Token]) -> str | None:
    # store = "STORE" SP sequence-set SP store-att-flags   -- no UNCHANGEDSINCE modifier
    if len(args) < 3 or not is_sequence_set(args[0]) or _upper(args[1]) not in _STORE_ITEMS:
        return "STORE takes a sequence set, a flags item and flags (modifiers are not offered)"
    flags = args[2:]
    if len(flags) == 1 and isinstance(flags[0], list):
        flags = flags[0]
    if not all(isinstance(f, Atom) for f in flags):
        return "flags must be atoms"
    return None


def _check_copy(args: Sequence[Token]) -> str | None:
    if len(args) != 2 or not is_sequence_set(args[0]) or not is_astring(args[1]):
        return "expected a sequence set and a mailbox name"
    return None


def _check_uid_expunge(args: Sequence[Token]) -> str | None:
    if len(args) != 1 or not is_sequence_set(args[0]):
        return "UID EXPUNGE takes a sequence set"
    return None


def _check_search(args: Sequence[Token]) -> str | None:
    # search = "SEARCH" [SP "CHARSET" SP astring] 1*(SP search-key)  -- no RETURN (ESEARCH)
    keys = list(args)
    if keys and _upper(keys[0]) == "CHARSET":
        if len(keys) < 2 or not is_astring(keys[1]):
            return "CHARSET needs a name"
        keys = keys[2:]
    if not keys:
        return "SEARCH needs a search key"
    pos = 0
    while pos < len(keys):
        pos = _search_key(keys, pos, depth=0)
        if pos < 0:
            return "unsupported search key"
    return None


def _search_key(keys: Sequence[Token], pos: int, depth: int) -> int:
    """Consume one search-key at ``pos``; return the next position, or -1 if invalid."""
    if pos >= len(keys) or depth > 50:
        return -1
    key = keys[pos]
    if isinstance(key, list):
        inner = 0
        while inner < len(key):
            inner = _search_key(key, inner, depth + 1)
            if inner < 0:
                return -1
        return pos + 1 if key else -1
    if is_sequence_set(key):
        return pos + 1
    name = _upper(key)
    if name is None:
        return -1
    if name == "NOT":
        return _search_key(keys, pos + 1, depth + 1)
    if name == "OR":
        second = _search_key(keys, pos + 1, depth + 1)
        return -1 if second < 0 else _search_key(keys, second, depth + 1)
    arity = SEARCH_KEY_ARITY.get(name)
    if arity is None:
        return -1
    args = keys[pos + 1 : pos + 1 + arity]
    if len(args) != arity or not all(is_astring(a) for a in args):
        return -1
    if name == "UID" and not is_sequence_set(args[0]):
        return -1
    return pos + 1 + arity


def _check_list(args: Sequence[Token]) -> str | None:
    # list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    # (RFC 5258; RFC 6154 adds SPECIAL-USE). STATUS (LIST-STATUS) and MYRIGHTS are not offered.
    rest = list(args)
    if rest and isinstance(rest[0], list):
        if not all(_upper(opt) in _LIST_SELECT for opt in rest[0]):
            return "unsupported LIST selection option"
        rest = rest[1:]
    if len(rest) < 2 or not is_astring(rest[0]):
        return "LIST takes a reference and a pattern"
    pattern = rest[1]
    if not (is_astring(pattern) or (isinstance(pattern, list) and all(is_astring(p) for p in pattern))):
        return "bad LIST pattern"
    rest = rest[2:]
    if rest:
        if len(rest) != 2 or _upper(rest[0]) != "RETURN" or not isinstance(rest[1], list):
            return "unexpected LIST arguments"
        if not all(_upper(opt) in _LIST_RETURN for opt in rest[1]):
            return "unsupported LIST return option"
    return None


def _check_lsub(args: Sequence[Token]) -> str | None:
    if len(args) != 2 or not all(is_astring(a) for a in args):
        return "LSUB takes a reference and a pattern"
    return None


def _check_status(args: Sequence[Token]) -> str | None:
    if len(args) != 2 or not is_astring(args[0]) or not isinstance(args[1], list) or not args[1]:
        return "STATUS takes a mailbox and a list of items"
    if not all(_upper(item) in _STATUS_ITEMS for item in args[1]):
        return "unsupported STATUS item"
    return None


def _check_id(args: Sequence[Token]) -> str | None:
    # id = "ID" SP id-params-list ; id-params-list = "(" *(string SP nstring) ")" / nil
    if len(args) != 1:
        return "ID takes one parameter list or NIL"
    params = args[0]
    if _upper(params) == "NIL":
        return None
    if not isinstance(params, list) or len(params) % 2 or len(params) > 60:
        return "bad ID parameter list"
    if not all(isinstance(p, (bytes, Atom)) for p in params):
        return "bad ID parameter list"
    return None


def _check_authenticate(args: Sequence[Token]) -> str | None:
    # authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]   (RFC 4959: an atom)
    if not 1 <= len(args) <= 2 or not all(isinstance(a, Atom) for a in args):
        return "AUTHENTICATE takes a mechanism and an optional initial response"
    return None


CHECKERS: dict[str, Checker] = {
    "CAPABILITY": _no_args,
    "NOOP": _no_args,
    "LOGOUT": _no_args,
    "LOGIN": _check_login,
    "AUTHENTICATE": _check_authenticate,
    "ID": _check_id,
    "NAMESPACE": _no_args,
    "SELECT": _check_select,
    "EXAMINE": _check_select,
    "CREATE": _check_create,
    "DELETE": _mailbox_args(1),
    "RENAME": _mailbox_args(2),
    "SUBSCRIBE": _mailbox_args(1),
    "UNSUBSCRIBE": _mailbox_args(1),
    "LIST": _check_list,
    "LSUB": _check_lsub,
    "STATUS": _check_status,
    "CHECK": _no_args,
    "CLOSE": _no_args,
    "UNSELECT": _no_args,
    "EXPUNGE": _no_args,
    "IDLE": _no_args,
    "SEARCH": _check_search,
    "FETCH": _check_fetch,
    "STORE": _check_store,
    "COPY": _check_copy,
    "MOVE": _check_copy,
}

UID_CHECKERS: dict[str, Checker] = {
    "FETCH": _check_fetch,
    "STORE": _check_store,
    "COPY": _check_copy,
    "MOVE": _check_copy,
    "SEARCH": _check_search,
    "EXPUNGE": _check_uid_expunge,
}


def check(command: CommandStart, args: Sequence[Token]) -> str | None:
    """None when the command may be forwarded, else the reason it is refused."""
    table = UID_CHECKERS if command.uid else CHECKERS
    checker = table.get(command.verb)
    if checker is None:
        return f"command {command.name} is not supported"
    return checker(args)


# APPEND is streamed, not assembled, so it is checked piece by piece.
# append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
# MULTIAPPEND (RFC 3502) repeats [SP flag-list] [SP date-time] SP literal; CATENATE, UTF8 and
# BINARY literal8 are not offered.
def check_append_part(args: Sequence[Token], *, first: bool) -> str | None:
    rest = list(args)
    if first:
        if not rest or not is_astring(rest[0]):
            return "APPEND needs a mailbox name"
        rest = rest[1:]
    if rest and isinstance(rest[0], list):
        if not all(isinstance(flag, Atom) for flag in rest[0]):
            return "flags must be atoms"
        rest = rest[1:]
    if rest and isinstance(rest[0], bytes) and len(rest) == 1:
        return None  # date-time, a quoted string
    if rest:
        return "unexpected APPEND arguments (CATENATE and UTF8 are not offered)"
    return None
