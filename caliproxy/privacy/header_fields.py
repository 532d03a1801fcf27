"""Splitting a raw RFC 5322 header block into fields, unfolding them and decoding RFC 2047 words.

Owns the one pass over header bytes that every feature is read from. It is on the header-sync hot
path (tens of thousands of messages), so it uses a single compiled regex over the block instead of
the ``email`` package's full parser, and decodes only the fields a caller asks for.

Pure module: standard library only; no IO, no logging. Never raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

# RFC 5322 §2.2 / §3.6.8:
#   field-name = 1*ftext ; ftext = %d33-57 / %d59-126  (printable US-ASCII except ":")
#   obs-optional = field-name *WSP ":" unstructured CRLF   (WSP before the colon is obsolete but seen)
# A field is its first line plus every following line that starts with WSP (folding, §2.2.3).
# The alternatives inside the repetition are disjoint (a line either starts with WSP or ends the
# field), so the match is linear in the block size.
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)

# The first empty line ends the header block (RFC 5322 §2.1); bare LF is tolerated.
_BLANK_LINE = re.compile(rb"\n\r?\n")


@dataclass(frozen=True)
class HeaderField:
    """One header field: lower-cased name, raw (still folded) value bytes, and its position.

    ``position`` counts fields from the top of the block (0 = the newest, since MTAs prepend).
    ``start`` is the byte offset of the field's first line within the block.
    """

    name: str
    raw_value: bytes
    position: int
    start: int

    def text(self) -> str:
        """The unfolded value as text (see ``unfold``)."""
        return unfold(self.raw_value)


def unfold(raw_value: bytes) -> str:
    """A raw field value with folding removed (RFC 5322 §2.2.3: CRLF followed by WSP is just WSP),
    as text; 8-bit bytes that are not UTF-8 become U+FFFD."""
    value = raw_value.replace(b"\r\n", b"").replace(b"\n", b"").strip(b" \t\r")
    return value.decode("utf-8", "replace")


def header_bounds(data: bytes) -> tuple[int, int]:
    """Return ``(end_of_header_block, start_of_body)`` for raw message (or header-only) bytes.

    Without an empty line the whole input is the header block and the body is empty.
    """
    if data.startswith(b"\r\n"):
        return 0, 2
    if data.startswith(b"\n"):
        return 0, 1
    match = _BLANK_LINE.search(data)
    if match is None:
        return len(data), len(data)
    return match.start() + 1, match.end()


def iter_fields(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """``(position, lower-case name, raw value)`` for each field of the header block at the start
    of ``data``, top to bottom: the allocation-light form for per-message hot loops.

    Lines that are neither a field nor a continuation (an mbox ``From `` line, garbage) are
    skipped, as are continuation lines that follow them.
    """
    end, _ = header_bounds(data)
    for position, match in enumerate(_FIELD.finditer(data, 0, end)):
        yield position, match.group(1).lower(), match.group(2)


def split_fields(data: bytes) -> tuple[HeaderField, ...]:
    """Every field of the header block at the start of ``data``, top to bottom."""
    end, _ = header_bounds(data)
    return tuple(
        HeaderField(m.group(1).decode("ascii").lower(), m.group(2), position, m.start())
        for position, m in enumerate(_FIELD.finditer(data, 0, end))
    )


# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
# (RFC 2231 §5 adds an optional "*language" suffix to the charset.)
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
# RFC 2047 §6.2: whitespace between two adjacent encoded-words is not displayed.
_BETWEEN_WORDS = re.compile(r"(\?=)[ \t]+(=\?)")


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, text = match.group(1), match.group(2).lower(), match.group(3)
    try:
        if encoding == "b":
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        else:
            # RFC 2047 §4.2: "_" stands for space in the Q encoding.
            raw = binascii.a2b_qp(text.replace("_", " ").encode("ascii", "replace"))
        # Some codec names are not text encodings (rot13) or refuse "replace" (idna): any failure
        # leaves the word as written rather than guessing.
        return raw.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError, binascii.Error):
        return match.group(0)


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words in ``text``; anything malformed is left as written."""
    if "=?" not in text:
        return text
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub(r"\1\2", text))
