"""A small model of how an IMAP server (Dovecot 2.3) answers FETCH items, and a FETCH parser.

Written independently of the proxy's code, from RFC 3501 §6.4.5 and Dovecot's observed
behaviour, so the tagging tests can say what the client must receive for the *virtual* message
(our block followed by the upstream message) and what the upstream sends for the *translated*
request, without sharing a line with the code under test:

* ``BODY[HEADER]`` runs to and includes the first empty line; without one, the whole message;
  a message starting with an empty line has the header ``CRLF``;
* ``BODY[HEADER.FIELDS (...)]`` lists the matching fields (folded lines included) in message order,
  names compared without case and without blanks before the colon, and always ends with an empty
  line; ``.NOT`` ends with one only when the message has one;
* a partial ``<o.n>`` is bytes ``o..o+n`` of the section, echoed as ``<o>``; past the end it is
  empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ITEM = re.compile(r"^(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d+)\.(\d+)>)?$", re.IGNORECASE)
_FIELD_TOKEN = re.compile(rb'\s*("(?:[^"\\]|\\.)*"|[^\s()"]+)')


def header_and_text(message: bytes) -> tuple[bytes, bytes]:
    """The header section (empty line included) and the text of a message."""
    position = 0
    while position < len(message):
        end = message.find(b"\n", position)
        end = len(message) if end < 0 else end + 1
        if message[position:end] in (b"\r\n", b"\n"):
            return message[:end], message[end:]
        position = end
    return message, b""


def _fields(header: bytes) -> tuple[list[tuple[bytes, bytes | None]], bool]:
    """(field bytes, upper-case name) pairs of a header section, and whether it ends in an
    empty line."""
    fields: list[tuple[bytes, bytes | None]] = []
    lines = re.findall(rb"[^\n]*\n|[^\n]+$", header)
    has_end = bool(lines) and lines[-1] in (b"\r\n", b"\n")
    if has_end:
        lines = lines[:-1]
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            data, name = fields[-1]
            fields[-1] = (data + line, name)
        else:
            colon = line.find(b":")
            fields.append((line, line[:colon].rstrip(b" \t").upper() if colon >= 0 else None))
    return fields, has_end


def field_list(text: str) -> list[bytes]:
    """Upper-case names of a ``(a "b" c)`` list."""
    inner = text.strip()[1:-1].encode()
    names = []
    position = 0
    while (match := _FIELD_TOKEN.match(inner, position)) is not None:
        token = match.group(1)
        if token.startswith(b'"'):
            token = re.sub(rb"\\(.)", rb"\1", token[1:-1])
        names.append(token.upper())
        position = match.end()
    return names


def section_bytes(message: bytes, section: str) -> bytes:
    header, text = header_and_text(message)
    upper = section.upper()
    if upper == "":
        return message
    if upper == "HEADER":
        return header
    if upper == "TEXT":
        return text
    for prefix, negated in (("HEADER.FIELDS.NOT", True), ("HEADER.FIELDS", False)):
        if upper.startswith(prefix):
            names = set(field_list(section[len(prefix):]))
            fields, has_end = _fields(header)
            kept = [data for data, name in fields if (name in names) != negated]
            end = b"\r\n" if (has_end or not negated) else b""
            return b"".join(kept) + end
    raise ValueError(f"section not modelled: {section!r}")


OURS = b"X-Caliproxy-Privacy"
RENAMED = b"X-Caliproxy-Spoofed"


def renamed(message: bytes) -> bytes:
    """The message with every header field of our name renamed in place (same length)."""
    header, text = header_and_text(message)
    fields, _ = _fields(header)
    kept = b"".join(RENAMED + data[len(OURS):] if name == OURS.upper() else data for data, name in fields)
    return kept + header[len(kept):] + text


def virtual_message(block: bytes, message: bytes) -> bytes:
    """What a client sees: our block, then the message with fields of our name renamed."""
    return block + renamed(message)


@dataclass(frozen=True)
class Answer:
    """One item of a FETCH answer: its name as the server writes it, and its value."""

    name: str
    value: bytes | int | str


def answer_items(message: bytes, items: list[str], *, uid: int = 1, flags: str = "") -> list[Answer]:
    """What the server answers for ``items`` (in request order) on ``message``."""
    answers = []
    for item in items:
        upper = item.upper()
        if upper == "RFC822.SIZE":
            answers.append(Answer("RFC822.SIZE", len(message)))
        elif upper == "UID":
            answers.append(Answer("UID", uid))
        elif upper == "FLAGS":
            answers.append(Answer("FLAGS", f"({flags})"))
        elif upper == "RFC822":
            answers.append(Answer("RFC822", message))
        elif upper == "RFC822.HEADER":
            answers.append(Answer("RFC822.HEADER", section_bytes(message, "HEADER")))
        elif upper == "RFC822.TEXT":
            answers.append(Answer("RFC822.TEXT", section_bytes(message, "TEXT")))
        elif upper == "ENVELOPE":
            answers.append(Answer("ENVELOPE", _envelope(message)))
        else:
            match = _ITEM.match(item)
            if match is None:
                raise ValueError(f"item not modelled: {item!r}")
            section = match.group(2)
            data = section_bytes(message, section)
            shown = _echo(section)
            if match.group(3) is not None:
                origin, length = int(match.group(3)), int(match.group(4))
                answers.append(Answer(f"BODY[{shown}]<{origin}>", data[origin : origin + length]))
            else:
                answers.append(Answer(f"BODY[{shown}]", data))
    return answers


def _envelope(message: bytes) -> str:
    """A stand-in for ENVELOPE: a nested list whose subject is a literal (as servers send one
    with 8-bit or special characters), the case where a literal sits inside an item's value."""
    subject = b""
    for data, name in _fields(header_and_text(message)[0])[0]:
        if name == b"SUBJECT":
            subject = data[data.index(b":") + 1 :].strip()
            break
    literal = f"{{{len(subject)}}}\r\n" + subject.decode("latin-1")
    return f'("Mon, 3 Jun 2024" {literal} (("A" NIL "a" "b")) NIL NIL NIL NIL NIL NIL NIL)'


def _echo(section: str) -> str:
    """The section as Dovecot writes it back: upper case, one space between list names."""
    upper = section.upper()
    for prefix in ("HEADER.FIELDS.NOT", "HEADER.FIELDS"):
        if upper.startswith(prefix):
            inner = section[len(prefix):].strip()[1:-1].encode()
            tokens = [m.group(1).decode() for m in _iter_tokens(inner)]
            return f"{prefix} ({' '.join(t.upper() for t in tokens)})"
    return upper


def _iter_tokens(inner: bytes):
    position = 0
    while (match := _FIELD_TOKEN.match(inner, position)) is not None:
        yield match
        position = match.end()


def encode_fetch(number: int, answers: list[Answer], *, quoted: frozenset[int] = frozenset()) -> bytes:
    """A ``* n FETCH (...)`` response; string values are literals, or quoted strings for the
    indexes in ``quoted`` when they can be."""
    parts = []
    for index, answer in enumerate(answers):
        value = answer.value
        if isinstance(value, int):
            rendered = b"%d" % value
        elif isinstance(value, str):
            rendered = value.encode()
        elif index in quoted and not re.search(rb'[\r\n"\\\x00\x80-\xff]', value):
            rendered = b'"' + value + b'"'
        else:
            rendered = b"{%d}\r\n" % len(value) + value
        parts.append(answer.name.encode() + b" " + rendered)
    return b"* %d FETCH (" % number + b" ".join(parts) + b")\r\n"


def parse_fetches(data: bytes) -> list[tuple[int, list[Answer]]]:
    """Every ``* n FETCH (...)`` response in ``data`` as (n, items); other lines are skipped.

    String values (literals and quoted strings) come back as bytes, numbers as int, lists as
    their text."""
    result = []
    position = 0
    while position < len(data):
        match = re.compile(rb"\* (\d+) FETCH \(").match(data, position)
        if match is None:
            position = data.index(b"\r\n", position) + 2
            continue
        number = int(match.group(1))
        position = match.end()
        items: list[Answer] = []
        while data[position : position + 1] != b")":
            name_match = re.compile(rb"([^\s\[(]+(?:\[[^\]]*\](?:<\d+>)?)?) ").match(data, position)
            assert name_match is not None, data[position : position + 80]
            name = name_match.group(1).decode()
            position = name_match.end()
            value: bytes | int | str
            literal = re.compile(rb"\{(\d+)\}\r\n").match(data, position)
            if literal is not None:
                start = literal.end()
                value = data[start : start + int(literal.group(1))]
                position = start + int(literal.group(1))
            elif data[position : position + 1] == b'"':
                quoted = re.compile(rb'"((?:[^"\\]|\\.)*)"').match(data, position)
                assert quoted is not None
                value = re.sub(rb"\\(.)", rb"\1", quoted.group(1))
                position = quoted.end()
            elif data[position : position + 1] == b"(":
                depth, end = 0, position
                while True:
                    nested = re.compile(rb"\{(\d+)\}\r\n").match(data, end)
                    if nested is not None:
                        end = nested.end() + int(nested.group(1))
                        continue
                    char = data[end : end + 1]
                    depth += char == b"("
                    depth -= char == b")"
                    end += 1
                    if depth == 0:
                        break
                value = data[position:end].decode("latin-1")
                position = end
            else:
                atom = re.compile(rb"[^\s)]+").match(data, position)
                assert atom is not None
                text = atom.group(0).decode()
                value = int(text) if text.isdigit() else text
                position = atom.end()
            items.append(Answer(name, value))
            if data[position : position + 1] == b" ":
                position += 1
        assert data[position : position + 3] == b")\r\n", data[position : position + 20]
        position += 3
        result.append((number, items))
    return result
