"""Typed IMAP grammar: command starts, response lines, response codes, tokens and sequence sets.

Pure module: stdlib and ``caliproxy.errors`` only. It parses what the proxy must understand to
forward, refuse or rewrite; everything else stays raw bytes so that what we pass on is byte for
byte what we received.

RFC 3501 §9 (the ABNF quoted above each parser is from there unless noted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from caliproxy.errors import ClientProtocolError, ServerProtocolError

# tag = 1*<any ASTRING-CHAR except "+">
# ASTRING-CHAR = ATOM-CHAR / resp-specials ; ATOM-CHAR excludes "(" ")" "{" SP CTL "%" "*" DQUOTE "\"
_TAG = rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+"
_COMMAND_START = re.compile(rb"(" + _TAG + rb") (?:([Uu][Ii][Dd]) )?([A-Za-z][A-Za-z0-9\-.]*)")


@dataclass(frozen=True, slots=True)
class CommandStart:
    """The head of a client command: ``tag SP ["UID" SP] verb`` and the raw rest of the line."""

    tag: bytes
    uid: bool
    verb: str  # upper case
    rest: bytes  # what follows the verb in the first fragment, without the line end or literal marker

    @property
    def name(self) -> str:
        """The verb as a metrics label: ``UID FETCH`` or ``FETCH``."""
        return f"UID {self.verb}" if self.uid else self.verb


def parse_command_start(fragment: bytes) -> CommandStart:
    """Parse ``tag SP [UID SP] verb [SP args]`` from a command's first fragment (marker stripped)."""
    match = _COMMAND_START.match(fragment)
    if match is None or b"+" in match.group(1):
        raise ClientProtocolError("malformed command")
    rest = fragment[match.end() :]
    if rest and not rest.startswith(b" "):
        raise ClientProtocolError("malformed command")
    return CommandStart(
        tag=match.group(1),
        uid=match.group(2) is not None,
        verb=match.group(3).decode("ascii").upper(),
        rest=rest[1:],
    )


def tag_of(fragment: bytes) -> bytes | None:
    """Best-effort tag of a line we could not parse, to answer it with a tagged BAD."""
    match = re.match(_TAG, fragment)
    if match is None or b"+" in match.group(0):
        return None
    return match.group(0)


# -- responses ------------------------------------------------------------------------------------

STATUS_WORDS = frozenset({b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"})


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``"[" resp-text-code "]"``: an upper-case atom and its raw arguments."""

    name: bytes
    args: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """The first fragment of a server response, classified.

    kind is "tagged", "untagged" or "continuation". For status responses ``status`` is OK/NO/BAD/
    BYE/PREAUTH and ``code`` the optional response code; for message data (``* 3 EXISTS``) ``number``
    is set and ``keyword`` is the data name; for other untagged data ``keyword`` is its name
    (CAPABILITY, LIST, FETCH...).
    """

    kind: str
    tag: bytes | None = None
    status: bytes | None = None
    code: ResponseCode | None = None
    number: int | None = None
    keyword: bytes | None = None
    text: bytes = b""


_RESPONSE_CODE = re.compile(rb"\[([A-Za-z0-9.\-=]+)(?: ([^\]]*))?\]")


def parse_response(fragment: bytes) -> Response:
    """Classify a response's first fragment (line end and literal marker may still be attached).

    response-tagged = tag SP resp-cond-state CRLF
    response-data   = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
                      capability-data) CRLF
    continue-req    = "+" SP (resp-text / base64) CRLF
    """
    line = fragment.rstrip(b"\r\n")
    if line.startswith(b"+"):
        return Response(kind="continuation", text=line[2:])
    head, _, rest = line.partition(b" ")
    if head == b"*":
        first, _, after = rest.partition(b" ")
        upper = first.upper()
        if upper in STATUS_WORDS:
            code, text = _split_code(after)
            return Response(kind="untagged", status=upper, code=code, text=text)
        if first.isdigit():
            keyword, _, text = after.partition(b" ")
            return Response(kind="untagged", number=int(first), keyword=keyword.upper(), text=text)
        return Response(kind="untagged", keyword=upper, text=after)
    if not head:
        raise ServerProtocolError("empty response line")
    status, _, after = rest.partition(b" ")
    status = status.upper()
    if status not in (b"OK", b"NO", b"BAD"):
        raise ServerProtocolError("tagged response without OK/NO/BAD")
    code, text = _split_code(after)
    return Response(kind="tagged", tag=head, status=status, code=code, text=text)


def _split_code(text: bytes) -> tuple[ResponseCode | None, bytes]:
    if not text.startswith(b"["):
        return None, text
    match = _RESPONSE_CODE.match(text)
    if match is None:
        return None, text
    code = ResponseCode(match.group(1).upper(), match.group(2) or b"")
    return code, text[match.end() :].lstrip(b" ")


def may_carry_literal(fragment: bytes) -> bool:
    """False for responses whose grammar allows no literal (status responses, continuations).

    Used by the server-side framer so free text ending in ``{5}`` is not taken for a literal.
    """
    if fragment.startswith(b"+"):
        return False
    # the first two words, found without splitting the whole fragment (it may be long)
    first = fragment.find(b" ")
    if first < 0:
        return False
    second = fragment.find(b" ", first + 1)
    word = (fragment[first + 1 : second] if second >= 0 else fragment[first + 1 :]).upper()
    if first == 1 and fragment.startswith(b"*"):
        return word not in STATUS_WORDS
    return word not in (b"OK", b"NO", b"BAD")


# -- tokens ---------------------------------------------------------------------------------------


class Atom(str):
    """An unquoted token (atoms, flags, numbers, sequence sets, fetch items with sections)."""

    __slots__ = ()


Token = Union[Atom, bytes, "list[Token]"]  # bytes = quoted string or literal content

_ATOM_END = frozenset(b' ()"{')


def tokenize(fragments: list[bytes], literals: list[bytes]) -> list[Token]:
    """Tokenize a whole logical command after its head.

    ``fragments`` are the line fragments with literal markers and line ends stripped;
    ``literals[i]`` is the content of the literal that followed ``fragments[i]``.

    An atom may contain a bracketed section with spaces and parentheses inside
    (``BODY.PEEK[HEADER.FIELDS (From To)]<0.100>``), which is how fetch items are written.
    """
    stack: list[list[Token]] = [[]]
    for index, fragment in enumerate(fragments):
        _tokenize_fragment(fragment, stack)
        if index < len(literals):
            stack[-1].append(literals[index])
    if len(stack) != 1:
        raise ClientProtocolError("unbalanced parentheses")
    return stack[0]


def _tokenize_fragment(text: bytes, stack: list[list[Token]]) -> None:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == 0x20:
            i += 1
        elif c == 0x28:  # (
            new: list[Token] = []
            stack[-1].append(new)
            stack.append(new)
            i += 1
        elif c == 0x29:  # )
            if len(stack) == 1:
                raise ClientProtocolError("unbalanced parentheses")
            stack.pop()
            i += 1
        elif c == 0x22:  # "
            i, value = _quoted(text, i)
            stack[-1].append(value)
        elif c == 0x7B:  # { only valid as a literal marker, which the framer already removed
            raise ClientProtocolError("unexpected literal marker")
        else:
            start = i
            while i < n and text[i] not in _ATOM_END:
                if text[i] == 0x5B:  # [ ... ] may hold spaces and parentheses
                    close = text.find(b"]", i)
                    if close < 0:
                        raise ClientProtocolError("unterminated section")
                    i = close + 1
                else:
                    i += 1
            try:
                stack[-1].append(Atom(text[start:i].decode("ascii")))
            except UnicodeDecodeError:
                raise ClientProtocolError("8-bit characters in an atom") from None


def _quoted(text: bytes, i: int) -> tuple[int, bytes]:
    # quoted = DQUOTE *QUOTED-CHAR DQUOTE ; QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> /
    #          "\" quoted-specials
    out = bytearray()
    i += 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == 0x22:
            return i + 1, bytes(out)
        if c == 0x5C:
            if i + 1 >= n or text[i + 1] not in (0x22, 0x5C):
                raise ClientProtocolError("bad escape in quoted string")
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise ClientProtocolError("unterminated quoted string")


def is_astring(token: Token) -> bool:
    return isinstance(token, (bytes, Atom))


# -- sequence sets --------------------------------------------------------------------------------

# sequence-set = (seq-number / seq-range) ["," sequence-set]
# seq-range    = seq-number ":" seq-number ; seq-number = nz-number / "*"
_SEQ_SET = re.compile(r"(?:[1-9][0-9]*|\*)(?::(?:[1-9][0-9]*|\*))?(?:,(?:[1-9][0-9]*|\*)(?::(?:[1-9][0-9]*|\*))?)*\Z")

SeqRange = tuple[int | None, int | None]  # None stands for "*"


def is_sequence_set(token: Token) -> bool:
    return isinstance(token, Atom) and _SEQ_SET.match(token) is not None


def parse_sequence_set(text: str) -> list[SeqRange]:
    """Parse a sequence set into (low, high) pairs, ``None`` meaning ``*``; order as written."""
    if _SEQ_SET.match(text) is None:
        raise ClientProtocolError("invalid sequence set")
    ranges: list[SeqRange] = []
    for part in text.split(","):
        first, _, second = part.partition(":")
        low = None if first == "*" else int(first)
        high = low if not second else (None if second == "*" else int(second))
        ranges.append((low, high))
    return ranges


# -- capabilities ---------------------------------------------------------------------------------


def parse_capabilities(text: bytes) -> list[bytes]:
    """Split a capability list (``IMAP4rev1 SASL-IR AUTH=PLAIN ...``) into its atoms, as sent."""
    return [atom for atom in text.split(b" ") if atom]


def quote(value: bytes) -> bytes:
    """Render ``value`` as an IMAP quoted string (callers ensure it has no CR/LF)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")


def serialize(tokens: list[Token]) -> tuple[list[bytes], list[bytes]]:
    """Render tokens back to command text: (fragments, literals) as ``tokenize`` takes them.

    Strings that cannot be quoted (CR, LF, NUL or 8-bit bytes) become literals, so the session
    sends them in whichever literal form the upstream supports.
    """
    fragments: list[bytes] = []
    literals: list[bytes] = []
    current = bytearray()

    def emit(items: list[Token]) -> None:
        for index, token in enumerate(items):
            if index and not current.endswith(b"("):
                current.extend(b" ")
            if isinstance(token, Atom):
                current.extend(token.encode("ascii"))
            elif isinstance(token, bytes):
                if _QUOTABLE.match(token):
                    current.extend(quote(token))
                else:
                    fragments.append(bytes(current))
                    literals.append(token)
                    current.clear()
            else:
                current.extend(b"(")
                emit(token)
                current.extend(b")")

    emit(tokens)
    fragments.append(bytes(current))
    return fragments, literals
